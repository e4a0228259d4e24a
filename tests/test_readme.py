"""Every command the README (and docs/commands.md, its worked examples) shows is run here.

Fenced `bash` blocks hold commands; `console` blocks hold `$ command` lines, each followed by
the output it shows (`...` stands for lines left out). The offline commands (`./optiinfra`
with plan, render, check, diff, docs, capacity) are executed from a fresh copy of the
repository and their output compared with the lines shown; the others (deploy, pulumi,
kubectl, the Docker-bound offline commands) are checked against the CLI's own argparse
parser, the scripts and the flags they take. A flag or subcommand that does not exist fails.
"""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from infra import cli

from .tools import ROOT

PAGES = ("README.md", "docs/commands.md")
OFFLINE = {"plan", "render", "check", "diff", "docs", "capacity"}  # no Docker, cluster or CLI needed
# Pulumi CLI commands the pages may show, with the flags each takes (from `pulumi CMD --help`
# of the pinned CLI): a command or flag outside this table fails, so a new one is looked up once.
PULUMI = {
    ("login",): {"--local", "--cloud-url", "--default-org", "--insecure"},
    ("up",): {"--stack", "--yes", "--diff", "--skip-preview", "--refresh", "--target", "--policy-pack"},
    ("preview",): {"--stack", "--diff", "--refresh", "--target", "--policy-pack", "--json"},
    ("stack", "output"): {"--stack", "--show-secrets", "--json"},
    ("stack", "select"): {"--stack", "--create"},
    ("config", "set"): {"--stack", "--secret", "--path", "--plaintext"},
}
KUBECTL = {
    ("create", "job"): {"-n", "--namespace", "--from"},
    ("get",): {"-n", "--namespace", "-o", "--output"},
}
# scripts/deploy.sh's own flag, and the `pulumi up` flags it passes on.
DEPLOY_FLAGS = {"--dry-run", *PULUMI[("up",)] - {"--stack"}}


@dataclass
class Command:
    page: str
    line: str
    output: list[str] | None = None  # the lines a console block shows after it
    words: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.words = shlex.split(self.line, comments=True)

    def __str__(self) -> str:
        return f"{self.page}: {self.line}"


