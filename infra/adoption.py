"""Taking over a docker-compose deployment: what runs, mapped onto the catalog.

`discover` reads the engine's answers (containers, their config and mounts, volumes,
networks) and maps them onto the catalog without naming any service: a container is the
catalog service `<s>` when it is named `optiinfra-<s>` (or its compose service label is
`<s>`), and one of its volume mounts is the catalog Volume whose path is the mount's
destination. Everything else is reported as not matched, with what it means for the
data. `report` turns that into the stack config to set, the commands to run and the
credentials to rotate (docs/adoption.md is the step-by-step guide).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any, Protocol

from policies.optiinfra_policies.standards import KNOWN_DEFAULT_CREDENTIALS
from policies.optiinfra_policies.vocabulary import CONTAINER_PREFIX, tier_scoped_name

from .graph import Resolved
from .model import Secret, Service, Tier

DEFAULT_PROJECT = "optiinfra"
"""The seed's compose project (its network is `optiinfra_default`)."""
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
VOLUME_LABEL = "com.docker.compose.volume"
GUIDE = "docs/adoption.md"


class EngineApi(Protocol):
    def containers(self) -> list[dict[str, Any]]: ...
    def inspect(self, container_id: str) -> dict[str, Any]: ...
    def volumes(self) -> list[dict[str, Any]]: ...
    def networks(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Container:
    name: str
    service: str | None
    """The catalog service it runs, or None."""
    state: str
    compose_service: str


@dataclass(frozen=True)
class Adopted:
    service: str
    volume: str
    """The catalog Volume's name."""
    path: str
    docker_volume: str

    @property
    def key(self) -> str:
        return f"services.{self.service}.volumes.{self.volume}.existing"


@dataclass(frozen=True)
class CredentialUse:
    service: str
    config_key: str
    env: str
    state: str
    """`default` (a well-known value), `unset` (the image's default or none), `set`, or
    `unknown` (the service takes it inside another setting)."""


@dataclass
class Findings:
    project: str
    containers: list[Container] = field(default_factory=list)
    adopted: list[Adopted] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    """What cannot be mapped onto the catalog, each with what it means."""
    blockers: list[str] = field(default_factory=list)
    """What must be fixed before `pulumi up`, or the data would not be found."""
    fresh: list[str] = field(default_factory=list)
    """Catalog volumes with no compose volume: the program creates them empty."""
    credentials: list[CredentialUse] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Settings and images compose made the adopted data with, where the program's differ."""
    owners: list[tuple[Adopted, str]] = field(default_factory=list)
    """Adopted volumes and the `uid:gid` the program's container runs as (it must own the files)."""
    networks: list[str] = field(default_factory=list)
    volumes_seen: int = 0

    @property
    def needs_attention(self) -> bool:
        return bool(self.unmatched or self.blockers)


def _env(inspected: dict[str, Any]) -> dict[str, str]:
    """The container's environment (its image's ENV included, as the engine reports it)."""
    out: dict[str, str] = {}
    for entry in (inspected.get("Config") or {}).get("Env") or []:
        key, _, value = str(entry).partition("=")
        out[key] = value
    return out


def _name(c: dict[str, Any]) -> str:
    names = c.get("Names") or [c.get("Name") or c.get("Id", "")[:12]]
    return str(names[0]).lstrip("/")


def _ours(c: dict[str, Any], project: str) -> bool:
    return (c.get("Labels") or {}).get(PROJECT_LABEL) == project or _name(c).startswith(CONTAINER_PREFIX)


def _service_of(c: dict[str, Any], model: Resolved) -> str | None:
    name, label = _name(c), (c.get("Labels") or {}).get(SERVICE_LABEL, "")
    if name.startswith(CONTAINER_PREFIX) and name[len(CONTAINER_PREFIX):] in model.catalog.services:
        return name[len(CONTAINER_PREFIX):]
    return label if label in model.catalog.services else None


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def discover(engine: EngineApi, model: Resolved, project: str) -> Findings:
    """Map the compose project's containers, volumes and networks onto the catalog."""
    f = Findings(project)
    catalog = model.catalog
    mounted: dict[str, str] = {}  # docker volume -> who mounts it at a catalog path
    for c in sorted((c for c in engine.containers() if _ours(c, project)), key=_name):
        name, service = _name(c), _service_of(c, model)
        labels = c.get("Labels") or {}
        f.containers.append(Container(name, service, str(c.get("State", "")), str(labels.get(SERVICE_LABEL, ""))))
        if service is None:
            f.unmatched.append(f"container {name} (compose service {labels.get(SERVICE_LABEL) or '?'}) runs no "
                               "catalog service: the program does not deploy it; keep what it needs elsewhere "
                               "before compose stops it")
            continue
        svc = catalog.services[service]
        inspected = engine.inspect(str(c.get("Id", name)))
        mounts = inspected.get("Mounts") or c.get("Mounts") or []
        by_path = {v.path: v for v in svc.volumes}
        on_host: set[str] = set()
        for m in mounts:
            dest, kind = str(m.get("Destination", "")), str(m.get("Type", ""))
            vol = by_path.get(dest)
            if kind == "volume" and vol is not None:
                f.adopted.append(Adopted(service, vol.name, vol.path, str(m.get("Name"))))
                mounted[str(m.get("Name"))] = f"{service} {vol.name}"
            elif kind == "bind" and vol is not None:
                on_host.add(vol.name)
                f.blockers.append(
                    f"{service} keeps its {vol.name} data in the host directory {m.get('Source')}, not a volume: "
                    f"copy it into one (compose stopped): docker volume create {project}_{service}_{vol.name} && "
                    f"docker run --rm -v {shlex.quote(str(m.get('Source')))}:/from:ro "
                    f"-v {project}_{service}_{vol.name}:/to alpine cp -a /from/. /to/ ; then adopt that volume")
            elif kind == "volume":
                f.unmatched.append(
                    f"volume {m.get('Name')} is mounted by {name} at {dest}, where {service} keeps no catalog "
                    f"volume ({', '.join(by_path) or 'it has none'}): the program will not mount it, its data "
                    "stays in that volume")
                mounted.setdefault(str(m.get("Name")), f"{name} at {dest} (not a catalog path)")
        adopted_here = {a.volume for a in f.adopted if a.service == service}
        env = _env(inspected)
        for vol in svc.volumes:
            if vol.name not in adopted_here | on_host:
                f.fresh.append(f"{service} {vol.name} ({vol.path}): {name} mounts no volume there")
        adopted_names = {a.volume: a.docker_volume for a in f.adopted if a.service == service}
        f.blockers.extend(_path_problems(svc, env, adopted_names))
        f.notes.extend(_setting_differences(svc, env, adopted_names))
        image, runs = str(c.get("Image", "")), model.services[service].image if service in model.services else ""
        if adopted_names and runs and image != runs:
            f.notes.append(f"{service}: compose runs {image}, the program runs {runs} on the same data: a database "
                           "check its upgrade notes first (a database's next major version may need a dump and "
                           f"restore; see {GUIDE}#versions)")
        if svc.docker_user:
            f.owners.extend((a, svc.docker_user) for a in f.adopted if a.service == service)
        f.credentials.extend(_credentials(model, svc, env))
    running = {c.service for c in f.containers if c.service}
    for svc in catalog.services.values():
        if svc.name not in running and svc.name in model.services:
            f.fresh.extend(f"{svc.name} {v.name} ({v.path}): no container {CONTAINER_PREFIX}{svc.name} found"
                           for v in svc.volumes)
    for found in sorted(engine.volumes(), key=lambda v: str(v.get("Name"))):
        vname, labels = str(found.get("Name")), found.get("Labels") or {}
        if labels.get(PROJECT_LABEL) != project and not vname.startswith(f"{project}_"):
            continue
        f.volumes_seen += 1
        if vname not in mounted:
            f.unmatched.append(
                f"volume {vname} (compose volume {labels.get(VOLUME_LABEL) or '?'}) is mounted by no container at "
                "a catalog volume path: nothing adopts it; if it holds data the platform needs, mount it in the "
                f"compose file at the catalog path and run adopt again, or copy the data (see {GUIDE})")
    ours = {tier_scoped_name(model.settings.docker.network_prefix, t.value) for t in Tier}
    for net in sorted(engine.networks(), key=lambda n: str(n.get("Name"))):
        nname = str(net.get("Name"))
        if (net.get("Labels") or {}).get(PROJECT_LABEL) == project:
            f.networks.append(nname)
        if nname in ours:
            f.blockers.append(f"network {nname} exists and is the name the program gives a tier network: remove it "
                              "(docker network rm, once no container uses it) or set docker.networkPrefix")
    return f


def _path_problems(svc: Service, env: dict[str, str], adopted: dict[str, str]) -> list[str]:
    """Catalog environment that points into an adopted volume (a data directory such as a
    subdirectory of it) and differs from the compose container's: the new container would
    look for the data elsewhere and start empty beside it."""
    out = []
    for vol in svc.volumes:
        if vol.name not in adopted:
            continue
        for key, value in svc.env:
            if not isinstance(value, str) or not _under(value, vol.path):
                continue
            before = env.get(key)
            if before is None or before.rstrip("/") == value.rstrip("/"):
                continue
            sub = value[len(vol.path):].strip("/")
            move = ""
            if before.rstrip("/") == vol.path.rstrip("/") and sub:
                move = (f" Move the files into {sub}/ with compose stopped and after the backup: docker run --rm "
                        f"-v {adopted[vol.name]}:/v alpine sh -c 'cd /v && mkdir {sub} && find . -mindepth 1 "
                        "-maxdepth 1 "
                        f"! -name {sub} -exec mv {{}} {sub}/ \\; && chown $(stat -c %u:%g .) {sub} && chmod 700 "
                        f"{sub}'")
            out.append(f"{svc.name}: the catalog sets {key}={value}, the compose container has {key}={before}: "
                       f"the program's container would not find the data on the adopted volume.{move}")
    return out


def _setting_differences(svc: Service, env: dict[str, str], adopted: dict[str, str]) -> list[str]:
    """Plain catalog settings (user and database names, ...) the compose container sets
    otherwise, for a service whose data is adopted: that data was made with compose's."""
    if not adopted:
        return []
    paths = [v.path for v in svc.volumes]
    out = []
    for key, value in svc.env:
        if not isinstance(value, str) or any(_under(value, p) for p in paths) or key not in env:
            continue
        if env[key] != value:
            out.append(f"{svc.name}: the catalog sets {key}={value}, the compose container has {key}={env[key]}, "
                       f"and the data on {', '.join(adopted.values())} was made with that (see {GUIDE})")
    return out


def _credentials(model: Resolved, svc: Service, env: dict[str, str]) -> list[CredentialUse]:
    """Each credential the service owns, and what the compose container has for it."""
    out = []
    for cred in svc.credentials:
        keys = [k for k, v in svc.env if isinstance(v, Secret) and v.credential == cred.id]
        before = next((env[k] for k in keys if k in env), None)
        state = ("unknown" if not keys else "unset" if not before else
                 "default" if before.strip().lower() in KNOWN_DEFAULT_CREDENTIALS else "set")
        out.append(CredentialUse(svc.name, cred.config_key, keys[0] if keys else cred.description, state))
    return out


# ---- the report ---------------------------------------------------------------------------------------

def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def report(f: Findings, stack: str, host: str) -> str:
    """What adopt prints: findings, the stack config, the commands, the credentials."""
    lines = [f"Compose project {f.project} on {host}: {_count(len(f.containers), 'container')}, "
             f"{_count(f.volumes_seen, 'volume')}, {_count(len(f.networks), 'network')}", ""]
    lines.append("Containers (the program creates its own under the same names: stop compose first)")
    lines += [f"  {c.name:<36} -> {c.service or '(no catalog service)':<24} {c.state}" for c in f.containers]
    lines += ["", "Volumes to adopt (mounted by the program, never created, changed or deleted by it)"]
    lines += [f"  {a.docker_volume:<36} -> {a.service} {a.volume} at {a.path}" for a in f.adopted] or ["  none"]
    if f.fresh:
        lines += ["", "Catalog volumes without compose data (the program creates them, empty)"]
        lines += [f"  {x}" for x in f.fresh]
    if f.notes:
        lines += ["", "Settings that differ"] + [f"  note: {x}" for x in f.notes]
    if f.unmatched:
        lines += ["", "Not matched"] + [f"  warning: {x}" for x in f.unmatched]
    if f.blockers:
        lines += ["", "To fix before `pulumi up`"] + [f"  error: {x}" for x in f.blockers]
    lines += ["", f"# 1. Stack config (run in the project directory; see {GUIDE})"]
    lines += [f"pulumi config set --stack {stack} --path {a.key} {a.docker_volume}" for a in f.adopted] or [
        "# (nothing to set: no volume to adopt)"]
    lines += ["", "# 2. pulumi import: none needed. An adopted volume is declared external (read with",
              "#    docker.Volume.get): it never enters the state as a managed resource, so no update, replace,",
              "#    destroy or removal from the config can delete it, and `pulumi up` stops if it is missing.",
              "#    Compose's containers and networks are not imported: the program's differ (tier networks,",
              "#    limits, health checks) and would be replaced at once; they are removed by stopping compose."]
    lines += ["", "# 3. Credentials: the compose deployment uses default credentials; rotate every one to a secret"]
    if f.adopted:
        lines += ["#    (while compose still runs). A service that keeps a credential in its data (a database",
                  "#    user's password, an admin account) keeps the old one on an adopted volume: change it",
                  "#    inside the running service first, then set the same value here; see",
                  f"#    {GUIDE}#3-rotate-away-from-the-default-credentials."]
    seen: set[str] = set()
    for c in f.credentials:
        if c.config_key in seen:
            continue
        seen.add(c.config_key)
        what = {"default": f"{c.env} is a well-known default", "unset": f"{c.env} is not set (the image's default, "
                "or none)", "set": f"{c.env} has a value from the compose file (treat it as known)",
                "unknown": f"its credential ({c.env}) is set inside another setting: treat it as known"}[c.state]
        lines.append(f"#    {c.service}: {what}")
        lines.append(f"pulumi config set --stack {stack} --secret {c.config_key} \"$(openssl rand -hex 24)\"")
    lines += ["", "# 4. Back up, then stop compose, keeping its volumes (never `down -v`, which deletes them)",
              f"python -m infra backup --stack {stack}    # or, per volume: docker run --rm -v VOLUME:/data:ro "
              "-v \"$PWD\":/backup alpine tar czf /backup/VOLUME.tgz -C /data .",
              f"docker compose -p {f.project} down"]
    if f.networks:
        lines.append(f"#    (that also removes {', '.join(f.networks)}; the program uses its own tier networks)")
    if f.owners:
        lines += ["#    Then, compose stopped: the program's containers run as a fixed user, which must own",
                  "#    the files (a no-op where compose's image used the same one):"]
        lines += [f"docker run --rm -v {a.docker_volume}:/v alpine chown -R {user} /v" for a, user in f.owners]
    lines += ["", f"# 5. Deploy on the same volumes: scripts/deploy.sh {stack}"]
    return "\n".join(lines) + "\n"
