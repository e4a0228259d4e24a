"""Restore drill jobs: with `backups.store`, a CronJob per store whose catalog Backup names a
`drill`, on `backups.drillSchedule`, that restores the newest off-site backup into a throwaway
server inside its own pod and pushes the result to the Pushgateway (infra/objectstore.py
drill_steps). Its NetworkPolicies come from the graph's drill edge and the store's endpoint:
the job reaches the Pushgateway's port and the store, nothing else; the Pushgateway admits it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pulumi
from pulumi_kubernetes.batch import v1 as batch
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta
from pulumi_kubernetes.networking import v1 as net

from policies.optiinfra_policies.vocabulary import K8S_BACKUP_STORE, K8S_DRILL_OF, K8S_REQUIRE_DIGEST, PROJECT, TRUE
from policies.optiinfra_policies.vocabulary import K8S_COMPONENT as COMPONENT
from policies.optiinfra_policies.vocabulary import K8S_NAME as NAME
from policies.optiinfra_policies.vocabulary import K8S_NAMESPACE_NAME as NAMESPACE_NAME
from policies.optiinfra_policies.vocabulary import K8S_PART_OF as PART_OF

from ... import backup as backups
from ... import objectstore, pitr
from ...graph import Edge, Effective
from ...model import LOG_MIB, backup_job, drill_job
from ...tiers import TierComponent
from .backup_jobs import (
    BACKUP_RESOURCES,
    BACKUP_SCRATCH_MIB,
    job_resources,
    pgbackrest_dirs,
    store_credentials,
)
from .network import store_egress
from .objects import Objects, literal, namespace_name, quantity_mib
from .pod import container_security, pod_security, pull_secrets
from .reviews import HIGH_UID, Exception_, exception_annotations

DRILL_DIR = "/drill"
"""The emptyDir the drill's steps share: the download, the throwaway server's data, the result."""


def drill_exceptions(images: Sequence[str], uid: int) -> list[Exception_]:
    """The reviewer findings a drill CronJob keeps, each with its reason."""
    out = []
    tags = [i.rsplit(":", 1)[-1] for i in images if "@sha256:" not in i]
    if tags:
        out.append(Exception_(("CKV_K8S_43",), (), (
            f"pinned to version tags ({', '.join(tags)}): rclone's, the store's own (its server restores the "
            "backup) and the Pushgateway's (its busybox wget pushes the result)")))
    if uid < HIGH_UID:
        out.append(Exception_(("CKV_K8S_40",), ("container-security-context-user-group-id",), (
            f"runs as UID {uid}, the store image's own user, whom its server's tools expect (PostgreSQL's initdb "
            "refuses an unknown one)")))
    return out


def drill_cronjob(objs: Objects, host_of: Callable[[str], str], eff: Effective, edge: Edge, gateway: Effective,
                  comp: TierComponent, ns: core.Namespace, ready: Sequence[pulumi.Resource]) -> batch.CronJob:
    """The drill CronJob of a drilled service (`edge`: its drill edge to `gateway`) and its
    egress policy in the service's namespace (the Pushgateway's side: `gateway_ingress`)."""
    model, svc, tier = objs.model, eff.service, eff.tier
    b, cfg, store = backups.backup_of(svc), model.settings.backups, model.settings.backups.store
    assert store is not None and svc.connection is not None
    name = drill_job(svc.name)
    labels = {NAME: name}
    gport = gateway.service.port(edge.port)
    # The download and the restored data: each at most the service's data (its volumes here).
    shared_mib = max(2 * sum(mib for _, mib in eff.volume_sizes), 256)
    volumes = [core.VolumeArgs(name="drill", empty_dir=core.EmptyDirVolumeSourceArgs(
                   size_limit=quantity_mib(shared_mib))),
               core.VolumeArgs(name="tmp", empty_dir=core.EmptyDirVolumeSourceArgs(
                   size_limit=quantity_mib(BACKUP_SCRATCH_MIB)))]
    mounts = [core.VolumeMountArgs(name="drill", mount_path=DRILL_DIR),
              core.VolumeMountArgs(name="tmp", mount_path="/tmp")]
    fetch_mounts = list(mounts)
    secret_dir = None
    key_files = store_credentials(model)
    if key_files is not None:
        volumes.append(key_files[0])
        fetch_mounts.append(key_files[1])
        secret_dir = objectstore.SECRET_MOUNT
    restore_mounts = list(mounts)
    setup = None
    if b.drill == "pgbackrest":  # pgBackRest reads the store itself: the key and its directories here
        dirs, dir_mounts = pgbackrest_dirs()
        volumes.extend(dirs)
        restore_mounts += [*dir_mounts, *fetch_mounts[len(mounts):]]
        files = pitr.mounted_keys(model.catalog, store, secret_dir) if secret_dir else {}
        setup = (pitr.CONF, pitr.INCLUDE, pitr.setup_lines(store, svc, cfg.retention, files))
    steps = objectstore.drill_steps(
        store, objectstore.StoreAccess(secret_dir), svc, shared=DRILL_DIR, port=svc.port(b.port).container,
        push_url=f"http://{host_of(gateway.name)}:{gport.container}", user=svc.connection.user or "",
        database="optiinfra", pgbackrest_setup=setup)
    res = BACKUP_RESOURCES
    small = BACKUP_SCRATCH_MIB + LOG_MIB
    # The throwaway server holds the restored data: the service's own memory limit, at least the jobs'.
    limit_mib, _ = eff.resources.limits(model.settings.target)
    server_mib = max(limit_mib, res.limit_mib)

    def container(cname: str, image: str, command: list[str], cmounts: list[core.VolumeMountArgs],
                  memory_mib: int, scratch_mib: int, env: list[core.EnvVarArgs] | None = None) -> core.ContainerArgs:
        return core.ContainerArgs(
            name=cname, image=image, image_pull_policy="Always", command=[literal(a) for a in command], env=env,
            resources=job_resources(memory_mib, scratch_mib),
            security_context=container_security(True), volume_mounts=cmounts)

    fetch = container("fetch", objectstore.RCLONE_IMAGE, objectstore.tolerant(steps.fetch), fetch_mounts,
                      res.limit_mib, small, [core.EnvVarArgs(name="HOME", value="/tmp")])
    restore = container("restore", eff.image, objectstore.tolerant(steps.restore), restore_mounts, server_mib,
                        small + shared_mib)
    push = container("push", gateway.image, backups.command(steps.push), mounts, res.memory_mib, small)
    account = backup_job(svc.name) if store.credentials == "workloadIdentity" else None  # the backup job's
    uid = svc.uid
    notes = {K8S_DRILL_OF: svc.name, K8S_BACKUP_STORE: store.endpoint,
             **({K8S_REQUIRE_DIGEST: TRUE} if model.settings.kubernetes.require_digest else {}),
             **exception_annotations(drill_exceptions([objectstore.RCLONE_IMAGE, eff.image, gateway.image], uid))}
    pod = core.PodTemplateSpecArgs(
        metadata=meta.ObjectMetaArgs(labels={PART_OF: PROJECT, COMPONENT: tier.value, **labels}),
        spec=core.PodSpecArgs(
            init_containers=[fetch, restore], containers=[push], volumes=volumes, restart_policy="Never",
            automount_service_account_token=False, enable_service_links=False, service_account_name=account,
            security_context=pod_security(uid), image_pull_secrets=pull_secrets(eff)))
    allow = _egress(objs, edge, eff, gateway, comp, ns)
    return batch.CronJob(name, batch.CronJobInitArgs(
        metadata=objs.metadata(name, tier, labels, notes),
        spec=batch.CronJobSpecArgs(
            schedule=cfg.drill_schedule, time_zone="Etc/UTC", concurrency_policy="Forbid",
            starting_deadline_seconds=objectstore.DRILL_DEADLINE_S,
            successful_jobs_history_limit=3, failed_jobs_history_limit=3,
            job_template=batch.JobTemplateSpecArgs(
                metadata=meta.ObjectMetaArgs(labels=labels),
                # No retry: a failed drill is a finding (pushed, alerted), not a hiccup to hide.
                spec=batch.JobSpecArgs(backoff_limit=0, active_deadline_seconds=objectstore.DRILL_DEADLINE_S,
                                       template=pod)))),
        opts=objs.opts(comp, depends_on=[*ready, *allow]))


def _ports(gateway: Effective, edge: Edge) -> list[net.NetworkPolicyPortArgs]:
    port = gateway.service.port(edge.port)
    return [net.NetworkPolicyPortArgs(port=port.container, protocol=port.protocol.upper())]


def _egress(objs: Objects, edge: Edge, eff: Effective, gateway: Effective, comp: TierComponent,
            ns: core.Namespace) -> list[net.NetworkPolicy]:
    """The drill job's egress: the Pushgateway's port (its drill edge) and the store's endpoint."""
    model, job = objs.model, edge.source
    to_gateway = net.NetworkPolicyPeerArgs(
        pod_selector=meta.LabelSelectorArgs(match_labels={NAME: gateway.name}),
        namespace_selector=meta.LabelSelectorArgs(match_labels={NAMESPACE_NAME: namespace_name(model, gateway.tier)}))
    return [net.NetworkPolicy(f"allow-{job}", net.NetworkPolicyInitArgs(
        metadata=objs.metadata(f"allow-{job}", eff.tier, {NAME: job}),
        spec=net.NetworkPolicySpecArgs(
            pod_selector=meta.LabelSelectorArgs(match_labels={NAME: job}), policy_types=["Egress"],
            egress=[net.NetworkPolicyEgressRuleArgs(to=[to_gateway], ports=_ports(gateway, edge)),
                    *store_egress(model)])),
        opts=objs.opts(comp, depends_on=[ns]))]


