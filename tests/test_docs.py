"""`python -m infra docs`: generated inventory and topology, deterministic and checked."""

from __future__ import annotations

import ast
import functools
import json
import re
import shutil
import subprocess
import typing
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import BaseModel

from infra import cli, docs
from infra import settings as settings_module
from infra.catalog import default_catalog
from infra.docs import dashboard, layout, settings_table, topology
from infra.docs.dashboard import GRID_COL_W, GRID_PAD, GRID_ROW_H, GRID_TOP
from infra.docs.svg import MARGIN
from infra.model import Credential
from infra.settings import Budget, Images, Ingress, ServiceOverride, Settings
from infra.stack import ROOT, model_of
from policies.optiinfra_policies import vocabulary

from .conftest import render
from .test_alerts import generated as provisioned

SVG = "{http://www.w3.org/2000/svg}"


@functools.lru_cache(maxsize=4)
def generated(moved_grafana: bool = False) -> dict[str, str]:
    catalog = None
    if moved_grafana:
        catalog = default_catalog()
        g = catalog.services["grafana"]
        catalog.services["grafana"] = replace(g, ports=(replace(g.ports[0], container=3005),))
    return docs.files(["dev", "prod"], catalog)


def test_files_are_the_inventory_the_settings_and_an_svg_per_stack() -> None:
    assert set(generated()) == {"docs/PORTS.md", "docs/settings.md", "docs/REVIEW.md", "docs/topology-dev.svg",
                                "docs/topology-prod.svg", "docs/dashboard-overview.svg"}


def test_review_lists_every_accepted_finding_with_its_reason() -> None:
    """REVIEW.md is what the skip annotations say: one row per accepted check, each with a reason."""
    text = generated()["docs/REVIEW.md"]
    r = render("prod")
    skips = [(m.name, str(v)) for m in r.resources if m.type in ("kubernetes:apps/v1:Deployment",
                                                                  "kubernetes:apps/v1:StatefulSet")
             for k, v in ((m.inputs.get("metadata") or {}).get("annotations") or {}).items()
             if k.startswith("checkov.io/skip")]
    assert skips
    for workload, skip in skips:
        check, reason = skip.split("=", 1)
        assert f"| {workload} | checkov | `{check}` | {reason} |" in text
    assert "| clickhouse | the image's entrypoint takes the user's password from CLICKHOUSE_PASSWORD only |" in text
    assert "| postgres | " not in text.split("Secrets still delivered")[1]  # a file now


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
    # Five tiers, each with its network/namespace, and 20 boxes named after the services.
    for tier in ("databases", "monitoring", "core", "agents", "frontend"):
        assert any(t and t.endswith(f". {tier}") for t in texts)
        assert f"{'namespace' if stack == 'prod' else 'network'} optiinfra-{tier}" in texts
    # The sign-in proxy and kube-state-metrics run on Kubernetes only: prod draws them, dev does not;
    # the Pushgateway runs only where drills push to it (Kubernetes with backups.store, which
    # Pulumi.prod.yaml sets, Pulumi.dev.yaml not).
    drills = model_of(stack).settings.backups.store is not None
    assert drills is (stack == "prod")
    services = {n for n, s in default_catalog().services.items()
                if (stack == "prod" or not (s.authenticator or s.kubernetes_only)) and (drills or not s.push_gateway)}
    assert services <= set(texts)
    gateways = {n for n, s in default_catalog().services.items() if s.push_gateway}
    assert gateways and (gateways <= set(texts)) is drills
    boxes = [r for r in root.iter(f"{SVG}rect") if r.get("width") == str(topology.BOX_W)]
    assert len(boxes) == len(services)
    # 27 dependency edges in the catalog (prometheus 1, grafana 1, flower 1, exporters 3, orchestrator 2,
    # data-collector 3, worker 3, beat 1, agents 4x2 + qdrant 1, portal 3); on prod the proxy's to
    # Grafana replaces the portal's (the portal embeds Grafana through its public URL).
    edges = [p for p in root.iter(f"{SVG}path") if p.get("class") == "edge"]
    # dev: the 27 (no proxy); prod: 27 + the proxy's 1 - the portal's to Grafana = 27.
    assert len(edges) == 27
    if stack == "dev":
        assert "3000 → 127.0.0.1:3001" in texts  # portal's published port


