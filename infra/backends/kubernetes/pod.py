"""The pod: its one container (image, args, env, ports, resources, probes), its volumes
(generated config files, writable paths, mounted credentials) and the restricted
security context every pod of the stack runs under."""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Mapping, Sequence

import pulumi
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta

from policies.optiinfra_policies.vocabulary import K8S_COMPONENT as COMPONENT
from policies.optiinfra_policies.vocabulary import K8S_NAME as NAME
from policies.optiinfra_policies.vocabulary import K8S_PART_OF as PART_OF
from policies.optiinfra_policies.vocabulary import PROJECT

from ... import external_secrets as eso
from ...graph import Effective
from ...model import SECRET_DIR, Service
from ...monitoring import GeneratedFiles
from ...tiers import TierComponent
from ...wiring import Wiring
from .credentials import container_inputs, rollout_annotation
from .objects import CREDENTIALS_SECRET, TARGET, Instance, Objects, quantity_cpu, quantity_mib
from .rbac import account_name, cluster_read_args

STARTUP_GRACE = 10
"""A startup probe allows this many times the catalog's start period before liveness
takes over (slow first starts: initdb, ClickHouse on a fresh volume)."""


SECCOMP = core.SeccompProfileArgs(type="RuntimeDefault")


def container_security(read_only: bool, cap_add: Sequence[str] = ()) -> core.SecurityContextArgs:
    """The restricted container security context every pod of the stack runs under."""
    return core.SecurityContextArgs(
        allow_privilege_escalation=False, privileged=False, run_as_non_root=True,
        read_only_root_filesystem=read_only, seccomp_profile=SECCOMP,
        capabilities=core.CapabilitiesArgs(drop=["ALL"], add=list(cap_add) or None))


def pod_security(uid: int) -> core.PodSecurityContextArgs:
    """The pod side of it: non-root as `uid` (user, group, volume group)."""
    return core.PodSecurityContextArgs(
        run_as_non_root=True, run_as_user=uid, run_as_group=uid, fs_group=uid,
        fs_group_change_policy="OnRootMismatch", seccomp_profile=SECCOMP)


class _ProbeAction:
    """A check as a Kubernetes probe's action (the keyword of core.ProbeArgs it sets)."""

    def http(self, path: str, port: int, expect: str | None) -> dict[str, object]:
        # A probe can check the status only; the body match (`expect`) is Docker's.
        return {"http_get": core.HTTPGetActionArgs(path=path, port=port)}

    def tcp(self, port: int) -> dict[str, object]:
        return {"tcp_socket": core.TCPSocketActionArgs(port=port)}

    def command(self, argv: tuple[str, ...]) -> dict[str, object]:
        return {"exec_": core.ExecActionArgs(command=list(argv))}


