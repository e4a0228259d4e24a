"""The off-site store (`backups.store`) wired into the Kubernetes stacks: every backup CronJob
uploads its backup with rclone after the backup step, its key reaches the pod only as files of
the namespace's Secret, with workload identity through a ServiceAccount of its own and no key,
and the backup pods' egress reaches the store's endpoint port and nothing else outside.
Evaluated on offline renders with the NetworkPolicy evaluator of test_reachability."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra import clickhouse_backup, offline
from infra import stack as infra_stack
from infra.commands import render as render_cmd
from infra.settings import ConfigError

from .conftest import render
from .test_reachability import METADATA_IP, PRIVATE_IP, PUBLIC_IP, allowed_edges, declared_edges, rendered

STORE_IP = "198.51.100.20"
KEY_ID, KEY = "AKIAEXAMPLEKEYID0001", "s3cr3t-Access-Key-value-0001"
SECRETS = (f"backupStoreAccessKeyId={KEY_ID}", f"backupStoreSecretAccessKey={KEY}")


def _store(**extra: Any) -> str:
    return "backups.store=" + json.dumps({"bucket": "optiinfra-backups", "pathStyle": True, **extra})


NO_STORE = "backups.store=null"
"""The committed staging and prod name a store: this takes it away."""
BY_IP = _store(endpoint=f"https://{STORE_IP}:9000")
BY_HOST = _store(endpoint="https://s3.eu-west-1.amazonaws.com")
IDENTITY = _store(endpoint="https://s3.eu-west-1.amazonaws.com", credentials="workloadIdentity",
                  serviceAccountAnnotations={"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/b"})


def store_address(store: str) -> tuple[int, str]:
    """The store's port and an address of it: the IP endpoint's, or a public one for a name."""
    return (9000, STORE_IP) if store == BY_IP else (443, PUBLIC_IP)


def assert_reaches_only_the_store(x: Any, name: str, store: str) -> None:
    """A job's pod reaches the store's address on its port, and outside the cluster nothing
    else: no other port there, not the metadata address, not a private one; with an IP
    endpoint, no other public address either."""
    port, store_at = store_address(store)
    pod = x.pods[name][0]
    assert x.policies.allows(pod, store_at, port), name
    for other_port in (25, 80, 443, 8443, 9000):
        if other_port != port:
            assert not x.policies.allows(pod, store_at, other_port), (name, other_port)
    for addr in (METADATA_IP, PRIVATE_IP):
        assert not x.policies.allows(pod, addr, port), (name, addr)
    if store == BY_IP:  # an IP endpoint: that address alone
        assert not x.policies.allows(pod, PUBLIC_IP, port), name


def _manifests(r: offline.Render) -> list[dict[str, Any]]:
    return [m for docs in render_cmd.by_file(r).values() for m in docs]


def _cronjobs(r: offline.Render) -> list[dict[str, Any]]:
    """The backup CronJobs (the drills' are tests/test_drill_render.py's)."""
    return [m for m in _manifests(r) if m["kind"] == "CronJob"
            and "optiinfra.io/backup-of" in m["metadata"].get("annotations", {})]


def _pod(cj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def test_without_a_store_the_backup_jobs_are_as_before() -> None:
    jobs = _cronjobs(render("prod", NO_STORE))
    assert len(jobs) >= 5
    for cj in jobs:
        pod = _pod(cj)
        assert not pod.get("initContainers") and [c["name"] for c in pod["containers"]] == ["backup"]
        assert "rclone" not in json.dumps(cj)


def test_each_backup_job_uploads_after_its_backup_reading_the_key_from_files() -> None:
    r = render("prod", BY_IP, secrets=SECRETS)
    jobs = _cronjobs(r)
    model = infra_stack.model_of("prod", (BY_IP,))
    assert {cj["metadata"]["name"] for cj in jobs} == {f"{e.name}-backup" for e in model.backed_up()}
    archiving = {e.name for e in model.backed_up() if e.service.backup and e.service.backup.archive}
    assert archiving, "the catalog archives no service's WAL"
    for cj in jobs:
        pod = _pod(cj)
        if [c["name"] for c in pod["initContainers"]] == ["plan", "backup"]:  # the server writes the store
            assert cj["metadata"]["name"] in {f"{e.name}-backup" for e in model.backed_up()
                                              if clickhouse_backup.applies(e.service, model.settings.backups.store)}
            continue
        assert [c["name"] for c in pod["initContainers"]] == ["backup"]
        (upload,) = pod["containers"]
        script = upload["command"][-1]
        if cj["metadata"]["annotations"]["optiinfra.io/backup-of"] in archiving:
            # pgBackRest's base backup instead of the upload (tests/test_pitr_stack.py).
            assert upload["name"] == "base-backup" and "pgbackrest" in upload["image"]
            assert f"repo1-s3-endpoint={STORE_IP}" in script and "pgbackrest " in script
        else:
            assert upload["image"].startswith("rclone/rclone:")
            assert f"https://{STORE_IP}:9000" in script and "rclone copy" in script and "rclone lsf" in script
        assert "/run/secrets/optiinfra-backup-store/secret-access-key" in script
        vol = next(v for v in pod["volumes"] if v["name"] == "store-credentials")
        assert {i["path"] for i in vol["secret"]["items"]} == {"access-key-id", "secret-access-key"}
        assert not any("AWS_" in e["name"] for e in upload.get("env") or [])
    # The key is in the namespace's Secret (a secret Output), nowhere else in plaintext.
    text = json.dumps(_manifests(r))
    secrets = [m for m in _manifests(r) if m["kind"] == "Secret"]
    keys = {k for s in secrets for k in s["metadata"]["annotations"]["optiinfra.io/secret-keys"].split(",")}
    assert {"backup-store-access-key-id", "backup-store-secret-access-key"} <= keys
    plain = json.dumps([m for m in _manifests(r) if m["kind"] != "Secret"])
    assert KEY not in plain and KEY_ID not in plain
    assert "backup-encryption-passphrase" not in text  # sse-s3: no passphrase needed


def test_workload_identity_gives_a_service_account_and_no_key() -> None:
    r = render("prod", IDENTITY)
    accounts = {m["metadata"]["name"]: m for m in _manifests(r) if m["kind"] == "ServiceAccount"}
    for cj in _cronjobs(r):
        pod = _pod(cj)
        account = accounts[pod["serviceAccountName"]]
        assert account["metadata"]["annotations"] == {
            "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/b"}
        assert not any(v["name"] == "store-credentials" for v in pod["volumes"])
    assert "backup-store-access-key-id" not in json.dumps(_manifests(r))


def test_a_missing_store_key_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Offline the absent key renders as a stand-in (the committed stacks name a store and no
    key); before `pulumi up` (check --deploy, as scripts/deploy.sh runs it) it is refused."""
    from infra import cli
    from infra.catalog import default_catalog

    from .tools import receiver_urls

    r = offline.render("prod", [BY_IP], [])  # the stand-in, a secret like the real key
    assert "offline-stand-in-for-backupStoreAccessKeyId" not in json.dumps(_manifests(r))
    # Everything else only the operator sets is given: the store's key id alone is missing.
    (sso,) = [c.config_key for c in default_catalog().credentials.values() if c.user_set]
    given = {**receiver_urls("prod", "store"), sso: "sso-client-secret-0123456789", SECRETS[1].split("=")[0]: KEY}
    argv = ["check", "-s", "prod", "--deploy", "--set", BY_IP,
            *(a for k, v in given.items() for a in ("--secret", f"{k}={v}"))]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert out == "" and line.startswith("error: config key 'optiinfra:backupStoreAccessKeyId': is not set"), err
    assert KEY not in err
    # With the key id given too, nothing is refused.
    assert cli.main([*argv, "--secret", SECRETS[0]]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("store", [BY_IP, BY_HOST], ids=["ip-endpoint", "host-endpoint"])
def test_backup_pods_reach_the_store_and_nothing_else_outside(store: str) -> None:
    x = rendered(render("prod", store, secrets=SECRETS))
    model = infra_stack.model_of("prod", (store,))
    jobs = {f"{e.name}-backup" for e in model.backed_up()}
    assert jobs <= set(x.pods)
    # Inside the cluster nothing changes: exactly the declared edges.
    assert allowed_edges(x) == declared_edges(model)
    port, store_at = store_address(store)
    # The server that archives its WAL itself (PostgreSQL, infra/pitr.py) too, and no other.
    archiving = {e.name for e in model.services.values() if e.service.backup and e.service.backup.archive}
    assert archiving
    for name in jobs | archiving:
        assert_reaches_only_the_store(x, name, store)
    # No other service gains a way out: the store's port is the backup pods' (and the drill pods',
    # tests/test_drill_render.py).
    for name, pods in x.pods.items():
        if name in model.services:
            # (the API server's egress of kube-state-metrics goes to private ranges, not here)
            declared = {p for o in model.outside(model.services[name]) if not o.api_server for p in o.ports}
            assert x.policies.allows(pods[0], store_at, port) == (port in declared), name


def test_with_external_secrets_the_store_key_comes_from_the_operator() -> None:
    from .test_external_secrets import ESO
    r = render("prod", ESO, BY_IP)
    found = [m for m in _manifests(r) if m["kind"] == "ExternalSecret"
             and "backup-store-secret-access-key" in json.dumps(m["spec"])]
    assert found  # the namespaces with backup jobs
    assert not [m for m in _manifests(r) if m["kind"] == "Secret"
                and "backup-store" in m["metadata"].get("annotations", {}).get("optiinfra.io/secret-keys", "")]


# With workload identity the ClickHouse server's pod has no key, so it cannot write BACKUP TO S3
# (clickhouse_backup.fallback_reason): its dump goes to a claim of (1 + 1) x 50Gi = 100Gi and is
# uploaded. Pulumi.prod.yaml's claims are then 104Gi of volumes + 68Gi of backup claims + 100Gi =
# 272Gi, over its 200Gi budget: capacity refuses that (mandatory); the budget is raised to fit.
IDENTITY_BUDGET = "budget.storage=272Gi"


@pytest.mark.parametrize(("sets", "secrets"), [((BY_HOST,), SECRETS), ((IDENTITY, IDENTITY_BUDGET), ())],
                         ids=["key", "identity"])
def test_prod_with_a_store_passes_the_policy_pack(sets: tuple[str, ...], secrets: tuple[str, ...]) -> None:
    from .policy_tools import checked
    result = checked("prod", *sets, secrets=secrets)
    assert not result.failed, [f.violation.message for f in result.findings]
    assert not result.findings


def test_a_store_key_without_a_store_using_it_is_refused() -> None:
    for sets in ([NO_STORE], [IDENTITY]):
        with pytest.raises(ConfigError) as e:
            offline.render("prod", sets, list(SECRETS))
        assert "backupStoreAccessKeyId" in str(e.value) and "\n" not in str(e.value)
