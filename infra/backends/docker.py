"""Docker backend (dev): one bridge network per tier, one container per service.

Derived from the model: networks each container joins, host ports (127.0.0.1 unless
public), health checks from the HealthCheck model with a binary the image has,
named volumes (protected), memory/CPU limits, restart policy, no-new-privileges,
capabilities dropped.

A store that grants its clients logins (PostgreSQL, Redis) takes its clients' passwords as
files of a credentials volume, never as its own inputs, so a client's rotation does not
replace it (docs/credentials.md, without an outage): a one-shot container writes the files
before the store starts, and a second one applies them in the running store with the same
script as the Kubernetes rotation Job (`rotation_command`), before the consumers roll.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_docker as docker

from policies.optiinfra_policies.vocabulary import (
    CONTAINER_PREFIX,
    DOCKER_BACKUP_SCHEDULE,
    DOCKER_BACKUP_TARGET,
    DOCKER_DATA_PATHS,
    DOCKER_IMAGE_LABEL,
    DOCKER_NETWORKS,
    DOCKER_NO_BACKUP,
    DOCKER_NO_HEALTHCHECK,
    DOCKER_PUBLIC,
    DOCKER_SERVICE,
    DOCKER_TIER,
    docker_port_key,
    docker_volume_name,
    joined,
    tier_scoped_name,
)

from .. import rotation
from ..graph import ANY, LOOPBACK, Effective, Resolved
from ..model import (
    DOCKER_SECRET_DIR,
    LOG_MIB,
    SECRET_DIR,
    HealthCheck,
    Secret,
    Service,
    Tier,
)
from ..monitoring import GeneratedFiles
from ..stores import live_credentials, rotation_command
from ..stores.redis import HOST_ENV, PORT_ENV
from ..tiers import TierComponent
from ..wiring import Wiring
from . import StackOutputs

LOG_FILES = 3
"""json-file log rotation: the current file and 2 rotated ones per container, together the
`LOG_MIB` a container's logs may take on a Kubernetes node (kubelet rotates those)."""


def log_options() -> dict[str, str]:
    """The json-file driver's rotation, the same on every container, so no container's logs
    can fill the host (Docker's default keeps them without bound)."""
    return {"max-size": f"{LOG_MIB // LOG_FILES}m", "max-file": str(LOG_FILES)}


SECRET_TMPFS = "size=1m,noexec,nosuid,nodev"
"""The tmpfs the entrypoint wrapper writes file-only credentials to: memory, never a disk."""


def secret_file_wrapper(service: Service) -> list[str]:
    """The Docker entrypoint of an image that reads credentials from files only
    (`SecretFile.docker_file`): `sh -c` writes each one from its environment variable to
    `DOCKER_SECRET_DIR/<credential>` (mode 0600, a tmpfs), unsets the variable and execs the
    image's own entrypoint with the container's arguments. The script names variables, never
    values, so no secret is in argv or the plan; [] when the service needs none."""
    files = [f for f in service.secret_files if f.docker_file]
    if not files:
        return []
    if not service.entrypoint:
        raise ValueError(f"{service.name}: a docker_file SecretFile needs the image's entrypoint (Service.entrypoint)")
    steps = ["umask 077"]
    for f in files:
        var = f.replaces[0]
        steps.append(f'printf %s "${var}" > {shlex.quote(f.path_on("docker"))}')
        steps.append(f"unset {var}")
    steps.append(f'exec {shlex.join(service.entrypoint)} "$@"')
    return ["sh", "-c", "; ".join(steps), "sh"]


def container_name(service: str) -> str:
    return CONTAINER_PREFIX + service


CREDENTIALS_VOLUME = "client-credentials"
"""A store's volume of its clients' passwords (`<SECRET_DIR>/<credential>`, as on Kubernetes)."""
ONE_SHOT_MEMORY_MIB, ONE_SHOT_RESERVED_MIB, ONE_SHOT_CPUS = 512, 128, "0.5"
"""A one-shot container's limits: the backups' (infra/commands/backup.py)."""


def credential_files_name(store: str) -> str:
    """The one-shot container that writes a store's clients' passwords into its credentials volume."""
    return f"{store}-credential-files"


