"""Renderers from the model to provider resources: one per target, behind one contract.

program.py builds the tiers and the credentials, asks `create` for the stack's target,
then calls `service` once per service in startup order and `outputs` once at the end.
What a target cannot express is stated once in the model (for example
`Service.read_only_root_on_docker`), not discovered here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pulumi

from ..graph import Effective, Resolved
from ..model import Tier
from ..tiers import TierComponent


@dataclass(frozen=True)
class StackOutputs:
    """What a target exports. `urls` and `ports` mean the same on every target: how a
    user reaches a service from outside, and the host ports it publishes."""

    urls: Mapping[str, str]
    ports: Mapping[str, Mapping[str, int]]
    extra: Mapping[str, object] = field(default_factory=dict)
    """Target-specific outputs (Docker networks; Kubernetes namespaces and endpoints)."""

    def exports(self) -> dict[str, object]:
        return {**self.extra, "urls": dict(self.urls), "ports": {k: dict(v) for k, v in self.ports.items()}}


class Backend(Protocol):
    def service(self, eff: Effective, after: Sequence[pulumi.Resource]) -> pulumi.Resource:
        """Create one service's resources under its tier, after `after` (what it waits for);
        return what its dependents wait for."""
        ...

    def outputs(self) -> StackOutputs:
        ...


def create(model: Resolved, tiers: Mapping[Tier, TierComponent],
           credentials: Mapping[str, pulumi.Output[str]]) -> Backend:
    """The backend of the stack's target (each imports only its own provider SDK)."""
    if model.settings.target == "docker":
        from .docker import DockerBackend

        return DockerBackend(model, tiers, credentials)
    from .kubernetes import KubernetesBackend

    return KubernetesBackend(model, tiers, credentials)
