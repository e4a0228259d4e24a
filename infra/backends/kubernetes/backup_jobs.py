"""Backup jobs: a CronJob per backed-up service that runs the catalog's backup into a
claim of its own, under the same restricted pod security as the workloads."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pulumi
from pulumi_kubernetes.batch import v1 as batch
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta

from policies.optiinfra_policies.vocabulary import (
    K8S_BACKUP_OF,
    K8S_BACKUP_STORE,
    K8S_BACKUP_TARGET,
    K8S_REQUIRE_DIGEST,
    PROJECT,
    TRUE,
)
from policies.optiinfra_policies.vocabulary import K8S_COMPONENT as COMPONENT
from policies.optiinfra_policies.vocabulary import K8S_NAME as NAME
from policies.optiinfra_policies.vocabulary import K8S_PART_OF as PART_OF

from ... import backup as backups
from ... import clickhouse_backup, objectstore, pitr
from ...credentials import store_credential_ids
from ...graph import Effective, Resolved
from ...model import LOG_MIB, SECRET_DIR, Resources, backup_job
from ...tiers import TierComponent
from .objects import (
    CREDENTIALS_SECRET,
    SERVICE_AWAIT,
    Objects,
    backup_claim,
    literal,
    own_claim,
    quantity_cpu,
    quantity_mib,
)
from .pod import container_security, pod_security, pull_secrets
from .reviews import backup_exceptions, exception_annotations

BACKUP_RESOURCES = Resources(memory_mib=128, cpu=0.05, memory_limit_mib=512, cpu_limit=0.5)
"""What a backup job's client asks for: it streams, so memory stays flat whatever the data size."""


def job_resources(limit_mib: int, ephemeral_mib: int) -> core.ResourceRequirementsArgs:
    """A one-shot job container's resources (backups, uploads, drills, rotations): the jobs'
    CPU and memory request (BACKUP_RESOURCES), `limit_mib` of memory, and `ephemeral_mib` of
    ephemeral storage requested, twice that its limit."""
    res = BACKUP_RESOURCES
    return core.ResourceRequirementsArgs(
        requests={"cpu": quantity_cpu(res.cpu), "memory": quantity_mib(res.memory_mib),
                  "ephemeral-storage": quantity_mib(ephemeral_mib)},
        limits={"cpu": quantity_cpu(res.limit_cpu), "memory": quantity_mib(limit_mib),
                "ephemeral-storage": quantity_mib(2 * ephemeral_mib)})


def store_credentials(model: Resolved) -> tuple[core.VolumeArgs, core.VolumeMountArgs] | None:
    """The backup store's key and passphrase as files (never env, never argv): the volume of
    the namespace's credentials Secret and its read-only mount at objectstore.SECRET_MOUNT
    (None: the store needs no stack secret, e.g. workload identity)."""
    ids = store_credential_ids(model)
    by_key = {c.config_key: c.id for c in model.catalog.credentials.values() if c.id in ids}
    if not by_key:
        return None
    volume = core.VolumeArgs(name="store-credentials", secret=core.SecretVolumeSourceArgs(
        secret_name=CREDENTIALS_SECRET, default_mode=0o440,
        items=[core.KeyToPathArgs(key=by_key[k], path=f) for f, k in sorted(objectstore.SECRET_KEYS.items())
               if k in by_key]))
    return volume, core.VolumeMountArgs(name="store-credentials", mount_path=objectstore.SECRET_MOUNT, read_only=True)
BACKUP_SCRATCH_MIB = 64
"""The job's /tmp (a client's temporary files; the backup itself goes to the target)."""
BACKUP_DEADLINE_S = 3600
"""A backup run that takes longer is killed (the next schedule tries again)."""


