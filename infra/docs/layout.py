"""The check that the README's layout section lists every module (and no file that is gone).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

README = "README.md"
LAYOUT_HEADING = "## Layout"
LAYOUT_ROOTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("infra", ("*.py",)), ("policies", ("*.py",)), ("scripts", ("*.sh", "*.py", "*.go")))
"""What the README's layout section must list: every Python module of the program and the
policy pack, and every script under scripts/ (shell, Python, Go; not their data files)."""


def _expand(word: str) -> list[str]:
    """Shell-style braces, one level: `infra/{a,b}.py` -> infra/a.py, infra/b.py."""
    m = re.search(r"\{([^{}]*)\}", word)
    if not m:
        return [word]
    return [x for part in m.group(1).split(",") for x in _expand(word[:m.start()] + part + word[m.end():])]


def layout_listed(readme: str) -> set[str]:
    """Paths the README's layout section names: the first word of each line of its code block
    (an indented line continues the description above it)."""
    _, found, rest = readme.partition(f"\n{LAYOUT_HEADING}\n")
    if not found:
        return set()
    section = rest.split("\n## ", 1)[0]
    block = section.split("```", 2)[1] if section.count("```") >= 2 else ""
    return {path for line in block.splitlines()[1:] if line.strip() and not line[0].isspace()
            for path in _expand(line.split()[0])}


def layout_expected(root: Path) -> set[str]:
    """The files the layout must list: those git tracks under `root` (so a scratch file
    nobody added yet does not count), or every file there outside a git checkout."""
    tops = [top for top, _ in LAYOUT_ROOTS]
    try:
        tracked = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--", *tops], capture_output=True,
                                 text=True, check=True).stdout.split("\0")
        in_git = (root / ".git").exists()
    except (OSError, subprocess.CalledProcessError):
        tracked, in_git = [], False
    candidates = [root / p for p in tracked if p] if in_git else \
        [p for top in tops for p in (root / top).rglob("*")]
    return {p.relative_to(root).as_posix() for p in candidates
            if p.is_file() and "__pycache__" not in p.parts
            and any(p.relative_to(root).parts[0] == top and any(p.match(x) for x in patterns)
                    for top, patterns in LAYOUT_ROOTS)}


def layout_problems(root: Path) -> list[str]:
    """Modules missing from the README's layout section, and listed files that do not exist."""
    readme = root / README
    listed = layout_listed(readme.read_text()) if readme.exists() else set()
    expected = layout_expected(root)
    missing = sorted(expected - listed)
    gone = sorted(p for p in listed if p.startswith(tuple(f"{top}/" for top, _ in LAYOUT_ROOTS))
                  and not p.endswith("/") and not (root / p).is_file())
    return ([f"not listed: {', '.join(missing)}"] if missing else []) + \
        ([f"listed but missing: {', '.join(gone)}"] if gone else [])
