"""Value objects the catalog is written in. Plain data: no Pulumi import.

Every fact about a service lives in one `Service` declaration (see catalog.py);
backends, monitoring, policies, docs and tools derive everything else from it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from policies.optiinfra_policies.vocabulary import port_stamp


class Tier(enum.Enum):
    """The five tiers, in the seed's startup order (a tier starts after the one before it)."""

    DATABASES = "databases"
    MONITORING = "monitoring"
    CORE = "core"
    AGENTS = "agents"
    FRONTEND = "frontend"

    @property
    def order(self) -> int:
        return list(Tier).index(self)


@dataclass(frozen=True)
class Band:
    """A port allocation band from the seed's port allocation summary."""

    name: str
    low: int
    high: int

    def contains(self, port: int) -> bool:
        return self.low <= port <= self.high


@dataclass(frozen=True)
class Port:
    """One container port.

    `host` is the default host port from the seed's port table (None: never published).
    `band` names the seed's allocation band the host port belongs to.
    """

    name: str
    container: int
    host: int | None = None
    band: str | None = None
    protocol: Literal["tcp", "udp"] = "tcp"
    outside_band: str = ""
    """Why this port lies outside its band, if it does: the one written exception (the policy
    pack reads it from the port's stamp); it covers the port's own numbers only."""


T_co = TypeVar("T_co", covariant=True)


class ProbeRenderer(Protocol[T_co]):
    """How one target writes a check (cdk8s-plus' `Probe` idea): each check kind calls the
    method of its own kind, so no renderer asks a check what it is. Ports arrive resolved
    to container port numbers."""

    def http(self, path: str, port: int, expect: str | None) -> T_co: ...

    def tcp(self, port: int) -> T_co: ...

    def command(self, argv: tuple[str, ...]) -> T_co: ...


@dataclass(frozen=True)
class HttpCheck:
    """HTTP GET on a container port; healthy when the body contains `expect` (if given)."""

    path: str
    port: str
    expect: str | None = None

    def render(self, service: Service, to: ProbeRenderer[T_co]) -> T_co:
        return to.http(self.path, service.port(self.port).container, self.expect)


@dataclass(frozen=True)
class TcpCheck:
    """A TCP connect to a container port."""

    port: str

    def render(self, service: Service, to: ProbeRenderer[T_co]) -> T_co:
        return to.tcp(service.port(self.port).container)


@dataclass(frozen=True)
class CommandCheck:
    """A command run inside the container (exec form); exit 0 is healthy.

    A password never goes in argv: the command reads it from the environment
    (for example REDISCLI_AUTH for redis-cli).
    """

    argv: tuple[str, ...]

    def render(self, service: Service, to: ProbeRenderer[T_co]) -> T_co:
        return to.command(self.argv)


Probe = HttpCheck | TcpCheck | CommandCheck


def probed_check(service: Service) -> HttpCheck | TcpCheck | None:
    """What the prober checks of a service from outside it: its HTTP check (readiness first,
    then liveness: the seed's health table, path and expected body), else its TCP check, else
    a TCP connect to its connection's (or first) port; None: it has no port to reach."""
    checks = [c for c in ((service.health.probe, service.health.live) if service.health else ()) if c]
    http = next((c for c in checks if isinstance(c, HttpCheck)), None)
    if http is not None:
        return http
    tcp = next((c for c in checks if isinstance(c, TcpCheck)), None)
    if tcp is not None:
        return tcp
    if not service.ports:
        return None
    return TcpCheck(service.connection.port if service.connection else service.ports[0].name)

LOG_MIB = 64
"""Ephemeral storage a container's logs may take on the node (kubelet rotates them)."""
ROOT_SCRATCH_MIB = 256
"""Ephemeral storage for a writable root filesystem (what the image writes outside its volumes)."""


DockerClient = Literal["wget", "python", "node", "bash-tcp", "exec"]


@dataclass(frozen=True)
class HealthCheck:
    """Backend-neutral health check, written once per service.

    `probe` is the check itself. Kubernetes renders it as httpGet/tcpSocket/exec
    (nothing needed in the image for the first two). On Docker a check runs inside
    the container, so `docker_client` names the binary the image has that performs
    the probe (SECURITY.md): `wget`, `python`, `node`, `bash-tcp` (bash's
    /dev/tcp), or `exec` for a CommandCheck. None means the image has no usable
    binary; `no_docker_reason` then says what watches the service instead.
    """

    probe: Probe
    """Readiness: the service can serve (Kubernetes readiness and startup probes, Docker's
    health check, which gates dependents)."""
    live: Probe | None = None
    """Liveness: the process is not hung, a cheaper check that a dependency blip does not
    fail (Kubernetes liveness probe); None: the same as `probe`."""
    docker_client: DockerClient | None = "exec"
    no_docker_reason: str = ""
    interval_s: int = 10
    timeout_s: int = 5
    retries: int = 5
    start_period_s: int = 10
    slow_start: bool = False
    """Slow starters get a Kubernetes startup probe (initdb, migrations, WAL or AOF replay)."""

    @property
    def liveness(self) -> Probe:
        return self.live or self.probe