def backup_cronjob(objs: Objects, host_of: Callable[[str], str], eff: Effective, comp: TierComponent,
                   ns: core.Namespace, ready: Sequence[pulumi.Resource], workload: pulumi.Resource,
                   allow: pulumi.Resource | None) -> batch.CronJob:
    """A CronJob that runs the catalog's backup of a service into a claim of its own (not
    the service's), under the same restricted pod security as the workloads, reaching the
    service only along its backup edge (`allow`) and reading the credential from a mounted
    file; created after the tier's `ready` and the service's `workload`."""
    model, svc, tier = objs.model, eff.service, eff.tier
    b, cfg = backups.backup_of(svc), model.settings.backups
    if clickhouse_backup.applies(svc, cfg.store):  # the server writes the store itself
        return _server_store_cronjob(objs, host_of, eff, comp, ns, [*ready, workload], allow)
    comp_opts = objs.opts(comp, depends_on=[ns], protect=True)
    job = backup_job(svc.name)
    labels = {NAME: job}
    size = eff.backup_mib
    # The backups' claim outlives the job and the service: protected like their data.
    # Not awaited: with a WaitForFirstConsumer StorageClass it binds only when the first
    # backup runs, and nothing of the stack waits for it.
    claim = core.PersistentVolumeClaim(backup_claim(svc.name), core.PersistentVolumeClaimInitArgs(
        metadata=objs.metadata(backup_claim(svc.name), tier, labels, SERVICE_AWAIT),
        spec=core.PersistentVolumeClaimSpecArgs(
            access_modes=["ReadWriteOnce"], storage_class_name=model.settings.kubernetes.storage_class,
            resources=core.VolumeResourceRequirementsArgs(requests={"storage": quantity_mib(size)}))),
        opts=comp_opts)
    volumes = [core.VolumeArgs(name="backups", persistent_volume_claim=core.PersistentVolumeClaimVolumeSourceArgs(
                   claim_name=backup_claim(svc.name))),
               core.VolumeArgs(name="tmp", empty_dir=core.EmptyDirVolumeSourceArgs(
                   size_limit=quantity_mib(BACKUP_SCRATCH_MIB)))]
    mounts = [core.VolumeMountArgs(name="backups", mount_path=backups.BACKUP_DIR),
              core.VolumeMountArgs(name="tmp", mount_path="/tmp")]
    secret_file = None
    if b.credential:
        volumes.append(core.VolumeArgs(name="credentials", secret=core.SecretVolumeSourceArgs(
            secret_name=CREDENTIALS_SECRET, default_mode=0o440,
            items=[core.KeyToPathArgs(key=b.credential, path=b.credential)])))
        mounts.append(core.VolumeMountArgs(name="credentials", mount_path=SECRET_DIR, read_only=True))
        secret_file = f"{SECRET_DIR}/{b.credential}"
    affinity, data = None, ""
    if b.reads_volume:
        # The service's own claim, read-only, beside its running pod (a ReadWriteOnce
        # volume is shared only on one node).
        volume = next(v for v in svc.volumes if v.name == b.volume)
        volumes.append(core.VolumeArgs(name="source", persistent_volume_claim=(
            core.PersistentVolumeClaimVolumeSourceArgs(claim_name=own_claim(volume.name, eff.name),
                                                       read_only=True))))
        mounts.append(core.VolumeMountArgs(name="source", mount_path=volume.path, read_only=True))
        data = volume.path
        affinity = beside(svc.name)
    port = svc.port(b.port).container if b.port else None
    where = backups.Where(host_of(svc.name), port, backups.BACKUP_DIR, secret_file, data)
    # With the store, the catalog's canary first: the drill (drill_jobs.py) must find it in the copy.
    script = backups.backup_script(svc, where, cfg.local_copies, canary=cfg.store is not None)
    image = b.image or eff.image
    uid = b.uid if b.uid is not None else svc.uid
    ephemeral = BACKUP_SCRATCH_MIB + LOG_MIB
    container = core.ContainerArgs(
        name="backup", image=image, image_pull_policy="Always",
        # `command`, not `args`: the image's entrypoint would start the server.
        command=[literal(a) for a in backups.command(script)],
        resources=job_resources(BACKUP_RESOURCES.limit_mib, ephemeral),
        security_context=container_security(True),
        volume_mounts=mounts)
    notes = {K8S_BACKUP_OF: svc.name, K8S_BACKUP_TARGET: backups.BACKUP_DIR,
             **({K8S_REQUIRE_DIGEST: TRUE} if model.settings.kubernetes.require_digest else {}),
             **exception_annotations(backup_exceptions(image, uid))}
    init: list[core.ContainerArgs] | None = None
    account: str | None = None
    needs: list[pulumi.Resource] = [*ready, claim, workload]
    if cfg.store is not None and pitr.archives(svc):
        # The local dump first, then pgBackRest's base backup beside the server (infra/pitr.py).
        init = [container]
        container, affinity = _pitr_backup(objs, eff, volumes)
        notes[K8S_BACKUP_STORE] = cfg.store.endpoint
    elif cfg.store is not None:  # the off-site copy: the backup first, then its upload
        init = [container]
        container, account = _store_upload(objs, eff, comp, ns, volumes, ephemeral, needs)
        notes[K8S_BACKUP_STORE] = cfg.store.endpoint
    pod = core.PodTemplateSpecArgs(
        metadata=meta.ObjectMetaArgs(labels={PART_OF: PROJECT, COMPONENT: tier.value, **labels}),
        spec=core.PodSpecArgs(
            init_containers=init, containers=[container], volumes=volumes, restart_policy="Never",
            automount_service_account_token=False, enable_service_links=False, service_account_name=account,
            security_context=pod_security(uid), affinity=affinity, image_pull_secrets=pull_secrets(eff)))
    if allow is not None:  # its NetworkPolicy (network.py)
        needs.append(allow)
    return _scheduled(objs, comp, eff, labels, notes, pod, needs)


