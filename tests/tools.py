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


def receiver_urls(stack: str, tag: str) -> dict[str, str]:
    """A URL for each alert receiver the stack file turns on (the operator's secrets: the
    committed staging and prod name a webhook and a heartbeat), on a name, https, port 443;
    nothing is ever sent to them in a test."""
    import yaml

    from infra.catalog import CREDENTIALS

    raw = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    on = set((raw.get("optiinfra:alerting") or {}).get("receivers") or {})
    return {c.config_key: f"https://hooks.example.com/{tag}-{c.id}" for c in CREDENTIALS
            if c.receiver in on and c.receiver != "email"}


def store_keys(stack: str, tag: str) -> dict[str, str]:
    """A value for each secret of the off-site backup store the stack file needs (the
    committed staging and prod name an S3 bucket; the key is the operator's): never used
    against a store in a test."""
    import secrets

    from infra.credentials import store_credential_ids
    from infra.stack import model_of

    model = model_of(stack)
    ids = store_credential_ids(model)
    return {c.config_key: f"{tag}-{c.id}-{secrets.token_hex(12)}" for c in model.catalog.credentials.values()
            if c.id in ids}


def stop_process(proc: subprocess.Popen[Any], wait_s: float = 10) -> None:
    """Stop a server a test started, bounded: SIGTERM, `wait_s` to exit, then SIGKILL (and a
    bounded wait for it); nothing when it has already exited."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
