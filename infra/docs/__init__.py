"""Generated docs, one module per output: docs/PORTS.md (`ports`), one topology picture per
stack (`topology`), docs/dashboard-overview.svg (`dashboard`), docs/settings.md
(`settings_table`), docs/REVIEW.md (`review`); and the check that the README's layout section
lists every module (`layout`). `output` writes them or tells which are stale; `view` is what
they read of a stack, `svg` what both pictures share.

Everything comes from the resolved model of each stack (catalog + `Pulumi.<stack>.yaml`)
and from its offline render (names the backend chose: networks, namespaces, workloads,
stack outputs). No timestamps, no randomness: two runs write the same bytes, so `--check`
can compare the committed files with what the code would write. Which service plays a role
(the scraper) and every type token, label and annotation key come from the catalog and the
vocabulary; these modules name neither.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..model import Catalog
from ..stack import available_stacks
from . import dashboard, ports, review, settings_table, topology
from .layout import LAYOUT_HEADING, README, layout_problems
from .output import DOCS, stale, write
from .view import view

__all__ = ["LAYOUT_HEADING", "README", "files", "layout_problems", "stale", "write"]


def files(stacks: Sequence[str] | None = None, catalog: Catalog | None = None) -> dict[str, str]:
    """Every generated file (path relative to the repository root) and its content."""
    views = [view(s, catalog) for s in (stacks or available_stacks())]
    out = {f"{DOCS}/{ports.PORTS_MD}": ports.ports_md(views),
           f"{DOCS}/{settings_table.SETTINGS_MD}": settings_table.settings_md(catalog),
           f"{DOCS}/{review.REVIEW_MD}": review.review_md(views)}
    for v in views:
        out[f"{DOCS}/topology-{v.stack}.svg"] = topology.topology_svg(v)
    out[f"{DOCS}/{dashboard.OVERVIEW_SVG}"] = dashboard.overview_svg(*dashboard.overview_json(views))
    return out
