"""The 23 OptiInfra services (the seed's 19, Alertmanager, the blackbox exporter, the sign-in
proxy, which runs on Kubernetes only, and the Pushgateway, which runs only where restore drills
do: Kubernetes with `backups.store`), declared once (source:
shared/seed/services-and-ports.md).

Plain data, no Pulumi import. Ports, images, health checks, dependencies, memory,
volumes, credentials and environment are written here and nowhere else.

Decisions where the seed is silent are written beside the field they affect.
"""

from __future__ import annotations

from .model import (
    AclUsers,
    Alert,
    Backup,
    Band,
    Catalog,
    ClusterReads,
    CommandCheck,
    ConfigFile,
    Connection,
    Credential,
    Dependency,
    DockerClient,
    Dsn,
    FromClients,
    FromEphemeral,
    FromLimit,
    FromVolume,
    FromVolumeDays,
    Generated,
    HealthCheck,
    HttpCheck,
    Listen,
    Outside,
    Panel,
    Port,
    Resources,
    Runtime,
    SchemaRoles,
    Secret,
    SecretFile,
    Service,
    SignIn,
    TcpCheck,
    Tier,
    Url,
    VerifiedToken,
    Volume,
    WalArchive,
    backup_job,
)
from .objectstore import DRILL_METRICS
from .stores import with_grants
from .stores.postgres import PG_APPLIED as PG_APPLIED  # re-exported: its readiness check reads it

# The seed's port allocation summary. A port outside its band says why beside itself
# (Port.outside_band): ClickHouse HTTP (8123) is the seed's one such port.
BANDS = (
    Band("application", 8000, 8099),
    Band("database", 5000, 6999),
    Band("monitoring", 3000, 5999),
    Band("metrics", 9000, 9999),
)

# The Celery application inside the data-collector image (a contract with that image).
CELERY_APP = "app.celery_app"
DB_USER = "optiinfra"

MONITOR = "optiinfra_monitor"
"""The exporters' read-only identity: PostgreSQL's role in pg_monitor and nothing else, Redis'
read-only ACL user."""

OWN_ENV = "OptiInfra's own images read connection URLs and keys from the environment only (no file option yet)"
"""Why OptiInfra's own images take secrets as environment variables (a contract with those images)."""

# The Celery queue the collector's tasks wait in: a Redis list of that name in the broker's
# database 0 (Celery's default queue; the broker URL ends in /0). Its length is the backlog.
CELERY_QUEUE = "celery"

REDIS_APP_RULES = "~* &* +@all -@dangerous"
"""What an application's Redis user may do: every command but those that can destroy, stop or
reconfigure the server or read other clients (FLUSHALL, CONFIG, SHUTDOWN, DEBUG, REPLICAOF,
MONITOR, KEYS, CLIENT KILL, ...). Keys and channels are not split per application: Celery's
queue, results and kombu bindings are one shared keyspace, and their names are the images'."""

REDIS_MONITOR_RULES = (f"resetchannels %R~{CELERY_QUEUE} -@all +@connection +@read +info +config|get "
                       "+slowlog|get +slowlog|len +latency|latest +cluster|info")
"""The exporter's Redis user: read-only, server statistics and the Celery queue's length only."""


CLIENT_METRICS = ("process_resident_memory_bytes", "process_start_time_seconds")
"""What every scraped service exposes beside its own metrics: the Prometheus client
libraries' process collector (Go and Python clients on Linux; a contract with OptiInfra's
own images, whose /metrics uses prometheus_client)."""

PLATFORM_ALERTS = (
    # One instance down is a warning (a replicated service still serves); every instance of a
    # service down pages (ServiceDown), whether or not the prober reaches it.
    Alert("TargetDown", "up == 0", None,
          "{{ $labels.service }} ({{ $labels.instance }}) does not answer its metrics scrape",
          "Check the service's logs and health check (python -m infra docs lists it); on Kubernetes "
          "`kubectl describe pod` shows probe failures and OOM kills.", for_="2m"),
    Alert("ServiceDown", "max by (job, service, tier) (up) == 0", None,
          "No instance of {{ $labels.service }} answers its metrics scrape",
          "Every instance is down: on Kubernetes `kubectl get pods -l app.kubernetes.io/name=<service>` (Pending, "
          "CrashLoopBackOff, OOMKilled) and its events; on Docker `docker ps -a` and the container's logs.",
          severity="critical", for_="2m"),
    # The recording rule service:memory_usage:ratio is the resident memory of each instance
    # over the limit its target gives it (alerts.py records the limits from the catalog).
    Alert("MemoryNearLimit", "service:memory_usage:ratio > $threshold", 0.9,
          "{{ $labels.service }} ({{ $labels.instance }}) uses {{ $value | humanizePercentage }} of its memory limit",
          "Raise optiinfra:services.<name>.memory in the stack config, or find the leak; at the limit "
          "the kernel kills the process.", for_="10m", ratio=True),
    # A restart keeps the instance (the pod IP, the container name) and resets the process
    # start time; a rollout starts new instances, so it does not count.
    Alert("Restarting", "changes(process_start_time_seconds[30m]) > $threshold", 2,
          "{{ $labels.service }} ({{ $labels.instance }}) restarted {{ $value }} times in 30 minutes",
          "A crash loop: read the logs of the previous run (`kubectl logs --previous`, `docker logs`); "
          "a failing liveness probe or the memory limit are the usual causes.", for_="0m"),
)
"""Alerts on every scraped service, from Prometheus' own `up` and the client libraries' process
metrics. On Kubernetes kube-state-metrics adds the cluster state (KSM_ALERTS, docs/monitoring.md)."""

JOB_ALERTS = (
    # `up == 0` needs a target: a service whose pods are all Pending (no IP, no DNS record) or a
    # job that lost every target has none, so nothing would be down. absent() fires on that.
    Alert("TargetMissing", 'absent(up{job="$job"})', None,
          "The scrape job {{ $labels.job }} has no target: no instance of it is running",
          "Check that the service has a running, ready instance "
          "(`kubectl get pods -l app.kubernetes.io/name=<service>`, `docker ps -a`): "
          "Pending pods, a failed rollout, a disabled service, or a renamed job.",
          severity="critical", for_="5m"),
)
"""Alerts on each scrape job (`$job`: that job), one rule per job."""

WATCHDOG = Alert(
    "Watchdog", "vector(1)", None,
    "Always firing: the alerting pipeline (Prometheus, its rules, Alertmanager) works",
    "Never silence it. When the heartbeat service (alertHeartbeatUrl) reports it missing, check Prometheus "
    "(/-/ready, its rule evaluation) and Alertmanager (/-/ready, AlertNotificationsFailing) first, then the "
    "notifier's egress to the heartbeat URL.", severity="none", for_="0m")
"""The dead man's switch: routed to the heartbeat receiver only (notifications.py)."""

PROBE_ALERTS = (
    Alert("ServiceUnavailable", 'probe_success{job="$job"} == 0', None,
          "{{ $labels.service }} fails its health check from the prober ({{ $labels.instance }})",
          "Open the health endpoint the alert names (docs/PORTS.md lists it, with the body it must contain); "
          "then the service's logs and, on Kubernetes, `kubectl describe pod` (probe failures, OOM kills, Pending).",
          severity="critical", for_="5m"),
    Alert("ServiceSlow", 'probe_duration_seconds{job="$job"} > $threshold', 1.0,
          "{{ $labels.service }} takes {{ $value | humanizeDuration }} to answer its health check",
          "Check the service's CPU throttling and memory (Grafana's tier dashboard), then what its health check "
          "waits on (its database); raise the threshold per stack in optiinfra:alerting.thresholds.ServiceSlow.",
          for_="10m"),
    Alert("ProbeMissing", 'absent(probe_success{job="$job"})', None,
          "No probe result from {{ $labels.job }}: the prober is not scraped or the probe job is gone",
          "Check the blackbox exporter (its TargetDown, its logs) and the probe job in prometheus.yml.",
          for_="10m"),
)
"""The prober's alerts on each service it probes (`$job`: the service's probe job)."""

_DAYS_LEFT = '(probe_ssl_earliest_cert_expiry{job="$job"} - time()) / 86400 < $threshold'
"""Days until the earliest certificate the public host presents (its chain included) expires."""

_RENEW = ("Check the certificate's renewal: with cert-manager (kubernetes.ingress.certManagerIssuer) "
          "`kubectl describe certificate -n <namespace>` and its issuer's events; with kubernetes.ingress."
          "tlsSecretName, put a renewed certificate into that Secret in each public service's namespace.")

TLS_ALERTS = (
    # The handshake verifies the chain (system roots) and the host name, so an expired, untrusted or
    # wrong-host certificate fails the probe (and then has no expiry series): TLSHandshakeFailing.
    Alert("TLSCertificateExpiring", _DAYS_LEFT, 14,
          "The certificate of {{ $labels.instance }} expires in {{ printf \"%.1f\" $value }} days",
          _RENEW, for_="10m"),
    Alert("TLSCertificateExpiryCritical", _DAYS_LEFT, 3,
          "The certificate of {{ $labels.instance }} expires in {{ printf \"%.1f\" $value }} days",
          _RENEW + " Renewal has failed for days: fix it now.", severity="critical", for_="10m"),
    Alert("TLSHandshakeFailing", 'probe_success{job="$job"} == 0', None,
          "The TLS handshake with {{ $labels.instance }} fails",
          "`openssl s_client -connect <host>:443 -servername <host>`: an expired, untrusted or wrong-host "
          "certificate, or the ingress controller (its pods, its load balancer, the host's DNS) not answering.",
          severity="critical", for_="5m"),
    # Without a result the expiry alerts stay quiet however close the expiry: absent() fires on that.
    Alert("TLSProbeMissing", 'absent(probe_success{job="$job"})', None,
          "No TLS probe result from {{ $labels.job }}: the prober is not scraped or the probe job is gone",
          "Check the blackbox exporter (its TargetDown, its logs) and the tls-<service> job in prometheus.yml.",
          for_="10m"),
)
"""The prober's alerts on each public host's TLS probe job (`$job`: probes.tls_job_name; Kubernetes
stacks with public hosts over TLS only). Critical under 3 days inhibits the warning (notifications.py)."""

KSM_METRICS = (
    "kube_deployment_spec_replicas", "kube_deployment_status_replicas_ready",
    "kube_statefulset_replicas", "kube_statefulset_status_replicas_ready",
    "kube_pod_container_status_restarts_total", "kube_pod_container_status_waiting_reason",
    "kube_cronjob_created", "kube_cronjob_status_last_successful_time", "kube_job_failed", "kube_job_owner",
)
"""What kube-state-metrics serves that the cluster-state alerts read (tests/test_live_ksm.py reads
them from the real one)."""

