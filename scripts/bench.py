#!/usr/bin/env python3
"""Benchmark of the offline tools: wall time, CPU time and peak memory, against the floor.

    venv/bin/python scripts/bench.py                      # the whole table (a few minutes)
    venv/bin/python scripts/bench.py --runs 3 --sizes 21,100 --timeout 60
    venv/bin/python scripts/bench.py --profile plan dev 100   # where the time goes (cProfile)

Every measurement is a fresh process, reaped with os.wait4, so its rusage (CPU time,
ru_maxrss) is that process's own and not a maximum over earlier children. Cells are run
round-robin (run 1 of every cell, then run 2, ...) so that load from other processes on
the machine spreads over all of them; the table shows medians.

What is measured:
- the floor: `python -c "import pulumi, pulumi_docker, pulumi_kubernetes"`;
- the public CLI on the real stacks: `plan` and `capacity` for each stack, `check` for
  each stack (when infra/commands/check.py exists), `render` for each Kubernetes stack;
- the same tools on synthetic catalogs (infra/synthetic.py) of --sizes services. For
  those the child is this script (`--child`) with OPTIINFRA_SYNTHETIC_SERVICES=N: it builds
  the catalog, makes it the default catalog of the process and calls the same
  `infra.cli.main`. 21 services is the real catalog on Docker (22 with the Kubernetes-only
  sign-in proxy), so the two rows should agree.

A run that exceeds --timeout is stopped and shown as "> T s"; a cell whose runs have
used --cell-seconds is not repeated (its row says how many runs it got).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_SERVICES = "OPTIINFRA_SYNTHETIC_SERVICES"
ENV_PROFILE = "OPTIINFRA_BENCH_PROFILE"
FLOOR = "import pulumi, pulumi_docker, pulumi_kubernetes"


# ---- child: run one tool in-process on a synthetic catalog -----------------------------------

def child(argv: list[str]) -> int:
    """Run `python -m infra ARGV` with a synthetic catalog of $OPTIINFRA_SYNTHETIC_SERVICES."""
    sys.path.insert(0, str(ROOT))
    n = int(os.environ[ENV_SERVICES])
    from infra import catalog as catalog_module
    from infra.synthetic import synthetic_catalog

    synthetic = synthetic_catalog(n)
    real = catalog_module.default_catalog

    def default_catalog() -> object:
        return synthetic

    # Modules imported from here on bind the synthetic catalog (`from .catalog import
    # default_catalog`); any imported already are patched in place.
    catalog_module.default_catalog = default_catalog  # type: ignore[assignment]
    for name, module in list(sys.modules.items()):
        if name.startswith(("infra.", "policies")) and getattr(module, "default_catalog", None) is real \
                and name != "infra.synthetic":
            module.default_catalog = default_catalog  # type: ignore[attr-defined]
    from infra import cli

    if os.environ.get(ENV_PROFILE):
        import cProfile
        import pstats

        prof = cProfile.Profile()
        code = prof.runcall(cli.main, argv)
        stats = pstats.Stats(prof, stream=sys.stderr)
        stats.sort_stats("cumulative").print_stats(35)
        stats.sort_stats("tottime").print_stats(25)
        return code
    return cli.main(argv)


# ---- parent: measure ----------------------------------------------------------------------

@dataclass
class Sample:
    wall: float
    cpu: float
    rss_mib: float
    code: int


@dataclass
class Cell:
    tool: str
    stack: str
    services: int | None  # None: the real catalog through the public CLI
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    timed_out: bool = False
    failed: str = ""

    @property
    def label(self) -> str:
        where = "real catalog, CLI" if self.services is None else f"{self.services} services"
        return f"{self.tool} {self.stack} ({where})"

    def median(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples) if self.samples else math.nan

    @property
    def spent(self) -> float:
        return sum(s.wall for s in self.samples)


def measure(argv: list[str], env: dict[str, str], timeout: float) -> Sample | None:
    """One fresh process; its own rusage via wait4. None when it exceeds the timeout."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            return None
        time.sleep(0.002)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err.strip()[-400:]}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode)