def _points(d: str, steps: int = 40) -> list[tuple[float, float]]:
    """Points along an SVG path of absolute M, L and C commands (what the topology writes)."""
    tokens = re.findall(r"[MLC]|-?\d+(?:\.\d+)?", d)
    points: list[tuple[float, float]] = []
    pen = (0.0, 0.0)
    i = 0
    while i < len(tokens):
        cmd = tokens[i]
        i += 1
        count = {"M": 1, "L": 1, "C": 3}[cmd]
        xy = [(float(tokens[i + 2 * k]), float(tokens[i + 2 * k + 1])) for k in range(count)]
        i += 2 * count
        if cmd == "M":
            pen = xy[0]
            points.append(pen)
            continue
        (x0, y0) = pen
        for n in range(1, steps + 1):
            t = n / steps
            if cmd == "L":
                points.append((x0 + (xy[0][0] - x0) * t, y0 + (xy[0][1] - y0) * t))
            else:
                (ax, ay), (bx, by), (cx, cy) = xy
                u = 1 - t
                points.append((u**3 * x0 + 3 * u * u * t * ax + 3 * u * t * t * bx + t**3 * cx,
                               u**3 * y0 + 3 * u * u * t * ay + 3 * u * t * t * by + t**3 * cy))
        pen = xy[-1]
    return points


def _rgb(color: str) -> tuple[int, int, int]:
    assert re.fullmatch(r"#[0-9a-f]{6}", color), color
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_svg_edges_are_drawn_over_the_boxes_and_never_through_one(stack: str) -> None:
    root = ET.fromstring(generated()[f"docs/topology-{stack}.svg"])
    order = list(root.iter())
    boxes = [e for e in order if e.get("class") == "box"]
    edges = [e for e in order if e.get("class") == "edge"]
    assert boxes and edges
    # Drawn after every box: painted on top, so no box hides an edge.
    assert max(order.index(b) for b in boxes) < min(order.index(e) for e in edges)
    rects = [(float(b.get("x", 0)), float(b.get("y", 0)), float(b.get("width", 0)), float(b.get("height", 0)))
             for b in boxes]
    for edge in edges:
        points = _points(edge.get("d", ""))
        for px, py in points:
            inside = [r for r in rects if r[0] + 1 < px < r[0] + r[2] - 1 and r[1] + 1 < py < r[1] + r[3] - 1]
            assert not inside, f"edge {edge.get('d')} runs through the box at {inside[0][:2]}"
        # It starts and ends (the arrowhead's tip) on a box's border.
        for px, py in (points[0], points[-1]):
            assert any(r[0] <= px <= r[0] + r[2] and py in (r[1], r[1] + r[3]) for r in rects), (px, py)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_svg_legend_colours_are_distinct_and_are_the_edge_colours(stack: str) -> None:
    root = ET.fromstring(generated()[f"docs/topology-{stack}.svg"])
    legend = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "legend")
    arrows = [p.get("stroke", "") for p in legend.iter(f"{SVG}path") if p.get("class") == "legend-edge"]
    marks = [c.get("fill", "") for c in legend.iter(f"{SVG}circle") if c.get("class") == "legend-mark"]
    used = {p.get("stroke") for p in root.iter(f"{SVG}path") if p.get("class") == "edge"}
    assert len(arrows) == len(set(arrows)) and set(arrows) == used
    # Every colour that means something different in the legend is far from every other one
    # (the scrape mark was once an orange next to the monitoring tier's).
    meaning = arrows + marks
    for i, a in enumerate(meaning):
        for b in meaning[i + 1:]:
            distance = sum((p - q) ** 2 for p, q in zip(_rgb(a), _rgb(b), strict=True)) ** 0.5
            assert distance >= 60, (a, b, distance)
    # The arrowhead of each colour is that colour, and the boxes use the legend's scrape mark.
    heads = {m.get("id"): m.find(f"{SVG}path").get("fill") for m in root.iter(f"{SVG}marker")}  # type: ignore[union-attr]
    for p in root.iter(f"{SVG}path"):
        if p.get("class") in ("edge", "legend-edge"):
            assert heads[(p.get("marker-end") or "")[5:-1]] == p.get("stroke")
    (mark,) = marks
    assert any(c.get("fill") == mark for c in root.iter(f"{SVG}circle") if c.get("class") != "legend-mark")


@pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="rsvg-convert is not installed")
@pytest.mark.parametrize("name", ["docs/topology-dev.svg", "docs/dashboard-overview.svg"])
def test_svg_renders(tmp_path: Path, name: str) -> None:
    src = tmp_path / "t.svg"
    src.write_text(generated()[name])
    out = tmp_path / "t.png"
    subprocess.run(["rsvg-convert", str(src), "-o", str(out)], check=True, capture_output=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- docs/dashboard-overview.svg ----------------------------------------------------------------------

def _overview_board() -> dict[str, typing.Any]:
    """The overview JSON Grafana is provisioned with in prod (the ConfigMap's file, not the generator)."""
    return typing.cast(dict[str, typing.Any], json.loads(provisioned(render("prod"), "overview.json")))


def _panel_groups(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)  # parses as XML (text escaped)
    assert root.tag == f"{SVG}svg"
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "panel"]
    by_id = {str(g.get("id")): g for g in groups}
    assert len(by_id) == len(groups)
    return by_id


def test_overview_svg_draws_every_panel_of_the_provisioned_json_at_its_grid_position() -> None:
    board = _overview_board()
    svg = generated()["docs/dashboard-overview.svg"]
    groups = _panel_groups(svg)
    assert set(groups) == {f"panel-{p['id']}" for p in board["panels"]}  # none missing, none extra
    for p in board["panels"]:
        g = groups[f"panel-{p['id']}"]
        rects = g.findall(f"{SVG}rect")
        titles = [t for t in g.findall(f"{SVG}text") if t.get("class") == "title"]
        assert len(rects) == 1 and len(titles) == 1, p
        rect, grid = rects[0], p["gridPos"]
        # Proportional to gridPos: a column is GRID_COL_W px, a height unit GRID_ROW_H px (inset by GRID_PAD).
        x0, y0 = MARGIN + GRID_PAD, GRID_TOP + GRID_PAD
        assert float(rect.get("x", "")) - x0 == pytest.approx(grid["x"] * GRID_COL_W), p
        assert float(rect.get("y", "")) - y0 == pytest.approx(grid["y"] * GRID_ROW_H), p
        assert float(rect.get("width", "")) + 2 * GRID_PAD == pytest.approx(grid["w"] * GRID_COL_W), p
        assert float(rect.get("height", "")) + 2 * GRID_PAD == pytest.approx(grid["h"] * GRID_ROW_H), p
        texts = [t.text for t in g.iter(f"{SVG}text")]
        assert p["type"] in texts, p
        label = titles[0].text or ""
        if p["title"]:
            assert label == p["title"], p
        else:  # an untitled note: the start of what it says
            assert label and p["options"]["content"].startswith(label.rstrip("…")), p
    root = ET.fromstring(svg)
    assert board["title"] in (root.findtext(f"{SVG}title") or "") and board["uid"] in svg
    assert int(root.get("width", "")) == 2 * MARGIN + 24 * GRID_COL_W  # Grafana's 24 columns
    rows = [g for g in groups.values() if "row" in [t.text for t in g.iter(f"{SVG}text")]]
    assert [t.text for g in rows for t in g.iter(f"{SVG}text") if t.get("class") == "title"] == [
        p["title"] for p in board["panels"] if p["type"] == "row"]  # the sections, in order


def test_overview_svg_fails_when_a_panel_is_missing() -> None:
    """The check above catches a picture that lost a panel: cut one panel's group out of the
    committed-to-be SVG and the drawn ids no longer match the JSON's."""
    board = _overview_board()
    svg = generated()["docs/dashboard-overview.svg"]
    victim = f"panel-{board['panels'][4]['id']}"
    cut = re.sub(rf'<g class="panel" id="{victim}">.*?</g>\n', "", svg, flags=re.DOTALL)
    assert cut != svg
    assert {f"panel-{p['id']}" for p in board["panels"]} - set(_panel_groups(cut)) == {victim}