def _scheduled(objs: Objects, comp: TierComponent, eff: Effective, labels: dict[str, str], notes: dict[str, str],
               pod: core.PodTemplateSpecArgs, needs: Sequence[pulumi.Resource]) -> batch.CronJob:
    """The backup CronJob of a service around its pod: on `backups.schedule` in UTC, never two at
    once, an hour's deadline to start and to finish, two retries, three jobs of history."""
    job = backup_job(eff.service.name)
    return batch.CronJob(job, batch.CronJobInitArgs(
        metadata=objs.metadata(job, eff.tier, labels, notes),
        spec=batch.CronJobSpecArgs(
            schedule=objs.model.settings.backups.schedule, time_zone="Etc/UTC", concurrency_policy="Forbid",
            # A run missed by more than an hour (cluster down) waits for the next one.
            starting_deadline_seconds=BACKUP_DEADLINE_S,
            successful_jobs_history_limit=3, failed_jobs_history_limit=3,
            job_template=batch.JobTemplateSpecArgs(
                metadata=meta.ObjectMetaArgs(labels=labels),
                spec=batch.JobSpecArgs(backoff_limit=2, active_deadline_seconds=BACKUP_DEADLINE_S,
                                       template=pod)))),
        opts=objs.opts(comp, depends_on=list(needs)))


def beside(service: str) -> core.AffinityArgs:
    """On the node of the service's pod: a ReadWriteOnce volume is shared only there."""
    return core.AffinityArgs(pod_affinity=core.PodAffinityArgs(
        required_during_scheduling_ignored_during_execution=[core.PodAffinityTermArgs(
            topology_key="kubernetes.io/hostname",
            label_selector=meta.LabelSelectorArgs(match_labels={NAME: service}))]))


PGBACKREST_SCRATCH_MIB = 64
"""pgBackRest's configuration, include file, locks and logs in a job (emptyDirs)."""


def pgbackrest_dirs(prefix: str = "pgbackrest") -> tuple[list[core.VolumeArgs], list[core.VolumeMountArgs]]:
    """Writable emptyDirs at pgBackRest's configuration and spool paths (pitr.CONF_DIR,
    pitr.SPOOL): a job writes its configuration and its include file with the key there,
    at the server's paths (the restore_command a restore writes names them)."""
    volumes, mounts = [], []
    for i, path in enumerate((pitr.CONF_DIR, pitr.SPOOL)):
        volumes.append(core.VolumeArgs(name=f"{prefix}-{i}", empty_dir=core.EmptyDirVolumeSourceArgs(
            size_limit=quantity_mib(PGBACKREST_SCRATCH_MIB))))
        mounts.append(core.VolumeMountArgs(name=f"{prefix}-{i}", mount_path=path))
    return volumes, mounts


