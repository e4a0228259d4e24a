"""docs/dashboard-overview.svg draws the overview dashboard's layout from the JSON the dashboard
server is provisioned with (dashboards.py through monitoring.dashboard, for OVERVIEW_STACK): one box
per panel at its `gridPos` on the 24-column grid, row panels as section headers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

from .. import dashboards, monitoring
from ..model import Tier
from .svg import COLORS, FONT, MARGIN, label
from .view import StackView

OVERVIEW_SVG = "dashboard-overview.svg"
OVERVIEW_STACK = "prod"
"""The stack whose overview dashboard is drawn (the first stack documented, when this one is not)."""
GRID_COLUMNS = 24
"""The dashboard grid: 24 columns wide; a height unit is about 30 px."""
GRID_COL_W, GRID_ROW_H, GRID_PAD, GRID_TOP = 40, 30, 3, 72
"""px per column and per height unit; the inset of a panel's box in its cell; where the grid starts."""
PANEL_FILL = {"row": "#f4f4f4", "stat": "#eef5fb", "timeseries": "#eff7ee", "text": "#fbf7ea"}


def overview_json(views: Sequence[StackView]) -> tuple[str, dict[str, Any]]:
    """The stack drawn and the overview dashboard it provisions: the very function whose output
    the dashboard server reads (monitoring.dashboard), so the picture cannot drift from the file."""
    drawn = next((v for v in views if v.stack == OVERVIEW_STACK), views[0])
    return drawn.stack, json.loads(dashboards.dashboard(drawn.model, monitoring.DATASOURCE, ""))


def panel_label(panel: dict[str, Any]) -> str:
    """A panel's title, or for an untitled note the start of what it says."""
    if panel.get("title"):
        return str(panel["title"])
    content = " ".join(str((panel.get("options") or {}).get("content", "")).split())
    return content.split(": ", 1)[0] if content else "(untitled)"


def _fit(text: str, width: float, size: float) -> str:
    """`text` cut (with an ellipsis) to about `width` px at font size `size`."""
    room = max(4, int(width / (size * 0.6)))
    return text if len(text) <= room else text[:room - 1].rstrip() + "…"


def panel_box(grid: dict[str, int]) -> tuple[float, float, float, float]:
    """(x, y, width, height) of a panel's box: its gridPos times the cell size, inset by GRID_PAD."""
    return (MARGIN + grid["x"] * GRID_COL_W + GRID_PAD, GRID_TOP + grid["y"] * GRID_ROW_H + GRID_PAD,
            grid["w"] * GRID_COL_W - 2 * GRID_PAD, grid["h"] * GRID_ROW_H - 2 * GRID_PAD)


def overview_svg(stack: str, board: dict[str, Any]) -> str:
    """The overview dashboard as its server lays it out: one box per panel at its gridPos, titled,
    with its type and first query; row panels as the section headers they are."""
    panels = board["panels"]
    rows_high = max((p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels), default=0)
    width = MARGIN * 2 + GRID_COLUMNS * GRID_COL_W
    legend_y = GRID_TOP + rows_high * GRID_ROW_H + 14
    height = legend_y + 30
    title = f"{board['title']} (dashboard UID {board['uid']})"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="{FONT}">',
           f"<title>{escape(title)}</title>",
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
           label(MARGIN, MARGIN + 16, title, 16, "bold"),
           label(MARGIN, MARGIN + 36, f"Layout of the provisioned JSON of the {stack} stack: {len(panels)} panels on "
                                      f"the {GRID_COLUMNS}-column grid, drawn by `python -m infra docs`", 11,
                 fill="#444")]
    tiers = {t.value: t for t in Tier}
    for p in panels:
        x, y, w, h = panel_box(p["gridPos"])
        kind = str(p["type"])
        out.append(f'<g class="panel" id="panel-{int(p["id"])}">')
        if kind == "row":
            color = COLORS[tiers[p["title"]]] if p["title"] in tiers else "#555"
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="3" fill="{color}" '
                       f'fill-opacity="0.15" stroke="{color}" stroke-opacity="0.6"/>')
            out.append(label(x + 8, y + h / 2 + 4.5, _fit(panel_label(p), w - 80, 13), 13, "bold", color, cls="title"))
            out.append(label(x + w - 8, y + h / 2 + 4, "row", 10, fill="#555", anchor="end"))
        else:
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="4" '
                       f'fill="{PANEL_FILL.get(kind, "#ffffff")}" stroke="#8c8c8c" stroke-width="1.2"/>')
            out.append(label(x + 8, y + 18, _fit(panel_label(p), w - 90, 12), 12, "bold", cls="title"))
            out.append(label(x + w - 8, y + 18, kind, 10, fill="#555", anchor="end"))
            targets = p.get("targets") or []
            if targets:
                unit = ((p.get("fieldConfig") or {}).get("defaults") or {}).get("unit")
                out.append(label(x + 8, y + 38, _fit(str(targets[0].get("expr", "")), w - 16, 10), 10, fill="#333"))
                if unit:
                    out.append(label(x + 8, y + 54, f"unit {unit}", 10, fill="#555"))
            elif kind == "text":
                content = " ".join(str((p.get("options") or {}).get("content", "")).split())
                out.append(label(x + 8, y + 38, _fit(content, w - 16, 10), 10, fill="#333"))
        out.append("</g>")
    lx = MARGIN + 4
    for kind, fill in PANEL_FILL.items():
        out.append(f'<rect x="{lx}" y="{legend_y + 3}" width="22" height="14" rx="3" fill="{fill}" stroke="#8c8c8c"/>')
        out.append(label(lx + 28, legend_y + 14, kind, 10.5))
        lx += 40 + 7 * len(kind) + 20
    out.append(label(lx, legend_y + 14, f"one column = {GRID_COL_W} px, one height unit = {GRID_ROW_H} px", 10.5,
                     fill="#555"))
    out.append("</svg>")
    return "\n".join(out) + "\n"
