"""Grafana dashboards generated from the catalog, provisioned as files.

The overview (`optiinfra-overview`) has one row per tier: the share of each service's
instances that answer their scrape, the health its exporter reports for a service that is
not scraped itself (a database), and each instance's memory against its limit. Each tier
dashboard (`optiinfra-<tier>`) adds restarts and the key panels the catalog's exporters
declare (`Service.panels`) for the services they watch in that tier. UIDs and titles come
from the tier names only, so the portal can link them and they survive a redeploy; every
panel reads the datasource by its provisioned UID (monitoring.DATASOURCE_UID).

Panels are per tier and per declared panel, never per service pair: linear in the catalog.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

import yaml

from . import alerts
from .graph import Resolved
from .model import Generated, Panel, Tier

UID_PREFIX = "optiinfra"
OVERVIEW = "overview"
FOLDER = "OptiInfra"


def uid(part: str = "") -> str:
    """Stable dashboard UID: `optiinfra-overview`, or `optiinfra-<tier>`."""
    return f"{UID_PREFIX}-{part or OVERVIEW}"


def title(part: str = "") -> str:
    return f"{FOLDER} · " + (part.capitalize() if part else "Overview")


def _source(datasource: dict[str, str]) -> dict[str, str]:
    return dict(datasource)  # a copy per reference: the JSON never shares an object


def _panel(i: int, x: int, y: int, panel_title: str, expr: str, unit: str, legend: str,
           datasource: dict[str, str], kind: str = "timeseries") -> dict[str, Any]:
    return {"id": i, "type": kind, "title": panel_title, "datasource": _source(datasource),
            "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {},
            "targets": [{"refId": "A", "expr": expr, "legendFormat": legend, "datasource": _source(datasource)}]}


class _Grid:
    """Panels two to a row, each section under an open row header."""

    def __init__(self, datasource: dict[str, str]) -> None:
        self.datasource, self.y, self.col = datasource, 0, 0
        self.panels: list[dict[str, Any]] = []

    def row(self, text: str) -> None:
        if self.col:
            self.y, self.col = self.y + 8, 0
        self.panels.append({"id": len(self.panels) + 1, "type": "row", "title": text, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def note(self, text: str) -> None:
        """A text panel (no query): what a section has no metrics for, and why."""
        if self.col:
            self.y, self.col = self.y + 8, 0
        self.panels.append({"id": len(self.panels) + 1, "type": "text", "title": "",
                            "gridPos": {"h": 3, "w": 24, "x": 0, "y": self.y},
                            "options": {"mode": "markdown", "content": text}})
        self.y += 3

    def add(self, panel_title: str, expr: str, unit: str = "short", legend: str = "{{service}} {{instance}}",
            kind: str = "timeseries") -> None:
        self.panels.append(_panel(len(self.panels) + 1, self.col * 12, self.y, panel_title, expr, unit, legend,
                                  self.datasource, kind))
        self.col += 1
        if self.col == 2:
            self.y, self.col = self.y + 8, 0


def _watched(model: Resolved, tier: Tier) -> list[tuple[str, Panel]]:
    """(job, panel) of every scraped service's panels whose subject is in `tier`."""
    out = []
    for eff in model.scrape_targets():
        subject = model.services.get(eff.service.subject, eff)
        if subject.tier is tier:
            out += [(eff.name, p) for p in eff.service.panels]
    return out


def _expr(panel: Panel, job: str) -> str:
    return panel.expr.replace("$job", job)


def _dashboard(part: str, panels: list[dict[str, Any]]) -> str:
    board = {"uid": uid(part), "title": title(part), "tags": [UID_PREFIX], "editable": False,
             "schemaVersion": 39, "version": 1, "timezone": "browser", "refresh": "30s",
             "time": {"from": "now-6h", "to": "now"}, "templating": {"list": []},
             "annotations": {"list": []}, "links": [], "panels": panels}
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def overview(model: Resolved, datasource: dict[str, str]) -> str:
    grid = _Grid(datasource)
    scraped_tiers = {e.tier for e in model.scrape_targets()}
    for tier in model.tiers():
        grid.row(tier.value)
        if tier in scraped_tiers:
            grid.add("Instances up", f'{alerts.UP_RATIO}{{tier="{tier.value}"}}', "percentunit",
                     "{{service}}", kind="stat")
        for job, panel in _watched(model, tier):
            if panel is _first_panel(model, job):  # an exporter's first panel is its health
                grid.add(panel.title, _expr(panel, job), panel.unit, "{{instance}}", kind="stat")
        if tier in scraped_tiers:
            grid.add("Memory / limit", f'{alerts.MEMORY_RATIO}{{tier="{tier.value}"}}', "percentunit")
        _unwatched(model, tier, grid)
    return _dashboard("", grid.panels)


def _unwatched(model: Resolved, tier: Tier, grid: _Grid) -> None:
    """Say which services of the tier no metric watches (their health checks still run)."""
    scraped = model.scrape_targets()
    watched = {e.name for e in scraped} | {a.about for e in scraped for a in e.service.alerts if a.about}
    silent = [e.name for e in model.in_tier(tier) if e.name not in watched]
    if silent:
        grid.note(f"No metrics for {', '.join(silent)}: they expose none and no exporter watches them. "
                  "Their health checks still run (Kubernetes probes, Docker health checks).")


def _first_panel(model: Resolved, job: str) -> Panel | None:
    panels = model.services[job].service.panels
    return panels[0] if panels else None


def tier_dashboard(model: Resolved, tier: Tier, datasource: dict[str, str]) -> str:
    grid = _Grid(datasource)
    if any(e.tier is tier for e in model.scrape_targets()):
        grid.row("Scrape targets")
        grid.add("Instances up", f'up{{tier="{tier.value}"}}', "short")
        grid.add("Memory / limit", f'{alerts.MEMORY_RATIO}{{tier="{tier.value}"}}', "percentunit")
        grid.add("Restarts (30 min)", f'changes(process_start_time_seconds{{tier="{tier.value}"}}[30m])')
    _unwatched(model, tier, grid)
    by_job: dict[str, list[Panel]] = {}
    for job, panel in _watched(model, tier):
        by_job.setdefault(job, []).append(panel)
    for job, panels in by_job.items():
        grid.row(job)
        for panel in panels:
            grid.add(panel.title, _expr(panel, job), panel.unit, "{{instance}}")
    return _dashboard(tier.value, grid.panels)


def dashboard(model: Resolved, datasource: dict[str, str], part: str) -> str:
    """One dashboard file (Generated.DASHBOARD): the overview, or the tier named by `part`."""
    return tier_dashboard(model, Tier(part), datasource) if part else overview(model, datasource)


def provider(model: Resolved) -> str:
    """Grafana's dashboard provider: the directory of this Grafana's dashboard files."""
    owner = next((e.service for e in model.services.values()
                  if any(f.generator is Generated.DASHBOARD_PROVIDER for f in e.service.files)), None)
    dirs = sorted({posixpath.dirname(f.path) for f in (owner.files if owner else ())
                   if f.generator is Generated.DASHBOARD})
    providers = [{"name": f"{UID_PREFIX}-{i}", "orgId": 1, "folder": FOLDER, "type": "file",
                  "disableDeletion": True, "allowUiUpdates": False, "updateIntervalSeconds": 60,
                  "options": {"path": d, "foldersFromFilesStructure": False}} for i, d in enumerate(dirs)]
    return yaml.safe_dump({"apiVersion": 1, "providers": providers}, sort_keys=False)