_BACKUP = f'.+{backup_job("")}'
"""A backup CronJob's name (`<service>-backup`, backup_jobs.py), as a regular expression."""

KSM_ALERTS = (
    Alert("ReplicasShort",
          '((kube_deployment_spec_replicas{job="$job"} - kube_deployment_status_replicas_ready{job="$job"}) '
          'or (kube_statefulset_replicas{job="$job"} - kube_statefulset_status_replicas_ready{job="$job"})) '
          '> $threshold', 0,
          "{{ $labels.namespace }}/{{ $labels.deployment }}{{ $labels.statefulset }} is {{ $value }} "
          "ready replicas short of desired",
          "`kubectl describe` the workload and its pods: Pending (no node fits: python -m infra capacity), "
          "image pulls, failing readiness probes.", severity="critical", for_="10m"),
    Alert("CrashLooping",
          'max by (namespace, pod, container) (kube_pod_container_status_waiting_reason{job="$job", '
          'reason="CrashLoopBackOff"}) > $threshold', 0,
          "{{ $labels.namespace }}/{{ $labels.pod }} ({{ $labels.container }}) is in CrashLoopBackOff",
          "`kubectl logs --previous` the container; OOMKilled in `kubectl describe pod` means the memory limit.",
          severity="critical", for_="5m"),
    # Every container, scraped or not (the platform's Restarting reads a scraped process's start time).
    # The counter's rise over 30 minutes, exact (increase() extrapolates to the window's edges).
    Alert("ContainerRestarting",
          '(max_over_time(kube_pod_container_status_restarts_total{job="$job"}[30m]) '
          '- min_over_time(kube_pod_container_status_restarts_total{job="$job"}[30m])) > $threshold', 2,
          "{{ $labels.namespace }}/{{ $labels.pod }} ({{ $labels.container }}) restarted "
          "{{ $value }} times in 30 minutes",
          "`kubectl logs --previous` and `kubectl describe pod` (liveness failures, OOM kills).",
          for_="0m"),
    # The backup CronJobs run daily by default (backups.schedule): a last success older than a
    # day, the job's one-hour deadline and an hour's slack (26h) is a missed backup; a CronJob
    # that never succeeded counts from its creation. Another schedule sets the threshold per
    # stack (alerting.thresholds.BackupStale, seconds).
    Alert("BackupStale",
          f'(time() - kube_cronjob_status_last_successful_time{{job="$job", cronjob=~"{_BACKUP}"}} > $threshold) '
          f'or (time() - kube_cronjob_created{{job="$job", cronjob=~"{_BACKUP}"}} > $threshold '
          'unless on (namespace, cronjob) kube_cronjob_status_last_successful_time{job="$job"})',
          93600,
          "The backup {{ $labels.namespace }}/{{ $labels.cronjob }} has not succeeded for "
          "{{ $value | humanizeDuration }}",
          "`kubectl get jobs -n <namespace>` for the CronJob's last runs and their logs; then the "
          "object store's reachability and credentials (docs/backups.md).", severity="critical", for_="15m"),
    # A backup Job (owned by a backup CronJob, scheduled or `kubectl create job --from`) that
    # failed: its Failed condition (backoff limit or deadline), not one failed pod it retried.
    # It fires while the failed Job is kept (failedJobsHistoryLimit): delete it once handled.
    Alert("BackupFailed",
          'kube_job_failed{job="$job", condition="true"} * on (namespace, job_name) group_left (owner_name) '
          f'kube_job_owner{{job="$job", owner_kind="CronJob", owner_name=~"{_BACKUP}"}} > 0', None,
          "The backup job {{ $labels.namespace }}/{{ $labels.job_name }} ({{ $labels.owner_name }}) failed",
          "`kubectl logs job/<job_name> -n <namespace>`; then the object store and the service's credentials; "
          "delete the failed Job once handled (it fires while the Job is kept).",
          severity="critical", for_="0m"),
)
"""Cluster state from kube-state-metrics (Kubernetes stacks only). Volume fill is not among
them: kubelet volume stats are not scraped (docs/monitoring.md says what stands in)."""

PROMETHEUS_STORAGE = ("prometheus_tsdb_storage_blocks_bytes", "prometheus_tsdb_wal_storage_size_bytes",
                      "prometheus_tsdb_head_chunks_storage_size_bytes")
"""Prometheus' own view of its data directory: the persisted blocks, the WAL and the head's
memory-mapped chunks, the three sizes its size retention adds up (tsdb: blocks + Head.Size())."""
DRILL_ALERTS = (
    # One rule per drilled service on the series its drill pushes (objectstore.DRILL_METRICS):
    # `$service` that service, `$allowed` the longest gap between two runs of the drill's
    # schedule (backups.drillSchedule) plus the drill's deadline, in seconds (alerts.py).
    Alert("BackupDrillFailed",
          'max by (service) (optiinfra_backup_drill_success{service="$service"}) == 0 '
          'or (time() - max by (service) (optiinfra_backup_drill_timestamp_seconds{service="$service"})) > $allowed '
          # No result in that time at all (a restarted Pushgateway, a CronJob that never ran, a new stack).
          'or absent_over_time(optiinfra_backup_drill_timestamp_seconds{service="$service"}[${allowed}s])',
          None, "The newest restore drill of {{ $labels.service }} failed, or none reported in time",
          "Read the drill's log (`kubectl -n <tier namespace> logs job/<service>-drill-<run>`, the newest run of the "
          "CronJob): a missing backup, a corrupt download or a missing canary fails it; no result means the "
          "CronJob did not run (`kubectl get cronjob,job -l app.kubernetes.io/name=<service>-drill`), or the "
          "Pushgateway lost its results (restarted), or the stack is new: run one now with "
          "`kubectl create job --from=cronjob/<service>-drill`.", severity="critical", for_="0m"),
    # $threshold: seconds of grace on top of the longest gap between two runs of backups.schedule.
    Alert("BackupTooOld",
          'max by (service) (optiinfra_backup_drill_rpo_seconds{service="$service"}) > $allowed + $threshold',
          3600, "The newest restorable backup of {{ $labels.service }} is {{ $value | humanizeDuration }} old",
          "A backup run failed or did not run: check the newest `<service>-backup` Job's log (the store's key, "
          "endpoint and bucket) and run one now with `kubectl create job --from=cronjob/<service>-backup`; "
          "raise the grace in optiinfra:alerting.thresholds.BackupTooOld (seconds).", for_="0m"),
)
"""Alerts on the restore drills' results (the Pushgateway's), rendered per drilled service."""

_DASHBOARDS = "/etc/grafana/dashboards"  # Grafana's generated dashboards (its home is the overview)

_PY: DockerClient = "python"  # OptiInfra's Python images (collector, agents) check with python's urllib


def _agent(name: str, port: int, purpose: str, *extra: Dependency, env: tuple[tuple[str, object], ...] = (),
           per_cloud_provider: bool = False, outside: tuple[Outside, ...] = ()) -> Service:
    return Service(
        name=name,
        tier=Tier.AGENTS,
        image=name,
        own_image=True,
        purpose=purpose,
        ports=(Port("http", port, host=port, band="application"),),
        health=HealthCheck(HttpCheck("/health", "http", '"status":"healthy"'), live=TcpCheck("http"),
                           docker_client=_PY),
        depends_on=(
            # The seed leaves the agents' peers open. Decision: an agent registers with
            # and pulls work from the orchestrator, and submits collection jobs through
            # the data collector's API; the orchestrator never calls an agent. So every
            # connection points against the startup order and no earlier tier needs a
            # path into the agents network.
            Dependency("orchestrator", reason="agents register with and pull tasks from the orchestrator"),
            Dependency("data-collector", reason="agents submit collection jobs through the collector API"),
            *extra,
        ),
        resources=Resources(memory_mib=50, cpu=0.1),
        metrics=("http", "/metrics"),
        env=(("PORT", Listen("http")), ("ORCHESTRATOR_URL", Url("orchestrator")),
             ("DATA_COLLECTOR_URL", Url("data-collector")), *env),  # type: ignore[arg-type]
        scalable=True,
        secret_env_reason=OWN_ENV,
        per_cloud_provider=per_cloud_provider,
        outside=outside,
    )


def _collector(name: str, purpose: str, command: tuple[str, ...], health: HealthCheck,
               deps: tuple[str, ...], memory: int, ports: tuple[Port, ...] = (),
               metrics: tuple[str, str] | None = None, exclusive: str = "", pool: int = 0,
               runtime: Runtime | None = None) -> Service:
    env_for = {
        # The collector's API and its Celery worker are one codebase on one set of tables.
        "postgres": ("DATABASE_URL", Url("postgres", own_login=True, schema="collector")),
        "clickhouse": ("CLICKHOUSE_URL", Url("clickhouse")),
        "redis": ("CELERY_BROKER_URL", Url("redis", own_login=True)),
    }
    return Service(
        name=name,
        tier=Tier.CORE,
        image="data-collector",
        own_image=True,
        purpose=purpose,
        ports=ports,
        health=health,
        depends_on=tuple(Dependency(d, pool=pool if d == "postgres" else 0) for d in deps),
        resources=Resources(memory_mib=memory, cpu=0.1),
        runtime=runtime,
        env=(*((("PORT", Listen("http")),) if ports else ()), *(env_for[d] for d in deps)),
        command=command,
        metrics=metrics,
        scalable=not exclusive,
        secret_env_reason=OWN_ENV,
        exclusive=exclusive,
    )