def rotation_name(store: str) -> str:
    """The one-shot container that applies a store's clients' passwords in the running store
    (the Kubernetes rotation Job's name)."""
    return f"{store}-credentials"


def live_files(store: Service) -> list[tuple[str, str]]:
    """(variable, credential) of each client password a store reads from its credentials volume."""
    live = live_credentials(store)
    return [(var, f.credential) for f in store.secret_files if f.credential in live for var in f.replaces]


def store_env(store: Service, env: Sequence[tuple[str, pulumi.Input[str]]]) -> list[tuple[str, pulumi.Input[str]]]:
    """A store's environment with each client password replaced by its file's name
    (`<VAR>_FILE=<SECRET_DIR>/<credential>`, a plain value): the start wrapper reads the
    variable, else the file; no client's value is an input of the store's container."""
    files = dict(live_files(store))
    out: list[tuple[str, pulumi.Input[str]]] = []
    for name, value in env:
        if name in files:
            out.append((f"{name}_FILE", f"{SECRET_DIR}/{files[name]}"))
        else:
            out.append((name, value))
    return out


def credential_files_script(files: Sequence[tuple[str, str]], owner: str) -> str:
    """The files writer's `sh -c` script: each password from its variable into
    `<SECRET_DIR>/<credential>` (mode 0400, owned by the store's user, replaced atomically
    with a rename), names of variables only, never a value in argv. A missing value fails it."""
    steps = ["set -e", "umask 077"]
    for var, cred in files:
        tmp, path = shlex.quote(f"{SECRET_DIR}/.{cred}.new"), shlex.quote(f"{SECRET_DIR}/{cred}")
        steps += [f'[ -n "${var}" ] || {{ echo "optiinfra: no value in {var}" >&2; exit 1; }}',
                  f'printf %s "${var}" > {tmp}', f"chmod 0400 {tmp}", f"chown {owner} {tmp}", f"mv -f {tmp} {path}"]
    steps.append('echo "optiinfra: credential files written"')
    return "; ".join(steps)


@dataclass(frozen=True)
class OneShot:
    """What differs between a store's one-shot containers (DockerBackend._one_shot)."""

    argv: tuple[str, ...]
    envs: list[pulumi.Input[str]] = field(default_factory=list)
    user: str | None = None
    adds: tuple[str, ...] = ()
    network_mode: str | None = None
    networks: list[docker.ContainerNetworksAdvancedArgs] = field(default_factory=list)
    volumes: list[docker.ContainerVolumeArgs] = field(default_factory=list)


def exited_zero(container: docker.Container, name: str) -> pulumi.Output[docker.Container]:
    """The one-shot container, once it has exited 0; a non-zero exit fails the registration of
    whatever depends on this (the consumers do not roll). Unknown in a preview."""
    def check(code: int | None) -> docker.Container:
        if code not in (None, 0):
            raise pulumi.RunError(f"{name} exited with {code}: the credentials were not applied; see "
                                  f"`docker logs {container_name(name)}`")
        return container
    return container.exit_code.apply(check)


def network_name(model: Resolved, tier: Tier) -> str:
    return tier_scoped_name(model.settings.docker.network_prefix, tier.value)


def volume_name(service: str, volume: str) -> str:
    return docker_volume_name(service, volume)


def backup_dir(model: Resolved, service: str, root: Path | None = None) -> str:
    """The host directory a service's backups go to: `backups.hostDir/<service>`, as
    configured; with `root`, a relative hostDir resolved below it (the project directory)."""
    base = Path(model.settings.backups.host_dir)
    if root is not None and not base.is_absolute():
        base = root / base
    return str(base / service)


def host_of(service: str) -> str:
    """Every container has its service name as an alias on each network it joins."""
    return service


def routes_out(model: Resolved, tier: Tier) -> bool:
    """A tier network has a route out (is not `internal`) only when one of the tier's own
    containers needs it: it declares outside egress in the catalog, or it publishes a host
    port (Docker forwards published ports only through a network with a gateway). With the
    catalog's defaults the databases network is internal and the others are not (each has a
    published UI or API); Docker cannot narrow egress per container on a shared network."""
    return any(model.outside(eff) or eff.published for eff in model.in_tier(tier))


