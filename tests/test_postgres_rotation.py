"""A rotated PostgreSQL credential applies inside the server, on a real PostgreSQL.

The image sets POSTGRES_PASSWORD only when it creates the cluster, so a changed credential
would lock every client out. The catalog's command wraps the image's entrypoint and sets
the role's password to the current credential on every start (infra/stores/postgres.py
`apply_credentials`), and creates or updates the exporter's read-only role. This runs
exactly that command against a real server (the Debian package), with a stand-in for the
image's `docker-entrypoint.sh` that starts `postgres` on an existing cluster, as the image
does on a restart: created with password A, started with credential B (as the Docker
target passes it, and as the Kubernetes file), B logs in and A no longer does; the
monitoring role logs in with its own credential, is a member of pg_monitor and nothing
more; each application consumer logs in as its own role with its own credential, no
superuser, creating tables in its application's schema under the schema's owner role and
kept out of the other application's schema.

Everything listens on 127.0.0.1 (and the image's socket directory, as the command
expects), waits are bounded and the server is stopped when the test ends, also when it
fails. Without PostgreSQL the test is skipped with the reason; with
OPTIINFRA_REQUIRE_TOOLS=1 (set by .ci/run, which installs it) it fails instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.catalog import MONITOR, default_catalog
from infra.model import CommandCheck, Secret, SecretFile, Url
from infra.stores.postgres import PG_APPLIED, PG_SOCKET

from .tools import free_port, unavailable

USER = "postgres"  # the Debian package's account: the server refuses to run as root


def _bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found or not shutil.which("runuser") or not Path(PG_SOCKET).is_dir():
        unavailable("PostgreSQL (Debian package postgresql) is not installed")
    return Path(found[-1]).parent


def _user() -> str:
    """The role the catalog's PostgreSQL connection logs in as."""
    conn = default_catalog().services["postgres"].connection
    assert conn is not None and conn.user
    return conn.user


def _consumers() -> dict[str, tuple[str, str]]:
    """Each service whose URL logs into PostgreSQL as a role of its own: service -> (role,
    credential), read from the catalog's environment values."""
    cat = default_catalog()
    return {s.name: (v.user, v.credential) for s in cat.services.values() for _, v in s.env
            if isinstance(v, Url) and v.service == "postgres" and v.user and v.credential}


def _password_vars() -> dict[str, str]:
    """credential -> the variable postgres' container gets it in (Docker form)."""
    svc = default_catalog().services["postgres"]
    return {v.credential: k for k, v in svc.env if isinstance(v, Secret)}


def _file_vars() -> dict[str, str]:
    """credential -> the variable naming its file (Kubernetes form)."""
    files: tuple[SecretFile, ...] = default_catalog().services["postgres"].secret_files
    return {f.credential: f.file_env for f in files}


def _as_user(*argv: str, env: dict[str, str] | None = None) -> list[str]:
    return ["runuser", "-u", USER, "--", "env", *(f"{k}={v}" for k, v in (env or {}).items()), *argv]


@pytest.fixture
def cluster() -> Iterator[tuple[Path, Path, int]]:
    """A cluster created with password A for the role the catalog's connection uses, in a
    temp dir the server's account can reach (pytest's own is private to root)."""
    bindir = _bin()
    root = Path(tempfile.mkdtemp(prefix="optiinfra-pg-"))
    root.chmod(0o755)
    try:
        yield from _created(bindir, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _created(bindir: Path, root: Path) -> Iterator[tuple[Path, Path, int]]:
    (root / "pw").write_text("password-A-0123456789\n")
    shutil.chown(root, USER)
    shutil.chown(root / "pw", USER)
    user = _user()
    init = subprocess.run(_as_user(str(bindir / "initdb"), "-D", str(root / "data"), "-U", user, "--pwfile",
                                   str(root / "pw"), "--auth-local=trust", "--auth-host=scram-sha-256"),
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stdout + init.stderr
    yield bindir, root, free_port()


def _login(port: int, user: str, password: str, sql: str = "select current_user",
           db: str = "postgres") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", db, "-tAc", sql],
                          env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "3"},
                          capture_output=True, text=True, timeout=30)