@dataclass(frozen=True)
class Outside:
    """Egress to addresses outside the cluster (Kubernetes ipBlock from the stack's
    `kubernetes.outsideCidrs` minus `outsideExcept`; on Docker a network with a route out)."""

    name: str
    ports: tuple[int, ...]
    reason: str
    api_server: bool = False
    """The destination is the Kubernetes API server (`kubernetes.apiServer`: its addresses and
    ports, which then replace `ports`), not `outsideCidrs`."""
    public_hosts: bool = False
    """The destination is the stack's own public hosts (`kubernetes.ingress.hosts`: the ingress
    controller's load balancer, in `outsideCidrs`); kept only on a stack that serves one over
    TLS (`Resolved.tls_hosts`), so dropped on Docker and on a stack without public services."""
    backup_store: bool = False
    """The destination is the stack's off-site backup store (`backups.store`: its endpoint's
    port, at its address alone when the endpoint is an IP literal), for a server that writes
    the store itself (PostgreSQL's WAL archive, ClickHouse's BACKUP TO S3); kept only on a
    stack with a store."""


@dataclass(frozen=True)
class ClusterReads:
    """Read-only access to the Kubernetes API: list and watch of these kinds, in the stack's
    tier namespaces only (a Role and RoleBinding per namespace, never a ClusterRole). The pod
    then mounts its ServiceAccount token: the one exception to automountServiceAccountToken=false."""

    kinds: tuple[tuple[str, tuple[str, ...]], ...]
    """(API group, resources) pairs; "" is the core group."""
    reason: str
    """Why this service reads the API (kept beside its ServiceAccount)."""
    namespaces_flag: str
    """The argument its image takes the namespaces in, e.g. `--namespaces=` (a comma-separated
    list is appended)."""
    resources_flag: str
    """The argument its image takes the resources to list in, e.g. `--resources=` (the
    resources of `kinds`, comma-separated, are appended)."""


@dataclass(frozen=True)
class Resources:
    """Requests are what the seed measured; limits leave headroom. CPU in cores."""

    memory_mib: int
    cpu: float
    memory_limit_mib: int | None = None
    cpu_limit: float | None = None
    guaranteed: bool = False
    """On Kubernetes, limits equal requests (Guaranteed QoS: evicted last, memory it sizes
    its caches from is never taken back). Docker has no QoS classes and keeps the limits."""

    @property
    def limit_mib(self) -> int:
        return self.memory_limit_mib or self.memory_mib * 2

    @property
    def limit_cpu(self) -> float:
        return self.cpu_limit or round(self.cpu * 4, 3)

    def limits(self, target: str) -> tuple[int, float]:
        """(memory MiB, CPU cores) the target caps one instance at."""
        if self.guaranteed and target == "kubernetes":
            return self.memory_mib, self.cpu
        return self.limit_mib, self.limit_cpu


@dataclass(frozen=True)
class FromLimit:
    """An argument sized from the service's memory limit on its target: `template` with `{n}`
    = floor(limit MiB x `share` x `scale`), at least `minimum`, after `flag` if given (the
    store's own memory settings, kept inside the container's limit)."""

    template: str
    share: float
    scale: float = 1.0
    minimum: int = 1
    flag: str = ""

    def render(self, limit_mib: int) -> tuple[str, ...]:
        value = self.template.format(n=max(self.minimum, int(limit_mib * self.share * self.scale)))
        return (self.flag, value) if self.flag else (value,)


@dataclass(frozen=True)
class FromVolume:
    """An argument sized from one of the service's volumes on its target: `template` with
    `{n}` = floor(volume MiB x `share`)."""

    template: str
    volume: str
    share: float

    def render(self, volume_mib: int) -> tuple[str, ...]:
        return (self.template.format(n=int(volume_mib * self.share)),)


@dataclass(frozen=True)
class FromClients:
    """An argument sized from the store's clients on this stack: `template` with `{n}` = the
    sum over the services that depend on it of their declared `Dependency.pool` times their
    instances (a Celery worker's pool is per process: times its concurrency), plus `reserve`
    (the server's own and administrators' connections), after `flag` if given."""

    template: str
    reserve: int
    flag: str = ""

    def render_n(self, n: int) -> tuple[str, ...]:
        value = self.template.format(n=n + self.reserve)
        return (self.flag, value) if self.flag else (value,)


@dataclass(frozen=True)
class FromEphemeral:
    """An argument sized from the container's ephemeral storage (`Service.ephemeral_mib`):
    `template` with `{n}` = floor(ephemeral MiB x `share` / `parts`), so `parts` files of
    that size fit the share (log files rotated inside the container)."""

    template: str
    share: float
    parts: int = 1

    def render(self, ephemeral_mib: int) -> tuple[str, ...]:
        return (self.template.format(n=max(1, int(ephemeral_mib * self.share / self.parts))),)


