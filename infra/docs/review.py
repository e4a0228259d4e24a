"""docs/REVIEW.md: what the reviewers (checkov, kube-score) accept on each workload, and why, read
from the annotations the Kubernetes backend writes beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.optiinfra_policies import vocabulary as vocab

from .output import GENERATED
from .view import StackView, cell

REVIEW_MD = "REVIEW.md"


def review_rows(v: StackView) -> list[tuple[str, str, str, str]]:
    """(workload, tool, check, reason) of every accepted reviewer finding, read from the
    skip annotations the backend writes beside each workload (review_exceptions)."""
    rows = []
    for r in sorted((r for r in v.resources if r.type in vocab.K8S_WORKLOADS), key=lambda r: r.name):
        notes = (r.inputs.get("metadata") or {}).get("annotations") or {}
        for key, value in sorted(notes.items()):
            if key.startswith(vocab.K8S_CHECKOV_SKIP):
                check, _, reason = str(value).partition("=")
                rows.append((r.name, "checkov", check, reason))
            elif key.startswith(vocab.K8S_KUBE_SCORE_REASON):
                rows.append((r.name, "kube-score", key[len(vocab.K8S_KUBE_SCORE_REASON):], str(value)))
    return rows


def review_md(views: Sequence[StackView]) -> str:
    lines = [GENERATED, "", "# Reviewer exceptions and secrets in the environment", "",
             "Generated from the annotations the Kubernetes backend writes beside each workload: checkov's own",
             f"`{vocab.K8S_CHECKOV_SKIP}<N>` and kube-score's `{vocab.K8S_KUBE_SCORE_IGNORE}` (with "
             f"`{vocab.K8S_KUBE_SCORE_REASON}<check>` for",
             f"the reason), and the catalog's `secret_env_reason` (stamp `{vocab.K8S_SECRET_ENV}`, read by the",
             "policy pack's `secrets-as-files`). Everything not listed here passes both tools. See",
             "[production.md](production.md).", ""]
    for v in views:
        if not v.kube:
            continue
        lines += [f"## Stack `{v.stack}`", "", "| workload | tool | check | reason |", "|---|---|---|---|"]
        lines += [f"| {w} | {tool} | `{check}` | {cell(reason)} |" for w, tool, check, reason in review_rows(v)]
        lines += ["", "Secrets still delivered as environment variables (every other credential is a file from",
                  "the mounted Secret):", "", "| service | why the image needs the environment |", "|---|---|"]
        env = {vocab.service_of(r.type, r.inputs): ((r.inputs.get("metadata") or {}).get("annotations") or {}).get(
            vocab.K8S_SECRET_ENV) for r in v.resources if r.type in vocab.K8S_WORKLOADS}
        lines += [f"| {name} | {cell(str(why))} |" for name, why in sorted(env.items()) if why]
        lines.append("")
    return "\n".join(lines)
