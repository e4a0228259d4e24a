"""Runtime settings that follow a service's memory limit, one rule per kind, computed once
per service and stack (resolve.resolve puts them on `Effective`; both backends read them).

- Go (`Runtime("go")`): GOMEMLIMIT at `GO_SHARE` of the limit, so the garbage collector
  works harder before the kernel's OOM killer would (Go's soft memory limit, Go 1.19+);
  the rest is for goroutine stacks, cgo and the page cache the limit counts.
- Node (`Runtime("node")`): NODE_OPTIONS=--max-old-space-size at `NODE_SHARE` of the
  limit: V8's old generation, without which it sizes its heap from the host's memory;
  the rest is new space, code and buffers outside the heap.
- Celery (`Runtime("celery", child_mib)`): a prefork worker runs one parent and
  `--concurrency` children, each `child_mib` resident at most (`--max-memory-per-child`,
  KiB: a child that exceeds it is replaced after its task). Concurrency is what fits the
  limit beside the parent, never fewer than one; without it Celery starts one child per
  CPU of the node.

A store's own settings (PostgreSQL, ClickHouse, Redis) are the catalog's `sized_command`
(model.FromLimit and the others), rendered here too.
"""

from __future__ import annotations

from .model import FromClients, FromEphemeral, FromLimit, FromVolume, FromVolumeDays, Service, Sized

GO_SHARE = 0.8
NODE_SHARE = 0.75


def concurrency(service: Service, limit_mib: int) -> int:
    """Celery worker processes that fit the limit beside the parent and the liveness probe
    (`celery inspect ping` loads the same application, as large as a child, in the same
    container) (1 for any other service)."""
    rt = service.runtime
    if rt is None or rt.kind != "celery":
        return 1
    return max(1, (limit_mib - 2 * rt.child_mib) // rt.child_mib)


def env(service: Service, limit_mib: int) -> tuple[tuple[str, str], ...]:
    """The environment a service's runtime reads its memory setting from."""
    rt = service.runtime
    if rt is None:
        return ()
    if rt.kind == "go":
        return (("GOMEMLIMIT", f"{int(limit_mib * GO_SHARE)}MiB"),)
    if rt.kind == "node":
        return (("NODE_OPTIONS", f"--max-old-space-size={int(limit_mib * NODE_SHARE)}"),)
    return ()


def args(service: Service, limit_mib: int) -> tuple[str, ...]:
    """Arguments a service's runtime takes its memory setting as (after its command)."""
    rt = service.runtime
    if rt is None or rt.kind != "celery":
        return ()
    return (f"--concurrency={concurrency(service, limit_mib)}", f"--max-memory-per-child={rt.child_mib * 1024}")


def sized(value: Sized, *, limit_mib: int, volumes: dict[str, int], ephemeral_mib: int,
          client_connections: int) -> tuple[str, ...]:
    """One `sized_command` entry rendered for this stack."""
    if isinstance(value, FromLimit):
        return value.render(limit_mib)
    if isinstance(value, FromVolume):
        return value.render(volumes[value.volume])
    if isinstance(value, FromVolumeDays):
        return value.render(volumes[value.volume])
    if isinstance(value, FromEphemeral):
        return value.render(ephemeral_mib)
    if isinstance(value, FromClients):
        return value.render_n(client_connections)
    raise TypeError(value)


def shm_mib(service: Service, limit_mib: int) -> int:
    """Size of a memory-backed /dev/shm (0: none asked)."""
    return int(limit_mib * service.shm_share)