def test_overview_svg_escapes_text_and_is_deterministic() -> None:
    board = _overview_board()
    odd = {**board, "title": "A <b> & 'c'", "panels": [{**board["panels"][1], "title": "x < y & z"}]}
    svg = dashboard.overview_svg("prod", odd)
    root = ET.fromstring(svg)
    assert "x &lt; y &amp; z" in svg and [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "title"] == [
        "x < y & z"]
    assert dashboard.overview_svg("prod", odd) == svg


def test_the_overview_drawn_is_the_same_in_every_stack() -> None:
    """The caption names prod; the picture holds for dev and staging as long as their overview is prod's."""
    prod = provisioned(render("prod"), "overview.json")
    for stack in ("dev", "staging"):
        assert provisioned(render(stack), "overview.json") == prod, stack


# ---- docs/settings.md ---------------------------------------------------------------------------------

def _rows() -> dict[str, list[str]]:
    """The settings table of the generated file: key -> [type, default, description]."""
    out = {}
    for line in generated()["docs/settings.md"].splitlines():
        m = re.fullmatch(r"\| `([^`]+)` \| (.*?) \| (.*?) \| (.*) \|", line)
        if m:
            out[m.group(1)] = [m.group(2), m.group(3), m.group(4)]
    return out


def _settings_models() -> list[type[BaseModel]]:
    """Every settings model infra/settings.py defines, found without the generator's walk."""
    return [m for m in vars(settings_module).values() if isinstance(m, type) and issubclass(m, BaseModel)
            and m.__module__ == settings_module.__name__ and m.model_fields]


def test_settings_table_has_every_field_with_its_docstring() -> None:
    rows = _rows()
    models = _settings_models()
    assert {Settings, ServiceOverride, Images, Budget, Ingress} <= set(models)
    for model in models:
        for name, field in model.model_fields.items():
            alias = field.alias or name
            # A map's row ends in its placeholder (`services.<name>`, `...volumes.<volume>`).
            bare = {k: re.sub(r"\.<\w+>$", "", k) for k in rows}
            keys = [k for k in rows if bare[k] == alias or bare[k].endswith("." + alias)]
            assert keys, f"{model.__name__}.{name} ({alias}) is missing from docs/settings.md"
            if _model_of(field.annotation):
                continue  # a section: its row carries the model's docstring
            description = " ".join((field.description or "").split()) or "–"
            assert description.replace("|", "\\|") in [rows[k][2] for k in keys], f"{model.__name__}.{name}"
    assert rows["services.<name>.hostPort"][:2] == ["integer", "unset"]
    assert rows["budget.nodes"][:2] == ["integer", "`1`"]
    assert rows["cloudProviders"][:2] == ["list of strings", '`["aws"]`']
    assert rows["target"][:2] == ["`docker` or `kubernetes`", "`docker`"]
    assert rows["kubernetes.ingress.controllerNamespace"][1] == "`ingress-nginx`"
    assert rows["services.<name>"][2] == "Per-service overrides under `optiinfra:services.<name>`."
    assert rows["budget"][2] == " ".join((Budget.__doc__ or "").split())


def _model_of(annotation: object) -> bool:
    """A nested model, or a map of them (`services`)."""
    args = typing.get_args(annotation)
    value = args[1] if typing.get_origin(annotation) is dict and len(args) == 2 else annotation
    return isinstance(value, type) and issubclass(value, BaseModel)


def test_every_setting_carries_a_docstring() -> None:
    # A field without one would show an empty cell in the table: the docstring is the documentation.
    undocumented = [r.key for r in settings_table.setting_rows() if not r.description]
    assert not undocumented, f"add a docstring below each of {undocumented} in infra/settings.py"


