"""docs/topology-<stack>.svg: an SVG written here as plain text (a layered layout: one row per
tier, dependency edges from dependents down to what they use).
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from ..graph import Resolved
from .svg import COLORS, FONT, MARGIN, label
from .view import StackView, node_ports, scraper_title

BOX_W, BOX_H, GAP_X, ROW_H, ROW_GAP, LABEL_W = 196, 64, 18, 128, 10, 200


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
    # Dependency edges, attached at spread-out points of the boxes' edges.
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
        sy, ty = pos[e.source][1], pos[e.target][1]
        x1, x2 = attach(e.source, e.target, outgoing), attach(e.target, e.source, incoming)
        color = COLORS[m.services[e.target].tier]
        if abs(sy - ty) < 1:  # same row: an arc below the boxes
            y1 = sy + BOX_H
            d = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + 34:.1f} {x2:.1f},{y1 + 34:.1f} {x2:.1f},{y1:.1f}"
        else:
            y1, y2 = sy + BOX_H, ty
            bend = min(70.0, (y2 - y1) / 2.0)
            d = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} {x2:.1f},{y2 - bend:.1f} {x2:.1f},{y2:.1f}"
        out.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-opacity="0.6" stroke-width="1.3" '
                   f'marker-end="url(#arrow-{m.services[e.target].tier.value})"/>')
    # Service boxes.
    for name, (x, y) in sorted(pos.items()):
        eff = m.services[name]
        svc = eff.service
        color = COLORS[eff.tier]
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="#ffffff" '
                   f'stroke="{color}" stroke-width="{2.4 if svc.stateful else 1.4}"/>')
        out.append(label(x + 9, y + 18, name, 12, "bold"))
        out.append(label(x + 9, y + 35, node_ports(v, eff), 10.5, fill="#333"))
        if svc.metrics:
            out.append(f'<circle cx="{x + BOX_W - 12:.1f}" cy="{y + 13:.1f}" r="4.5" fill="#e8a33d"/>')
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
    # Legend.
    ly = legend_y
    out.append(f'<path d="M{MARGIN + 4},{ly + 10} L{MARGIN + 40},{ly + 10}" stroke="#555" stroke-width="1.3" '
               f'marker-end="url(#arrow-databases)"/>')
    out.append(label(MARGIN + 48, ly + 14, "depends on (arrow colour: the tier it points to)", 10.5))
    out.append(f'<circle cx="{MARGIN + 340:.1f}" cy="{ly + 10:.1f}" r="4.5" fill="#e8a33d"/>')
    out.append(label(MARGIN + 350, ly + 14, f"scraped by {scraper_title(v)}", 10.5))
    out.append(f'<rect x="{MARGIN + 500}" y="{ly + 3}" width="22" height="14" rx="3" fill="#fff" stroke="#555" '
               'stroke-width="2.4"/>')
    out.append(label(MARGIN + 528, ly + 14, "stateful: keeps its data in a protected " +
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
    out.append("</svg>")
    return "\n".join(out) + "\n"
