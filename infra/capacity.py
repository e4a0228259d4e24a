"""Footprint of a stack against its budget: CPU, memory and persistent storage.

Computed from the resolved model (resolve.resolve), not from either backend's inputs, so
one calculation serves both targets:

- instances: one per service on Docker; on Kubernetes `replicas`, and the cost agent
  once per cloud provider (`cloudProviders`), each with those replicas;
- CPU and memory: the effective requests and limits (catalog, or `services.<name>.cpu`
  and `.memory`) times the instances;
- storage: the catalog's volume sizes, or `kubernetes.storage.<name>` on Kubernetes
  (one claim per volume and instance, as a StatefulSet makes them).

The budget is `optiinfra:budget`: `nodes` machines of `memory` and `cpu` each, and
`storage` in total. Requests are what must fit: a Kubernetes scheduler reserves them,
and on Docker they are the seed's measured use. CPU is compressible and Docker
reserves none (a container is only capped at its limit), so on Docker a CPU request
above the budget is a warning, while memory and storage above it are errors; on
Kubernetes all three are, and so is an instance larger than one node.

On Kubernetes the requests must fit with room kept on top, and the report says how much:
- each node's system reserve (`budget.reservedMemory`, `budget.reservedCpu`: kubelet,
  runtime, eviction threshold), which pods never get;
- a rolling update's surge: the extra pods each service's `Rollout` (resolved in the
  model, resolve.resolve) adds while it rolls. Rollouts that run at once each wait for room for
  their next pod, and each finished step frees an old pod; so the room that guarantees
  progress is that of the largest surge pod, on one node as well as in the pool.
On Docker every rollout replaces in place (no surge) and the budget is already the host's share.

Amounts are kept in integers (millicores, MiB) so that totals add up exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from . import cost
from .graph import Effective, Resolved
from .model import Tier, parse_memory_mib
from .settings import NAMESPACE, ConfigError


@dataclass(frozen=True)
class Amount:
    """Requests and limits of CPU (millicores) and memory (MiB), and storage (MiB)."""

    cpu_request_m: int = 0
    cpu_limit_m: int = 0
    memory_request_mib: int = 0
    memory_limit_mib: int = 0
    storage_mib: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.cpu_request_m + other.cpu_request_m, self.cpu_limit_m + other.cpu_limit_m,
                      self.memory_request_mib + other.memory_request_mib,
                      self.memory_limit_mib + other.memory_limit_mib, self.storage_mib + other.storage_mib)

    def times(self, n: int) -> Amount:
        return Amount(self.cpu_request_m * n, self.cpu_limit_m * n, self.memory_request_mib * n,
                      self.memory_limit_mib * n, self.storage_mib * n)

    def as_json(self) -> dict[str, Any]:
        return {"cpu": {"request": self.cpu_request_m / 1000, "limit": self.cpu_limit_m / 1000},
                "memoryMiB": {"request": self.memory_request_mib, "limit": self.memory_limit_mib},
                "storageMiB": self.storage_mib}


@dataclass(frozen=True)
class Line:
    """One service: what one instance takes, and how many instances run."""

    name: str
    tier: Tier
    instances: int
    each: Amount
    per_provider: bool = False
    """Instances multiply by the stack's cloudProviders (catalog role per_cloud_provider)."""
    zonal: bool = False
    """Its pods hold claims on zonal storage: each stays in the zone its volume is in."""

    @property
    def total(self) -> Amount:
        return self.each.times(self.instances)


@dataclass(frozen=True)
class Budget:
    nodes: int
    cpu_per_node_m: int
    memory_per_node_mib: int
    storage_mib: int
    reserved_cpu_m: int = 0
    """Per node, for the system (Kubernetes only)."""
    reserved_memory_mib: int = 0
    zones: int = 1
    """Zones the nodes spread over (node i in zone i mod zones)."""

    @property
    def cpu_m(self) -> int:
        return self.nodes * self.cpu_per_node_m

    @property
    def memory_mib(self) -> int:
        return self.nodes * self.memory_per_node_mib

    @property
    def pod_cpu_per_node_m(self) -> int:
        return self.cpu_per_node_m - self.reserved_cpu_m

    @property
    def pod_memory_per_node_mib(self) -> int:
        return self.memory_per_node_mib - self.reserved_memory_mib


