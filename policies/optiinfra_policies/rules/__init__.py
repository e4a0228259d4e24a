"""The rules of OptiInfra's policy pack, over Docker (dev) and Kubernetes (prod) resources,
one module per family, each Rule declared beside its check:

- `exposure`: unique-host-ports, host-port-bind-address, port-allocation-bands, public-ui-signed-in
- `supply_chain`: images-pinned
- `reliability`: health-checks, resource-limits, alerts-reach-a-receiver
- `isolation`: no-host-access, tier-isolation, namespace-default-deny, pod-security-restricted
- `credentials`: no-plaintext-credentials, no-default-credentials, secrets-as-files, secret-references
- `data`: stateful-resources-protected, stateful-backups
- `common`: the type tokens' short names and the readers every family shares.

Every rule is a pure function of what the resources carry (type token + camelCase inputs,
see core.py) and the policy's config; stack policies also see the stack's other
resources. Nothing is restated here that the catalog says: the program stamps the catalog
facts a rule needs onto the resources (see the package docstring and vocabulary.py). A
port outside its band is written once, with its reason, beside the Port in the catalog
(stamped with the port); per-service exemptions of other rules live in the policy config
(policies/config/<stack>.json), each with its reason.

References: CIS Docker Benchmark section 5, Kubernetes Pod Security Standards
"restricted", docs design SECURITY.md.
"""

from __future__ import annotations

from ..core import Rule
from . import credentials, data, exposure, isolation, reliability, supply_chain
from .common import (
    CONFIGMAP,
    CONTAINER,
    CRONJOB,
    DEPLOYMENT,
    EXTERNAL_SECRET,
    INGRESS,
    K8S_SECRET,
    K8S_SERVICE,
    NAMESPACE_T,
    NETWORK_POLICY,
    PVC,
    REMOTE_IMAGE,
    STATEFULSET,
    VOLUME,
    WORKLOADS,
    annotation,
    k8s_service,
)

__all__ = [
    "CONFIGMAP", "CONTAINER", "CRONJOB", "DEPLOYMENT", "EXTERNAL_SECRET", "FAMILIES", "INGRESS", "K8S_SECRET",
    "K8S_SERVICE", "NAMESPACE_T", "NETWORK_POLICY", "PVC", "REMOTE_IMAGE", "RULES", "STATEFULSET", "VOLUME",
    "WORKLOADS", "annotation", "by_name", "k8s_service", "names",
]

FAMILIES = (exposure, supply_chain, reliability, isolation, credentials, data)

# The pack's order (the order of evaluation, of `check`'s report and of the published
# policies), unchanged since the rules were one module: it interleaves the families.
RULES: tuple[Rule, ...] = (
    exposure.UNIQUE_HOST_PORTS,
    exposure.BIND_ADDRESS,
    exposure.PORT_BANDS,
    supply_chain.IMAGES_PINNED,
    reliability.HEALTH_CHECKS,
    reliability.RESOURCE_LIMITS,
    isolation.NO_HOST_ACCESS,
    credentials.NO_PLAINTEXT_CREDENTIALS,
    credentials.NO_DEFAULT_CREDENTIALS,
    isolation.TIER_ISOLATION,
    isolation.NAMESPACE_DEFAULT_DENY,
    isolation.POD_SECURITY_RESTRICTED,
    data.STATEFUL_RESOURCES_PROTECTED,
    data.STATEFUL_BACKUPS,
    credentials.SECRETS_AS_FILES,
    credentials.SECRET_REFERENCES,
    reliability.ALERTS_REACH_A_RECEIVER,
    exposure.SIGNED_IN,
)
if sorted(r.name for r in RULES) != sorted(r.name for f in FAMILIES for r in f.RULES):
    raise AssertionError("RULES lists each family's rules exactly once")  # a rule added to a family but not here


def by_name(name: str) -> Rule:
    for rule in RULES:
        if rule.name == name:
            return rule
    raise KeyError(name)


def names() -> list[str]:
    return [r.name for r in RULES]
