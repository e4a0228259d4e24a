"""The Pulumi program: stack config -> model -> tiers -> backend resources -> outputs.

`main()` is what `__main__.py` runs under the engine; the offline renderer runs `load`
and `deploy` under Pulumi's mock runtime, with the stack's config handed over the way
the engine hands it, so both see one program.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pulumi

from . import credentials, external_secrets, notifications, stack
from .backends import create
from .catalog import default_catalog
from .graph import Resolved, startup_order
from .model import Catalog, Tier
from .settings import NAMESPACE, SETTING_KEYS, ConfigError
from .tiers import TierComponent


def load(present: Iterable[str], catalog: Catalog | None = None) -> tuple[Resolved, dict[str, str]]:
    """Read the stack's config with `pulumi.Config` and validate it before any resource
    exists: the model, and the credentials supplied as stack secrets. `present` are the
    config keys the stack sets (unknown ones are refused). Raises ConfigError."""
    catalog = catalog or default_catalog()
    keys = {*present, *(f"{NAMESPACE}:{k}" for k in (*SETTING_KEYS, *catalog.credential_keys()))}
    values = stack.engine_values(sorted(keys), pulumi.Config(NAMESPACE).get)
    model = stack.load_stack(values, catalog)
    return model, credentials.supplied(model, values)


def deploy(model: Resolved, supplied: dict[str, str]) -> dict[str, object]:
    """Register every resource of the stack; returns the stack outputs."""
    tiers: dict[Tier, TierComponent] = {}
    previous: TierComponent | None = None
    for tier in model.tiers():
        previous = tiers[tier] = TierComponent(
            tier, pulumi.ResourceOptions(depends_on=[previous] if previous else []))
    secrets = credentials.materialize(model, supplied, {t.value: c for t, c in tiers.items()})
    backend = create(model, tiers, secrets)
    handles: dict[str, pulumi.Resource] = {}
    for name in startup_order(model):
        handles[name] = backend.service(model.services[name], [handles[d] for d in model.waits_for(name)])
    for tier, comp in tiers.items():
        comp.finish(e.name for e in model.in_tier(tier))
    if external_secrets.settings_of(model) is not None:
        located = external_secrets.remotes(model, credentials.needed(model).values(), pulumi.get_stack())
        return {**backend.outputs().exports(), CREDENTIALS_OUTPUT: credential_locations(located)}
    return {**backend.outputs().exports(), CREDENTIALS_OUTPUT: credentials_output(model, secrets)}


CREDENTIALS_OUTPUT = "credentials"
"""One secret stack output: `pulumi stack output --show-secrets credentials`; with
`kubernetes.externalSecrets`, where each credential lives instead (plain: no value)."""


def credential_locations(located: dict[str, external_secrets.Remote]) -> dict[str, dict[str, object]]:
    """Every credential by its config key: the store and remote key it is read from."""
    return {r.credential.config_key: r.location() for r in located.values()}


def credentials_output(model: Resolved, secrets: dict[str, pulumi.Output[str]]) -> pulumi.Output[dict[str, str]]:
    """Every credential of the stack by its config key (what `pulumi config set --secret`
    takes), generated or supplied: one secret Output, never shown in plaintext."""
    keys = {model.catalog.credentials[cid].config_key: value for cid, value in secrets.items()}
    return pulumi.Output.secret(pulumi.Output.all(**keys))


def main() -> None:
    try:
        # The stack file of the project the engine runs (not necessarily this package's checkout).
        model, supplied = load(stack.keys_in_file(pulumi.get_stack(), Path(pulumi.get_root_directory())))
        notifications.require_receiver(model)
    except ConfigError as err:
        # RunError ends the program with this one message and no traceback.
        raise pulumi.RunError(str(err)) from None
    if notifications.nowhere(model):
        pulumi.log.warn(notifications.status_line(model))
    for key, value in deploy(model, supplied).items():
        pulumi.export(key, value)