def _pitr_backup(objs: Objects, eff: Effective,
                 volumes: list[core.VolumeArgs]) -> tuple[core.ContainerArgs, core.AffinityArgs]:
    """The off-site step of an archiving server's backup pod (infra/pitr.py): pgBackRest's base
    backup in the archive image, on the server's node (podAffinity), the data claim mounted
    read-only at the server's path (pgBackRest compares pg1-path with data_directory),
    connected over the server's socket on that volume, the key read from the namespace's
    Secret mounted as files. No port, no exec, no TLS server. Appends its volumes."""
    model, svc = objs.model, eff.service
    store, cfg = model.settings.backups.store, model.settings.backups
    assert store is not None
    archive = pitr.archive_of(svc)
    assert archive is not None
    volume = next(v for v in svc.volumes if v.name == archive.volume)
    volumes.append(core.VolumeArgs(name="pgdata", persistent_volume_claim=(
        core.PersistentVolumeClaimVolumeSourceArgs(claim_name=own_claim(volume.name, eff.name), read_only=True))))
    dirs, dir_mounts = pgbackrest_dirs()
    volumes.extend(dirs)
    # The claim writable though it only reads, as the upload's (the policy pack's stateful-backups).
    mounts = [core.VolumeMountArgs(name="backups", mount_path=backups.BACKUP_DIR),
              core.VolumeMountArgs(name="tmp", mount_path="/tmp"),
              core.VolumeMountArgs(name="pgdata", mount_path=volume.path, read_only=True), *dir_mounts]
    files: dict[str, str] = {}
    key_files = store_credentials(model)
    if key_files is not None:
        volumes.append(key_files[0])
        mounts.append(key_files[1])
        files = pitr.mounted_keys(model.catalog, store, objectstore.SECRET_MOUNT)
    script = pitr.backup_script(store, svc, cfg.retention, files)
    container = core.ContainerArgs(
        name="base-backup", image=eff.image, image_pull_policy="Always",
        command=[literal(a) for a in backups.command(script)],
        resources=job_resources(BACKUP_RESOURCES.limit_mib, BACKUP_SCRATCH_MIB + LOG_MIB),
        security_context=container_security(True),
        volume_mounts=mounts)
    return container, beside(svc.name)


def _store_upload(objs: Objects, eff: Effective, comp: TierComponent, ns: core.Namespace,
                  volumes: list[core.VolumeArgs], ephemeral: int,
                  needs: list[pulumi.Resource]) -> tuple[core.ContainerArgs, str | None]:
    """The upload step of a backup pod (`backups.store` set): rclone's image copies the newest
    backup of the claim into the store (objectstore.upload_newest_script), the key and the
    passphrase read from the namespace's Secret mounted as files (never env, never argv);
    with workload identity, no key: a ServiceAccount of the job's own carries the annotations.
    Appends its volume to `volumes`; returns the container and the ServiceAccount's name."""
    model, svc, tier = objs.model, eff.service, eff.tier
    store, cfg = model.settings.backups.store, model.settings.backups
    assert store is not None
    secret_dir = None
    # Writable though it only reads: the policy pack's stateful-backups finds any read-only
    # mount of the target in the pod (the step that writes it cannot be told from the others).
    mounts = [core.VolumeMountArgs(name="backups", mount_path=backups.BACKUP_DIR),
              core.VolumeMountArgs(name="tmp", mount_path="/tmp")]
    key_files = store_credentials(model)
    if key_files is not None:
        volumes.append(key_files[0])
        mounts.append(key_files[1])
        secret_dir = objectstore.SECRET_MOUNT
    account = None
    if store.credentials == "workloadIdentity":
        account = backup_job(svc.name)
        needs.append(core.ServiceAccount(f"{account}-account", core.ServiceAccountInitArgs(
            metadata=objs.metadata(account, tier, {NAME: account}, dict(store.service_account_annotations)),
            automount_service_account_token=False), opts=objs.opts(comp, depends_on=[ns])))
    script = objectstore.upload_newest_script(store, objectstore.StoreAccess(secret_dir), svc, backups.BACKUP_DIR,
                                              cfg.retention)
    container = core.ContainerArgs(
        name="upload", image=objectstore.RCLONE_IMAGE, image_pull_policy="Always",
        command=[literal(a) for a in backups.command(script)],
        env=[core.EnvVarArgs(name="HOME", value="/tmp")],
        resources=job_resources(BACKUP_RESOURCES.limit_mib, ephemeral),
        security_context=container_security(True),
        volume_mounts=mounts)
    return container, account


