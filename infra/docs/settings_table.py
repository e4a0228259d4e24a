"""docs/settings.md is the settings table: every field of the settings models (infra/settings.py)
with its alias path, type, default and field docstring, then the catalog's credentials,
marked secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ..catalog import default_catalog
from ..credentials import MIN_LENGTH
from ..model import Catalog
from ..settings import NAMESPACE, Settings
from .output import GENERATED
from .view import cell, code

SETTINGS_MD = "settings.md"


@dataclass(frozen=True)
class SettingRow:
    """One row of the settings table: a config key under `optiinfra:` (alias path)."""

    key: str
    type: str
    default: str
    description: str
    secret: bool = False


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings model of a field (also of an optional one: `Model | None`, off unless set)."""
    if get_origin(annotation) in (Union, UnionType):
        models = [a for a in get_args(annotation) if a is not type(None)]
        return _model_of(models[0]) if len(models) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _type_text(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " or ".join(code(str(a)) for a in args)
    if origin in (Union, UnionType):
        return " or ".join(_type_text(a) for a in args if a is not type(None))
    if origin is tuple:
        return f"list of {_type_text(args[0])}s"
    if origin is dict:
        return f"map of {_type_text(args[1])}s"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, str(annotation))


def _default_text(value: Any) -> str:
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return code("true" if value else "false")
    if isinstance(value, (tuple, list, dict)):
        return code(json.dumps(list(value) if isinstance(value, tuple) else value))
    return code(str(value))


def _described(text: str | None) -> str:
    return " ".join((text or "").split())


def setting_rows(catalog: Catalog | None = None) -> list[SettingRow]:
    """Every stack setting from the pydantic models (their field docstrings are the
    descriptions), in declaration order, then the catalog's credentials (secret)."""
    rows: list[SettingRow] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            key = prefix + (f.alias or name)
            nested = _model_of(f.annotation)
            if get_origin(f.annotation) is dict and _model_of(get_args(f.annotation)[1]):
                extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
                nested, key = _model_of(get_args(f.annotation)[1]), f"{key}.{extra.get('placeholder', '<name>')}"
            if nested is not None:
                text = _described(f.description or nested.__doc__)
                optional = f.annotation is not nested  # `Model | None`: off unless set
                if text:
                    rows.append(SettingRow(key, "object", "unset (off)" if optional else "–", text))
                walk(nested, key + ".")
                continue
            default = "required" if f.is_required() else _default_text(f.get_default(call_default_factory=True))
            rows.append(SettingRow(key, _type_text(f.annotation), default, _described(f.description)))

    walk(Settings, "")
    catalog = catalog or default_catalog()
    for cred in catalog.credentials.values():
        how = (f"{cred.description}. Always a secret, `pulumi config set --secret {cred.config_key}` (a plaintext "
               f"value is refused); at least {MIN_LENGTH} characters, not a well-known default.")
        default = f"generated per stack ({cred.length} characters)"
        if cred.receiver is not None:
            how = (f"{cred.description}. Always a secret, `pulumi config set --secret {cred.config_key}` (a plaintext "
                   f"value is refused); never generated: required while `alerting.receivers.{cred.receiver}` is set"
                   f"{' with a username' if cred.receiver == 'email' else ''}, refused while it is not"
                   f"{'' if cred.receiver == 'email' else '; an https:// URL'}.")
            default = "unset (the receiver is off)"
        if cred.store:
            how = (f"{cred.description}. Always a secret, `pulumi config set --secret {cred.config_key}` (a plaintext "
                   "value is refused); never generated: required while `backups.store` needs it (not with "
                   "`credentials: workloadIdentity`; the passphrase only with `encryption: client`), "
                   "not a well-known default.")
            default = "unset (no store)"
        elif cred.user_set:
            how = (f"{cred.description}. Always a secret, `pulumi config set --secret {cred.config_key}` (a plaintext "
                   f"value is refused); never generated: required by `pulumi up` while `{cred.user_set}` is set "
                   f"(offline commands render a stand-in), at least {MIN_LENGTH} characters.")
            default = f"unset (required while `{cred.user_set}` is set)"
        rows.append(SettingRow(cred.config_key, "string", default, how, secret=True))
    return rows


def settings_md(catalog: Catalog | None = None) -> str:
    lines = [GENERATED.replace("from infra/catalog.py and Pulumi.<stack>.yaml",
                               "from infra/settings.py and infra/catalog.py"), "",
             "# Stack settings", "",
             f"Each `Pulumi.<stack>.yaml` sets these under the `{NAMESPACE}:` namespace; "
             "`python -m infra ... --set key=value` (and `--secret key=value`) override one for a single run. "
             "Nested keys are written with dots (`--set budget.memory=4Gi`); `<name>` is a service "
             "of the catalog. Descriptions are the field docstrings of [`infra/settings.py`](../infra/settings.py) "
             "and the credentials of [`infra/catalog.py`](../infra/catalog.py). A bad value stops every command "
             "with one line naming the key and the fix.", "",
             "| key | type | default | description |", "|---|---|---|---|"]
    for r in setting_rows(catalog):
        kind = f"{r.type}, **secret**" if r.secret else r.type
        lines.append(f"| {code(r.key)} | {cell(kind)} | {cell(r.default)} | {cell(r.description) or '–'} |")
    return "\n".join(lines) + "\n"