@dataclass
class Footprint:
    stack: str
    target: str
    lines: list[Line]
    budget: Budget
    surge: Line | None = None
    """The largest pod a rolling update adds (Kubernetes), kept free on top of the requests."""
    problems: list[str] = field(default_factory=list)
    """Each a one-line error naming the config key and the fix (the stack does not fit)."""
    warnings: list[str] = field(default_factory=list)
    cost_by_tier: dict[str, float] = field(default_factory=dict)
    """USD a month of each tier's workloads at the stack's prices (infra/cost.py)."""
    pool_cost: float = 0.0
    """USD a month of the budget's nodes."""

    @property
    def total(self) -> Amount:
        return sum((line.total for line in self.lines), Amount())

    @property
    def instances(self) -> int:
        return sum(line.instances for line in self.lines)

    def tiers(self) -> dict[Tier, tuple[int, Amount]]:
        out: dict[Tier, tuple[int, Amount]] = {}
        for line in self.lines:
            n, amount = out.get(line.tier, (0, Amount()))
            out[line.tier] = (n + line.instances, amount + line.total)
        return {t: out[t] for t in Tier if t in out}

    @property
    def fits(self) -> bool:
        return not self.problems


# ---- the calculation ------------------------------------------------------------------

def instances(model: Resolved, eff: Effective) -> int:
    """How many copies of a service run: Docker runs one of each; Kubernetes runs the
    replicas, and the cost agent's replicas once per cloud provider."""
    if model.settings.target != "kubernetes":
        return 1
    return eff.replicas * (len(eff.providers) or 1)


def storage_mib(model: Resolved, eff: Effective) -> int:
    """Persistent storage of one instance: its volumes (a claim each on Kubernetes), and on
    Kubernetes its backup claim."""
    return sum(size for _, size in eff.volume_sizes) + eff.backup_mib


def per_instance(model: Resolved, eff: Effective) -> Amount:
    res = eff.resources
    limit_mib, limit_cpu = res.limits(model.settings.target)  # Guaranteed QoS: limits = requests
    return Amount(cpu_request_m=round(res.cpu * 1000), cpu_limit_m=round(limit_cpu * 1000),
                  memory_request_mib=res.memory_mib, memory_limit_mib=limit_mib,
                  storage_mib=storage_mib(model, eff))


def budget_of(model: Resolved) -> Budget:
    b, k8s = model.settings.budget, model.settings.target == "kubernetes"
    reserve = b.reserved_memory not in ("0", "0Mi")
    return Budget(nodes=b.nodes, cpu_per_node_m=round(b.cpu * 1000),
                  memory_per_node_mib=parse_memory_mib(b.memory), storage_mib=parse_memory_mib(b.storage),
                  reserved_cpu_m=round(b.reserved_cpu * 1000) if k8s else 0,
                  reserved_memory_mib=parse_memory_mib(b.reserved_memory) if k8s and reserve else 0,
                  zones=b.zones if k8s else 1)


def surge_of(model: Resolved, lines: list[Line]) -> Line | None:
    """The most a rolling update adds at once: over services whose rollout surges (the
    model's `Rollout`), its surge pods, by memory request, then CPU."""
    surge = {x.name: model.services[x.name].rollout.surge for x in lines}
    rolling = [x for x in lines if surge[x.name]]
    top = max(rolling, key=lambda x: (x.each.memory_request_mib * surge[x.name],
                                      x.each.cpu_request_m * surge[x.name]), default=None)
    return None if top is None else Line(top.name, top.tier, surge[top.name], replace(top.each, storage_mib=0))


def footprint(model: Resolved, stack: str) -> Footprint:
    zonal = not model.settings.kubernetes.regional_storage
    lines = [Line(eff.name, eff.tier, instances(model, eff), per_instance(model, eff),
                  per_provider=bool(eff.providers), zonal=zonal and bool(eff.volume_sizes))
             for tier in Tier for eff in model.in_tier(tier)]
    fp = Footprint(stack=stack, target=model.settings.target, lines=lines, budget=budget_of(model),
                   surge=surge_of(model, lines))
    _judge(fp)
    fp.problems.extend(schedule_problems(fp))
    items = cost.of_model(model)
    fp.cost_by_tier = cost.by_tier(items, model.settings.prices, cost.storage_class(model.settings))
    fp.pool_cost = cost.node_pool(model.settings)
    return fp


def _largest(fp: Footprint, value: Callable[[Amount], int], key: str, fmt: Callable[[int], str]) -> str:
    top = sorted((line for line in fp.lines if value(line.total)), key=lambda x: -value(x.total))[:3]
    parts = []
    for line in top:
        n = f"{line.instances} x {fmt(value(line.each))} = " if line.instances > 1 else ""
        more = (", .replicas" if line.instances > 1 else "") + (
            f", {NAMESPACE}:cloudProviders" if line.per_provider and line.instances > 1 else "")
        parts.append(f"{line.name} {n}{fmt(value(line.total))} ({NAMESPACE}:services.{line.name}.{key}{more})")
    return ", ".join(parts)