@dataclass(frozen=True)
class FromVolumeDays:
    """An argument sized from a volume in days of history: `template` with `{n}` =
    `days_per_gib` x the volume's GiB, between `low` and `high` days (a store's own logs kept
    no longer than its volume can hold)."""

    template: str
    volume: str
    days_per_gib: float
    low: int
    high: int

    def render(self, volume_mib: int) -> tuple[str, ...]:
        days = min(self.high, max(self.low, int(volume_mib / 1024 * self.days_per_gib)))
        return (self.template.format(n=days),)


Sized = FromLimit | FromVolume | FromClients | FromEphemeral | FromVolumeDays


@dataclass(frozen=True)
class Runtime:
    """The language runtime of a service's main process, whose own memory setting follows
    the container's memory limit (one rule per kind, infra/runtime.py): `go` (GOMEMLIMIT),
    `node` (NODE_OPTIONS=--max-old-space-size), `celery` (a prefork worker: --concurrency
    and --max-memory-per-child from `child_mib`, the resident memory of one process)."""

    kind: Literal["go", "node", "celery"]
    child_mib: int = 0


@dataclass(frozen=True)
class DisruptionBudget:
    """A PodDisruptionBudget: how many of a workload's pods a voluntary disruption (a node
    drain) may take at once, or must leave running; one of the two is set."""

    max_unavailable: int | None = None
    min_available: int | None = None


@dataclass(frozen=True)
class Rollout:
    """How a service's instances are replaced, decided once per service (resolve.resolve)
    and read by every backend and by the capacity check.

    `Recreate`: the old instance stops before the new one starts (never two at once; a
    short gap). `RollingUpdate`: up to `surge` extra instances start before old ones stop,
    and at most `unavailable` are missing meanwhile. `budget`: the disruption budget, if
    any (Kubernetes PodDisruptionBudget)."""

    strategy: Literal["Recreate", "RollingUpdate"]
    surge: int = 0
    unavailable: int = 0
    budget: DisruptionBudget | None = None


@dataclass(frozen=True)
class Volume:
    """Persistent data of a stateful service; survives container replacement."""

    name: str
    path: str
    size_gib: float


ReceiverKind = Literal["webhook", "slack", "email", "heartbeat"]
"""The kinds of alert receiver the notifier can send to (stack config `alerting.receivers`);
`heartbeat` gets the always-firing Watchdog only (a dead man's switch outside the cluster)."""


@dataclass(frozen=True)
class Credential:
    """A secret the stack needs. `config_key` is the Pulumi config key (set with
    `pulumi config set --secret`); without it, the value is generated per stack."""

    id: str
    config_key: str
    description: str
    length: int = 32
    receiver: ReceiverKind | None = None
    """The alert receiver whose URL or password this is: supplied or absent, never generated
    (nobody can generate a chat URL). The stack uses it only while `alerting.receivers.<kind>`
    is on (resolve.resolve drops it, and the env and SecretFiles that carry it, otherwise)."""
    store: bool = False
    """The off-site backup store's key or passphrase (`backups.store`): supplied, never
    generated (nobody can generate a cloud key); used only while the store needs it."""

    user_set: str = ""
    """The setting that needs it, for a credential only its user can know (an OIDC client
    secret the identity provider issued): supplied, never generated; needed while that
    setting is on. Empty: not such a credential."""

    @property
    def generated(self) -> bool:
        return self.receiver is None and not self.store and not self.user_set


@dataclass(frozen=True)
class Connection:
    """How dependents reach a service: the URL the catalog builds for them.

    `{user}`, `{password}`, `{host}` and `{port}` are filled per backend; a URL that
    embeds a password is always a secret.
    """

    template: str
    port: str
    user: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class Url:
    """Environment value: the connection URL of another service. `user` and `credential`
    log in as a role of the target other than its connection's (a consumer's own role).

    `own_login`: the client logs in as itself, with an identity the target grants it
    (`Service.grants`); the catalog fills `user` and `credential` from the grant
    (infra/stores), so this is the one place a client says it uses the store. `schema` names
    the schema it keeps its tables in, for a store that grants per schema (`SchemaRoles`)."""

    service: str
    user: str | None = None
    credential: str | None = None
    own_login: bool = False
    schema: str = ""


@dataclass(frozen=True)
class Secret:
    """Environment value: a credential, delivered as a secret."""

    credential: str


@dataclass(frozen=True)
class Dsn:
    """Environment value: a templated string with {host}, {port}, {user}, {password}
    of another service's connection (used by exporters whose DSN format differs).
    `port` names the target's port to fill in (default: its connection's port); `user` and
    `credential` log in as another role of the target than its connection's (a least-privilege
    role the target declares, such as a monitoring role for its exporter)."""

    service: str
    template: str
    port: str | None = None
    user: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class Listen:
    """Environment value: this service's own container port `port`, as a number."""

    port: str
    template: str = "{port}"
    """The value around the number, e.g. `0.0.0.0:{port}` for a listen address (default: the number)."""


