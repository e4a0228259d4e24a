"""`restore --from NAME` on a Kubernetes stack with `backups.store`: the restore Job takes the
backup from the off-site store, not the backup claim.

The claim keeps only the newest copy with a store (`backups.localRetention`), and it goes with
the namespace or the cluster; the store keeps `retention` and outlives both. So the Job is
today's restore Job (restore.restore_job: the backup job's pod label, image, user and
security context, its NetworkPolicy reaching the service and the store only) with:

- uploaded backups (rclone's copies: Redis' RDB, Qdrant's snapshots, Grafana's database, a
  ClickHouse dump when its store rules out BACKUP TO S3): an init container `fetch` (rclone,
  the store's key as files) downloads NAME into an emptyDir where the claim was mounted,
  then the catalog's restore script runs on it;
- ClickHouse writing its own BACKUP TO S3 (infra/clickhouse_backup.py): `find` (rclone)
  checks NAME is a complete backup in the store and plans it, then the client drops the
  database and sends `RESTORE DATABASE ... FROM S3(...)`: the server reads the store itself.

PostgreSQL with the WAL archive keeps its dumps in the claim only (pgBackRest holds the base
backups and the WAL): `--from` restores the claim's dump as before, `--to-time` from the store.
"""

from __future__ import annotations

import copy
from typing import Any

from policies.optiinfra_policies import vocabulary as v

from .. import backup as backups
from .. import clickhouse_backup, objectstore, pitr
from ..backends import kubernetes as k8s
from ..graph import Effective, Resolved
from ..model import LOG_MIB, SECRET_DIR, backup_job


def from_store(model: Resolved, eff: Effective) -> bool:
    """A `--from` restore of this service comes from the store on this stack."""
    b = eff.service.backup
    return model.settings.backups.store is not None and b is not None and not pitr.archives(eff.service)


def source(model: Resolved, eff: Effective, name: str) -> str:
    store = model.settings.backups.store
    assert store is not None
    if clickhouse_backup.applies(eff.service, store):
        return clickhouse_backup.url(store, eff.service, name)
    return f"{store.endpoint} {objectstore.path_of(store, eff.service)}/{name}"


def _command(script: str) -> list[str]:
    return [a.replace("$", "$$") for a in backups.command(script)]


def job(model: Resolved, eff: Effective, name: str, base: dict[str, Any]) -> dict[str, Any]:
    """`base` (the claim's restore Job of backup `name`) made to take it from the store."""
    store = model.settings.backups.store
    assert store is not None
    svc = eff.service
    spec = base["spec"]["template"]["spec"]
    (restore,) = spec["containers"]
    keys = pitr.key_files(model.catalog, store)
    access = objectstore.StoreAccess(objectstore.SECRET_MOUNT if keys else None)
    key_mount = {"name": "store-credentials", "mountPath": objectstore.SECRET_MOUNT, "readOnly": True}
    if keys:
        spec["volumes"].append({"name": "store-credentials", "secret": {
            "secretName": k8s.CREDENTIALS_SECRET, "defaultMode": 0o440,
            "items": [{"key": cred, "path": f} for f, cred in keys.items()]}})
    if store.credentials == "workloadIdentity":  # the backup job's ServiceAccount carries the role
        spec["serviceAccountName"] = backup_job(svc.name)
    rclone = {key: copy.deepcopy(restore[key]) for key in ("imagePullPolicy", "resources", "securityContext")}
    rclone.update(image=objectstore.RCLONE_IMAGE, env=[{"name": "HOME", "value": "/tmp"}])
    tmp = {"name": "tmp", "mountPath": "/tmp"}
    base["metadata"]["annotations"][v.K8S_BACKUP_STORE] = store.endpoint
    if clickhouse_backup.applies(svc, store):
        b = backups.backup_of(svc)
        assert b.port and svc.connection is not None
        plan = {"name": "plan", "mountPath": clickhouse_backup.PLAN_DIR}
        spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "backups"]
        spec["volumes"].append({"name": "plan", "emptyDir": {"sizeLimit": "1Mi"}})
        find = clickhouse_backup.find_script(store, access, svc, name)
        spec["initContainers"] = [{"name": "find", **rclone, "command": _command(find),
                                   "volumeMounts": [plan, tmp, *([key_mount] if keys else [])]}]
        script = clickhouse_backup.restore_script(
            store, access, svc, host=k8s.host_resolver(model)(svc.name), port=svc.port(b.port).container,
            user=svc.connection.user or "", password_file=f"{SECRET_DIR}/{b.credential}" if b.credential else None)
        restore["command"] = _command(script)
        restore["volumeMounts"] = [m for m in restore["volumeMounts"] if m["name"] != "backups"] + [
            {**plan, "readOnly": True}, *([key_mount] if keys else [])]
        return base
    # The download where the claim was: an emptyDir as large as the data the backup read. It
    # counts against the pod's ephemeral storage, whose limit (the containers' sum) must hold it.
    size = max(sum(mib for _, mib in eff.volume_sizes), 256)
    spec["volumes"] = [{"name": "backups", "emptyDir": {"sizeLimit": k8s.quantity_mib(size)}} if v["name"] == "backups"
                       else v for v in spec["volumes"]]
    for container in (restore, rclone):
        res = container["resources"]
        scratch = k8s.BACKUP_SCRATCH_MIB + LOG_MIB
        res["requests"]["ephemeral-storage"] = k8s.quantity_mib(size + scratch)
        res["limits"]["ephemeral-storage"] = k8s.quantity_mib(size + 2 * scratch)
    fetch = "\n".join(["set -eu", *objectstore.store_preamble(store, access),
                       *objectstore.fetch_newest_lines(store, svc, backups.BACKUP_DIR, name=name),
                       'echo "downloaded: $dest/$name"']) + "\n"
    spec["initContainers"] = [{"name": "fetch", **rclone, "command": _command(fetch),
                               "volumeMounts": [{"name": "backups", "mountPath": backups.BACKUP_DIR}, tmp,
                                                *([key_mount] if keys else [])]}]
    return base