def _http_command(service: Service, path: str, port: int, expect: str | None, client: str) -> list[str]:
    url = f"http://127.0.0.1:{port}{path}"
    if client == "wget":
        fetch = f"wget -qO- {shlex.quote(url)}"
        shell = f"{fetch} | tr -d ' ' | grep -qF {shlex.quote(expect)}" if expect else f"{fetch} >/dev/null"
        return ["CMD-SHELL", shell]
    if client == "python":
        code = (f"import sys,urllib.request;b=urllib.request.urlopen({url!r},timeout=4).read().decode();"
                f"sys.exit(0 if {expect!r}.replace(' ','') in b.replace(' ','') else 1)" if expect else
                f"import urllib.request;urllib.request.urlopen({url!r},timeout=4)")
        return ["CMD", "python", "-c", code]
    if client == "bash-tcp":  # no HTTP client in the image: bash's /dev/tcp sends the GET
        script = (f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 "
                  "&& read -r status <&3 && [[ $status == *' 200 '* ]]")
        return ["CMD", "bash", "-c", script]
    if client == "node":
        code = (f"fetch({url!r}).then(r=>r.text().then(t=>process.exit(r.ok&&t.replace(/ /g,'')"
                f".includes({(expect or '')!r})?0:1))).catch(()=>process.exit(1))")
        return ["CMD", "node", "-e", code]
    raise ValueError(f"{service.name}: no HTTP client {client!r}")


@dataclass(frozen=True)
class _HealthTest:
    """A check as Docker's HEALTHCHECK test, run inside the container with `client`."""

    service: Service
    client: str

    def http(self, path: str, port: int, expect: str | None) -> list[str]:
        return _http_command(self.service, path, port, expect, self.client)

    def tcp(self, port: int) -> list[str]:
        if self.client != "bash-tcp":
            raise ValueError(f"{self.service.name}: cannot run TcpCheck with {self.client}")
        return ["CMD", "bash", "-c", f":> /dev/tcp/127.0.0.1/{port}"]

    def command(self, argv: tuple[str, ...]) -> list[str]:
        return ["CMD", *argv]


def health_test(service: Service, health: HealthCheck) -> list[str] | None:
    """The Docker HEALTHCHECK test for a service, or None when the image has no binary."""
    if health.docker_client is None:
        return None
    return health.probe.render(service, _HealthTest(service, health.docker_client))


