"""Reviewer exceptions: the checkov and kube-score findings a workload or backup job keeps,
each with the catalog fact that justifies it, written as annotations on the object
(docs/production.md lists them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from policies.optiinfra_policies.vocabulary import K8S_CHECKOV_SKIP as CHECKOV_SKIP
from policies.optiinfra_policies.vocabulary import K8S_KUBE_SCORE_IGNORE as KUBE_SCORE_IGNORE
from policies.optiinfra_policies.vocabulary import K8S_KUBE_SCORE_REASON as KUBE_SCORE_REASON

from ...graph import Effective, Resolved
from .credentials import secrets_in_env

HIGH_UID = 10000
"""checkov CKV_K8S_40 and kube-score want UIDs and GIDs of at least this (no host user clash)."""

# The annotation keys (checkov's skip, kube-score's ignore and our reason beside it) are the
# vocabulary's: the docs and the policy pack read them from there too.
__all__ = ["CHECKOV_SKIP", "HIGH_UID", "KUBE_SCORE_IGNORE", "KUBE_SCORE_REASON"]


@dataclass(frozen=True)
class Exception_:
    """A reviewer finding accepted on one object, with the catalog fact that justifies it."""

    checkov: tuple[str, ...]
    kube_score: tuple[str, ...]
    reason: str


def review_exceptions(model: Resolved, eff: Effective, kind: str, replicas: int) -> list[Exception_]:
    """The checkov and kube-score findings this workload keeps, each with its reason, from
    the catalog and the stack (docs/production.md lists them)."""
    svc, out = eff.service, []
    if "@sha256:" not in eff.image:
        out.append(Exception_(("CKV_K8S_43",), (), (
            f"pinned to a version tag ({eff.image.rsplit(':', 1)[-1]}); pin a digest with "
            f"services.{svc.name}.image and kubernetes.requireDigest")))
    if svc.uid < HIGH_UID:
        out.append(Exception_(("CKV_K8S_40",), ("container-security-context-user-group-id",), (
            f"runs as UID {svc.uid}, the image's own user, which owns the image's directories")))
    if not svc.read_only_root:
        out.append(Exception_(("CKV_K8S_22",), ("container-security-context-readonlyrootfilesystem",),
                              f"writable root: {svc.read_only_reason}"))
    if svc.cluster_reads is not None:
        out.append(Exception_(("CKV_K8S_38",), (), (
            f"mounts its ServiceAccount token: {svc.cluster_reads.reason} (list/watch only, a Role per "
            "stack namespace)")))
    if secrets_in_env(model, svc):
        out.append(Exception_(("CKV_K8S_35",), (), f"secrets in env: {svc.secret_env_reason}"))
    h = svc.health
    if h is not None and h.live is None and not svc.ports:
        out.append(Exception_((), ("pod-probes-identical",), (
            "no Service routes to it, so readiness only paces a rollout; the one check that "
            "proves it works also proves it alive")))
    if kind == "Deployment" and replicas < 2:
        why = (f"one instance: {svc.exclusive}" if svc.exclusive else
               "one instance per cloud provider in this stack" if svc.per_cloud_provider else
               "the catalog runs one instance; a rolling update with surge keeps it available"
               if not svc.scalable else "this stack's replicas: 1")
        out.append(Exception_((), ("deployment-replicas",), why))
    # A Service targets it: kube-score wants a rolling update.
    if kind == "Deployment" and eff.rollout.strategy == "Recreate" and svc.ports:
        out.append(Exception_((), ("deployment-strategy",), (
            f"Recreate, never two at once: {svc.exclusive}; a short gap in its Service while it restarts")))
    if replicas > 1:
        out.append(Exception_((), (f"{kind.lower()}-has-host-podantiaffinity",), (
            "topologySpreadConstraints spread the replicas over zones and hosts (ScheduleAnyway, "
            "so a full node never blocks a rollout)")))
    return out



def backup_exceptions(image: str, uid: int) -> list[Exception_]:
    """The reviewer findings a backup CronJob keeps, each with its reason."""
    out = []
    if "@sha256:" not in image:
        out.append(Exception_(("CKV_K8S_43",), (), (
            f"pinned to a version tag ({image.rsplit(':', 1)[-1]}), the image of the service it backs up "
            "or the catalog's client image")))
    if uid < HIGH_UID:
        out.append(Exception_(("CKV_K8S_40",), ("container-security-context-user-group-id",), (
            f"runs as UID {uid}, the image's own user, so the files it writes belong to the service's user")))
    return out


def rotation_exceptions(image: str, uid: int) -> list[Exception_]:
    """The reviewer findings a store's credential-rotation Job keeps, each with its reason."""
    out = []
    if "@sha256:" not in image:
        out.append(Exception_(("CKV_K8S_43",), (), (
            f"pinned to a version tag ({image.rsplit(':', 1)[-1]}), the image of the store it applies the "
            "credentials to (its own client: psql, redis-cli)")))
    if uid < HIGH_UID:
        out.append(Exception_(("CKV_K8S_40",), ("container-security-context-user-group-id",), (
            f"runs as UID {uid}, the store image's own user, as the store itself does")))
    return out


def exception_annotations(exceptions: Sequence[Exception_]) -> dict[str, str]:
    out: dict[str, str] = {}
    skips = [(c, x.reason) for x in exceptions for c in x.checkov]
    for i, (check, reason) in enumerate(skips, start=1):
        out[f"{CHECKOV_SKIP}{i}"] = f"{check}={reason}"
    ignored = [(c, x.reason) for x in exceptions for c in x.kube_score]
    if ignored:
        out[KUBE_SCORE_IGNORE] = ",".join(c for c, _ in ignored)
        out.update({f"{KUBE_SCORE_REASON}{c}": reason for c, reason in ignored})
    return out
