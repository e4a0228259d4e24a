"""What a rule sees, and how policy config is reconciled.

A rule reads a resource the way CrossGuard's `args.props` gives it: the type token
(`docker:index/container:Container`, `kubernetes:apps/v1:Deployment`, ...) and the
inputs in camelCase, plus what the stack's other resources carry (stack policies) and
the policy's config. Nothing else: no stack config, no program model (see the package
docstring for where each fact comes from).

Values not known yet (during a preview) appear as `[unknown]`, offline and under the
engine. Secret values appear as `[secret]` (`NAME=[secret]` for a Docker env entry) in
the offline render only: under the engine pulumi-policy hands rules secret inputs
unwrapped, so `Resource.secrets_marked` says whether a missing mark means "plaintext"
(offline) or "cannot tell" (engine).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .vocabulary import SECRET_MARK, UNKNOWN_MARK

PACK_DIR = Path(__file__).resolve().parent.parent
"""The pack directory (PulumiPolicy.yaml, requirements.txt, config/)."""
PACK_NAME = "optiinfra-policies"
CONFIG_DIR = PACK_DIR / "config"
LEVELS = ("advisory", "mandatory", "remediate", "disabled")


class PolicyConfigError(Exception):
    """Policy config the engine would refuse: one line naming the file and key, and the fix."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"config key '{key}': {problem}. Fix: {fix}")


def pack_version() -> str:
    """The version in PulumiPolicy.yaml (the CLI reports that one, too)."""
    data = yaml.safe_load((PACK_DIR / "PulumiPolicy.yaml").read_text()) or {}
    return str(data.get("version", "0.0.1"))


# ---- values -----------------------------------------------------------------------

_SECRET = re.compile(rf"(?:^|=){re.escape(SECRET_MARK)}(?:#[0-9a-f]+)?$")


def is_secret(value: Any) -> bool:
    """A value marked secret (`[secret]`, a Docker env entry `NAME=[secret]`, either with the
    recorder's keyed fingerprint `#<hex>` when it has one): offline only."""
    return isinstance(value, str) and _SECRET.search(value) is not None


def is_unknown(value: Any) -> bool:
    return isinstance(value, str) and (value == UNKNOWN_MARK or value.endswith("=" + UNKNOWN_MARK))


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def get_in(value: Any, *path: str | int) -> Any:
    """`get_in(props, "spec", "template", "spec")`; None when any step is missing."""
    for step in path:
        if isinstance(step, int):
            items = as_list(value)
            value = items[step] if -len(items) <= step < len(items) else None
        else:
            value = as_dict(value).get(step)
        if value is None:
            return None
    return value


# ---- resources and violations -----------------------------------------------------

@dataclass(frozen=True)
class Resource:
    """One resource as a policy sees it."""

    urn: str
    type: str
    name: str
    props: Mapping[str, Any]
    protect: bool = False
    secrets_marked: bool = True
    """True when every secret input carries the SECRET_MARK (the offline render); False
    under the engine, where secret values arrive unwrapped and look like plaintext."""

    @property
    def label(self) -> str:
        """`type: name`, the way `pulumi preview` names a resource in a violation."""
        return f"{self.type}: {self.name}"


def stack_of(urn: str) -> str:
    """`urn:pulumi:<stack>::<project>::<type>::<name>` -> stack."""
    parts = urn.split(":", 2)
    return parts[2].split("::", 1)[0] if len(parts) == 3 and parts[1] == "pulumi" else ""


@dataclass(frozen=True)
class Violation:
    policy: str
    urn: str
    message: str