EnvValue = str | Url | Secret | Dsn | Listen


SECRET_DIR = "/run/secrets/optiinfra"
"""Where Kubernetes mounts a service's credentials as files (`<SECRET_DIR>/<credential>`)."""
DOCKER_SECRET_DIR = "/run/optiinfra-secrets"
"""Where, on Docker, the entrypoint wrapper writes the credentials of an image that reads
them from files only (`SecretFile.docker_file`): a tmpfs, so they never reach a disk."""


@dataclass(frozen=True)
class SecretFile:
    """On Kubernetes, credential `credential` reaches the container as the read-only file
    `<SECRET_DIR>/<credential>` instead of the environment variables `replaces`; `file_env`
    (if given) names that file for the image (`POSTGRES_PASSWORD_FILE`), and `env` is set
    instead of what it replaces. Docker keeps the environment variables: without swarm it
    has no secret mounts, and an upload would cost the read-only root."""

    credential: str
    replaces: tuple[str, ...]
    file_env: str = ""
    env: tuple[tuple[str, EnvValue], ...] = ()
    docker_file: bool = False
    """The image reads it from a file only, on Docker too: there the container gets it in
    the first variable of `replaces`, which a `sh -c` wrapper of the image's entrypoint
    (`Service.entrypoint`) writes to `<DOCKER_SECRET_DIR>/<credential>` (a tmpfs) and unsets
    before it execs the image's program. No secret mount exists without swarm, and an upload
    would put the value into the container's filesystem on disk and into the plan."""

    @property
    def path(self) -> str:
        return f"{SECRET_DIR}/{self.credential}"

    def path_on(self, target: str) -> str:
        """Where the file is on a target (Kubernetes: the Secret mount; Docker: the wrapper's tmpfs)."""
        return self.path if target == "kubernetes" else f"{DOCKER_SECRET_DIR}/{self.credential}"


@dataclass(frozen=True)
class SchemaRoles:
    """How a PostgreSQL-like store grants access (`Service.grants`): one login role per client
    whose connection logs in as itself (`Url(..., own_login=True, schema=...)`), a member of
    the owner role of the schema that connection names (one owner per schema, which nobody
    logs in as), with that schema as its search path; and the exporters' read-only role
    `monitor` (credential `monitor_credential`). The store's start wrapper creates or updates
    them all on every start (infra/stores/postgres.py)."""

    label: str
    """The store's name in words, for the credentials' descriptions."""
    monitor: str
    monitor_credential: str


@dataclass(frozen=True)
class AclUsers:
    """How a Redis-like store grants access (`Service.grants`): one ACL user per client whose
    connection logs in as itself (`Url(..., own_login=True)`), each with `rules`; the
    exporters' read-only user `monitor` (credential `monitor_credential`) with
    `monitor_rules`; and the built-in `default` user, the administrator's, with the store's
    connection credential. The store's start wrapper writes them on every start
    (infra/stores/redis.py)."""

    label: str
    """The store's name in words, for the credentials' descriptions."""
    monitor: str
    monitor_credential: str
    rules: str
    monitor_rules: str


Grants = SchemaRoles | AclUsers


@dataclass(frozen=True)
class VerifiedToken:
    """A UI behind the sign-in proxy that verifies the ID token the proxy passes it
    (`Authorization: Bearer`, signed by the identity provider) rather than trusting an identity
    header, and takes the user's role from its claims: on with `sso.jwksUrl`."""

    env: tuple[tuple[str, str], ...]
    """Environment over `SignIn.proxied_env` (same name: replaced; the header trust off)."""
    jwks_url_env: str
    """Variable that names the provider's signing keys (`sso.jwksUrl`)."""
    claims_env: str
    """Variable holding the claims the token must carry, JSON: {"iss": issuer, "aud": [client id]}."""
    role_path_env: str
    """Variable holding the JMESPath over the claims that yields the role (`sso.adminGroups`)."""
    outside: Outside
    """Egress to the provider for its signing keys."""


@dataclass(frozen=True)
class SignIn:
    """A web UI people use (`Service.ui`). On Kubernetes a public one is reached only with a
    session of the sign-in proxy (the catalog's `authenticator`): its Ingress routes to the
    proxy when it trusts the proxy's identity header (`proxied_env`), otherwise the ingress
    controller asks the proxy before every request (external auth). On Docker it keeps its
    127.0.0.1 binds and `direct_env` (no proxy there)."""

    proxied_env: tuple[tuple[str, str], ...] = ()
    """Environment behind the proxy on Kubernetes: it takes the user's identity from the
    header the proxy sets (so its web port admits nothing but the proxy and the scraper).
    Empty: it reads no identity; the ingress controller's external auth guards it."""
    direct_env: tuple[tuple[str, str], ...] = ()
    """Environment on Docker, where every port binds 127.0.0.1 and no proxy runs."""
    closed_env: tuple[tuple[str, str], ...] = ()
    """Environment on Kubernetes when it is not public (port-forward only, no proxy)."""
    role_env: str = ""
    """Variable that sets the role a user gets on first sign-in (`sso.defaultRole`)."""
    token: VerifiedToken | None = None
    """How it verifies the proxy's ID token instead of trusting its header (`sso.jwksUrl`)."""

    @property
    def trusts_header(self) -> bool:
        return bool(self.proxied_env)


