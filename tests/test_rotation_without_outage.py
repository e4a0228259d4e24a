"""Rotating a client's credential without an outage, on a real PostgreSQL and Redis.

Runs the catalog's start wrappers and the rotation Job commands exactly as rendered
(`infra.stores.rotation_command`, what the Kubernetes Job runs) against Debian's servers,
while a client loop opens a NEW connection and runs a query every 50 ms, first as the
consumer running the previous value, then as the one running the new value (both at once
while the consumers roll). The correct order (Job phase 1, consumers move, Job phase 2)
sees 0 failed logins and commands, the store keeps its PID, and the old value is refused
afterwards. Two deliberately broken variants must fail (strict xfail): consumers moved
before the Job ran (failed logins), and the retirement step left out (the old value still
logs in). The `restart` variant is today's rotation: the store restarted with the new
values; it measures the failures that causes.

Servers listen on 127.0.0.1 on a free port; waits are bounded; everything is stopped also
on failure. Without the servers the tests skip (fail under OPTIINFRA_REQUIRE_TOOLS=1).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from infra.catalog import default_catalog
from infra.model import Secret
from infra.stores import Phase, client_role, rotation_command
from infra.stores.postgres import slot_role

from . import test_postgres_rotation as pg
from .test_postgres_rotation import cluster  # noqa: F401 - the fixture
from .tools import free_port, stop_process, unavailable

CLIENT = "orchestrator"
PERIOD_S = 0.05
CATALOG = default_catalog()
REPORT = Path(os.environ.get("OPTIINFRA_ROTATION_REPORT", "/tmp/optiinfra-rotation-report.txt"))


@dataclass
class Loop:
    """A client that opens a new connection and runs one query every 50 ms."""

    attempt: Callable[[], bool]
    ok: int = 0
    failed: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Loop:
        def run() -> None:
            while not self.stop.is_set():
                t = time.monotonic()
                try:
                    good = self.attempt()
                except Exception:
                    good = False
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                self.stop.wait(max(0.0, PERIOD_S - (time.monotonic() - t)))
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def end(self) -> Loop:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout=30)
        return self


def _run(argv: tuple[str, ...], env: dict[str, str]) -> None:
    done = subprocess.run(list(argv), env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "optiinfra: credentials applied" in done.stdout, done.stdout + done.stderr


VARIANTS = ["ordered", pytest.param("consumers-first", marks=pytest.mark.xfail(
    strict=True, reason="consumers rolled before the Job: their new logins fail")),
    pytest.param("no-retirement", marks=pytest.mark.xfail(
        strict=True, reason="without phase 2 the previous value still logs in")), "restart"]


def _rotate(variant: str, job: Callable[[Phase], None], restart: Callable[[], None],
            old_loop: Loop, new_loop: Callable[[], Loop]) -> tuple[Loop, float]:
    """One rotation as `variant` orders it; returns the new consumer's loop and the seconds
    from the first step to the old value's retirement."""
    began = time.monotonic()
    if variant == "restart":  # today: the store restarts with the new values, then the consumers roll
        restart()
        new = new_loop().start()
        time.sleep(1)
        old_loop.end()
        return new, time.monotonic() - began
    if variant == "consumers-first":
        new = new_loop().start()
        time.sleep(0.5)
        job(Phase("b", keep_previous=True))
    else:
        job(Phase("b", keep_previous=True))  # phase 1: the new value beside the old
        new = new_loop().start()             # the consumers roll: both run for a while
    time.sleep(1)
    old_loop.end()                           # every consumer runs the new value
    if variant != "no-retirement":
        job(Phase("b", keep_previous=False))  # phase 2: the old value retired
    took = time.monotonic() - began
    time.sleep(0.5)
    return new, took


def _report(store: str, variant: str, old: Loop, new: Loop, took: float) -> None:
    with REPORT.open("a") as f:
        f.write(f"{store} {variant}: old consumer {old.ok} ok {old.failed} failed; new consumer {new.ok} ok "
                f"{new.failed} failed; rotation {took:.2f} s\n")


# ---- PostgreSQL --------------------------------------------------------------------------