def stack_targets() -> dict[str, str]:
    """Every stack file and its target (docker or kubernetes)."""
    sys.path.insert(0, str(ROOT))
    from infra import stack

    return {s: stack.model_of(s).settings.target for s in stack.available_stacks()}


def cells(python: str, sizes: list[int], outdir: Path) -> tuple[Cell, list[Cell], list[str]]:
    notes: list[str] = []
    commands = {p.stem for p in (ROOT / "infra" / "commands").glob("*.py")}
    targets = stack_targets()
    stacks = list(targets)
    tools: list[tuple[str, str]] = [("plan", s) for s in stacks]
    if "check" in commands:
        tools += [("check", s) for s in stacks]
    else:
        notes.append("check: skipped, infra/commands/check.py does not exist yet")
    kubernetes = [s for s, t in targets.items() if t == "kubernetes"]
    if "render" in commands and kubernetes:
        tools += [("render", s) for s in kubernetes]
    else:
        notes.append("render: skipped, infra/commands/render.py or a Kubernetes stack does not exist yet")
    if "capacity" in commands:
        tools += [("capacity", s) for s in stacks]

    def tool_args(tool: str, stack: str, tag: str) -> list[str]:
        extra = ["--out", str(outdir / tag)] if tool == "render" else []
        return [tool, "--stack", stack, *extra]

    floor = Cell("floor", "-", None, [python, "-c", FLOOR])
    out = [Cell(t, s, None, [python, "-m", "infra", *tool_args(t, s, f"{t}-{s}-cli")]) for t, s in tools]
    for n in sizes:
        for t, s in tools:
            if t == "capacity":
                continue  # no render: it reads the model only
            out.append(Cell(t, s, n, [python, str(Path(__file__).resolve()), "--child",
                                      *tool_args(t, s, f"{t}-{s}-{n}")], {ENV_SERVICES: str(n)}))
    return floor, out, notes


def fmt_s(cell: Cell, timeout: float) -> str:
    if cell.failed:
        return "failed"
    if not cell.samples:
        return f"> {timeout:g} s"
    return f"{cell.median('wall'):.2f}" + (f" (then > {timeout:g} s)" if cell.timed_out else "")