def probes(service: Service) -> dict[str, core.ProbeArgs]:
    """readiness from the catalog's HealthCheck `probe`, liveness from its `live` check;
    a slow starter's startup probe waits for readiness before liveness takes over."""
    h = service.health
    if h is None:
        return {}
    ready, live = h.probe.render(service, _ProbeAction()), h.liveness.render(service, _ProbeAction())

    def probe(action: dict[str, object], *, failures: int, delay: int | None = None) -> core.ProbeArgs:
        return core.ProbeArgs(**action, period_seconds=h.interval_s,  # type: ignore[arg-type]
                              timeout_seconds=h.timeout_s, failure_threshold=failures,
                              initial_delay_seconds=delay)

    out = {"readiness_probe": probe(ready, failures=h.retries),
           "liveness_probe": probe(live, failures=h.retries, delay=None if h.slow_start else h.start_period_s)}
    if h.slow_start:
        out["startup_probe"] = probe(
            ready, failures=max(h.retries, -(-h.start_period_s * STARTUP_GRACE // h.interval_s)))
    return out


def config_volumes(objs: Objects, files: GeneratedFiles, eff: Effective, comp: TierComponent,
                   ns: core.Namespace) -> tuple[list[core.VolumeArgs], list[core.VolumeMountArgs],
                                                list[pulumi.Resource]]:
    """The catalog's generated files in one ConfigMap, mounted per directory."""
    svc = eff.service
    if not svc.files:
        return [], [], []
    data: dict[str, str] = {}
    dirs: dict[str, list[core.KeyToPathArgs]] = {}
    for f in svc.files:
        directory, base = posixpath.split(f.path)
        if base in data:
            raise ValueError(f"{svc.name}: two generated files are named {base}")
        data[base] = files.content(f)
        dirs.setdefault(directory, []).append(core.KeyToPathArgs(key=base, path=base))
    digest = hashlib.sha256("\0".join(f"{k}\0{v}" for k, v in sorted(data.items())).encode()).hexdigest()[:10]
    name = f"{svc.name}-config-{digest}"
    cm = core.ConfigMap(f"{svc.name}-config", core.ConfigMapInitArgs(
        metadata=objs.metadata(name, eff.tier, {NAME: svc.name}), data=data),
        opts=objs.opts(comp, depends_on=[ns]))
    volumes, mounts = [], []
    for i, (directory, items) in enumerate(sorted(dirs.items())):
        vol = f"config-{i}"
        volumes.append(core.VolumeArgs(name=vol, config_map=core.ConfigMapVolumeSourceArgs(
            name=name, items=items)))
        mounts.append(core.VolumeMountArgs(name=vol, mount_path=directory, read_only=True))
    return volumes, mounts, [cm]


def pod(objs: Objects, wiring: Wiring, remotes: Mapping[str, eso.Remote], eff: Effective, inst: Instance,
        volumes: Sequence[core.VolumeArgs], mounts: Sequence[core.VolumeMountArgs]) -> core.PodTemplateSpecArgs:
    """One instance's pod template: the config volumes (`config_volumes`), the catalog's
    writable paths, volumes and credential files, and the container reading its inputs."""
    svc, res = eff.service, eff.resources
    inputs = container_inputs(wiring, eff)
    volumes, mounts = list(volumes), list(mounts)
    if svc.read_only_root:
        for i, path in enumerate(svc.writable_paths):
            volumes.append(core.VolumeArgs(name=f"writable-{i}", empty_dir=core.EmptyDirVolumeSourceArgs(
                size_limit=quantity_mib(svc.scratch_mib))))
            mounts.append(core.VolumeMountArgs(name=f"writable-{i}", mount_path=path))
    mounts.extend(core.VolumeMountArgs(name=v.name, mount_path=v.path) for v in svc.volumes)
    if svc.secret_files:
        # Read-only files, readable by the pod's group (fsGroup) only.
        volumes.append(core.VolumeArgs(name="credentials", secret=core.SecretVolumeSourceArgs(
            secret_name=CREDENTIALS_SECRET, default_mode=0o440,
            items=[core.KeyToPathArgs(key=f.credential, path=f.credential)
                   for f in {f.credential: f for f in svc.secret_files}.values()])))
        mounts.append(core.VolumeMountArgs(name="credentials", mount_path=SECRET_DIR, read_only=True))
    env = [core.EnvVarArgs(name=k, value=v) for k, v in inst.env] + inputs.env
    env += [core.EnvVarArgs(name=k, value=v) for k, v in eff.runtime_env]  # infra/runtime.py
    if eff.shm_mib:
        # /dev/shm in memory (the kernel charges its pages to the container's memory limit).
        volumes.append(core.VolumeArgs(name="shm", empty_dir=core.EmptyDirVolumeSourceArgs(
            medium="Memory", size_limit=quantity_mib(eff.shm_mib))))
        mounts.append(core.VolumeMountArgs(name="shm", mount_path="/dev/shm"))
    if svc.external_url_env and eff.external_url:
        env.append(core.EnvVarArgs(name=svc.external_url_env, value=eff.external_url + "/"))
    container = core.ContainerArgs(
        name=svc.name,
        image=eff.image,
        # Always: the kubelet checks the registry credentials on every start, so a pod on a
        # node that cached a private image cannot run it without imagePullSecrets.
        image_pull_policy="Always",
        # The catalog's command is the image's CMD (Docker `command`): Kubernetes `args`.
        args=[*inputs.args, *cluster_read_args(objs.model, svc)] or None,
        env=env or None,
        ports=[core.ContainerPortArgs(name=p.name, container_port=p.container, protocol=p.protocol.upper())
               for p in svc.ports] or None,
        resources=core.ResourceRequirementsArgs(
            requests={"cpu": quantity_cpu(res.cpu), "memory": quantity_mib(res.memory_mib),
                      "ephemeral-storage": quantity_mib(svc.ephemeral_mib)},
            limits={"cpu": quantity_cpu(res.limits(TARGET)[1]), "memory": quantity_mib(res.limits(TARGET)[0]),
                    "ephemeral-storage": quantity_mib(2 * svc.ephemeral_mib)}),
        security_context=container_security(svc.read_only_root, [c for c, _ in svc.cap_add]),
        volume_mounts=mounts or None,
        **probes(svc),  # type: ignore[arg-type]
    )
    spread = None
    if eff.replicas > 1:
        # Over zones, then hosts: one zone or node lost takes at most its share of replicas.
        spread = [core.TopologySpreadConstraintArgs(
            max_skew=1, topology_key=key, when_unsatisfiable="ScheduleAnyway",
            label_selector=meta.LabelSelectorArgs(match_labels=inst.selector))
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")]
    return core.PodTemplateSpecArgs(
        metadata=meta.ObjectMetaArgs(labels={PART_OF: PROJECT, COMPONENT: eff.tier.value, **inst.selector},
                                     annotations=rollout_annotation(objs.model, wiring, remotes, svc)),
        spec=core.PodSpecArgs(
            containers=[container],
            volumes=volumes or None,
            # False everywhere but a service that reads the API (its catalog ClusterReads
            # says why); that one runs as its own ServiceAccount (rbac.py).
            service_account_name=account_name(svc) if svc.cluster_reads else None,
            automount_service_account_token=svc.cluster_reads is not None,
            enable_service_links=False,
            security_context=pod_security(svc.uid),
            topology_spread_constraints=spread,
            image_pull_secrets=pull_secrets(eff),
        ))


def pull_secrets(eff: Effective) -> list[core.LocalObjectReferenceArgs] | None:
    """`kubernetes.imagePullSecrets` for a pod that runs the service's image from the project's
    registry (its own image, or PostgreSQL's archive image): the workload and its jobs alike."""
    return [core.LocalObjectReferenceArgs(name=n) for n in eff.pull_secrets] or None