@dataclass(frozen=True)
class Dependency:
    """An edge in the catalog: this service talks to `service`.

    `wait` means the target must be healthy before this one starts (Docker health
    gating and Pulumi depends_on). `reason` is written where the seed left the edge open.
    """

    service: str
    wait: bool = True
    reason: str = ""
    pool: int = 0
    """Connections one instance of this client opens to the target at most (its pool size;
    a Celery worker's per process); a store's FromClients sums them. 0: none counted."""


class Generated(enum.Enum):
    """What a generated file holds; monitoring.py renders each kind from the model."""

    SCRAPE_CONFIG = "scrape-config"
    """The scraper's configuration: one job per service that declares `metrics`."""
    DATASOURCES = "datasources"
    """Grafana datasource provisioning: the scraper's connection."""
    RULES = "rules"
    """The scraper's alert and recording rules (alerts.py): the catalog's alerts, the memory limits."""
    DASHBOARD_PROVIDER = "dashboard-provider"
    """Grafana dashboard provisioning: the directory of the generated dashboards."""
    DASHBOARD = "dashboard"
    """One Grafana dashboard (dashboards.py): the overview (`part` empty) or a tier's (`part` = tier)."""
    NOTIFIER_CONFIG = "notifier-config"
    """The notifier's configuration (notifications.py): routes and the receivers of `alerting.receivers`."""
    PROBE_CONFIG = "probe-config"
    """The prober's modules (probes.py): one per probed service, from its health check."""
    PGBACKREST_CONF = "pgbackrest-conf"
    """pgBackRest's configuration of a server that archives (infra/pitr.py; no secret)."""


@dataclass(frozen=True)
class ConfigFile:
    """A generated file delivered into the container (Docker upload, Kubernetes ConfigMap)."""

    path: str
    generator: Generated
    part: str = ""
    """Which one of a kind that renders several files (a dashboard's tier); empty: the only one."""


Severity = Literal["critical", "warning"]
AlertSeverity = Literal["critical", "warning", "none"]
"""An alert's severity label: `none` for the Watchdog, which is routed by its name only."""


@dataclass(frozen=True)
class Alert:
    """A Prometheus alert the catalog declares, rendered into the scraper's rule file.

    `expr` is PromQL with two placeholders filled per stack: `$job` (the scrape job of the
    service that declares it: its own metrics) and `$threshold` (this default, or stack
    config `alerting.thresholds.<name>`; None: the alert has none to set). `summary` may use
    Prometheus' alert templating (`{{ $labels.instance }}`, `{{ $value }}`). `about` names the
    service the alert is about when that is not the declaring one (an exporter's alert about
    its database). `ratio`
    thresholds must lie in (0, 1]; others must be at least 0.
    """

    name: str
    expr: str
    threshold: float | None
    summary: str
    runbook: str
    severity: AlertSeverity = "warning"
    for_: str = "5m"
    about: str = ""
    ratio: bool = False
    volume: str = ""
    """A volume of the service the alert is about (`about`, else the declaring one): `$claim`
    in `expr` is its size in bytes on this stack. Such an alert is rendered only where the
    volume is a claim of fixed size (Kubernetes); a Docker volume grows into the host's disk."""


@dataclass(frozen=True)
class Panel:
    """A dashboard panel an exporter contributes to its subject's tier dashboard (`$job` as in Alert)."""

    title: str
    expr: str
    unit: str = "short"


@dataclass(frozen=True)
class WalArchive:
    """A PostgreSQL server that archives its WAL continuously through pgBackRest when the
    stack sets `backups.store` (infra/pitr.py wires it): the server then runs `image`, the
    service's image plus pgBackRest (images/<image>/Dockerfile, built and pushed by
    .github/workflows/<image>-image.yml), under OptiInfra's registry (`images.registry`) with
    the tag of the service's own image."""

    image: str
    """Name of the image under `images.registry` (its tag is the service image's)."""
    volume: str = "data"
    """The volume of the data directory (the backup job mounts it read-only beside the server)."""


