"""Credentials from the External Secrets Operator (`optiinfra:kubernetes.externalSecrets`).

With the setting, no credential value reaches the program: each tier's `credentials`
Secret is written by the operator from an `ExternalSecret` of the same name, whose
`spec.data` names the remote key of every credential the tier reads and whose
`spec.target.template` (engine v2) builds every key of the Secret from the same shapes
the Pulumi side fills (infra/wiring.py `Embedded`): a URL is written once, in the catalog.

Rotation: the program cannot key the pods' rollout annotation by values it never sees, so
it keys it by where each value lives and a version the user bumps after changing the value
in the store (`credentials.<configKey>.version`). The same versions are in the
ExternalSecret's template metadata, so a bump changes its spec and the operator fetches the
new values at once instead of at the next refresh (docs/credentials.md, rotation).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .graph import Resolved
from .model import Credential
from .settings import ExternalSecrets, RemoteKey
from .wiring import PASSWORD, Embedded

API_VERSION = "external-secrets.io/v1"
"""What the pinned operator release serves (scripts/eso-crds.sh; v1beta1 is no longer served)."""
KIND = "ExternalSecret"
STORE_KIND = "ClusterSecretStore"
ENGINE = "v2"
VERSIONS_ANNOTATION = "optiinfra.io/credential-versions"
"""On the Secret the operator writes (template metadata): `<credential>=<version>,...`."""


@dataclass(frozen=True)
class Remote:
    """Where one credential lives: the store, its remote key (and property), its version."""

    credential: Credential
    store: str
    key: str
    property: str | None
    version: int

    def location(self) -> dict[str, Any]:
        """What the stack output says instead of the value."""
        out: dict[str, Any] = {"store": f"{STORE_KIND}/{self.store}", "key": self.key}
        if self.property:
            out["property"] = self.property
        out["version"] = self.version
        return out


def settings_of(model: Resolved) -> ExternalSecrets | None:
    return model.settings.kubernetes.external_secrets if model.settings.target == "kubernetes" else None


def default_prefix(stack: str) -> str:
    return f"optiinfra/{stack}"


def remotes(model: Resolved, credentials: Iterable[Credential], stack: str) -> dict[str, Remote]:
    """Each credential's remote reference, by credential id (empty without the setting)."""
    es = settings_of(model)
    if es is None:
        return {}
    prefix = (es.key_prefix or default_prefix(stack)).rstrip("/")
    out: dict[str, Remote] = {}
    for cred in credentials:
        ref = es.credentials.get(cred.config_key, RemoteKey())
        out[cred.id] = Remote(cred, es.store, ref.key or f"{prefix}/{cred.config_key}", ref.property, ref.version)
    return out


def secret_key(credential: str) -> str:
    """The name a credential's value has inside the ExternalSecret (`spec.data[].secretKey`)
    and its template: a Go identifier, so the template reads it as `.name`, which the
    operator's engine refuses when missing (`index . "name"` would give an empty string)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", credential)
    return name if name[:1].isalpha() else f"c_{name}"


def template(shape: Embedded) -> str:
    """The operator's (Go text/template, engine v2) form of a shape: the literal text with
    `{{` escaped, the credential as `.<secret_key>`, percent-encoded in a URL exactly as
    `quote(pw, safe="")` does: `urlquery` (Go's QueryEscape) differs from it only in writing
    a space as '+', which sprig's `replace` turns into %20 (a '+' itself is %2B by then)."""
    ref = f".{secret_key(shape.credential)}"
    action = f'{{{{ {ref} | urlquery | replace "+" "%20" }}}}' if shape.is_url else f"{{{{ {ref} }}}}"
    literal = [part.replace("{{", '{{ "{{" }}') for part in shape.text.split(PASSWORD)]
    return action.join(literal)


def rollout_digest(service: str, refs: Mapping[str, Remote]) -> str:
    """The pod template's credentials annotation without the values: a hash of where each
    credential lives and its version, so bumping one version rolls exactly its consumers."""
    text = json.dumps([service, sorted((cid, r.store, r.key, r.property, r.version) for cid, r in refs.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def spec(secret_name: str, shapes: Mapping[str, Embedded], refs: Mapping[str, Remote],
         refresh_interval: str) -> dict[str, Any]:
    """The ExternalSecret's spec: one `data` entry per credential the Secret's keys use,
    one template entry per key (mergePolicy Replace: exactly those keys)."""
    used = sorted({s.credential for s in shapes.values()})
    names = {secret_key(cid): cid for cid in used}
    if len(names) != len(used):
        raise ValueError(f"credential ids {used} map to the same ExternalSecret key; rename one in the catalog")
    store = refs[used[0]].store
    data = []
    for cid in used:
        remote: dict[str, str] = {"key": refs[cid].key}
        if refs[cid].property:
            remote["property"] = str(refs[cid].property)
        data.append({"secretKey": secret_key(cid), "remoteRef": remote})
    versions = ",".join(f"{cid}={refs[cid].version}" for cid in used)
    return {
        "refreshInterval": refresh_interval,
        "secretStoreRef": {"kind": STORE_KIND, "name": store},
        "target": {
            "name": secret_name,
            "creationPolicy": "Owner",
            "template": {
                "engineVersion": ENGINE,
                "mergePolicy": "Replace",
                "type": "Opaque",
                "metadata": {"annotations": {VERSIONS_ANNOTATION: versions}},
                "data": {key: template(shapes[key]) for key in sorted(shapes)},
            },
        },
        "data": data,
    }
