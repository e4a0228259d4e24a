"""`python -m infra adopt` against recorded Docker Engine API answers.

tests/fixtures/docker-engine/ holds what an engine running the seed's compose deployment
answers (API 1.43 shapes): `GET /containers/json?all=1` (containers.json), `GET
/containers/{id}/json` (inspect/<name>.json), `GET /volumes` and `GET /networks`. Besides
the seed's 19 services it has what adopt must not take for catalog data: a pgAdmin
container with its own volume, a ClickHouse log volume at a path the catalog does not
know, a compose volume nothing mounts, and another project's container, volume and
network. A fake engine serves them on a unix socket (and once on 127.0.0.1), started and
stopped by each test; no Docker daemon is needed.
"""

from __future__ import annotations

import copy
import http.server
import json
import re
import shutil
import socketserver
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra import cli, offline
from infra.catalog import default_catalog

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "docker-engine"


def recorded() -> dict[str, Any]:
    return {
        "containers": json.loads((FIXTURES / "containers.json").read_text()),
        "inspect": {p.stem: json.loads(p.read_text()) for p in sorted((FIXTURES / "inspect").glob("*.json"))},
        "volumes": json.loads((FIXTURES / "volumes.json").read_text()),
        "networks": json.loads((FIXTURES / "networks.json").read_text()),
    }


