"""Every user error, from the stack file itself, `--set`, flags or the environment, is one
`error:` line naming the file, key or flag, the problem and the fix; exit 2; no traceback;
nothing written. Run through the real CLI (`python -m infra ...` in a subprocess) on a
copy of the project, so a damaged stack file is a real file next to Pulumi.yaml."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra import stack
from infra.settings import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the program (infra/, policies/, the project and stack files)."""
    root = tmp_path_factory.mktemp("user-errors") / "project"
    root.mkdir()
    for name in ("infra", "policies"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", ".mypy_cache"))
    for path in ROOT.glob("Pulumi*.yaml"):
        shutil.copy(path, root / path.name)
    return root


def cli(root: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "PULUMI_STACK"}
    return subprocess.run([sys.executable, "-m", "infra", *args], cwd=root, capture_output=True, text=True,
                          timeout=300, check=False, env={**environ, **(env or {})}, input=stdin)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single `error:` line of a refused command (exit 2, nothing on stdout)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and ". Fix: " in lines[0], lines[0]
    assert proc.stdout == ""
    return lines[0]


# (stack file text, words the one line must hold)
DAMAGED = [
    ("config:\n  optiinfra:public: [portal\n", ["Pulumi.bad.yaml line 3, column 1", "flow sequence started on line 2"]),
    ("config:\n\toptiinfra:target: docker\n", ["Pulumi.bad.yaml line 2, column 1", "'\\t'", "never tabs"]),
    ("config:\n  optiinfra:services:\n    grafana:\n      hostPort: 3100\n\t  memory: 1Gi\n",
     ["Pulumi.bad.yaml line 5, column 1", "never tabs"]),
    ("config:\n  optiinfra:target: \"docker\n", ["Pulumi.bad.yaml line 3", "quoted scalar started on line 2"]),
    ("config:\n  optiinfra:target docker\n  optiinfra:public: []\n", ["Pulumi.bad.yaml line 3, column 19",
                                                                   "not valid YAML"]),
    ("config:\n  - optiinfra:target: docker\n", ["Pulumi.bad.yaml line 2, column 3", "`config:` is a list"]),
    ("config: 3\n", ["Pulumi.bad.yaml line 1, column 9", "`config:` is a single value"]),
    ("- config\n- optiinfra:target\n", ["Pulumi.bad.yaml line 1, column 1", "is a list, not a map"]),
    ("just some text\n", ["Pulumi.bad.yaml line 1, column 1", "is a single value"]),
    ("confg:\n  optiinfra:target: docker\n", ["Pulumi.bad.yaml line 1, column 1", "did you mean 'config'"]),
    ("config:\n  optinfra:target: docker\n", ["Pulumi.bad.yaml line 2, column 3", "config key 'optinfra:target'",
                                             "did you mean 'optiinfra:target'"]),
    ("config:\n  optiinfra-target: docker\n", ["Pulumi.bad.yaml line 2, column 3", "has no namespace",
                                              "write it as optiinfra:target"]),
    ("config:\n  target: docker\n", ["line 2, column 3", "has no namespace", "write it as optiinfra:target"]),
    ("config:\n  aws:region: us-east-1\n", ["config key 'aws:region'", "not a namespace this program reads"]),
    ("config:\n  optiinfra:target: docker\n  optiinfra:target: kubernetes\n",
     ["Pulumi.bad.yaml line 3, column 3", "'optiinfra:target' is written twice (first on line 2)"]),
    ("config:\n  optiinfra:services:\n    grafana:\n      hostPort: 3100\n      hostPort: 3200\n",
     ["Pulumi.bad.yaml line 5, column 7", "'hostPort' is written twice (first on line 4)"]),
    ("config:\n  optiinfra:servics:\n    grafana: {}\n", ["config key 'optiinfra:servics'", "did you mean 'services'"]),
    ("config:\n  optiinfra:services:\n    grafanna: {memory: 1Gi}\n",
     ["config key 'optiinfra:services.grafanna'", "did you mean 'grafana'"]),
    ("config:\n  optiinfra:backups:\n    schedule: 61 2 * * *\n",
     ["config key 'optiinfra:backups.schedule'", "minute 61 is outside 0-59"]),
    ("config:\n  optiinfra:grafanaAdminPassword: Plain-Text-Value-1\n",
     ["optiinfra:grafanaAdminPassword", "is set in plaintext"]),
]


@pytest.mark.parametrize(("text", "words"), DAMAGED, ids=[t.replace("\n", "|")[:40] for t, _ in DAMAGED])
def test_a_damaged_stack_file_is_one_line_naming_the_place(project: Path, text: str, words: list[str]) -> None:
    (project / "Pulumi.bad.yaml").write_text(text)
    line = one_error_line(cli(project, "plan", "--stack", "bad"))
    for word in words:
        assert word in line, line


@pytest.mark.parametrize(("text", "words"), DAMAGED[:16], ids=[t.replace("\n", "|")[:40] for t, _ in DAMAGED[:16]])
def test_the_program_refuses_a_damaged_stack_file_the_same_way(tmp_path: Path, text: str, words: list[str]) -> None:
    """Under the engine the program reads the stack file's keys itself (keys_in_file): the
    same one-line ConfigError, which main() turns into a RunError without a traceback."""
    (tmp_path / "Pulumi.bad.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        stack.keys_in_file("bad", tmp_path)
    message = str(err.value)
    assert "\n" not in message and "Fix: " in message
    assert all(w in message for w in words if w != "did you mean 'services'"), message


BAD_VALUES = [
    # (--set, words of the one line)
    ("backups.schedule=61 2 * * *", ["optiinfra:backups.schedule", "minute 61 is outside 0-59"]),
    ("backups.schedule=17 24 * * *", ["hour 24 is outside 0-23"]),
    ("backups.schedule=17 2 0 * *", ["day of month 0 is outside 1-31"]),
    ("backups.schedule=17 2 * 13 *", ["month 13 is outside 1-12"]),
    ("backups.schedule=17 2 * * 7", ["weekday 7 is outside 0-6"]),
    ("backups.schedule=*/0 2 * * *", ["step '/0' is zero"]),
    ("backups.schedule=17 5-3 * * *", ["range 5-3 runs backwards"]),
    ("kubernetes.imagePullSecrets=[Ghcr_Pull]", ["optiinfra:kubernetes.imagePullSecrets", "not a Secret name"]),
    ("kubernetes.dns.namespace=Kube_System", ["optiinfra:kubernetes.dns.namespace", "not a namespace name"]),
    ("kubernetes.dns.podLabels={k8s-app: kube dns}", ["optiinfra:kubernetes.dns.podLabels.k8s-app",
                                                      "not a label value"]),
    ("kubernetes.dns.podLabels={bad key!: x}", ["not a Kubernetes label key"]),
    ("kubernetes.ingress.annotations={'ex ample.com/x': y}", ["not a Kubernetes annotation key"]),
    ("cloudProviders=[aws-]", ["optiinfra:cloudProviders", "not a provider name"]),
    ("services.grafana.image=grafana/grafanä:11.3.1", ["optiinfra:services.grafana.image", "non-ASCII"]),
    ("services.grafana.image=régistry.example:5000/grafana:11.3.1",
     ["non-ASCII", "xn--rgistry-bya.example:5000/grafana:11.3.1"]),
    ("services.grafana.image=grafana//grafana:11.3.1", ["is not an image reference"]),
    ("images.registry=ghcr.ïo/optiinfra", ["optiinfra:images.registry", "ghcr.xn--o-mga/optiinfra"]),
    ("images.tag=0.1.ä", ["optiinfra:images.tag", "non-ASCII"]),
    # dev's budget.memory is 6Gi: a reserve of all of it leaves nothing for pods.
    ("budget.reservedMemory=6Gi", ["optiinfra:budget.reservedMemory", "not less than a node's memory",
                                   "budget.memory 6Gi"]),
    ("budget.reservedCpu=8", ["optiinfra:budget.reservedCpu", "not less than a node's CPU"]),
    ("servics.grafana.memory=1Gi", ["optiinfra:servics", "did you mean 'services'"]),
    ("services.grafanna.memory=1Gi", ["optiinfra:services.grafanna", "did you mean 'grafana'"]),
    ("public=[portl]", ["optiinfra:public", "did you mean 'portal'"]),
    ("services.portal.dependsOn=[postgress]", ["optiinfra:services.portal.dependsOn", "did you mean 'postgres'"]),
    # A number where a size goes gets the size's own fix, as `memory=abc` does.
    ("services.grafana.memory=256", ["optiinfra:services.grafana.memory", "256 is not a memory size",
                                     "Fix: use a size such as 256Mi"]),
    ("services.grafana.memory=5", ["optiinfra:services.grafana.memory", "Fix: use a size such as 256Mi"]),
    ("budget.memory=3", ["optiinfra:budget.memory", "Fix: use a size such as 10Gi"]),
    # A bound says what to write: the kind of number, the bound, an example and what it counts.
    ("budget.cpu=0", ["optiinfra:budget.cpu", "Fix: use a number greater than 0, e.g. 0.5 (CPU cores per node)"]),
    ("budget.nodes=0", ["Fix: use a whole number from 1 to 1000, e.g. 1 (machines)"]),
    ("budget.zones=two", ["optiinfra:budget.zones", "Fix: use a whole number from 1 to 10"]),
    ("budget.reservedCpu=-1", ["Fix: use a number of at least 0, e.g. 0"]),
    # A number where text goes that is fine as text: quote it.
    ("images.tag=1.0", ["optiinfra:images.tag", "is a number", 'Fix: quote it: tag: "1.0"']),
]


@pytest.mark.parametrize(("value", "words"), BAD_VALUES, ids=[v for v, _ in BAD_VALUES])
def test_a_bad_value_is_one_line(project: Path, value: str, words: list[str]) -> None:
    line = one_error_line(cli(project, "plan", "-s", "dev", "--set", value))
    for word in words:
        assert word in line, line
    assert "Fix: correct the value" not in line  # every fix says what to write


@pytest.mark.parametrize(("args", "problem"), [
    (["--secret", "postgresPassword="], "is empty"),
    (["--secret-file", "-"], "is only blanks"),  # standard input: postgresPassword: "   "
])
def test_an_empty_credential_is_empty_not_a_default(project: Path, args: list[str], problem: str) -> None:
    line = one_error_line(cli(project, "plan", "-s", "dev", *args, stdin='postgresPassword: "   "\n'))
    assert line.startswith(f"error: config key 'optiinfra:postgresPassword': {problem}. Fix: pulumi config set "
                           "--secret postgresPassword "), line
    assert "well-known default" not in line


@pytest.mark.parametrize(("host", "ascii_form"), [("pörtal.example.com", "xn--prtal-jua.example.com")])
def test_a_non_ascii_host_name_gets_its_punycode(project: Path, host: str, ascii_form: str) -> None:
    line = one_error_line(cli(project, "plan", "-s", "prod", "--set", f"kubernetes.ingress.hosts.portal={host}"))
    assert "optiinfra:kubernetes.ingress.hosts.portal" in line and ascii_form in line


def test_a_reserve_as_large_as_the_node_is_refused_on_kubernetes(project: Path) -> None:
    line = one_error_line(cli(project, "plan", "-s", "prod", "--set", "budget.reservedMemory=64Gi"))
    assert "optiinfra:budget.reservedMemory" in line


FLAGS = [
    # (arguments, words of the one line)
    (["plan"], ["flag '--stack': is missing", "PULUMI_STACK"]),
    (["plan", "-s", "nope"], ["flag '--stack'", "Pulumi.nope.yaml", "dev"]),
    (["paln", "-s", "dev"], ["invalid choice: 'paln'", "did you mean 'plan'"]),
    (["plan", "-s", "dev", "--jsn"], ["unrecognized arguments: --jsn", "did you mean '--json'"]),
    (["plan", "-s", "dev", "--set", "no-equals-sign"], ["flag '--set'", "not KEY=VALUE"]),
    (["plan", "-s", "dev", "--secret-file", "/nonexistent/secrets.env"], ["flag '--secret-file'", "no file"]),
    (["render", "-s", "prod"], ["required: --out"]),
    (["backup", "-s", "dev", "--json"], ["flag '--json'", "--dry-run"]),
    (["plan", "-s", "Prod"], ["flag '--stack'", "Pulumi.Prod.yaml", "did you mean 'prod'?"]),
    (["plan", "-s", "dev", "--stack", "prod"], ["flag '--stack': is given twice (dev and prod)",
                                               "Fix: give one -s/--stack"]),
    (["check", "--stack", "prod", "-s", "prod"], ["flag '--stack': is given twice"]),
]


@pytest.mark.parametrize(("args", "words"), FLAGS, ids=[" ".join(a) for a, _ in FLAGS])
def test_a_bad_flag_is_one_line_naming_the_flag(project: Path, args: list[str], words: list[str]) -> None:
    line = one_error_line(cli(project, *args))
    for word in words:
        assert word in line, line
    assert "config key '-" not in line  # a flag is reported as a flag


def test_a_bad_stack_in_the_environment_names_the_variable(project: Path) -> None:
    line = one_error_line(cli(project, "plan", env={"PULUMI_STACK": "nope"}))
    assert line.startswith("error: environment variable PULUMI_STACK=nope: there is no stack file")


def test_render_to_an_existing_file_or_unwritable_path_changes_nothing(project: Path, tmp_path: Path) -> None:
    target = tmp_path / "manifests"
    target.write_text("keep me\n")
    line = one_error_line(cli(project, "render", "-s", "prod", "--out", str(target)))
    assert f"flag '--out': {target} is a file, not a directory" in line
    assert target.read_text() == "keep me\n"
    line = one_error_line(cli(project, "render", "-s", "prod", "--out", str(target / "sub")))
    assert "cannot be created" in line and target.read_text() == "keep me\n"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        line = one_error_line(cli(project, "render", "-s", "prod", "--out", str(locked / "out")))
        assert "cannot be written" in line and not (locked / "out").exists()


def test_a_damaged_stack_file_writes_no_output(project: Path, tmp_path: Path) -> None:
    (project / "Pulumi.bad.yaml").write_text("config:\n  optiinfra:target: kubernetes\n  optiinfra:target: docker\n")
    out = tmp_path / "out"
    one_error_line(cli(project, "render", "-s", "bad", "--out", str(out)))
    assert not out.exists()


def test_restore_without_any_backup_says_to_make_one(project: Path) -> None:
    """No backup directory at all: not `ls` of a folder that does not exist, but the command
    that makes the first backup. With backups there, a wrong name lists the newest."""
    args = ("restore", "-s", "dev", "--service", "postgres", "--from", "postgres-20250101T021700Z.dump")
    assert not (project / "backups").exists()
    line = one_error_line(cli(project, *args))
    assert "there are no backups of postgres yet" in line, line
    assert line.endswith("Fix: make one with python -m infra backup --stack dev --service postgres"), line
    assert "ls " not in line
    made = project / "backups" / "postgres"
    made.mkdir(parents=True)
    try:
        for stamp in ("20250102T021700Z", "20250103T021700Z"):
            (made / f"postgres-{stamp}.dump").write_bytes(b"")
        line = one_error_line(cli(project, *args))
        assert "postgres-20250101T021700Z.dump does not exist" in line
        assert "name one of the 2 backups of postgres (the newest: postgres-20250103T021700Z.dump" in line
    finally:
        shutil.rmtree(project / "backups")


def test_restore_from_a_path_that_does_not_exist_names_the_path(project: Path, tmp_path: Path) -> None:
    """A path of the user's own is not the backup directory: no advice to make a backup there."""
    missing = tmp_path / "elsewhere" / "postgres-20250101T021700Z.dump"
    line = one_error_line(cli(project, "restore", "-s", "dev", "--service", "postgres", "--from", str(missing)))
    assert f"flag '--from': {missing} does not exist. Fix: give the path of an existing backup" in line
    assert "make one" not in line
