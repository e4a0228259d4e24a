"""The prober: probe edges in the model, its rendered modules run by the real blackbox exporter.

The blackbox exporter is built from its Go module (github.com/prometheus/blackbox_exporter
v0.25.0, the catalog image's version) by scripts/tools.sh and run on 127.0.0.1 with the module
file the dev stack renders (read from the offline render, not rewritten here), against a
stand-in health endpoint (http.server on 127.0.0.1) that answers with the seed's health table
bodies, a wrong body, a wrong status, or not at all (a closed port).
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from infra import probes
from infra import stack as infra_stack
from infra.graph import EdgeKind, startup_order
from infra.model import HttpCheck, probed_check
from tests.conftest import render
from tests.test_alerts import generated

from .tools import free_port, go_tool, stop_process, unavailable

# The seed's health table (shared/seed/services-and-ports.md), written out here.
SEED_BODY = {"orchestrator": '{"status":"ok"}', "data-collector": '{"status":"healthy"}',
             "cost-agent": '{"status":"healthy"}', "clickhouse": "Ok."}


# ---- the model ------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_service_with_a_port_is_probed_without_any_order(stack: str) -> None:
    model = infra_stack.model_of(stack)
    prober = model.prober()
    assert prober is not None
    probed = {e.target for e in model.probe_edges()}
    with_ports = {n for n, e in model.services.items() if e.service.ports and n != prober.name}
    # A UI behind the sign-in proxy (prod: Grafana) is not probed: only the proxy and
    # Prometheus may reach its web port. On dev nothing fronts it, so it is probed.
    behind_proxy = {"dev": set(), "prod": {"grafana"}}[stack]
    assert {n for n, e in model.services.items() if e.via} == behind_proxy
    assert probed == with_ports - behind_proxy
    assert all(e.source == prober.name and not e.wait and e.kind is EdgeKind.PROBE for e in model.probe_edges())
    # The prober's tier starts before core, agents and frontend: a probe never makes it wait.
    assert model.waits_for(prober.name) == []
    order = startup_order(model)
    assert order.index(prober.name) < order.index("orchestrator")


def test_the_probe_reads_the_catalogs_health_check() -> None:
    model = infra_stack.model_of("dev")
    for name in SEED_BODY:
        check = probed_check(model.services[name].service)
        expect = getattr(check, "expect", None)
        assert expect and expect in SEED_BODY[name], name  # the body must contain it


def test_probe_jobs_and_modules_are_rendered_for_every_probed_service() -> None:
    r = render("dev")
    modules = yaml.safe_load(generated(r, "config.yml"))["modules"]
    jobs = {j["job_name"]: j for j in yaml.safe_load(generated(r, "prometheus.yml"))["scrape_configs"]}
    for e in r.model.probe_edges():
        job = jobs[f"probe-{e.target}"]
        assert job["static_configs"][0]["labels"]["service"] == e.target
        assert job["params"]["module"][0] in modules
        assert job["relabel_configs"][-1]["replacement"].startswith(f"{r.model.prober().name}:")  # type: ignore[union-attr]


# ---- the real exporter ----------------------------------------------------------------------

class _Stand:
    status, body = 200, ""


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        data = _Stand.body.encode()
        self.send_response(_Stand.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _serving(server: socketserver.TCPServer) -> Iterator[int]:
    """Serve on `server` (bound to 127.0.0.1) in a thread; its port; shut down and joined after."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def stand_in() -> Iterator[int]:
    with _serving(ThreadingHTTPServer(("127.0.0.1", 0), _Handler)) as port:
        yield port


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    with _running(generated(render("dev"), "config.yml")) as base:  # the rendered file, as the container gets it
        yield base


@contextlib.contextmanager
def _running(modules: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """The real blackbox exporter on 127.0.0.1 with these modules; stopped on the way out."""
    tool = go_tool("blackbox_exporter")
    if isinstance(tool, str):
        unavailable(tool)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yml"
        config.write_text(modules)
        port = free_port()
        proc = subprocess.Popen([str(tool), f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, **(env or {})})
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/-/healthy", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                    pytest.fail(f"blackbox_exporter did not come up on {base}: {err[-2000:]}")
                time.sleep(0.2)
            yield base
        finally:
            stop_process(proc)


def _probe(base: str, module: str, target: str) -> float:
    return _probe_metrics(base, module, target)["probe_success"]


def _probe_metrics(base: str, module: str, target: str) -> dict[str, float]:
    url = f"{base}/probe?module={module}&target={urllib.parse.quote(target, safe='')}"
    with urllib.request.urlopen(url, timeout=15) as resp:
        text = resp.read().decode()
    out = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
           if line and not line.startswith("#") and "{" not in line.split()[0]}
    assert "probe_success" in out, f"no probe_success in {text[:500]}"
    return out