def test_settings_table_lists_the_catalogs_credentials_as_secrets() -> None:
    rows = _rows()
    catalog = default_catalog()
    for cred in catalog.credentials.values():
        kind, default, description = rows[cred.config_key]
        assert kind == "string, **secret**"
        # A receiver's URL or password is never generated: absent, its receiver is off.
        # The backup store's key is never generated either: absent, there is no store.
        assert default == (f"generated per stack ({cred.length} characters)" if cred.generated
                           else "unset (no store)" if cred.store
                           else f"unset (required while `{cred.user_set}` is set)" if cred.user_set
                           else "unset (the receiver is off)")
        assert description.startswith(cred.description) and f"--secret {cred.config_key}" in description
    assert sum("**secret**" in r[0] for r in rows.values()) == len(catalog.credentials)
    # A credential added to the catalog gets its row: the list is not written down anywhere else.
    catalog.credentials["mq"] = Credential("mq", "mqPassword", "RabbitMQ password", length=24)
    keys = [r.key for r in settings_table.setting_rows(catalog) if r.secret]
    assert keys[-1] == "mqPassword" and len(keys) == len(catalog.credentials)


def test_check_fails_when_settings_md_is_stale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    listed = {p for p in layout.layout_listed((ROOT / "README.md").read_text()) if (ROOT / p).is_file()}
    for path in layout.layout_expected(ROOT) | listed:  # a layout as good as the real one
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
    args = ["docs", "--stack", "dev", "--root", str(tmp_path)]
    assert cli.main(args) == 0
    assert cli.main([*args, "--check"]) == 0
    settings_md = tmp_path / "docs" / "settings.md"
    settings_md.write_text(settings_md.read_text().replace("Memory per node", "Memory of the node"))
    capsys.readouterr()
    assert cli.main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert "docs/settings.md" in err and "+| `budget.memory` | string | `2Gi` | Memory per node" in err


# ---- the README's layout section ---------------------------------------------------------------------

def test_every_module_is_in_the_readme_layout() -> None:
    assert layout.layout_problems(ROOT) == []
    listed = layout.layout_listed((ROOT / "README.md").read_text())
    assert {"infra/stack.py", "infra/commands/docs.py", "scripts/pylanghost/main.go"} <= listed
    expected = layout.layout_expected(ROOT)
    assert {"infra/docs/layout.py", "infra/backends/__init__.py", "policies/optiinfra_policies/vocabulary.py",
            "scripts/test.sh", "scripts/pylanghost/main.go"} <= expected
    assert not [p for p in expected if not p.endswith(".py") and not p.startswith("scripts/")]


README_WITH_LAYOUT = """# x

## Layout

```
infra/{a,b}.py      two modules
infra/sub/c.py      one more, with a description
                    infra/continued.py that goes on (not a path)
scripts/run.sh      a script
```

## Next
infra/d.py is mentioned here, outside the section
"""