def gateway_ingress(objs: Objects, gateway: Effective, comp: TierComponent,
                    ns: core.Namespace) -> list[net.NetworkPolicy]:
    """The Pushgateway's side of the drill edges (created with it, in its tier): one policy
    per drill job admitting that job's pods, from its namespace, on the edge's port."""
    model = objs.model
    out = []
    for edge in model.drill_edges():
        owner = next(e for e in model.drilled() if drill_job(e.name) == edge.source)
        from_job = net.NetworkPolicyPeerArgs(
            pod_selector=meta.LabelSelectorArgs(match_labels={NAME: edge.source}),
            namespace_selector=meta.LabelSelectorArgs(
                match_labels={NAMESPACE_NAME: namespace_name(model, owner.tier)}))
        out.append(net.NetworkPolicy(f"allow-{edge.source}-in", net.NetworkPolicyInitArgs(
            metadata=objs.metadata(f"allow-{edge.source}-in", gateway.tier, {NAME: gateway.name}),
            spec=net.NetworkPolicySpecArgs(
                pod_selector=meta.LabelSelectorArgs(match_labels={NAME: gateway.name}), policy_types=["Ingress"],
                ingress=[net.NetworkPolicyIngressRuleArgs(from_=[from_job], ports=_ports(gateway, edge))])),
            opts=objs.opts(comp, depends_on=[ns])))
    return out