def commands(page: str, text: str) -> list[Command]:
    """The commands of a page's fenced blocks."""
    found = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        lines = body.splitlines()
        if lang == "bash":
            found += [Command(page, ln) for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        elif lang == "console":
            for i, ln in enumerate(lines):
                if ln.startswith("$ "):
                    out = []
                    for nxt in lines[i + 1:]:
                        if nxt.startswith("$ "):
                            break
                        out.append(nxt.rstrip())
                    found.append(Command(page, ln[2:], out))
        else:
            assert not any(ln.startswith("$ ") for ln in lines), \
                f"{page}: a ```{lang} block holds '$ ' commands: mark it ```console so they are tested"
    return found


def inline_commands(page: str, text: str) -> list[Command]:
    """Commands in the prose's code spans (placeholders such as STACK or `...` aside)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    spans = re.findall(r"`([^`\n]+)`", prose.replace("\n", " "))
    return [Command(page, s) for s in spans
            if s.startswith(("./optiinfra ", "scripts/deploy.sh ", "venv/bin/python -m infra "))
            and not re.search(r"\b[A-Z]{3,}\b|\.\.\.|\|", s)]


def infra_args(words: list[str]) -> list[str] | None:
    if words[:1] == ["./optiinfra"]:
        return words[1:] or ["plan", "--stack", "dev"]
    if words[:3] == ["venv/bin/python", "-m", "infra"]:
        return words[3:]
    return None


def flags(words: list[str]) -> set[str]:
    return {w.split("=", 1)[0] for w in words if w.startswith("-")}


def problems(cmd: Command) -> list[str]:
    """What is wrong with a command without running it: empty when it is valid."""
    words = cmd.words
    args = infra_args(words)
    if args is not None:
        try:
            cli.parser(args[0] if args and args[0] in cli.COMMANDS else None).parse_args(args)
        except SystemExit as exit:
            if exit.code:
                return [f"{cmd}: the CLI refuses it (exit {exit.code})"]
        return []
    head, rest = words[0], words[1:]
    if head.startswith("scripts/"):
        script = ROOT / head
        if not (script.is_file() and script.stat().st_mode & 0o111):
            return [f"{cmd}: {head} is not an executable script"]
        if head == "scripts/deploy.sh":
            out = [] if rest and (ROOT / f"Pulumi.{rest[0]}.yaml").is_file() else [f"{cmd}: no such stack"]
            return out + [f"{cmd}: deploy.sh takes no {f}" for f in sorted(flags(rest) - DEPLOY_FLAGS)]
        if head == "scripts/test.sh":  # arguments go to pytest: paths must exist
            return [f"{cmd}: no {w}" for w in rest if not w.startswith("-") and not (ROOT / w.split("::")[0]).exists()]
        return []
    if head == "export":
        name = rest[0].split("=", 1)[0]
        used = (ROOT / "scripts/deploy.sh").read_text()
        return [] if name in used else [f"{cmd}: nothing reads {name}"]
    for tool, table in (("pulumi", PULUMI), ("kubectl", KUBECTL)):
        if head == tool:
            sub = tuple(w for w in rest if not w.startswith("-"))
            known = next((k for k in table if sub[:len(k)] == k), None)
            if known is None:
                return [f"{cmd}: '{tool} {' '.join(sub[:2])}' is not in this test's table of {tool} commands"]
            return [f"{cmd}: '{tool} {' '.join(known)}' takes no {f}" for f in sorted(flags(rest) - table[known])]
    return [f"{cmd}: this test does not know how to check '{head}'"]


def matches(shown: list[str], real: list[str]) -> str | None:
    """None when the shown lines are the real output, `...` standing for any lines left out."""
    chunks: list[list[str]] = [[]]
    for ln in shown:
        if ln == "...":
            chunks.append([])
        else:
            chunks[-1].append(ln)
    anchored_start, anchored_end = shown[:1] != ["..."], shown[-1:] != ["..."]
    pos = 0
    for i, chunk in enumerate(chunks):
        if not chunk:
            continue
        starts = [pos] if i == 0 and anchored_start else range(pos, len(real) - len(chunk) + 1)
        at = next((s for s in starts if real[s:s + len(chunk)] == chunk), None)
        if at is None:
            return f"not in the real output (after line {pos}): {chunk[0]!r}"
        pos = at + len(chunk)
    if anchored_end and pos != len(real):
        return f"the real output goes on after the last line shown: {real[pos:pos + 3]!r}"
    return None


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's files (as the working tree has them) in a new directory, with the
    test's virtualenv as its ./venv."""
    dest = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file() and not rel.startswith("venv/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    (dest / "venv").symlink_to(sys.prefix)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    return dest


ALL = [c for page in PAGES for c in commands(page, (ROOT / page).read_text())]
INLINE = [c for page in PAGES for c in inline_commands(page, (ROOT / page).read_text())]


@pytest.mark.parametrize("cmd", ALL + INLINE, ids=str)
def test_command_exists_with_these_flags(cmd: Command) -> None:
    assert problems(cmd) == []


def _runs_offline(cmd: Command) -> bool:
    args = infra_args(cmd.words)
    return args is not None and args[0] in OFFLINE


@functools.cache
def _run(root: Path, line: str) -> tuple[int, list[str]]:
    proc = subprocess.run(["bash", "-c", line], cwd=root, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(root), "OPTIINFRA_VENV": sys.prefix})
    return proc.returncode, [ln.rstrip() for ln in (proc.stdout + proc.stderr).splitlines()]


@pytest.mark.parametrize("cmd", [c for c in ALL if _runs_offline(c)], ids=str)
def test_offline_command_prints_what_the_page_shows(cmd: Command, fresh_copy: Path) -> None:
    rc, real = _run(fresh_copy, cmd.line)
    shown = cmd.output or []
    expected = 2 if any(ln.startswith("error:") for ln in shown) else \
        1 if any(ln.startswith("FAILED") or ln == "Within budget: NO" for ln in shown) else 0
    assert rc == expected, f"{cmd}: exit {rc}, the page implies {expected}\n" + "\n".join(real[-20:])
    assert "Traceback" not in "\n".join(real)
    if shown:
        assert matches(shown, real) is None, f"{cmd}: {matches(shown, real)}"


def test_the_readme_starts_with_the_start_command() -> None:
    """The first command a reader meets works on a fresh clone, and is run above."""
    first = commands("README.md", (ROOT / "README.md").read_text())[0]
    assert first.words == ["./optiinfra"]
    assert (ROOT / "optiinfra").stat().st_mode & 0o111


@pytest.mark.parametrize("line, wrong", [
    ("./optiinfra plan --stak dev", "the CLI refuses it"),
    ("./optiinfra plna --stack dev", "the CLI refuses it"),
    ("venv/bin/python -m infra render --stack prod --outdir x", "the CLI refuses it"),
    ("scripts/deploy.sh prod --dryrun", "deploy.sh takes no --dryrun"),
    ("scripts/deploy.sh qa", "no such stack"),
    ("scripts/start.sh", "is not an executable script"),
    ("pulumi stack outputs --stack dev", "is not in this test's table"),
    ("pulumi stack output --stack dev --show-secret", "takes no --show-secret"),
    ("export PULUMI_PASSPHRASE=x", "nothing reads PULUMI_PASSPHRASE"),
])
def test_a_wrong_command_is_caught(line: str, wrong: str) -> None:
    found = problems(Command("README.md", line))
    assert found and wrong in found[0], found


def test_shown_output_must_match() -> None:
    real = ["a", "b", "c", "d"]
    assert matches(["a", "...", "d"], real) is None
    assert matches(["...", "b", "c", "..."], real) is None
    assert matches(["a", "c", "..."], real) is not None  # lines left out without `...`
    assert matches(["a", "b"], real) is not None         # the output goes on
    assert matches(["...", "x", "..."], real) is not None


def test_a_name_a_readme_table_uses_is_introduced_in_prose_first() -> None:
    """A path that table rows refer to again and again (`.ci/run`) is met first in a sentence
    that says what it is; the figures read as findings, not as a round's working notes."""
    text = (ROOT / "README.md").read_text()
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    lines = prose.splitlines()
    rows = [ln for ln in lines if ln.startswith("|")]
    names = re.findall(r"`(\.?[\w./-]+/[\w./-]+)`", "\n".join(rows))
    repeated = {n for n in names if sum(f"`{n}`" in row for row in rows) > 1}
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            continue
        for name in set(re.findall(r"`(\.?[\w./-]+/[\w./-]+)`", line)) & repeated:
            before = [ln for ln in lines[:i] if f"`{name}`" in ln]
            assert before, f"README.md: `{name}` appears in a table (line {i + 1}) before any sentence says what it is"
            assert not all(ln.startswith("|") for ln in before), f"README.md: `{name}` is only ever in tables"
    for note in ("this round", "round's"):
        assert note not in prose, f"README.md: {note!r} reads as a working note"