def test_layout_check_names_missing_and_gone_modules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "README.md").write_text(README_WITH_LAYOUT)
    # Data files (a pin list, policy config) and bytecode need no line; modules and scripts do.
    for rel in ("infra/a.py", "infra/b.py", "infra/sub/c.py", "scripts/run.sh", "infra/sub/__pycache__/c.pyc",
                "scripts/pins.txt", "policies/config/dev.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    assert layout.layout_problems(tmp_path) == []
    (tmp_path / "infra" / "d.py").touch()
    (tmp_path / "policies" / "rules.py").touch()
    (tmp_path / "infra" / "b.py").unlink()
    assert layout.layout_problems(tmp_path) == ["not listed: infra/d.py, policies/rules.py",
                                              "listed but missing: infra/b.py"]
    args = ["docs", "--stack", "dev", "--root", str(tmp_path)]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert "README.md is stale: not listed: infra/d.py, policies/rules.py" in err
    assert "generated docs are stale" not in err  # only the layout is


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_in_a_checkout_the_layout_lists_what_git_tracks(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(README_WITH_LAYOUT)
    for rel in ("infra/a.py", "infra/b.py", "infra/sub/c.py", "scripts/run.sh", "infra/scratch.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "infra/a.py", "infra/b.py", "infra/sub", "scripts"], check=True)
    assert layout.layout_problems(tmp_path) == []  # infra/scratch.py is nobody's module yet
    subprocess.run(["git", "-C", str(tmp_path), "add", "infra/scratch.py"], check=True)
    assert layout.layout_problems(tmp_path) == ["not listed: infra/scratch.py"]


# ---- what the generator itself names --------------------------------------------------------------------

def _literals(path: Path) -> list[str]:
    return [n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]


def test_the_generator_names_no_service_and_no_vocabulary_string() -> None:
    literals = [s for module in sorted((ROOT / "infra" / "docs").glob("*.py")) for s in _literals(module)]
    for name in default_catalog().services:
        hits = [s for s in literals if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", s, re.IGNORECASE)]
        assert not hits, f"infra/docs/ names the service {name}: {hits}"
    tokens = {v for k, v in vars(vocabulary).items() if k.isupper() and isinstance(v, str) and ("." in v or ":" in v)}
    assert not [s for s in literals if any(t in s for t in tokens)]


def test_the_scraper_is_named_by_its_catalog_role() -> None:
    catalog = default_catalog()
    renamed = {}
    for name, svc in catalog.services.items():
        svc = replace(svc, depends_on=tuple(replace(d, service="victoria") if d.service == "prometheus" else d
                                            for d in svc.depends_on))
        renamed["victoria" if name == "prometheus" else name] = replace(svc, name="victoria") if svc.scraper else svc
    catalog.services = renamed
    out = docs.files(["dev"], catalog)
    assert "| Service | Talks to (port) | Waits until healthy | Scraped by Victoria at |" in out["docs/PORTS.md"]
    assert "scraped by Victoria" in out["docs/topology-dev.svg"]
    prod = generated()["docs/PORTS.md"].split("## Stack `prod` (Kubernetes)")[1]
    assert "forward one, e.g. `kubectl -n optiinfra-monitoring port-forward svc/prometheus 9090`:" in prod


# ---- links ------------------------------------------------------------------------------------------------

def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}


# The pages this suite owns (others write docs/delivery.md and docs/live-cluster.md).
PAGES = [ROOT / "README.md", *(p for p in sorted((ROOT / "docs").glob("*.md"))
                               if p.name not in {"delivery.md", "live-cluster.md"})]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        rel, _, anchor = target.partition("#")
        dest = (page.parent / rel).resolve() if rel else page
        assert dest.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{page.name} links to {target}: no such heading"


def test_readme_links_every_page_in_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"the README does not link docs/{page.name}"


def test_ports_md_lists_alerts_per_service_next_to_health_checks() -> None:
    dev = generated()["docs/PORTS.md"].split("## Stack `prod` (Kubernetes)")[0]
    assert ("| postgres | `sh -c 'pg_isready -q -h 127.0.0.1 -U optiinfra -d optiinfra && test -f " in dev)
    assert ("` | Docker health check with exec form, "
            "every 10s | PostgresDown (via postgres-exporter), PostgresConnectionsNearMax (via postgres-exporter), "
            "PostgresWalArchiveFailing (via postgres-exporter), PostgresWalArchiveBehind (via postgres-exporter) |"
            ) in dev
    assert "| CeleryBacklog (via redis-exporter) |" in dev  # on the worker's row: its backlog
    assert "| cost-agent | GET `/health` on http (8001)" in dev and (
        "| TargetDown, ServiceDown, MemoryNearLimit, Restarting |" in dev)
    assert "| qdrant | GET `/readyz` on http (6333) | Docker health check with bash /dev/tcp, every 10s | – |" in dev
    # The alert table, once for every stack: job, stacks, severity, for, threshold, the filled expression.
    alerts = generated()["docs/PORTS.md"].split("\n## Alerts\n", 1)[1]
    assert ('| CeleryBacklog | redis-exporter | all | warning | 15m | 500 | '
            '`max(redis_key_size{job="redis-exporter", key="celery"}) > 500`') in alerts


def test_ports_md_describes_each_alert_once() -> None:
    # The alert table is written once for every stack, not repeated per stack section.
    text = (ROOT / "docs" / "PORTS.md").read_text()
    assert text.count("\n## Alerts\n") == 1 and "### Alerts" not in text
    table = text.split("\n## Alerts\n", 1)[1]
    rows = [line.split(" | ")[:2] for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    keys = [(name.lstrip("| "), job) for name, job in rows]
    assert keys and len(keys) == len(set(keys))
    assert ("TargetDown", "every scraped") in keys
