"""The policy pack is self-contained, the way `pulumi policy publish` packages it: the pack
directory alone imports and builds every policy, nothing in it imports the program, and it
uses pulumi-policy's public API only. Also: the facts the pack and the program share have
one value (the program's copies equal the pack's until it imports them)."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pulumi_policy
import pytest

from infra import credentials, model, offline, settings, stack
from infra.backends import kubernetes
from infra.catalog import default_catalog
from infra.model import Tier
from policies.optiinfra_policies import core, rules, standards
from policies.optiinfra_policies import vocabulary as vocab

from .conftest import render
from .tools import ROOT

PACK = ROOT / "policies"
SOURCES = sorted(PACK.rglob("*.py"))
PRIVATE_MODULES = ("pulumi_policy.proxy", "pulumi_policy.deserialize", "pulumi_policy.secret",
                   "pulumi_policy.policy", "pulumi_policy.version")


def test_the_pack_directory_alone_imports_and_builds_every_policy(tmp_path: Path) -> None:
    # A copy of the pack directory, as publish packages it, with neither the project root nor
    # its packages reachable: only the pack's requirements (site-packages) are.
    copy = tmp_path / "pack"
    shutil.copytree(PACK, copy, ignore=shutil.ignore_patterns("__pycache__"))
    script = (
        "import sys\n"
        f"sys.path[:] = [p for p in sys.path if p and not p.startswith({str(ROOT)!r}) or 'site-packages' in p]\n"
        f"sys.path.insert(0, {str(copy)!r})\n"
        "from optiinfra_policies.pack import pack_arguments\n"
        "args = pack_arguments()\n"
        "assert not [m for m in sys.modules if m == 'infra' or m.startswith(('infra.', 'policies'))], sys.modules\n"
        "print(args['name'], len(args['policies']))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [core.PACK_NAME, str(len(rules.RULES))]


def _imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return found


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(PACK)) for p in SOURCES])
def test_the_pack_imports_neither_the_program_nor_private_pulumi_policy(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    for name in _imports(tree):
        assert name.split(".")[0] not in ("infra", "policies"), f"{path.name} imports {name}"
        assert not name.startswith(PRIVATE_MODULES), f"{path.name} imports {name} (private)"
        if name.startswith("pulumi_policy."):
            assert name.split(".", 1)[1] in pulumi_policy.__all__, f"{path.name}: {name} is not public"
        assert name.split(".")[0] not in ("pulumi",), f"{path.name} imports the program's SDK: {name}"
    imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names}
    for node in ast.walk(tree):
        # No private attribute of anything (x._y), no patching of an imported module (mod.x = ...).
        if isinstance(node, ast.Attribute):
            assert not (node.attr.startswith("_") and not node.attr.startswith("__")), \
                f"{path.name}:{node.lineno}: private .{node.attr}"
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name):
                    assert t.value.id not in imported, f"{path.name}:{node.lineno}: patches {t.value.id}.{t.attr}"
        if isinstance(node, ast.Name):
            assert node.id not in ("__target",), f"{path.name}:{node.lineno}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value != "__target", f"{path.name}:{node.lineno}: reads a proxy's private target"


def test_main_constructs_the_pack_only() -> None:
    tree = ast.parse((PACK / "__main__.py").read_text())
    assert "sys" not in _imports(tree)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert [ast.unparse(c.func) for c in calls] == ["PolicyPack", "pack_arguments"]


def test_the_pack_requirements_are_its_own_and_pinned() -> None:
    lines = [ln.strip() for ln in (PACK / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    program = {ln.split("==")[0]: ln for ln in (ROOT / "requirements.txt").read_text().splitlines() if "==" in ln}
    assert lines == ["pulumi-policy==1.21.0", program["PyYAML"]]
    assert pulumi_policy.__name__ and all(not ln.startswith("-r") for ln in lines)


def test_the_cli_finds_a_virtualenv_with_the_pack_requirements() -> None:
    import yaml

    options = yaml.safe_load((PACK / "PulumiPolicy.yaml").read_text())["runtime"]["options"]
    venv = (PACK / options["virtualenv"]).resolve()
    assert venv == Path(sys.prefix).resolve(), "the pack runs in the project's virtualenv"
    dev = (ROOT / "requirements-dev.txt").read_text()
    assert "-r policies/requirements.txt" in dev  # scripts/test.sh installs the pack's requirements there


# ---- one value for what the program and the pack share ---------------------------------------

def test_shared_facts_have_one_value() -> None:
    assert credentials.KNOWN_DEFAULTS == standards.KNOWN_DEFAULT_CREDENTIALS
    assert tuple(t.value for t in Tier) == vocab.TIERS
    assert (offline.SECRET, offline.UNKNOWN) == (vocab.SECRET_MARK, vocab.UNKNOWN_MARK)
    assert settings.NAMESPACE == vocab.CONFIG_NAMESPACE
    # The reviewers' annotation keys: the docs read them from the vocabulary, the backend writes its own
    # copies until it imports them from there.
    assert (kubernetes.CHECKOV_SKIP, kubernetes.KUBE_SCORE_IGNORE, kubernetes.KUBE_SCORE_REASON) == \
        (vocab.K8S_CHECKOV_SKIP, vocab.K8S_KUBE_SCORE_IGNORE, vocab.K8S_KUBE_SCORE_REASON)
    for name in ("image_problem", "has_digest"):  # the program has no copy of the image rules
        assert getattr(model, name, getattr(standards, name)) is getattr(standards, name)
    digest = "sha256:" + "ab" * 32
    assert [standards.image_problem(r) for r in ("postgres:16.4", "grafana/grafana", "a/b:latest", f"a/b@{digest}")] \
        == [None, "has no tag", "uses the tag 'latest'", None]
    assert standards.has_digest(f"a/b:1@{digest}") and not standards.has_digest("a/b:1")


def test_the_program_stamps_what_the_pack_reads() -> None:
    catalog = default_catalog()
    dev = render("dev")
    for res in dev.resources:
        if res.type != vocab.DOCKER_CONTAINER or res.inputs.get("mustRun") is False:
            continue  # (a store's one-shot containers mount no data: the pack counts them as one-shot)
        svc = catalog.services[vocab.service_of(res.type, res.inputs) or ""]
        labels = vocab.docker_labels(res.inputs)
        joined = [n["name"] for n in res.inputs.get("networksAdvanced", [])]
        assert vocab.split(labels.get(vocab.DOCKER_NETWORKS)) == joined, svc.name
        published = {p["internal"] for p in res.inputs.get("ports") or []}
        for p in svc.ports:
            stamp = vocab.parse_port_stamp(labels.get(vocab.docker_port_key(p.container)))
            if p.container not in published:  # only published ports are stamped (the band rule's input)
                assert stamp is None, svc.name
                continue
            band = catalog.band(p.band) if p.band else None
            assert stamp == vocab.PortStamp(p.name, p.band, band.low if band else 0, band.high if band else 0)
        assert vocab.split(labels.get(vocab.DOCKER_DATA_PATHS)) == [v.path for v in svc.volumes]
    prod = render("prod")
    store = stack.model_of("prod").settings.backups.store  # prod's off-site store (Pulumi.prod.yaml)
    assert store is not None
    for res in prod.resources:
        if res.type == vocab.K8S_SERVICE:
            svc = catalog.services[vocab.service_of(res.type, res.inputs) or ""]
            notes = vocab.annotations_of(res.inputs)
            assert notes[vocab.K8S_PUBLIC] in ("true", "false")
            assert {k for k in notes if k.startswith(vocab.K8S_PORT_PREFIX)} == {
                vocab.k8s_port_key(p.name) for p in svc.ports}
        elif res.type == rules.CRONJOB and vocab.K8S_DRILL_OF in vocab.annotations_of(res.inputs):
            # A restore drill: stamped with the service it restores and the store it reads, no backup of its own.
            notes = vocab.annotations_of(res.inputs)
            svc = catalog.services[notes[vocab.K8S_DRILL_OF]]
            assert svc.backup is not None and svc.backup.drill and notes[vocab.K8S_BACKUP_STORE] == store.endpoint
            assert vocab.K8S_BACKUP_OF not in notes and vocab.K8S_BACKUP_TARGET not in notes
        elif res.type == rules.CRONJOB:  # a backup job: stamped with its service, its target and the store
            notes = vocab.annotations_of(res.inputs)
            svc = catalog.services[notes[vocab.K8S_BACKUP_OF]]
            assert svc.backup is not None and svc.backup.enabled and notes[vocab.K8S_BACKUP_STORE] == store.endpoint
            # Its claim, or the store itself for a server that writes its backup there (ClickHouse's
            # BACKUP ... TO S3: below <prefix>/<service>/ of the bucket, docs/backups.md).
            target = f"s3://{store.bucket}/{store.prefix}/{svc.name}/" if svc.backup.server_store else "/backup"
            assert notes[vocab.K8S_BACKUP_TARGET] == target, svc.name
        elif res.type == vocab.K8S_JOB and vocab.K8S_CREDENTIALS_OF in vocab.annotations_of(res.inputs):
            # A store's credential-rotation Job: stamped with the store, which grants its clients logins.
            svc = catalog.services[vocab.annotations_of(res.inputs)[vocab.K8S_CREDENTIALS_OF]]
            assert svc.grants is not None
        elif res.type in rules.WORKLOADS:
            svc = catalog.services[vocab.service_of(res.type, res.inputs) or ""]
            notes = vocab.annotations_of(res.inputs)
            assert vocab.split(notes.get(vocab.K8S_DATA_PATHS)) == [v.path for v in svc.volumes]
            assert (notes.get(vocab.K8S_SLOW_START) == "true") == bool(svc.health and svc.health.slow_start)
            none = svc.backup.none_reason if svc.backup else ""
            assert notes.get(vocab.K8S_NO_BACKUP, "") == none


def test_stamps_round_trip() -> None:
    band = default_catalog().bands[0]
    assert vocab.parse_port_stamp(vocab.port_stamp("http", band)) == vocab.PortStamp(
        "http", band.name, band.low, band.high)
    assert vocab.parse_port_stamp(vocab.port_stamp("http")) == vocab.PortStamp("http")
    for bad in (None, "", "http", "http:metrics", "http:metrics:x-y", 3):
        assert vocab.parse_port_stamp(bad) is None
    assert vocab.tier_of_name(vocab.tier_scoped_name("my-prefix", "core")) == "core"
    assert vocab.tier_of_name("kube-system") is None and vocab.tier_of_name("core") is None
    assert re.fullmatch(r"[a-z0-9.-]+/[a-z0-9.-]+", vocab.k8s_port_key("http"))  # a valid annotation key
    assert json.loads((PACK / "optiinfra_policies" / "known_defaults.json").read_text())
