"""What both the program and the pack refuse: well-known default credentials and image
references that are not pinned.

The program refuses these in its settings, before anything renders (infra/settings.py,
infra/credentials.py import them from here); the pack refuses them in what the resources
carry, for anything that gets past the settings. One copy, in the pack, because the pack
must be self-contained and the program may import the pack's package.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

KNOWN_DEFAULT_CREDENTIALS: frozenset[str] = frozenset(
    str(v) for v in json.loads((Path(__file__).resolve().parent / "known_defaults.json").read_text()))
"""Values no credential may have (compared stripped and lower-cased). Data in
known_defaults.json: some are also service names (`postgres`), and service names appear
in no module outside the catalog."""

_TAG = re.compile(
    r"^(?P<repo>[^@\s]+?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def image_problem(ref: str) -> str | None:
    """Why an image reference is not pinned, or None when it is."""
    m = _TAG.match(ref)
    if not m:
        return "is not an image reference"
    repo_last = m.group("repo").rsplit("/", 1)[-1]
    if ":" in repo_last:
        return "is not an image reference"
    if m.group("tag") is None and m.group("digest") is None:
        return "has no tag"
    if m.group("tag") == "latest":
        return "uses the tag 'latest'"
    return None


def has_digest(ref: str) -> bool:
    m = _TAG.match(ref)
    return bool(m and m.group("digest"))


ANONYMOUS_ACCESS_ENV: frozenset[str] = frozenset({"GF_AUTH_ANONYMOUS_ENABLED"})
"""Environment variables that, set to true, let a UI's image answer without a sign-in (Grafana's
anonymous access). Image settings, not service names: no Kubernetes stack may set them."""
