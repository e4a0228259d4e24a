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
from .graph import Resolved
from .model import Catalog
from .objectstore import SECRET_KEYS
from .resolve import resolve
from .settings import NAMESPACE, ConfigError, check_service_names, did_you_mean, parse_settings

ROOT = Path(__file__).resolve().parent.parent
"""The project directory (Pulumi.yaml and the stack files)."""


@dataclass(frozen=True)
class StackConfig:
    """A stack's config as the engine hands it to a program, and which keys are secret."""

    name: str
    values: Mapping[str, str]
    secret_keys: frozenset[str]


def load_stack(values: Mapping[str, Any], catalog: Catalog | None = None) -> Resolved:
    """The resolved model of a stack's config (engine form). Raises ConfigError naming the
    first bad key and its fix, before anything is rendered."""
    from . import rotation

    catalog = catalog or default_catalog()
    settings = parse_settings(values, catalog.credential_keys())
    check_service_names(settings, catalog.services)
    return resolve(rotation.applied(catalog, settings), settings)


def model_of(stack: str, sets: Sequence[str] = (), secrets: Sequence[str] = (),
             catalog: Catalog | None = None) -> Resolved:
    """The resolved model of a stack file plus overrides, without rendering."""
    return load_stack(read(stack, sets, secrets).values, catalog)


# ---- stack files ----------------------------------------------------------------

def stack_file(stack: str, root: Path | None = None) -> Path:
    return (root or ROOT) / f"Pulumi.{stack}.yaml"


def available_stacks(root: Path | None = None) -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in (root or ROOT).glob("Pulumi.*.yaml"))


STACK_FILE_KEYS = ("config", "environment", "secretsprovider", "encryptedkey", "encryptionsalt")
"""What a stack file may hold at its top level (Pulumi's own keys)."""

