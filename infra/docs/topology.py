"""docs/topology-<stack>.svg: an SVG written here as plain text (a layered layout: one row per
tier, dependency edges from dependents down to what they use).

Edges are drawn after the boxes, so none hides under one, and an edge that skips rows is
routed through the gaps between the boxes of the rows it crosses: no edge runs through a
box, and each arrowhead ends on the border of the box it points to. An edge's colour is the
tier it points to; the legend shows one arrow per colour used (`class` attributes mark the
boxes, the edges and the legend for the tests).
"""

from __future__ import annotations

import itertools
from xml.sax.saxutils import escape

from ..graph import Resolved
from .svg import COLORS, FONT, MARGIN, SCRAPED, label
from .view import StackView, node_ports, scraper_title

BOX_W, BOX_H, GAP_X, ROW_H, ROW_GAP, LABEL_W = 196, 64, 18, 128, 10, 200
CLEAR = 8
"""How far above and below a row's boxes a routed edge turns into the gap it passes through."""


def _layout(m: Resolved) -> dict[str, tuple[float, float]]:
    """Top-left corner of each service's box: one row per tier (frontend at the top,
    databases at the bottom), each row ordered by where the services it uses sit."""
    rows = list(reversed(m.tiers()))
    widest = max(len(m.in_tier(t)) for t in rows)
    content_w = widest * (BOX_W + GAP_X) - GAP_X
    pos: dict[str, tuple[float, float]] = {}
    for tier in reversed(rows):  # bottom up: a row follows the rows below it
        i = rows.index(tier)
        names = [e.name for e in m.in_tier(tier)]
        row_w = len(names) * (BOX_W + GAP_X) - GAP_X
        x0 = MARGIN + LABEL_W + (content_w - row_w) / 2

        keys = {}
        for k, n in enumerate(names):
            xs = [pos[e.target][0] for e in m.out_edges(n) if e.kind == "depends" and e.target in pos]
            keys[n] = (sum(xs) / len(xs) if xs else x0 + k * (BOX_W + GAP_X), k)
        y = MARGIN + 40 + i * (ROW_H + ROW_GAP) + (ROW_H - BOX_H) / 2
        for j, n in enumerate(sorted(names, key=keys.__getitem__)):
            pos[n] = (x0 + j * (BOX_W + GAP_X), y)
    return pos