def room(fp: Footprint) -> str:
    """What the Kubernetes budget keeps free on top of the requests, in words ('' on Docker)."""
    b = fp.budget
    if fp.target != "kubernetes":
        return ""
    parts = []
    if b.reserved_memory_mib or b.reserved_cpu_m:
        parts.append(f"system reserve {mem(b.reserved_memory_mib)} and {cores(b.reserved_cpu_m)} cores per node "
                     f"({NAMESPACE}:budget.reservedMemory, .reservedCpu)")
    if fp.surge is not None:
        n = fp.surge.instances
        pods = f"one {fp.surge.name} pod" if n == 1 else f"{n} {fp.surge.name} pods"
        parts.append(f"rolling-update surge {mem(fp.surge.total.memory_request_mib)} and "
                     f"{cores(fp.surge.total.cpu_request_m)} cores ({pods})")
    return ", ".join(parts)


def _judge(fp: Footprint) -> None:
    total, b, k8s = fp.total, fp.budget, fp.target == "kubernetes"
    nodes = f"{b.nodes} nodes x " if b.nodes > 1 else ""
    per_node = f" per node, or {NAMESPACE}:budget.nodes" if b.nodes > 1 else ""
    surge = fp.surge.total if fp.surge is not None else Amount()
    kept = f" with room kept for the {room(fp)}" if room(fp) else ""
    if k8s and total.memory_request_mib <= b.memory_mib and (
            total.memory_request_mib + surge.memory_request_mib > b.nodes * b.pod_memory_per_node_mib):
        need = -(-(total.memory_request_mib + surge.memory_request_mib) // b.nodes) + b.reserved_memory_mib
        fp.problems.append(str(ConfigError(
            f"{NAMESPACE}:budget.memory",
            f"stack {fp.stack} requests {mem(total.memory_request_mib)} of memory, which does not fit "
            f"{nodes}{mem(b.memory_per_node_mib)}{kept}",
            f"raise {NAMESPACE}:budget.memory to at least {mem(need)}{per_node}")))
    if k8s and total.cpu_request_m <= b.cpu_m and (
            total.cpu_request_m + surge.cpu_request_m > b.nodes * b.pod_cpu_per_node_m):
        need_m = -(-(total.cpu_request_m + surge.cpu_request_m) // b.nodes) + b.reserved_cpu_m
        fp.problems.append(str(ConfigError(
            f"{NAMESPACE}:budget.cpu",
            f"stack {fp.stack} requests {cores(total.cpu_request_m)} CPU cores, which does not fit "
            f"{nodes}{cores(b.cpu_per_node_m)}{kept}",
            f"raise {NAMESPACE}:budget.cpu to at least {cores(need_m)}{per_node}")))
    if total.memory_request_mib > b.memory_mib:
        need = -(-total.memory_request_mib // b.nodes)
        fp.problems.append(str(ConfigError(
            f"{NAMESPACE}:budget.memory",
            f"stack {fp.stack} requests {mem(total.memory_request_mib)} of memory, more than its budget of "
            f"{nodes}{mem(b.memory_per_node_mib)}",
            f"raise {NAMESPACE}:budget.memory to at least {mem(need)}{per_node}, or shrink the largest: "
            + _largest(fp, lambda a: a.memory_request_mib, "memory", mem))))
    if total.cpu_request_m > b.cpu_m:
        need_m = -(-total.cpu_request_m // b.nodes)
        message = str(ConfigError(
            f"{NAMESPACE}:budget.cpu",
            f"stack {fp.stack} requests {cores(total.cpu_request_m)} CPU cores, more than its budget of "
            f"{nodes}{cores(b.cpu_per_node_m)}",
            f"raise {NAMESPACE}:budget.cpu to at least {cores(need_m)}{per_node}, or shrink the largest: "
            + _largest(fp, lambda a: a.cpu_request_m, "cpu", cores)))
        if k8s:
            fp.problems.append(message)
        else:
            fp.warnings.append(message + " (a warning on Docker: it reserves no CPU, so the containers share "
                               "the cores, each capped at its limit)")
    if total.storage_mib > b.storage_mib:
        shrink = ""
        if k8s:
            top = sorted((x for x in fp.lines if x.total.storage_mib), key=lambda x: -x.total.storage_mib)[:3]
            shrink = ", or lower " + ", ".join(
                f"{NAMESPACE}:kubernetes.storage.{x.name} ({mem(x.total.storage_mib)})" for x in top)
        fp.problems.append(str(ConfigError(
            f"{NAMESPACE}:budget.storage",
            f"stack {fp.stack} claims {mem(total.storage_mib)} of persistent storage, more than its budget of "
            f"{mem(b.storage_mib)}",
            f"raise {NAMESPACE}:budget.storage to at least {mem(total.storage_mib)}{shrink}")))
    if k8s:
        # A pod runs on one node: it must fit there beside the system reserve.
        for line in fp.lines:
            for key, need_each, have, reserved, fmt, what in (
                    ("memory", line.each.memory_request_mib, b.memory_per_node_mib, b.reserved_memory_mib, mem,
                     "memory"),
                    ("cpu", line.each.cpu_request_m, b.cpu_per_node_m, b.reserved_cpu_m, cores, "CPU cores")):
                if need_each > have - reserved:
                    less = f" less the system reserve {fmt(reserved)}" if reserved else ""
                    fp.problems.append(str(ConfigError(
                        f"{NAMESPACE}:services.{line.name}.{key}",
                        f"one {line.name} pod requests {fmt(need_each)} {what}, more than a node has "
                        f"({NAMESPACE}:budget.{key} {fmt(have)}{less})",
                        f"lower {NAMESPACE}:services.{line.name}.{key}, or raise {NAMESPACE}:budget.{key} "
                        "(the size of one node)")))


# ---- presentation ---------------------------------------------------------------------

def mem(mib: int) -> str:
    if mib >= 1024 and mib % 1024 == 0:
        return f"{mib // 1024}Gi"
    if mib >= 1024:
        return f"{mib / 1024:.2f}Gi"
    return f"{mib}Mi"


def cores(m: int) -> str:
    return f"{m / 1000:g}"


def _pct(used: int, budget: int) -> str:
    return f"{round(100 * used / budget)}%" if budget else "-"


def text(fp: Footprint) -> str:
    b, total = fp.budget, fp.total
    how = ("Docker: one instance of each service" if fp.target != "kubernetes" else
           "Kubernetes: replicas, the cost agent once per cloud provider")
    head = f"{'':2}{'service':<26}{'inst':>5}{'cpu req':>9}{'cpu lim':>9}{'mem req':>10}{'mem lim':>10}{'storage':>10}"

    def row(label: str, n: int | str, a: Amount, indent: int = 2) -> str:
        return (f"{'':{indent}}{label:<{28 - indent}}{n!s:>5}{cores(a.cpu_request_m):>9}{cores(a.cpu_limit_m):>9}"
                f"{mem(a.memory_request_mib):>10}{mem(a.memory_limit_mib):>10}"
                f"{mem(a.storage_mib) if a.storage_mib else '-':>10}")

    lines = [f"Capacity of stack {fp.stack} ({how}); requests and limits are totals over the instances", "", head]
    for tier, (n, amount) in fp.tiers().items():
        lines.append(f"{tier.value}")
        lines.extend(row(x.name, x.instances, x.total, 4) for x in fp.lines if x.tier is tier)
        lines.append(row(f"{tier.value} total", n, amount))
    lines.append("")
    lines.append(row("total", fp.instances, total, 0))
    def pool(per_node: str, total: str) -> str:
        return f"{b.nodes} nodes x {per_node} = {total}" if b.nodes > 1 else total

    lines.append(f"{'budget (' + NAMESPACE + ':budget)':<27}cpu {pool(cores(b.cpu_per_node_m), cores(b.cpu_m))} cores, "
                 f"memory {pool(mem(b.memory_per_node_mib), mem(b.memory_mib))}, storage {mem(b.storage_mib)}")
    lines.append(f"{'used (requests)':<27}cpu {_pct(total.cpu_request_m, b.cpu_m)}, "
                 f"memory {_pct(total.memory_request_mib, b.memory_mib)}, "
                 f"storage {_pct(total.storage_mib, b.storage_mib)}")
    if room(fp):
        surge = fp.surge.total if fp.surge is not None else Amount()
        kept_m = b.nodes * b.reserved_memory_mib + surge.memory_request_mib
        kept_c = b.nodes * b.reserved_cpu_m + surge.cpu_request_m
        lines.append(f"{'room kept':<27}{room(fp)}: cpu {cores(kept_c)} cores, memory {mem(kept_m)} in all; "
                     f"with the requests cpu {_pct(total.cpu_request_m + kept_c, b.cpu_m)}, "
                     f"memory {_pct(total.memory_request_mib + kept_m, b.memory_mib)}")
    lines.extend(schedule_text(fp))
    if fp.cost_by_tier:
        tiers = ", ".join(f"{t} {cost.dollars(x)}" for t, x in fp.cost_by_tier.items())
        what = "requests and claims" if fp.target == "kubernetes" else "memory limits"
        lines.append(f"{'monthly cost':<27}{cost.dollars(sum(fp.cost_by_tier.values()))} of {what} ({tiers}); "
                     f"the {b.nodes}-node budget {cost.dollars(fp.pool_cost)} ({NAMESPACE}:prices)")
    lines.append("")
    lines.extend(f"warning: {w}" for w in fp.warnings)
    lines.append(f"Within budget: {'yes' if fp.fits else 'NO'}")
    return "\n".join(lines)


def as_json(fp: Footprint) -> dict[str, Any]:
    b = fp.budget
    return {
        "stack": fp.stack,
        "target": fp.target,
        "services": [{"name": x.name, "tier": x.tier.value, "instances": x.instances,
                      "each": x.each.as_json(), "total": x.total.as_json()} for x in fp.lines],
        "tiers": {t.value: {"instances": n, **a.as_json()} for t, (n, a) in fp.tiers().items()},
        "total": {"instances": fp.instances, **fp.total.as_json()},
        "budget": {"nodes": b.nodes, "cpuPerNode": b.cpu_per_node_m / 1000, "memoryPerNodeMiB": b.memory_per_node_mib,
                   "cpu": b.cpu_m / 1000, "memoryMiB": b.memory_mib, "storageMiB": b.storage_mib,
                   "reservedCpuPerNode": b.reserved_cpu_m / 1000, "reservedMemoryPerNodeMiB": b.reserved_memory_mib},
        "surge": None if fp.surge is None else {"service": fp.surge.name, **fp.surge.total.as_json()},
        "packing": _schedule_json(fp),
        "monthlyCost": {"tiers": {t: round(x, 2) for t, x in fp.cost_by_tier.items()},
                        "total": round(sum(fp.cost_by_tier.values()), 2), "budget": round(fp.pool_cost, 2)},
        "withinBudget": fp.fits,
        "problems": fp.problems,
        "warnings": fp.warnings,
    }


def summary_line(model: Resolved | None, stack: str) -> str:
    """The one line `plan` prints under its resources."""
    if model is None:
        return ""
    fp = footprint(model, stack)
    t, b = fp.total, fp.budget
    verdict = "within budget" if fp.fits else (
        f"OVER BUDGET: see `python -m infra capacity --stack {stack}`")
    return (f"\nCapacity (requests of {fp.instances} instances): cpu {cores(t.cpu_request_m)} of "
            f"{cores(b.cpu_m)} cores, memory {mem(t.memory_request_mib)} of {mem(b.memory_mib)}, "
            f"storage {mem(t.storage_mib)} of {mem(b.storage_mib)}: {verdict}"
            f"{' (cpu above budget: a warning on Docker)' if fp.warnings and fp.fits else ''}")


# ---- packing: pods onto nodes, and losing a node (N+1) -----------------------------------

@dataclass(frozen=True)
class Pod:
    """One pod's requests (Kubernetes schedules by these)."""

    name: str
    cpu_m: int
    memory_mib: int
    zonal: bool = False
    """It holds a claim on zonal storage: once placed, it may only move within its zone."""


@dataclass
class Packing:
    """Pods placed on nodes of one size (what each node offers pods: its size less the
    system reserve), first-fit decreasing: largest first, each onto the first node it fits."""

    nodes: list[list[Pod]]
    unplaced: list[Pod]

    @property
    def fits(self) -> bool:
        return not self.unplaced


def pack(pods: list[Pod], nodes: int, cpu_m: int, memory_mib: int) -> Packing:
    """First-fit decreasing by each pod's larger share of one node (memory or CPU), ties by
    name: a pod that fits no node stays unplaced. Sums can fit where this does not (two nodes
    with 1 GiB free each do not hold one 1.5 GiB pod)."""
    def share(p: Pod) -> float:
        return max(p.memory_mib / memory_mib if memory_mib else 1.0, p.cpu_m / cpu_m if cpu_m else 1.0)

    placed: list[list[Pod]] = [[] for _ in range(nodes)]
    free = [[cpu_m, memory_mib] for _ in range(nodes)]
    unplaced: list[Pod] = []
    for p in sorted(pods, key=lambda p: (-share(p), p.name)):
        for i, room_left in enumerate(free):
            if p.cpu_m <= room_left[0] and p.memory_mib <= room_left[1]:
                room_left[0] -= p.cpu_m
                room_left[1] -= p.memory_mib
                placed[i].append(p)
                break
        else:
            unplaced.append(p)
    return Packing(placed, unplaced)


def nodes_needed(pods: list[Pod], cpu_m: int, memory_mib: int) -> int | None:
    """The fewest nodes of this size first-fit decreasing packs every pod onto (None: a pod
    is larger than one node)."""
    if any(p.cpu_m > cpu_m or p.memory_mib > memory_mib for p in pods):
        return None
    n = 1
    while not pack(pods, n, cpu_m, memory_mib).fits:
        n += 1
    return n


def pods_of(fp: Footprint, *, surge: bool) -> list[Pod]:
    """Every pod of the stack (each line's instances), and with `surge` the largest rolling
    update's extra pods (`Footprint.surge`, from each service's `Effective.rollout.surge`)."""
    pods = [Pod(x.name, x.each.cpu_request_m, x.each.memory_request_mib, x.zonal)
            for x in fp.lines for _ in range(x.instances)]
    if surge and fp.surge is not None:
        pods += [Pod(f"{fp.surge.name} (surge)", fp.surge.each.cpu_request_m, fp.surge.each.memory_request_mib)
                 for _ in range(fp.surge.instances)]
    return pods


# Losing a node is not a repack: the scheduler places each pod once, spreading them (its
# default scoring prefers the least allocated node, a balanced one, and a node without a
# sibling of the same workload), and after a drain only the evicted pods move, each into
# the free room one surviving node has left. A pool where the pods would repack onto one
# node fewer can still leave a large pod Pending: every node keeps a little free room, and
# no node enough. So N+1 is decided by placing the pods as the scheduler spreads them and
# then taking each node away in turn; and because where a pod lands depends on the order
# the pods arrive (creation, a rollout, a restart), three orders are tried: as created
# (tier by tier), largest first and smallest first. Any evicted pod without a node in any
# of them fails the check.

ORDERS: tuple[tuple[str, Callable[[list[Pod]], list[Pod]]], ...] = (
    ("as created", lambda pods: list(pods)),
    ("largest first", lambda pods: sorted(pods, key=lambda p: (-p.cpu_m, -p.memory_mib, p.name))),
    ("smallest first", lambda pods: sorted(pods, key=lambda p: (p.cpu_m, p.memory_mib, p.name))),
)


def _best_node(p: Pod, free: list[list[int]], on: list[list[Pod]], cpu_m: int, memory_mib: int,
               allowed: set[int] | None = None) -> int | None:
    """The node the default scheduler would score highest for this pod (None: no node has
    room for its CPU and its memory): least allocated after placing it, balanced between CPU
    and memory, and a node without a sibling of the same workload first (the pod spread).
    `allowed`: only these nodes (a zonal volume's zone)."""
    best: tuple[float, int] | None = None
    for i, (c, m) in enumerate(free):
        if (allowed is not None and i not in allowed) or p.cpu_m > c or p.memory_mib > m:
            continue
        cpu_left, mem_left = (c - p.cpu_m) / cpu_m, (m - p.memory_mib) / memory_mib
        siblings = sum(1 for q in on[i] if q.name == p.name)
        score = (cpu_left + mem_left) / 2 + (1 - abs(cpu_left - mem_left)) - 2 * siblings
        if best is None or score > best[0]:
            best = (score, i)
    return None if best is None else best[1]


def spread(pods: list[Pod], nodes: int, cpu_m: int, memory_mib: int) -> Packing:
    """Pods placed in the order given, each where the default scheduler would put it
    (`_best_node`), not packed: running pods are never moved to make room."""
    free = [[cpu_m, memory_mib] for _ in range(nodes)]
    placed: list[list[Pod]] = [[] for _ in range(nodes)]
    unplaced: list[Pod] = []
    for p in pods:
        i = _best_node(p, free, placed, cpu_m, memory_mib)
        if i is None:
            unplaced.append(p)
            continue
        free[i][0] -= p.cpu_m
        free[i][1] -= p.memory_mib
        placed[i].append(p)
    return Packing(placed, unplaced)


@dataclass(frozen=True)
class Loss:
    """The worst node loss found: the pods left Pending after it (none: the stack survives)."""

    order: str
    """How the pods arrived (ORDERS) in the placement that failed."""
    node: int
    """The node taken away (its index in that placement; -1: the pods spread as the scheduler
    places them do not all fit the full pool)."""
    stranded: tuple[Pod, ...]
    most_free: tuple[int, int]
    """The most CPU (millicores) and memory (MiB) free on one surviving node when the first
    stranded pod looked for a place (in its zone when `zone_bound`)."""
    zone_bound: bool = False
    """The first stranded pod could only move within the lost node's zone (a zonal claim)."""
    zone_left: int = 0
    """Nodes left in that zone."""


def lose_a_node(pods: list[Pod], nodes: int, cpu_m: int, memory_mib: int, zones: int = 1) -> Loss | None:
    """Every order of ORDERS, every node taken away: the first placement whose evicted pods
    do not all find a surviving node (None: every evicted pod always does); a zonal pod only
    a node of the lost node's zone (node i is in zone i mod `zones`). Pods that spread does
    not place even on the full pool are a loss too (`node` -1)."""
    if nodes < 2:
        return None
    for order, arrange in ORDERS:
        placed = spread(arrange(pods), nodes, cpu_m, memory_mib)
        if placed.unplaced:  # spread, they do not even all place on the full pool
            return Loss(order, -1, tuple(placed.unplaced), (0, 0))
        for lost in range(nodes):
            keep = [i for i in range(nodes) if i != lost]
            same_zone = {k for k, i in enumerate(keep) if i % zones == lost % zones}
            on = [list(placed.nodes[i]) for i in keep]
            free = [[cpu_m - sum(p.cpu_m for p in n), memory_mib - sum(p.memory_mib for p in n)] for n in on]
            stranded: list[Pod] = []
            most_free = (0, 0)
            bound = False
            evicted = sorted(placed.nodes[lost], key=lambda p: (-p.cpu_m, -p.memory_mib, p.name))
            for p in evicted:
                allowed = same_zone if p.zonal and zones > 1 else None
                i = _best_node(p, free, on, cpu_m, memory_mib, allowed)
                if i is None:
                    if not stranded:
                        bound = allowed is not None
                        room_in = [f for k, f in enumerate(free) if allowed is None or k in allowed]
                        most_free = (max((c for c, _ in room_in), default=0), max((m for _, m in room_in), default=0))
                    stranded.append(p)
                    continue
                free[i][0] -= p.cpu_m
                free[i][1] -= p.memory_mib
                on[i].append(p)
            if stranded:
                return Loss(order, lost, tuple(stranded), most_free, bound, len(same_zone))
    return None


def nodes_to_survive(pods: list[Pod], nodes: int, cpu_m: int, memory_mib: int, zones: int = 1) -> int | None:
    """The fewest nodes of this size, from `nodes` up and a whole number per zone, whose pods
    survive losing one (None: a pod is larger than a node, or no pool up to one node per pod
    and zone does)."""
    if any(p.cpu_m > cpu_m or p.memory_mib > memory_mib for p in pods):
        return None
    start = max(nodes, 2)
    start += -start % zones
    for n in range(start, (len(pods) + 2) * zones + 1, zones):
        if not spread(pods, n, cpu_m, memory_mib).unplaced and lose_a_node(pods, n, cpu_m, memory_mib, zones) is None:
            return n
    return None


@dataclass(frozen=True)
class Schedule:
    """Kubernetes: the pods with one rollout's surge packed onto the budget's nodes, and
    the pods spread as the scheduler places them with each node taken away in turn (all
    nodes of a budget are one size)."""

    nodes: int
    needed: int | None
    """Nodes the pods and the surge need, packed (None: one pod is larger than a node)."""
    loss: Loss | None
    """The node loss that leaves pods Pending (None: none does). A drain or a failure is not
    a rollout, so no surge."""
    to_survive: int | None
    """The fewest nodes of this size that survive a loss (when `loss` is not None)."""

    @property
    def fits(self) -> bool:
        return self.needed is not None and self.needed <= self.nodes

    @property
    def survives_a_node(self) -> bool:
        return self.nodes > 1 and self.loss is None


def schedule(fp: Footprint) -> Schedule | None:
    """How the pods pack and spread (None on Docker: one host, no scheduler)."""
    if fp.target != "kubernetes":
        return None
    b = fp.budget
    cpu, memory = b.pod_cpu_per_node_m, b.pod_memory_per_node_mib
    pods = pods_of(fp, surge=False)
    loss = lose_a_node(pods, b.nodes, cpu, memory, b.zones) if b.nodes > 1 else None
    return Schedule(b.nodes, nodes_needed(pods_of(fp, surge=True), cpu, memory), loss,
                    nodes_to_survive(pods, b.nodes + 1, cpu, memory, b.zones) if loss is not None else None)


def schedule_problems(fp: Footprint) -> list[str]:
    """One-line errors, each naming the one number that does not fit: the nodes the pods
    need against `budget.nodes` (Kubernetes), or the limits against `budget.memory` (Docker,
    which enforces limits and reserves nothing)."""
    b = fp.budget
    if fp.target != "kubernetes":
        limit = fp.total.memory_limit_mib
        if limit <= b.memory_mib or fp.total.memory_request_mib > b.memory_mib:
            return []
        return [str(ConfigError(
            f"{NAMESPACE}:budget.memory",
            f"stack {fp.stack}'s memory limits add up to {mem(limit)}, more than its budget of "
            f"{mem(b.memory_mib)} (Docker enforces limits, not requests)",
            f"raise {NAMESPACE}:budget.memory to at least {mem(limit)}, or lower the largest limits: "
            + _largest(fp, lambda a: a.memory_limit_mib, "memory", mem)))]
    s = schedule(fp)
    if s is None or s.needed is None:
        return []  # a pod larger than a node: _judge names it
    shape = (f"{cores(b.cpu_per_node_m)} cores / {mem(b.memory_per_node_mib)} "
             f"({cores(b.pod_cpu_per_node_m)} / {mem(b.pod_memory_per_node_mib)} for pods after the system reserve)")
    out = []
    if not s.fits:
        out.append(str(ConfigError(
            f"{NAMESPACE}:budget.nodes",
            f"stack {fp.stack}'s {len(pods_of(fp, surge=True))} pods with a rollout's surge pack onto {s.needed} "
            f"nodes of {shape}, not {b.nodes}",
            f"raise {NAMESPACE}:budget.nodes to at least {s.needed}, or the node size "
            f"({NAMESPACE}:budget.cpu, .memory)")))
    elif s.loss is not None:
        first = s.loss.stranded[0]
        more = f" and {len(s.loss.stranded) - 1} more" if len(s.loss.stranded) > 1 else ""
        to = f"at least {s.to_survive}" if s.to_survive else "more"
        lost = ("a node's pods must move to the free room the others have left" if s.loss.node >= 0 else
                "even before a node is lost (the scheduler does not pack)")
        if s.loss.zone_bound and not s.loss.zone_left:
            where = (f"bound to the lost node's zone by its volume, finds no node left in that zone "
                     f"({b.nodes} nodes over {NAMESPACE}:budget.zones {b.zones})")
        elif s.loss.zone_bound:
            where = (f"bound to the lost node's zone by its volume, finds no node there (the most one has free: "
                     f"{cores(s.loss.most_free[0])} cores, {mem(s.loss.most_free[1])})")
        else:
            where = (f"finds no node (the most one has free: {cores(s.loss.most_free[0])} cores, "
                     f"{mem(s.loss.most_free[1])})")
        zonal_fix = (f", or {NAMESPACE}:kubernetes.regionalStorage with a StorageClass that replicates volumes "
                     "across zones" if s.loss.zone_bound else "")
        per_zone = f" ({s.to_survive // b.zones} per zone)" if s.to_survive and b.zones > 1 else ""
        out.append(str(ConfigError(
            f"{NAMESPACE}:budget.nodes",
            f"stack {fp.stack} does not survive losing a node: spread over {b.nodes} nodes of {shape}, {lost}, "
            f"a {first.name} pod ({cores(first.cpu_m)} cores, {mem(first.memory_mib)}){more}"
            f"{',' if s.loss.zone_bound else ''} {where}",
            f"raise {NAMESPACE}:budget.nodes to {to}{per_zone}, or the node size ({NAMESPACE}:budget.cpu, .memory)"
            f"{zonal_fix}")))
    return out


def schedule_text(fp: Footprint) -> list[str]:
    """The packing lines of the report ([] on Docker)."""
    s = schedule(fp)
    if s is None:
        return []
    if s.needed is None:
        return [f"{'packing':<27}a pod is larger than one node"]
    return [f"{'packing':<27}pods and one rollout's surge need {s.needed} of {s.nodes} nodes "
            f"(first-fit decreasing, after the system reserve): {'fits' if s.fits else 'DOES NOT FIT'}",
            f"{'losing a node (N+1)':<27}" + ("one node: nothing to lose it to" if s.nodes < 2 else
                f"each node taken away in turn, its pods find room on the {s.nodes - 1} left: survives"
                if s.loss is None else
                f"a {s.loss.stranded[0].name} pod finds no room on the {s.nodes - 1} left: DOES NOT SURVIVE"
                + (f" (needs {s.to_survive} nodes)" if s.to_survive else ""))]


def _schedule_json(fp: Footprint) -> dict[str, Any] | None:
    s = schedule(fp)
    return None if s is None else {"nodes": s.nodes, "needed": s.needed, "fits": s.fits,
                                   "survivesANode": s.survives_a_node, "nodesToSurvive": s.to_survive,
                                   "stranded": [] if s.loss is None else [p.name for p in s.loss.stranded]}
