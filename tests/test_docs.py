"""`python -m infra docs`: generated inventory and topology, deterministic and checked."""

from __future__ import annotations

import functools
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from infra import cli, docs
from infra.catalog import default_catalog

SVG = "{http://www.w3.org/2000/svg}"


@functools.lru_cache(maxsize=4)
def generated(moved_grafana: bool = False) -> dict[str, str]:
    catalog = None
    if moved_grafana:
        catalog = default_catalog()
        g = catalog.services["grafana"]
        catalog.services["grafana"] = replace(g, ports=(replace(g.ports[0], container=3005),))
    return docs.files(["dev", "prod"], catalog)


def test_files_are_one_markdown_and_an_svg_per_stack() -> None:
    assert set(generated()) == {"docs/PORTS.md", "docs/topology-dev.svg", "docs/topology-prod.svg"}


def test_regenerated_identically() -> None:
    assert docs.files(["dev", "prod"]) == generated()


def test_committed_docs_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    # The README's test command runs this: the committed docs cannot drift from the catalog.
    assert cli.main(["docs", "--check"]) == 0, capsys.readouterr().err


def test_check_fails_after_a_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["docs", "--stack", "dev", "--root", str(tmp_path)]
    assert cli.main(args) == 0
    assert cli.main([*args, "--check"]) == 0
    ports = tmp_path / "docs" / "PORTS.md"
    written = ports.read_text()
    ports.write_text(written.replace("web 3000 → 127.0.0.1:3000", "web 3000 → 127.0.0.1:3100"))
    capsys.readouterr()
    assert cli.main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert "docs/PORTS.md" in err and "python -m infra docs" in err
    assert "-| grafana | `optiinfra-grafana` | web 3000 → 127.0.0.1:3100" in err  # the diff shows the line
    ports.write_text(written)
    assert cli.main([*args, "--check"]) == 0
    (tmp_path / "docs" / "topology-dev.svg").unlink()
    assert cli.main([*args, "--check"]) == 1


def test_a_catalog_change_changes_the_docs() -> None:
    before, after = generated(), generated(moved_grafana=True)
    assert before["docs/PORTS.md"] != after["docs/PORTS.md"]
    assert "web 3005 → 127.0.0.1:3000" in after["docs/PORTS.md"]
    assert "portal -->|3005| grafana" in after["docs/PORTS.md"]
    assert before["docs/topology-dev.svg"] != after["docs/topology-dev.svg"]


def test_ports_md_content() -> None:
    md = generated()["docs/PORTS.md"]
    dev, prod = md.split("## Stack `prod` (Kubernetes)")
    assert "## Stack `dev` (Docker)" in dev
    # Services by tier, with ports, health and dependencies.
    assert "#### 1. databases · network `optiinfra-databases` (internal: no egress)" in dev
    assert ("| portal | `optiinfra-portal` | http 3000 → 127.0.0.1:3001 | GET `/` on http (3000) | "
            "orchestrator:8080, data-collector:8005, grafana:3000 | Web UI (Next.js) |") in dev
    assert "| postgres | `optiinfra-postgres` | postgres 5432 (not published) |" in dev
    assert "`sh -c 'redis-cli ping | grep -q PONG'`".replace("|", "\\|") in dev
    # Port allocation by band: ClickHouse HTTP sits outside the metrics band.
    assert "| metrics | 9000–9999 | 8123 | clickhouse · http | 8123 | not published · outside the band" in dev
    assert "| monitoring | 3000–5999 | 3001 | portal · http | 3000 | published on 127.0.0.1:3001 |" in dev
    # Quick access, from the stack outputs.
    assert "| portal | <http://localhost:3001> | Web UI (Next.js) |" in dev
    assert "- postgres: `postgresql://optiinfra:<postgresPassword>@postgres:5432/optiinfra`" in dev
    # Mermaid: dependency and scrape edges.
    assert "```mermaid\nflowchart TB" in dev
    assert "  portal -->|3000| grafana" in dev and "  prometheus -.->|scrape 8001| cost_agent" in dev
    # Kubernetes: namespaces, workloads, Ingress URLs, no host ports.
    assert "#### 4. agents · namespace `optiinfra-agents`" in prod
    assert "Deployment `cost-agent-aws`" in prod and "StatefulSet `postgres`" in prod
    assert "| portal | <https://portal.optiinfra.example.com> | Web UI (Next.js) |" in prod
    assert "127.0.0.1:" not in prod
    # No secret values, only the names of the secrets.
    assert "generated-" not in md and "offline-stand-in" not in md


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_svg_topology(stack: str) -> None:
    svg = generated()[f"docs/topology-{stack}.svg"]
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    # Five tiers, each with its network/namespace, and 19 boxes named after the services.
    for tier in ("databases", "monitoring", "core", "agents", "frontend"):
        assert any(t and t.endswith(f". {tier}") for t in texts)
        assert f"{'namespace' if stack == 'prod' else 'network'} optiinfra-{tier}" in texts
    services = set(default_catalog().services)
    assert services <= set(texts)
    boxes = [r for r in root.iter(f"{SVG}rect") if r.get("width") == str(docs.BOX_W)]
    assert len(boxes) == 19
    # 26 dependency edges in the catalog (grafana 1, flower 1, exporters 3, orchestrator 2,
    # data-collector 3, worker 3, beat 1, agents 4x2 + qdrant 1, portal 3).
    edges = [p for p in root.iter(f"{SVG}path") if (p.get("marker-end") or "").startswith("url(#arrow-")]
    assert len(edges) == 26 + 1  # plus the legend's arrow
    if stack == "dev":
        assert "3000 → 127.0.0.1:3001" in texts  # portal's published port


@pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="rsvg-convert is not installed")
def test_svg_renders(tmp_path: Path) -> None:
    src = tmp_path / "t.svg"
    src.write_text(generated()["docs/topology-dev.svg"])
    out = tmp_path / "t.png"
    subprocess.run(["rsvg-convert", str(src), "-o", str(out)], check=True, capture_output=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
