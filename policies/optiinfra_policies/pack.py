"""The CrossGuard adapter: `pulumi_policy` policies built from `policies.rules.RULES`.

Two things differ between the Pulumi engine and the offline renderer, and are made
equal here so that one rule serves both:

- Secrets. The engine sends a policy pack every secret input marked as a secret, and
  pulumi-policy 1.21 unwraps the mark before a validation runs: `args.props` holds the
  plain value, indistinguishable from a plaintext one (Analyze/AnalyzeStack call
  `deserialize_properties(...)` without `proxy_secrets`). `redact_secrets` replaces every
  marked value with the offline renderer's marker (`[secret]`, or `NAME=[secret]` for a
  Docker env entry) before pulumi-policy deserializes it; the rules can then tell a
  secret from plaintext, and no rule ever holds a secret's value (so none can print it).
- Unknowns and numbers. During a preview, values not known yet arrive as pulumi-policy's
  sentinel strings, and every number as a float (protobuf's double: host port 3000.0);
  `plain` turns them into the offline marker `[unknown]` and ints where integral, and
  unwraps pulumi-policy's proxies (which raise on any unknown value) into plain data.

The stack's model is built once per stack from the config the engine passes to policy
packs (PULUMI_CONFIG; see `core.model_from_engine`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pulumi_policy.policy as _policy_module
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
from pulumi_policy.deserialize import SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY
from pulumi_policy.proxy import _is_unknown

from infra.offline import _ENV_ENTRY, SECRET, UNKNOWN
from infra.settings import ConfigError

from . import core
from .rules import RULES


def redact(value: Any) -> Any:
    """Engine-form properties (`json_format.MessageToDict` of the request) with every
    secret replaced by the offline marker."""
    if isinstance(value, dict):
        if value.get(SPECIAL_SIG_KEY) == SPECIAL_SECRET_SIG:
            inner = value.get("value")
            if isinstance(inner, str) and _ENV_ENTRY.match(inner):
                return inner.split("=", 1)[0] + "=" + SECRET
            return SECRET
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def redact_secrets() -> None:
    """Make pulumi-policy hand validations redacted properties (idempotent).

    Analyze and AnalyzeStack look `deserialize_properties` up in pulumi_policy.policy's
    globals at call time, so wrapping that name is enough (pinned: pulumi-policy==1.21.0;
    tests/test_policies.py drives the real server to prove it).
    """
    original = _policy_module.deserialize_properties  # type: ignore[attr-defined]
    if getattr(original, "redacts_secrets", False):
        return

    def deserialize(props: dict[str, Any], proxy_secrets: bool = False) -> dict[str, Any]:
        return original(redact(props), proxy_secrets)

    deserialize.redacts_secrets = True  # type: ignore[attr-defined]
    _policy_module.deserialize_properties = deserialize  # type: ignore[attr-defined]


def plain(value: Any) -> Any:
    """pulumi-policy's (unknown-checking) proxies as plain data; unknowns as `[unknown]`."""
    if isinstance(value, Mapping):
        target = value["__target"] if _is_proxy(value) else value
        return {k: plain(v) for k, v in target.items()}
    if isinstance(value, (list, tuple)) or _is_proxy(value):
        target = value["__target"] if _is_proxy(value) else value
        return [plain(v) for v in target]
    if isinstance(value, str) and _is_unknown(value):
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)  # protobuf carries every number as a double; the offline renderer does the same
    return value


def _is_proxy(value: Any) -> bool:
    return type(value).__module__ in ("pulumi_policy.proxy", "pulumi_policy.secret")


# ---- the stack's model, once per stack ----------------------------------------------

_contexts: dict[str, core.Context] = {}


def context_for(urn: str) -> core.Context:
    stack = core.stack_of(urn)
    if stack not in _contexts:
        _contexts[stack] = core.Context(core.model_from_engine(urn))
    return _contexts[stack]


# ---- policies -------------------------------------------------------------------------

def _resource(args: Any) -> core.Resource:
    return core.Resource(urn=args.urn, type=args.resource_type, name=args.name, props=plain(args.props),
                         protect=bool(args.opts.protect))


def _resource_validator(rule: core.Rule) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if rule.types and args.resource_type not in rule.types:
            return
        try:
            ctx = context_for(args.urn)
        except ConfigError as err:
            report(f"cannot resolve the stack's model: {err}", args.urn)
            return
        for v in rule.run([_resource(args)], dict(args.get_config()), ctx):
            report(v.message, v.urn or None)

    return validate


def _stack_validator(rule: core.Rule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        resources = [_resource(r) for r in args.resources]
        if not resources:
            return
        try:
            ctx = context_for(resources[0].urn)
        except ConfigError as err:
            report(f"cannot resolve the stack's model: {err}", None)
            return
        for v in rule.run(resources, dict(args.get_config()), ctx):
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
    """Keyword arguments of `pulumi_policy.PolicyPack` for this pack. Also makes the
    analyzer hand rules redacted secrets (see the module docstring)."""
    redact_secrets()
    return {
        "name": core.PACK_NAME,
        "policies": policies(),
        "enforcement_level": EnforcementLevel.ADVISORY,
        "description": "OptiInfra: exposure, images, health, limits, host access, credentials, tier isolation, "
                       "Pod Security restricted and data protection, for Docker and Kubernetes",
    }
