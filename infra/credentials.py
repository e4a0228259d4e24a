"""Credentials: a stack secret when set, otherwise generated per stack.

Values only ever travel as secret Outputs. A supplied value that is a well-known
default is refused before anything is registered.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_random as random

from policies.optiinfra_policies.standards import KNOWN_DEFAULT_CREDENTIALS

from . import objectstore
from .graph import Resolved, notifier_ports
from .model import Credential
from .settings import NAMESPACE, ConfigError
from .wiring import credential_refs

KNOWN_DEFAULTS = KNOWN_DEFAULT_CREDENTIALS
MIN_LENGTH = 12


def needed(model: Resolved) -> dict[str, Credential]:
    """Credentials that some enabled service uses."""
    ids: set[str] = set()
    for eff in model.services.values():
        ids |= credential_refs(model.catalog, eff.service)
    ids |= store_credential_ids(model)
    return {k: v for k, v in model.catalog.credentials.items() if k in ids}


def store_credential_ids(model: Resolved) -> set[str]:
    """The backup store's secrets this stack needs: its key unless workload identity gives
    one, the passphrase with client-side encryption; none without `backups.store` or backups."""
    store = model.settings.backups.store
    if store is None or not model.backed_up():
        return set()
    files = set()
    if store.credentials != "workloadIdentity":
        files |= {"access-key-id", "secret-access-key"}
    if store.encryption == "client":
        files.add("passphrase")
    wanted = {objectstore.SECRET_KEYS[f] for f in files}
    return {c.id for c in model.catalog.credentials.values() if c.store and c.config_key in wanted}


def supplied(model: Resolved, config: Mapping[str, Any]) -> dict[str, str]:
    """Credentials set as stack secrets (in the stack's config, engine form), validated
    (plain values, never printed). A receiver's secret (never generated) must be set while
    its receiver is on, and is refused while it is off (it would be ignored)."""
    out: dict[str, str] = {}
    external = model.settings.target == "kubernetes" and model.settings.kubernetes.external_secrets is not None
    wanted = needed(model)
    for cred in model.catalog.credentials.values():
        key = f"{NAMESPACE}:{cred.config_key}"
        if cred.receiver is not None and cred.id not in wanted and config.get(key) is not None:
            raise ConfigError(key, f"is set, but the {cred.receiver} receiver that would use it is off",
                              f"turn it on ({NAMESPACE}:alerting.receivers.{cred.receiver}, docs/monitoring.md), "
                              f"or pulumi config rm {cred.config_key}")
    for cred in model.catalog.credentials.values():
        key = f"{NAMESPACE}:{cred.config_key}"
        if cred.store and cred.id not in wanted and config.get(key) is not None:
            raise ConfigError(key, "is set, but this stack's backups.store does not use it (no store, backups "
                              "off, workload identity, or no client-side encryption)",
                              f"pulumi config rm {cred.config_key}, or set backups.store to use it (docs/backups.md)")
    for cred in wanted.values():
        key = f"{NAMESPACE}:{cred.config_key}"
        value = config.get(key)
        if value is None and cred.store and not external:
            raise ConfigError(key, "is not set, but backups.store needs it", f"pulumi config set --secret "
                              f"{cred.config_key} <value>, or use backups.store.credentials workloadIdentity "
                              "(docs/backups.md)")
        if value is None and cred.user_set and not external:
            raise ConfigError(key, f"is not set, but {NAMESPACE}:{cred.user_set} needs it (it is yours to set: "
                              "never generated)", user_set_fix(cred))
        if value is None and not cred.generated and not external:
            raise ConfigError(key, f"is not set, but the {cred.receiver} receiver (alerting.receivers."
                              f"{cred.receiver}) needs it", f"pulumi config set --secret {cred.config_key} <value>, "
                              f"or remove alerting.receivers.{cred.receiver}")
        if value is None:
            continue
        if external:  # it would be ignored: the operator writes every credential from the store
            raise ConfigError(key, "is set as a stack secret, but kubernetes.externalSecrets sources every "
                              "credential from the ClusterSecretStore",
                              f"pulumi config rm {cred.config_key}, and put the value in the store under its "
                              "remote key (docs/credentials.md)")
        if not str(value).strip():  # before the default check: "" is also a well-known default
            raise ConfigError(key, "is empty" if str(value) == "" else "is only blanks",
                              f"pulumi config set --secret {cred.config_key} <a strong value>"
                              + (", or unset it to generate one" if cred.generated else ""))
        if cred.receiver in ("webhook", "slack", "heartbeat"):
            _check_url(model, key, cred.config_key, str(value))
            out[cred.id] = str(value)
            continue
        if str(value).strip().lower() in KNOWN_DEFAULTS:
            raise ConfigError(key, "is a well-known default credential",
                              f"pulumi config set --secret {cred.config_key} <a strong value>, "
                              "or unset it to generate one")
        # A relay's SMTP password is what the relay set; a client secret must be long enough.
        if len(str(value)) < MIN_LENGTH and (cred.generated or cred.user_set):
            raise ConfigError(key, f"is shorter than {MIN_LENGTH} characters",
                              f"pulumi config set --secret {cred.config_key} <a longer value>")
        out[cred.id] = str(value)
    return out


def _setting(cred: Credential) -> str:
    """The setting that makes a credential only its user can set needed."""
    if cred.store:
        return "backups.store"
    return cred.user_set or f"alerting.receivers.{cred.receiver}"


def user_set_fix(cred: Credential, stack: str = "") -> str:
    """How to set a credential only its user knows (`Credential.user_set`, or a receiver's
    URL), or do without it."""
    where = f"pulumi stack select --create {stack}, then " if stack else ""
    value = ("<value from your identity provider>" if cred.user_set else
             "<value from your object store>" if cred.store else "https://<your receiver's URL>")
    return (f"{where}pulumi config set --secret {cred.config_key} {value}, "
            f"or remove {NAMESPACE}:{_setting(cred)}")


def unset_user_set(model: Resolved, present: Collection[str]) -> list[Credential]:
    """The credentials only their user can set (`Credential.user_set`, the off-site store's
    key and passphrase, and the URL of a receiver the stack turns on) that this stack needs
    and `present` (the config keys the stack file and the --secret flags set) lacks. Offline they render as a stand-in
    (stack.py), so the committed stack files render; `pulumi up` refuses each (`supplied`).
    None with `kubernetes.externalSecrets`: the store holds them."""
    if model.settings.target == "kubernetes" and model.settings.kubernetes.external_secrets is not None:
        return []
    return [c for c in needed(model).values()
            if (c.user_set or c.store or (c.receiver is not None and c.receiver != "email"))
            and f"{NAMESPACE}:{c.config_key}" not in present]


def unset_problem(cred: Credential) -> str:
    return (f"is not set, but {NAMESPACE}:{_setting(cred)} needs it: it is yours to set (never generated), and "
            "`pulumi up` refuses to run without it (offline commands render a stand-in)")


def _check_url(model: Resolved, key: str, config_key: str, value: str) -> None:
    """A receiver URL is HTTPS on a port the notifier may reach; the message never shows it."""
    try:
        url = urlsplit(value.strip())
        port = url.port or 443
    except ValueError:
        url, port = urlsplit(""), 0
    ports = notifier_ports(model.catalog)
    if url.scheme != "https" or not url.hostname or port not in ports:
        allowed = ", ".join(map(str, ports))
        raise ConfigError(key, f"is not an https:// URL on a port the notifier may reach ({allowed})",
                          f"pulumi config set --secret {config_key} https://<host>/<path>")
    if model.settings.target == "kubernetes":  # the notifier's egress: outsideCidrs minus outsideExcept
        try:
            address = ipaddress.ip_address(url.hostname)
        except ValueError:
            return  # a name: where it resolves is the DNS's business
        k = model.settings.kubernetes
        if not any(address in ipaddress.ip_network(c) for c in k.outside_cidrs) or any(
                address in ipaddress.ip_network(c) for c in k.outside_except):
            raise ConfigError(key, "points at an address the notifier's egress does not reach "
                              "(kubernetes.outsideCidrs minus outsideExcept)",
                              f"use a public host, or take its range out of {NAMESPACE}:kubernetes.outsideExcept")


def owner_tier(model: Resolved, cred: Credential) -> str:
    for eff in model.services.values():
        if cred in eff.service.credentials:
            return eff.tier.value
    return next(e.tier.value for e in model.services.values())


def materialize(
    model: Resolved, values: dict[str, str], parents: dict[str, pulumi.Resource]
) -> dict[str, pulumi.Output[str]]:
    """One secret Output per needed credential; generated ones are RandomPasswords
    parented under the tier of the service that owns them. None with
    `kubernetes.externalSecrets`: the operator writes them in the cluster, the program
    never holds a value."""
    out: dict[str, pulumi.Output[str]] = {}
    if model.settings.target == "kubernetes" and model.settings.kubernetes.external_secrets is not None:
        return out
    for cred in needed(model).values():
        if cred.id in values:
            out[cred.id] = pulumi.Output.secret(values[cred.id])
            continue
        if not cred.generated:  # supplied() refuses a receiver on without its secret
            raise ValueError(f"{cred.config_key} is needed but not supplied")
        generated = random.RandomPassword(
            f"{cred.id}-credential",
            random.RandomPasswordArgs(length=cred.length, special=False),
            opts=pulumi.ResourceOptions(parent=parents[owner_tier(model, cred)]),
        )
        out[cred.id] = pulumi.Output.secret(generated.result)
    return out
