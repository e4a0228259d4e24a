"""One load path: a stack's config -> validated settings -> the resolved model.

Every caller goes through `load_stack`: the program (config read with `pulumi.Config`,
see program.py), the offline commands, the offline renderer and the tests. The config it
takes is in the engine's form: `optiinfra:key` -> string, objects and lists as JSON.
Where each check lives: settings.py checks a value on its own terms (type, range,
format), graph.py checks it against the catalog (a service that exists, a port it has,
a replica count it allows), credentials.py checks supplied credentials.

Offline, `read` builds that form from `Pulumi.<stack>.yaml` plus `--set`/`--secret`
overrides, as `pulumi config set` would have stored them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .catalog import default_catalog
from .graph import Model, resolve
from .model import Catalog
from .settings import NAMESPACE, ConfigError, parse_settings

ROOT = Path(__file__).resolve().parent.parent
"""The project directory (Pulumi.yaml and the stack files)."""


@dataclass(frozen=True)
class StackConfig:
    """A stack's config as the engine hands it to a program, and which keys are secret."""

    name: str
    values: Mapping[str, str]
    secret_keys: frozenset[str]


def load_stack(values: Mapping[str, Any], catalog: Catalog | None = None) -> Model:
    """The resolved model of a stack's config (engine form). Raises ConfigError naming the
    first bad key and its fix, before anything is rendered."""
    from . import rotation

    catalog = catalog or default_catalog()
    settings = parse_settings(values, catalog.credential_keys())
    return resolve(rotation.applied(catalog, settings), settings)


def model_of(stack: str, sets: Sequence[str] = (), secrets: Sequence[str] = (),
             catalog: Catalog | None = None) -> Model:
    """The resolved model of a stack file plus overrides, without rendering."""
    return load_stack(read(stack, sets, secrets).values, catalog)


# ---- stack files ----------------------------------------------------------------

def stack_file(stack: str, root: Path | None = None) -> Path:
    return (root or ROOT) / f"Pulumi.{stack}.yaml"


def available_stacks(root: Path | None = None) -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in (root or ROOT).glob("Pulumi.*.yaml"))


def _file_config(stack: str, root: Path | None = None) -> dict[str, Any]:
    path = stack_file(stack, root)
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    config = data.get("config") if isinstance(data, dict) else None
    return {k: v for k, v in (config or {}).items() if isinstance(k, str) and k.startswith(f"{NAMESPACE}:")}


def keys_in_file(stack: str, root: Path | None = None) -> list[str]:
    """The `optiinfra:` keys a stack file sets (the program refuses unknown ones; the
    SDK's public config API can read a key but not list them). Raises ConfigError for a
    credential stored there in plaintext."""
    config = _file_config(stack, root)
    refuse_plaintext_credentials(config, {k for k, v in config.items() if _encrypted(v)})
    return list(config)


def _encrypted(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def refuse_plaintext_credentials(config: Mapping[str, Any], secret_keys: Iterable[str],
                                 catalog: Catalog | None = None) -> None:
    """A credential key whose value is not a secret (`pulumi config set` without
    `--secret`, a plain value in the stack file, `--set` offline) is refused: its value
    would sit in plaintext in the stack file and in every log that prints config."""
    secret = set(secret_keys)
    for key in sorted((catalog or default_catalog()).credential_keys()):
        full = f"{NAMESPACE}:{key}"
        if full in config and full not in secret:
            raise ConfigError(full, "is set in plaintext, but it is a credential",
                              f"pulumi config set --secret {key} <value> (it replaces the plain entry), "
                              f"or --secret {key}=<value> offline")


def _full(key: str) -> str:
    return key if ":" in key else f"{NAMESPACE}:{key}"


def _set_path(config: dict[str, Any], key: str, value: Any) -> None:
    """`services.grafana.hostPort` -> nested assignment under `optiinfra:services`."""
    full = _full(key)
    ns, _, path = full.partition(":")
    top, *rest = path.split(".")
    top_key = f"{ns}:{top}"
    if not rest:
        config[top_key] = value
        return
    node = config.get(top_key)
    if not isinstance(node, dict):
        node = {}
        config[top_key] = node
    for part in rest[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[rest[-1]] = value


def _parse_override(flag: str, item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(flag, f"'{item}' is not KEY=VALUE", f"write {flag} services.grafana.hostPort=3100")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _engine_form(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def read(stack: str, sets: Sequence[str] = (), secrets: Sequence[str] = (), path: Path | None = None) -> StackConfig:
    """A stack file's config plus overrides, in the engine's form. `path` reads another
    file than Pulumi.<stack>.yaml next to Pulumi.yaml. Raises ConfigError."""
    path = path or stack_file(stack)
    if not path.exists():
        raise ConfigError("--stack", f"there is no stack file {path.name}",
                          f"use one of: {', '.join(available_stacks()) or 'none found'}")
    data = yaml.safe_load(path.read_text()) or {}
    config: dict[str, Any] = dict(data.get("config") or {})
    secret_keys: set[str] = set()
    for key, value in list(config.items()):
        if _encrypted(value):
            # Encrypted in the stack file; offline we cannot decrypt it, so a long
            # stand-in marked secret takes its place.
            config[key] = f"offline-stand-in-for-{key.split(':')[-1]}"
            secret_keys.add(key)
    for item in sets:
        k, v = _parse_override("--set", item)
        _set_path(config, k, v)
        secret_keys.discard(_full(k))  # a --set value is plain, whatever the file held
    for item in secrets:
        k, v = _parse_override("--secret", item)
        _set_path(config, k, "" if v is None else str(v))
        secret_keys.add(_full(k))
    refuse_plaintext_credentials(config, secret_keys)
    return StackConfig(stack, {k: _engine_form(v) for k, v in config.items()}, frozenset(secret_keys))


def engine_values(keys: Iterable[str], get: Any) -> dict[str, str]:
    """`optiinfra:key` -> value for the given keys, each read with `get(short_key)`
    (`pulumi.Config(NAMESPACE).get`); keys it has no value for are left out."""
    out: dict[str, str] = {}
    for full in keys:
        ns, _, key = full.partition(":")
        if ns == NAMESPACE:
            value = get(key)
            if value is not None:
                out[full] = value
    return out
