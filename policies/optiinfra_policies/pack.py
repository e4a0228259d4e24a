"""The CrossGuard adapter: `pulumi_policy` policies built from `rules.RULES`, public API only.

A validation gets `args.props` (an unknown-checking proxy: reading a value that is not
known yet raises `UnknownValueError`), `args.opts.protect`, `args.get_config()` (the
policy's config, schema defaults filled in by the engine) and, for stack policies,
`args.resources`. `plain` turns the proxy into plain data the way the offline render
shows it, reading it only through the `Mapping`/`Sequence` protocol it publishes:

- a value not known yet becomes `[unknown]`: the proxy raises (`UnknownValueError`) when a
  key it lists itself, or an index below its length, is read, and that is the only way
  such a read fails, so any exception there means "unknown" (the class is exported by no
  public module of pulumi-policy, so it is not imported by name);
- protobuf carries every number as a double, so integral floats become ints;
- secrets arrive unwrapped (pulumi-policy deserializes secret inputs to their plain
  values for validations), so every resource is handed over with
  `secrets_marked=False`: the rules then judge credentials structurally and by value, and
  skip what only a secret mark could tell (see the package docstring). No rule's message
  carries a value (a well-known default excepted), so no secret is ever printed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)

from . import core
from .rules import RULES
from .vocabulary import UNKNOWN_MARK


def plain(value: Any) -> Any:
    """pulumi-policy's proxied inputs as plain data; unknowns as `[unknown]`, integral
    numbers as ints."""
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key in value:
            try:
                item = value[key]
            except Exception:  # UnknownValueError: the only failure of reading a listed key
                out[key] = UNKNOWN_MARK
                continue
            out[key] = plain(item)
        return out
    if isinstance(value, Sequence):
        items: list[Any] = []
        for i in range(len(value)):
            try:
                item = value[i]
            except Exception:  # UnknownValueError, as above
                items.append(UNKNOWN_MARK)
                continue
            items.append(plain(item))
        return items
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def resource(urn: str, type_: str, name: str, props: Any, protect: Any) -> core.Resource:
    return core.Resource(urn=urn, type=type_, name=name, props=plain(props), protect=bool(protect),
                         secrets_marked=False)


def _resource_validator(rule: core.Rule) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if rule.types and args.resource_type not in rule.types:
            return
        res = resource(args.urn, args.resource_type, args.name, args.props, args.opts.protect)
        for v in rule.run([res], dict(args.get_config())):
            report(v.message, v.urn or None)

    return validate


def _stack_validator(rule: core.Rule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        resources = [resource(r.urn, r.resource_type, r.name, r.props, r.opts.protect) for r in args.resources]
        for v in rule.run(resources, dict(args.get_config())):
            report(v.message, v.urn or None)

    return validate


def policies() -> list[Policy]:
    """One CrossGuard policy per rule; enforcement comes from the pack default (advisory)
    and the stack's policy config file."""
    out: list[Policy] = []
    for rule in RULES:
        schema = PolicyConfigSchema(properties={k: dict(v) for k, v in rule.config.items()}) if rule.config else None
        if rule.check_stack is not None:
            out.append(StackValidationPolicy(
                name=rule.name, description=rule.description, validate=_stack_validator(rule), config_schema=schema,
                severity=Severity(rule.severity), tags=list(rule.tags), remediation_steps=rule.remediation))
        else:
            out.append(ResourceValidationPolicy(
                name=rule.name, description=rule.description, validate=_resource_validator(rule),
                config_schema=schema, severity=Severity(rule.severity), tags=list(rule.tags),
                remediation_steps=rule.remediation))
    return out


def pack_arguments() -> dict[str, Any]:
    """Keyword arguments of `pulumi_policy.PolicyPack` for this pack."""
    return {
        "name": core.PACK_NAME,
        "policies": policies(),
        "enforcement_level": EnforcementLevel.ADVISORY,
        "description": "OptiInfra: exposure, images, health, limits, host access, credentials, tier isolation, "
                       "Pod Security restricted and data protection, for Docker and Kubernetes",
    }