@pytest.mark.parametrize("service", sorted(SEED_BODY))
def test_http_probe_succeeds_on_the_seeds_body_and_fails_otherwise(service: str, exporter: str,
                                                                   stand_in: int) -> None:
    model = infra_stack.model_of("dev")
    check = probed_check(model.services[service].service)
    assert isinstance(check, HttpCheck), f"{service}: the seed lists an HTTP health endpoint"
    path = check.path
    module = f"http_{service}"
    target = f"http://127.0.0.1:{stand_in}{path}"
    _Stand.status, _Stand.body = 200, SEED_BODY[service]
    assert _probe(exporter, module, target) == 1
    _Stand.status, _Stand.body = 200, '{"status":"starting"}'
    assert _probe(exporter, module, target) == 0, "wrong body"
    _Stand.status, _Stand.body = 503, SEED_BODY[service]
    assert _probe(exporter, module, target) == 0, "wrong status"
    closed = free_port()
    _Stand.status, _Stand.body = 200, SEED_BODY[service]
    assert _probe(exporter, module, f"http://127.0.0.1:{closed}{path}") == 0, "closed port"


def test_json_spacing_does_not_fail_the_body_check(exporter: str, stand_in: int) -> None:
    # Grafana answers pretty-printed JSON; the seed writes {"database":"ok"}.
    _Stand.status, _Stand.body = 200, '{\n  "database": "ok",\n  "version": "12.4.5"\n}'
    assert _probe(exporter, "http_grafana", f"http://127.0.0.1:{stand_in}/api/health") == 1
    _Stand.body = '{"database": "failing"}'
    assert _probe(exporter, "http_grafana", f"http://127.0.0.1:{stand_in}/api/health") == 0


def test_tcp_probe_succeeds_on_a_listener_and_fails_on_a_closed_port(exporter: str, stand_in: int) -> None:
    assert _probe(exporter, "tcp_connect", f"127.0.0.1:{stand_in}") == 1
    assert _probe(exporter, "tcp_connect", f"127.0.0.1:{free_port()}") == 0


# ---- the public hosts' TLS probe --------------------------------------------------------------

def test_each_public_host_gets_a_tls_probe_on_kubernetes_and_docker_none() -> None:
    r = render("prod")
    tls = r.model.tls_hosts()
    assert {e.name for e in tls} == set(r.model.settings.kubernetes.ingress.hosts) == {"portal", "grafana"}
    module = yaml.safe_load(generated(r, "config.yml"))["modules"][probes.TLS_MODULE]
    assert module["prober"] == "tcp" and module["tcp"]["tls"] is True
    assert "server_name" not in str(module)  # the exporter sends the target's host and verifies it
    jobs = {j["job_name"]: j for j in yaml.safe_load(generated(r, "prometheus.yml"))["scrape_configs"]}
    for e in tls:
        job = jobs[f"tls-{e.name}"]
        assert job["params"]["module"] == [probes.TLS_MODULE]
        assert job["static_configs"][0]["targets"] == [f"{r.model.settings.kubernetes.ingress.hosts[e.name]}:443"]
        assert job["static_configs"][0]["labels"]["service"] == e.name
    # Docker: no public host, so no module, no job, no egress out of the host's networks.
    dev = render("dev")
    assert dev.model.tls_hosts() == []
    assert probes.TLS_MODULE not in yaml.safe_load(generated(dev, "config.yml"))["modules"]
    assert not [j for j in yaml.safe_load(generated(dev, "prometheus.yml"))["scrape_configs"]
                if j["job_name"].startswith("tls-")]
    prober = dev.model.prober()
    assert prober is not None and dev.model.outside(prober) == ()


class _Quiet(socketserver.BaseRequestHandler):
    def handle(self) -> None:  # the handshake (if any) is done on accept; then close
        pass


class _TlsServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    context: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, object]:
        conn, addr = super().get_request()
        if self.context is not None:
            conn.settimeout(5)
            conn = self.context.wrap_socket(conn, server_side=True)  # a failed handshake: OSError, dropped
        return conn, addr


@contextlib.contextmanager
def _listener(context: ssl.SSLContext | None) -> Iterator[int]:
    server = _TlsServer(("127.0.0.1", 0), _Quiet)
    server.context = context
    with _serving(server) as port:
        yield port


def test_the_rendered_tls_module_reads_the_certificates_expiry_and_fails_without_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "3", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    end = subprocess.run(["openssl", "x509", "-enddate", "-noout", "-in", str(cert)],
                         check=True, capture_output=True, text=True, timeout=30).stdout.strip()
    not_after = ssl.cert_time_to_seconds(end.removeprefix("notAfter="))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    modules = generated(render("prod"), "config.yml")  # the rendered file, as the container gets it
    # The exporter verifies the chain against the system roots: here, the test's own certificate.
    with _running(modules, {"SSL_CERT_FILE": str(cert)}) as base, _listener(context) as tls_port, \
            _listener(None) as plain_port:
        got = _probe_metrics(base, probes.TLS_MODULE, f"127.0.0.1:{tls_port}")
        assert got["probe_success"] == 1
        assert abs(got["probe_ssl_earliest_cert_expiry"] - not_after) < 60
        assert 2 * 86400 < got["probe_ssl_earliest_cert_expiry"] - time.time() <= 3 * 86400
        plain = _probe_metrics(base, probes.TLS_MODULE, f"127.0.0.1:{plain_port}")
        assert plain["probe_success"] == 0 and "probe_ssl_earliest_cert_expiry" not in plain
