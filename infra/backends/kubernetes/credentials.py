"""Credentials: one Secret per namespace (or the ExternalSecret that writes it), how a
container reads it (secretKeyRef env, `$(VAR)` args, mounted files), and the pod
template's credentials hash that rolls the pods when a value changes."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.core import v1 as core

from policies.optiinfra_policies.vocabulary import K8S_CREDENTIALS_ROLLOUT
from policies.optiinfra_policies.vocabulary import K8S_SECRET_KEYS as SECRET_KEYS

from ... import external_secrets as eso
from ...credentials import store_credential_ids
from ...graph import Effective, Resolved
from ...model import Dsn, EnvValue, Secret, Service, Tier, Url
from ...stores import live_credentials
from ...tiers import TierComponent
from ...wiring import PASSWORD, Embedded, Wiring, credential_refs, login
from .objects import CREDENTIALS_SECRET, Objects, literal


def k8s_env(service: Service) -> list[tuple[str, EnvValue]]:
    """The catalog's environment as Kubernetes sets it: what a SecretFile replaces gives way
    to the file's path variable and the file's own variables."""
    replaced = {name for f in service.secret_files for name in f.replaces}
    env: list[tuple[str, EnvValue]] = [(k, v) for k, v in service.env if k not in replaced]
    for f in service.secret_files:
        env.extend(f.env)
        if f.file_env:
            env.append((f.file_env, f.path))
    return env


def secret_value(model: Resolved, value: EnvValue) -> bool:
    """Whether an environment value carries a credential (a Secret, or a URL or DSN that
    embeds a password)."""
    if isinstance(value, Secret):
        return True
    if isinstance(value, Url | Dsn):
        conn = model.catalog.services[value.service].connection
        template = value.template if isinstance(value, Dsn) else conn.template if conn else ""
        return "{password}" in template and login(conn, value)[1] is not None
    return False


def secrets_in_env(model: Resolved, service: Service) -> bool:
    """Whether the container still takes a credential from an environment variable on
    Kubernetes (the image reads no file for it): the catalog must say why (`secret_env_reason`)."""
    if not any(isinstance(v, Secret | Url | Dsn) and secret_value(model, v) for _, v in k8s_env(service)):
        return False
    if not service.secret_env_reason:
        raise ValueError(f"{service.name}: takes a secret from the environment on Kubernetes; mount it as a file "
                         "(catalog SecretFile) or write why the image cannot read one (secret_env_reason)")
    return True


ROLLOUT_CONTEXT = b"optiinfra.io/credentials-rollout/v1"


def rollout_hash(service: str, values: Mapping[str, str]) -> str:
    """HMAC-SHA256 keyed by the credentials themselves (length-prefixed, by id), over the
    service's name, truncated to 64 bits. It changes when any of them changes; without the
    values it is a random string, and no single value can be read or tested from it apart
    from the others (each generated credential has ~190 bits; supplied ones are at least
    12 characters and no known default)."""
    key = b"".join(len(v.encode()).to_bytes(4, "big") + v.encode() for _, v in sorted(values.items()))
    return hmac.new(key, ROLLOUT_CONTEXT + b"\0" + service.encode(), hashlib.sha256).hexdigest()[:16]


def _secret_key(service: Service, env_name: str, value: object) -> str:
    """Key in the namespace's Secret: shared where the value is the same for every
    consumer (a credential, a connection URL), per service otherwise."""
    if isinstance(value, Secret):
        return value.credential
    if isinstance(value, Url):  # one key per role a URL logs in as
        return f"{value.credential or value.service}-url"
    return f"{service.name}.{env_name}"


def secret_env(name: str, key: str) -> core.EnvVarArgs:
    return core.EnvVarArgs(name=name, value_from=core.EnvVarSourceArgs(
        secret_key_ref=core.SecretKeySelectorArgs(name=CREDENTIALS_SECRET, key=key)))


@dataclass(frozen=True)
class ContainerInputs:
    """A container's environment and arguments as Kubernetes passes them, and the shapes of
    the secret values they read from the namespace's Secret (by key)."""

    env: list[core.EnvVarArgs]
    args: list[str]
    shapes: dict[str, Embedded]