class FakeEngine:
    """Answers like a Docker engine from `answers`; records every request."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, str]] = []

    def answer(self, method: str, target: str) -> tuple[int, Any]:
        self.requests.append((method, target))
        if method != "GET":
            return 405, {"message": "the fake engine only answers GET"}
        url = urllib.parse.urlsplit(target)
        path = re.sub(r"^/v1\.\d+", "", url.path)
        if path == "/containers/json":
            listed = self.answers["containers"]
            all_ = urllib.parse.parse_qs(url.query).get("all") == ["1"]
            return 200, listed if all_ else [c for c in listed if c["State"] == "running"]
        m = re.fullmatch(r"/containers/([^/]+)/json", path)
        if m:
            ref = urllib.parse.unquote(m.group(1))
            found = next((i for i in self.answers["inspect"].values() if ref in (i["Id"], i["Name"].lstrip("/"))), None)
            return (200, found) if found else (404, {"message": f"No such container: {ref}"})
        if path == "/volumes":
            return 200, self.answers["volumes"]
        if path == "/networks":
            return 200, self.answers["networks"]
        return 404, {"message": "page not found"}


def _handler(engine: FakeEngine) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self) -> None:
            status, body = engine.answer(self.command, self.path)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Api-Version", "1.43")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _reply

        def address_string(self) -> str:  # a unix socket has no client address
            return "fake-engine-client"

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _TcpServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # A short path: a unix socket's path is limited to about 100 bytes.
    d = Path(tempfile.mkdtemp(prefix="fake-docker-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def serve(engine: FakeEngine, socket_dir: Path | None) -> tuple[socketserver.BaseServer, str]:
    server: socketserver.BaseServer
    if socket_dir is not None:
        path = socket_dir / "docker.sock"
        server = _UnixServer(str(path), _handler(engine))
        host = f"unix://{path}"
    else:
        server = _TcpServer(("127.0.0.1", 0), _handler(engine))
        host = f"tcp://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, host


def adopt(host: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = cli.main(["adopt", "--stack", "dev", "--docker-host", host, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def config_lines(out: str) -> dict[str, str]:
    """`pulumi config set --stack dev --path KEY VALUE` lines (no secrets) as {KEY: VALUE}."""
    found = re.findall(r"^pulumi config set --stack dev --path (\S+) (\S+)$", out, re.MULTILINE)
    return dict(found)


# What the fixtures hold, written out by hand: the seed's six data volumes, by the catalog
# volume each is mounted at.
SEED_VOLUMES = {
    "services.postgres.volumes.data.existing": "optiinfra_postgres_data",
    "services.clickhouse.volumes.data.existing": "optiinfra_clickhouse_data",
    "services.redis.volumes.data.existing": "optiinfra_redis_data",
    "services.qdrant.volumes.storage.existing": "optiinfra_qdrant_data",
    "services.prometheus.volumes.data.existing": "optiinfra_prometheus_data",
    "services.grafana.volumes.data.existing": "optiinfra_grafana_data",
}


@pytest.fixture
def seed_engine(socket_dir: Path) -> Iterator[tuple[FakeEngine, str]]:
    engine = FakeEngine(recorded())
    server, host = serve(engine, socket_dir)
    yield engine, host
    server.shutdown()
    server.server_close()


def test_adopt_maps_the_seed_deployment_onto_the_catalog(seed_engine: tuple[FakeEngine, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    engine, host = seed_engine
    code, out, err = adopt(host, capsys)
    assert config_lines(out) == SEED_VOLUMES
    # 20 containers of the project (the seed's 19 and pgAdmin); the other project's are left out.
    assert f"Compose project optiinfra on {host}: 20 containers" in out
    assert "other-web-1" not in out and "other_db" not in out and "other_default" not in out
    for name in ("optiinfra-postgres", "optiinfra-data-collector-beat", "optiinfra-portal"):
        assert re.search(rf"^  {name} +-> {name.removeprefix('optiinfra-')} ", out, re.MULTILINE), name
    # Nothing it cannot match is adopted, and each is reported.
    assert "warning: container optiinfra-pgadmin (compose service pgadmin) runs no catalog service" in out
    assert re.search(r"warning: volume optiinfra_clickhouse_logs is mounted by optiinfra-clickhouse at "
                     r"/var/log/clickhouse-server, where clickhouse keeps no catalog volume", out)
    assert "warning: volume optiinfra_uploads (compose volume uploads) is mounted by no container" in out
    assert "warning: volume optiinfra_pgadmin_data (compose volume pgadmin_data) is mounted by no container" in out
    # The compose postgres keeps its cluster at the volume's root; the catalog's PGDATA is a
    # subdirectory, so the new container would initialise an empty cluster beside the data.
    assert ("error: postgres: the catalog sets PGDATA=/var/lib/postgresql/data/pgdata, the compose container has "
            "PGDATA=/var/lib/postgresql/data") in out
    assert "docker run --rm -v optiinfra_postgres_data:/v alpine sh -c 'cd /v && mkdir pgdata" in out
    # Stop compose keeping the volumes; never `down -v`.
    assert "docker compose -p optiinfra down\n" in out and "never `down -v`" in out
    assert out.index("--secret postgresPassword") < out.index("docker compose -p optiinfra down")
    assert "python -m infra backup --stack dev" in out
    # Default credentials: named by their config key, rotated as secrets, never echoed.
    assert "postgres: POSTGRES_PASSWORD is a well-known default" in out
    assert "grafana: GF_SECURITY_ADMIN_PASSWORD is a well-known default" in out
    assert "redis: REDIS_PASSWORD is not set" in out
    for key in ("postgresPassword", "grafanaAdminPassword", "redisPassword", "clickhousePassword", "qdrantApiKey"):
        assert f"pulumi config set --stack dev --secret {key} " in out, key
    for leaked in ("POSTGRES_PASSWORD=", "GF_SECURITY_ADMIN_PASSWORD=", ":password@", "PGADMIN_DEFAULT_PASSWORD"):
        assert leaked not in out, leaked
    # A plain setting the adopted data was made with, where the catalog's differs.
    assert ("note: grafana: the catalog sets GF_SECURITY_ADMIN_USER=optiinfra-admin, the compose container has "
            "GF_SECURITY_ADMIN_USER=admin") in out
    # The catalog runs postgres as uid 999, compose's alpine image as 70: the files change owner.
    assert "docker run --rm -v optiinfra_postgres_data:/v alpine chown -R 999:999 /v" in out
    assert "optiinfra_qdrant_data:/v alpine chown" not in out  # qdrant runs as the image's user on Docker
    pg_image = default_catalog().services["postgres"].image
    assert f"note: postgres: compose runs postgres:15-alpine, the program runs {pg_image} on the same data" in out
    assert "flowerPassword" in out  # Flower takes it inside FLOWER_BASIC_AUTH: rotated all the same
    assert code == 1 and "4 not matched, 1 to fix before `pulumi up`" in err
    # Read-only: GET requests only, of the four answers (inspecting each catalog container).
    assert {m for m, _ in engine.requests} == {"GET"}
    paths = {urllib.parse.urlsplit(t).path for _, t in engine.requests}
    assert {"/containers/json", "/volumes", "/networks"} <= paths
    assert ("GET", "/containers/json?all=1") in engine.requests
    inspected = {p for p in paths if p.endswith("/json") and p != "/containers/json"}
    assert len(inspected) == 19  # the seed's 19; pgAdmin runs no catalog service


def test_the_printed_config_mounts_the_compose_volumes(seed_engine: tuple[FakeEngine, str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The lines adopt prints are valid stack config: dev then reads those six volumes
    (never creates them) and each container mounts its own at the catalog path."""
    _, host = seed_engine
    _, out, _ = adopt(host, capsys)
    sets = [f"{k}={v}" for k, v in config_lines(out).items()]
    r = offline.render("dev", sets)
    assert {x.id for x in r.reads} == set(SEED_VOLUMES.values())
    # No data volume is created; only the stores' client-credential files are new (the compose
    # deployment had none: a rotation applies them in the running store, docs/credentials.md).
    assert sorted(v.name for v in r.of_type("docker:index/volume:Volume")) == [
        "postgres-client-credentials", "redis-client-credentials"]
    # The policy pack passes it: the reads are no resources the program manages.
    assert cli.main(["check", "--stack", "dev", *(a for s in sets for a in ("--set", s))]) == 0
    postgres = r.by_name("docker:index/container:Container", "postgres")
    assert {"containerPath": "/var/lib/postgresql/data",
            "volumeName": "optiinfra_postgres_data"} in postgres.inputs["volumes"]
    assert not any(v.get("volumeName", "").startswith("optiinfra-postgres-data") for v in postgres.inputs["volumes"])


