"""What both pictures share: the tier colours, the font, the margin, a text element.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from ..model import Tier

COLORS = {Tier.DATABASES: "#4e79a7", Tier.MONITORING: "#f28e2b", Tier.CORE: "#59a14f",
          Tier.AGENTS: "#b07aa1", Tier.FRONTEND: "#e15759"}
SCRAPED = "#17becf"
"""The mark of a service the scraper reads: far from every tier colour (an orange one read as
the monitoring tier's)."""
MARGIN = 20
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"


def label(x: float, y: float, text: str, size: float = 11, weight: str = "normal", fill: str = "#222",
          anchor: str = "start", cls: str = "") -> str:
    css = f' class="{cls}"' if cls else ""
    return (f'<text{css} x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-weight="{weight}" fill="{fill}" '
            f'text-anchor="{anchor}">{escape(text)}</text>')
