"""What the docs need of one stack (`StackView`: its model and what its render named), and the
text helpers every output shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policies.optiinfra_policies import vocabulary as vocab

from .. import offline
from ..graph import Effective, Resolved
from ..model import Catalog, Tier


@dataclass
class StackView:
    """What the docs need of one stack: its model and what its render named."""

    stack: str
    model: Resolved
    outputs: dict[str, Any]
    resources: list[offline.Resource]

    @property
    def kube(self) -> bool:
        return self.model.settings.target == "kubernetes"

    def workloads(self, service: str) -> list[offline.Resource]:
        """What runs the service's processes (container, Deployments, StatefulSet)."""
        return sorted((r for r in self.resources if r.type in vocab.SERVICE_WORKLOADS
                       and r.inputs.get("mustRun") is not False  # not a store's one-shot containers
                       and vocab.service_of(r.type, r.inputs) == service), key=lambda r: r.name)

    def pods(self, service: str) -> int:
        """Pods of a service on Kubernetes (replicas of all its workloads), 1 on Docker."""
        if not self.kube:
            return 1
        return sum(int((r.inputs.get("spec") or {}).get("replicas", 1)) for r in self.workloads(service)) or 1

    def network(self, tier: Tier) -> tuple[str, bool]:
        """The tier's network (Docker) or namespace (Kubernetes), and whether it is internal."""
        if self.kube:
            return str((self.outputs.get("namespaces") or {}).get(tier.value, tier.value)), False
        for r in self.resources:
            if r.type == vocab.DOCKER_NETWORK and vocab.tier_of(r.type, r.inputs) == tier.value:
                return str(r.inputs.get("name")), bool(r.inputs.get("internal"))
        return tier.value, False

    @property
    def scraper(self) -> Effective | None:
        """The service in the catalog's scraper role (None when the stack disables it)."""
        return self.model.scraper()


def view(stack: str, catalog: Catalog | None = None) -> StackView:
    r = offline.render(stack, catalog=catalog)
    return StackView(stack, r.model, r.outputs, r.resources)


# ---- text helpers ------------------------------------------------------------------------------

def code(text: str) -> str:
    return f"`{text}`" if "`" not in text else f"``{text}``"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def scraper_title(v: StackView) -> str:
    """The scraper's name as a title (the catalog's `scraper` role names it, not this module)."""
    scraper = v.scraper
    return scraper.name[:1].upper() + scraper.name[1:] if scraper else "nothing"


def node_ports(v: StackView, eff: Effective) -> str:
    if v.kube:
        return ", ".join(str(p.container) for p in eff.service.ports) or "no port"
    parts = []
    for p in eff.service.ports:
        pub = next((x for x in eff.published if x.port.name == p.name), None)
        parts.append(f"{p.container} → {pub.bind}:{pub.host}" if pub else str(p.container))
    return ", ".join(parts) or "no port"
