"""Rotation Jobs: per store with clients, a one-shot Job that applies the clients' current
credentials in the running store (`ALTER ROLE` / `ACL SETUSER`, infra/stores), re-run when
one of them or its rotation phase changes, before the consumers roll (they wait for it);
the store itself does not restart. Its NetworkPolicy lets it reach the store's port only."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pulumi
from pulumi_kubernetes.batch import v1 as batch
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta
from pulumi_kubernetes.networking import v1 as net

from policies.optiinfra_policies.vocabulary import K8S_COMPONENT as COMPONENT
from policies.optiinfra_policies.vocabulary import (
    K8S_CREDENTIALS_OF,
    K8S_CREDENTIALS_ROLLOUT,
    K8S_REQUIRE_DIGEST,
    PROJECT,
    TRUE,
)
from policies.optiinfra_policies.vocabulary import K8S_NAME as NAME
from policies.optiinfra_policies.vocabulary import K8S_PART_OF as PART_OF

from ... import external_secrets as eso
from ...graph import Effective
from ...model import LOG_MIB, SECRET_DIR, SecretFile
from ...stores import Phase, live_credentials, rotation_command
from ...stores.redis import HOST_ENV, PORT_ENV
from ...tiers import TierComponent
from ...wiring import Wiring
from .backup_jobs import BACKUP_RESOURCES, job_resources
from .credentials import rollout_hash
from .objects import CREDENTIALS_SECRET, Objects, literal, quantity_mib
from .pod import container_security, pod_security, pull_secrets
from .reviews import exception_annotations, rotation_exceptions

ROTATION_DEADLINE_S = 300


def rotation_job_name(store: str) -> str:
    return f"{store}-credentials"


def rotation_job(objs: Objects, wiring: Wiring, host_of: Callable[[str], str], eff: Effective,
                 comp: TierComponent, ns: core.Namespace, needs: Sequence[pulumi.Resource],
                 phases: Mapping[str, Phase], remotes: Mapping[str, eso.Remote]) -> batch.Job | None:
    """The store's rotation Job (None: no client logs into it as itself), after `needs`
    (the tier's Secret and policies, the store's workload)."""
    model, svc, tier = objs.model, eff.service, eff.tier
    argv = rotation_command(svc, model.catalog.services.values(), dict(phases))
    if not argv or svc.connection is None or svc.connection.credential is None:
        return None
    name = rotation_job_name(svc.name)
    labels = {NAME: name}
    live = live_credentials(svc)
    admin = svc.connection.credential
    files: list[SecretFile] = [f for f in svc.secret_files if f.credential in live or f.credential == admin]
    env = [core.EnvVarArgs(name=k, value=literal(v)) for k, v in svc.env if isinstance(v, str)]
    # Every password from its file (the variable stays unset: the script reads VAR, else VAR_FILE / the file).
    env += [core.EnvVarArgs(name=f"{var}_FILE", value=f"{SECRET_DIR}/{f.credential}")
            for f in files for var in f.replaces]
    port = svc.port(svc.connection.port).container
    env += [core.EnvVarArgs(name="PGHOST", value=host_of(svc.name)), core.EnvVarArgs(name="PGPORT", value=str(port)),
            core.EnvVarArgs(name=HOST_ENV, value=host_of(svc.name)), core.EnvVarArgs(name=PORT_ENV, value=str(port))]
    ids = sorted({f.credential for f in files})
    digest: pulumi.Input[str]
    if remotes:  # the values never reach the program: key it by where they live (and their version)
        digest = eso.rollout_digest(name, {c: remotes[c] for c in ids})
    else:
        values = pulumi.Output.all(*(wiring.credentials[c] for c in ids))
        digest = pulumi.Output.unsecret(values.apply(lambda vs: rollout_hash(name, dict(zip(ids, vs, strict=True)))))
    res, scratch = BACKUP_RESOURCES, 16
    container = core.ContainerArgs(
        name="rotate", image=eff.image, image_pull_policy="Always",
        command=[literal(a) for a in argv], env=env,
        resources=job_resources(res.limit_mib, scratch + LOG_MIB),
        security_context=container_security(True),
        volume_mounts=[core.VolumeMountArgs(name="credentials", mount_path=SECRET_DIR, read_only=True),
                       core.VolumeMountArgs(name="tmp", mount_path="/tmp")])
    pod = core.PodTemplateSpecArgs(
        metadata=meta.ObjectMetaArgs(labels={PART_OF: PROJECT, COMPONENT: tier.value, **labels},
                                     annotations={K8S_CREDENTIALS_ROLLOUT: digest}),
        spec=core.PodSpecArgs(
            containers=[container], restart_policy="Never", image_pull_secrets=pull_secrets(eff),
            volumes=[core.VolumeArgs(name="credentials", secret=core.SecretVolumeSourceArgs(
                         secret_name=CREDENTIALS_SECRET, default_mode=0o440,
                         items=[core.KeyToPathArgs(key=c, path=c) for c in ids])),
                     core.VolumeArgs(name="tmp", empty_dir=core.EmptyDirVolumeSourceArgs(
                         size_limit=quantity_mib(scratch)))],
            automount_service_account_token=False, enable_service_links=False,
            security_context=pod_security(svc.uid)))
    proto = svc.port(svc.connection.port).protocol.upper()
    peer_job = net.NetworkPolicyPeerArgs(pod_selector=meta.LabelSelectorArgs(match_labels=labels))
    peer_store = net.NetworkPolicyPeerArgs(pod_selector=meta.LabelSelectorArgs(match_labels={NAME: svc.name}))
    ports = [net.NetworkPolicyPortArgs(port=port, protocol=proto)]
    allow = [net.NetworkPolicy(f"allow-{name}", net.NetworkPolicyInitArgs(
        metadata=objs.metadata(f"allow-{name}", tier, labels),
        spec=net.NetworkPolicySpecArgs(pod_selector=meta.LabelSelectorArgs(match_labels=labels),
                                       policy_types=["Egress"],
                                       egress=[net.NetworkPolicyEgressRuleArgs(to=[peer_store], ports=ports)])),
        opts=objs.opts(comp, depends_on=[ns])),
        net.NetworkPolicy(f"allow-{name}-in", net.NetworkPolicyInitArgs(
            metadata=objs.metadata(f"allow-{name}-in", tier, {NAME: svc.name}),
            spec=net.NetworkPolicySpecArgs(pod_selector=meta.LabelSelectorArgs(match_labels={NAME: svc.name}),
                                           policy_types=["Ingress"],
                                           ingress=[net.NetworkPolicyIngressRuleArgs(from_=[peer_job],
                                                                                     ports=ports)])),
            opts=objs.opts(comp, depends_on=[ns]))]
    # A Job's template cannot change: a new value or phase replaces it (deleted first: its name is fixed).
    notes = {K8S_CREDENTIALS_OF: svc.name,
             **({K8S_REQUIRE_DIGEST: TRUE} if model.settings.kubernetes.require_digest else {}),
             **exception_annotations(rotation_exceptions(eff.image, svc.uid))}
    return batch.Job(name, batch.JobInitArgs(
        metadata=objs.metadata(name, tier, labels, notes),
        spec=batch.JobSpecArgs(backoff_limit=3, active_deadline_seconds=ROTATION_DEADLINE_S, template=pod)),
        opts=pulumi.ResourceOptions.merge(objs.opts(comp, depends_on=[*needs, *allow]),
                                          pulumi.ResourceOptions(delete_before_replace=True,
                                                                 replace_on_changes=["spec"])))



