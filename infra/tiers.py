"""One ComponentResource per tier; every resource of a tier is its child."""

from __future__ import annotations

from collections.abc import Iterable

import pulumi

from policies.optiinfra_policies.vocabulary import TIER

from .model import Tier


class TierComponent(pulumi.ComponentResource):
    """A tier of the platform (databases, monitoring, core, agents, frontend).

    program.py creates the tiers in the seed's startup order, each with
    `opts=ResourceOptions(depends_on=[<the tier before>])`. Depending on a component
    means depending on everything in it, so the engine registers this tier only once
    every resource of the tier before exists (healthy, for the containers others wait
    for), and its children, which need their parent first, start after that too; on
    destroy the order reverses. Children therefore carry only their own service-level
    dependencies: repeating the whole previous tier on each of them would make the
    dependency lists grow with the square of the services.
    """

    TYPE = TIER

    def __init__(self, tier: Tier, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, tier.value, None, opts)
        self.tier = tier

    def child_opts(self, *, depends_on: list[pulumi.Resource] | None = None, protect: bool = False,
                   delete_before_replace: bool = False) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, depends_on=list(depends_on or []), protect=protect,
                                      delete_before_replace=delete_before_replace)

    def finish(self, services: Iterable[str]) -> None:
        """Register the tier's outputs: the names of its services."""
        self.register_outputs({"services": sorted(services)})