def _start(cluster: tuple[Path, Path, int], form: str, passwords: dict[str, str]) -> subprocess.Popen[str]:
    """The catalog's PostgreSQL command on the cluster, with `passwords` (credential -> value)
    delivered as the Docker target (variables) or the Kubernetes one (files) does."""
    bindir, root, port = cluster
    svc = default_catalog().services["postgres"]
    command = [a for a in svc.command if isinstance(a, str)]
    assert len(command) == len(svc.command)
    # The image's entrypoint on an existing cluster: start the server (here on 127.0.0.1 and
    # the image's socket directory, on a free port).
    shim = root / "bin"
    shim.mkdir()
    (shim / "docker-entrypoint.sh").write_text(
        "#!/bin/sh\n[ \"$1\" = postgres ] && shift\n"
        f"exec {bindir / 'postgres'} -D {root / 'data'} -c listen_addresses=127.0.0.1 -p {port} "
        f"-c unix_socket_directories={PG_SOCKET} \"$@\"\n")
    (shim / "docker-entrypoint.sh").chmod(0o755)
    shutil.chown(shim, USER)
    env = {"PATH": f"{shim}:{bindir}:/usr/bin:/bin", "POSTGRES_USER": _user(), "POSTGRES_DB": "postgres",
           "PGPORT": str(port)}
    variables, files = _password_vars(), _file_vars()
    assert set(passwords) <= set(variables) and set(passwords) <= set(files)
    for cred, value in passwords.items():
        if form == "docker-env":
            env[variables[cred]] = value
        else:
            (root / cred).write_text(value)
            shutil.chown(root / cred, USER)
            env[files[cred]] = str(root / cred)
    assert command[:2] == ["sh", "-c"]
    return subprocess.Popen(_as_user(*command, env=env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _ready(port: int) -> bool:
    """The catalog's readiness check of PostgreSQL, as its probe runs it."""
    health = default_catalog().services["postgres"].health
    assert health is not None and isinstance(health.probe, CommandCheck)
    return subprocess.run(list(health.probe.argv), env={**os.environ, "PGPORT": str(port)},
                          capture_output=True, timeout=30).returncode == 0


def _stop(proc: subprocess.Popen[str]) -> str:
    os.killpg(proc.pid, signal.SIGINT)  # postgres' fast shutdown
    try:
        return proc.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate(timeout=10)[0]


@pytest.mark.parametrize("form", ["docker-env", "kubernetes-file"])
def test_a_rotated_password_is_applied_on_start(cluster: tuple[Path, Path, int], form: str) -> None:
    port = cluster[2]
    user = _user()
    new, monitor = "password-B-rotated-0123456789", "monitor-password-0123456789"
    consumers = _consumers()
    assert consumers, "no service logs into PostgreSQL as its own role"
    passwords = {"postgres": new, "postgres-monitor": monitor,
                 **{cred: f"{role}-password-0123" for role, cred in consumers.values()}}
    Path(PG_APPLIED).touch()  # a marker of an earlier start (an emptyDir outlives a restart)
    proc = _start(cluster, form, passwords)
    try:
        # Ready only once this start's credentials are applied: then every role logs in at once.
        deadline = time.monotonic() + 60
        while not _ready(port):
            assert proc.poll() is None, proc.communicate(timeout=10)[0]
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.5)
        ok = _login(port, user, new)
        assert ok.returncode == 0 and ok.stdout.strip() == user, ok.stderr
        assert all(_login(port, role, passwords[cred]).returncode == 0 for role, cred in consumers.values())
        old = _login(port, user, "password-A-0123456789")
        assert old.returncode != 0 and "password authentication failed" in old.stderr
        # The exporter's role: its own password, pg_monitor, no privilege beyond it.
        deadline = time.monotonic() + 30
        while (mon := _login(port, MONITOR, monitor, "select pg_has_role(current_user, 'pg_monitor', 'member'),"
                             " rolsuper, rolcreaterole, rolcreatedb from pg_roles where rolname = current_user"
                             )).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert mon.returncode == 0, mon.stderr
        assert mon.stdout.strip() == "t|f|f|f"
        write = _login(port, MONITOR, monitor, "create table public.x (i int)")
        assert write.returncode != 0 and "permission denied" in write.stderr
        assert _login(port, MONITOR, new).returncode != 0  # only its own credential
        # Each application consumer: its own role and password, no superuser, tables it creates
        # land in its schema owned by the schema's owner role (shared by the collector and its
        # worker), another application's schema is closed to it.
        schemas: dict[str, str] = {}
        for service, (role, cred) in consumers.items():
            me = _login(port, role, passwords[cred], "select session_user, current_user, current_schema, "
                        "(select rolsuper from pg_roles where rolname = session_user)")
            assert me.returncode == 0, f"{service}: {me.stderr}"
            session, current, schema, superuser = me.stdout.strip().split("|")
            assert (session, superuser) == (role, "f") and current != role and schema, me.stdout
            schemas[service] = schema
            made = _login(port, role, passwords[cred], f"create table if not exists t_{schema} (i int); "
                          f"insert into t_{schema} values (1); select tableowner from pg_tables "
                          f"where schemaname = '{schema}' and tablename = 't_{schema}'")
            assert made.returncode == 0 and made.stdout.strip().splitlines()[-1] == current, made.stderr
            assert _login(port, role, new).returncode != 0  # not with the superuser's password
            sudo = _login(port, role, passwords[cred], "alter role current_user superuser")
            assert sudo.returncode != 0 and "must be superuser" in sudo.stderr
        assert len(set(schemas.values())) > 1  # the applications are kept apart
        for service, (role, cred) in consumers.items():
            for other, schema in schemas.items():
                if schema != schemas[service]:
                    peek = _login(port, role, passwords[cred], f"select * from {schema}.t_{schema}")
                    assert peek.returncode != 0 and "permission denied" in peek.stderr, (service, other)
        # The password never appeared in a process's arguments (what `ps` shows everyone).
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=10).stdout
        assert not [pw for pw in passwords.values() if pw in ps]
        assert proc.poll() is None  # the server is still up: the helper's exit was no crash
    finally:
        out = _stop(proc)
    assert "could not apply the credentials" not in out, out
    assert "terminated by signal" not in out and "was terminated" not in out, out


