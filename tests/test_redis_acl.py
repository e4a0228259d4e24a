"""Redis' ACL users, on a real Redis, with the real clients that log in as them.

The catalog's Redis command writes one ACL user per client (infra/stores/redis.py `start`):
each application its own user without the dangerous commands, the exporter a read-only
user, `default` the administrator's. This runs exactly that command (the Debian package's
redis-server) with the credentials as the Docker target passes them, then checks, for the
users the catalog's connection URLs name:
- each logs in with its own password only, and is refused what its rules leave out;
- the file holds no password, only hashes, and is private; no password shows in `ps`;
- a missing credential stops the start with the user's name;
- the clients work within their rules: a real Celery worker, beat and client with the
  catalog's commands and broker URLs, and the worker's own health check; the exporter's user
  runs the commands redis_exporter issues.

Everything listens on 127.0.0.1, waits are bounded, and every process is stopped when the
test ends, also when it fails. Without Redis the tests skip with the reason, or fail under
OPTIINFRA_REQUIRE_TOOLS=1 (.ci/run installs it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from infra.catalog import CELERY_APP, default_catalog
from infra.model import CommandCheck, Dsn, Secret, Service, Url

from .tools import free_port, unavailable

WAIT_S = 30.0
CATALOG = default_catalog()
REDIS = CATALOG.services["redis"]


def _wait(ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None = None,
          log: Path | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what} not ready within {WAIT_S:.0f}s\n{tail}")


def _users() -> dict[str, tuple[str, str]]:
    """Each service that logs into Redis as an ACL user: service -> (user, credential), read
    from the catalog's environment (URLs and the exporter's user/password variables)."""
    out: dict[str, tuple[str, str]] = {}
    for s in CATALOG.services.values():
        env = dict(s.env)
        for _, v in s.env:
            if isinstance(v, Url) and v.service == "redis" and v.user and v.credential:
                out[s.name] = (v.user, v.credential)
            if isinstance(v, Dsn) and v.service == "redis" and isinstance(env.get("REDIS_USER"), str):
                pw = env.get("REDIS_PASSWORD")
                assert isinstance(pw, Secret)
                out[s.name] = (str(env["REDIS_USER"]), pw.credential)
    return out


def _variables() -> dict[str, str]:
    """credential -> the variable Redis' container gets it in (the Docker form)."""
    return {v.credential: k for k, v in REDIS.env if isinstance(v, Secret) and k != "REDISCLI_AUTH"}


@dataclass
class Redis:
    port: int
    passwords: dict[str, str]  # credential -> value
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cli(self, user: str, password: str, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--user", user,
                              "--no-auth-warning", *args], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "REDISCLI_AUTH": password})
        return (out.stdout + out.stderr).strip()

    def url(self, service: str) -> str:
        """The broker URL the catalog gives `service`, pointing at this server."""
        user, cred = _users()[service]
        conn = REDIS.connection
        assert conn is not None
        return conn.template.format(user=user, password=quote(self.passwords[cred], safe=""),
                                    host="127.0.0.1", port=self.port)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"proc-{len(self.procs)}.log").open("ab")
        proc = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        self.procs.append(proc)
        return proc


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def _server_argv(port: int, workdir: Path) -> list[str]:
    return [str(a) for a in REDIS.command] + ["--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
                                              "--save", ""]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        unavailable("Redis is not installed (apt-get install redis-server; .ci/run does)")
    variables = _variables()
    server = Redis(free_port(), {c: f"{c}-{secrets.token_urlsafe(12)}" for c in variables}, tmp_path)
    env = {variables[c]: v for c, v in server.passwords.items()} | {"TMPDIR": str(tmp_path)}
    proc = server.start(*_server_argv(server.port, tmp_path), env=env)
    try:
        _wait(lambda: server.cli("default", server.passwords["redis"], "ping") == "PONG", "redis-server",
              proc, tmp_path / "proc-0.log")
        yield server
    finally:
        _stop(server.procs)


def test_each_client_has_its_own_user_and_only_its_rules(redis: Redis) -> None:
    users = _users()
    exporter = next(s for s in CATALOG.services.values() if s.metrics and any(
        isinstance(v, Dsn) and v.service == "redis" for _, v in s.env))
    apps = {s: u for s, u in users.items() if s != exporter.name}
    assert exporter.name in users and len(apps) >= 4, users  # the collector, worker, beat, orchestrator, ...
    assert len({u for u, _ in users.values()}) == len(users)  # a user each
    for service, (user, cred) in users.items():
        assert redis.cli(user, redis.passwords[cred], "ping") == "PONG", service
        assert "WRONGPASS" in redis.cli(user, redis.passwords["redis"], "ping"), service
    for service, (user, cred) in apps.items():
        pw = redis.passwords[cred]
        assert redis.cli(user, pw, "rpush", "celery", f"task-of-{service}").isdigit()
        assert redis.cli(user, pw, "get", "nothing") == ""
        for refused in (("flushall",), ("config", "set", "maxmemory", "1"), ("keys", "*"),
                        ("shutdown", "nosave"), ("monitor",), ("replicaof", "127.0.0.1", "1"),
                        ("client", "kill", "127.0.0.1:1")):
            assert "NOPERM" in redis.cli(user, pw, *refused), (service, refused)
    # The exporter: statistics, the server's limits and the queue's length; nothing else. These
    # are the commands redis_exporter runs with the catalog's settings (read from its source:
    # exporter/*.go; no release of the image's version is served here to run it).
    user, cred = users[exporter.name]
    pw = redis.passwords[cred]
    queue = next(v.split("=", 1)[1] for k, v in exporter.env if k == "REDIS_EXPORTER_CHECK_SINGLE_KEYS"
                 and isinstance(v, str))
    assert "redis_version" in redis.cli(user, pw, "info", "all")
    assert redis.cli(user, pw, "config", "get", "*").splitlines().count("maxmemory") == 1
    for allowed in (("ping",), ("client", "setname", "redis_exporter"), ("select", "0"), ("slowlog", "len"),
                    ("slowlog", "get", "1"), ("latency", "latest"), ("type", queue)):
        assert "NOPERM" not in redis.cli(user, pw, *allowed), allowed
    assert int(redis.cli(user, pw, "llen", queue)) == len(apps)
    for refused in (("set", "x", "1"), ("get", "some-other-key"), ("lpop", "celery"),
                    ("config", "set", "maxmemory", "1"), ("subscribe", "anything")):
        assert "NOPERM" in redis.cli(user, pw, *refused), refused
    # The administrator (health check, backups) keeps everything.
    assert redis.cli("default", redis.passwords["redis"], "dbsize") == "1"


