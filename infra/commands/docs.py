"""`docs`: write the generated docs from the catalog, the settings models and the stacks.

    python -m infra docs            # (re)write the files; prints which changed
    python -m infra docs --check    # exit 1 if they are stale or the README's layout is (CI, scripts/test.sh)

docs/PORTS.md with a section per stack (every `Pulumi.<stack>.yaml`, or the `--stack`s
given), one SVG topology picture per stack, the overview dashboard's layout
(docs/dashboard-overview.svg), and docs/settings.md (every setting with its
type, default and field docstring, and the credentials). Output is deterministic.
`--check` also fails when a module under infra/ or policies/, or a script under scripts/,
is missing from the README's layout section, or the section lists one that is gone.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from .. import docs
from ..stack import ROOT

HELP = ("write docs/PORTS.md, docs/settings.md, docs/topology-<stack>.svg and docs/dashboard-overview.svg "
        "(--check: fail when they or the README's layout are stale)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stack", dest="stacks", action="append", default=None, metavar="STACK",
                   help="document only this stack (repeatable; default: every Pulumi.<stack>.yaml)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when the committed docs differ from what this would write, "
                        "or the README's layout section misses a module")
    p.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    generated = docs.files(args.stacks)
    root: Path = args.root
    if args.check:
        stale = docs.stale(root, generated)
        layout = docs.layout_problems(root)
        if not stale and not layout:
            print(f"docs are up to date: {', '.join(sorted(generated))}, and the layout in {docs.README}")
            return 0
        if layout:
            print(f"error: the '{docs.LAYOUT_HEADING}' section of {docs.README} is stale: {'; '.join(layout)}. "
                  "Fix: give each module a line there (braces group several: infra/{a,b}.py)", file=sys.stderr)
        if not stale:
            return 1
        print(f"error: generated docs are stale: {', '.join(stale)} differ from what the catalog, the settings "
              "and the stack files give. Fix: run `python -m infra docs` and commit the result", file=sys.stderr)
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