def table(floor: Cell, rows: list[Cell], timeout: float) -> list[str]:
    f_wall, f_cpu = floor.median("wall"), floor.median("cpu")
    lines = ["| tool | stack | catalog | runs | wall median (s) | x floor | CPU median (s) | x floor (CPU) "
             "| peak RSS (MiB) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for c in [floor, *rows]:
        catalog = "-" if c.tool == "floor" else ("real (CLI)" if c.services is None else f"{c.services} synthetic")
        if c.samples:
            figures = (f"{c.median('wall') / f_wall:.2f} | {c.median('cpu'):.2f} | {c.median('cpu') / f_cpu:.2f} | "
                       f"{c.median('rss_mib'):.0f}")
        else:
            figures = "- | - | - | -"
        lines.append(f"| {c.tool} | {c.stack} | {catalog} | {len(c.samples)} | {fmt_s(c, timeout)} | {figures} |")
    return lines


def verdicts(floor: Cell, rows: list[Cell], sizes: list[int], timeout: float) -> list[str]:
    out = []
    docker = [s for s, t in stack_targets().items() if t == "docker"]
    for plan in (c for c in rows if c.tool == "plan" and c.stack in docker and c.services is None and c.samples):
        for attr, what in (("wall", "wall"), ("cpu", "CPU")):
            r = plan.median(attr) / floor.median(attr)
            out.append(f"- plan {plan.stack} within 1.5x the floor ({what} time): {'MET' if r <= 1.5 else 'MISSED'} "
                       f"({r:.2f}x)")
    small, large = (min(sizes), max(sizes)) if sizes else (0, 0)
    for c in rows:
        if c.services != large or small == large:
            continue
        base = next(x for x in rows if (x.tool, x.stack, x.services) == (c.tool, c.stack, small))
        mid = [x for x in rows if (x.tool, x.stack) == (c.tool, c.stack) and x.services not in (None, small, large)]
        if not base.samples:
            continue
        b = base.median("wall")
        if not c.samples:
            out.append(f"- {c.tool} {c.stack}: {large} services in under 10x {small} ({10 * b:.1f} s): MISSED "
                       f"(a run took > {timeout:g} s)")
            continue
        r = c.median("wall") / b
        # The growth exponent of the part above the floor: 1 linear, 2 quadratic.
        f = floor.median("wall")
        lo = mid[0] if mid and mid[0].samples else base
        k = math.log(max(c.median("wall") - f, 1e-3) / max(lo.median("wall") - f, 1e-3)) / math.log(
            c.services / lo.services) if lo.services and c.services else math.nan  # type: ignore[operator]
        out.append(f"- {c.tool} {c.stack}: {large} services in under 10x {small}: "
                   f"{'MET' if r < 10 else 'MISSED'} ({r:.1f}x; growth exponent above the floor from "
                   f"{lo.services} to {large} services: {k:.2f}, 1 is linear, 2 quadratic)")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="runs per cell; the table shows medians (default 5)")
    p.add_argument("--sizes", default="21,100,500", help="synthetic catalog sizes (default 21,100,500)")
    p.add_argument("--timeout", type=float, default=60, help="seconds before a run is stopped (default 60)")
    p.add_argument("--cell-seconds", type=float, default=40,
                   help="stop repeating a cell once its runs took this long (default 40)")
    p.add_argument("--only", default="", help="comma-separated tools to measure (default: all)")
    p.add_argument("--profile", nargs=3, metavar=("TOOL", "STACK", "N"),
                   help="run one tool once under cProfile on a synthetic catalog of N services and print the top")
    p.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        return child(args.child)
    python = str(ROOT / "venv" / "bin" / "python") if (ROOT / "venv" / "bin" / "python").exists() else sys.executable
    if args.profile:
        tool, stack, n = args.profile
        out = tempfile.mkdtemp(prefix="optiinfra-bench-")
        extra = ["--out", out] if tool == "render" else []
        env = {**os.environ, ENV_SERVICES: n, ENV_PROFILE: "1"}
        subprocess.run([python, str(Path(__file__).resolve()), "--child", tool, "--stack", stack, *extra],
                       cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=False)
        shutil.rmtree(out, ignore_errors=True)
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    outdir = Path(tempfile.mkdtemp(prefix="optiinfra-bench-"))
    try:
        floor, rows, notes = cells(python, sizes, outdir)
        if args.only:
            keep = set(args.only.split(","))
            rows = [c for c in rows if c.tool in keep]
        load0, started = os.getloadavg(), time.perf_counter()
        for i in range(args.runs):
            for c in [floor, *rows]:
                if c.timed_out or c.failed or (i and c.spent >= args.cell_seconds):
                    continue
                try:
                    sample = measure(c.argv, c.env, args.timeout)
                except RuntimeError as err:
                    c.failed = str(err)
                    continue
                if sample is None:
                    c.timed_out = True
                else:
                    c.samples.append(sample)
                print(f"  run {i + 1}: {c.label}: "
                      f"{'timeout' if sample is None else f'{sample.wall:.2f} s, {sample.rss_mib:.0f} MiB'}",
                      file=sys.stderr, flush=True)
        elapsed, load1 = time.perf_counter() - started, os.getloadavg()
    finally:
        shutil.rmtree(outdir, ignore_errors=True)

    print(f"## Benchmark ({os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.runs} runs per cell, "
          f"load average {load0[0]:.1f} at start and {load1[0]:.1f} at end, {elapsed:.0f} s in all)\n")
    print("\n".join(table(floor, rows, args.timeout)))
    print("\nTargets:")
    print("\n".join(verdicts(floor, rows, sizes, args.timeout)))
    for c in rows:
        if c.failed:
            print(f"- {c.label} failed: {c.failed}")
    for note in notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
