"""The real tools some tests run (pinned Go tools, system packages): where to find them, and
what a test does when one cannot be had: skip with the reason, or fail under
OPTIINFRA_REQUIRE_TOOLS=1 (set by .ci/run, which installs or builds them)."""

from __future__ import annotations

import os
import socket
import subprocess
from functools import cache
from pathlib import Path
from typing import NoReturn

import pytest

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