def _fully_adoptable() -> dict[str, Any]:
    """The seed's deployment without what cannot be matched, and with postgres's data in the
    subdirectory the catalog uses."""
    answers = copy.deepcopy(recorded())
    answers["containers"] = [c for c in answers["containers"] if c["Names"] != ["/optiinfra-pgadmin"]]
    answers["volumes"]["Volumes"] = [v for v in answers["volumes"]["Volumes"]
                                     if v["Name"] not in ("optiinfra_uploads", "optiinfra_pgadmin_data",
                                                          "optiinfra_clickhouse_logs")]
    for c in [*answers["containers"], *answers["inspect"].values()]:
        c["Mounts"] = [m for m in c["Mounts"] if m.get("Name") != "optiinfra_clickhouse_logs"]
    env = answers["inspect"]["optiinfra-postgres"]["Config"]["Env"]
    env[env.index("PGDATA=/var/lib/postgresql/data")] = "PGDATA=/var/lib/postgresql/data/pgdata"
    return answers


def test_a_deployment_it_matches_entirely_exits_0_over_tcp(capsys: pytest.CaptureFixture[str]) -> None:
    engine = FakeEngine(_fully_adoptable())
    server, host = serve(engine, None)
    try:
        code, out, err = adopt(host, capsys)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0, err
    assert config_lines(out) == SEED_VOLUMES
    assert "warning:" not in out and "error:" not in out
    # Still: the credentials are the compose file's defaults.
    assert "postgres: POSTGRES_PASSWORD is a well-known default" in out


def test_without_an_engine_it_says_where_it_looked(socket_dir: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    missing = socket_dir / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{missing}")
    code = cli.main(["adopt", "--stack", "dev"])  # DOCKER_HOST, as the docker CLI reads it
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert f"error: there is no Docker engine socket at {missing}" in err
    assert "Traceback" not in err


def test_an_engine_without_the_project_is_an_error(seed_engine: tuple[FakeEngine, str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    engine, host = seed_engine
    engine.answers["containers"] = [c for c in engine.answers["containers"] if not c["Names"][0].startswith("/opti")]
    code, out, err = adopt(host, capsys, "--project", "elsewhere")
    assert code == 1 and out == ""
    assert "no container or volume of compose project elsewhere" in err and "--project" in err


def test_a_kubernetes_stack_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["adopt", "--stack", "prod", "--docker-host", "unix:///nonexistent/docker.sock"])
    err = capsys.readouterr().err
    assert code == 2
    assert "stack prod deploys to kubernetes" in err and "Fix:" in err
