"""`docs`: write the generated docs from the catalog, the settings models and the stacks.

    python -m infra docs            # (re)write the files; prints which changed
    python -m infra docs --check    # exit 1 if they are stale or the README's layout is (CI, scripts/test.sh)
    python -m infra docs --check --json

docs/PORTS.md with a section per stack (every `Pulumi.<stack>.yaml`, or the `--stack`s
given), one SVG topology picture per stack, the overview dashboard's layout
(docs/dashboard-overview.svg), docs/settings.md (every setting with its type, default
and field docstring, and the credentials) and docs/REVIEW.md (what the manifest
reviewers accept, and why). Output is deterministic.
`--check` also fails when a module under infra/ or policies/, or a script under scripts/,
is missing from the README's layout section, or the section lists one that is gone.

`-s/--stack` limits the per-stack docs to the stacks given (repeatable); unlike the other
commands, docs does not read PULUMI_STACK: without the flag it documents every stack, as
the committed docs do. `--json` prints one object instead of lines (the same exit status):
check (bool), stacks[], files[] {path, status}: status is wrote|unchanged, or with --check
current|stale|missing; with --check also layout[] (the README layout's problems) and
upToDate (bool).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

from .. import docs
from ..cli import prog
from ..docs import dashboard, ports, review, settings_table
from ..docs.output import DOCS
from ..stack import ROOT, available_stacks

_FILES = (ports.PORTS_MD, settings_table.SETTINGS_MD, review.REVIEW_MD)
HELP = (f"write {', '.join(f'{DOCS}/{name}' for name in _FILES)}, {DOCS}/topology-<stack>.svg and "
        f"{DOCS}/{dashboard.OVERVIEW_SVG} (--check: fail when they or the README's layout are stale)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--stack", dest="stacks", action="append", default=None, metavar="STACK",
                   help="document only this stack (repeatable; default: every Pulumi.<stack>.yaml, "
                        "whatever PULUMI_STACK says)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when the committed docs differ from what this would write, "
                        "or the README's layout section misses a module")
    p.add_argument("--json", action="store_true", help="print the files and their state as JSON")
    p.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    generated = docs.files(args.stacks)
    root: Path = args.root
    stacks = args.stacks or available_stacks()
    if args.json:
        return _json(root, generated, stacks, check=args.check)
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
              f"and the stack files give. Fix: run `{prog()} docs` and commit the result", file=sys.stderr)
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


def _json(root: Path, generated: dict[str, str], stacks: list[str], *, check: bool) -> int:
    files: list[dict[str, str]]
    if check:
        stale = set(docs.stale(root, generated))
        layout = docs.layout_problems(root)
        files = [{"path": rel, "status": "current" if rel not in stale else
                  "stale" if (root / rel).exists() else "missing"} for rel in sorted(generated)]
        ok = not stale and not layout
        print(json.dumps({"check": True, "stacks": stacks, "files": files, "layout": layout, "upToDate": ok},
                         indent=2))
        return 0 if ok else 1
    written = docs.write(root, generated)
    files = [{"path": rel, "status": "wrote" if rel in written else "unchanged"} for rel in sorted(generated)]
    print(json.dumps({"check": False, "stacks": stacks, "files": files}, indent=2))
    return 0