def topology_svg(v: StackView) -> str:
    m = v.model
    rows = list(reversed(m.tiers()))
    pos = _layout(m)
    widest = max(len(m.in_tier(t)) for t in rows)
    width = MARGIN * 2 + LABEL_W + widest * (BOX_W + GAP_X) - GAP_X + 12  # 12: room right of the widest row
    legend_y = MARGIN + 40 + len(rows) * (ROW_H + ROW_GAP) + 10
    height = legend_y + 30 + 22 * (2 + (0 if v.kube else 1))
    title = (f"OptiInfra {v.stack} stack ({'Kubernetes' if v.kube else 'Docker'}): "
             f"{len(m.services)} services in {len(rows)} tiers")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT}">',
           f"<title>{escape(title)}</title>",
           "<defs>"]
    for tier, color in COLORS.items():
        out.append(f'<marker id="arrow-{tier.value}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                   'markerHeight="7" orient="auto-start-reverse">'
                   f'<path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>')
    out += ["</defs>", f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
            label(MARGIN, MARGIN + 16, title, 16, "bold")]
    # Tier rows.
    for i, tier in enumerate(rows):
        ry = MARGIN + 40 + i * (ROW_H + ROW_GAP)
        color = COLORS[tier]
        net, internal = v.network(tier)
        out.append(f'<rect x="{MARGIN}" y="{ry}" width="{width - 2 * MARGIN:.0f}" height="{ROW_H}" rx="8" '
                   f'fill="{color}" fill-opacity="0.08" stroke="{color}" stroke-opacity="0.35"/>')
        out.append(label(MARGIN + 12, ry + 26, f"{m.tiers().index(tier) + 1}. {tier.value}", 14, "bold", color))
        out.append(label(MARGIN + 12, ry + 46, ("namespace " if v.kube else "network ") + net, 10.5, fill="#444"))
        if internal:
            out.append(label(MARGIN + 12, ry + 62, "internal: no egress", 10.5, fill="#444"))
    # Service boxes.
    for name, (x, y) in sorted(pos.items()):
        eff = m.services[name]
        svc = eff.service
        color = COLORS[eff.tier]
        out.append(f'<rect class="box" x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="#ffffff" '
                   f'stroke="{color}" stroke-width="{2.4 if svc.stateful else 1.4}"/>')
        out.append(label(x + 9, y + 18, name, 12, "bold"))
        out.append(label(x + 9, y + 35, node_ports(v, eff), 10.5, fill="#333"))
        if svc.metrics:
            out.append(f'<circle cx="{x + BOX_W - 12:.1f}" cy="{y + 13:.1f}" r="4.5" fill="{SCRAPED}"/>')
        notes = []
        if svc.stateful:
            notes.append("volume" if not v.kube else "PVC")
        pods = v.pods(name)
        if v.kube and pods > 1:
            notes.append(f"×{pods} pods")
        if eff.public:
            notes.append("public")
        if not v.kube:
            for k, tier in enumerate(m.networks_of(name)):
                out.append(f'<circle cx="{x + 13 + k * 13:.1f}" cy="{y + 50:.1f}" r="4.5" fill="{COLORS[tier]}"/>')
        if notes:
            out.append(label(x + BOX_W - 9, y + 54, " · ".join(notes), 10, fill="#555", anchor="end"))
    # Dependency edges, over the boxes, attached at spread-out points of the boxes' edges.
    edges = [e for e in m.edges if e.kind == "depends"]
    outgoing: dict[str, list[str]] = {}
    incoming: dict[str, list[str]] = {}
    for e in edges:
        outgoing.setdefault(e.source, []).append(e.target)
        incoming.setdefault(e.target, []).append(e.source)

    def attach(name: str, other: str, side: dict[str, list[str]]) -> float:
        peers = sorted(side[name], key=lambda n: (pos[n][0], n))
        return pos[name][0] + BOX_W * (peers.index(other) + 1) / (len(peers) + 1)
    for e in sorted(edges, key=lambda e: (e.source, e.target)):
        x1, x2 = attach(e.source, e.target, outgoing), attach(e.target, e.source, incoming)
        tier = m.services[e.target].tier
        out.append(f'<path class="edge" d="{_route(pos, e.source, e.target, x1, x2)}" fill="none" '
                   f'stroke="{COLORS[tier]}" stroke-opacity="0.75" stroke-width="1.3" '
                   f'marker-end="url(#arrow-{tier.value})"/>')
    # Legend: one arrow per edge colour drawn, then the marks.
    ly = legend_y
    out.append('<g class="legend">')
    out.append(label(MARGIN + 4, ly + 14, "depends on a service in:", 10.5))
    x = MARGIN + 140
    for tier in sorted({m.services[e.target].tier for e in edges}, key=m.tiers().index):
        out.append(f'<path class="legend-edge" d="M{x},{ly + 10} L{x + 30},{ly + 10}" stroke="{COLORS[tier]}" '
                   f'stroke-width="1.3" marker-end="url(#arrow-{tier.value})"/>')
        out.append(label(x + 36, ly + 14, tier.value, 10.5))
        x += 46 + 7 * len(tier.value)
    x += 20
    out.append(f'<circle class="legend-mark" cx="{x:.1f}" cy="{ly + 10:.1f}" r="4.5" fill="{SCRAPED}"/>')
    out.append(label(x + 10, ly + 14, f"scraped by {scraper_title(v)}", 10.5))
    x += 30 + 7 * len(f"scraped by {scraper_title(v)}")
    out.append(f'<rect x="{x:.1f}" y="{ly + 3}" width="22" height="14" rx="3" fill="#fff" stroke="#555" '
               'stroke-width="2.4"/>')
    out.append(label(x + 28, ly + 14, "stateful: keeps its data in a protected " +
                     ("PersistentVolumeClaim" if v.kube else "named volume"), 10.5))
    ly += 22
    out.append(label(MARGIN + 4, ly + 14, ("ports: container port (Service port); public services get an Ingress"
                                            if v.kube else "ports: container port → host bind address:host port"),
                     10.5))
    if not v.kube:
        ly += 22
        out.append(label(MARGIN + 4, ly + 14, "networks a container joins:", 10.5))
        x = MARGIN + 160
        for tier in rows[::-1]:
            net, _ = v.network(tier)
            out.append(f'<circle cx="{x:.1f}" cy="{ly + 10:.1f}" r="4.5" fill="{COLORS[tier]}"/>')
            out.append(label(x + 9, ly + 14, net, 10.5))
            x += 20 + 7 * len(net)
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _route(pos: dict[str, tuple[float, float]], source: str, target: str, x1: float, x2: float) -> str:
    """The path of an edge from the source box's border at x1 to the target box's at x2: an
    arc below the row between boxes of one row; else down (or up) through the rows between,
    each crossed in the gap between two of its boxes nearest the straight line."""
    sy, ty = pos[source][1], pos[target][1]
    if abs(sy - ty) < 1:  # same row: an arc below the boxes
        y1 = sy + BOX_H
        return f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + 34:.1f} {x2:.1f},{y1 + 34:.1f} {x2:.1f},{y1:.1f}"
    down = ty > sy
    y1, y2 = (sy + BOX_H, ty) if down else (sy, ty + BOX_H)
    rows: dict[float, list[float]] = {}
    for x, y in pos.values():
        if min(sy, ty) + 1 < y < max(sy, ty) - 1:
            rows.setdefault(y, []).append(x)
    points = [(x1, y1)]
    for y in sorted(rows, reverse=not down):
        at = x1 + (x2 - x1) * (y + BOX_H / 2 - y1) / (y2 - y1)
        gx = _gap(sorted(rows[y]), at)
        near, far = (y - CLEAR, y + BOX_H + CLEAR) if down else (y + BOX_H + CLEAR, y - CLEAR)
        points += [(gx, near), (gx, far)]
    points.append((x2, y2))
    d = f"M{x1:.1f},{y1:.1f}"
    for i in range(1, len(points)):
        (xa, ya), (xb, yb) = points[i - 1], points[i]
        if i % 2 == 0:  # through a row's gap: straight down
            d += f" L{xb:.1f},{yb:.1f}"
            continue
        bend = min(70.0, abs(yb - ya) / 2.0) * (1 if down else -1)
        d += f" C{xa:.1f},{ya + bend:.1f} {xb:.1f},{yb - bend:.1f} {xb:.1f},{yb:.1f}"
    return d


def _gap(xs: list[float], at: float) -> float:
    """Where to cross a row whose boxes start at `xs`: `at` when it misses every box,
    else the middle of the gap (or the side beyond the row) nearest to it."""
    lanes = [(xs[0] - GAP_X / 2, float("-inf"), xs[0] - 4)]
    lanes += [((a + BOX_W + b) / 2, a + BOX_W + 4, b - 4) for a, b in itertools.pairwise(xs)]
    lanes.append((xs[-1] + BOX_W + GAP_X / 2, xs[-1] + BOX_W + 4, float("inf")))
    for _, lo, hi in lanes:
        if lo <= at <= hi:
            return at
    return min((middle for middle, _, _ in lanes), key=lambda middle: abs(middle - at))