def test_the_acl_file_holds_hashes_only_and_no_password_is_in_argv(redis: Redis) -> None:
    acl = next(redis.workdir.glob("*.acl"))
    text = acl.read_text()
    assert acl.stat().st_mode & 0o077 == 0
    assert len(text.splitlines()) == len(redis.passwords)
    assert not [pw for pw in redis.passwords.values() if pw in text]
    assert text.count(" #") == len(redis.passwords)  # each password as its SHA-256
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=10).stdout
    assert not [pw for pw in redis.passwords.values() if pw in ps]


def test_a_missing_credential_stops_the_start_with_the_users_name(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        unavailable("Redis is not installed (apt-get install redis-server; .ci/run does)")
    variables = _variables()
    user, cred = _users()["data-collector-beat"]
    env = {var: f"pw-{secrets.token_hex(8)}" for c, var in variables.items() if c != cred}
    out = subprocess.run(_server_argv(free_port(), tmp_path), capture_output=True, text=True, timeout=WAIT_S,
                         env={"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path), **env})
    assert out.returncode != 0
    assert f"optiinfra: no password for Redis user {user}" in out.stderr
    assert not list(tmp_path.glob("*.acl"))  # nothing written, no server started


CELERY_MODULE = """\
import os
from celery import Celery

app = Celery("optiinfra-acl-test", broker=os.environ["CELERY_BROKER_URL"],
             backend=os.environ["CELERY_BROKER_URL"])
app.conf.beat_schedule = {"tick": {"task": "tick", "schedule": 1.0}}


@app.task(name="add")
def add(x, y):
    return x + y


@app.task(name="tick")
def tick():
    app.backend.client.rpush("ticks", "1")
"""


def _service_argv(svc: Service) -> list[str]:
    return [str(a) for a in svc.command]


def test_celery_runs_as_the_catalogs_users(redis: Redis) -> None:
    """The collector, its worker and beat with the catalog's commands and their own broker
    URLs: a task sent by the API is run by the worker, beat's periodic task arrives, and the
    worker's health check (celery inspect ping over the broker) passes."""
    pytest.importorskip("celery")
    pkg = redis.workdir / CELERY_APP.split(".")[0]
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / f"{CELERY_APP.split('.')[1]}.py").write_text(CELERY_MODULE)
    bindir = Path(sys.executable).parent
    base = {"PATH": f"{bindir}:{os.environ['PATH']}", "PYTHONPATH": str(redis.workdir),
            "HOSTNAME": f"acl-test-{secrets.token_hex(4)}"}
    worker, beat = CATALOG.services["data-collector-worker"], CATALOG.services["data-collector-beat"]
    env_of = {name: {**base, "CELERY_BROKER_URL": redis.url(name)} for name in
              ("data-collector", "data-collector-worker", "data-collector-beat")}
    w = redis.start(*_service_argv(worker), "--concurrency=1", "-n", f"celery@{base['HOSTNAME']}",
                    env=env_of[worker.name])
    b = redis.start(*(a.replace("/tmp/", f"{redis.workdir}/") for a in _service_argv(beat)), env=env_of[beat.name])
    client = subprocess.run(
        [sys.executable, "-c", f"from {CELERY_APP} import add; print(add.delay(2, 3).get(timeout={WAIT_S}))"],
        capture_output=True, text=True, timeout=WAIT_S + 30, cwd=redis.workdir, env={**os.environ,
                                                                                      **env_of["data-collector"]})
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(redis.workdir.glob("proc-*.log")))
    assert client.returncode == 0 and client.stdout.strip() == "5", client.stderr[-2000:] + logs
    admin = redis.passwords["redis"]
    _wait(lambda: redis.cli("default", admin, "llen", "ticks") not in ("", "0"), "beat's periodic task", b,
          redis.workdir / "proc-2.log")
    assert worker.health is not None
    check = worker.health.probe
    assert isinstance(check, CommandCheck)
    ping = subprocess.run(list(check.argv), capture_output=True, text=True, timeout=60, cwd=redis.workdir,
                          env={**os.environ, **env_of[worker.name]})
    assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr
    assert w.poll() is None and b.poll() is None
    assert "NOPERM" not in logs, logs
