"""One ComponentResource per tier; every resource of a tier is its child."""

from __future__ import annotations

import pulumi

from .model import Tier


class TierComponent(pulumi.ComponentResource):
    """A tier of the platform (databases, monitoring, core, agents, frontend).

    `after` is the tier before it in the seed's startup order: the component depends
    on it, and so does every resource created in it (a child does not inherit its
    parent's dependencies, so backends pass `after` on).
    """

    TYPE = "optiinfra:platform:Tier"

    def __init__(self, tier: Tier, *, after: TierComponent | None) -> None:
        super().__init__(self.TYPE, tier.value, None,
                         pulumi.ResourceOptions(depends_on=[after] if after else []))
        self.tier = tier
        self.after = after
        self.services: dict[str, pulumi.Resource] = {}

    def child_opts(self, *, depends_on: list[pulumi.Resource] | None = None, protect: bool = False,
                   delete_before_replace: bool = False, ordered: bool = True) -> pulumi.ResourceOptions:
        """Options for a child. `ordered=False` for resources that other tiers use before
        this tier starts (networks, namespaces): they must not wait for the tier before."""
        deps: list[pulumi.Resource] = ([self.after] if self.after and ordered else []) + list(depends_on or [])
        return pulumi.ResourceOptions(parent=self, depends_on=deps, protect=protect,
                                      delete_before_replace=delete_before_replace)

    def finish(self) -> None:
        self.register_outputs({"services": sorted(self.services)})
