"""The stack files' and Pulumi.yaml's comments point at things that exist: every credential
config key they name is one of the catalog's, every README section or docs page (with its
anchor) they refer to is there, and Pulumi.yaml's description counts the catalog's services."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from infra import catalog

from .tools import ROOT

FILES = sorted(ROOT.glob("Pulumi*.yaml"))
CREDENTIAL_KEYS = {c.config_key for c in catalog.CREDENTIALS}
# What a credential's config key looks like: postgresPassword, qdrantApiKey, alertSlackUrl, ...
CREDENTIAL_LIKE = re.compile(r"\b[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)*(?:Password|ApiKey|Token|Url)\b")


def comments(path: Path) -> str:
    return "\n".join(m.group(1) for m in re.finditer(r"(?:^|\s)#(.*)$", path.read_text(), flags=re.MULTILINE))


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.MULTILINE)}


def credential_problems(text: str) -> list[str]:
    return [f"names credential {key!r}, which is not in infra.catalog.CREDENTIALS"
            for key in sorted(set(CREDENTIAL_LIKE.findall(text)) - CREDENTIAL_KEYS)]


def reference_problems(text: str, root: Path = ROOT) -> list[str]:
    """README/docs references: `README "Section"`, `README.md#anchor`, `docs/page.md#anchor`."""
    found = []
    readme = anchors(root / "README.md")
    for title in re.findall(r"README(?:\.md)?\s+[\"“]([^\"”]+)[\"”]", text):
        if _slug(title) not in readme:
            found.append(f"refers to README section {title!r}, which does not exist")
    for page, anchor in re.findall(r"((?:docs/)?[\w./-]+\.md)(?:#([\w-]+))?", text):
        path = root / page
        if not path.is_file():
            found.append(f"refers to {page}, which does not exist")
        elif anchor and anchor not in anchors(path):
            found.append(f"refers to {page}#{anchor}, which has no such section")
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_comments_name_only_real_credentials_and_sections(path: Path) -> None:
    text = comments(path)
    assert credential_problems(text) + reference_problems(text) == [], path.name


@pytest.mark.parametrize("text, problem", [
    ("# keys: postgresPassword, clickhousePassword, mysqlPassword", "'mysqlPassword'"),
    ("# its URL: pulumi config set --secret alertTeamsUrl https://...", "'alertTeamsUrl'"),
    ('# See README "Deploying prod to a cluster".', "README section 'Deploying prod to a cluster'"),
    ("# see README.md#deploying-prod", "README.md#deploying-prod, which has no such section"),
    ("# docs/nowhere.md", "docs/nowhere.md, which does not exist"),
])
def test_a_stale_comment_is_caught(text: str, problem: str) -> None:
    found = credential_problems(text) + reference_problems(text)
    assert any(problem in p for p in found), found


def test_valid_references_pass() -> None:
    text = ('# postgresPassword, alertSlackUrl; README "Deploying"; README.md#quick-start; '
            "docs/stacks.md#staging-and-prod-on-kubernetes; docs/settings.md")
    assert credential_problems(text) + reference_problems(text) == []


def test_project_description_counts_the_catalog() -> None:
    description = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["description"]
    assert f"({len(catalog.SERVICES)} services in five tiers)" in description
    assert "Kubernetes (staging, prod)" in description
