"""What tests share beside the renders (tests/conftest.py): the repository root, the rendered
manifests of a Kubernetes stack, and the real tools some tests run (pinned Go tools, system
packages): where to find them, and what a test does when one cannot be had: skip with the
reason, or fail under OPTIINFRA_REQUIRE_TOOLS=1 (set by .ci/run, which installs or builds them)."""

from __future__ import annotations

import os
import socket
import subprocess
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from infra import offline

ROOT = Path(__file__).resolve().parent.parent


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("OPTIINFRA_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{reason} (OPTIINFRA_REQUIRE_TOOLS=1)")
    pytest.skip(reason)


@cache
def go_tool(name: str) -> Path | str:
    """The path of a pinned Go tool from scripts/tools.sh (built once, then cached), or why not."""
    done = subprocess.run([str(ROOT / "scripts" / "tools.sh"), name], capture_output=True, text=True)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "tools.sh failed"
        return f"{name} unavailable: {last}"
    return Path(done.stdout.strip())


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test starts there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manifests(r: offline.Render) -> list[dict[str, Any]]:
    """Every manifest of a Kubernetes render, as `python -m infra render` writes them."""
    from infra.commands import render as render_cmd  # not for the tool-only tests (tests/cluster.py)

    return [m for docs in render_cmd.by_file(r).values() for m in docs]


def of_kind(r: offline.Render, *kinds: str) -> list[dict[str, Any]]:
    return [m for m in manifests(r) if m["kind"] in kinds]
