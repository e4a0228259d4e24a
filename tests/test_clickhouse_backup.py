"""ClickHouse's own BACKUP ... TO S3 with `backups.store` (infra/clickhouse_backup.py): the
rendered statements parsed against the documented syntax, the plan and expiry scripts run
with sh against a stand-in `rclone` that lists a given store (ClickHouse cannot run here, so
the statement reaches a stand-in `clickhouse-client` that records argv and stdin), no secret
in argv, env or the manifests, the pod's reach and prod's policy pack."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra import clickhouse_backup as cb
from infra import objectstore
from infra import stack as infra_stack
from infra.backends.kubernetes import BACKUP_DEADLINE_S
from infra.catalog import SERVICES
from infra.settings import BackupStore

from .conftest import render
from .test_backup_store_k8s import BY_HOST, BY_IP, KEY, KEY_ID, NO_STORE, SECRETS, _cronjobs, _manifests, _pod, _store
from .test_reachability import rendered

SVC = next(s for s in SERVICES if s.backup is not None and s.backup.server_store == "backup-to-s3")
STORE = BackupStore.model_validate({"endpoint": "https://198.51.100.20:9000", "bucket": "bk", "prefix": "p/q",
                                    "pathStyle": True, "keepDays": 3650})
TRICKY_KEY = "se'c\\ret/+KEY"
# S3('<url>', '<key id>', '<key>') with ClickHouse's string escapes (\' and \\).
STRING = r"'((?:[^'\\]|\\.)*)'"
S3 = re.compile(rf"S3\({STRING}(?:, {STRING}, {STRING})?\)")


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def _stand_ins(tmp: Path, listing: list[str]) -> dict[str, str]:
    """`rclone` answers the `.backup` listing with `listing` and logs every call; `clickhouse-client`
    logs its argv and its stdin (the statement)."""
    bin_ = tmp / "bin"
    bin_.mkdir()
    (tmp / "listing").write_text("".join(f"{n}/.backup\n" for n in listing))
    (bin_ / "rclone").write_text(f'#!/bin/sh\necho "$*" >> {tmp}/rclone.log\n'
                                 f'case "$*" in *"--include /*/.backup"*) cat {tmp}/listing;; '
                                 f'*"--include /.backup"*) echo .backup;; esac\n')
    (bin_ / "clickhouse-client").write_text(f'#!/bin/sh\necho "ARGV $*" >> {tmp}/ch.log\n'
                                            f'env >> {tmp}/ch.env\ncat >> {tmp}/ch.log\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    keys = tmp / "keys"
    keys.mkdir()
    (keys / "access-key-id").write_text(KEY_ID)
    (keys / "secret-access-key").write_text(TRICKY_KEY)
    (keys / "password").write_text("ch-password")
    (tmp / "plan").mkdir()
    return dict(os.environ, PATH=f"{bin_}:{os.environ['PATH']}")


def _run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)


def _backup(tmp: Path, listing: list[str]) -> tuple[str, str]:
    """Plan and send one backup; (its statement, the plan's base)."""
    env = _stand_ins(tmp, listing)
    access = objectstore.StoreAccess(str(tmp / "keys"))
    done = _run(cb.plan_script(STORE, access, SVC, str(tmp / "plan")), env)
    assert done.returncode == 0, done.stderr
    done = _run(cb.backup_script(STORE, access, SVC, host="clickhouse", port=9000, user="optiinfra",
                                 password_file=str(tmp / "keys/password"), plan_dir=str(tmp / "plan")), env)
    assert done.returncode == 0, done.stderr
    log = (tmp / "ch.log").read_text().splitlines()
    # Nothing secret in argv; the client waits as long as the job may run, not its default 300 s.
    assert log[0] == (f"ARGV --host clickhouse --port 9000 --user optiinfra --receive_timeout={cb.CLIENT_TIMEOUT_S} "
                      f"--send_timeout={cb.CLIENT_TIMEOUT_S}")
    assert cb.CLIENT_TIMEOUT_S < BACKUP_DEADLINE_S
    base = (tmp / "plan/plan").read_text().split("\n")[1]
    return log[1], base


def _url(name: str) -> str:
    return f"https://198.51.100.20:9000/bk/p/q/{SVC.name}/{name}"


def test_first_backup_is_a_full_one_with_the_documented_syntax(tmp_path: Path) -> None:
    stmt, base = _backup(tmp_path, [])
    m = re.fullmatch(rf"BACKUP DATABASE `(\w+)` TO {S3.pattern}", stmt)
    assert m, stmt
    assert m.group(1) == SVC.backup.database if SVC.backup else False
    url, key_id, key = (_unescape(g) for g in m.group(2, 3, 4))
    assert re.fullmatch(re.escape(_url("")) + r"clickhouse-\d{8}T\d{6}Z-full", url)
    assert (key_id, key) == (KEY_ID, TRICKY_KEY)  # quotes and backslashes survive the SQL string
    assert base == ""
    env = (tmp_path / "ch.env").read_text()
    assert TRICKY_KEY not in env and KEY_ID not in env  # not in the client's environment either


def test_an_incremental_names_the_newest_complete_full_as_its_base(tmp_path: Path) -> None:
    older, full = "clickhouse-20261101T021700Z-full", "clickhouse-20261201T021700Z-full"
    listing = [older, "clickhouse-20261102T021700Z-on-20261101T021700Z", full,
               "clickhouse-20261202T021700Z-on-20261201T021700Z"]
    stmt, base = _backup(tmp_path, listing)
    assert base == full
    m = re.fullmatch(rf"BACKUP DATABASE `\w+` TO {S3.pattern} SETTINGS base_backup = {S3.pattern}, "
                     r"use_same_s3_credentials_for_base_backup = 1", stmt)
    assert m, stmt
    assert re.fullmatch(re.escape(_url("")) + r"clickhouse-\d{8}T\d{6}Z-on-20261201T021700Z", _unescape(m.group(1)))
    assert _unescape(m.group(4)) == _url(full) and m.group(5) is None  # the base carries no key


def test_a_full_chain_starts_a_new_full(tmp_path: Path) -> None:
    full = "clickhouse-20261201T021700Z-full"
    listing = [full, *(f"clickhouse-2026120{d}T021700Z-on-20261201T021700Z" for d in range(2, 2 + cb.FULL_EVERY - 1))]
    stmt, base = _backup(tmp_path, listing)
    assert base == "" and "-full'" in stmt and "base_backup" not in stmt


def test_an_unreadable_store_fails_the_plan(tmp_path: Path) -> None:
    env = _stand_ins(tmp_path, [])
    (tmp_path / "bin/rclone").write_text("#!/bin/sh\necho 'AccessDenied' >&2\nexit 3\n")
    done = _run(cb.plan_script(STORE, objectstore.StoreAccess(str(tmp_path / "keys")), SVC, str(tmp_path / "plan")),
                env)
    assert done.returncode != 0 and not (tmp_path / "plan/plan").exists()


def _expired(listing: list[str], keep: int, keep_days: int = 3650) -> set[str]:
    awk = ["awk", "-v", f"keep={keep}", "-v", "cutoff=" + ("20261205T000000Z" if keep_days < 3650 else "0"),
           "-v", f"P={len(SVC.name) + 2}", "-v", f"pre={SVC.name}-", cb.EXPIRE_AWK]
    out = subprocess.run(awk, input="\n".join(listing) + "\n", capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _chain(weeks: int) -> list[str]:
    names = []
    for w in range(weeks):
        f = f"202612{1 + 7 * w:02d}T021700Z"
        names.append(f"clickhouse-{f}-full")
        names += [f"clickhouse-202612{1 + 7 * w + d:02d}T021700Z-on-{f}" for d in range(1, cb.FULL_EVERY)]
    return names


@pytest.mark.parametrize("keep", [1, 2, 3, 7, 8, 10])
@pytest.mark.parametrize("keep_days", [3650, 3])
def test_expiry_never_deletes_the_full_of_a_kept_incremental(keep: int, keep_days: int) -> None:
    names = _chain(4)
    doomed = _expired(names, keep, keep_days)
    kept = [n for n in names if n not in doomed]
    assert names[-1] in kept  # the newest always
    for n in kept:
        if "-on-" in n:
            assert f"clickhouse-{n.rsplit('-on-', 1)[1]}-full" in kept, (n, keep)
    # by count: at most the newest `keep` and their fulls
    assert len(kept) <= keep + 1
    if keep_days == 3650:
        assert set(names[-keep:]) <= set(kept)


def test_without_a_store_the_clickhouse_backup_is_the_dump() -> None:
    for cj in _cronjobs(render("prod", NO_STORE)):
        assert "BACKUP DATABASE" not in json.dumps(cj)


def _clickhouse_job(r: Any) -> dict[str, Any]:
    return next(cj for cj in _cronjobs(r) if cj["metadata"]["annotations"]["optiinfra.io/backup-of"] == SVC.name)


def test_the_cronjob_has_no_claim_and_no_key_in_plaintext() -> None:
    r = render("prod", BY_IP, secrets=SECRETS)
    cj = _clickhouse_job(r)
    pod = _pod(cj)
    assert [c["name"] for c in pod["initContainers"]] == ["plan", "backup"]
    assert [c["name"] for c in pod["containers"]] == ["expire"]
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
    assert cj["metadata"]["annotations"]["optiinfra.io/backup-target"] == "s3://optiinfra-backups/optiinfra/clickhouse/"
    claims = {m["metadata"]["name"] for m in _manifests(r) if m["kind"] == "PersistentVolumeClaim"}
    assert f"{SVC.name}-backups" not in claims
    for c in [*pod["initContainers"], *pod["containers"]]:
        assert not any(e["name"].startswith(("AWS_", "CLICKHOUSE_PASSWORD")) for e in c.get("env") or [])
    plain = json.dumps([m for m in _manifests(r) if m["kind"] != "Secret"])
    assert KEY not in plain and KEY_ID not in plain


@pytest.mark.parametrize("extra", [{"encryption": "client"}, {"encryption": "sse-kms", "kmsKeyId": "k"},
                                   {"credentials": "workloadIdentity",
                                    "serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "r"}}],
                         ids=["client", "sse-kms", "identity"])
def test_a_store_clickhouse_cannot_write_keeps_the_dump_and_upload(extra: dict[str, Any]) -> None:
    sets = _store(endpoint="https://s3.eu-west-1.amazonaws.com", **extra)
    secrets = (*SECRETS, "backupEncryptionPassphrase=pass-phrase-1") if extra.get("encryption") == "client" else (
        () if "credentials" in extra else SECRETS)
    r = render("prod", sets, secrets=secrets)
    pod = _pod(_clickhouse_job(r))
    assert [c["name"] for c in pod["containers"]] == ["upload"] and "BACKUP DATABASE" not in json.dumps(pod)
    model = infra_stack.model_of("prod", (sets,))
    assert not any(o.backup_store for o in model.outside(model.services[SVC.name]))  # and no egress of the server


@pytest.mark.parametrize("store", [BY_IP, BY_HOST], ids=["ip-endpoint", "host-endpoint"])
def test_the_clickhouse_pod_reaches_the_store_and_nothing_else_outside(store: str) -> None:
    from .test_backup_store_k8s import assert_reaches_only_the_store
    x = rendered(render("prod", store, secrets=SECRETS))
    assert_reaches_only_the_store(x, SVC.name, store)
    assert_reaches_only_the_store(x, f"{SVC.name}-backup", store)