def _server_store_cronjob(objs: Objects, host_of: Callable[[str], str], eff: Effective, comp: TierComponent,
                          ns: core.Namespace, needs: list[pulumi.Resource],
                          allow: pulumi.Resource | None) -> batch.CronJob:
    """The backup CronJob of a service whose server writes the store itself (ClickHouse's
    BACKUP TO S3, infra/clickhouse_backup.py): no claim, no dump. Three steps sharing a small
    emptyDir with the plan (no secret in it): rclone plans the name and base, the service's
    client sends the statement (the key and password read from files), rclone checks the
    store holds it and expires. Its target annotation is the store's URL (the policy pack's
    stateful-backups accepts an `s3://` target with the store's endpoint stamped)."""
    model, svc, tier = objs.model, eff.service, eff.tier
    b, cfg = backups.backup_of(svc), model.settings.backups
    store = cfg.store
    assert store is not None and b.credential and b.port
    job = backup_job(svc.name)
    labels = {NAME: job}
    plan_mib = 1
    volumes = [core.VolumeArgs(name="plan", empty_dir=core.EmptyDirVolumeSourceArgs(size_limit=quantity_mib(plan_mib))),
               core.VolumeArgs(name="tmp", empty_dir=core.EmptyDirVolumeSourceArgs(
                   size_limit=quantity_mib(BACKUP_SCRATCH_MIB))),
               core.VolumeArgs(name="credentials", secret=core.SecretVolumeSourceArgs(
                   secret_name=CREDENTIALS_SECRET, default_mode=0o440,
                   items=[core.KeyToPathArgs(key=b.credential, path=b.credential)]))]
    key_files = store_credentials(model)
    assert key_files is not None  # applies() ruled out workload identity
    volumes.append(key_files[0])
    plan = core.VolumeMountArgs(name="plan", mount_path=clickhouse_backup.PLAN_DIR)
    tmp = core.VolumeMountArgs(name="tmp", mount_path="/tmp")
    access = objectstore.StoreAccess(objectstore.SECRET_MOUNT)
    ephemeral = BACKUP_SCRATCH_MIB + LOG_MIB
    conn = svc.connection
    user = (conn.user if conn is not None else None) or ""

    def step(name: str, image: str, script: str, mounts: list[core.VolumeMountArgs]) -> core.ContainerArgs:
        return core.ContainerArgs(
            name=name, image=image, image_pull_policy="Always", command=[literal(a) for a in backups.command(script)],
            env=[core.EnvVarArgs(name="HOME", value="/tmp")] if image == objectstore.RCLONE_IMAGE else None,
            resources=job_resources(BACKUP_RESOURCES.limit_mib, ephemeral),
            security_context=container_security(True), volume_mounts=[*mounts, tmp, key_files[1]])

    statement = clickhouse_backup.backup_script(
        store, access, svc, host=host_of(svc.name), port=svc.port(b.port).container, user=user,
        password_file=f"{SECRET_DIR}/{b.credential}")
    init = [step("plan", objectstore.RCLONE_IMAGE, clickhouse_backup.plan_script(store, access, svc), [plan]),
            step("backup", b.image or eff.image, statement,
                 [core.VolumeMountArgs(name="plan", mount_path=clickhouse_backup.PLAN_DIR, read_only=True),
                  core.VolumeMountArgs(name="credentials", mount_path=SECRET_DIR, read_only=True)])]
    expire = step("expire", objectstore.RCLONE_IMAGE,
                  clickhouse_backup.expire_script(store, access, svc, cfg.retention), [plan])
    uid = b.uid if b.uid is not None else svc.uid
    notes = {K8S_BACKUP_OF: svc.name, K8S_BACKUP_TARGET: clickhouse_backup.target(store, svc),
             K8S_BACKUP_STORE: store.endpoint,
             **({K8S_REQUIRE_DIGEST: TRUE} if model.settings.kubernetes.require_digest else {}),
             **exception_annotations(backup_exceptions(b.image or eff.image, uid))}
    pod = core.PodTemplateSpecArgs(
        metadata=meta.ObjectMetaArgs(labels={PART_OF: PROJECT, COMPONENT: tier.value, **labels}),
        spec=core.PodSpecArgs(
            init_containers=init, containers=[expire], volumes=volumes, restart_policy="Never",
            automount_service_account_token=False, enable_service_links=False,
            security_context=pod_security(uid)))
    return _scheduled(objs, comp, eff, labels, notes, pod, [*needs, *([allow] if allow is not None else [])])
