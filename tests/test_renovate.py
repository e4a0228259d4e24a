"""renovate.json: Renovate's own validator accepts it (and refuses a broken copy), and its
custom managers find every pin they are meant to keep current: every image of the catalog
(the services' and their backup jobs'), and the Go and npm tool pins in scripts/.

The validator is `renovate-config-validator` from the npm package `renovate`, pinned in
scripts/tools.sh and installed once outside the repository; without npm the validator tests
skip with the reason (fail under OPTIINFRA_REQUIRE_TOOLS=1). The regexes are Renovate's
JavaScript ones, applied here with Python's `re` after turning `(?<name>...)` into
`(?P<name>...)`, with the flags Renovate uses (global, multi-line).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra.catalog import default_catalog
from tests.tools import go_tool, unavailable

from .tools import ROOT

CONFIG = ROOT / "renovate.json"


def config() -> dict[str, Any]:
    return dict(json.loads(CONFIG.read_text()))


def managers(file: str) -> list[dict[str, Any]]:
    """The custom managers whose fileMatch covers FILE (a path relative to the repository)."""
    return [m for m in config()["customManagers"] if any(re.search(p, file) for p in m["fileMatch"])]


def py_regex(js: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>", r"(?P<\1>", js), re.M)


def matches(file: str) -> list[dict[str, str]]:
    text = (ROOT / file).read_text()
    found = []
    for m in managers(file):
        for js in m["matchStrings"]:
            for hit in py_regex(js).finditer(text):
                groups = {k: v for k, v in hit.groupdict().items() if v is not None}
                groups.setdefault("depName", m.get("depNameTemplate", ""))
                groups["datasource"] = m["datasourceTemplate"]
                found.append(groups)
    return found


def catalog_images() -> set[str]:
    images = set()
    for svc in default_catalog().services.values():
        if not svc.own_image:
            images.add(svc.image)
        image = getattr(svc.backup, "image", None) if svc.backup else None
        if image:
            images.add(image)
    return images


# ---- the custom managers ------------------------------------------------------------------------

def test_the_catalog_manager_finds_every_image_of_the_catalog() -> None:
    images = catalog_images()
    assert len(images) >= 12 and "redis:7.4.7" in images and "curlimages/curl:8.19.0" in images
    found = matches("infra/catalog.py")
    assert all(f["datasource"] == "docker" for f in found)
    seen = {f"{f['depName']}:{f['currentValue']}" + (f"@{f['currentDigest']}" if "currentDigest" in f else "")
            for f in found}
    assert seen == images  # every image, and nothing that is not one (own images have no tag)


def test_the_catalog_manager_reads_a_digest_pin() -> None:
    (manager,) = managers("infra/catalog.py")
    digest = "sha256:" + "0123456789abcdef" * 4
    (hit,) = py_regex(manager["matchStrings"][0]).finditer(f'        image="grafana/grafana:12.4.5@{digest}",')
    assert hit["depName"] == "grafana/grafana" and hit["currentValue"] == "12.4.5" and hit["currentDigest"] == digest
    assert "{{#if newDigest}}" in manager["autoReplaceStringTemplate"]


def tool_rows(file: str) -> dict[str, tuple[str, str]]:
    """NAME -> (MODULE, VERSION) of a scripts/tools.sh or scripts/crds.sh table."""
    text = (ROOT / file).read_text()
    table = re.search(r"^[A-Z]+_TABLE='\n(.*?)^'", text, re.M | re.S)
    assert table, f"{file} has no NAME_TABLE='...' table"
    rows = {}
    for line in table[1].splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            rows[parts[0]] = (parts[1], parts[2])
    return rows


@pytest.mark.parametrize("file", ["scripts/tools.sh", "scripts/crds.sh"])
def test_the_tool_managers_find_every_pinned_tool(file: str) -> None:
    rows = tool_rows(file)
    assert rows
    local = 0
    found = {(f["datasource"], f["depName"], f["currentValue"]) for f in matches(file)}
    for name, (module, version) in rows.items():
        if module.startswith("local:"):
            # A main package of this repository: not a custom manager's. Its VERSION is the
            # library its go.mod requires, which Renovate's own gomod manager updates; the row
            # must restate that require (it names the tool's cache directory).
            gomod = (ROOT / module[len("local:"):] / "go.mod").read_text()
            assert re.search(rf"^require \S+ {re.escape(version)}$", gomod, re.M), (name, module, version)
            local += 1
            continue
        if module.startswith("npm:"):
            want = ("npm", module[len("npm:"):], version)
        else:
            # The Go module is github.com/OWNER/REPO or k8s.io/REPO (with a /vN major suffix), not
            # the package path.
            root = re.match(r"(?:github\.com/[^/]+/[^/]+|k8s\.io/[^/]+)(?:/v[0-9]+)?", module)
            assert root, module
            want = ("go", root[0], version)
        assert want in found, f"{file}: {name} ({module} {version}) is not found by a custom manager: {found}"
    assert len(found) == len(rows) - local


def test_the_cluster_manager_finds_the_test_clusters_modules() -> None:
    text = (ROOT / "scripts" / "cluster.sh").read_text()
    found = {f["depName"]: f["currentValue"] for f in matches("scripts/cluster.sh")}
    for var, module in (("K8S_VERSION", "k8s.io/kubernetes"), ("ETCD_VERSION", "go.etcd.io/etcd/server/v3"),
                        ("KWOK_VERSION", "sigs.k8s.io/kwok")):
        value = re.search(rf"^{var}=(\S+)", text, re.M)
        assert value and found[module] == value[1], var


# ---- Renovate's validator -----------------------------------------------------------------------

def validator() -> Path:
    tool = go_tool("renovate-config-validator")
    if isinstance(tool, str):
        unavailable(tool)
    return tool


def validate(tool: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool), "--strict", str(path)], capture_output=True, text=True, timeout=300,
                          cwd=path.parent)


def test_renovates_validator_accepts_the_config(tmp_path: Path) -> None:
    done = validate(validator(), CONFIG)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Config validated successfully" in done.stdout + done.stderr


@pytest.mark.parametrize("mutation, words", [
    (lambda c: c["customManagers"][0]["matchStrings"].__setitem__(0, "image=\"(?<depName>[a-z"), "Invalid regExp"),
    (lambda c: c.__setitem__("schedule", ["whenever it suits"]), "schedule"),
    (lambda c: c["packageRules"][0].__setitem__("pinDigest", True), "pinDigest"),
    (lambda c: c["customManagers"][0].pop("datasourceTemplate"), "datasource"),
])
def test_renovates_validator_refuses_a_broken_copy(mutation: Any, words: str, tmp_path: Path) -> None:
    tool = validator()
    broken = config()
    mutation(broken)
    path = tmp_path / "renovate.json"
    path.write_text(json.dumps(broken, indent=2))
    done = validate(tool, path)
    assert done.returncode != 0, done.stdout
    assert words in done.stdout + done.stderr, done.stdout + done.stderr