@dataclass(frozen=True)
class Backup:
    """How a stateful service's data is saved and put back (backup.py renders it).

    The backup runs as a one-shot job beside the service (a Kubernetes CronJob, a Docker
    container on the service's network) and writes one file or directory per run into
    the stack's backup target, never the service's own volume. `argv` (exec form) or
    `script` (a shell fragment, for several steps) is a template: `{host}` and `{port}`
    are the service's address and the port `port`, `{out}` the path to write, `{src}` the
    backup to restore and `{data}` the mount path of the service's volume `volume`. The
    job reads the service's credential `credential` from a file (the Kubernetes Secret
    mount, or a file the Docker command writes) into the environment variable
    `password_env` that the client reads, so no password is ever in argv.
    `none_reason` declares a service not backed up, and why.
    """

    reads: str = ""
    """What the backup reads, in words (the docs and the restore warning say it)."""
    argv: tuple[str, ...] = ()
    script: str = ""
    restore: tuple[str, ...] = ()
    """The restore command (template, as `argv`); `restore_script` for several steps."""
    restore_script: str = ""
    port: str = ""
    """The service's port the job dials: its NetworkPolicy edge (empty: it dials nothing)."""
    volume: str = ""
    """The service's volume the job mounts (read-only for a backup) when it reads files, not a port."""
    offline_restore: bool = False
    """The restore replaces the volume's files: the service is stopped first and started after."""
    credential: str | None = None
    password_env: str = ""
    image: str = ""
    """Image with the client (default: the service's own, which ships it)."""
    uid: int | None = None
    """User the job runs as (default: the service's)."""
    suffix: str = ""
    """Ending of each backup's name, e.g. `.dump` (a directory when it ends in `/`)."""
    canary: str = ""
    """A shell line run before each backup that writes a marker into the data (`{host}`,
    `{port}` as in `script`); the restore drill fails when the restored copy lacks it."""
    drill: Literal["", "pg_dump", "rdb", "pgbackrest"] = ""
    """How the scheduled restore drill restores the newest backup into a throwaway server
    (infra/objectstore.py): `pg_dump` (pg_restore into a fresh cluster), `rdb` (redis-server
    loads it), `pgbackrest` (the newest base backup and the WAL archive; set by infra/pitr.py
    when the stack archives); empty: no drill (nothing to restore into here)."""
    server_store: Literal["", "backup-to-s3"] = ""
    """With `backups.store`: the server itself writes its backups into the store, this tool's
    way (`backup-to-s3`: ClickHouse's `BACKUP DATABASE ... TO S3`, infra/clickhouse_backup.py): the job only
    sends the statement, with no claim of its own and no upload step. Empty: the job writes."""
    database: str = ""
    """The database a `server_store` backup saves and restores."""
    archive: WalArchive | None = None
    """With `backups.store`: the continuous WAL archive, base backups and point-in-time
    restores through pgBackRest (PostgreSQL); None: only the dumps above."""
    none_reason: str = ""

    @property
    def enabled(self) -> bool:
        return not self.none_reason

    @property
    def reads_volume(self) -> bool:
        """The backup reads the service's volume (mounted read-only), not a port; a Backup
        with both names its volume for the restore only."""
        return bool(self.volume) and not self.port


def backup_job(service: str) -> str:
    """Name (and pod label) of a service's backup job."""
    return f"{service}-backup"


def drill_job(service: str) -> str:
    """Name (and pod label) of a service's restore drill job."""
    return f"{service}-drill"