def container_inputs(wiring: Wiring, eff: Effective) -> ContainerInputs:
    """Plain values inline (`$` escaped); every secret value through a secretKeyRef, an
    argument through `$(VAR)` of such an env var; then the arguments sized by the model."""
    svc = eff.service
    shapes: dict[str, Embedded] = {}
    env: list[core.EnvVarArgs] = []
    for name, raw in k8s_env(svc):
        value = wiring.shape(raw, svc)
        if isinstance(value, str):
            env.append(core.EnvVarArgs(name=name, value=literal(value)))
            continue
        key = _secret_key(svc, name, raw)
        shapes.setdefault(key, value)
        env.append(secret_env(name, key))
    args: list[str] = []
    for i, raw_arg in enumerate(svc.command):
        arg = wiring.shape(raw_arg, svc)
        if isinstance(arg, str):
            args.append(literal(arg))
            continue
        var, key = f"OPTIINFRA_ARG_{i}", f"{svc.name}.arg{i}"
        shapes.setdefault(key, arg)
        env.append(secret_env(var, key))
        args.append(f"$({var})")
    args.extend(literal(a) for a in eff.sized_args)
    for f in svc.secret_files:  # mounted from the same Secret (see pod.py)
        shapes.setdefault(f.credential, Embedded(PASSWORD, f.credential))
    b = svc.backup
    if eff.backed_up and b is not None and b.credential:  # the backup job's file
        shapes.setdefault(b.credential, Embedded(PASSWORD, b.credential))
    return ContainerInputs(env, args, shapes)


def tier_secret(objs: Objects, wiring: Wiring, remotes: Mapping[str, eso.Remote], tier: Tier, comp: TierComponent,
                ns: core.Namespace, members: list[Effective]) -> pulumi.Resource | None:
    """Every secret value of the tier's containers goes into one Secret; a container
    reads it through secretKeyRef (an argument through `$(VAR)` of such an env var).
    With `kubernetes.externalSecrets` the operator writes that Secret (same name, same
    keys) from an ExternalSecret, and no value passes through the program."""
    model = objs.model
    shapes: dict[str, Embedded] = {}
    for eff in members:
        for key, shape in container_inputs(wiring, eff).shapes.items():
            shapes.setdefault(key, shape)
    if any(eff.backed_up for eff in members):  # the backup jobs' upload to the off-site store
        for cid in sorted(store_credential_ids(model)):
            shapes.setdefault(cid, Embedded(PASSWORD, cid))
    if not shapes:
        return None
    # The key names (never the values) also as an annotation: the whole of stringData
    # is secret, so offline renders show the Secret's shape from this.
    metadata = objs.metadata(CREDENTIALS_SECRET, tier, annotations={SECRET_KEYS: ",".join(sorted(shapes))})
    es = eso.settings_of(model)
    if es is not None:
        return k8s.apiextensions.CustomResource(
            f"{tier.value}-credentials", api_version=eso.API_VERSION, kind=eso.KIND, metadata=metadata,
            spec=eso.spec(CREDENTIALS_SECRET, shapes, remotes, es.refresh_interval),
            opts=objs.opts(comp, depends_on=[ns]))
    data: dict[str, pulumi.Input[str]] = {key: wiring.fill(shape) for key, shape in shapes.items()}
    return core.Secret(f"{tier.value}-credentials", core.SecretInitArgs(
        metadata=metadata, type="Opaque", string_data=data),
        opts=objs.opts(comp, depends_on=[ns]))


def rollout_annotation(model: Resolved, wiring: Wiring, remotes: Mapping[str, eso.Remote],
                       svc: Service) -> dict[str, pulumi.Input[str]] | None:
    """The pod template's credentials hash (K8S_CREDENTIALS_ROLLOUT), plain: it reveals nothing."""
    refs = sorted(credential_refs(model.catalog, svc) | {f.credential for f in svc.secret_files})
    # A store's clients' credentials are applied live by its rotation Job and read from the
    # mounted files at its next start: a change to one does not roll the store.
    refs = [r for r in refs if r not in live_credentials(svc)]
    if not refs:
        return None
    if remotes:  # the values never reach the program: key it by where they live
        return {K8S_CREDENTIALS_ROLLOUT: eso.rollout_digest(svc.name, {r: remotes[r] for r in refs})}
    values = pulumi.Output.all(*(wiring.credentials[r] for r in refs))
    digest = values.apply(lambda vs: rollout_hash(svc.name, dict(zip(refs, vs, strict=True))))
    return {K8S_CREDENTIALS_ROLLOUT: pulumi.Output.unsecret(digest)}