ResourceCheck = Callable[[Resource, Mapping[str, Any]], Iterable[str]]
StackCheck = Callable[[Sequence[Resource], Mapping[str, Any]], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class Rule:
    """A policy: metadata CrossGuard publishes, its config schema, and its check.

    Exactly one of `check` (one resource at a time: CrossGuard can stop `pulumi up`
    before that resource is created) or `check_stack` (needs the whole stack) is set.
    `types` limits `check` to these type tokens (empty: every resource).
    """

    name: str
    description: str
    severity: str
    config: Mapping[str, dict[str, Any]]
    """JSON schema of each config property, with its `default` (the engine fills defaults in)."""
    remediation: str
    check: ResourceCheck | None = None
    check_stack: StackCheck | None = None
    types: frozenset[str] = frozenset()
    tags: tuple[str, ...] = ()

    def defaults(self) -> dict[str, Any]:
        return {k: v["default"] for k, v in self.config.items() if "default" in v}

    def run(self, resources: Sequence[Resource], config: Mapping[str, Any]) -> Iterator[Violation]:
        cfg = {**self.defaults(), **config}
        if self.check is not None:
            for res in resources:
                if not self.types or res.type in self.types:
                    for message in self.check(res, cfg):
                        yield Violation(self.name, res.urn, message)
        if self.check_stack is not None:
            for urn, message in self.check_stack(resources, cfg):
                yield Violation(self.name, urn, message)


# ---- policy config ----------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    level: str
    config: dict[str, Any]


def reconcile(rules: Sequence[Rule], pack_config: Mapping[str, Any], *, source: str,
              default_level: str = "advisory") -> dict[str, Setting]:
    """Enforcement level and config per policy, as the Pulumi engine reconciles them:
    schema defaults, then `all` (a level for every policy), then each policy's entry
    (a level string, or an object with `enforcementLevel` and config properties).
    Raises PolicyConfigError naming the file and key for anything the engine would refuse."""
    names = {r.name for r in rules}
    for key, value in pack_config.items():
        if key != "all" and key not in names:
            raise PolicyConfigError(f"{source}: {key}", "is not a policy of this pack",
                              f"use one of: all, {', '.join(sorted(names))}")
        if not isinstance(value, (str, dict)):
            raise PolicyConfigError(f"{source}: {key}", "must be an enforcement level or an object",
                              f"write \"{key}\": \"mandatory\" or \"{key}\": {{\"enforcementLevel\": \"advisory\"}}")
    all_level = _level(pack_config.get("all"), f"{source}: all") if "all" in pack_config else None
    out: dict[str, Setting] = {}
    for rule in rules:
        level = all_level or default_level
        props = rule.defaults()
        entry = pack_config.get(rule.name)
        if isinstance(entry, str):
            level = _level(entry, f"{source}: {rule.name}")
        elif isinstance(entry, dict):
            entry = dict(entry)
            if "enforcementLevel" in entry:
                level = _level(entry.pop("enforcementLevel"), f"{source}: {rule.name}.enforcementLevel")
            props.update(entry)
        for problem in validate(props, {"type": "object", "properties": dict(rule.config),
                                        "additionalProperties": False}, rule.name):
            raise PolicyConfigError(f"{source}: {problem[0]}", problem[1], "see the policy's config schema in "
                              "policies/optiinfra_policies/rules/ (README: Policy pack)")
        out[rule.name] = Setting(level, props)
    return out


def _level(value: Any, key: str) -> str:
    if value not in LEVELS:
        raise PolicyConfigError(key, f"{value!r} is not an enforcement level", f"use one of: {', '.join(LEVELS)}")
    return str(value)


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float),
}


def validate(value: Any, schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, str]]:
    """The JSON-schema subset the pack's config schemas use (type, properties,
    required, additionalProperties, items, enum, minimum, maximum). Yields (path, problem)."""
    kind = schema.get("type")
    if kind:
        ok = isinstance(value, _TYPES[kind]) and not (kind in ("integer", "number") and isinstance(value, bool))
        if not ok:
            yield path, f"{json.dumps(value)} is not of type {kind}"
            return
    if "enum" in schema and value not in schema["enum"]:
        yield path, f"{json.dumps(value)} is not one of {json.dumps(schema['enum'])}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            yield path, f"{value} is below {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            yield path, f"{value} is above {schema['maximum']}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for req in schema.get("required", ()):
            if req not in value:
                yield f"{path}.{req}", "is required"
        for k, v in value.items():
            if k in props:
                yield from validate(v, props[k], f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                yield f"{path}.{k}", f"is not a known setting (known: {', '.join(sorted(props)) or 'none'})"
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from validate(item, schema["items"], f"{path}[{i}]")


def load_pack_config(path: Path) -> dict[str, Any]:
    """A policy config file (`--policy-pack-config`). Raises PolicyConfigError."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PolicyConfigError("--policy-config", f"there is no file {path}",
                          "pass an existing JSON file, or add policies/config/<stack>.json") from None
    except json.JSONDecodeError as err:
        raise PolicyConfigError(str(path), f"is not valid JSON ({err.msg} at line {err.lineno})",
                          "fix the JSON syntax") from None
    if not isinstance(data, dict):
        raise PolicyConfigError(str(path), "is not a JSON object", "write {\"all\": \"advisory\", \"<policy>\": {...}}")
    return data


def stack_config_file(stack: str) -> Path:
    return CONFIG_DIR / f"{stack}.json"


# ---- running the rules ------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """A violation with what the engine attaches to it."""

    violation: Violation
    level: str
    severity: str
    description: str


def evaluate(rules: Sequence[Rule], resources: Sequence[Resource],
             settings: Mapping[str, Setting]) -> list[Finding]:
    findings: list[Finding] = []
    for rule in rules:
        setting = settings.get(rule.name, Setting("advisory", rule.defaults()))
        if setting.level == "disabled":
            continue
        level = "mandatory" if setting.level == "remediate" else setting.level
        for v in rule.run(resources, setting.config):
            findings.append(Finding(v, level, rule.severity, rule.description))
    return findings
