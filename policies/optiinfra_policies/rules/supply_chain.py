"""Supply chain: which images a stack runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .. import vocabulary as v
from ..core import Resource, Rule, is_unknown
from ..standards import has_digest, image_problem
from .common import (
    CONTAINER,
    REMOTE_IMAGE,
    WORKLOADS,
    annotation,
    docker_labels,
    docker_service,
    pod_containers,
    pod_spec,
    stamped_true,
)

# ---- images pinned --------------------------------------------------------------------

def _digest_required(res: Resource, cfg: Mapping[str, Any]) -> bool:
    """The policy config, or the stack's kubernetes.requireDigest as the program stamps it."""
    return bool(cfg.get("requireDigest")) or stamped_true(annotation(res, v.K8S_REQUIRE_DIGEST))


def _image_problem(res: Resource, ref: Any, cfg: Mapping[str, Any]) -> str | None:
    if not isinstance(ref, str) or is_unknown(ref) or ref.startswith("sha256:"):
        return None  # an image ID from the RemoteImage (pinned by the RemoteImage's reference)
    problem = image_problem(ref)
    if problem:
        return f"image '{ref}' {problem}"
    if _digest_required(res, cfg) and not has_digest(ref):
        return f"image '{ref}' has no digest, and this stack requires one"
    return None


def check_images(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    fix = ("Fix: pin a version tag, e.g. repo/name:1.2.3 (optiinfra:services.<name>.image, or images.tag for "
           "OptiInfra's own images)")
    if _digest_required(res, cfg):
        fix += ", with its digest (repo/name:1.2.3@sha256:...)"
    refs: list[tuple[str, Any]] = []
    if res.type == REMOTE_IMAGE:
        refs.append((res.name, res.props.get("name")))
    elif res.type == CONTAINER:
        service = docker_service(res)
        refs.append((service, docker_labels(res.props).get(v.DOCKER_IMAGE_LABEL)))
        refs.append((service, res.props.get("image")))
    elif res.type in WORKLOADS:
        for cname, c in pod_containers(pod_spec(res) or {}):
            refs.append((cname, c.get("image")))
    reported: set[str] = set()
    for who, ref in refs:
        problem = _image_problem(res, ref, cfg)
        if problem and problem not in reported:
            reported.add(problem)
            yield f"{who}: {problem}. {fix}."


IMAGES_PINNED = Rule(
    name="images-pinned",
    description="Images are pinned to a version tag (never latest, never untagged); a stack may require digests.",
    severity="high",
    config={"requireDigest": {"type": "boolean", "default": False,
                              "description": "Every image must carry @sha256:... (also on when the stack sets "
                                             "optiinfra:kubernetes.requireDigest)."}},
    remediation="Pin a version tag (and a digest where required).",
    check=check_images,
    types=frozenset({REMOTE_IMAGE, CONTAINER}) | WORKLOADS,
    tags=("supply-chain",),
)


RULES: tuple[Rule, ...] = (IMAGES_PINNED,)
