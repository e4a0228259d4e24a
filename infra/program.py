"""The Pulumi program: settings -> model -> tiers -> backend resources -> outputs.

`main()` is what `__main__.py` runs under the engine; the offline renderer runs the
same function under Pulumi's mock runtime, so both see one program.
"""

from __future__ import annotations

from typing import Any

import pulumi

from . import credentials
from .catalog import default_catalog
from .graph import Model, resolve, startup_order
from .model import Catalog, Tier
from .settings import ConfigError, Settings, parse_settings
from .tiers import TierComponent
from .wiring import Wiring


def raw_config() -> tuple[dict[str, Any], set[str]]:
    """All config of this stack as the engine handed it over, and the secret keys."""
    cfg = {**pulumi.runtime.config.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    secret = set(pulumi.runtime.config.get_config_secret_keys_env()) | set(pulumi.runtime.config._SECRET_KEYS.get())
    return cfg, secret


def load(catalog: Catalog | None = None) -> tuple[Model, dict[str, str]]:
    """Read and validate everything before any resource exists. Raises ConfigError."""
    catalog = catalog or default_catalog()
    raw, _ = raw_config()
    secret_keys = {c.config_key for c in catalog.credentials.values()}
    settings: Settings = parse_settings(raw, list(catalog.services), secret_keys)
    model = resolve(catalog, settings)
    return model, credentials.supplied(model)


def deploy(model: Model, supplied: dict[str, str]) -> dict[str, Any]:
    tiers: dict[Tier, TierComponent] = {}
    previous: TierComponent | None = None
    for tier in model.tiers():
        previous = tiers[tier] = TierComponent(tier, after=previous)
    parents: dict[str, pulumi.Resource] = {t.value: c for t, c in tiers.items()}
    secrets = credentials.materialize(model, supplied, parents)

    backend: Any
    if model.settings.target == "docker":
        from .backends import docker

        wiring = Wiring(model.catalog, docker.host_of, secrets)
        backend = docker.DockerBackend(model, tiers, wiring)
    else:
        from .backends import kubernetes

        wiring = Wiring(model.catalog, kubernetes.host_resolver(model), secrets)
        backend = kubernetes.KubernetesBackend(model, tiers, wiring)

    handles: dict[str, pulumi.Resource] = {}
    for name in startup_order(model):
        eff = model.services[name]
        handles[name] = backend.service(eff, after=[handles[d] for d in model.waits_for(name)])
    for comp in tiers.values():
        comp.finish()
    return {**stack_outputs(model), **backend.outputs()}


def stack_outputs(model: Model) -> dict[str, Any]:
    """The seed's quick-access URLs and the port map (no credential in any of them)."""
    urls: dict[str, str] = {}
    ports: dict[str, dict[str, int]] = {}
    for eff in model.services.values():
        if eff.published:
            ports[eff.name] = {p.port.name: p.host for p in eff.published}
            first = eff.published[0]
            if first.port.name in ("http", "web"):
                host = "localhost" if first.bind in ("127.0.0.1", "0.0.0.0") else first.bind
                urls[eff.name] = f"http://{host}:{first.host}"
    return {"urls": urls, "ports": ports}


def main() -> None:
    try:
        model, supplied = load()
    except ConfigError as err:
        # RunError ends the program with this one message and no traceback.
        raise pulumi.RunError(str(err)) from None
    for key, value in deploy(model, supplied).items():
        pulumi.export(key, value)