def test_credentials_that_cannot_be_applied_keep_postgres_unready(cluster: tuple[Path, Path, int]) -> None:
    """A client's password missing: the wrapper's SQL fails, so the server answers but never
    turns ready (clients wait, the startup probe restarts it) and it says why."""
    _, _, port = cluster
    consumers = _consumers()
    left_out = next(iter(consumers.values()))[1]
    passwords = {"postgres": "password-B-rotated-0123456789", "postgres-monitor": "monitor-password-0123456789",
                 **{cred: f"{role}-password-0123" for role, cred in consumers.values() if cred != left_out}}
    proc = _start(cluster, "docker-env", passwords)
    try:
        deadline = time.monotonic() + 60
        # Nothing is applied, so the cluster's own password still logs in once the server answers.
        while _login(port, _user(), "password-A-0123456789").returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "the server never answered"
            time.sleep(0.5)
        # Readiness fails throughout; the wrapper said why.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert not _ready(port)
            time.sleep(1)
        assert proc.poll() is None  # up, answering, not ready
    finally:
        out = _stop(proc)
    variable = next(k for k, v in default_catalog().services["postgres"].env
                    if isinstance(v, Secret) and v.credential == left_out)
    assert f"optiinfra: could not apply the credentials: no value in {variable}" in out, out
