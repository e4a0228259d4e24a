"""What a stack costs a month, and what a change costs (`capacity`, `diff`).

Priced at the stack's `optiinfra:prices` (settings.Prices: defaults written with their
source and date, nothing fetched). What is priced is what the workloads hold:

- Kubernetes: each pod's CPU and memory requests (what the scheduler reserves for it) at
  `coreHour` and `gibHour` for `HOURS_PER_MONTH`, each volume claim at its StorageClass's
  `storageGibMonth`, each backup claim at `backupGibMonth`;
- Docker: each container's memory limit (Docker enforces limits and reserves nothing, so
  the stack is budgeted and priced by them); CPU is shared by the containers, each only
  capped, so none is priced per container; a Docker volume has no size and is not priced.

The node pool that holds them (`budget`: nodes of one shape, `nodeMonth` or its cores and
memory at the same prices) is priced apart: it is what the provider bills, the workloads'
cost is the part of it they use. The same amounts can be read from a resolved model
(`of_model`) or from rendered resources (`of_resources`, which `diff` uses for a revision
rendered by its own code), and give the same figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from policies.optiinfra_policies.vocabulary import DOCKER_SERVICE, DOCKER_TIER
from policies.optiinfra_policies.vocabulary import K8S_COMPONENT as COMPONENT
from policies.optiinfra_policies.vocabulary import K8S_NAME as NAME

from .graph import Resolved
from .model import Tier, parse_memory_mib
from .settings import HOURS_PER_MONTH, Prices, Settings

CONTAINER = "docker:index/container:Container"
WORKLOADS = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")
CLAIM = "kubernetes:core/v1:PersistentVolumeClaim"


@dataclass(frozen=True)
class Item:
    """One service's priced amounts: per instance CPU (millicores) and memory (MiB), and its
    claims in total (MiB)."""

    service: str
    tier: str
    instances: int
    cpu_m: int
    memory_mib: int
    volume_mib: int = 0
    backup_mib: int = 0


def storage_class(settings: Settings) -> str:
    return settings.kubernetes.storage_class or "default"


def month(item: Item, prices: Prices, cls: str = "default") -> float:
    """USD a month of one service, all its instances and claims."""
    compute = item.instances * (item.cpu_m / 1000 * prices.core_hour + item.memory_mib / 1024 * prices.gib_hour)
    storage = item.volume_mib / 1024 * prices.storage_gib_month.get(cls, prices.storage_gib_month.get("default", 0))
    return compute * HOURS_PER_MONTH + storage + item.backup_mib / 1024 * prices.backup_gib_month


def total(items: Iterable[Item], prices: Prices, cls: str = "default") -> float:
    return sum(month(i, prices, cls) for i in items)


def by_tier(items: list[Item], prices: Prices, cls: str = "default") -> dict[str, float]:
    out: dict[str, float] = {}
    for i in items:
        out[i.tier] = out.get(i.tier, 0.0) + month(i, prices, cls)
    return {t.value: out[t.value] for t in Tier if t.value in out}


def node_pool(settings: Settings) -> float:
    """USD a month of the budget's nodes (what the provider bills for the pool)."""
    b, p = settings.budget, settings.prices
    each = p.node_month if p.node_month is not None else (
        (b.cpu * p.core_hour + parse_memory_mib(b.memory) / 1024 * p.gib_hour) * HOURS_PER_MONTH)
    return b.nodes * each


def of_model(model: Resolved) -> list[Item]:
    """The priced amounts of a resolved stack (requests on Kubernetes, limits on Docker)."""
    k8s = model.settings.target == "kubernetes"
    out = []
    for tier in Tier:
        for eff in model.in_tier(tier):
            n = eff.replicas * (len(eff.providers) or 1) if k8s else 1
            res = eff.resources
            mem, cpu = (res.memory_mib, res.cpu) if k8s else (res.limit_mib, 0.0)
            out.append(Item(eff.name, tier.value, n, round(cpu * 1000), mem,
                            n * sum(size for _, size in eff.volume_sizes) if k8s else 0, eff.backup_mib))
    return out


def _cpu_m(q: Any) -> int:
    s = str(q)
    return int(s[:-1]) if s.endswith("m") else round(float(s) * 1000)


