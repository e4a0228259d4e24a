"""Resources and the runtime settings that follow from them (issue 26): each rendered
setting moves with the declared limit; Redis holds the seed's working set.

Expected values are worked by hand from the catalog's declarations (the arithmetic in the
comments), never taken from infra/runtime.py.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from infra import offline

from .conftest import render
from .test_docker import containers
from .test_kubernetes import container, workloads
from .tools import free_port, stop_process

SEED_REDIS_MB = 50
"""The seed's measured Redis memory (~50MB, 'Service Resource Usage')."""


def docker_env(r: offline.Render, name: str) -> dict[str, str]:
    c = containers(r)[f"optiinfra-{name}"]
    return dict(e.split("=", 1) for e in c.inputs.get("envs") or [] if isinstance(e, str))


def docker_command(r: offline.Render, name: str) -> list[str]:
    return list(containers(r)[f"optiinfra-{name}"].inputs.get("command") or [])


def k8s_container(r: offline.Render, name: str) -> dict[str, Any]:
    return container(workloads(r)[name])


def k8s_env(r: offline.Render, name: str) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in k8s_container(r, name).get("env") or []}


@pytest.mark.parametrize(("service", "limit", "expected"), [
    # Go: GOMEMLIMIT at 80% of the limit. Prometheus declares 300 Mi, limit twice: 600 -> 480MiB.
    ("prometheus", None, "480MiB"),
    ("prometheus", "400Mi", "640MiB"),      # 800 x 0.8
    ("orchestrator", None, "102MiB"),       # 64 -> 128 x 0.8 = 102.4
    ("redis-exporter", None, "25MiB"),      # 16 -> 32 x 0.8 = 25.6
    ("alertmanager", None, "51MiB"),        # declared limit 64 x 0.8 = 51.2
])
def test_gomemlimit_follows_the_limit_on_docker(service: str, limit: str | None, expected: str) -> None:
    r = render("dev", *((f"services.{service}.memory={limit}",) if limit else ()))
    assert docker_env(r, service)["GOMEMLIMIT"] == expected


def test_runtime_settings_on_kubernetes_follow_the_limit() -> None:
    prod = render("prod")
    # prod's Prometheus is 512Mi (Burstable, limit 1024): 819MiB; the portal's V8 heap 75% of 300.
    assert k8s_env(prod, "prometheus")["GOMEMLIMIT"] == "819MiB"
    assert k8s_env(prod, "portal")["NODE_OPTIONS"] == "--max-old-space-size=225"
    assert k8s_container(prod, "prometheus")["resources"]["limits"]["memory"] == "1Gi"
    moved = render("prod", "services.portal.memory=200Mi")
    assert k8s_env(moved, "portal")["NODE_OPTIONS"] == "--max-old-space-size=300"  # 400 x 0.75
    assert k8s_container(moved, "portal")["resources"]["limits"]["memory"] == "400Mi"
    assert "GOMEMLIMIT" not in k8s_env(prod, "portal") and "NODE_OPTIONS" not in k8s_env(prod, "prometheus")


def test_celery_concurrency_and_child_cap_follow_the_limit() -> None:
    # dev: the worker declares 200 Mi, limit 400; children of 128 MiB beside a 128 MiB parent
    # and the 128 MiB liveness probe (celery inspect ping loads the application too):
    # (400 - 256) // 128 = 1 process, replaced above 128 MiB = 131072 KiB.
    cmd = docker_command(render("dev"), "data-collector-worker")
    assert cmd[-2:] == ["--concurrency=1", "--max-memory-per-child=131072"]
    # prod: 256 Mi -> limit 512: (512 - 256) // 128 = 2.
    args = k8s_container(render("prod"), "data-collector-worker")["args"]
    assert "--concurrency=2" in args
    # 100 Mi -> limit 200: (200 - 256) // 128 < 0, never fewer than 1.
    low = docker_command(render("dev", "services.data-collector-worker.memory=100Mi"), "data-collector-worker")
    assert "--concurrency=1" in low


def test_postgres_buffers_connections_and_shm() -> None:
    dev = render("dev")
    cmd = docker_command(dev, "postgres")
    # 512 MiB limit: shared_buffers a quarter = 128MB. max_connections: on Docker one of each
    # client: orchestrator 10 + data-collector 10 + worker 2 per process x 1 process + exporter 1
    # = 23, and 6 of the server's own = 29.
    assert "shared_buffers=128MB" in cmd and "max_connections=29" in cmd
    assert containers(dev)["optiinfra-postgres"].inputs["shmSize"] == 128  # a quarter of 512
    prod = render("prod")
    args = k8s_container(prod, "postgres")["args"]
    # prod, each Deployment counted with its rollout's surge pod (the new pod opens its pool
    # before an old one closes): orchestrator (2 + 1) x 10 + data-collector (2 + 1) x 10
    # + worker (3 + 1) replicas x 2 processes x 2 + exporter (1 + 1) x 1 = 78, + 6 = 84.
    assert "max_connections=84" in args
    pod = workloads(prod)["postgres"]["spec"]["template"]["spec"]
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "128Mi"}
    assert {"name": "shm", "mountPath": "/dev/shm"} in k8s_container(prod, "postgres")["volumeMounts"]
    more = render("prod", "services.orchestrator.replicas=4")
    assert "max_connections=104" in k8s_container(more, "postgres")["args"]  # + 2 x 10


