"""`docs`: write docs/PORTS.md and docs/topology-<stack>.svg from the catalog and stacks.

    python -m infra docs            # (re)write the files; prints which changed
    python -m infra docs --check    # exit 1 if the committed files differ (CI, scripts/test.sh)

One PORTS.md with a section per stack (every `Pulumi.<stack>.yaml`, or the `--stack`s
given), and one SVG topology picture per stack. Output is deterministic.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from .. import docs
from ..stack import ROOT

HELP = "write docs/PORTS.md and docs/topology-<stack>.svg from the catalog (--check: fail when they are stale)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stack", dest="stacks", action="append", default=None, metavar="STACK",
                   help="document only this stack (repeatable; default: every Pulumi.<stack>.yaml)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when the committed docs differ from what this would write")
    p.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    generated = docs.files(args.stacks)
    root: Path = args.root
    if args.check:
        stale = docs.stale(root, generated)
        if not stale:
            print(f"docs are up to date: {', '.join(sorted(generated))}")
            return 0
        print(f"error: generated docs are stale: {', '.join(stale)} differ from what the catalog and stack files "
              "give. Fix: run `python -m infra docs` and commit the result", file=sys.stderr)
        for rel in stale:
            path = root / rel
            old = path.read_text().splitlines() if path.exists() else []
            diff = list(difflib.unified_diff(old, generated[rel].splitlines(), f"{rel} (committed)",
                                             f"{rel} (generated)", lineterm="", n=1))
            for line in diff[:40]:
                print(line, file=sys.stderr)
            if len(diff) > 40:
                print(f"... ({len(diff) - 40} more diff lines)", file=sys.stderr)
        return 1
    written = docs.write(root, generated)
    for rel in sorted(generated):
        print(f"{'wrote    ' if rel in written else 'unchanged'} {rel}")
    return 0
