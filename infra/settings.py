"""Stack settings: the shape of a stack's config, as pydantic models.

Everything arrives as a flat map of Pulumi config (`optiinfra:key` -> value, objects
as JSON, the way the engine hands them to a program; see stack.py, the one load path).
`parse_settings` turns it into these models and checks each value on its own terms:
type, range, format. What needs the catalog (a service that exists, a port it has, a
replica count it allows) is checked against it in resolve.resolve. Any bad value raises
`ConfigError` with one message that names the config key and the fix, before any
resource is registered. Each field's docstring is its documentation (the README's
settings table is generated from them).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Collection, Iterable, Mapping, Set
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from policies.optiinfra_policies.standards import image_problem

from .model import Severity, Tier, parse_memory_mib

NAMESPACE = "optiinfra"


class ConfigError(Exception):
    """A user error in stack config, flags, a file or the environment: one line naming
    where it is (a config key, a flag such as `--stack`, or `where` itself: a file and
    its line), the problem and the fix."""

    def __init__(self, key: str, problem: str, fix: str, *, where: str | None = None) -> None:
        self.key, self.problem, self.fix = key, problem, fix
        if where is None:
            where = f"flag '{key}'" if key.startswith("-") else f"config key '{key}'"
        self.where = where
        super().__init__(f"{where}: {problem}. Fix: {fix}")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`did you mean 'x'? ` for the closest of `choices`, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        close = [lowered[word.lower()]] if word.lower() in lowered else []
    return f"did you mean '{close[0]}'? " if close else ""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, use_attribute_docstrings=True)


class VolumeOverride(_Model):
    """A volume of the service, by the catalog's volume name (`data`, `storage`), under
    `optiinfra:services.<name>.volumes.<volume>`; Docker stacks only."""

    existing: str | None = None
    """Name of a Docker volume that already exists (e.g. docker-compose's `optiinfra_postgres_data`) to mount
    instead of creating one: the program only reads it, never creates, changes or deletes it, and `pulumi up`
    stops if it is missing (`python -m infra adopt` prints these; see docs/adoption.md). Default: unset, the
    program creates a protected `optiinfra-<name>-<volume>`."""


class ServiceOverride(_Model):
    """Per-service overrides under `optiinfra:services.<name>`."""

    image: str | None = None
    """Full image reference `repo:tag` (default: the catalog's, or registry/name:tag)."""
    host_port: int | None = Field(None, alias="hostPort")
    """Host port of the service's first port (default: the seed's)."""
    host_ports: dict[str, int] = Field(default_factory=dict, alias="hostPorts")
    """Host ports by port name, for services with several ports (clickhouse, qdrant)."""
    bind_address: str | None = Field(None, alias="bindAddress")
    """Address published ports bind to (default 127.0.0.1; 0.0.0.0 for public services)."""
    publish: bool | None = None
    """Publish host ports (default: yes, except databases and exporters)."""
    replicas: int | None = None
    """Instances (Kubernetes); only scalable services (collector, workers, agents)."""
    memory: str | None = None
    """Memory request, e.g. 256Mi or 1Gi (default: the catalog's); the limit is twice it."""
    cpu: float | None = None
    """CPU request in cores (default: the catalog's)."""
    enabled: bool = True
    """Deploy this service (default: yes)."""
    depends_on: tuple[str, ...] = Field((), alias="dependsOn")
    """Extra services this one talks to and waits for (added to the catalog's edges)."""
    volumes: dict[str, VolumeOverride] = Field(default_factory=dict, json_schema_extra={"placeholder": "<volume>"})
    """Settings per volume of the service, by the catalog's volume name (Docker stacks only; default: none)."""


class Images(_Model):
    """Where OptiInfra's own images come from: `<registry>/<name>:<tag>`."""

    registry: str = "ghcr.io/optiinfra"
    """Registry and path of OptiInfra's own images, lower case (default ghcr.io/optiinfra)."""
    tag: str = "0.1.0"
    """Tag of OptiInfra's own images: a version, never latest (default 0.1.0)."""


class DockerSettings(_Model):
    """Docker target settings (`optiinfra:docker`)."""

    network_prefix: str = Field("optiinfra", alias="networkPrefix")
    """Networks are named `<prefix>-<tier>`."""


class Ingress(_Model):
    """How public services are exposed on Kubernetes (`optiinfra:kubernetes.ingress`)."""

    class_name: str = Field("nginx", alias="className")
    """IngressClass of the public services' Ingresses (default nginx)."""
    hosts: dict[str, str] = Field(default_factory=dict)
    """Host name per public service, e.g. {portal: portal.example.com}; required for every
    public service on Kubernetes."""
    tls_secret_name: str | None = Field(None, alias="tlsSecretName")
    """TLS Secret of the Ingresses (default: none, plain HTTP). It must exist in the namespace
    of each public service, or be created there by cert-manager (see `annotations`)."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations on every Ingress, e.g. {cert-manager.io/cluster-issuer: letsencrypt}
    (default: none)."""
    cert_manager_issuer: str | None = Field(None, alias="certManagerIssuer")
    """ClusterIssuer cert-manager issues each Ingress' certificate from (the
    `cert-manager.io/cluster-issuer` annotation; the Secret is `tlsSecretName`, else
    `<service>-tls`). Default: none; a public Ingress then needs `tlsSecretName`."""
    controller_namespace: str = Field("ingress-nginx", alias="controllerNamespace")
    """Namespace of the ingress controller: the only source the NetworkPolicies admit to a
    public service from outside the catalog's edges (default ingress-nginx)."""


GRAFANA_ROLES = ("Viewer", "Editor", "Admin")


class Sso(_Model):
    """Single sign-on in front of every public UI on Kubernetes (`optiinfra:sso`): an OIDC
    proxy (the catalog's authenticator) signs users in at your identity provider. The
    client secret is the credential `ssoClientSecret` (you set it; never generated), the
    cookie key `ssoCookieSecret` is generated per stack (docs/access.md). Default: unset,
    which a Kubernetes stack with a public UI refuses."""

    issuer_url: str = Field(alias="issuerUrl")
    """The identity provider's OIDC issuer, https (required), e.g. https://login.example.com/realms/optiinfra."""
    client_id: str = Field(alias="clientId")
    """The OIDC client registered for OptiInfra at the provider (required); its redirect URL is
    https://<the proxied UI's host>/oauth2/callback."""
    email_domains: tuple[str, ...] = Field((), alias="emailDomains")
    """Users whose verified email is in one of these domains may sign in, e.g. [example.com]
    (default: none; set this or `groups`)."""
    groups: tuple[str, ...] = ()
    """Members of one of these provider groups (the `groups` claim) may sign in (default: none;
    set this or `emailDomains`; with both, a user needs both)."""
    cookie_domain: str | None = Field(None, alias="cookieDomain")
    """Parent domain of every public host, e.g. .optiinfra.example.com: one session for the
    portal and Grafana, so the portal's embedded dashboards need no second sign-in
    (default: none, the session is Grafana's host only)."""
    default_role: Literal["Viewer", "Editor", "Admin"] = Field("Viewer", alias="defaultRole")
    """Grafana role of a user created on first sign-in (default Viewer)."""
    scope: str = "openid email profile"
    """OIDC scopes requested (default `openid email profile`; add `groups` where the provider
    sends the groups claim only when asked)."""
    jwks_url: str | None = Field(None, alias="jwksUrl")
    """The provider's signing keys, https: the `jwks_uri` of <issuerUrl>/.well-known/openid-configuration,
    e.g. https://login.example.com/realms/optiinfra/protocol/openid-connect/certs (Keycloak). Set,
    Grafana stops trusting the proxy's identity header and verifies the ID token the proxy passes
    it (signature, issuer, audience, expiry), and may reach this URL (egress on 443). Default:
    none, Grafana trusts the header. Required by `adminGroups`."""
    admin_groups: tuple[str, ...] = Field((), alias="adminGroups")
    """Members of one of these provider groups (the ID token's `groups` claim) are Grafana Admins;
    everybody else gets `defaultRole`, at every sign-in (default: none). Needs `jwksUrl`."""
    trusted_proxy_cidrs: tuple[str, ...] = Field(("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                                                  "fc00::/7"), alias="trustedProxyCidrs")
    """Addresses the proxy takes X-Forwarded-Host/-Proto/-Uri/-For from (`--trusted-proxy-ip`):
    the ingress controller's pods (a hostNetwork controller: its nodes). Default: the private
    ranges, where pod networks lie, so no address outside the cluster; narrow it to your pod CIDR."""

    @field_validator("trusted_proxy_cidrs")
    @classmethod
    def _proxy_cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in v:
            ipaddress.ip_network(cidr)  # ValueError: reported as a bad value of this key
        return v


class ClusterDns(_Model):
    """The cluster DNS pods, the only DNS every pod may reach (`optiinfra:kubernetes.dns`)."""

    namespace: str = "kube-system"
    """Namespace of the cluster DNS pods (default kube-system)."""
    pod_labels: dict[str, str] = Field(default_factory=lambda: {"k8s-app": "kube-dns"}, alias="podLabels")
    """Labels of the cluster DNS pods (default {k8s-app: kube-dns}, which CoreDNS keeps too)."""
    cidrs: tuple[str, ...] = ()
    """Address blocks that answer DNS besides those pods (port 53, UDP and TCP), for a node-local
    or provider resolver that is no pod: NodeLocal DNSCache [169.254.20.10/32], GKE Cloud DNS
    [169.254.169.254/32] (docs/dns.md; default none)."""

    @field_validator("cidrs")
    @classmethod
    def _dns_cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in v:
            ipaddress.ip_network(cidr)  # ValueError: reported as a bad value of this key
        return v


PRIVATE_AND_LINK_LOCAL = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16")
"""RFC 1918, carrier-grade NAT and link-local (the cloud metadata address 169.254.169.254)."""


class RemoteKey(_Model):
    """Where one credential lives in the outside store, by its config key, under
    `optiinfra:kubernetes.externalSecrets.credentials.<configKey>`."""

    key: str | None = None
    """The remote key (the secret's path or name in the store; default
    `<keyPrefix>/<configKey>`)."""
    property: str | None = None
    """A field inside the remote secret, for stores that keep several values under one key
    (Vault KV, a JSON secret in AWS Secrets Manager); default: the whole value."""
    version: int = Field(1, ge=1, le=1_000_000)
    """Bump it after changing the value in the store: it is part of the pod annotation that
    rolls exactly this credential's consumers, and of the ExternalSecret, so the operator
    fetches the new value at once (default 1; docs/credentials.md, rotation)."""


class ExternalSecrets(_Model):
    """Kubernetes only: every credential comes from the External Secrets Operator instead of
    the stack (`optiinfra:kubernetes.externalSecrets`; docs/credentials.md). Each tier's
    `credentials` Secret is then an ExternalSecret of the same name and keys; no value enters
    Pulumi state. Default: unset, credentials are stack secrets or generated."""

    store: str
    """Name of the ClusterSecretStore the operator reads from (required; you create it,
    e.g. for Vault or AWS Secrets Manager)."""
    refresh_interval: str = Field("1h", alias="refreshInterval")
    """How often the operator re-reads the store, a duration such as 15m or 1h (default 1h)."""
    key_prefix: str | None = Field(None, alias="keyPrefix")
    """Prefix of the default remote keys, `<keyPrefix>/<configKey>` (default optiinfra/<stack>)."""
    credentials: dict[str, RemoteKey] = Field(default_factory=dict, json_schema_extra={"placeholder": "<configKey>"})
    """Per credential config key (postgresPassword, ...): its remote key, property and version
    (default: `<keyPrefix>/<configKey>`, the whole value, version 1)."""


class ApiServer(_Model):
    """Where the Kubernetes API server answers pods (`optiinfra:kubernetes.apiServer`): the only
    egress of a service that reads the API (the catalog's `Outside(api_server=True)`)."""

    cidrs: tuple[str, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    """Its addresses as the NetworkPolicy sees them (after the `kubernetes` Service's DNAT: the
    control plane's endpoint addresses; default the private ranges: narrow it to yours)."""
    ports: tuple[int, ...] = (443, 6443)
    """Its ports (default 443, the Service's, and 6443, the endpoints' usual one)."""

    @field_validator("cidrs")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in v:
            ipaddress.ip_network(cidr)
        return v

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [p for p in v if not 1 <= p <= 65535]
        if bad or not v:
            raise ValueError(f"ports must be 1-65535, at least one (not {bad[0]})" if bad else "no port given")
        return v


class KubernetesSettings(_Model):
    """Kubernetes target settings (`optiinfra:kubernetes`)."""

    api_server: ApiServer = Field(ApiServer(), alias="apiServer")

    dns: ClusterDns = ClusterDns()
    outside_cidrs: tuple[str, ...] = Field(("0.0.0.0/0",), alias="outsideCidrs")
    """Addresses a service that declares outside egress in the catalog may reach (default
    0.0.0.0/0, minus `outsideExcept`)."""
    outside_except: tuple[str, ...] = Field(PRIVATE_AND_LINK_LOCAL, alias="outsideExcept")
    """Ranges cut out of `outsideCidrs`: the cluster's own networks, the API server and the
    cloud metadata address (default: the private, CGNAT and link-local ranges)."""
    image_pull_secrets: tuple[str, ...] = Field((), alias="imagePullSecrets")
    """Secrets (in every tier namespace) the kubelet pulls OptiInfra's own images with, for
    a private registry (default: none)."""

    namespace_prefix: str = Field("optiinfra", alias="namespacePrefix")
    """Tier namespaces are named `<prefix>-<tier>` (default optiinfra)."""
    storage_class: str | None = Field(None, alias="storageClass")
    """StorageClass of the PersistentVolumeClaims (default: the cluster's default)."""
    regional_storage: bool = Field(False, alias="regionalStorage")
    """The StorageClass replicates each volume across the pool's zones (GKE regional
    persistent disks, Azure ZRS disks), so a stateful pod may move to another zone; default
    false: a volume lives in one zone (AWS EBS, zonal disks), and so does its pod."""
    storage: dict[str, str] = Field(default_factory=dict)
    """Volume size per stateful service, e.g. {clickhouse: 50Gi} (default: the catalog's)."""
    ingress: Ingress = Ingress()
    render_yaml_to_directory: str | None = Field(None, alias="renderYamlToDirectory")
    """Write manifests to this directory instead of applying them to a cluster."""
    context: str | None = None
    """kubeconfig context to deploy to (default: the current context)."""
    require_digest: bool = Field(False, alias="requireDigest")
    """Require image digests (`repo@sha256:...`): the policy pack then refuses tags alone (default false)."""
    external_secrets: ExternalSecrets | None = Field(None, alias="externalSecrets")
    """Source every credential from the External Secrets Operator (Kubernetes only; default:
    unset, stack secrets or generated). Its keys follow."""

    @field_validator("outside_cidrs", "outside_except")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in v:
            ipaddress.ip_network(cidr)  # ValueError: reported as a bad value of this key
        return v


class Budget(_Model):
    """What the stack may use (requests): `nodes` machines of `memory` and `cpu` each, and
    `storage` in total (`python -m infra capacity` checks it)."""

    memory: str = "2Gi"
    """Memory per node (default 2Gi: the seed's estimate for the whole platform)."""
    cpu: float = Field(2.0, gt=0)
    """CPU cores per node (default 2)."""
    storage: str = "10Gi"
    """Persistent storage in total (default 10Gi: the seed's estimate)."""
    nodes: int = Field(1, ge=1, le=1000)
    """Machines: 1 for the Docker host, the node pool's size on Kubernetes (default 1)."""
    reserved_memory: str = Field("512Mi", alias="reservedMemory")
    """Memory of each Kubernetes node kept for the system (kubelet, runtime, eviction
    threshold), not for pods (default 512Mi; Docker: none)."""
    reserved_cpu: float = Field(0.1, ge=0, alias="reservedCpu")
    """CPU cores of each Kubernetes node kept for the system (default 0.1; Docker: none)."""
    zones: int = Field(1, ge=1, le=10)
    """Zones the Kubernetes node pool spans, its nodes spread evenly over them (default 1). A
    claim on zonal storage binds its pod to its zone: after a node loss that pod needs a node
    left in the same zone, unless `kubernetes.regionalStorage` (`capacity` checks it)."""

    @field_validator("reserved_memory")
    @classmethod
    def _reserve(cls, v: str) -> str:
        if v not in ("0", "0Mi"):
            parse_memory_mib(v)
        return v


SEVERITIES: tuple[Severity, ...] = ("critical", "warning")


class Receiver(_Model):
    """What every receiver has: which alerts it gets."""

    severities: tuple[Severity, ...] = SEVERITIES
    """Severities this receiver is sent (default both: critical and warning)."""
    send_resolved: bool = Field(True, alias="sendResolved")
    """Also notify when an alert resolves (default yes)."""

    @field_validator("severities")
    @classmethod
    def _some(cls, v: tuple[Severity, ...]) -> tuple[Severity, ...]:
        if not v:
            raise ValueError("lists no severity")
        return tuple(dict.fromkeys(v))


class WebhookReceiver(Receiver):
    """An HTTP endpoint Alertmanager POSTs its JSON to (`alerting.receivers.webhook`). Its URL
    is the secret `alertWebhookUrl` (`pulumi config set --secret alertWebhookUrl https://...`),
    never a plain setting: webhook URLs usually carry a token."""


class SlackReceiver(Receiver):
    """A Slack incoming webhook (`alerting.receivers.slack`). Its URL is the secret
    `alertSlackUrl` (`pulumi config set --secret alertSlackUrl https://hooks.slack.com/...`)."""

    channel: str
    """Channel to post to, e.g. '#optiinfra-alerts' (required)."""


class EmailReceiver(Receiver):
    """Mail through an SMTP relay (`alerting.receivers.email`). With `username` set, its
    password is the secret `alertSmtpPassword` (`pulumi config set --secret alertSmtpPassword ...`)."""

    to: str
    """Address the alerts go to, e.g. oncall@example.com (required)."""
    from_: str = Field(alias="from")
    """Sender address, e.g. alertmanager@example.com (required)."""
    smarthost: str
    """SMTP relay as host:port, e.g. smtp.example.com:587 (required; STARTTLS is required)."""
    username: str | None = None
    """SMTP login (default: none, the relay takes mail without a login)."""

    @field_validator("to", "from_")
    @classmethod
    def _address(cls, v: str) -> str:
        if not _EMAIL.fullmatch(v):
            raise ValueError("not a mail address such as oncall@example.com")
        return v

    @field_validator("smarthost")
    @classmethod
    def _hostport(cls, v: str) -> str:
        if not _HOST_PORT.fullmatch(v) or not 1 <= int(v.rsplit(":", 1)[1]) <= 65535:
            raise ValueError("not host:port such as smtp.example.com:587")
        return v


class HeartbeatReceiver(_Model):
    """A dead man's switch outside the cluster (`alerting.receivers.heartbeat`): the always-firing
    Watchdog alert, and nothing else, is POSTed to its URL every minute (healthchecks.io, Dead
    Man's Snitch, a PagerDuty heartbeat), which raises its own alarm when the calls stop. Its URL is
    the secret `alertHeartbeatUrl` (`pulumi config set --secret alertHeartbeatUrl https://...`)."""


class Receivers(_Model):
    """Where alerts go (`optiinfra:alerting.receivers`): each kind at most once, each off
    unless set. Critical alerts go to every receiver that takes critical ones, warnings to
    those that take warnings. None set: Alertmanager runs with a receiver that drops every
    alert (plan and deploy say so)."""

    webhook: WebhookReceiver | None = None
    """POST alerts to a URL (the secret alertWebhookUrl), e.g. {} or {severities: [critical]}."""
    slack: SlackReceiver | None = None
    """Post alerts to Slack (the secret alertSlackUrl), e.g. {channel: '#optiinfra-alerts'}."""
    email: EmailReceiver | None = None
    """Mail alerts, e.g. {to: oncall@example.com, from: alertmanager@example.com, smarthost: smtp.example.com:587}."""
    heartbeat: HeartbeatReceiver | None = None
    """The Watchdog's heartbeat to a dead man's switch (the secret alertHeartbeatUrl), e.g. {}."""

    def on(self) -> dict[str, Receiver]:
        """The receivers that are set, by kind."""
        return {k: v for k in ("webhook", "slack", "email") if (v := getattr(self, k)) is not None}

    def secret_kinds(self) -> set[str]:
        """Receivers that need their secret: every one set, but email only with a login."""
        return ({k for k, v in self.on().items() if not (isinstance(v, EmailReceiver) and v.username is None)}
                | ({"heartbeat"} if self.heartbeat is not None else set()))


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_HOST_PORT = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?:[0-9]{1,5}")


class Alerting(_Model):
    """Alert thresholds and receivers (`optiinfra:alerting`); the alerts themselves come from the catalog."""

    thresholds: dict[str, float] = Field(default_factory=dict)
    """Threshold per alert name, e.g. {PostgresConnectionsNearMax: 0.9, CeleryBacklog: 1000}
    (default: the catalog's; docs/monitoring.md lists every alert, its default and unit).
    A ratio lies in (0, 1]; a count or rate is at least 0."""
    receivers: Receivers = Receivers()
    """Where firing alerts go (default: nowhere; see docs/monitoring.md)."""
    no_receiver: str = Field("", alias="noReceiver")
    """Why this Kubernetes stack may send its alerts nowhere (default: empty, so `check` and `pulumi up`
    refuse a Kubernetes stack without a receiver); moot once a receiver is set."""
_CRON_FIELD = r"(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?(,(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?)*"
_CRON = re.compile(rf"{_CRON_FIELD}( {_CRON_FIELD}){{4}}")


class BackupStore(_Model):
    """The S3-compatible object store every backup goes to (`optiinfra:backups.store`; AWS S3,
    GCS through its S3 API, MinIO, Ceph RGW, ...; docs/backups.md). Off-site: it outlives the
    namespace and the cluster. Default: unset, backups stay in the claim or host directory."""

    endpoint: str
    """The store's URL, scheme and host (and port), e.g. https://s3.eu-west-1.amazonaws.com
    (required). Its port is the only place outside the cluster the backup pods may reach."""
    bucket: str
    """Bucket the backups are written to (required; it must exist: nothing creates it)."""
    prefix: str = "optiinfra"
    """Path inside the bucket; each service writes below <prefix>/<service>/ (default optiinfra)."""
    region: str = "us-east-1"
    """The bucket's region (default us-east-1; MinIO and Ceph accept any)."""
    path_style: bool = Field(False, alias="pathStyle")
    """Address the bucket as <endpoint>/<bucket> instead of <bucket>.<host> (MinIO, Ceph; default false)."""
    credentials: Literal["secret", "externalSecrets", "workloadIdentity"] = "secret"
    """Where the access key comes from: `secret` (stack secrets backupStoreAccessKeyId and
    backupStoreSecretAccessKey), `externalSecrets` (the same keys through the External Secrets
    Operator), `workloadIdentity` (no key at all: the backup pods' ServiceAccount carries
    `serviceAccountAnnotations`, e.g. IRSA's role ARN). Default secret."""
    service_account_annotations: dict[str, str] = Field(default_factory=dict, alias="serviceAccountAnnotations")
    """With workloadIdentity: the annotations of the backup pods' ServiceAccount, e.g.
    {eks.amazonaws.com/role-arn: arn:aws:iam::123456789012:role/optiinfra-backups}."""
    encryption: Literal["none", "sse-s3", "sse-kms", "client"] = "sse-s3"
    """Encryption at rest: `sse-s3` (the store's own key), `sse-kms` with `kmsKeyId`, `client`
    (encrypted before upload with the stack secret backupEncryptionPassphrase), or `none`
    (default sse-s3)."""
    kms_key_id: str | None = Field(None, alias="kmsKeyId")
    """The KMS key of `sse-kms`, e.g. arn:aws:kms:eu-west-1:123456789012:key/... (required then)."""
    keep_days: int = Field(14, alias="keepDays", ge=1, le=3650)
    """Backups older than this many days are deleted from the store (the newest `retention`
    are kept whatever their age; default 14)."""
    archive_timeout_s: int = Field(60, alias="archiveTimeoutS", ge=10, le=300)
    """PostgreSQL's archive_timeout: a WAL segment is archived at least this often, so the
    recovery point stays within it plus the upload time under a quiet load (default 60)."""


class BackupSettings(_Model):
    """Scheduled backups of the stateful services (`optiinfra:backups`; docs/backups.md)."""

    enabled: bool = True
    """Back up every stateful service the catalog gives a backup (default yes). Off, prod's
    policy pack fails the stack: every stateful service there must have a schedule."""
    schedule: str = "17 2 * * *"
    """When backups run, a five-field cron expression in UTC (default 17 2 * * *: daily at 02:17)."""
    retention: int = Field(7, ge=1, le=1000)
    """Backups kept per service; each run deletes the older ones (default 7)."""
    local_retention: int | None = Field(None, alias="localRetention", ge=1, le=1000)
    """Kubernetes: backups kept in each service's backup claim (default: `retention` without a
    store; 1 with `store`, which keeps `retention` off-site, so the claim is a first copy only)."""
    storage: dict[str, str] = Field(default_factory=dict)
    """Size of a service's backup claim on Kubernetes, e.g. {postgres: 40Gi} (default: the
    size of the service's volumes, `kubernetes.storage` or the catalog's, times one more than
    the copies the claim keeps, `localRetention`: a backup is at most the size of the data it
    reads, and a new one is written before the oldest is deleted)."""
    host_dir: str = Field("backups", alias="hostDir")
    """Docker: the host directory backups are written to, one subdirectory per service;
    relative paths are below the project directory (default backups)."""
    store: BackupStore | None = None
    """The off-site S3-compatible object store every backup is copied to, and PostgreSQL's WAL
    archive (default: unset, backups stay in the claim or host directory). Its keys follow."""
    drill_schedule: str = Field("47 3 * * *", alias="drillSchedule")
    """When the restore drills run on Kubernetes with `store` set, five cron fields in UTC
    (default 47 3 * * *: daily at 03:47, 90 minutes after the default backup schedule, whose
    runs end within the hour). Docker runs them on demand (`backup --drill`)."""

    @property
    def local_copies(self) -> int:
        """Backups each Kubernetes backup claim keeps (`localRetention`, or its default)."""
        if self.local_retention is not None:
            return self.local_retention
        return 1 if self.store is not None else self.retention

    @field_validator("schedule", "drill_schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        if not _CRON.fullmatch(v.strip()):
            raise ValueError("not a five-field cron expression")
        return v.strip()


HOURS_PER_MONTH = 730
"""Hours in an average month (365 x 24 / 12), as cloud price sheets count them."""


class Prices(_Model):
    """What the stack's resources cost (`optiinfra:prices`), for `capacity` and `diff` to
    say what a stack and a change cost a month. Nothing is fetched at run time. The defaults are
    Google Cloud's published us-central1 on-demand list prices as the authors knew them; they
    were written down on 2026-12-07 from memory, NOT read off the price pages (no internet on
    the machine that wrote them), so treat them as an order of magnitude and set your own (a
    discount, another region or provider) in the stack file."""

    core_hour: float = Field(0.021811, ge=0, alias="coreHour")
    """USD per vCPU-hour. Default 0.021811: Google Compute Engine E2, us-central1, on-demand
    (the price sheet at cloud.google.com/compute/vm-instance-pricing; unverified, see above)."""
    gib_hour: float = Field(0.002923, ge=0, alias="gibHour")
    """USD per GiB of memory per hour. Default 0.002923: the same E2 sheet (unverified)."""
    node_month: float | None = Field(None, ge=0, alias="nodeMonth")
    """USD per node of the budget's shape per month, instead of cores and GiB (default: none,
    the node is priced as `budget.cpu` x coreHour + `budget.memory` x gibHour)."""
    storage_gib_month: dict[str, float] = Field(
        default_factory=lambda: {"default": 0.10, "standard": 0.04, "ssd": 0.17}, alias="storageGibMonth")
    """USD per GiB-month of a volume claim by StorageClass (`kubernetes.storageClass`; `default`
    for the cluster's default class). Defaults: GCE persistent disk, us-central1, balanced 0.10,
    standard 0.04, SSD 0.17 (cloud.google.com/compute/disks-image-pricing; unverified)."""
    backup_gib_month: float = Field(0.020, ge=0, alias="backupGibMonth")
    """USD per GiB-month of backup claims, priced as object storage (where backups end up kept).
    Default 0.020: Google Cloud Storage Standard, us-central1 (cloud.google.com/storage/pricing;
    unverified)."""


class CredentialRotation(_Model):
    """Where one client credential stands in a rotation (docs/credentials.md, rotating one)."""

    slot: Literal["a", "b"] = "a"
    """PostgreSQL: the login role the current value is on: `a` the client's role, `b` its twin `<role>_b`
    (flip it with each new value). Redis has one user with both values: leave `a`."""
    previous: Literal["keep", "retire"] = "retire"
    """`keep`: the value the consumers ran before still logs in (phase 1, while they roll); `retire`: it is
    refused (phase 2, once every consumer runs the new value)."""


class Settings(_Model):
    """A stack's settings: every `optiinfra:` key of Pulumi.<stack>.yaml."""

    target: Literal["docker", "kubernetes"] = "docker"
    """Where the stack deploys: `docker` (the local engine) or `kubernetes` (default docker)."""
    images: Images = Images()
    public: tuple[str, ...] = ()
    """Services whose ports may bind to every interface (Docker) / get an Ingress."""
    services: dict[str, ServiceOverride] = Field(default_factory=dict)
    docker: DockerSettings = DockerSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    budget: Budget = Budget()
    prices: Prices = Prices()
    """What cores, memory and storage cost a month (`capacity` and `diff` print it)."""
    cloud_providers: tuple[str, ...] = Field(("aws",), alias="cloudProviders")
    """Clouds the cost agent collects from; on Kubernetes one instance per provider."""
    alerting: Alerting = Alerting()
    backups: BackupSettings = BackupSettings()
    sso: Sso | None = None
    """Single sign-on in front of every public UI on Kubernetes (default: unset; a Kubernetes stack
    with a public UI refuses that; docs/access.md). Its keys follow."""


    rotation: dict[str, CredentialRotation] = Field(default_factory=dict)
    """Per client credential (config key, e.g. postgresOrchestratorPassword): its rotation phase, applied in
    the running store by the rotation Job (`scripts/rotate.sh`; docs/credentials.md)."""

    @field_validator("public", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


SETTING_KEYS = {f.alias or name for name, f in Settings.model_fields.items()}

_FIXES = {
    "int_parsing": "use a whole number",
    "int_type": "use a whole number",
    "float_parsing": "use a number such as 0.5",
    "bool_parsing": "use true or false",
    "extra_forbidden": "remove it (see docs/settings.md)",
    "literal_error": "use one of the allowed values",
    "value_error": "correct the value (see docs/settings.md)",
}


def _key(loc: tuple[Any, ...]) -> str:
    return f"{NAMESPACE}:" + ".".join(str(p) for p in loc)


def _from_validation(err: ValidationError, data: Mapping[str, Any] | None = None) -> ConfigError:
    errors = err.errors()
    # A misspelt key is the cause of the "missing" error its correct spelling then gives.
    e = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    loc = tuple(e["loc"])
    if e["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = did_you_mean(str(loc[-1]), allowed.split(", "))
        return ConfigError(_key(loc), "is not a known setting", f"{hint}remove it; known keys here: {allowed}")
    if e["type"] in ("tuple_type", "list_type"):
        return ConfigError(_key(loc), f"{e['input']!r} is not a list",
                           f"write a list, e.g. {loc[-1]}=[{e['input']}]")
    if e["type"] in ("model_type", "dict_type", "model_attributes_type"):
        return ConfigError(_key(loc), f"{e['input']!r} is not a map of settings",
                           f"write it as a map, e.g. {loc[-1]}: {{key: value}} (keys here: {_allowed_keys(loc)})")
    if e["type"] == "missing":
        return ConfigError(_key(loc), "is required but not set",
                           f"set it too (keys here: {_allowed_keys(loc[:-1])}; see docs/settings.md)")
    if e["type"] == "string_type" and data is not None and isinstance(e["input"], (int, float)) \
            and not isinstance(e["input"], bool):
        return _as_text(loc, e["input"], data)
    fix = _FIXES.get(e["type"], "") if e["type"] not in _NUMBER_ERRORS else _number_fix(loc)
    if loc in (("backups", "schedule"), ("backups", "drillSchedule")):
        fix = "write five cron fields (minute hour day month weekday, UTC), e.g. '17 2 * * *'"
    if e["type"] == "literal_error":
        fix = f"use one of {e['ctx']['expected']}"
    if not fix:  # a type or constraint without a fix of its own: what the field holds
        fix = f"write {_kind(_field_at(loc))} (see docs/settings.md, {'.'.join(map(str, loc))})"
    return ConfigError(_key(loc), f"{e['input']!r} is not valid ({e['msg'].lower()})", fix)


_NUMBER_ERRORS = {"int_parsing", "int_type", "int_from_float", "float_parsing", "float_type", "greater_than",
                  "greater_than_equal", "less_than", "less_than_equal"}


def _field_at(loc: tuple[Any, ...]) -> Any:
    """The pydantic FieldInfo of a config path (map keys skipped), or None."""
    model: Any = Settings
    field: Any = None
    for part in loc:
        model = _unwrap_optional(model)
        if get_origin(model) in (dict, Mapping):
            model = get_args(model)[1]
            continue
        fields = getattr(model, "model_fields", None) or {}
        field = next((f for n, f in fields.items() if (f.alias or n) == part), None)
        if field is None:
            return None
        model = field.annotation
    return field


def _kind(field: Any) -> str:
    """What a field holds, in words: `a number`, `a whole number`, `text`, ..."""
    t = _unwrap_optional(field.annotation) if field is not None else None
    kinds: dict[Any, str] = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}
    return kinds.get(t, "a value of its type")


def _number_fix(loc: tuple[Any, ...]) -> str:
    """`use a number greater than 0, e.g. 0.5 (CPU cores per node)`: from the field's type,
    its bounds and the first words of its docstring."""
    field = _field_at(loc)
    if field is None:
        return "use a number"
    whole = _unwrap_optional(field.annotation) is int
    step = 1 if whole else 0.5
    bounds = {type(m).__name__.lower(): getattr(m, type(m).__name__.lower()) for m in field.metadata
              if type(m).__name__ in ("Gt", "Ge", "Lt", "Le")}
    low = ("greater than", bounds["gt"], bounds["gt"] + step) if "gt" in bounds else \
        ("of at least", bounds["ge"], bounds["ge"]) if "ge" in bounds else None
    high = ("less than", bounds["lt"], bounds["lt"] - step) if "lt" in bounds else \
        ("of at most", bounds["le"], bounds["le"]) if "le" in bounds else None
    if low and high and low[0] == "of at least" and high[0] == "of at most":
        rule = f" from {low[1]:g} to {high[1]:g}"
    else:
        rule = "".join(f" {word} {value:g}" for word, value, _ in filter(None, (low, high)))
        rule = rule.replace(f" {high[0]}", f" and {high[0]}") if low and high else rule
    example = low[2] if low else high[2] if high else field.default
    what = re.split(r"[.:;,(]", field.description or "", maxsplit=1)[0].strip()
    if what[1:2].islower():  # `CPU cores ...` keeps its capitals
        what = what[0].lower() + what[1:]
    return (f"use {_kind(field)}{rule}{f', e.g. {example:g}' if isinstance(example, (int, float)) else ''}"
            f"{f' ({what})' if what else ''}")


def _as_text(loc: tuple[Any, ...], value: float, data: Mapping[str, Any]) -> ConfigError:
    """A number where the setting takes text (`memory: 256`): the field's own check of the
    same digits as text says what it wants (`use a size such as 256Mi`); when the digits
    pass it as text, the fix is to quote them."""
    text = str(value)
    try:
        fixed: Any = json.loads(json.dumps(data))
        node = fixed
        for part in loc[:-1]:
            node = node[part]
        node[loc[-1]] = text
        _check(Settings.model_validate(fixed))
    except ConfigError as err:
        if err.key == _key(loc):
            return ConfigError(err.key, f"{value!r} {err.problem.split(' ', 1)[1]}" if err.problem.startswith(
                f"'{text}'") else err.problem, err.fix)
    except (ValidationError, LookupError, TypeError, ValueError):
        pass
    return ConfigError(_key(loc), f"{value!r} is a number, but the setting is text",
                       f"quote it: {loc[-1]}: \"{text}\"")


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    """The keys allowed at a config path (`services.grafana` -> a ServiceOverride's)."""
    model: Any = Settings
    for part in loc:
        model = _unwrap_optional(model)
        if get_origin(model) in (dict, Mapping):  # `part` is a key of a map: its values' type
            model = get_args(model)[1]
            continue
        fields = getattr(model, "model_fields", None)
        field = next((f for n, f in (fields or {}).items() if (f.alias or n) == part), None)
        if field is None:
            return "(none: not a map of settings)"
        model = field.annotation
    model = _unwrap_optional(model)
    names = sorted(f.alias or n for n, f in getattr(model, "model_fields", {}).items())
    return ", ".join(names) or "(none: not a map of settings)"


def _unwrap_optional(annotation: Any) -> Any:
    """`Model | None` (a setting that is off unless set) -> `Model`; anything else as it is."""
    members = [a for a in get_args(annotation) if a is not type(None)]
    if type(None) in get_args(annotation) and len(members) == 1:
        return members[0]
    return annotation


def _decode(value: Any) -> Any:
    """The engine passes objects and lists as JSON strings."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def parse_settings(raw: Mapping[str, Any], credential_keys: Set[str] = frozenset()) -> Settings:
    """Validate raw config (`optiinfra:key` -> value) into Settings. `credential_keys` are
    read by credentials.py, not here. Raises ConfigError."""
    secret_keys = credential_keys
    data: dict[str, Any] = {}
    for full_key, value in raw.items():
        ns, _, key = full_key.partition(":")
        if ns != NAMESPACE:
            continue
        if key in secret_keys:
            continue
        if key not in SETTING_KEYS:
            known = sorted(SETTING_KEYS | secret_keys)
            raise ConfigError(full_key, "is not a known setting",
                              f"{did_you_mean(key, known)}remove it or use one of: {', '.join(known)}")
        data[key] = _decode(value)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as err:
        raise _from_validation(err, data) from None
    _check(settings)
    return settings


def check_service_names(s: Settings, services: Collection[str]) -> None:
    """Every service a setting names is one of `services` (the catalog's); a misspelt one
    is refused with the closest name. Raises ConfigError."""
    known = list(services)

    def refuse(key: str, name: str, what: str = "is not a service") -> None:
        raise ConfigError(f"{NAMESPACE}:{key}", f"'{name}' {what}",
                          f"{did_you_mean(name, known)}use one of: {', '.join(known)}")

    for name in s.public:
        if name not in services:
            refuse("public", name)
    for name, o in s.services.items():
        if name not in services:
            refuse(f"services.{name}", name)
        for dep in o.depends_on:
            if dep not in services:
                refuse(f"services.{name}.dependsOn", dep, f"is not a service ({name} depends on it)")
    for key, names in (("backups.storage", s.backups.storage), ("kubernetes.storage", s.kubernetes.storage),
                       ("kubernetes.ingress.hosts", s.kubernetes.ingress.hosts)):
        for name in names:
            if name not in services:
                refuse(f"{key}.{name}", name)


_PORT_RANGE = "set a whole number from 1 to 65535"


def _check(s: Settings) -> None:
    for name, o in s.services.items():
        base = f"{NAMESPACE}:services.{name}"
        ports = ([("hostPort", o.host_port)] if o.host_port is not None else []) + [
            (f"hostPorts.{k}", v) for k, v in o.host_ports.items()]
        for sub, port in ports:
            if not 1 <= port <= 65535:
                raise ConfigError(f"{base}.{sub}", f"{port} is outside 1-65535", _PORT_RANGE)
        if o.bind_address is not None:
            try:
                ipaddress.ip_address(o.bind_address)
            except ValueError:
                raise ConfigError(f"{base}.bindAddress", f"'{o.bind_address}' is not an IP address",
                                  "use an address such as 127.0.0.1 (or 0.0.0.0 for a public service)") from None
        if o.image is not None:
            if not o.image.isascii():
                raise ConfigError(f"{base}.image", f"'{o.image}' has non-ASCII characters, which no registry "
                                  "accepts", _ascii_fix(o.image))
            problem = image_problem(o.image)
            if problem:
                raise ConfigError(f"{base}.image", f"'{o.image}' {problem}",
                                  "pin a version tag, e.g. repo/name:1.2.3 (never latest)")
            repository = o.image.split("@")[0].rsplit(":", 1)[0]
            if repository != repository.lower():
                raise ConfigError(f"{base}.image", f"'{o.image}' has upper-case letters in its repository",
                                  "write the repository in lower case, e.g. grafana/grafana:11.3.1")
            if not _IMAGE.fullmatch(o.image):
                raise ConfigError(f"{base}.image", f"'{o.image}' is not an image reference",
                                  "write [registry[:port]/]path/name:tag with lower-case letters, digits and "
                                  "'.', '_', '-' between them, e.g. grafana/grafana:11.3.1")
        if o.memory is not None:
            try:
                parse_memory_mib(o.memory)
            except ValueError:
                raise ConfigError(f"{base}.memory", f"'{o.memory}' is not a memory size",
                                  "use a size such as 256Mi, 1Gi or 512M") from None
        for vol, vo in o.volumes.items():
            if vo.existing is not None and not _DOCKER_NAME.fullmatch(vo.existing):
                raise ConfigError(f"{base}.volumes.{vol}.existing", f"{vo.existing!r} is not a Docker volume name",
                                  "use the name `docker volume ls` shows: letters, digits, '_', '.' and '-', "
                                  "starting with a letter or digit, e.g. optiinfra_postgres_data")
        if o.cpu is not None and not 0 < o.cpu <= 64:
            raise ConfigError(f"{base}.cpu", f"{o.cpu} is not a CPU amount", "use cores, e.g. 0.25 or 2")
        if o.replicas is not None and not 0 < o.replicas <= 100:
            raise ConfigError(f"{base}.replicas", f"{o.replicas} is out of range", "use a whole number from 1 to 100")
    _check_schedule(s.backups.schedule)
    _check_schedule(s.backups.drill_schedule, "backups.drillSchedule")
    _check_budget(s)
    if not s.images.registry.isascii():
        raise ConfigError(f"{NAMESPACE}:images.registry", f"'{s.images.registry}' has non-ASCII characters, "
                          "which no registry accepts", _ascii_fix(s.images.registry))
    if not _REGISTRY.fullmatch(s.images.registry):
        raise ConfigError(f"{NAMESPACE}:images.registry", f"'{s.images.registry}' is not a registry path",
                          "use lower-case host[:port]/path, e.g. ghcr.io/optiinfra")
    if not _DNS_LABEL.fullmatch(s.docker.network_prefix) or len(s.docker.network_prefix) > 50:
        raise ConfigError(f"{NAMESPACE}:docker.networkPrefix", f"'{s.docker.network_prefix}' cannot start a "
                          "network name", "use lower-case letters, digits and '-', e.g. optiinfra")
    if not s.images.tag.isascii():
        raise ConfigError(f"{NAMESPACE}:images.tag", f"'{s.images.tag}' has non-ASCII characters, which no registry "
                          "accepts", "set an ASCII version tag such as 0.1.0")
    if image_problem(f"x:{s.images.tag}"):
        raise ConfigError(f"{NAMESPACE}:images.tag", f"'{s.images.tag}' is not a pinned tag",
                          "set a version tag such as 0.1.0 (never latest)")
    for key, value in (("budget.memory", s.budget.memory), ("budget.storage", s.budget.storage),
                       *((f"backups.storage.{k}", v) for k, v in s.backups.storage.items()),
                       *((f"kubernetes.storage.{k}", v) for k, v in s.kubernetes.storage.items())):
        try:
            parse_memory_mib(value)
        except ValueError:
            raise ConfigError(f"{NAMESPACE}:{key}", f"'{value}' is not a size", "use a size such as 10Gi") from None
    for name in s.kubernetes.ingress.hosts:
        if name not in s.public:
            raise ConfigError(f"{NAMESPACE}:kubernetes.ingress.hosts.{name}", f"'{name}' is not public",
                              f"add it to {NAMESPACE}:public or remove the host")
    for p in s.cloud_providers:  # part of Kubernetes names and labels (one cost agent per provider)
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,29}[a-z0-9])?", p):
            raise ConfigError(f"{NAMESPACE}:cloudProviders", f"'{p}' is not a provider name",
                              "use lower-case names such as aws, gcp, azure")
    if len(set(s.cloud_providers)) != len(s.cloud_providers):
        raise ConfigError(f"{NAMESPACE}:cloudProviders", "lists a provider twice", "list each provider once")
    _check_kubernetes(s)
    _check_backup_store(s)


_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("weekday", 0, 6))
"""The ranges of Kubernetes' cron parser (a weekday is 0-6, Sunday 0)."""


def _check_schedule(schedule: str, name: str = "backups.schedule") -> None:
    """Each of the five cron fields in its range (the shape is checked by the model)."""
    key = f"{NAMESPACE}:{name}"
    fix = ("write five cron fields in range: minute 0-59, hour 0-23, day of month 1-31, month 1-12, "
           "weekday 0-6 (UTC), e.g. '17 2 * * *'")
    for text, (name, low, high) in zip(schedule.split(), _CRON_FIELDS, strict=True):
        for part in text.split(","):
            span, _, step = part.partition("/")
            if step and int(step) < 1:
                raise ConfigError(key, f"'{schedule}': the {name} step '/{step}' is zero", fix)
            if span == "*":
                continue
            first, _, last = span.partition("-")
            for number in (first, last or first):
                if not low <= int(number) <= high:
                    raise ConfigError(key, f"'{schedule}': {name} {int(number)} is outside {low}-{high}", fix)
            if last and int(last) < int(first):
                raise ConfigError(key, f"'{schedule}': the {name} range {span} runs backwards", fix)


def _check_budget(s: Settings) -> None:
    """The system reserve leaves room for pods on a node (it applies on Kubernetes, and
    wherever it is set explicitly)."""
    b = s.budget
    if s.target != "kubernetes" and b.zones != 1:
        raise ConfigError(f"{NAMESPACE}:budget.zones", f"{b.zones} zones: a Docker stack runs on one host",
                          "remove budget.zones (it applies to a Kubernetes node pool)")
    if s.target != "kubernetes" and not {"reserved_memory", "reserved_cpu"} & b.model_fields_set:
        return
    node = parse_memory_mib(b.memory)
    reserve = 0 if b.reserved_memory in ("0", "0Mi") else parse_memory_mib(b.reserved_memory)
    if reserve >= node:
        raise ConfigError(f"{NAMESPACE}:budget.reservedMemory", f"{b.reserved_memory} is not less than a node's "
                          f"memory ({NAMESPACE}:budget.memory {b.memory}), which leaves nothing for pods",
                          "reserve less than the node has (e.g. 512Mi of 4Gi), or raise budget.memory")
    if b.zones > b.nodes:
        raise ConfigError(f"{NAMESPACE}:budget.zones", f"{b.zones} zones for {b.nodes} nodes leaves a zone without "
                          "a node", f"set budget.zones to at most {NAMESPACE}:budget.nodes ({b.nodes})")
    if b.reserved_cpu >= b.cpu:
        raise ConfigError(f"{NAMESPACE}:budget.reservedCpu", f"{b.reserved_cpu:g} cores is not less than a node's "
                          f"CPU ({NAMESPACE}:budget.cpu {b.cpu:g}), which leaves nothing for pods",
                          "reserve less than the node has (e.g. 0.1 of 2 cores), or raise budget.cpu")


def _punycode(host: str) -> str:
    """A host name with each non-ASCII label in its IDNA (punycode) form."""
    out = []
    for label in host.lower().split("."):
        try:
            out.append(label if label.isascii() else label.encode("idna").decode("ascii"))
        except UnicodeError:
            out.append(label)
    return ".".join(out)


def _ascii_fix(reference: str) -> str:
    """The fix for a non-ASCII image reference or registry path: its host in punycode, or
    (when the path or tag is the non-ASCII part) ASCII names."""
    host, slash, rest = reference.partition("/")
    if slash and ("." in host or ":" in host) and not host.isascii() and rest.isascii():
        name, colon, port = host.partition(":")
        return f"write the registry host in its ASCII (punycode) form: {_punycode(name)}{colon}{port}/{rest}"
    return "write the repository path and tag in ASCII: lower-case letters, digits, '.', '_' and '-'"


_DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")  # the Docker engine's rule for volume names
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_REGISTRY = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*")
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(rf"(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*(?::[0-9]{{1,5}})?/)?"
                    rf"{_PATH_PART}(?:/{_PATH_PART})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?")
"""An image reference as the distribution spec writes it (lower case, ASCII)."""
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_HOST = re.compile(r"(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_LONGEST_TIER = max(len(t.value) for t in Tier)  # namespaces are <prefix>-<tier>, at most 63 characters


def _check_kubernetes(s: Settings) -> None:
    k = s.kubernetes
    key = f"{NAMESPACE}:kubernetes"
    prefix = k.namespace_prefix
    if not _DNS_LABEL.fullmatch(prefix) or len(prefix) > 62 - _LONGEST_TIER:
        raise ConfigError(f"{key}.namespacePrefix", f"'{prefix}' cannot start a namespace name",
                          f"use lower-case letters, digits and '-', at most {62 - _LONGEST_TIER} characters")
    for sub, value in (("storageClass", k.storage_class), ("ingress.tlsSecretName", k.ingress.tls_secret_name),
                       ("ingress.certManagerIssuer", k.ingress.cert_manager_issuer),
                       ("ingress.className", k.ingress.class_name)):
        if value is not None and not _DNS_SUBDOMAIN.fullmatch(value):
            raise ConfigError(f"{key}.{sub}", f"{value!r} is not a Kubernetes object name",
                              "use a lower-case DNS name (letters, digits, '-' and '.'), e.g. gp3 or nginx")
    for name, host in k.ingress.hosts.items():
        if not host.isascii():
            raise ConfigError(f"{key}.ingress.hosts.{name}", f"'{host}' has non-ASCII characters, which an Ingress "
                              f"does not take", f"write its ASCII (punycode) form: {_punycode(host)}")
        if not _HOST.fullmatch(host) or len(host) > 253:
            raise ConfigError(f"{key}.ingress.hosts.{name}", f"'{host}' is not a host name",
                              "use a lower-case DNS name such as portal.example.com (labels of at most 63 "
                              "characters)")
    for secret in k.image_pull_secrets:
        if not _DNS_SUBDOMAIN.fullmatch(secret):
            raise ConfigError(f"{key}.imagePullSecrets", f"{secret!r} is not a Secret name",
                              "use the Secret's lower-case DNS name (letters, digits, '-' and '.'), e.g. ghcr-pull")
    if not _DNS_LABEL.fullmatch(k.dns.namespace) or len(k.dns.namespace) > 63:
        raise ConfigError(f"{key}.dns.namespace", f"{k.dns.namespace!r} is not a namespace name",
                          "use the namespace the cluster DNS runs in: lower-case letters, digits and '-', at most "
                          "63 characters, e.g. kube-system")
    for label, value in k.dns.pod_labels.items():
        _check_qualified_name(f"{key}.dns.podLabels", label, "label key")
        if not _LABEL_VALUE.fullmatch(value):
            raise ConfigError(f"{key}.dns.podLabels.{label}", f"{value!r} is not a label value",
                              "use at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter "
                              "or digit, e.g. kube-dns")
    for annotation in k.ingress.annotations:
        _check_qualified_name(f"{key}.ingress.annotations", annotation, "annotation key")
    if not _DNS_LABEL.fullmatch(k.ingress.controller_namespace):
        raise ConfigError(f"{key}.ingress.controllerNamespace", f"'{k.ingress.controller_namespace}' is not a "
                          "namespace name", "use the namespace your ingress controller runs in, e.g. ingress-nginx")
    _check_external_secrets(s)
    _check_sso(s)
    if s.target != "kubernetes":
        return
    tls = k.ingress.tls_secret_name or k.ingress.cert_manager_issuer or any(
        a.startswith("cert-manager.io/") for a in k.ingress.annotations)
    if s.public and not tls:
        raise ConfigError(f"{key}.ingress.tlsSecretName", f"public service {s.public[0]} would be served over plain "
                          "HTTP", f"set {key}.ingress.tlsSecretName to a TLS Secret you created, or "
                          f"{key}.ingress.certManagerIssuer to a cert-manager ClusterIssuer")
    for name in s.public:
        if name not in k.ingress.hosts:
            raise ConfigError(f"{key}.ingress.hosts.{name}", f"public service {name} has no Ingress host",
                              f"set {key}.ingress.hosts.{name} to its DNS name, or remove it from {NAMESPACE}:public")


def _check_qualified_name(key: str, name: str, what: str) -> None:
    """A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain, the name at
    most 63 characters (Kubernetes' qualified names)."""
    prefix, _, short = name.rpartition("/")
    if not _LABEL_NAME.fullmatch(short) or (prefix and (not _DNS_SUBDOMAIN.fullmatch(prefix) or len(prefix) > 253)):
        raise ConfigError(f"{key}.{name}", f"{name!r} is not a Kubernetes {what}",
                          "write [prefix/]name: an optional lower-case DNS prefix, then at most 63 letters, digits, "
                          "'-', '_' and '.', starting and ending with a letter or digit, e.g. k8s-app")


_DURATION = re.compile(r"([0-9]+h)?([0-9]+m)?([0-9]+s)?")
_REMOTE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./+=@:-]*")


def _check_external_secrets(s: Settings) -> None:
    """The External Secrets Operator option: Kubernetes only, names the operator accepts."""
    es = s.kubernetes.external_secrets
    if es is None:
        return
    key = f"{NAMESPACE}:kubernetes.externalSecrets"
    if s.target != "kubernetes":
        raise ConfigError(key, "does not apply on Docker (there is no External Secrets Operator; credentials "
                          "are stack secrets or generated)", "remove it from this stack, or use Pulumi ESC "
                          "for outside credentials (docs/credentials.md)")
    if not _DNS_SUBDOMAIN.fullmatch(es.store):
        raise ConfigError(f"{key}.store", f"{es.store!r} is not a ClusterSecretStore name",
                          "use the store's lower-case DNS name (letters, digits, '-' and '.'), e.g. vault-backend")
    text = es.refresh_interval.strip()
    if not text or not _DURATION.fullmatch(text) or not any(c in "123456789" for c in text):
        raise ConfigError(f"{key}.refreshInterval", f"{es.refresh_interval!r} is not a duration",
                          "use hours, minutes and seconds above zero, e.g. 15m, 1h or 1h30m")
    if es.key_prefix is not None and not _REMOTE_KEY.fullmatch(es.key_prefix.rstrip("/")):
        raise ConfigError(f"{key}.keyPrefix", f"{es.key_prefix!r} is not a remote key prefix",
                          "use letters, digits and / . _ - (no spaces), e.g. optiinfra/prod")
    for name, ref in es.credentials.items():
        for field, value in (("key", ref.key), ("property", ref.property)):
            if value is not None and not _REMOTE_KEY.fullmatch(value):
                raise ConfigError(f"{key}.credentials.{name}.{field}", f"{value!r} is not a remote {field}",
                                  "use letters, digits and / . _ - (no spaces), e.g. optiinfra/prod/postgres")


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's bucket naming rule
_STORE_URL = re.compile(r"(https?)://([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(:([0-9]{1,5}))?/?")


def store_port(endpoint: str) -> int:
    """The TCP port of an object-store endpoint URL (its explicit port, else the scheme's)."""
    m = _STORE_URL.fullmatch(endpoint)
    if m is None:
        raise ValueError(f"not an endpoint URL: {endpoint!r}")
    return int(m.group(4)) if m.group(4) else (443 if m.group(1) == "https" else 80)


def _check_backup_store(s: Settings) -> None:
    """The object store: an endpoint URL, a bucket name S3 accepts, a key for SSE-KMS, and a
    credential source this target has."""
    if s.backups.local_retention is not None and s.target != "kubernetes":
        raise ConfigError(f"{NAMESPACE}:backups.localRetention", "does not apply on Docker (backups go to a host "
                          "directory, which keeps `retention`)", "remove it")
    st = s.backups.store
    if st is None:
        return
    key = f"{NAMESPACE}:backups.store"
    m = _STORE_URL.fullmatch(st.endpoint)
    if m is None or not 0 < store_port(st.endpoint) < 65536:
        raise ConfigError(f"{key}.endpoint", f"{st.endpoint!r} is not an endpoint URL",
                          "write scheme and host (and port), e.g. https://s3.eu-west-1.amazonaws.com")
    if not _BUCKET.fullmatch(st.bucket):
        raise ConfigError(f"{key}.bucket", f"{st.bucket!r} is not a bucket name",
                          "use 3-63 lower-case letters, digits, '.' and '-', e.g. optiinfra-backups")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*", st.prefix):
        raise ConfigError(f"{key}.prefix", f"{st.prefix!r} is not a path inside a bucket",
                          "use path segments of letters, digits, '.', '_' and '-', e.g. optiinfra/prod")
    if st.encryption == "sse-kms" and not st.kms_key_id:
        raise ConfigError(f"{key}.kmsKeyId", "is required with encryption sse-kms",
                          "set it to the KMS key's ARN or id, or use encryption sse-s3")
    if st.encryption != "sse-kms" and st.kms_key_id:
        raise ConfigError(f"{key}.kmsKeyId", f"applies only with encryption sse-kms, not {st.encryption}",
                          "remove it, or set encryption: sse-kms")
    if st.credentials == "workloadIdentity":
        if s.target != "kubernetes":
            raise ConfigError(f"{key}.credentials", "workloadIdentity needs Kubernetes (a ServiceAccount)",
                              "use credentials: secret on Docker")
        if not st.service_account_annotations:
            raise ConfigError(f"{key}.serviceAccountAnnotations", "is required with workloadIdentity",
                              "set the annotation your cloud reads, e.g. {eks.amazonaws.com/role-arn: arn:...}")
    elif st.service_account_annotations:
        raise ConfigError(f"{key}.serviceAccountAnnotations", "applies only with credentials workloadIdentity",
                          "remove it, or set credentials: workloadIdentity")
    if st.credentials == "externalSecrets" and s.kubernetes.external_secrets is None:
        raise ConfigError(f"{key}.credentials", "externalSecrets needs kubernetes.externalSecrets (the store)",
                          "set kubernetes.externalSecrets.store, or use credentials: secret")


_DOMAIN = re.compile(r"(\*|([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,63})")


def _check_sso(s: Settings) -> None:
    """`sso`: Kubernetes only; an https issuer; somebody in particular may sign in."""
    sso = s.sso
    if sso is None:
        return
    key = f"{NAMESPACE}:sso"
    if s.target != "kubernetes":
        raise ConfigError(key, "does not apply on Docker (every port binds 127.0.0.1 and no sign-in proxy runs)",
                          "remove it from this stack")
    url = sso.issuer_url
    if not re.fullmatch(r"https://[a-z0-9.-]+(:[0-9]{1,5})?(/[^\s?#]*)?", url):
        raise ConfigError(f"{key}.issuerUrl", f"{url!r} is not an https issuer URL",
                          "use your provider's issuer, e.g. https://login.example.com/realms/optiinfra")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,254}", sso.client_id):
        raise ConfigError(f"{key}.clientId", f"{sso.client_id!r} is not an OIDC client id",
                          "use the client id your provider shows for the OptiInfra client")
    if not sso.email_domains and not sso.groups:
        raise ConfigError(f"{key}.emailDomains", "neither emailDomains nor groups is set, so anyone with an account "
                          "at the provider could sign in", f"set {key}.emailDomains (e.g. [example.com]) or "
                          f"{key}.groups")
    for d in sso.email_domains:
        if not _DOMAIN.fullmatch(d):
            raise ConfigError(f"{key}.emailDomains", f"{d!r} is not a mail domain", "use domains such as example.com")
    if sso.cookie_domain is not None and not re.fullmatch(r"\.?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,63}",
                                                         sso.cookie_domain):
        raise ConfigError(f"{key}.cookieDomain", f"{sso.cookie_domain!r} is not a domain",
                          "use the parent domain of the public hosts, e.g. .optiinfra.example.com")
    if "openid" not in sso.scope.split():
        raise ConfigError(f"{key}.scope", f"{sso.scope!r} lacks the openid scope", "start it with openid, "
                          "e.g. 'openid email profile'")
    if sso.jwks_url is not None and not re.fullmatch(r"https://[a-z0-9.-]+(:[0-9]{1,5})?(/[^\s?#]*)?(\?[^\s#]*)?",
                                                     sso.jwks_url):
        raise ConfigError(f"{key}.jwksUrl", f"{sso.jwks_url!r} is not an https URL", "use the jwks_uri your "
                          "provider's <issuerUrl>/.well-known/openid-configuration names")
    if sso.admin_groups and sso.jwks_url is None:
        raise ConfigError(f"{key}.adminGroups", "needs Grafana to verify the ID token (a group is a claim of the "
                          "token, not a header Grafana could trust)", f"set {key}.jwksUrl to your provider's "
                          "jwks_uri (docs/access.md)")
    for g in sso.admin_groups:
        if not g or any(c in g for c in "'\\") or not g.isprintable():
            raise ConfigError(f"{key}.adminGroups", f"{g!r} is not a group name this can match (empty, or with a "
                              "quote, backslash or control character)", "use the group as the provider's groups "
                              "claim spells it")
    for cidr in sso.trusted_proxy_cidrs:
        if ipaddress.ip_network(cidr).prefixlen == 0:
            raise ConfigError(f"{key}.trustedProxyCidrs", f"{cidr} trusts every address to forge the request's "
                              "host and scheme", "use the ingress controller's pod CIDR, e.g. 10.244.0.0/16")