def test_clickhouse_cap_logs_and_ttls() -> None:
    dev = docker_command(render("dev"), "clickhouse")
    # 1536 MiB: the server's cap 80% = 1288490188 bytes, mark cache 10% = 161061273 bytes.
    assert "--max_server_memory_usage=1288490188" in dev and "--mark_cache_size=161061273" in dev
    assert "--logger.level=warning" in dev and "--logger.count=2" in dev
    # Writable root: 64 MiB logs + 256 MiB scratch = 320 MiB ephemeral; half of it over 6 files.
    assert "--logger.size=26M" in dev
    # A day per GiB of its volume: dev 5 GiB -> 5 days, prod 50 GiB -> capped at 30.
    assert "--query_log.ttl=event_date + INTERVAL 5 DAY DELETE" in dev
    prod = k8s_container(render("prod"), "clickhouse")["args"]
    assert "--query_log.ttl=event_date + INTERVAL 30 DAY DELETE" in prod
    assert "--max_server_memory_usage=1717986918" in prod  # 2048 MiB x 0.8


def test_docker_rotates_every_containers_logs() -> None:
    for name, c in containers(render("dev")).items():
        assert c.inputs["logDriver"] == "json-file", name
        # 3 files of 21m: within the 64 MiB a container's logs may take on a node.
        assert c.inputs["logOpts"] == {"max-size": "21m", "max-file": "3"}, name


def redis_args(r: offline.Render) -> list[str]:
    return docker_command(r, "redis")


def maxmemory_mib(args: list[str]) -> int:
    i = args.index("--maxmemory")
    m = re.fullmatch(r"(\d+)mb", args[i + 1])
    assert m, args[i + 1]
    return int(m.group(1))  # Redis' "mb" is 1024 x 1024 bytes


def test_redis_working_set_under_maxmemory_with_room_for_a_rewrite() -> None:
    for stack in ("dev", "prod"):
        r = render(stack)
        limit = 256  # the catalog's declaration (Guaranteed: the limit on both targets)
        args = redis_args(r) if stack == "dev" else k8s_container(r, "redis")["args"]
        mm = maxmemory_mib(args)
        assert mm > SEED_REDIS_MB * 1_000_000 / 2**20, "the seed's working set must fit under maxmemory"
        # An AOF rewrite forks; copy-on-write can duplicate the dataset once more.
        assert 2 * mm <= limit
    # A memory setting drops the declared limit: on Docker twice it, 1024 x 0.45 = 460.
    assert maxmemory_mib(redis_args(render("dev", "services.redis.memory=512Mi"))) == 460


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """Debian's redis-server started on 127.0.0.1 with the rendered command (the start
    wrapper and its arguments), stopped after the test."""
    try:
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    assert "v=" in version
    cmd = redis_args(render("dev"))
    password = "sizing-test-password"
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "TMPDIR": str(tmp_path)}
    env.update(dict.fromkeys(re.findall(r"\$\{(\w+_PASSWORD):-", cmd[2]), password))
    port = free_port()
    proc = subprocess.Popen([*cmd, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                             "--save", ""], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        import redis
        client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=5)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"redis-server did not start: {out[-2000:]}")
                time.sleep(0.1)
        yield port, password
    finally:
        stop_process(proc)


def test_real_redis_with_the_rendered_arguments_accepts_the_seed_working_set(
        redis_server: tuple[int, str]) -> None:
    import redis
    port, password = redis_server
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=10)

    def info_of(section: str) -> dict[str, Any]:
        return cast(dict[str, Any], client.info(section))

    info = info_of("memory")
    assert info["maxmemory"] == maxmemory_mib(redis_args(render("dev"))) * 2**20
    assert info["maxmemory_policy"] == "noeviction"
    value = b"x" * 1_000_000
    for i in range(SEED_REDIS_MB):  # 50 x 1 MB: the seed's ~50MB; noeviction refuses writes at the cap
        client.set(f"task:{i}", value)
    used = info_of("memory")["used_memory"]
    assert used >= SEED_REDIS_MB * 1_000_000 and used < info["maxmemory"]
    # A rewrite of the append-only file runs (forks) with the dataset at this size.
    client.execute_command("BGREWRITEAOF")  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + 30
    while info_of("persistence")["aof_rewrite_in_progress"] or info_of("persistence")["aof_rewrite_scheduled"]:
        assert time.monotonic() < deadline, "AOF rewrite did not finish"
        time.sleep(0.2)
    assert info_of("persistence")["aof_last_bgrewrite_status"] == "ok"