class DockerBackend:
    def __init__(self, model: Resolved, tiers: Mapping[Tier, TierComponent],
                 credentials: Mapping[str, pulumi.Output[str]]) -> None:
        self.model, self.tiers = model, tiers
        self.wiring = Wiring(model.catalog, host_of, dict(credentials))
        self.files = GeneratedFiles(model, host_of)
        self.networks: dict[Tier, docker.Network] = {}
        self.images: dict[str, docker.RemoteImage] = {}
        # Computed once: per service they would make the render quadratic in the services.
        self.gates = model.gates()
        self.phases = rotation.phases(model.catalog, model.settings)
        """Per store, per client: the rotation phase its rotation container applies (the `rotation` setting)."""
        self.rotations: dict[int, pulumi.Output[docker.Container]] = {}
        """Per store container (by id): its rotation container once it exited 0, which whatever
        waits for the store waits for too (the consumers roll after the store has their values)."""
        for tier, comp in tiers.items():
            self.networks[tier] = docker.Network(
                f"{tier.value}-network",
                docker.NetworkArgs(
                    name=network_name(model, tier),
                    driver="bridge",
                    internal=not routes_out(model, tier),
                    labels=[docker.NetworkLabelArgs(label=DOCKER_TIER, value=tier.value)],
                ),
                opts=comp.child_opts(delete_before_replace=True),
            )

    def _image(self, eff: Effective, comp: TierComponent) -> docker.RemoteImage:
        key = f"{eff.tier.value}/{eff.image}"
        if key not in self.images:
            self.images[key] = docker.RemoteImage(
                f"{eff.name}-image",
                docker.RemoteImageArgs(name=eff.image, keep_locally=True),
                opts=pulumi.ResourceOptions(parent=comp),
            )
        return self.images[key]

    def _waits(self, after: Sequence[pulumi.Resource]) -> list[pulumi.Input[pulumi.Resource]]:
        """What a container waits for: `after`, and beside each store its rotation container."""
        out: list[pulumi.Input[pulumi.Resource]] = []
        for r in after:
            out.append(r)
            if id(r) in self.rotations:
                out.append(self.rotations[id(r)])
        return out

    def _one_shot(self, eff: Effective, name: str, args: OneShot,
                  depends_on: Sequence[pulumi.Input[pulumi.Resource]]) -> docker.Container:
        """A container beside a store that runs `args.argv` once, in the store's image and
        hardened like it, recorded with its exit code (`attach`: `pulumi up` waits for it to
        exit). It stays, exited, until its inputs change (like a completed Job: `docker logs`
        shows its run); a changed input replaces it, which runs it again."""
        svc, comp = eff.service, self.tiers[eff.tier]
        return docker.Container(
            name,
            docker.ContainerArgs(
                name=container_name(name),
                image=self._image(eff, comp).image_id,
                entrypoints=list(args.argv[:2]), command=list(args.argv[2:]),
                envs=args.envs or None,
                user=args.user,
                capabilities=docker.ContainerCapabilitiesArgs(drops=["ALL"], adds=list(args.adds) or None),
                network_mode=args.network_mode,
                networks_advanced=args.networks or None,
                volumes=args.volumes or None,
                tmpfs={"/tmp": ""},
                must_run=False, attach=True, logs=True, restart="no",
                memory=ONE_SHOT_MEMORY_MIB, memory_reservation=ONE_SHOT_RESERVED_MIB, cpus=ONE_SHOT_CPUS,
                log_driver="json-file", log_opts=log_options(),
                security_opts=["no-new-privileges:true"],
                read_only=True,
                labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in (
                    (DOCKER_SERVICE, svc.name), (DOCKER_TIER, svc.tier.value), (DOCKER_IMAGE_LABEL, eff.image),
                    (DOCKER_PUBLIC, "false"),
                    (DOCKER_NETWORKS, joined(network_name(self.model, svc.tier) for _ in args.networks)))],
            ),
            opts=pulumi.ResourceOptions(parent=comp, depends_on=list(depends_on), delete_before_replace=True),
        )

    def _credential_files(self, eff: Effective, after: Sequence[pulumi.Input[pulumi.Resource]]
                          ) -> tuple[docker.ContainerVolumeArgs, docker.Container]:
        """A store's credentials volume, and the one-shot container that writes its clients'
        current passwords into it (before the store starts; replaced, so run again, when one
        changes). The store mounts it read-only at SECRET_DIR."""
        svc, comp = eff.service, self.tiers[eff.tier]
        vol = docker.Volume(
            f"{svc.name}-{CREDENTIALS_VOLUME}",
            docker.VolumeArgs(name=volume_name(svc.name, CREDENTIALS_VOLUME),
                              labels=[docker.VolumeLabelArgs(label=DOCKER_SERVICE, value=svc.name)]),
            # Protected like the data volumes: the store cannot start without its files.
            opts=pulumi.ResourceOptions(parent=comp, protect=True))
        files = live_files(svc)
        values = dict(self.wiring.env(svc))
        writer = self._one_shot(eff, credential_files_name(svc.name), OneShot(
            ("sh", "-c", credential_files_script(files, svc.docker_user or f"{svc.uid}:{svc.uid}")),
            envs=[pulumi.Output.concat(var, "=", values[var]) for var, _ in files],
            # root, to write into the volume Docker creates root-owned, giving each file to the store's user
            user="0:0", adds=("CHOWN",), network_mode="none",
            volumes=[docker.ContainerVolumeArgs(volume_name=vol.name, container_path=SECRET_DIR)]),
            [*after, vol])
        return docker.ContainerVolumeArgs(volume_name=vol.name, container_path=SECRET_DIR, read_only=True), writer

    def _rotation(self, eff: Effective, store: docker.Container) -> docker.Container | None:
        """The one-shot container that applies a store's clients' current passwords in the
        running store, with the script the Kubernetes rotation Job runs (`rotation_command`),
        as the administrator over the store's network; replaced (so run again) when a client's
        value or its rotation phase changes. None: the store has no clients."""
        svc, model = eff.service, self.model
        argv = rotation_command(svc, model.catalog.services.values(), self.phases.get(svc.name, {}))
        if not argv or svc.connection is None or svc.connection.credential is None:
            return None
        port = str(svc.port(svc.connection.port).container)
        own = {var for var, _ in live_files(svc)}
        admin = svc.connection.credential
        env = [(k, v) for (k, v), (_, decl) in zip(self.wiring.env(svc), svc.env, strict=True)
               if isinstance(decl, str) or k in own or (isinstance(decl, Secret) and decl.credential == admin)]
        env += [("PGHOST", host_of(svc.name)), ("PGPORT", port), (HOST_ENV, host_of(svc.name)), (PORT_ENV, port)]
        return self._one_shot(eff, rotation_name(svc.name), OneShot(
            argv, envs=[f"{k}={v}" if isinstance(v, str) else pulumi.Output.concat(k, "=", v) for k, v in env],
            user=svc.docker_user,
            networks=[docker.ContainerNetworksAdvancedArgs(name=self.networks[svc.tier].name)]), [store])

    def service(self, eff: Effective, after: Sequence[pulumi.Resource]) -> docker.Container:
        svc, model = eff.service, self.model
        comp = self.tiers[eff.tier]
        volumes = []
        adopted: list[pulumi.Resource] = []
        waits = self._waits(after)
        writer: list[pulumi.Resource] = []
        if live_files(svc):
            mount, files_writer = self._credential_files(eff, waits)
            volumes.append(mount)
            writer.append(files_writer)
        for v in svc.volumes:
            existing = eff.existing_volume(v.name)
            if existing is not None:
                # Adopted (docs/adoption.md): read, never managed. The engine records it as
                # external, so no update, replace, destroy or removal from the program ever
                # deletes it, and the read fails (stopping `pulumi up`) when it is missing,
                # where mounting the name alone would start an empty volume of that name.
                adopted.append(docker.Volume.get(f"{svc.name}-{v.name}-existing", existing,
                                                 opts=pulumi.ResourceOptions(parent=comp)))
                volumes.append(docker.ContainerVolumeArgs(volume_name=existing, container_path=v.path))
                continue
            vol = docker.Volume(
                f"{svc.name}-{v.name}",
                docker.VolumeArgs(name=volume_name(svc.name, v.name),
                                  labels=[docker.VolumeLabelArgs(label=DOCKER_SERVICE, value=svc.name)]),
                # Protected: a replaced or deleted container must never take its data along.
                opts=pulumi.ResourceOptions(parent=comp, protect=True),
            )
            volumes.append(docker.ContainerVolumeArgs(volume_name=vol.name, container_path=v.path))
        # A plain value needs no Output (each costs the SDK several tasks per render).
        env = [f"{k}={v}" if isinstance(v, str) else pulumi.Output.concat(k, "=", v)
               for k, v in store_env(svc, self.wiring.env(svc))]
        env += [f"{k}={v}" for k, v in eff.runtime_env]  # the runtime's memory setting (infra/runtime.py)
        healthcheck = None
        if svc.health is not None:
            test = health_test(svc, svc.health)
            if test is not None:
                h = svc.health
                healthcheck = docker.ContainerHealthcheckArgs(
                    tests=test, interval=f"{h.interval_s}s", timeout=f"{h.timeout_s}s", retries=h.retries,
                    start_period=f"{h.start_period_s}s")
        gate = svc.name in self.gates and healthcheck is not None
        uploads = [docker.ContainerUploadArgs(file=f.path, content=self.files.content(f))
                   for f in svc.files]
        read_only = svc.read_only_root_on_docker
        tmpfs = dict.fromkeys(svc.writable_paths, "") if read_only and svc.writable_paths else {}
        entrypoint = secret_file_wrapper(svc)
        if entrypoint:
            tmpfs[DOCKER_SECRET_DIR] = SECRET_TMPFS
        res = eff.resources
        container = docker.Container(
            svc.name,
            docker.ContainerArgs(
                name=container_name(svc.name),
                image=self._image(eff, comp).image_id,
                command=[*self.wiring.command(svc), *eff.sized_args]
                or None,
                envs=env or None,
                ports=[docker.ContainerPortArgs(internal=p.port.container, external=p.host, ip=p.bind,
                                                protocol=p.port.protocol) for p in eff.published] or None,
                networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=self.networks[t].name,
                                                                        aliases=[svc.name])
                                   for t in model.networks_of(svc.name)],
                healthcheck=healthcheck,
                # Containers others wait for are created only once healthy.
                wait=gate,
                wait_timeout=(svc.health.start_period_s + 120) if gate and svc.health else None,
                memory=res.limit_mib,
                shm_size=eff.shm_mib or None,
                log_driver="json-file",
                log_opts=log_options(),
                memory_reservation=res.memory_mib,
                cpus=f"{res.limit_cpu:g}",
                restart="on-failure",
                max_retry_count=5,
                must_run=True,
                security_opts=["no-new-privileges:true"],
                capabilities=docker.ContainerCapabilitiesArgs(
                    drops=["ALL"], adds=[c for c, _ in svc.cap_add] or None),
                user=svc.docker_user,
                # Read-only root as on Kubernetes, with a tmpfs where the emptyDirs are there.
                read_only=read_only or None,
                tmpfs=tmpfs or None,
                entrypoints=entrypoint or None,
                volumes=volumes or None,
                uploads=uploads or None,
                labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in self._labels(eff, healthcheck)],
            ),
            # Names are fixed (the seed's container names), so a replacement must delete
            # the old container first; that also frees its host port.
            opts=pulumi.ResourceOptions(parent=comp, depends_on=[*waits, *adopted, *writer],
                                        delete_before_replace=True),
        )
        rotating = self._rotation(eff, container) if writer else None
        if rotating is not None:
            self.rotations[id(container)] = exited_zero(rotating, rotation_name(svc.name))
        return container

    def _labels(self, eff: Effective, healthcheck: object) -> list[tuple[str, str]]:
        """What the container is, and what the policy pack needs from the catalog to judge
        it without the model (keys in the vocabulary)."""
        svc = eff.service
        labels = [(DOCKER_SERVICE, svc.name), (DOCKER_TIER, svc.tier.value), (DOCKER_IMAGE_LABEL, eff.image),
                  (DOCKER_PUBLIC, "true" if eff.public else "false"),
                  (DOCKER_NETWORKS, joined(network_name(self.model, t) for t in self.model.networks_of(svc.name)))]
        # Published ports only: the band rule judges host ports, and a label names its port
        # number, so stamping an unpublished port would replace the container when it moves.
        labels += [(docker_port_key(p.port.container), self.model.catalog.port_stamp(p.port))
                   for p in eff.published]
        if svc.volumes:
            labels.append((DOCKER_DATA_PATHS, joined(v.path for v in svc.volumes)))
        if eff.backed_up:
            # `python -m infra backup` writes here; the host's scheduler runs it on this schedule.
            labels += [(DOCKER_BACKUP_TARGET, backup_dir(self.model, svc.name)),
                       (DOCKER_BACKUP_SCHEDULE, self.model.settings.backups.schedule)]
        elif svc.backup is not None and svc.backup.none_reason:
            labels.append((DOCKER_NO_BACKUP, svc.backup.none_reason))
        if svc.health is not None and healthcheck is None:
            labels.append((DOCKER_NO_HEALTHCHECK, svc.health.no_docker_reason))
        return labels

    def outputs(self) -> StackOutputs:
        """The seed's quick-access URLs and the port map, from the published host ports
        (no credential in any of them)."""
        urls: dict[str, str] = {}
        ports: dict[str, dict[str, int]] = {}
        for eff in self.model.services.values():
            if eff.published:
                ports[eff.name] = {p.port.name: p.host for p in eff.published}
                first = eff.published[0]
                if first.port.name in ("http", "web"):
                    host = "localhost" if first.bind in (LOOPBACK, ANY) else first.bind
                    urls[eff.name] = f"http://{host}:{first.host}"
        return StackOutputs(urls=urls, ports=ports,
                            extra={"networks": {t.value: network_name(self.model, t) for t in self.networks}})
