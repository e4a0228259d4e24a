"""The structure the other modules build on: one load path, Pulumi's public config API,
no service named outside the catalog, and a new service being one declaration."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import offline, program, stack
from infra.catalog import default_catalog
from infra.settings import ConfigError

ROOT = stack.ROOT

# String literals equal to a service name that are not about that service, each with its reason.
NOT_A_SERVICE = {
    ("infra/monitoring.py", "prometheus"): "Grafana's datasource type name for a Prometheus-compatible API",
}


def _sources() -> list[Path]:
    files = [*ROOT.glob("infra/**/*.py"), *ROOT.glob("policies/**/*.py"), *ROOT.glob("scripts/*.py")]
    return sorted(p for p in files if p.name != "catalog.py")


def test_no_module_outside_the_catalog_names_a_service() -> None:
    names = set(default_catalog().services)
    found = []
    for path in _sources():
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Constant) and node.value in names and (rel, node.value) not in NOT_A_SERVICE:
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not found, "service names outside infra/catalog.py (derive them from the catalog):\n" + "\n".join(found)


def test_the_program_reads_config_through_the_public_api_only() -> None:
    """No private SDK state (pulumi.runtime.config.CONFIG, _SECRET_KEYS, get_config_env)
    in the modules the engine runs to read config."""
    for rel in ("infra/program.py", "infra/stack.py", "infra/settings.py", "infra/credentials.py"):
        tree = ast.parse((ROOT / rel).read_text(), rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert not node.attr.startswith("_") or node.attr.startswith("__"), f"{rel}: private .{node.attr}"
                assert node.attr not in ("runtime", "CONFIG", "get_config_env"), f"{rel}: pulumi.{node.attr}"
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("pulumi.runtime"), f"{rel}: imports {node.module}"


def test_unknown_top_level_key_in_the_stack_file_is_refused_by_the_program(tmp_path: Path) -> None:
    """The SDK's public API cannot list keys, so the program reads which keys the stack
    file sets; a typo there is refused, not ignored."""
    path = tmp_path / "Pulumi.dev.yaml"
    data = yaml.safe_load(stack.stack_file("dev").read_text())
    data["config"]["optiinfra:servics"] = {"grafana": {"hostPort": 3100}}
    path.write_text(yaml.safe_dump(data))
    assert "optiinfra:servics" in stack.keys_in_file("dev", tmp_path)
    with pytest.raises(ConfigError, match=r"optiinfra:servics.*is not a known setting"):
        offline.render("dev", stack_path=path)


def test_a_plaintext_credential_in_the_stack_file_is_refused(tmp_path: Path) -> None:
    """`pulumi config set grafanaAdminPassword ...` without --secret writes it in plaintext
    into the stack file: the program (keys_in_file) and the offline tools refuse it."""
    path = tmp_path / "Pulumi.dev.yaml"
    data = yaml.safe_load(stack.stack_file("dev").read_text())
    data["config"]["optiinfra:grafanaAdminPassword"] = "Plain-Text-Password-1"
    path.write_text(yaml.safe_dump(data))
    for attempt in (lambda: stack.keys_in_file("dev", tmp_path), lambda: offline.render("dev", stack_path=path)):
        with pytest.raises(ConfigError, match=r"grafanaAdminPassword.*plaintext.*pulumi config set --secret"):
            attempt()
    data["config"]["optiinfra:grafanaAdminPassword"] = {"secure": "v1:abc"}
    path.write_text(yaml.safe_dump(data))
    assert "optiinfra:grafanaAdminPassword" in stack.keys_in_file("dev", tmp_path)


def test_a_stack_importing_an_esc_environment_takes_its_credentials_as_engine_config(tmp_path: Path) -> None:
    """Pulumi ESC hands an environment's `pulumiConfig` to the program as stack config: the
    stack file names the environment and holds no credential, and the program (public config
    API only) treats what arrives as it treats `pulumi config set --secret` (docs/credentials.md)."""
    path = tmp_path / "Pulumi.prod.yaml"
    data = yaml.safe_load(stack.stack_file("prod").read_text())
    data["environment"] = ["optiinfra/prod-credentials"]
    path.write_text(yaml.safe_dump(data))
    keys = stack.keys_in_file("prod", tmp_path)
    assert keys and not [k for k in keys if k.split(":", 1)[1] in default_catalog().credential_keys()]
    value = "esc-delivered-0123456789abc"
    r = offline.render("prod", secrets=[f"postgresPassword={value}"], stack_path=path)
    assert value in r.secret_values  # a secret wherever it lands
    assert "postgres-credential" not in {x.name for x in r.of_type("random:index/randomPassword:RandomPassword")}
    assert value not in json.dumps([x.inputs for x in r.resources]) + json.dumps(r.outputs)

def test_offline_render_and_load_stack_agree() -> None:
    """The program (pulumi.Config under the mock runtime) and load_stack (the commands)
    resolve the same model from the same stack."""
    for name in stack.available_stacks():
        config = stack.read(name)
        assert offline.render(name).model.settings == stack.load_stack(config.values).settings


def test_program_load_takes_credentials_from_the_same_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import pulumi

    config = stack.read("dev", secrets=["grafanaAdminPassword=Grafana-Test-Value-123"])
    pulumi.runtime.set_all_config(dict(config.values), sorted(config.secret_keys))
    model, supplied = program.load(config.values.keys())
    assert supplied == {"grafana": "Grafana-Test-Value-123"}
    assert model.settings.target == "docker"


# ---- adding services is one declaration each -------------------------------------------------

NEW_SERVICES = '''
    Service(
        name="billing-api",
        tier=Tier.CORE,
        image="billing-api",
        own_image=True,
        purpose="Billing API (test)",
        ports=(Port("http", 8090, host=8090, band="application"),),
        health=HealthCheck(HttpCheck("/health", "http", '"status":"healthy"'), docker_client="python"),
        depends_on=(Dependency("ledger-db"),),
        env=(("PORT", Listen("http")), ("LEDGER_URL", Url("ledger-db"))),
        metrics=("http", "/metrics"),
        scalable=True,
        secret_env_reason="the test image reads its database URL from the environment only",
    ),
    Service(
        name="ledger-db",
        tier=Tier.DATABASES,
        image="postgres:16.4",
        publish=False,
        purpose="Ledger database (test)",
        ports=(Port("postgres", 5433, host=5433, band="database"),),
        health=HealthCheck(CommandCheck(("pg_isready", "-h", "127.0.0.1", "-p", "5433")), slow_start=True),
        volumes=(Volume("data", "/var/lib/postgresql/data", 1),),
        credentials=(Credential("ledger", "ledgerPassword", "Ledger database password"),),
        env=(("POSTGRES_PASSWORD", Secret("ledger")), ("PGPORT", Listen("postgres")),
             ("PGDATA", "/var/lib/postgresql/data/pgdata")),
        secret_files=(SecretFile("ledger", ("POSTGRES_PASSWORD",), "POSTGRES_PASSWORD_FILE"),),
        connection=Connection("postgresql://ledger:{password}@{host}:{port}/ledger", "postgres",
                              user="ledger", credential="ledger"),
        uid=999,
        writable_paths=("/tmp", "/var/run/postgresql"),
        backup=Backup(reads="the ledger database (pg_dump, custom format)",
                      argv=("pg_dump", "--host={host}", "--port={port}", "--username=ledger", "--dbname=ledger",
                            "--format=custom", "--no-password", "--file={out}"),
                      restore=("pg_restore", "--host={host}", "--port={port}", "--username=ledger",
                               "--dbname=ledger", "--clean", "--if-exists", "--no-password", "{src}"),
                      port="postgres", credential="ledger", password_env="PGPASSWORD", suffix=".dump"),
    ),
    Service(
        name="billing-worker",
        tier=Tier.CORE,
        image="billing-worker",
        own_image=True,
        purpose="Billing jobs from the task queue (test): a new Redis client",
        health=HealthCheck(CommandCheck(("sh", "-c", "kill -0 1"))),
        depends_on=(Dependency("redis"),),
        env=(("CELERY_BROKER_URL", Url("redis", own_login=True)),),
        secret_env_reason=OWN_ENV,
    ),
    Service(
        name="billing-reports",
        tier=Tier.CORE,
        image="billing-reports",
        own_image=True,
        purpose="Billing reports (test): a new PostgreSQL client, in a schema of its own",
        ports=(Port("http", 8091, host=8091, band="application"),),
        health=HealthCheck(HttpCheck("/health", "http"), docker_client="python"),
        depends_on=(Dependency("postgres"),),
        env=(("PORT", Listen("http")), ("DATABASE_URL", Url("postgres", own_login=True, schema="billing"))),
        secret_env_reason=OWN_ENV,
    ),
'''


@pytest.fixture(scope="module")
def extended(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project whose catalog gains two services, by declaration only."""
    root = tmp_path_factory.mktemp("extended") / "project"
    shutil.copytree(ROOT, root, ignore=shutil.ignore_patterns(
        "venv", ".venv", ".git", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"))
    catalog = root / "infra" / "catalog.py"
    text = catalog.read_text()
    end = "\n)\n\n\ndef _with_connections"
    assert text.count(end) == 1, "the SERVICES tuple's end moved; update this test"
    catalog.write_text(text.replace(end, NEW_SERVICES.rstrip("\n") + end))
    return root


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra", *args], cwd=root, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.parametrize("name", stack.available_stacks())
def test_new_services_render_and_pass_the_policies(extended: Path, name: str) -> None:
    plan = _cli(extended, "plan", "--stack", name, "--json")
    assert plan.returncode == 0, plan.stderr
    steps = json.loads(plan.stdout)["steps"]
    by_kind = {(s["newState"]["type"].rsplit(":", 1)[1], s["urn"].rsplit("::", 1)[1]): s["newState"] for s in steps}
    if stack.model_of(name).settings.target == "docker":
        api, db = by_kind["Container", "billing-api"], by_kind["Container", "ledger-db"]
        assert api["type"] == db["type"] == "docker:index/container:Container"
        # The API reaches its database over the databases network and waits for it; Prometheus
        # scrapes it over the monitoring network.
        prefix = stack.model_of(name).settings.docker.network_prefix
        assert {n["name"] for n in api["inputs"]["networksAdvanced"]} == {
            f"{prefix}-{tier}" for tier in ("core", "databases", "monitoring")}
        assert db["urn"] in api["dependencies"]
        assert by_kind["Volume", "ledger-db-data"]["protect"] is True
        url = next(e for e in api["inputs"]["envs"] if e.startswith("LEDGER_URL="))
        assert url == "LEDGER_URL=[secret]"  # the URL embeds the generated password
    else:
        assert by_kind["StatefulSet", "ledger-db"]["protect"] is True
        annotations = by_kind["Secret", "databases-credentials"]["inputs"]["metadata"]["annotations"]
        assert "ledger" in annotations["optiinfra.io/secret-keys"].split(",")
        allow = by_kind["NetworkPolicy", "allow-ledger-db"]["inputs"]["spec"]["ingress"]
        sources = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for rule in allow
                   for peer in rule["from"]}
        # its client, its backup job, and the prober (a TCP probe of its port)
        assert sources == {"billing-api", "ledger-db-backup", "blackbox-exporter"}
        assert by_kind["CronJob", "ledger-db-backup"]["inputs"]["spec"]["schedule"]
        files = [v["inputs"]["data"] for (kind, _), v in by_kind.items() if kind == "ConfigMap"]
        assert any("billing-api" in text for data in files for text in data.values())
    assert ("RandomPassword", "ledger-credential") in by_kind
    _assert_new_clients_have_their_own_logins(name, by_kind)
    # Four more services need room: on Kubernetes the committed node pools are sized for the
    # catalog as it is (capacity's N+1), so the extended stack gets twice the nodes.
    room = () if stack.model_of(name).settings.target == "docker" else (
        "--set", f"budget.nodes={2 * stack.model_of(name).settings.budget.nodes}")
    check = _cli(extended, "check", "--stack", name, *room)
    assert check.returncode == 0, check.stdout + check.stderr


# The new clients' logins, written out (a worked example, not computed by the code under test):
# each declares one connection that logs in as itself; its store grants it an identity.
NEW_CLIENT_LOGINS = {
    # client: (store, identity, credential id, config key, the store's password variable)
    "billing-reports": ("postgres", "optiinfra_billing_reports", "postgres-billing-reports",
                        "postgresBillingReportsPassword", "OPTIINFRA_BILLING_REPORTS_PASSWORD"),
    "billing-worker": ("redis", "optiinfra_billing_worker", "redis-billing-worker",
                       "redisBillingWorkerPassword", "OPTIINFRA_BILLING_WORKER_PASSWORD"),
}


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _wrapper(state: dict[str, object], marker: str, kind: str) -> str:
    """The store's start wrapper as rendered: the one argument of its workload that holds
    `marker` (as the shell gets it: Kubernetes writes a literal `$` in a command as `$$`)."""
    found = [s for s in _strings(state["inputs"]) if marker in s]
    assert len(found) == 1, found
    return found[0].replace("$$", "$") if kind == "StatefulSet" else found[0]


def _assert_new_clients_have_their_own_logins(name: str, by_kind: dict[tuple[str, str], Any]) -> None:
    """Each new client has its own role (PostgreSQL) or ACL user (Redis) in its store's
    rendered start wrapper, and its own credential, in the store and in the client's URL."""
    kind = "Container" if stack.model_of(name).settings.target == "docker" else "StatefulSet"
    pg = _wrapper(by_kind[kind, "postgres"], "psql", kind)
    _, role, _, _, var = NEW_CLIENT_LOGINS["billing-reports"]
    assert f"SELECT 'CREATE ROLE {role}' WHERE NOT EXISTS" in pg
    assert f"ALTER ROLE {role} WITH LOGIN NOSUPERUSER" in pg
    # Its own schema, owned by the schema's owner role, which the client acts as.
    assert "CREATE SCHEMA IF NOT EXISTS billing AUTHORIZATION optiinfra_billing_owner;" in pg
    assert f"GRANT optiinfra_billing_owner TO {role};" in pg
    assert f"ALTER ROLE {role} SET search_path = 'billing';" in pg
    assert f"${{{var}:-$(cat \"${var}_FILE\"" in pg  # its password, from the variable or the file
    redis = _wrapper(by_kind[kind, "redis"], "--aclfile", kind)
    _, user, rcred, _, rvar = NEW_CLIENT_LOGINS["billing-worker"]
    assert f'printf "user %s on #%s %s\\n" {user} "$u' in redis
    assert f'${{{rvar}:-$(cat /run/secrets/optiinfra/{rcred} 2>/dev/null)}}" {user});' in redis
    # The app rules, not the administrator's: the dangerous commands stay refused.
    line = next(part for part in redis.split(";") if f" {user} " in part and "printf" in part)
    assert line.endswith('"~* &* +@all -@dangerous"'), line
    # Each gets its own generated credential, delivered to the store and (in its URL) to the client.
    for client, (store, _, credential, _, variable) in NEW_CLIENT_LOGINS.items():
        assert ("RandomPassword", f"{credential}-credential") in by_kind
        if kind == "Container":
            # The store reads its clients' passwords from files (a rotation applies them in the
            # running store); the one-shot container that writes the files holds the secret.
            envs = by_kind["Container", store]["inputs"]["envs"]
            assert f"{variable}_FILE=/run/secrets/optiinfra/{credential}" in envs
            assert f"{variable}=[secret]" in by_kind["Container", f"{store}-credential-files"]["inputs"]["envs"]
            url = next(e for e in by_kind["Container", client]["inputs"]["envs"] if "_URL=" in e)
            assert url.endswith("_URL=[secret]")
        else:
            def keys(tier: str) -> list[str]:
                meta = by_kind["Secret", f"{tier}-credentials"]["inputs"]["metadata"]
                return str(meta["annotations"]["optiinfra.io/secret-keys"]).split(",")
            # The store's tier Secret holds the password, the client's its URL.
            assert credential in keys("databases") and f"{credential}-url" in keys("core")


def test_new_clients_credentials_keep_the_naming_of_the_existing_ones(extended: Path) -> None:
    """The config keys a user sets the new clients' credentials under follow today's form
    (postgresOrchestratorPassword, redisFlowerPassword), and name the client's identity."""
    probe = subprocess.run(
        [sys.executable, "-c", "import json; from infra.catalog import default_catalog; "
         "print(json.dumps({c.id: [c.config_key, c.description] for c in default_catalog().credentials.values()}))"],
        cwd=extended, capture_output=True, text=True, timeout=120, check=True)
    creds = json.loads(probe.stdout)
    for _, identity, credential, key, _ in NEW_CLIENT_LOGINS.values():
        assert creds[credential][0] == key
        assert identity in creds[credential][1]
    assert creds["postgres-orchestrator"][0] == "postgresOrchestratorPassword"
    assert creds["redis-flower"][0] == "redisFlowerPassword"


def test_new_services_need_only_regenerated_docs(extended: Path) -> None:
    stale = _cli(extended, "docs", "--check")
    assert stale.returncode == 1  # the inventory must mention the new services
    assert _cli(extended, "docs").returncode == 0
    assert "billing-api" in (extended / "docs" / "PORTS.md").read_text()
    assert _cli(extended, "docs", "--check").returncode == 0


def test_a_port_outside_its_band_needs_one_written_exception(extended: Path, tmp_path: Path) -> None:
    """A new service on a port outside its band fails the prod check until the catalog says
    why, beside that Port; nothing else (no policy config) needs an entry."""
    root = tmp_path / "project"
    shutil.copytree(extended, root)
    catalog = root / "infra" / "catalog.py"
    text = catalog.read_text()
    old, new = 'Port("http", 8090, host=8090, band="application"', 'Port("http", 7100, host=7100, band="application"'
    moved = text.replace(old, new)
    assert moved != text
    catalog.write_text(moved)
    failing = _cli(root, "check", "--stack", "prod")
    assert failing.returncode == 1
    assert "billing-api: Service port 7100 (http) is outside the application band" in failing.stdout
    catalog.write_text(moved.replace(new + ")", new + ', outside_band="a test reason")'))
    passing = _cli(root, "check", "--stack", "prod")
    assert passing.returncode == 0, passing.stdout


def test_a_client_that_logs_in_as_itself_is_refused_where_the_store_grants_no_such_login() -> None:
    """A connection that logs in as itself names a store that grants identities, and, for
    one that grants per schema, its schema: otherwise the catalog says so, not a traceback."""
    from dataclasses import replace

    from infra.catalog import SERVICES
    from infra.model import Service, Tier, Url
    from infra.stores import with_grants

    def client(url: Url) -> Service:
        return Service(name="new-client", tier=Tier.CORE, image="new-client", purpose="test", env=(("URL", url),))

    for url, says in ((Url("qdrant", own_login=True), "qdrant declares no grants"),
                      (Url("postgres", own_login=True), "names no schema"),
                      (Url("redis", own_login=True, schema="x"), "has no schemas")):
        with pytest.raises(ValueError, match=says):
            with_grants((*SERVICES, client(url)))
    granted = {s.name: s for s in with_grants((*SERVICES, client(Url("redis", own_login=True))))}
    assert dict(granted["new-client"].env)["URL"] == replace(
        Url("redis", own_login=True), user="optiinfra_new_client", credential="redis-new-client")