def _pg_postmaster(root: Path) -> int:
    return int((root / "data" / "postmaster.pid").read_text().split()[0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_postgres_rotation_without_outage(cluster: tuple[Path, Path, int], variant: str) -> None:  # noqa: F811
    _, root, port = cluster
    store = CATALOG.services["postgres"]
    role, cred = pg._consumers()[CLIENT]
    assert role == client_role(CLIENT)
    passwords = {"postgres": "admin-password-0123456789", "postgres-monitor": "monitor-password-0123456789",
                 **{c: f"{r}-password-0123" for r, c in pg._consumers().values()}}
    before, after = passwords[cred], "rotated-" + secrets.token_urlsafe(16)
    proc = pg._start(cluster, "docker-env", passwords)
    procs = [proc]
    try:
        deadline = time.monotonic() + 60
        while not pg._ready(port):
            assert proc.poll() is None and time.monotonic() < deadline, "never ready"
            time.sleep(0.5)
        pid = _pg_postmaster(root)

        def login(user: str, password: str) -> Callable[[], bool]:
            return lambda: pg._login(port, user, password, "select count(*) from pg_class").returncode == 0

        variables = pg._password_vars()

        def job(phase: Phase) -> None:
            argv = rotation_command(store, CATALOG.services.values(), {CLIENT: phase})
            env = {variables[c]: v for c, v in passwords.items() if c != "postgres-monitor"}
            _run(argv, {**env, variables[cred]: after, "PGHOST": "127.0.0.1", "PGPORT": str(port),
                        "POSTGRES_USER": pg._user(), "POSTGRES_DB": "postgres"})

        def restart() -> None:
            pg._stop(procs[-1])
            shim = root / "bin"
            shutil.rmtree(shim)
            procs.append(pg._start(cluster, "docker-env", {**passwords, cred: after}))
            end = time.monotonic() + 60
            while not pg._ready(port):
                assert time.monotonic() < end, "never ready after the restart"
                time.sleep(0.2)

        old = Loop(login(role, before)).start()
        time.sleep(0.5)
        new, took = _rotate(variant, job, restart, old, lambda: Loop(login(slot_role(role, "b"), after)))
        new.end()
        _report("postgres", variant, old, new, took)
        if variant == "restart":
            assert old.failed + new.failed > 0  # what the restart costs (measured, reported)
            return
        assert (old.failed, new.failed) == (0, 0), (old, new)
        assert old.ok > 10 and new.ok > 10
        assert _pg_postmaster(root) == pid and procs[-1].poll() is None  # the store kept its process
        assert not login(role, before)(), "the previous value still logs in after retirement"
        assert login(slot_role(role, "b"), after)()
    finally:
        for p in procs:
            if p.poll() is None:
                pg._stop(p)


# ---- Redis -------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_redis_rotation_without_outage(tmp_path: Path, variant: str) -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        unavailable("Redis is not installed (apt-get install redis-server; .ci/run does)")
    import redis as redis_py

    store = CATALOG.services["redis"]
    variables = {v.credential: k for k, v in store.env if isinstance(v, Secret) and k != "REDISCLI_AUTH"}
    passwords = {c: f"{c}-{secrets.token_urlsafe(12)}" for c in variables}
    cred = f"redis-{CLIENT}"
    user = client_role(CLIENT)
    before, after = passwords[cred], "rotated-" + secrets.token_urlsafe(16)
    port = free_port()
    argv = [str(a) for a in store.command] + ["--bind", "127.0.0.1", "--port", str(port), "--dir", str(tmp_path),
                                              "--save", ""]
    procs: list[subprocess.Popen[bytes]] = []

    def start(values: dict[str, str]) -> None:
        env = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path), **{variables[c]: v for c, v in values.items()}}
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        end = time.monotonic() + 30
        while not _logs_in(attempt("default", values["redis"])):
            assert procs[-1].poll() is None and time.monotonic() < end, "redis-server never answered"
            time.sleep(0.1)

    def attempt(name: str, password: str) -> Callable[[], bool]:
        def once() -> bool:
            client = redis_py.Redis(host="127.0.0.1", port=port, username=name, password=password,
                                    socket_timeout=3, socket_connect_timeout=3)
            try:
                return client.get("nothing") is None
            finally:
                client.close()  # type: ignore[no-untyped-call]  # redis-py's close() is unannotated
        return once

    def server_pid(client: Any) -> int:
        # redis-py types info() as Awaitable | Any (its sync and async clients share the stubs).
        return cast(int, cast(dict[str, Any], client.info("server"))["process_id"])

    def stop(p: subprocess.Popen[bytes]) -> None:
        stop_process(p, wait_s=30)

    try:
        start(passwords)
        admin = redis_py.Redis(host="127.0.0.1", port=port, password=passwords["redis"], socket_timeout=3)
        pid = server_pid(admin)

        def job(phase: Phase) -> None:
            command = rotation_command(store, CATALOG.services.values(), {CLIENT: phase})
            env = {variables[c]: v for c, v in passwords.items()}
            _run(command, {**env, variables[cred]: after, "OPTIINFRA_STORE_HOST": "127.0.0.1",
                           "OPTIINFRA_STORE_PORT": str(port)})

        def restart() -> None:
            stop(procs[-1])
            start({**passwords, cred: after})

        old = Loop(attempt(user, before)).start()
        time.sleep(0.5)
        new, took = _rotate(variant, job, restart, old, lambda: Loop(attempt(user, after)))
        new.end()
        _report("redis", variant, old, new, took)
        if variant == "restart":
            assert old.failed + new.failed > 0
            return
        assert (old.failed, new.failed) == (0, 0), (old, new)
        assert old.ok > 10 and new.ok > 10
        admin = redis_py.Redis(host="127.0.0.1", port=port, password=passwords["redis"], socket_timeout=3)
        assert server_pid(admin) == pid and procs[-1].poll() is None
        assert not _logs_in(attempt(user, before)), "the previous value still logs in after retirement"
        assert attempt(user, after)()
        # The other clients were not touched: still their own value.
        other = next(c for c in passwords if c not in (cred, "redis", "redis-monitor"))
        assert attempt(client_role(other[len("redis-"):]), passwords[other])()
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p)


def _logs_in(attempt: Callable[[], bool]) -> bool:
    try:
        return attempt()
    except Exception:
        return False