@dataclass(frozen=True)
class Service:
    """One OptiInfra service, declared once."""

    name: str
    tier: Tier
    image: str
    """`repo:tag` of an official image, or `{registry}/name` for OptiInfra's own
    (registry and tag from stack config `images`)."""
    purpose: str
    ports: tuple[Port, ...] = ()
    health: HealthCheck | None = None
    depends_on: tuple[Dependency, ...] = ()
    resources: Resources = Resources(memory_mib=64, cpu=0.1)
    volumes: tuple[Volume, ...] = ()
    credentials: tuple[Credential, ...] = ()
    """Credentials this service owns (its own password), declared with it; generated
    under its tier unless supplied as a stack secret. Default none."""
    env: tuple[tuple[str, EnvValue], ...] = ()
    connection: Connection | None = None
    metrics: tuple[str, str] | None = None
    """(port name, path) Prometheus scrapes; None: not scraped."""
    command: tuple[str | Dsn, ...] = ()
    """Arguments (a Dsn is filled per backend, like an environment value)."""
    sized_command: tuple[Sized, ...] = ()
    """Arguments after `command`, sized per stack from the effective memory limit or a
    volume's size (the store's own memory and retention settings); default none."""
    files: tuple[ConfigFile, ...] = ()
    uid: int = 65532
    """The non-root user (and group) the container runs as, on both targets
    (Kubernetes runAsUser/runAsGroup/fsGroup, Docker `user`); default 65532."""
    image_user_on_docker: str = ""
    """Why the container keeps its image's own user on Docker, if it must: Docker has no
    fsGroup, so a fresh named volume keeps the ownership the image gave its directory.
    Empty (the default): Docker runs it as `uid` too."""
    cap_add: tuple[tuple[str, str], ...] = ()
    """Capabilities added back after drop ALL (both targets), each with its reason; default none."""
    writable_paths: tuple[str, ...] = ("/tmp",)
    """Paths that get an emptyDir (Kubernetes) or tmpfs (Docker) under the read-only root."""
    read_only_root: bool = True
    read_only_reason: str = ""
    """Why the root filesystem stays writable, when read_only_root is False."""
    publish: bool = True
    """Publish host ports by default. Databases and exporters do not: they are reached
    over their tier network unless the stack asks (CIS 5.8)."""
    scalable: bool = False
    """Replicas may be raised (stateless workers); otherwise exactly one."""
    per_cloud_provider: bool = False
    """Runs one instance per cloud provider of the stack (`cloudProviders`) on Kubernetes,
    `<name>-<provider>` behind one Service; once on Docker. Default no."""
    scraper: bool = False
    """Scrapes every service that declares `metrics` (Prometheus' role); the scrape edges,
    the scrape config and Grafana's datasource follow from it. Default no."""
    notifier: bool = False
    """Receives the scraper's firing alerts and notifies people (Alertmanager's role): the
    scrape config's `alerting` block names it, its config routes to `alerting.receivers`.
    The scraper declares the edge to it (a Dependency). Default no."""
    prober: bool = False
    """Probes every other service's health endpoint from outside it (the blackbox exporter's
    role): its probe edges, the scrape config's probe jobs and its module file follow from
    the services' health checks (probes.py). Default no."""
    probe_alerts: tuple[Alert, ...] = ()
    """The prober's alerts on each service it probes (`$job`: that service's probe job)."""
    tls_alerts: tuple[Alert, ...] = ()
    """The prober's alerts on the TLS handshake with the stack's public hosts (`$job`: that
    probe job, probes.TLS_JOB); rendered only on a stack with public hosts over TLS."""
    push_gateway: bool = False
    """Holds the results batch jobs push (the restore drills'; Pushgateway's role) for the
    scraper, which keeps their labels (`honor_labels`); the drill edges point at it. Default no."""
    entrypoint: tuple[str, ...] = ()
    """The image's own entrypoint (exec form), for a wrapper that runs before it and then
    execs it (`SecretFile.docker_file`); empty: none needed, the image's stays."""
    own_image: bool = False
    """True for OptiInfra's own images: registry and tag come from stack config."""
    outside: tuple[Outside, ...] = ()
    """Egress beyond the catalog's edges and DNS; default none (deny)."""
    exclusive: str = ""
    """Why two instances must never run at once, even during a rollout (Kubernetes then
    replaces in place: Recreate); empty: rolling updates with surge."""
    scratch_mib: int = 64
    """Size limit of each writable path's emptyDir; the ephemeral-storage request is their
    sum plus `LOG_MIB` for the container's logs (a writable root adds `ROOT_SCRATCH_MIB`)."""
    secret_files: tuple[SecretFile, ...] = ()
    """Credentials the image can read from a file (Kubernetes mounts them); default none."""
    secret_env_reason: str = ""
    """Why this service's image takes its secrets only as environment variables (no file
    option): kept as the reviewers' exception beside the workload; empty: none said."""
    kubernetes_only: str = ""
    """Why this service runs on Kubernetes stacks only (what replaces it on Docker is said in
    docs/monitoring.md); empty: every target. `resolve` leaves it out of a Docker stack."""
    process_metrics: bool = True
    """Its scraped /metrics carries the client libraries' process metrics (catalog
    CLIENT_METRICS), which MemoryNearLimit and Restarting read; False: they are served
    elsewhere and not scraped (kube-state-metrics: on its telemetry port), so those two
    alerts do not see it."""
    cluster_reads: ClusterReads | None = None
    """Its read-only access to the Kubernetes API (a ServiceAccount, Roles); None: none, and
    no ServiceAccount token in its pods."""
    external_url_env: str = ""
    """Environment variable through which a public service learns its external URL (the
    Ingress host on Kubernetes); empty: none."""
    exposes: tuple[str, ...] = ()
    """Metric names its `metrics` endpoint serves that rules or dashboards read (the
    dashboards test holds every query to these, `up` and what a rule records)."""
    alerts: tuple[Alert, ...] = ()
    """Alerts on what this service's own metrics say (beside the platform's, which every
    scraped service gets); default none."""
    panels: tuple[Panel, ...] = ()
    """Key panels of its metrics on the tier dashboard of what it watches; default none."""
    backup: Backup | None = None
    """How its data is backed up and restored; every stateful service declares one (a
    Backup with `none_reason` when it is not worth one)."""
    runtime: Runtime | None = None
    """The language runtime whose memory setting follows the limit (GOMEMLIMIT, the V8 heap,
    Celery's processes); None: the process sizes itself (stores size through `sized_command`)."""
    shm_share: float = 0.0
    """A memory-backed /dev/shm of this share of the memory limit (PostgreSQL's dynamic shared
    memory: parallel queries); 0: the runtime's default (64M on Docker, none on Kubernetes)."""
    ui: SignIn | None = None
    """A web UI people use: public on Kubernetes only behind the sign-in proxy (SignIn);
    None: not a UI (an API, a store, an exporter)."""
    authenticator: bool = False
    """The sign-in proxy (OIDC) in front of every public UI on Kubernetes, deployed there
    while `sso` is set (never on Docker). Default no."""
    grants: Grants | None = None
    """How this store lets its clients in, each as itself (`SchemaRoles`, `AclUsers`): its
    clients' identities, their credentials and its start wrapper follow from it and from the
    clients' connections (infra/stores); None: clients log in with its connection's login."""

    @property
    def subject(self) -> str:
        """The service its alerts and panels are about: the one its alerts name, else itself."""
        return next((a.about for a in self.alerts if a.about), self.name)

    @property
    def ephemeral_mib(self) -> int:
        paths = len(self.writable_paths) if self.read_only_root else 0
        return paths * self.scratch_mib + LOG_MIB + (0 if self.read_only_root else ROOT_SCRATCH_MIB)

    @property
    def stateful(self) -> bool:
        return bool(self.volumes)

    @property
    def read_only_root_on_docker(self) -> bool:
        """Docker copies generated files into the container's filesystem before it starts,
        which a read-only root refuses: a service with generated files keeps a writable
        root on Docker (on Kubernetes they are mounted from a ConfigMap)."""
        return self.read_only_root and not self.files

    @property
    def docker_user(self) -> str | None:
        """`uid:uid`, or None (the image's own user) where `image_user_on_docker` says why."""
        return None if self.image_user_on_docker else f"{self.uid}:{self.uid}"

    def port(self, name: str) -> Port:
        for p in self.ports:
            if p.name == name:
                return p
        raise KeyError(f"{self.name} has no port named {name!r}")

    @property
    def primary_port(self) -> Port | None:
        return self.ports[0] if self.ports else None


