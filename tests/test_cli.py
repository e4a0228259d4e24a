"""CLI conventions: --version, -s/--stack, PULUMI_STACK, secrets from a file or standard
input (never echoed), exit codes written in --help, examples in every command's help, and
a render whose event loops are all closed (no warning at interpreter exit)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infra import cli as infra_cli

ROOT = Path(__file__).resolve().parent.parent
SECRET = "Cli-Stdin-Canary-Secret-7"


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
        python: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "PULUMI_STACK"}
    return subprocess.run([sys.executable, *python, "-m", "infra", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False, env={**environ, **(env or {})}, input=stdin)


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith(f"python -m infra {infra_cli.VERSION} (pulumi SDK ")


def test_help_gives_exit_codes_and_every_command_has_examples() -> None:
    top = infra_cli.parser()
    assert "Exit status: 0 ok; 1 a check failed" in top.format_help() and "2 a user error" in top.format_help()
    assert "or a prerequisite is missing" in top.format_help()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "Exit status" in text, name
        # Under the same heading in every command, its first example that command.
        assert (p.epilog or "").startswith(f"Examples:\n  python -m infra {name} "), f"{name} --help: {p.epilog!r:.80}"


def test_help_and_usage_name_the_command_as_it_was_started() -> None:
    """`./optiinfra` passes its name down: usage, examples, fixes and --version say it;
    `python -m infra` keeps its own."""
    env = {"OPTIINFRA_VENV": sys.prefix}
    started = subprocess.run(["bash", str(ROOT / "optiinfra"), "diff", "--help"], capture_output=True, text=True,
                             timeout=300, check=False, env={**os.environ, **env})
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("usage: ") and started.stdout.split()[1].endswith("/optiinfra")
    assert "python -m infra" not in started.stdout
    assert "Examples:\n  " in started.stdout
    for args in (["plan", "--help"], ["--version"]):
        proc = run(*args, env={"OPTIINFRA_PROG": "./optiinfra"})
        assert proc.returncode == 0 and "python -m infra" not in proc.stdout and "./optiinfra" in proc.stdout
        assert "python -m infra" in run(*args).stdout
    wrong = run("plan", "-s", "dev", "--jsn", env={"OPTIINFRA_PROG": "./optiinfra"})
    assert wrong.returncode == 2 and "see `./optiinfra plan --help`" in wrong.stderr


def test_docs_help_names_every_file_docs_writes() -> None:
    from infra import docs

    text = " ".join(infra_cli.parser("docs").format_help().split())  # unwrapped
    sub = next(a for a in infra_cli.parser("docs")._actions if isinstance(a, argparse._SubParsersAction))
    text += " ".join((sub.choices["docs"].description or "").split())
    for path in docs.files(["dev"]):
        shown = re.sub(r"topology-dev\.svg$", "topology-<stack>.svg", path)
        assert shown in text, path


def test_a_missing_prerequisite_is_exit_1_in_every_command(tmp_path: Path) -> None:
    """No Docker: adopt, backup and restore stop alike (1, as --help and deploy.sh define it), each with one line."""
    backup = tmp_path / "postgres-20250101T021700Z.dump"
    backup.write_bytes(b"")
    env = {"PATH": str(tmp_path / "empty"), "DOCKER_HOST": f"unix://{tmp_path}/docker.sock"}
    for args in (["adopt", "-s", "dev"], ["backup", "-s", "dev", "--service", "postgres"],
                 ["restore", "-s", "dev", "--service", "postgres", "--from", str(backup), "--yes-overwrite"]):
        proc = run(*args, env=env)
        assert proc.returncode == 1, (args, proc.returncode, proc.stderr)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "Fix:" in errors[0] and "Traceback" not in proc.stderr, proc.stderr


def test_short_stack_flag_and_pulumi_stack_give_the_same_plan() -> None:
    long = run("plan", "--stack", "dev", "--json")
    short = run("plan", "-s", "dev", "--json")
    env = run("plan", "--json", env={"PULUMI_STACK": "dev"})
    assert long.returncode == short.returncode == env.returncode == 0, (long.stderr, short.stderr, env.stderr)
    assert long.stdout == short.stdout == env.stdout
    flag_wins = run("plan", "-s", "dev", "--json", env={"PULUMI_STACK": "no-such-stack"})
    assert flag_wins.returncode == 0 and flag_wins.stdout == long.stdout


def test_a_secret_from_standard_input_is_used_and_never_echoed() -> None:
    proc = run("plan", "-s", "dev", "--json", "--secret", "postgresPassword=-", stdin=SECRET + "\n")
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    # It is used: a weak value read the same way is refused.
    weak = run("plan", "-s", "dev", "--secret", "postgresPassword=-", stdin="changeme\n")
    assert weak.returncode == 2 and "well-known default" in weak.stderr and "changeme" not in weak.stderr


def test_secrets_resolve_exactly_from_stdin_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The values reach the stack config verbatim (no YAML typing of `yes` or `0123`)."""
    import io

    from infra import stack

    env = tmp_path / "secrets.env"
    env.write_text("# comment\npostgresPassword=Strong-File-Value-1\nredisPassword = yes \n")
    yml = tmp_path / "secrets.yaml"
    yml.write_text("qdrantApiKey: '0123456789abcdef'\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("Stdin: value with spaces\n"))
    resolved = infra_cli.resolve_secrets(["clickhousePassword=-"], [str(env), str(yml)])
    config = stack.read("dev", secrets=resolved)
    assert config.values["optiinfra:postgresPassword"] == "Strong-File-Value-1"
    assert config.values["optiinfra:redisPassword"] == "yes"
    assert config.values["optiinfra:qdrantApiKey"] == "0123456789abcdef"
    assert config.values["optiinfra:clickhousePassword"] == "Stdin: value with spaces"
    assert {"optiinfra:postgresPassword", "optiinfra:clickhousePassword"} <= config.secret_keys


@pytest.mark.parametrize("text", [
    "postgresPassword=Strong-File-Value-1\n",
    "postgresPassword: Strong-File-Value-1\n",
    '{"postgresPassword": "Strong-File-Value-1"}',
])
def test_secret_file_formats(tmp_path: Path, text: str) -> None:
    path = tmp_path / "secrets"
    path.write_text(text)
    assert infra_cli.resolve_secrets([], [str(path)]) == ['postgresPassword="Strong-File-Value-1"']


def test_a_bad_secret_file_never_echoes_its_values(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text(f"postgresPassword: [{SECRET}]\n")
    proc = run("plan", "-s", "dev", "--secret-file", str(path))
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and SECRET not in proc.stderr
    path.write_text(f"this is {SECRET} not a map\n")
    proc = run("plan", "-s", "dev", "--secret-file", str(path))
    assert proc.returncode == 2 and "neither KEY=VALUE lines nor a YAML/JSON map" in proc.stderr
    assert SECRET not in proc.stderr


def test_exit_codes_0_ok_1_failed_check_2_user_error() -> None:
    assert run("capacity", "-s", "dev").returncode == 0
    over = run("capacity", "-s", "dev", "--set", "budget.memory=256Mi", "--json")
    assert over.returncode == 1 and json.loads(over.stdout)
    bad = run("capacity", "-s", "dev", "--set", "budget.memory=lots")
    assert bad.returncode == 2 and bad.stderr.startswith("error: config key 'optiinfra:budget.memory'")


def test_render_json_lists_the_files(tmp_path: Path) -> None:
    proc = run("render", "-s", "staging", "--out", str(tmp_path / "m"), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["stack"] == "staging" and all(Path(f["path"]).exists() for f in report["files"])


def test_a_render_leaves_no_event_loop_open() -> None:
    """Event loops left to the garbage collector at exit printed `Exception ignored in
    BaseEventLoop.__del__ ... Invalid file descriptor: -1` now and then; every one is
    closed now, which development mode would report as a ResourceWarning."""
    proc = run("plan", "-s", "dev", "--json", python=("-X", "dev", "-W", "always::ResourceWarning"))
    assert proc.returncode == 0
    assert "unclosed event loop" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-2000:]


def test_a_python_without_the_requirements_gets_one_line_not_a_traceback() -> None:
    # `python -S` loads no site-packages: the state of `python3 -m infra` on a fresh clone.
    proc = run("plan", "-s", "dev", python=("-S",))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: this Python (")
    assert "no module 'pulumi'" in proc.stderr and "Fix: run ./optiinfra" in proc.stderr


REFUSE_THEN_RENDER = """
from infra import offline
from infra.settings import ConfigError
for _ in range(2):
    try:
        offline.render("dev", ["services.data-collector-beat.replicas=2"])
    except ConfigError as err:
        print("refused", str(err).split(":")[0])
    print("rendered", len(offline.render("dev").resources))
"""


def test_a_refused_render_leaves_nothing_behind_for_the_next_one() -> None:
    """A render refused on its config registers nothing (the config is checked before the
    mocks create the root stack), so the next render in the same process neither waits
    for a stale registration nor inherits warnings; asyncio's debug mode would report a
    pending task destroyed or a coroutine never awaited."""
    proc = subprocess.run([sys.executable, "-X", "dev", "-W", "always", "-c", REFUSE_THEN_RENDER], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == lines[2] == "refused config key 'optiinfra", lines
    assert lines[1] == lines[3] and lines[1].startswith("rendered ") and int(lines[1].split()[1]) > 0, lines
    for noise in ("Task was destroyed", "was never awaited", "Exception ignored", "unclosed", "Traceback"):
        assert noise not in proc.stderr, proc.stderr[-2000:]


def test_a_refused_plan_is_one_line_without_asyncio_noise() -> None:
    proc = run("plan", "-s", "dev", "--set", "services.data-collector-beat.replicas=2",
               python=("-X", "dev", "-W", "always"))
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: config key 'optiinfra:services.data-collector-beat.replicas'") and "Fix:" in line


# ---- --json on adopt, restore and docs ----------------------------------------------

def test_adopt_json_gives_the_findings(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_adopt import SEED_VOLUMES, FakeEngine, recorded, serve

    server, host = serve(FakeEngine(recorded()), None)  # 127.0.0.1, an ephemeral port
    try:
        code = infra_cli.main(["adopt", "-s", "dev", "--docker-host", host, "--json"])
        out, err = capsys.readouterr()
        text = infra_cli.main(["adopt", "-s", "dev", "--docker-host", host])
        capsys.readouterr()
    finally:
        server.shutdown()
        server.server_close()
    report = json.loads(out)
    assert code == text == 1 and report["needsAttention"] is True and report["unmatched"]  # pgAdmin and others
    assert err == ""
    assert (report["stack"], report["host"]) == ("dev", host)
    assert {a["configKey"]: a["dockerVolume"] for a in report["adopted"]} == SEED_VOLUMES
    by_name = {c["name"]: c for c in report["containers"]}
    assert by_name["optiinfra-postgres"]["service"] == "postgres"
    assert {c["state"] for c in report["credentials"]} <= {"default", "unset", "set", "unknown"}
    assert any(c["configKey"] == "postgresPassword" for c in report["credentials"])


def test_restore_dry_run_json_on_docker_and_kubernetes(tmp_path: Path) -> None:
    backup = tmp_path / "postgres-20250101T021700Z.dump"
    backup.write_bytes(b"")
    proc = run("restore", "-s", "dev", "--service", "postgres", "--from", str(backup), "--dry-run", "--json",
               "--secret", f"postgresPassword={SECRET}")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert (plan["stack"], plan["service"], plan["from"]) == ("dev", "postgres", str(backup))
    (step,) = plan["steps"]
    assert step["argv"][:2] == ["docker", "run"] and f"{tmp_path}:/restore:ro" in step["argv"]
    # The password goes by name: its variable is in argv, its value nowhere.
    (variable,) = step["envFromService"]
    assert step["argv"][step["argv"].index(variable) - 1] == "--env" and SECRET not in proc.stdout
    redis = run("restore", "-s", "prod", "--service", "redis", "--from", "redis-20250101T021700Z.rdb",
                "--dry-run", "--json")
    assert redis.returncode == 0 and redis.stderr == "", redis.stderr
    k8s = json.loads(redis.stdout)
    assert k8s["job"]["kind"] == "Job" and k8s["job"]["metadata"]["name"] == "redis-restore"
    assert k8s["steps"][1].endswith("--replicas=0") and k8s["steps"][-2].endswith("--replicas=1")
    assert '"suspend":true' in k8s["steps"][0] and '"suspend":false' in k8s["steps"][-1]
    assert "kubectl apply -f redis-restore.yaml" in k8s["steps"]
    # --json reports a plan: without --dry-run it is refused, as backup's is.
    refused = run("restore", "-s", "dev", "--service", "postgres", "--from", str(backup), "--json")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("error: flag '--json'") and "Fix: add --dry-run" in refused.stderr


def test_docs_json_lists_each_file_and_its_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["docs", "-s", "dev", "--root", str(tmp_path), "--json"]
    assert infra_cli.main(args) == 0
    wrote = json.loads(capsys.readouterr().out)
    assert wrote["check"] is False and wrote["stacks"] == ["dev"]
    paths = {f["path"] for f in wrote["files"]}
    assert "docs/topology-dev.svg" in paths and "docs/topology-prod.svg" not in paths
    assert {f["status"] for f in wrote["files"]} == {"wrote"} and all((tmp_path / p).is_file() for p in paths)
    assert infra_cli.main(args) == 0
    assert {f["status"] for f in json.loads(capsys.readouterr().out)["files"]} == {"unchanged"}
    (tmp_path / "docs" / "topology-dev.svg").unlink()
    (tmp_path / "docs" / "PORTS.md").write_text("edited\n")
    assert infra_cli.main([*args, "--check"]) == 1
    out, err = capsys.readouterr()
    checked = json.loads(out)
    status = {f["path"]: f["status"] for f in checked["files"]}
    assert status["docs/topology-dev.svg"] == "missing" and status["docs/PORTS.md"] == "stale"
    assert status["docs/settings.md"] == "current" and checked["upToDate"] is False and err == ""
    assert not (tmp_path / "docs" / "topology-dev.svg").exists()  # --check writes nothing


def test_docs_for_an_unknown_stack_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    proc = run("docs", "-s", "nope", "--root", str(tmp_path), "--json")
    assert proc.returncode == 2 and proc.stdout == "" and not any(tmp_path.iterdir())
    assert proc.stderr.startswith("error: flag '--stack': there is no stack file Pulumi.nope.yaml")


def test_docs_ignores_pulumi_stack() -> None:
    """The committed docs cover every stack; PULUMI_STACK left in a shell must not narrow them."""
    proc = run("docs", "--check", "--json", env={"PULUMI_STACK": "dev"})
    assert proc.returncode == 0, proc.stdout
    report = json.loads(proc.stdout)
    assert report["upToDate"] is True and len(report["stacks"]) > 1


# ---- a credential only you can set -------------------------------------------------

def test_plan_warns_of_a_credential_only_you_can_set_as_of_missing_receivers() -> None:
    """prod's OIDC client secret is yours to set and the committed file leaves it out: the
    render stands one in, and `plan` says the stack cannot deploy so, with the command."""
    from infra.catalog import default_catalog

    from .tools import receiver_urls, store_keys

    (key,) = [c.config_key for c in default_catalog().credentials.values() if c.user_set]
    # prod's receivers' URLs and its backup store's key: yours to set as well
    urls = {**receiver_urls("prod", "cli"), **store_keys("prod", "cli")}
    proc = run("plan", "-s", "prod")
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("Credentials:")]
    assert len(lines) == 1 + len(urls) == 5
    (line,) = [ln for ln in lines if ln.startswith(f"Credentials: optiinfra:{key} is not set")]
    assert "`pulumi up` refuses" in line and f"pulumi config set --secret {key} <" in line
    for url_key in urls:
        assert any(ln.startswith(f"Credentials: optiinfra:{url_key} is not set") for ln in lines)
    url_args = [a for k, v in urls.items() for a in ("--secret", f"{k}={v}")]
    given = run("plan", "-s", "prod", "--secret", f"{key}=-", *url_args, stdin=SECRET + "\n")
    assert given.returncode == 0 and "Credentials:" not in given.stdout and SECRET not in given.stdout
    as_json = run("plan", "-s", "prod", "--json", *url_args)
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["steps"]
    assert as_json.stderr.startswith(f"warning: config key 'optiinfra:{key}': is not set")
    assert "Credentials:" not in run("plan", "-s", "dev").stdout  # dev has no such credential


def test_check_for_deploy_refuses_what_pulumi_up_would() -> None:
    proc = run("check", "-s", "prod", "--deploy")
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: config key 'optiinfra:") and ": is not set" in line
    assert ". Fix: pulumi stack select --create prod, then pulumi config set --secret " in line
    assert run("check", "-s", "prod").returncode == 0  # without --deploy: the render with its stand-in passes


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_plan_header_adds_up_on_the_page(stack: str) -> None:
    """The header's total is the tier components plus the sections' counts, and the JSON
    preview's creates; no number on the page is left unexplained."""
    text = run("plan", "-s", stack).stdout
    m = re.match(r"Stack \S+: (\d+) resources = (\d+) tier components \+ (\d+) in the tiers below"
                 r"(?: \+ (\d+) other)? \(offline render", text)
    assert m, text.splitlines()[0]
    total, tiers, inside, other = (int(g or 0) for g in m.groups())
    sections = {name: int(n) for name, n in re.findall(r"^(\S+) \((\d+) resources?\)$", text, flags=re.MULTILINE)}
    assert sections.pop("other", 0) == other
    assert len(sections) == tiers and sum(sections.values()) == inside
    assert total == tiers + inside + other
    steps = json.loads(run("plan", "-s", stack, "--json").stdout)["steps"]
    assert total == sum(1 for s in steps if s["op"] == "create")
