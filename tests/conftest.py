"""Shared fixtures: offline renders are cached per (stack, overrides) for the session."""

from __future__ import annotations

import functools

import pytest

from infra import offline


@functools.lru_cache(maxsize=64)
def _render(stack: str, sets: tuple[str, ...] = (), secrets: tuple[str, ...] = ()) -> offline.Render:
    return offline.render(stack, list(sets), list(secrets))


def render(stack: str, *sets: str, secrets: tuple[str, ...] = ()) -> offline.Render:
    """Render a stack offline (cached: treat the result as read-only)."""
    return _render(stack, tuple(sets), tuple(secrets))


@pytest.fixture(scope="session")
def dev() -> offline.Render:
    return render("dev")