OTHER_NAMESPACES = ("pulumi", "docker", "kubernetes", "random")
"""Config namespaces besides ours a stack file may use: Pulumi's and this program's providers'."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key written twice in one map (YAML forbids it;
    PyYAML would keep the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                first = seen[key].start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key '{key}' is written twice (first on line {first})", key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _at(path: Path, node: yaml.Node | yaml.Mark | None) -> str:
    mark = node.start_mark if isinstance(node, yaml.Node) else node
    return f"{path.name} line {mark.line + 1}, column {mark.column + 1}" if mark is not None else path.name


def _yaml_fix(problem: str) -> str:
    if "\\t" in problem or "tab" in problem:
        return "indent with spaces, never tabs"
    if "written twice" in problem:
        return "delete one of them (a YAML map holds each key once)"
    return ("correct the YAML there: close every bracket and quote, indent with spaces, and write "
            "`key: value` with a space after the colon")


def load_file(path: Path) -> dict[str, Any]:
    """The `config:` map of a stack file, checked: valid YAML, no key twice, a map with a
    `config:` map whose keys are `optiinfra:<key>` (or a provider's namespace). Raises
    ConfigError naming the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(str(path), f"cannot be read ({reason})", "make it a readable UTF-8 YAML file",
                          where=path.name) from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return {}
        if not isinstance(root, yaml.MappingNode):
            raise ConfigError(str(path), f"is a {_kind(root)}, not a map with a `config:` section",
                              "write `config:` and under it `optiinfra:<key>: <value>` lines (see Pulumi.dev.yaml)",
                              where=_at(path, root))
        config_node: yaml.Node | None = None
        for key_node, value_node in root.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key not in STACK_FILE_KEYS:
                raise ConfigError(str(path), f"'{key}' is not a key of a stack file",
                                  f"{did_you_mean(str(key), STACK_FILE_KEYS)}use one of: {', '.join(STACK_FILE_KEYS)}",
                                  where=_at(path, key_node))
            if key == "config":
                config_node = value_node
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as err:
        problem = err.problem or err.context or "cannot be parsed"
        mark = err.problem_mark or err.context_mark
        if err.problem and err.context and err.context_mark is not None:
            opened = err.context_mark
            problem += f" {err.context} started on line {opened.line + 1}, column {opened.column + 1}"
        raise ConfigError(str(path), f"is not valid YAML: {problem}", _yaml_fix(problem),
                          where=_at(path, mark)) from None
    except yaml.YAMLError as err:
        raise ConfigError(str(path), f"is not valid YAML: {err}", _yaml_fix(str(err)), where=path.name) from None
    finally:
        loader.dispose()
    config = data.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(str(path), f"`config:` is a {_kind(config_node)}, not a map",
                          "write each setting as `  optiinfra:<key>: <value>` under `config:` (no leading '- ')",
                          where=_at(path, config_node))
    assert isinstance(config_node, yaml.MappingNode)
    for key_node, _ in config_node.value:
        _check_namespace(path, key_node)
    return dict(config)


def _kind(node: yaml.Node | None) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "list"
    if isinstance(node, yaml.MappingNode):
        return "map"
    return "single value"


def _check_namespace(path: Path, key_node: yaml.Node) -> None:
    """`optiinfra:<key>` or a provider's key; a misspelt namespace is refused, never ignored."""
    key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
    if not isinstance(key, str) or not key:
        raise ConfigError(str(path), "a `config:` key is not a name",
                          f"write keys as {NAMESPACE}:<key>", where=_at(path, key_node))
    ns, sep, rest = key.partition(":")
    if not sep or not ns or not rest:
        raise ConfigError(key, "has no namespace, so the program never reads it",
                          f"write it as {NAMESPACE}:{_without_namespace(key)}",
                          where=f"{_at(path, key_node)}: config key '{key}'")
    if ns == NAMESPACE or ns in OTHER_NAMESPACES:
        return
    hint = did_you_mean(ns, (NAMESPACE, *OTHER_NAMESPACES))
    hint = f"did you mean '{NAMESPACE}:{rest}'? " if hint and NAMESPACE in hint else hint
    raise ConfigError(key, f"'{ns}' is not a namespace this program reads, so the key would be ignored",
                      f"{hint}write settings as {NAMESPACE}:<key> (provider keys: "
                      f"{', '.join(n + ':' for n in OTHER_NAMESPACES)})",
                      where=f"{_at(path, key_node)}: config key '{key}'")


def _without_namespace(key: str) -> str:
    """`optiinfra-target` or `optiinfra.target` (a namespace mistyped) -> `target`."""
    key = key.strip(":")
    if key.startswith(NAMESPACE) and len(key) > len(NAMESPACE) + 1 and not key[len(NAMESPACE)].isalnum():
        return key[len(NAMESPACE) + 1:]
    return key


def _file_config(stack: str, root: Path | None = None) -> dict[str, Any]:
    path = stack_file(stack, root)
    config = load_file(path) if path.exists() else {}
    return {k: v for k, v in config.items() if isinstance(k, str) and k.startswith(f"{NAMESPACE}:")}


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
    config = load_file(path)
    secret_keys: set[str] = set()
    urls = {f"{NAMESPACE}:{c.config_key}" for c in default_catalog().credentials.values()
            if c.receiver is not None and c.receiver != "email"}
    for key, value in list(config.items()):
        if _encrypted(value):
            # Encrypted in the stack file; offline we cannot decrypt it, so a long
            # stand-in marked secret takes its place (a URL where a receiver's URL goes).
            config[key] = (f"https://offline-stand-in.invalid/{key.split(':')[-1]}" if key in urls
                           else f"offline-stand-in-for-{key.split(':')[-1]}")
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
    _stand_in_user_set(config, secret_keys)
    return StackConfig(stack, {k: _engine_form(v) for k, v in config.items()}, frozenset(secret_keys))


def _stand_in_user_set(config: dict[str, Any], secret_keys: set[str]) -> None:
    """Offline, a credential only its user can set that is absent while its setting is on
    renders as a stand-in marked secret, as if supplied at deploy: the OIDC client secret
    (`Credential.user_set`), the off-site backup store's key and passphrase
    (`backups.store`), and the URL of a receiver the stack file turns on
    (`alerting.receivers.<kind>`, the operator's pager). So the committed stack files name
    their receivers, render and pass `check` without the secrets; the program under the
    engine reads no stand-in, and refuses each absent (credentials.py). With
    `kubernetes.externalSecrets` none is added: the store holds it."""
    k8s = config.get(f"{NAMESPACE}:kubernetes")
    if isinstance(k8s, dict) and k8s.get("externalSecrets") is not None:
        return  # every credential comes from the store: no stack secret, no stand-in
    alerting = config.get(f"{NAMESPACE}:alerting")
    receivers = alerting.get("receivers") if isinstance(alerting, dict) else None
    on = set(receivers) if isinstance(receivers, dict) else set()
    backups = config.get(f"{NAMESPACE}:backups")
    store = backups.get("store") if isinstance(backups, dict) else None
    keys = set()
    backing_up = isinstance(backups, dict) and backups.get("enabled", True) is not False
    if backing_up and isinstance(store, dict):  # what credentials.store_credential_ids asks for
        if store.get("credentials", "secret") != "workloadIdentity":
            keys |= {SECRET_KEYS["access-key-id"], SECRET_KEYS["secret-access-key"]}
        if store.get("encryption") == "client":
            keys.add(SECRET_KEYS["passphrase"])
    for cred in default_catalog().credentials.values():
        key = f"{NAMESPACE}:{cred.config_key}"
        if key in config:
            continue
        if (cred.user_set and config.get(f"{NAMESPACE}:{cred.user_set}") is not None) or (
                cred.store and cred.config_key in keys):
            config[key] = f"offline-stand-in-for-{cred.config_key}"
            secret_keys.add(key)
        elif cred.receiver in on and cred.receiver != "email":
            # A URL: https on 443, a name in the reserved .invalid domain (RFC 2606).
            config[key] = f"https://offline-stand-in.invalid/{cred.config_key}"
            secret_keys.add(key)


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