SERVICES: tuple[Service, ...] = (
    # ---- databases -------------------------------------------------------------
    Service(
        name="postgres",
        tier=Tier.DATABASES,
        # checked 2026-12-07: newest 16.x found (16 supported to 2028-11); instaclustr.com/?p=19095
        image="postgres:16.14",
        publish=False,
        purpose="Relational database",
        ports=(Port("postgres", 5432, host=5432, band="database"),),
        # Ready when it accepts connections; alive while it listens (pg_isready fails during
        # crash recovery, which a liveness restart would only prolong).
        health=HealthCheck(CommandCheck(("sh", "-c", f'pg_isready -q -h 127.0.0.1 -U {DB_USER} -d optiinfra '
                                         f'&& test -f "{PG_APPLIED}"')),
                           live=TcpCheck("postgres"), slow_start=True, start_period_s=30),
        # 512 MiB, request = limit (Guaranteed): the seed measures ~200MB (its resource table);
        # on top a quarter of the limit for shared_buffers (128MB) and room for its clients'
        # connections at ~4 MiB each (FromClients below). CPU 0.25: the seed says "Low".
        resources=Resources(memory_mib=512, cpu=0.25, memory_limit_mib=512, guaranteed=True),
        # The image's server, run by its entrypoint under the start wrapper (infra/stores/postgres.py),
        # which applies the current credentials and the roles of `grants` on every start.
        command=("postgres",),
        # Sized from the memory limit: a quarter for shared buffers; connections from its
        # clients' pools (Dependency.pool x instances, on this stack) plus 6 of its own:
        # 3 superuser_reserved_connections (PostgreSQL's default), the backup job's pg_dump
        # and two for an administrator's psql.
        sized_command=(FromLimit("shared_buffers={n}MB", 0.25, flag="-c"),
                       FromClients("max_connections={n}", reserve=6, flag="-c")),
        # Parallel queries' dynamic shared memory lives in /dev/shm (dynamic_shared_memory_type
        # posix): Docker's default is 64M and Kubernetes has none, so a quarter of the limit,
        # memory-backed (it counts against the limit, as the kernel charges tmpfs pages).
        shm_share=0.25,
        volumes=(Volume("data", "/var/lib/postgresql/data", 2),),
        # The image's superuser (optiinfra) is for administration and backups only: every
        # client logs in as its own role, in the schema its connection names (each client's
        # credential, its variable and file follow from `grants`; the exporter as MONITOR).
        grants=SchemaRoles("PostgreSQL", monitor=MONITOR, monitor_credential="postgres-monitor"),
        credentials=(Credential("postgres", "postgresPassword",
                                "PostgreSQL password of the optiinfra superuser (administration, backups)"),
                     Credential("postgres-monitor", "postgresMonitorPassword",
                                f"PostgreSQL password of {MONITOR}, the exporter's read-only role (pg_monitor)")),
        # The clients' password variables follow the store's own (infra/stores).
        env=(("POSTGRES_USER", DB_USER), ("POSTGRES_DB", "optiinfra"),
             ("POSTGRES_PASSWORD", Secret("postgres")), ("OPTIINFRA_MONITOR_PASSWORD", Secret("postgres-monitor")),
             # A subdirectory of the volume: a fresh PersistentVolume has lost+found at its
             # root, which initdb refuses, and postgres must own its data directory (0700).
             ("PGDATA", "/var/lib/postgresql/data/pgdata")),
        # The entrypoint reads POSTGRES_PASSWORD_FILE (first start: initdb sets the password);
        # the start wrapper reads every file on every start.
        secret_files=(SecretFile("postgres", ("POSTGRES_PASSWORD",), "POSTGRES_PASSWORD_FILE"),
                      SecretFile("postgres-monitor", ("OPTIINFRA_MONITOR_PASSWORD",),
                                 "OPTIINFRA_MONITOR_PASSWORD_FILE")),
        connection=Connection("postgresql://{user}:{password}@{host}:{port}/optiinfra", "postgres",
                              user=DB_USER, credential="postgres"),
        # Running as the image's postgres user means the entrypoint needs no chown or
        # gosu, so every capability stays dropped.
        uid=999,
        writable_paths=("/tmp", "/var/run/postgresql"),
        # A logical dump in pg_dump's custom format over the network (consistent: one
        # snapshot), restored online with pg_restore --clean into the same database, each
        # object owned again by its schema's owner role (the start wrapper creates them).
        backup=Backup(
            reads="the optiinfra database, over the PostgreSQL protocol (pg_dump, custom format)",
            argv=("pg_dump", "--host={host}", "--port={port}", f"--username={DB_USER}", "--dbname=optiinfra",
                  "--format=custom", "--no-password", "--file={out}"),
            restore=("pg_restore", "--host={host}", "--port={port}", f"--username={DB_USER}", "--dbname=optiinfra",
                     "--clean", "--if-exists", "--single-transaction", "--exit-on-error",
                     "--no-password", "{src}"),
            port="postgres", credential="postgres", password_env="PGPASSWORD", suffix=".dump",
            # With backups.store, a row the drill must find in the restored dump (infra/objectstore.py).
            canary=(f"psql --host={{host}} --port={{port}} --username={DB_USER} --dbname=optiinfra --no-password "
                    "-X -q -v ON_ERROR_STOP=1 -c \"CREATE SCHEMA IF NOT EXISTS optiinfra_backup; "
                    "CREATE TABLE IF NOT EXISTS optiinfra_backup.canary (token text PRIMARY KEY, "
                    "written_at timestamptz NOT NULL DEFAULT now()); "
                    "INSERT INTO optiinfra_backup.canary (token) VALUES ('backup-' || clock_timestamp()::text)\""),
            # Without a store the drill has nothing to restore; with one it restores the archive.
            drill="pg_dump",
            # With backups.store: the WAL archive and base backups through pgBackRest (infra/pitr.py).
            archive=WalArchive("postgres-pgbackrest")),
        # With backups.store only: archive-push of every WAL segment from the server itself.
        outside=(Outside("backup-store", (), "pgBackRest's archive-push of WAL segments to backups.store",
                         backup_store=True),),
    ),
    Service(
        name="clickhouse",
        tier=Tier.DATABASES,
        # checked 2026-12-07: 24.8 LTS unsupported; newest 26.3 LTS: ClickHouse/ClickHouse#115128 (2026-08-17)
        image="clickhouse/clickhouse-server:26.3.18.32",
        publish=False,
        purpose="Time-series metrics",
        ports=(Port("http", 8123, host=8123, band="metrics",
                    outside_band="the seed lists ClickHouse HTTP (8123) under Metrics & Exporters (9000-9999) "
                                 "although it lies outside that range; it keeps ClickHouse's well-known port"),
               Port("native", 9000, host=9000, band="metrics")),
        health=HealthCheck(HttpCheck("/ping", "http", "Ok."), live=TcpCheck("native"), docker_client="wget",
                           slow_start=True, start_period_s=30),
        # 1.5 GiB, request = limit (Guaranteed): the seed measures ~500MB idle and "Medium" CPU;
        # ClickHouse's usage recommendations (clickhouse.com/docs/operations/tips) warn that
        # below 16 GB its default settings do not match the memory, so the caches and the
        # server's cap below are sized from this limit, and queries get the ~1 GiB above
        # the measured idle use.
        resources=Resources(memory_mib=1536, cpu=0.5, memory_limit_mib=1536, guaranteed=True),
        # The server's own cap (bytes) at 80% of the limit, so a heavy query fails with
        # MEMORY_LIMIT_EXCEEDED instead of the kernel killing the server; the mark cache
        # (default 5 GiB) at a tenth and the uncompressed cache off. The entrypoint passes
        # arguments after `--` to the server as configuration overrides.
        # Warnings, not the image's trace level, to its log files under the writable root:
        # the log and the error log, each the current file and 2 rotated ones, in half of its
        # ephemeral storage (6 files, FromEphemeral below).
        command=("--", "--logger.level=warning", "--logger.count=2"),
        sized_command=(FromLimit("--max_server_memory_usage={n}", 0.8, scale=1024 * 1024),
                       FromLimit("--mark_cache_size={n}", 0.1, scale=1024 * 1024),
                       FromEphemeral("--logger.size={n}M", 0.5, parts=6),
                       # System log tables (the ones the default configuration writes) expire
                       # after a day per GiB of its volume, 3 to 30 days.
                       *(FromVolumeDays(f"--{table}.ttl=event_date + INTERVAL {{n}} DAY DELETE", "data", 1, 3, 30)
                         for table in ("query_log", "trace_log", "part_log", "metric_log",
                                       "asynchronous_metric_log", "processors_profile_log"))),
        volumes=(Volume("data", "/var/lib/clickhouse", 5),),
        credentials=(Credential("clickhouse", "clickhousePassword", "ClickHouse password of the optiinfra user"),),
        env=(("CLICKHOUSE_USER", DB_USER), ("CLICKHOUSE_DB", "optiinfra_metrics"),
             ("CLICKHOUSE_PASSWORD", Secret("clickhouse")),
             ("CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT", "1")),
        secret_env_reason="the image's entrypoint takes the user's password from CLICKHOUSE_PASSWORD only",
        connection=Connection("clickhouse://{user}:{password}@{host}:{port}/optiinfra_metrics", "native",
                              user=DB_USER, credential="clickhouse"),
        uid=101,
        read_only_root=False,
        read_only_reason=("the entrypoint writes the user given in CLICKHOUSE_USER into "
                          "/etc/clickhouse-server/users.d, next to files the image ships there"),
        # A logical dump through the native protocol: per table its CREATE statement and its
        # rows in the Native format (a server-side BACKUP TO Disk would write to the server's
        # own volume; the job writes to the backup target instead).
        backup=Backup(
            reads="every table of optiinfra_metrics, over the native protocol (schema and rows, Native format)",
            script=(f'ch() {{ clickhouse-client --host {{host}} --port {{port}} --user {DB_USER} "$@"; }}\n'
                    'mkdir -p {out}\n'
                    'for t in $(ch --query "SHOW TABLES FROM optiinfra_metrics"); do\n'
                    '  ch --format TSVRaw --query "SHOW CREATE TABLE optiinfra_metrics.\\`$t\\`" > {out}/"$t".sql\n'
                    '  ch --query "SELECT * FROM optiinfra_metrics.\\`$t\\` FORMAT Native" > {out}/"$t".native\n'
                    'done'),
            restore_script=(f'ch() {{ clickhouse-client --host {{host}} --port {{port}} --user {DB_USER} "$@"; }}\n'
                            'for f in {src}/*.sql; do\n'
                            '  t=$(basename "$f" .sql)\n'
                            '  ch --query "DROP TABLE IF EXISTS optiinfra_metrics.\\`$t\\` SYNC"\n'
                            '  ch --database optiinfra_metrics --queries-file "$f"\n'
                            '  ch --query "INSERT INTO optiinfra_metrics.\\`$t\\` FORMAT Native" < {src}/"$t".native\n'
                            'done'),
            port="native", credential="clickhouse", password_env="CLICKHOUSE_PASSWORD", suffix="/",
            # With backups.store, the server writes its own compressed, incremental BACKUP to S3
            # instead (infra/clickhouse_backup.py; the dump above stays the path without a store).
            server_store="backup-to-s3", database="optiinfra_metrics"),
        outside=(Outside("backup-store", (), "its own BACKUP ... TO S3 into backups.store", backup_store=True),),
    ),
    Service(
        name="redis",
        tier=Tier.DATABASES,
        # checked 2026-12-07: 7.4.6+ fixes CVE-2025-49844; newest 7.4.x: SynoCommunity/spksrc#6924 (2026-01-23)
        image="redis:7.4.7",
        publish=False,
        purpose="Cache & message broker",
        ports=(Port("redis", 6379, host=6379, band="database"),),
        # redis-cli reads the password from REDISCLI_AUTH, so it never appears in argv. While
        # Redis replays its AOF it answers LOADING, not PONG: not ready, but alive (it listens).
        health=HealthCheck(CommandCheck(("sh", "-c", "redis-cli ping | grep -q PONG")), live=TcpCheck("redis"),
                           slow_start=True, start_period_s=30),
        # 256 MiB, request = limit (Guaranteed): the seed measures ~50MB; maxmemory (below) keeps
        # that working set at under half of it, and an AOF rewrite's fork copies at most the
        # dataset again (copy on write), so both fit the limit.
        resources=Resources(memory_mib=256, cpu=0.1, memory_limit_mib=256, guaranteed=True),
        volumes=(Volume("data", "/data", 0.5),),
        # Each client whose connection logs in as itself gets an ACL user of its own with the
        # application rules (its credential, variable and file follow from `grants`), the
        # exporter a read-only one; `default` is the administrator's (health check, backups).
        grants=AclUsers("Redis", monitor=MONITOR, monitor_credential="redis-monitor", rules=REDIS_APP_RULES,
                        monitor_rules=REDIS_MONITOR_RULES),
        credentials=(Credential("redis", "redisPassword", "Redis password of the default (administrator) user"),
                     Credential("redis-monitor", "redisMonitorPassword",
                                f"Redis password of {MONITOR}, the exporter's read-only ACL user")),
        env=(("REDIS_PASSWORD", Secret("redis")), ("REDISCLI_AUTH", Secret("redis")),
             ("OPTIINFRA_MONITOR_PASSWORD", Secret("redis-monitor"))),
        # On Kubernetes the server reads requirepass from the mounted file (REDIS_PASSWORD is
        # not set there); the health check's redis-cli takes a password only from
        # REDISCLI_AUTH or argv, so that one variable stays.
        secret_files=(SecretFile("redis", ("REDIS_PASSWORD",)),
                      SecretFile("redis-monitor", ("OPTIINFRA_MONITOR_PASSWORD",))),
        secret_env_reason="redis-cli (the health check) reads the password from REDISCLI_AUTH or argv only",
        # maxmemory at 45% of the limit (an AOF rewrite forks, copying pages on write: twice
        # maxmemory stays under the limit);
        # noeviction: a Celery broker must refuse writes when full, never drop queued tasks.
        # Its command is the start wrapper (infra/stores/redis.py: the ACL file from `grants`,
        # then redis-server); the sized arguments reach redis-server through "$@".
        sized_command=(FromLimit("{n}mb", 0.45, flag="--maxmemory"),),
        connection=Connection("redis://{user}:{password}@{host}:{port}/0", "redis", credential="redis"),
        uid=999,
        # An RDB snapshot streamed by the server (redis-cli --rdb). Restore replaces the data
        # with the server stopped: with appendonly on, Redis 7 loads its AOF directory and
        # ignores dump.rdb (with no AOF it starts empty), so the RDB becomes the AOF's base
        # file under a fresh manifest (and dump.rdb, for a server without AOF).
        backup=Backup(
            reads="the whole dataset, as an RDB snapshot the server streams (redis-cli --rdb)",
            argv=("redis-cli", "-h", "{host}", "-p", "{port}", "--no-auth-warning", "--rdb", "{out}"),
            restore_script=("rm -rf {data}/appendonlydir && mkdir {data}/appendonlydir\n"
                            "cp {src} {data}/appendonlydir/appendonly.aof.1.base.rdb\n"
                            "printf 'file appendonly.aof.1.base.rdb seq 1 type b\\n' "
                            "> {data}/appendonlydir/appendonly.aof.manifest\n"
                            "cp {src} {data}/dump.rdb"),
            port="redis", volume="data", offline_restore=True, credential="redis", password_env="REDISCLI_AUTH",
            suffix=".rdb",
            # The drill (infra/objectstore.py) reads this key back from the restored RDB.
            canary='redis-cli -h {host} -p {port} --no-auth-warning SET optiinfra:backup-canary "$(date -u +%s)" '
                   '> /dev/null',
            drill="rdb"),
    ),
    Service(
        name="qdrant",
        tier=Tier.DATABASES,
        # checked 2026-12-07: newest release found: qdrant/qdrant#10084 (1.19.0, 2026-08-04; 1.19.1 not yet out)
        image="qdrant/qdrant:v1.19.0",
        publish=False,
        purpose="Vector database",
        ports=(Port("http", 6333, host=6333, band="database"), Port("grpc", 6334, host=6334, band="database")),
        # Qdrant's own readiness and liveness endpoints. The image has neither curl nor wget:
        # on Docker bash's /dev/tcp sends the GET.
        health=HealthCheck(HttpCheck("/readyz", "http"), live=HttpCheck("/livez", "http"), docker_client="bash-tcp",
                           slow_start=True, start_period_s=30),
        # 512 MiB, request = limit (Guaranteed), 0.25 CPU: the seed has no figure; Qdrant's capacity
        # planning (qdrant.tech/documentation/guides/capacity-planning) keeps vectors in memory
        # at vectors x dimensions x 4 bytes x 1.5: 100k embeddings of 768 dimensions = 440 MiB.
        resources=Resources(memory_mib=512, cpu=0.25, memory_limit_mib=512, guaranteed=True),
        volumes=(Volume("storage", "/qdrant/storage", 1),),
        credentials=(Credential("qdrant", "qdrantApiKey", "Qdrant API key", length=40),),
        # Snapshots (the backup's and an uploaded restore's) go to the data volume, not to a
        # scratch emptyDir: a snapshot is as large as its collection, and a small emptyDir got
        # the pod evicted once the data outgrew it. Snapshot temp files follow (storage/
        # snapshots_temp). The backup downloads and deletes each snapshot, one collection at a
        # time, so the claim must hold the data and the largest collection once more.
        env=(("QDRANT__SERVICE__API_KEY", Secret("qdrant")),
             ("QDRANT__STORAGE__SNAPSHOTS_PATH", "/qdrant/storage/snapshots")),
        secret_env_reason="Qdrant reads its API key from its config file or QDRANT__SERVICE__API_KEY only",
        connection=Connection("http://{host}:{port}", "http"),
        uid=1000,
        image_user_on_docker=("the image runs as root and owns /qdrant/storage as root, so a fresh "
                              "Docker volume is writable only by root (Kubernetes' fsGroup fixes that)"),
        writable_paths=("/tmp",),
        # Qdrant's snapshots API, one snapshot per collection, downloaded and then deleted on
        # the server; the image has no HTTP client, so the job runs curl's official image.
        backup=Backup(
            reads="every collection, as the snapshots Qdrant's API makes of them",
            script=("printf 'api-key: %s\\n' \"$QDRANT_API_KEY\" > /tmp/api-key\n"
                    'q() { curl -fsS -H @/tmp/api-key "$@"; }\n'
                    'mkdir -p {out}\n'
                    'for c in $(q http://{host}:{port}/collections '
                    '| grep -o \'"name":"[^"]*"\' | cut -d\'"\' -f4); do\n'
                    '  s=$(q -X POST "http://{host}:{port}/collections/$c/snapshots?wait=true" '
                    '| grep -o \'"name":"[^"]*"\' | cut -d\'"\' -f4)\n'
                    '  q -o {out}/"$c".snapshot "http://{host}:{port}/collections/$c/snapshots/$s"\n'
                    '  q -X DELETE "http://{host}:{port}/collections/$c/snapshots/$s" > /dev/null\n'
                    'done'),
            restore_script=("printf 'api-key: %s\\n' \"$QDRANT_API_KEY\" > /tmp/api-key\n"
                            'for f in {src}/*.snapshot; do\n'
                            '  c=$(basename "$f" .snapshot)\n'
                            '  curl -fsS -H @/tmp/api-key -X POST -F snapshot=@"$f" '
                            '"http://{host}:{port}/collections/$c/snapshots/upload?priority=snapshot&wait=true"\n'
                            'done'),
            # curl checked 2026-12-07: newest image found: curl/curl-container#125 (prep v8.19.0_2)
            port="http", credential="qdrant", password_env="QDRANT_API_KEY", image="curlimages/curl:8.19.0",
            uid=100, suffix="/"),
    ),
    # ---- monitoring ------------------------------------------------------------
    Service(
        name="prometheus",
        tier=Tier.MONITORING,
        # checked 2026-12-07: 3.13 is LTS (to 2027-07); 3.13.5 = Go module v0.313.5, proxy.golang.org (2026-10-21)
        image="prom/prometheus:v3.13.5",
        purpose="Metrics collection",
        ports=(Port("web", 9090, host=9090, band="metrics"),),
        # Ready once the WAL is replayed (/-/ready); healthy as soon as the process serves.
        health=HealthCheck(HttpCheck("/-/ready", "web", "is Ready"), live=HttpCheck("/-/healthy", "web"),
                           docker_client="wget", slow_start=True, start_period_s=30),
        # It sends what fires to the notifier; it does not wait for it (alerts queue until it answers).
        depends_on=(Dependency("alertmanager", wait=False, reason="Prometheus sends firing alerts to Alertmanager"),),
        # The seed measures ~300MB and "Medium" CPU; the limit is twice that (head block growth).
        resources=Resources(memory_mib=300, cpu=0.5),
        runtime=Runtime("go"),
        volumes=(Volume("data", "/prometheus", 1),),
        connection=Connection("http://{host}:{port}", "web"),
        metrics=("web", "/metrics"),
        # One directory, one mount: the rule file sits beside the config that names it.
        files=(ConfigFile("/etc/prometheus/prometheus.yml", Generated.SCRAPE_CONFIG),
               ConfigFile("/etc/prometheus/rules.yml", Generated.RULES)),
        exposes=("prometheus_rule_evaluation_failures_total", *PROMETHEUS_STORAGE),
        alerts=(Alert("PrometheusRuleFailures",
                      'increase(prometheus_rule_evaluation_failures_total{job="$job"}[10m]) > $threshold', 0,
                      "Prometheus failed to evaluate rules {{ $value }} times in 10 minutes",
                      "A rule names a series it cannot compute: read Prometheus' log and /rules page.",
                      for_="0m"),
                # What size retention counts (blocks, WAL, head chunks) over the claim. Retention
                # holds it under 80% of the volume (below), so 0.9: retention is not keeping up.
                Alert("PrometheusVolumeFilling",
                      "(" + " + ".join(f'{m}{{job="$job"}}' for m in PROMETHEUS_STORAGE) + ") / $claim > $threshold",
                      0.9,
                      "Prometheus' data fills {{ $value | humanizePercentage }} of its volume",
                      "Size retention (80% of the volume) is not keeping up: a cardinality burst grows the WAL "
                      "(check prometheus_tsdb_head_series); raise kubernetes.storage.prometheus (the retention "
                      "moves with it) or drop the offending series.", for_="15m", ratio=True, volume="data"),),
        # Retention by time and by size, whichever first: 80% of the data volume (base-2
        # units), so the WAL and compaction never fill the claim.
        command=("--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                 "--storage.tsdb.retention.time=15d"),
        sized_command=(FromVolume("--storage.tsdb.retention.size={n}MB", "data", 0.8),),
        scraper=True,
        uid=65534,
        ui=SignIn(),
        backup=Backup(none_reason=(
            "its series are re-scraped from every service within one scrape interval, and history is "
            "bounded by its retention (15 days); losing it costs trend history, never platform state")),
    ),
    Service(
        name="alertmanager",
        tier=Tier.MONITORING,
        # v0.35.0: the version of the Go module amtool is built from (scripts/tools.sh), so
        # `amtool check-config` in the tests reads the config as this server does.
        # checked 2026-12-07: newest release: Go module v0.35.0 on proxy.golang.org (2026-11-09)
        image="prom/alertmanager:v0.35.0",
        purpose="Alert routing and notification",
        # Alertmanager's well-known port, in the metrics band beside Prometheus' 9090.
        ports=(Port("web", 9093, host=9093, band="metrics"),),
        # Ready once the config is loaded; healthy while the process serves. The image is
        # busybox-based (like Prometheus'): busybox wget checks it on Docker.
        health=HealthCheck(HttpCheck("/-/ready", "web"), live=HttpCheck("/-/healthy", "web"), docker_client="wget"),
        # The seed has no figure: it idles at about 20 MiB; the limit leaves room for many groups.
        resources=Resources(memory_mib=24, cpu=0.05, memory_limit_mib=64),
        runtime=Runtime("go"),
        connection=Connection("http://{host}:{port}", "web"),
        metrics=("web", "/metrics"),
        exposes=("alertmanager_notifications_failed_total",),
        alerts=(Alert("AlertNotificationsFailing",
                      'increase(alertmanager_notifications_failed_total{job="$job"}[15m]) > $threshold', 0,
                      "Alertmanager failed to deliver {{ $value }} notifications to {{ $labels.integration }} "
                      "in 15 minutes",
                      "A receiver rejects or cannot be reached: read Alertmanager's log; check the secret "
                      "(alertWebhookUrl, alertSlackUrl, alertSmtpPassword) and that the receiver accepts "
                      "connections on 443 or 587.", severity="critical", for_="0m"),),
        files=(ConfigFile("/etc/alertmanager/alertmanager.yml", Generated.NOTIFIER_CONFIG),),
        notifier=True,
        ui=SignIn(),
        # No cluster gossip (an empty listen address opens no port): one instance, so a rollout
        # replaces it in place rather than run two that would each send every notification.
        command=("--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager",
                 "--cluster.listen-address=", "--data.retention=120h"),
        exclusive="without clustering, two instances during a rollout would each send every notification",
        # Decision: no volume. Its data is the silences and the notification log (what was sent,
        # so a group is not sent twice): on a restart silences must be set again and an active
        # alert group may be notified once more. Every alert still arrives (Prometheus re-sends
        # what fires), and a claim for a few KiB would be the dev stack's 11th GiB.
        writable_paths=("/tmp", "/alertmanager"),
        # The receivers' URLs and SMTP password: supplied as stack secrets or absent (that
        # receiver off), never generated; only those of `alerting.receivers` reach the container.
        credentials=(Credential("alert-webhook", "alertWebhookUrl", "URL the webhook receiver POSTs alerts to",
                                receiver="webhook"),
                     Credential("alert-slack", "alertSlackUrl", "Slack incoming-webhook URL of the slack receiver",
                                receiver="slack"),
                     Credential("alert-smtp", "alertSmtpPassword", "SMTP password of the email receiver's username",
                                receiver="email"),
                     Credential("alert-heartbeat", "alertHeartbeatUrl",
                                "URL the heartbeat receiver POSTs the Watchdog to every minute (a dead man's switch)",
                                receiver="heartbeat")),
        env=(("OPTIINFRA_ALERT_WEBHOOK_URL", Secret("alert-webhook")),
             ("OPTIINFRA_ALERT_SLACK_URL", Secret("alert-slack")),
             ("OPTIINFRA_ALERT_SMTP_PASSWORD", Secret("alert-smtp")),
             ("OPTIINFRA_ALERT_HEARTBEAT_URL", Secret("alert-heartbeat"))),
        # Alertmanager reads them from files only (url_file, api_url_file, auth_password_file),
        # never from its environment: mounted on Kubernetes, written by the wrapper on Docker.
        secret_files=(SecretFile("alert-webhook", ("OPTIINFRA_ALERT_WEBHOOK_URL",), docker_file=True),
                      SecretFile("alert-slack", ("OPTIINFRA_ALERT_SLACK_URL",), docker_file=True),
                      SecretFile("alert-smtp", ("OPTIINFRA_ALERT_SMTP_PASSWORD",), docker_file=True),
                      SecretFile("alert-heartbeat", ("OPTIINFRA_ALERT_HEARTBEAT_URL",), docker_file=True)),
        entrypoint=("/bin/alertmanager",),
        # The one monitoring service that leaves the cluster: notifications to the receivers.
        outside=(Outside("alert-receivers", (443, 587),
                         "notifications to optiinfra:alerting.receivers: webhook and Slack over HTTPS (443), "
                         "mail to the SMTP relay's submission port (587)"),),
        uid=65534,
    ),
    Service(
        name="grafana",
        tier=Tier.MONITORING,
        # checked 2026-12-07: 11 EOL 2026-06-25; 12.4, 12's last minor, gets fixes; breakingchanges.dev (2026-06-23)
        image="grafana/grafana:12.4.5",
        purpose="Visualization",
        ports=(Port("web", 3000, host=3000, band="monitoring"),),
        # /api/health checks Grafana's database (migrations on a first start): readiness only.
        health=HealthCheck(HttpCheck("/api/health", "web", '"database":"ok"'), live=TcpCheck("web"),
                           docker_client="wget", slow_start=True, start_period_s=30),
        depends_on=(Dependency("prometheus"),),
        # Request: the seed's ~100MB; limit 256 MiB: Grafana's documented minimum is 255 MB
        # (grafana.com/docs/grafana/latest/setup-grafana/installation, hardware recommendations).
        resources=Resources(memory_mib=100, cpu=0.1, memory_limit_mib=256),
        volumes=(Volume("data", "/var/lib/grafana", 0.5),),
        credentials=(Credential("grafana", "grafanaAdminPassword", "Grafana admin password"),),
        env=(("GF_SECURITY_ADMIN_USER", "optiinfra-admin"), ("GF_SECURITY_ADMIN_PASSWORD", Secret("grafana")),
             ("GF_USERS_ALLOW_SIGN_UP", "false"), ("GF_ANALYTICS_REPORTING_ENABLED", "false"),
             ("GF_ANALYTICS_CHECK_FOR_UPDATES", "false"),
             # The portal embeds the provisioned dashboards in iframes (docs/access.md).
             ("GF_SECURITY_ALLOW_EMBEDDING", "true"),
             ("GF_USERS_VIEWERS_CAN_EDIT", "false"), ("GF_SNAPSHOTS_EXTERNAL_ENABLED", "false"),
             ("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", f"{_DASHBOARDS}/overview.json")),
        # Grafana reads any setting from the file named by its `__FILE` variable.
        secret_files=(SecretFile("grafana", ("GF_SECURITY_ADMIN_PASSWORD",), "GF_SECURITY_ADMIN_PASSWORD__FILE"),),
        connection=Connection("http://{host}:{port}", "web"),
        metrics=("web", "/metrics"),
        external_url_env="GF_SERVER_ROOT_URL",
        ui=SignIn(
            # Kubernetes: the user is who the sign-in proxy says (its X-Forwarded-Email), created
            # on first sign-in with `sso.defaultRole`; no anonymous access, no login form, cookies
            # Secure. Only the proxy (and the scraper) reach its web port, so nobody else can set
            # that header (the NetworkPolicy derives from the edges).
            proxied_env=(("GF_AUTH_PROXY_ENABLED", "true"), ("GF_AUTH_PROXY_HEADER_NAME", "X-Forwarded-Email"),
                         ("GF_AUTH_PROXY_HEADER_PROPERTY", "email"), ("GF_AUTH_PROXY_AUTO_SIGN_UP", "true"),
                         ("GF_AUTH_PROXY_HEADERS", "Name:X-Forwarded-Preferred-Username Groups:X-Forwarded-Groups"),
                         ("GF_AUTH_ANONYMOUS_ENABLED", "false"), ("GF_AUTH_DISABLE_LOGIN_FORM", "true"),
                         ("GF_SECURITY_COOKIE_SECURE", "true"), ("GF_SECURITY_COOKIE_SAMESITE", "lax")),
            # Docker (dev): every port binds 127.0.0.1 and no proxy runs; the portal's iframes
            # are seen without a login as the Viewer of the one organisation, which holds only
            # the provisioned (read-only) dashboards. The one place anonymous access stays on.
            direct_env=(("GF_AUTH_ANONYMOUS_ENABLED", "true"), ("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer"),
                        ("GF_AUTH_ANONYMOUS_HIDE_VERSION", "true")),
            # Kubernetes, not public: reached by port-forward with the admin password; never anonymous.
            closed_env=(("GF_AUTH_ANONYMOUS_ENABLED", "false"),),
            role_env="GF_USERS_AUTO_ASSIGN_ORG_ROLE",
            # With sso.jwksUrl: no header trusted; Grafana verifies the ID token the proxy passes
            # (`Authorization: Bearer`, "Bearer " stripped) against the provider's keys, the
            # issuer, audience and expiry, and sets the role from its claims at every request
            # (sso.adminGroups: Admin, else defaultRole; strict: no valid role, no access).
            # The user is the token's email, the same login auth.proxy created.
            token=VerifiedToken(
                env=(("GF_AUTH_PROXY_ENABLED", "false"), ("GF_AUTH_JWT_ENABLED", "true"),
                     ("GF_AUTH_JWT_HEADER_NAME", "Authorization"), ("GF_AUTH_JWT_EMAIL_CLAIM", "email"),
                     ("GF_AUTH_JWT_USERNAME_CLAIM", "email"), ("GF_AUTH_JWT_AUTO_SIGN_UP", "true"),
                     ("GF_AUTH_JWT_CACHE_TTL", "60m"), ("GF_AUTH_JWT_ROLE_ATTRIBUTE_STRICT", "true")),
                jwks_url_env="GF_AUTH_JWT_JWK_SET_URL", claims_env="GF_AUTH_JWT_EXPECT_CLAIMS",
                role_path_env="GF_AUTH_JWT_ROLE_ATTRIBUTE_PATH",
                outside=Outside("identity-provider", (443,), "the ID token's signing keys from sso.jwksUrl"))),
        # Three directories, three mounts: datasources, the dashboard provider, the dashboards
        # (the overview and one per tier, each a file the provider loads).
        files=(ConfigFile("/etc/grafana/provisioning/datasources/prometheus.yaml", Generated.DATASOURCES),
               ConfigFile("/etc/grafana/provisioning/dashboards/optiinfra.yaml", Generated.DASHBOARD_PROVIDER),
               ConfigFile(f"{_DASHBOARDS}/overview.json", Generated.DASHBOARD),
               *(ConfigFile(f"{_DASHBOARDS}/{t.value}.json", Generated.DASHBOARD, part=t.value)
                 for t in Tier)),
        uid=472,
        # Grafana logs to the console and to files under GF_PATHS_LOGS (/var/log/grafana).
        writable_paths=("/tmp", "/var/log/grafana"),
        # Its database is SQLite in the data volume (users, dashboards, folders); the job
        # mounts that volume read-only beside the running pod and archives the database.
        backup=Backup(
            reads="its SQLite database (grafana.db: users, dashboards, folders), from its volume read-only",
            argv=("tar", "-C", "{data}", "-czf", "{out}", "grafana.db"),
            restore=("tar", "-C", "{data}", "-xzf", "{src}"),
            volume="data", offline_restore=True, suffix=".tar.gz"),
    ),
    Service(
        name="oauth2-proxy",
        tier=Tier.MONITORING,
        # checked 2026-12-07: newest release v7.15.6 (Go module github.com/oauth2-proxy/oauth2-proxy/v7 on
        # proxy.golang.org); the project's official image is quay.io/oauth2-proxy/oauth2-proxy
        image="quay.io/oauth2-proxy/oauth2-proxy:v7.15.6",
        publish=False,
        purpose="Single sign-on (OIDC) in front of the public UIs",
        ports=(Port("http", 4180, band="monitoring"), Port("metrics", 9180, band="metrics")),
        health=HealthCheck(HttpCheck("/ready", "http"), live=HttpCheck("/ping", "http"), docker_client=None,
                           no_docker_reason="Kubernetes only: on Docker every port binds 127.0.0.1 and no proxy runs"),
        # It proxies to the UI that trusts its identity header (the edge its NetworkPolicy and
        # the UI's follow from); the other public UIs ask it through the ingress controller.
        depends_on=(Dependency("grafana", reason="the UI whose requests it signs and forwards"),),
        # Sessions live in the cookie (encrypted with the shared cookie secret), and so does the
        # sign-in's CSRF state: any replica serves any request, so it scales (prod runs two).
        scalable=True,
        resources=Resources(memory_mib=32, cpu=0.05),
        credentials=(Credential("sso-client", "ssoClientSecret",
                                "OIDC client secret the identity provider issued for sso.clientId", user_set="sso"),
                     Credential("sso-cookie", "ssoCookieSecret",
                                "Key the sign-in proxy encrypts its session cookies with (if you set it: 16, 24 "
                                "or 32 characters)")),
        env=(("OAUTH2_PROXY_HTTP_ADDRESS", Listen("http", "0.0.0.0:{port}")),
             ("OAUTH2_PROXY_METRICS_ADDRESS", Listen("metrics", "0.0.0.0:{port}")),
             ("OAUTH2_PROXY_CLIENT_SECRET", Secret("sso-client")),
             ("OAUTH2_PROXY_COOKIE_SECRET", Secret("sso-cookie"))),
        # The proxy reads both from files (--client-secret-file, --cookie-secret-file).
        secret_files=(SecretFile("sso-client", ("OAUTH2_PROXY_CLIENT_SECRET",), "OAUTH2_PROXY_CLIENT_SECRET_FILE"),
                      SecretFile("sso-cookie", ("OAUTH2_PROXY_COOKIE_SECRET",), "OAUTH2_PROXY_COOKIE_SECRET_FILE")),
        # The settings' flags (issuer, client, who may sign in, cookie domain, the callback on
        # the UI's host) follow these; resolve.resolve adds them from `sso`.
        command=("--provider=oidc",
                 Dsn("grafana", "--upstream=http://{host}:{port}/", port="web"),
                 "--reverse-proxy=true", "--pass-user-headers=true", "--set-xauthrequest=true",
                 "--skip-provider-button=true", "--cookie-name=_optiinfra_sso", "--cookie-secure=true",
                 "--cookie-httponly=true", "--cookie-samesite=lax", "--cookie-expire=12h", "--cookie-refresh=1h",
                 "--silence-ping-logging=true"),
        metrics=("metrics", "/metrics"),
        # OIDC discovery, keys and the code-for-token exchange at the identity provider.
        outside=(Outside("identity-provider", (443,), "OIDC discovery, signing keys and tokens from sso.issuerUrl"),),
        authenticator=True,
    ),
    Service(
        name="flower",
        tier=Tier.MONITORING,
        # checked 2026-12-07: newest release on PyPI (`pip index versions flower`); images tagged per release
        image="mher/flower:2.2.0",
        purpose="Celery monitoring",
        ports=(Port("web", 5555, host=5555, band="monitoring"),),
        health=HealthCheck(HttpCheck("/healthcheck", "web", "OK"), live=TcpCheck("web"), docker_client="python"),
        depends_on=(Dependency("redis"),),
        resources=Resources(memory_mib=48, cpu=0.1),
        credentials=(Credential("flower", "flowerPassword", "Flower basic-auth password"),),
        env=(("CELERY_BROKER_URL", Url("redis", own_login=True)),
             ("FLOWER_BASIC_AUTH", Dsn("flower", "{user}:{password}")),
             ("FLOWER_PORT", Listen("web"))),
        secret_env_reason="Flower takes its broker URL and basic auth from the environment or argv only",
        connection=Connection("http://{host}:{port}", "web", user=DB_USER, credential="flower"),
        ui=SignIn(),
        uid=1000,
    ),
    Service(
        name="pushgateway",
        tier=Tier.MONITORING,
        # The Go module tests/test_drill.py builds (scripts/tools.sh) and pushes the drills' results to.
        # checked 2026-12-07: github.com/prometheus/pushgateway v1.11.5 (2026-10-21) on proxy.golang.org
        image="prom/pushgateway:v1.11.5",
        publish=False,
        purpose="Holds the restore drills' pushed results for Prometheus",
        ports=(Port("http", 9091, host=9091, band="metrics"),),
        # busybox-based like Prometheus' image: busybox wget checks it on Docker, and pushes
        # the drills' results from their pods (infra/backends/kubernetes/drill_jobs.py).
        health=HealthCheck(HttpCheck("/-/ready", "http"), live=HttpCheck("/-/healthy", "http"), docker_client="wget"),
        # No seed figure: it idles at about 10 MiB holding a few groups of four series.
        resources=Resources(memory_mib=16, cpu=0.02, memory_limit_mib=32),
        runtime=Runtime("go"),
        metrics=("http", "/metrics"),
        # What the drills push (infra/objectstore.py writes them), as a scrape of it reads them.
        exposes=DRILL_METRICS,
        # Deployed only where drills push to it (Kubernetes with backups.store; infra/resolve.py).
        # Decision: no persistence file. A restart loses the last results; the next drill pushes
        # again, and BackupDrillFailed reads an absent result as a stale one (infra/alerts.py).
        push_gateway=True,
        kubernetes_only=("the drills it holds results for run as Kubernetes CronJobs; on Docker `backup --drill` "
                         "prints its result instead (docs/backups.md)"),
        uid=65534,
    ),
    Service(
        name="postgres-exporter",
        tier=Tier.MONITORING,
        # checked 2026-12-07: newest release found: prometheus-community/postgres_exporter#1345 (v0.20.1)
        image="prometheuscommunity/postgres-exporter:v0.20.1",
        publish=False,
        purpose="PostgreSQL metrics",
        ports=(Port("metrics", 9187, host=9187, band="metrics"),),
        # The landing page, not a full /metrics scrape of PostgreSQL.
        health=HealthCheck(HttpCheck("/", "metrics"), live=TcpCheck("metrics"), docker_client=None,
                           no_docker_reason="scratch-like image without a shell or HTTP client; "
                                            "Prometheus' `up` series watches it"),
        depends_on=(Dependency("postgres", pool=1),),  # one connection per scrape
        # No seed figure: a Go exporter idles at ~10-15 MiB; limit twice the request.
        resources=Resources(memory_mib=16, cpu=0.05),
        runtime=Runtime("go"),
        # Logs in as PostgreSQL's read-only monitoring role, never as the application's owner.
        env=(("DATA_SOURCE_NAME", Dsn("postgres", "postgresql://{user}:{password}@{host}:{port}/optiinfra?sslmode=disable",
                                      user=MONITOR, credential="postgres-monitor")),),
        # On Kubernetes the DSN splits into address, user and a password file.
        secret_files=(SecretFile("postgres-monitor", ("DATA_SOURCE_NAME",), "DATA_SOURCE_PASS_FILE", env=(
            ("DATA_SOURCE_URI", Dsn("postgres", "{host}:{port}/optiinfra?sslmode=disable")),
            ("DATA_SOURCE_USER", MONITOR))),),
        metrics=("metrics", "/metrics"),
        # pg_stat_archiver_*: the builtin pg_stat_archiver metrics, read by the WAL archive alerts below.
        # pg_database_size_bytes: the default `database` collector (pg_database_size() per database).
        exposes=("pg_up", "pg_stat_activity_count", "pg_settings_max_connections",
                 "pg_stat_archiver_failed_count", "pg_stat_archiver_last_archive_age", "pg_database_size_bytes"),
        # pg_up is the exporter's own pg_isready: its last query of PostgreSQL succeeded.
        alerts=(Alert("PostgresDown", 'pg_up{job="$job"} == 0', None,
                      "PostgreSQL does not answer its exporter ({{ $labels.instance }})",
                      "Check the postgres workload: its logs, its volume's free space, crash recovery.",
                      severity="critical", for_="1m", about="postgres"),
                Alert("PostgresConnectionsNearMax",
                      'sum by (instance) (pg_stat_activity_count{job="$job"}) / '
                      'max by (instance) (pg_settings_max_connections{job="$job"}) > $threshold', 0.8,
                      "PostgreSQL uses {{ $value | humanizePercentage }} of max_connections",
                      "Find the client holding connections (pg_stat_activity); max_connections is the "
                      "sum of the clients' declared pools (times their replicas and rollout surge) and a "
                      "reserve, so a client above its pool, or run outside the stack, fills it.",
                      about="postgres", ratio=True),
                # WAL archiving to the off-site store (backups.store, pgBackRest's archive-push):
                # the exporter's default pg_stat_archiver collector. Quiet while archiving is off
                # (no failures; last_archive_age is absent/NaN before the first archived segment).
                Alert("PostgresWalArchiveFailing",
                      'increase(pg_stat_archiver_failed_count{job="$job"}[15m]) > $threshold', 0,
                      "PostgreSQL failed to archive WAL {{ $value }} times in 15 minutes",
                      "pg_stat_archiver.last_failed_wal names the segment; the server log has pgBackRest's "
                      "error (credentials, endpoint, bucket). Until it archives, pg_wal grows and the "
                      "recovery point ages (docs/backups.md).", severity="critical", about="postgres"),
                Alert("PostgresWalArchiveBehind",
                      'pg_stat_archiver_last_archive_age{job="$job"} > $threshold', 600,
                      "PostgreSQL's last archived WAL segment is {{ $value | humanizeDuration }} old",
                      "archive_timeout (backups.store.archiveTimeoutS) forces a segment at least that often: "
                      "an older one means archive-push is stuck or slow; check the server log and the "
                      "store.", about="postgres"),
                # The databases' size over PostgreSQL's data claim (Kubernetes). pg_wal and the
                # server's own files are on it too and not counted: 0.8 leaves them the rest.
                Alert("PostgresVolumeFilling",
                      'sum by (instance) (pg_database_size_bytes{job="$job"}) / $claim > $threshold', 0.8,
                      "PostgreSQL's databases fill {{ $value | humanizePercentage }} of its volume",
                      "Find what grows (pg_database_size, pg_total_relation_size per table; dead rows: "
                      "VACUUM); raise kubernetes.storage.postgres (the claim is expanded in place where the "
                      "storage class allows). A full volume stops PostgreSQL.",
                      for_="15m", about="postgres", ratio=True, volume="data")),
        # The first panel of an exporter is its subject's health (the overview shows it).
        panels=(Panel("PostgreSQL up", 'pg_up{job="$job"}'),
                Panel("Connections / max_connections",
                      'sum by (instance) (pg_stat_activity_count{job="$job"}) / '
                      'max by (instance) (pg_settings_max_connections{job="$job"})', "percentunit"),
                Panel("Connections by state", 'sum by (state) (pg_stat_activity_count{job="$job"})')),
    ),
    Service(
        name="redis-exporter",
        tier=Tier.MONITORING,
        # checked 2026-12-07: newest release: Go module v1.97.0 on proxy.golang.org (2026-11-03)
        image="oliver006/redis_exporter:v1.97.0",
        publish=False,
        purpose="Redis metrics",
        ports=(Port("metrics", 9121, host=9121, band="metrics"),),
        health=HealthCheck(HttpCheck("/health", "metrics"), live=TcpCheck("metrics"), docker_client=None,
                           no_docker_reason="scratch image without a shell or HTTP client; "
                                            "Prometheus' `up` series watches it"),
        depends_on=(Dependency("redis"),),
        # No seed figure: a Go exporter idles at ~10-15 MiB; limit twice the request.
        resources=Resources(memory_mib=16, cpu=0.05),
        runtime=Runtime("go"),
        # The Celery queue's length (redis_key_size) is the collector's backlog.
        # Logs in as Redis' read-only ACL user (its grants' monitor_rules).
        env=(("REDIS_ADDR", Dsn("redis", "redis://{host}:{port}")), ("REDIS_USER", MONITOR),
             ("REDIS_PASSWORD", Secret("redis-monitor")),
             ("REDIS_EXPORTER_CHECK_SINGLE_KEYS", f"db0={CELERY_QUEUE}")),
        secret_env_reason=("its password file (REDIS_PASSWORD_FILE) is a JSON map of addresses to "
                           "passwords, which the stack does not render yet"),
        metrics=("metrics", "/metrics"),
        exposes=("redis_up", "redis_memory_used_bytes", "redis_memory_max_bytes", "redis_connected_clients",
                 "redis_rejected_connections_total", "redis_key_size"),
        alerts=(Alert("RedisDown", 'redis_up{job="$job"} == 0', None,
                      "Redis does not answer its exporter ({{ $labels.instance }})",
                      "Check the redis workload: its logs, AOF replay after a restart, its volume.",
                      severity="critical", for_="1m", about="redis"),
                # maxmemory with noeviction: at the cap Redis refuses writes, so Celery stops queueing.
                Alert("RedisMemoryNearMaxmemory",
                      'redis_memory_used_bytes{job="$job"} / (redis_memory_max_bytes{job="$job"} > 0) > $threshold',
                      0.85, "Redis uses {{ $value | humanizePercentage }} of maxmemory",
                      "Drain the Celery backlog or raise optiinfra:services.redis.memory (maxmemory follows it); "
                      "at maxmemory writes fail (noeviction).", about="redis", ratio=True),
                Alert("RedisRejectedConnections",
                      'increase(redis_rejected_connections_total{job="$job"}[5m]) > $threshold', 0,
                      "Redis rejected {{ $value }} connections in 5 minutes (maxclients reached)",
                      "Find the client that leaks connections (CLIENT LIST); raise maxclients only after.",
                      about="redis", for_="0m"),
                Alert("CeleryBacklog", f'max(redis_key_size{{job="$job", key="{CELERY_QUEUE}"}}) > $threshold', 500,
                      "{{ $value }} Celery tasks wait in the queue",
                      "Workers are too few or stuck: check the worker's health and logs, raise "
                      "optiinfra:services.data-collector-worker.replicas.",
                      for_="15m", about="data-collector-worker")),
        panels=(Panel("Redis up", 'redis_up{job="$job"}'),
                Panel("Memory / maxmemory",
                      'redis_memory_used_bytes{job="$job"} / (redis_memory_max_bytes{job="$job"} > 0)',
                      "percentunit"),
                Panel("Connected clients", 'redis_connected_clients{job="$job"}'),
                Panel("Rejected connections / s", 'rate(redis_rejected_connections_total{job="$job"}[5m])'),
                Panel("Celery backlog", f'redis_key_size{{job="$job", key="{CELERY_QUEUE}"}}')),
    ),
    Service(
        name="clickhouse-exporter",
        tier=Tier.MONITORING,
        # checked 2026-12-07: no newer tag found (no release notes found; proxy.golang.org refuses the module)
        image="f1yegor/clickhouse-exporter:v0.2.0",
        publish=False,
        purpose="ClickHouse metrics",
        ports=(Port("metrics", 9116, host=9116, band="metrics"),),
        # The landing page, not a full /metrics scrape of ClickHouse.
        health=HealthCheck(HttpCheck("/", "metrics"), live=TcpCheck("metrics"), docker_client="wget"),
        depends_on=(Dependency("clickhouse"),),
        # No seed figure: a Go exporter idles at ~10-15 MiB; limit twice the request.
        resources=Resources(memory_mib=16, cpu=0.05),
        runtime=Runtime("go"),
        env=(("CLICKHOUSE_USER", DB_USER), ("CLICKHOUSE_PASSWORD", Secret("clickhouse"))),
        secret_env_reason="the exporter reads the password from CLICKHOUSE_PASSWORD only",
        command=(Dsn("clickhouse", "-scrape_uri=http://{host}:{port}/", port="http"),),
        metrics=("metrics", "/metrics"),
        # The exporter names ClickHouse's system.events in snake case (FailedQuery ->
        # clickhouse_failed_query_total) and counts its own failed queries of ClickHouse.
        exposes=("clickhouse_exporter_scrape_failures_total", "clickhouse_failed_query_total", "clickhouse_query"),
        alerts=(Alert("ClickHouseUnreachable",
                      'increase(clickhouse_exporter_scrape_failures_total{job="$job"}[5m]) > $threshold', 0,
                      "The exporter failed to query ClickHouse {{ $value }} times in 5 minutes",
                      "Check the clickhouse workload (logs, /ping) and the exporter's credentials.",
                      severity="critical", for_="5m", about="clickhouse"),
                Alert("ClickHouseFailedQueries",
                      'rate(clickhouse_failed_query_total{job="$job"}[5m]) > $threshold', 0.1,
                      "ClickHouse fails {{ printf \"%.2f\" $value }} queries a second",
                      "Read system.query_log for the failing queries (exception column); "
                      "MEMORY_LIMIT_EXCEEDED means the server's memory cap.", about="clickhouse")),
        panels=(Panel("ClickHouse query failures (exporter, 5 min)",
                      'increase(clickhouse_exporter_scrape_failures_total{job="$job"}[5m])'),
                Panel("Failed queries / s", 'rate(clickhouse_failed_query_total{job="$job"}[5m])'),
                Panel("Running queries", 'clickhouse_query{job="$job"}')),
    ),
    Service(
        name="blackbox-exporter",
        tier=Tier.MONITORING,
        # v0.25.0: the Go module tests/test_probes.py builds (scripts/tools.sh) and runs with the
        # rendered modules. checked 2026-12-07: github.com/prometheus/blackbox_exporter v0.25.0 is served
        image="prom/blackbox-exporter:v0.25.0",
        publish=False,
        purpose="Health probes of every service (HTTP body or TCP connect)",
        ports=(Port("metrics", 9115, host=9115, band="metrics"),),
        # busybox-based like Prometheus' image: busybox wget checks it on Docker.
        health=HealthCheck(HttpCheck("/-/healthy", "metrics"), live=TcpCheck("metrics"), docker_client="wget"),
        # The seed has no figure: it idles at about 15 MiB; one probe at a time per scrape.
        resources=Resources(memory_mib=24, cpu=0.05, memory_limit_mib=64),
        metrics=("metrics", "/metrics"),
        files=(ConfigFile("/etc/blackbox_exporter/config.yml", Generated.PROBE_CONFIG),),
        command=("--config.file=/etc/blackbox_exporter/config.yml",),
        exposes=("probe_success", "probe_duration_seconds", "probe_ssl_earliest_cert_expiry"),
        # Its probe edges grant the network path to each service's checked port and imply no order.
        prober=True,
        probe_alerts=PROBE_ALERTS,
        tls_alerts=TLS_ALERTS,
        # The TLS probe of each public host goes where users go: out to the host's address, the
        # ingress controller's load balancer (kept only on a stack with public hosts over TLS).
        outside=(Outside("public-hosts", (443,), "TLS handshake with the stack's public hosts "
                         "(kubernetes.ingress.hosts) at the ingress controller's load balancer: certificate expiry",
                         public_hosts=True),),
        uid=65534,
    ),
    Service(
        name="kube-state-metrics",
        tier=Tier.MONITORING,
        # v2.20.0: the Go module (k8s.io/kube-state-metrics/v2) tests/test_live_ksm.py builds
        # (scripts/tools.sh) and runs against a live API server. checked 2026-12-08: newest
        # version the Go proxy lists (v2.19.1, v2.20.0; v2.20.0 of 2026-08-18)
        image="registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0",
        publish=False,
        purpose="Cluster state: replicas, container restarts, backup CronJobs and Jobs",
        # Its image's own default ports, so no argument restates them: metrics 8080, its
        # self-metrics 8081 (not scraped: see process_metrics below). 8080 lies in the seed's
        # application band (its Service port is checked against it); it is never published.
        ports=(Port("metrics", 8080, band="application"),),
        health=HealthCheck(HttpCheck("/healthz", "metrics"), live=TcpCheck("metrics"), docker_client=None,
                           no_docker_reason="Kubernetes only"),
        # No seed figure: ~20 MiB idle for a cluster of this size (a few hundred objects).
        resources=Resources(memory_mib=32, cpu=0.05),
        runtime=Runtime("go"),
        kubernetes_only=("it reads the Kubernetes API; on Docker the probes (an unhealthy container fails "
                         "its probe), Restarting and the backup command's own record replace it "
                         "(docs/monitoring.md)"),
        # Only the kinds KSM_ALERTS read: no PersistentVolumeClaims (no volume alert reads them).
        cluster_reads=ClusterReads(
            kinds=(("apps", ("deployments", "statefulsets")), ("", ("pods",)), ("batch", ("cronjobs", "jobs"))),
            reason="kube-state-metrics lists and watches the workloads its alerts read; nothing else",
            namespaces_flag="--namespaces=", resources_flag="--resources="),
        # Its one egress beyond the scrape: the API server (kubernetes.apiServer).
        outside=(Outside("kubernetes-api", (), "list/watch of the workloads it reports", api_server=True),),
        metrics=("metrics", "/metrics"),
        # Its process metrics are on the telemetry port, which is not scraped: ContainerRestarting
        # (its own view of every container) covers its restarts, its memory is unwatched.
        process_metrics=False,
        exposes=KSM_METRICS,
        alerts=KSM_ALERTS,
        uid=65534,
    ),
    # ---- core ------------------------------------------------------------------
    Service(
        name="orchestrator",
        tier=Tier.CORE,
        image="orchestrator",
        own_image=True,
        purpose="Go orchestration service",
        ports=(Port("http", 8080, host=8080, band="application"),),
        # The Go image is alpine-based: busybox wget checks /health.
        health=HealthCheck(HttpCheck("/health", "http", '"status":"ok"'), live=TcpCheck("http"), docker_client="wget"),
        depends_on=(
            # The seed leaves the orchestrator's stores open. Decision: workflow state in
            # PostgreSQL and its task queue in Redis, the two stores every core service shares.
            # pool: its connection pool, at most 10 (a contract with the image).
            Dependency("postgres", reason="workflow state", pool=10),
            Dependency("redis", reason="task queue shared with the agents"),
        ),
        # No seed figure ("Low"): a Go HTTP service; limit twice the request.
        resources=Resources(memory_mib=64, cpu=0.1),
        runtime=Runtime("go"),
        # Stateless (its state is in PostgreSQL and Redis): prod runs two, so a drain keeps one.
        scalable=True,
        # Decision (the seed is silent): each application keeps its tables in a schema of its own.
        env=(("PORT", Listen("http")), ("DATABASE_URL", Url("postgres", own_login=True, schema="orchestrator")),
             ("REDIS_URL", Url("redis", own_login=True))),
        secret_env_reason=OWN_ENV,
        connection=Connection("http://{host}:{port}", "http"),
    ),
    _collector(
        "data-collector", "Generic Collector API", (),
        HealthCheck(HttpCheck("/health", "http", '"status":"healthy"'), live=TcpCheck("http"), docker_client=_PY),
        # The seed measures the Data Collector at ~100MB; its pool: at most 10 connections.
        ("postgres", "clickhouse", "redis"), memory=100, pool=10,
        ports=(Port("http", 8005, host=8005, band="application"),),
    ),
    _collector(
        "data-collector-worker", "Async task processing (Celery worker)",
        ("celery", "-A", CELERY_APP, "worker", "--loglevel=INFO"),
        # Pings this worker's own node, so one hung worker restarts alone; five failures 30 s
        # apart outlast a Redis restart, so a broker blip restarts no worker.
        HealthCheck(CommandCheck(("sh", "-c", f'exec celery -A {CELERY_APP} inspect ping -d "celery@$HOSTNAME" '
                                  "--timeout 5")), interval_s=30, timeout_s=15),
        # A prefork worker: its parent and each child are the collector's code (~100MB measured),
        # so 200 MiB (parent + one child) and a child cap of 128 MiB; a child runs one task at a
        # time and holds at most 2 connections.
        ("postgres", "clickhouse", "redis"), memory=200, pool=2, runtime=Runtime("celery", child_mib=128),
    ),
    _collector(
        "data-collector-beat", "Scheduled tasks (Celery beat)",
        ("celery", "-A", CELERY_APP, "beat", "--loglevel=INFO", "--pidfile=/tmp/celerybeat.pid",
         "--schedule=/tmp/celerybeat-schedule"),
        HealthCheck(CommandCheck(("sh", "-c", "kill -0 $(cat /tmp/celerybeat.pid)")), interval_s=30),
        # The collector's code as well (~100MB measured); beat alone, no children.
        ("redis",), memory=100,
        exclusive="one scheduler: a second beat, even briefly during a rollout, sends every periodic task twice",
    ),
    # ---- agents ----------------------------------------------------------------
    _agent("cost-agent", 8001, "Cost data collection", per_cloud_provider=True,
           # The only service that leaves the cluster: billing data from the providers' APIs.
           # Every other service talks only along the catalog's edges (and to DNS).
           outside=(Outside("cloud-apis", (443,), "billing data from the cloud providers' APIs"),)),
    _agent("performance-agent", 8002, "Performance monitoring"),
    _agent("resource-agent", 8003, "Resource tracking"),
    _agent("application-agent", 8004, "LLM quality monitoring",
           # Decision: Qdrant's only client is the application agent, which stores the
           # embeddings it scores LLM answers with.
           Dependency("qdrant", reason="embeddings for LLM quality scoring"),
           env=(("QDRANT_URL", Url("qdrant")), ("QDRANT_API_KEY", Secret("qdrant")))),
    # ---- frontend --------------------------------------------------------------
    Service(
        name="portal",
        tier=Tier.FRONTEND,
        image="portal",
        own_image=True,
        purpose="Web UI (Next.js)",
        # The seed maps host 3001 to the container's 3000 (Grafana has host 3000).
        ports=(Port("http", 3000, host=3001, band="monitoring"),),
        health=HealthCheck(HttpCheck("/", "http"), live=TcpCheck("http"), docker_client="node"),
        depends_on=(Dependency("orchestrator"), Dependency("data-collector"), Dependency("grafana")),
        # The seed measures ~150MB; limit twice that, the V8 heap at 75% of it (Runtime node).
        resources=Resources(memory_mib=150, cpu=0.1),
        runtime=Runtime("node"),
        # Stateless: prod runs two, so a drain or an upgrade never takes the only UI down.
        scalable=True,
        env=(("PORT", Listen("http")), ("ORCHESTRATOR_URL", Url("orchestrator")),
             ("DATA_COLLECTOR_URL", Url("data-collector")), ("GRAFANA_URL", Url("grafana"))),
        writable_paths=("/tmp", "/app/.next/cache"),
        ui=SignIn(),
    ),
)


def _with_connections(services: tuple[Service, ...]) -> tuple[Service, ...]:
    """Give every HTTP API an http connection by default (host and port only), and every
    scraped service the client libraries' process metrics."""
    out = []
    for s in services:
        if s.connection is None and s.ports and s.ports[0].name == "http":
            s = Service(**{**s.__dict__, "connection": Connection("http://{host}:{port}", "http")})
        if s.metrics and s.process_metrics:
            s = Service(**{**s.__dict__, "exposes": (*CLIENT_METRICS, *s.exposes)})
        out.append(s)
    return tuple(out)


ASSEMBLED = with_grants(_with_connections(SERVICES))
"""The services as the stacks use them: with default connections, and every store's grants
applied (its clients' identities and credentials, its start wrapper; infra/stores)."""

STORE_CREDENTIALS = (
    Credential("backup-store-access-key-id", "backupStoreAccessKeyId",
               "Access key id of the off-site backup store (backups.store)", store=True),
    Credential("backup-store-secret-access-key", "backupStoreSecretAccessKey",
               "Secret access key of the off-site backup store (backups.store)", store=True),
    Credential("backup-encryption-passphrase", "backupEncryptionPassphrase",
               "Passphrase of the backups' client-side encryption (backups.store.encryption client)", store=True),
)
"""The off-site backup store's secrets: the stack's, not a service's (infra/objectstore.py)."""

CREDENTIALS = (*tuple(c for s in ASSEMBLED for c in s.credentials), *STORE_CREDENTIALS)
"""Every credential, each declared on the service that owns it (a client's on its store),
and the backup store's."""


def default_catalog() -> Catalog:
    """The seed's 19 services, Alertmanager and the blackbox exporter (a fresh object each call;
    callers may derive from it)."""
    services = ASSEMBLED
    return Catalog(
        services={s.name: s for s in services},
        bands=BANDS,
        credentials={c.id: c for c in CREDENTIALS},
        alerts=PLATFORM_ALERTS,
        job_alerts=JOB_ALERTS,
        watchdog=WATCHDOG,
        drill_alerts=DRILL_ALERTS,
    )