def of_resources(resources: Iterable[tuple[str, dict[str, Any]]]) -> list[Item]:
    """The same amounts read from rendered resources (type, inputs): Kubernetes workloads
    (replicas x the container's requests, claim templates) and backup claims, or Docker
    containers (memory limit in MiB, `cpus`)."""
    rendered = list(resources)
    items: dict[str, Item] = {}

    def add(name: str, tier: str, instances: int, cpu_m: int, memory_mib: int, volume: int, backup: int) -> None:
        old = items.get(name)
        if old is None:
            items[name] = Item(name, tier, instances, cpu_m, memory_mib, volume, backup)
        else:  # a service of several workloads (one per cloud provider), or its backup claim
            items[name] = Item(name, tier, old.instances + instances, old.cpu_m or cpu_m,
                               old.memory_mib or memory_mib, old.volume_mib + volume, old.backup_mib + backup)

    for type_, inputs in rendered:
        if type_ == CONTAINER:
            if inputs.get("mustRun") is False:
                continue  # a one-shot container (credential files, a rotation): it runs to its exit
            labels = {x["label"]: x["value"] for x in inputs.get("labels") or []}
            add(labels[DOCKER_SERVICE], labels[DOCKER_TIER], 1, 0, int(inputs["memory"]), 0, 0)
        elif type_ in WORKLOADS:
            labels = inputs["metadata"]["labels"]
            spec = inputs["spec"]
            n = int(spec.get("replicas", 1))
            req = spec["template"]["spec"]["containers"][0]["resources"]["requests"]
            claims = sum(parse_memory_mib(t["spec"]["resources"]["requests"]["storage"])
                         for t in spec.get("volumeClaimTemplates") or [])
            add(labels[NAME], labels[COMPONENT], n, _cpu_m(req["cpu"]), parse_memory_mib(req["memory"]), n * claims, 0)
    for type_, inputs in rendered:
        if type_ == CLAIM:
            labels = inputs["metadata"]["labels"]
            service = labels[NAME].removesuffix("-backup")
            size = parse_memory_mib(inputs["spec"]["resources"]["requests"]["storage"])
            add(service, labels[COMPONENT], 0, 0, 0, 0, size)
    order = {t.value: i for i, t in enumerate(Tier)}
    return sorted(items.values(), key=lambda i: order.get(i.tier, 99))


def dollars(x: float, sign: bool = False) -> str:
    return f"{'+' if sign and x >= 0.005 else '-' if sign and x <= -0.005 else ''}${abs(x):,.2f}"


def change_lines(old: list[Item], new: list[Item], prices: Prices, cls: str = "default") -> list[str]:
    """One line per service whose priced amounts change ("+2 data-collector-worker replicas:
    +$18.40/month"), and the total; [] when nothing priced changes."""
    before, after = {i.service: i for i in old}, {i.service: i for i in new}
    lines = []
    for name in [*after, *(n for n in before if n not in after)]:
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        delta = (month(b, prices, cls) if b else 0.0) - (month(a, prices, cls) if a else 0.0)
        if a is None:
            what = f"+{name}"
        elif b is None:
            what = f"-{name}"
        elif (a.cpu_m, a.memory_mib, a.volume_mib // max(a.instances, 1), a.backup_mib) == (
                b.cpu_m, b.memory_mib, b.volume_mib // max(b.instances, 1), b.backup_mib):
            n = b.instances - a.instances
            what = f"{n:+d} {name} {'replica' if abs(n) == 1 else 'replicas'}"
        else:
            parts = []
            if a.instances != b.instances:
                parts.append(f"instances {a.instances} -> {b.instances}")
            if a.memory_mib != b.memory_mib:
                parts.append(f"memory {a.memory_mib}Mi -> {b.memory_mib}Mi")
            if a.cpu_m != b.cpu_m:
                parts.append(f"cpu {a.cpu_m / 1000:g} -> {b.cpu_m / 1000:g}")
            if (a.volume_mib, a.backup_mib) != (b.volume_mib, b.backup_mib):
                parts.append(f"claims {(a.volume_mib + a.backup_mib) // 1024}Gi -> "
                             f"{(b.volume_mib + b.backup_mib) // 1024}Gi")
            what = f"{name} {', '.join(parts)}"
        lines.append(f"{what}: {dollars(delta, sign=True)}/month")
    if lines:
        lines.append(f"total: {dollars(total(new, prices, cls) - total(old, prices, cls), sign=True)}/month "
                     f"({dollars(total(old, prices, cls))} -> {dollars(total(new, prices, cls))})")
    return lines