_MEM = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>Ki|Mi|Gi|Ti|K|M|G|T|KB|MB|GB|k|m|g)?\s*$")
_MEM_FACTORS = {
    None: 1 / (1024 * 1024), "Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024,
    "K": 1000 / 1024 / 1024, "k": 1000 / 1024 / 1024, "KB": 1000 / 1024 / 1024,
    "M": 1000 * 1000 / 1024 / 1024, "m": 1000 * 1000 / 1024 / 1024, "MB": 1000 * 1000 / 1024 / 1024,
    "G": 1000**3 / 1024**2, "g": 1000**3 / 1024**2, "GB": 1000**3 / 1024**2,
    "T": 1000**4 / 1024**2,
}


def parse_memory_mib(text: str | int) -> int:
    """'512Mi', '1Gi', '300M', '2G', or bytes as a number -> MiB. Raises ValueError."""
    if isinstance(text, int):
        return max(1, round(text / (1024 * 1024)))
    m = _MEM.match(str(text))
    if not m:
        raise ValueError(text)
    mib = float(m.group("num")) * _MEM_FACTORS[m.group("unit")]
    if mib < 1:
        raise ValueError(text)
    return round(mib)


@dataclass
class Catalog:
    """The services of one stack, in declaration order, with the port bands."""

    services: dict[str, Service]
    bands: tuple[Band, ...] = field(default_factory=tuple)
    credentials: dict[str, Credential] = field(default_factory=dict)
    alerts: tuple[Alert, ...] = ()
    """Alerts every scraped service gets (`$job` matches all of them; see Alert)."""
    job_alerts: tuple[Alert, ...] = ()
    """Alerts on each scrape job, one rule per job (`$job`: that job): a job without targets."""
    watchdog: Alert | None = None
    """The always-firing alert the notifier sends to the heartbeat receiver only (a dead man's switch)."""
    drill_alerts: tuple[Alert, ...] = ()
    """Alerts on the restore drills' pushed results, one rule per drilled service (alerts.py)."""

    def all_alerts(self) -> list[Alert]:
        """The platform's alerts and every service's, in declaration order."""
        return [*self.alerts, *(a for s in self.services.values() for a in s.alerts),
                *self.job_alerts, *(a for s in self.services.values() for a in s.probe_alerts),
                *(a for s in self.services.values() for a in s.tls_alerts),
                *((self.watchdog,) if self.watchdog else ()), *self.drill_alerts]

    def band(self, name: str) -> Band:
        for b in self.bands:
            if b.name == name:
                return b
        raise KeyError(name)

    def band_of(self, port: Port) -> Band | None:
        """The allocation band a port's host port belongs to (None: it has none)."""
        return self.band(port.band) if port.band else None

    def port_stamp(self, port: Port) -> str:
        """What the policy pack reads of a port: its band, and the catalog's exception."""
        numbers = [port.container] + ([port.host] if port.host else [])
        return port_stamp(port.name, self.band_of(port), port.outside_band, numbers)

    def credential_keys(self) -> frozenset[str]:
        """The config keys credentials are supplied under (read by credentials.py)."""
        return frozenset(c.config_key for c in self.credentials.values())
