"""The rendered ExternalSecrets against a real kube-apiserver with the operator's CRD.

etcd and kube-apiserver only (tests/cluster.py, `api_only`: 127.0.0.1, free ports, bounded
waits, stopped when the module ends, also on failure), the CRD from the pinned operator's
Go module (scripts/crds.sh). The server applies the CRD's schema with strict field
validation (kubectl's default) to `kubectl apply --dry-run=server`; a wrong field must be
refused, so the test can fail. No operator runs: nothing is fetched from any store.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import external_secrets as eso

from . import cluster as kc
from .test_external_secrets import crd_dir, esr
from .tools import of_kind, unavailable


@pytest.fixture(scope="module")
def server() -> Iterator[kc.Cluster]:
    try:
        bin_dir = kc.build()
    except (kc.ClusterError, subprocess.TimeoutExpired) as e:
        unavailable(f"no control plane (scripts/cluster.sh): {e}")
    crds = crd_dir()
    if isinstance(crds, str):
        unavailable(f"the External Secrets Operator CRDs: {crds}")
    c = kc.Cluster(Path(tempfile.mkdtemp(prefix="optiinfra-eso-")), bin_dir, bin_dir.parent / "stages",
                   kc.NodeSize(0, 0, 0), api_only=True)
    try:
        c.start()
        c.kubectl("apply", "--server-side", "-f", str(crds / "external-secrets.io_externalsecrets.yaml"))
        c.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                  "crd/externalsecrets.external-secrets.io", timeout=90)
        namespaces = sorted({m["metadata"]["namespace"] for m in of_kind(esr(), eso.KIND)})
        c.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces]))
        yield c
    finally:
        c.stop()
        left = c.leftover_pids()
        shutil.rmtree(c.dir, ignore_errors=True)
    assert not left, f"processes left behind: {left}"


def dry_run(c: kc.Cluster, docs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    return c.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=yaml.safe_dump_all(docs),
                     check=False)


def test_the_server_accepts_every_rendered_external_secret(server: kc.Cluster) -> None:
    docs = of_kind(esr(), eso.KIND)
    done = dry_run(server, docs)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(server dry run)") == len(docs) >= 4


@pytest.mark.parametrize(("path", "value", "words"), [
    (("spec", "secretStoreRef", "kind"), "Vault", "Unsupported value"),
    (("spec", "target", "templat"), {}, "unknown field"),
    (("spec", "data", 0, "secretKey"), "not a key!", "should match"),
], ids=["store-kind", "unknown-field", "secret-key"])
def test_the_server_refuses_a_wrong_field(server: kc.Cluster, path: tuple[Any, ...], value: Any,
                                          words: str) -> None:
    m = copy.deepcopy(of_kind(esr(), eso.KIND)[0])
    node: Any = m
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    done = dry_run(server, [m])
    assert done.returncode != 0 and words in done.stderr, done.stderr


def test_the_server_does_not_serve_the_old_api_version(server: kc.Cluster) -> None:
    m = copy.deepcopy(of_kind(esr(), eso.KIND)[0])
    m["apiVersion"] = "external-secrets.io/v1beta1"
    done = dry_run(server, [m])
    assert done.returncode != 0, "v1beta1 is served: the pinned operator release is not the one documented"
