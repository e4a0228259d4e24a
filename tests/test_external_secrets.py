"""Credentials from the External Secrets Operator (`kubernetes.externalSecrets`), offline.

What is compared is read from the renders: the Secret names and keys the workloads read,
the Pulumi side's own Secret of the default render, the values it registers. The
templates are run by Go's text/template with the sprig functions, as the operator's
engine v2 runs them (tests/gotemplate, sprig at the operator's version), and the manifests
are validated against the operator's own CRD schema (scripts/crds.sh).
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import jsonschema
import pytest
import yaml

from infra import external_secrets as eso
from infra import offline, program
from infra import stack as infra_stack
from infra.catalog import default_catalog
from infra.commands import check as check_cmd
from infra.settings import ConfigError
from policies.optiinfra_policies.vocabulary import K8S_CREDENTIALS_ROLLOUT, K8S_SECRET_KEYS, RANDOM_PASSWORD

from .conftest import render
from .tools import ROOT, of_kind, receiver_urls, store_keys, unavailable

STORE = "vault-backend"
ESO = f"kubernetes.externalSecrets.store={STORE}"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "CronJob")
GOTEMPLATE = ROOT / "tests" / "gotemplate"


# ---- helpers ---------------------------------------------------------------------

def ident(m: dict[str, Any]) -> tuple[str, str, str]:
    return m["kind"], m["metadata"]["namespace"], m["metadata"]["name"]


def pod_spec(m: dict[str, Any]) -> dict[str, Any]:
    if m["kind"] == "CronJob":
        return dict(m["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(m["spec"]["template"]["spec"])


def reads(m: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(Secret name, key) of everything a workload reads from a Secret."""
    spec = pod_spec(m)
    for c in spec.get("containers", []):
        for env in c.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                yield ref["name"], ref["key"]
    for vol in spec.get("volumes") or []:
        if "secret" in vol:
            for item in vol["secret"].get("items") or []:
                yield vol["secret"]["secretName"], item["key"]


def read_keys(r: offline.Render) -> dict[tuple[str, str], set[str]]:
    """(namespace, Secret name) -> the keys the rendered workloads read from it."""
    out: dict[tuple[str, str], set[str]] = {}
    for m in of_kind(r, *WORKLOAD_KINDS):
        for name, key in reads(m):
            out.setdefault((m["metadata"]["namespace"], name), set()).add(key)
    return out


def external_secrets(r: offline.Render) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, target Secret name) -> the ExternalSecret writing it."""
    return {(m["metadata"]["namespace"], m["spec"]["target"].get("name", m["metadata"]["name"])): m
            for m in of_kind(r, eso.KIND)}


def uses(template: str) -> set[str]:
    """The values (spec.data secretKeys) a template reads: `.name` inside its actions."""
    return {name for action in re.findall(r"\{\{(.*?)\}\}", template)
            for name in re.findall(r"(?<![\w\"])\.([A-Za-z_]\w*)", action)}


def esr() -> offline.Render:
    return render("prod", ESO)


# ---- no value in Pulumi state ------------------------------------------------------

def test_no_credential_value_enters_the_program() -> None:
    base, r = render("prod"), esr()
    # Without the setting the program holds values: generated passwords and secret Secrets.
    assert base.of_type(RANDOM_PASSWORD) and base.secret_values and of_kind(base, "Secret")
    assert not r.of_type(RANDOM_PASSWORD)
    assert not of_kind(r, "Secret")
    assert r.secret_values == set()
    text = json.dumps([x.inputs for x in r.resources]) + json.dumps(r.outputs)
    assert offline.SECRET not in text


def test_the_credentials_output_says_where_each_value_lives() -> None:
    base, r = render("prod"), esr()
    assert base.outputs["credentials"] == offline.SECRET
    located = r.outputs["credentials"]
    catalog = default_catalog()
    by_name = {eso.secret_key(c.id): c.config_key for c in catalog.credentials.values()}
    needed = {by_name[d["secretKey"]] for m in of_kind(r, eso.KIND) for d in m["spec"]["data"]}
    assert set(located) == needed
    for key, where in located.items():
        assert where["store"] == f"ClusterSecretStore/{STORE}"
        assert where["key"] == f"optiinfra/prod/{key}" and where["version"] == 1


def test_a_remote_key_and_property_can_be_set_per_credential() -> None:
    r = render("prod", ESO, "kubernetes.externalSecrets.credentials.redisPassword.key=teams/cache",
               "kubernetes.externalSecrets.credentials.redisPassword.property=password")
    refs = [d["remoteRef"] for m in of_kind(r, eso.KIND) for d in m["spec"]["data"] if d["secretKey"] == "redis"]
    assert refs and all(ref == {"key": "teams/cache", "property": "password"} for ref in refs)
    assert r.outputs["credentials"]["redisPassword"]["key"] == "teams/cache"
    others = [d["remoteRef"]["key"] for m in of_kind(r, eso.KIND) for d in m["spec"]["data"]
              if d["secretKey"] != "redis"]
    assert others and all(k.startswith("optiinfra/prod/") for k in others)


# ---- the same Secrets for the workloads ---------------------------------------------

def test_external_secrets_write_exactly_what_the_workloads_read() -> None:
    base, r = render("prod"), esr()
    wanted, written = read_keys(r), external_secrets(r)
    assert wanted and set(written) == set(wanted)
    for where, m in written.items():
        assert set(m["spec"]["target"]["template"]["data"]) == wanted[where], where
        # ... which is the Secret the program writes without the setting, key for key.
        secret = next(s for s in of_kind(base, "Secret")
                      if (s["metadata"]["namespace"], s["metadata"]["name"]) == where)
        assert set(secret["metadata"]["annotations"][K8S_SECRET_KEYS].split(",")) == wanted[where]
        # Every credential a template uses is fetched, and nothing else.
        used = set().union(*(uses(t) for t in m["spec"]["target"]["template"]["data"].values()))
        assert {d["secretKey"] for d in m["spec"]["data"]} == used
        assert m["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": STORE}


def test_workloads_do_not_change_apart_from_the_rollout_annotation() -> None:
    def strip(m: dict[str, Any]) -> dict[str, Any]:
        m = copy.deepcopy(m)
        template = m["spec"]["jobTemplate"]["spec"]["template"] if m["kind"] == "CronJob" else m["spec"]["template"]
        (template["metadata"].get("annotations") or {}).pop(K8S_CREDENTIALS_ROLLOUT, None)
        return m

    base = {ident(m): strip(m) for m in of_kind(render("prod"), *WORKLOAD_KINDS)}
    mine = {ident(m): strip(m) for m in of_kind(esr(), *WORKLOAD_KINDS)}
    assert base == mine


# ---- templates: the Pulumi side's values, from the operator's engine -----------------

@cache
def gotemplate() -> Path | str:
    go = shutil.which("go")
    if go is None:
        return "go is not on PATH (it builds tests/gotemplate, the operator's template engine)"
    # Built per test process (Go's build cache makes it quick) into a directory removed at exit.
    out = Path(tempfile.mkdtemp(prefix="optiinfra-gotemplate-"))
    atexit.register(shutil.rmtree, out, True)
    binary = out / "gotemplate"
    done = subprocess.run([go, "build", "-o", str(binary), "."], cwd=GOTEMPLATE, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        return f"building tests/gotemplate failed: {done.stderr.strip()[-300:]}"
    return binary


def run_templates(templates: dict[str, str], data: dict[str, str]) -> dict[str, str]:
    binary = gotemplate()
    if isinstance(binary, str):
        unavailable(binary)
    done = subprocess.run([str(binary)], input=json.dumps({"templates": templates, "data": data}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def tricky(cid: str) -> str:
    """A password URLs must encode: space, +, @, /, :, %, a non-ASCII letter, braces."""
    return f"{cid} p@ss/w+rd:%é{{{{x}}}}"


def test_templates_give_the_values_the_pulumi_side_registers() -> None:
    catalog = default_catalog()
    passwords = {eso.secret_key(c.id): tricky(c.id) for c in catalog.credentials.values()}
    # prod's receivers (webhook, heartbeat) take URLs: a tricky path, on a name, https.
    on = set(receiver_urls("prod", "eso"))
    keys = set(store_keys("prod", "eso"))  # prod's backup store's key: any text
    for c in catalog.credentials.values():
        if c.config_key in on:
            passwords[eso.secret_key(c.id)] = f"https://hooks.example.com/{quote(tricky(c.id))}"
    base = render("prod", secrets=tuple(f"{c.config_key}={passwords[eso.secret_key(c.id)]}"
                                        for c in catalog.credentials.values()
                                        if c.generated or c.user_set or c.config_key in on | keys))
    urls = 0
    for m in of_kind(esr(), eso.KIND):
        templates = m["spec"]["target"]["template"]["data"]
        out = run_templates(templates, {d["secretKey"]: passwords[d["secretKey"]] for d in m["spec"]["data"]})
        for key, value in out.items():
            assert value in base.secret_values, f"{m['metadata']['namespace']} {key}: not what Pulumi writes"
            if "://" in value and not value.startswith("https://hooks."):  # a client's URL reads its
                # password back intact (a receiver's URL is the value itself, checked above)
                urls += 1
                (name,) = uses(templates[key])
                assert unquote(urlsplit(value).password or "") == passwords[name]
    assert urls >= 3  # the databases' URLs (postgres, clickhouse, redis) at least


def test_a_template_with_a_missing_credential_fails_in_the_engine() -> None:
    # The engine refuses what it cannot fill (missingkey=error), so a key never comes out empty.
    m = of_kind(esr(), eso.KIND)[0]
    data = {d["secretKey"]: tricky(d["secretKey"]) for d in m["spec"]["data"][1:]}
    binary = gotemplate()
    if isinstance(binary, str):
        unavailable(binary)
    done = subprocess.run([str(binary)], input=json.dumps({"templates": m["spec"]["target"]["template"]["data"],
                                                           "data": data}), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "gotemplate:" in done.stderr


# ---- rotation ---------------------------------------------------------------------------

def test_a_version_bump_rolls_exactly_the_consumers_of_that_credential() -> None:
    before = esr()
    after = render("prod", ESO, "kubernetes.externalSecrets.credentials.postgresPassword.version=2")

    def notes(r: offline.Render) -> dict[tuple[str, str, str], str]:
        return {ident(m): m["spec"]["template"]["metadata"].get("annotations", {}).get(K8S_CREDENTIALS_ROLLOUT, "")
                for m in of_kind(r, "Deployment", "StatefulSet")}

    a, b = notes(before), notes(after)
    rolled = {w for w in a if a[w] != b[w]}
    # The consumers, read from the render: workloads reading a key whose template uses postgres.
    written = external_secrets(before)
    consumers = set()
    for m in of_kind(before, "Deployment", "StatefulSet"):
        ns = m["metadata"]["namespace"]
        for name, key in reads(m):
            if "postgres" in uses(written[(ns, name)]["spec"]["target"]["template"]["data"][key]):
                consumers.add(ident(m))
    assert consumers and rolled == consumers and len(rolled) < len(a)
    # The ExternalSecrets that fetch it change too (the operator re-reads the store at once).
    changed = {w for w, m in external_secrets(after).items() if m["spec"] != written[w]["spec"]}
    assert changed == {w for w, m in written.items() if "postgres" in {d["secretKey"] for d in m["spec"]["data"]}}


# ---- settings ---------------------------------------------------------------------------

BAD = [
    ("prod", [f"{ESO}", "kubernetes.externalSecrets.credentials.postgresPasword.version=2"],
     "optiinfra:kubernetes.externalSecrets.credentials.postgresPasword", "did you mean 'postgresPassword'"),
    ("prod", ["kubernetes.externalSecrets.store=Vault_Backend"], "optiinfra:kubernetes.externalSecrets.store",
     "not a ClusterSecretStore name"),
    ("prod", [ESO, "kubernetes.externalSecrets.refreshInterval=1 hour"],
     "optiinfra:kubernetes.externalSecrets.refreshInterval", "not a duration"),
    ("prod", [ESO, "kubernetes.externalSecrets.refreshInterval=0s"],
     "optiinfra:kubernetes.externalSecrets.refreshInterval", "not a duration"),
    ("prod", ["kubernetes.externalSecrets.refreshInterval=15m"], "optiinfra:kubernetes.externalSecrets.store",
     "is required"),
    ("prod", [ESO, "kubernetes.externalSecrets.credentials.redisPassword.key=has space"],
     "optiinfra:kubernetes.externalSecrets.credentials.redisPassword.key", "not a remote key"),
    ("prod", [ESO, "kubernetes.externalSecrets.credentials.redisPassword.version=0"],
     "optiinfra:kubernetes.externalSecrets.credentials.redisPassword.version", "greater than or equal to 1"),
    ("dev", [ESO], "optiinfra:kubernetes.externalSecrets", "does not apply on Docker"),
]


@pytest.mark.parametrize(("stack", "sets", "key", "problem"), BAD, ids=[" ".join(b[1]) for b in BAD])
def test_bad_settings_are_refused_with_the_key_and_the_fix(stack: str, sets: list[str], key: str,
                                                           problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        offline.render(stack, sets)
    assert f"config key '{key}'" in str(err.value) and problem in str(err.value) and "Fix:" in str(err.value)


def test_a_stack_secret_is_refused_when_the_store_provides_the_credentials() -> None:
    with pytest.raises(ConfigError) as err:
        offline.render("prod", [ESO], ["postgresPassword=supplied-0123456789"])
    assert "'optiinfra:postgresPassword'" in str(err.value) and "pulumi config rm postgresPassword" in str(err.value)


def test_refusals_are_one_line_through_the_cli_and_the_program() -> None:
    proc = subprocess.run([sys.executable, "-m", "infra", "plan", "--stack", "dev", "--set", ESO], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: config key 'optiinfra:kubernetes.externalSecrets': does not apply on Docker")
    # The program as the engine runs it reads the same config through pulumi.Config.
    import pulumi

    config = infra_stack.read("dev", [ESO])
    pulumi.runtime.set_all_config(dict(config.values), sorted(config.secret_keys))
    with pytest.raises(ConfigError, match="does not apply on Docker"):
        program.load(config.values.keys())


# ---- the policy pack ------------------------------------------------------------------

def mutated(r: offline.Render, edit: Any) -> offline.Render:
    """The render with the first ExternalSecret of the core tier edited."""
    resources = []
    done = False
    for res in r.resources:
        if not done and res.type.endswith(":ExternalSecret") and res.inputs["metadata"]["namespace"].endswith("core"):
            res = dataclasses.replace(res, inputs=copy.deepcopy(res.inputs))
            edit(res.inputs)
            done = True
        resources.append(res)
    assert done
    return dataclasses.replace(r, resources=resources)


def violations(r: offline.Render) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in check_cmd.check("prod", rendered=r).findings:
        out.setdefault(f.violation.policy, []).append(f.violation.message)
    return out


def test_the_policy_pack_passes_the_operator_sourced_stack() -> None:
    result = check_cmd.check("prod", [ESO])
    assert not result.failed and result.findings == []
    assert any(res.type.endswith(":ExternalSecret") for res in result.resources)


def _retarget(inputs: dict[str, Any]) -> None:
    inputs["spec"]["target"]["name"] = "credentials-v2"


def _drop_key(inputs: dict[str, Any]) -> None:
    data = inputs["spec"]["target"]["template"]["data"]
    data.pop(sorted(data)[0])


def _literal(inputs: dict[str, Any]) -> None:
    data = inputs["spec"]["target"]["template"]["data"]
    data[sorted(data)[0]] = "a-literal-password-0123"


def _plain_url(inputs: dict[str, Any]) -> None:
    data = inputs["spec"]["target"]["template"]["data"]
    key = next(k for k, t in data.items() if "://" in t)
    data[key] = re.sub(r"\{\{.*?\}\}", "hunter2-plaintext", data[key])


@pytest.mark.parametrize(("edit", "policy", "words"), [
    (_retarget, "secret-references", "nothing in the stack writes"),
    (_drop_key, "secret-references", "but the ExternalSecret core-credentials writes only"),
    (_literal, "no-plaintext-credentials", "is a literal"),
    (_plain_url, "no-plaintext-credentials", "URL with a password in plaintext"),
], ids=["other-target-name", "missing-key", "literal", "plaintext-url"])
def test_the_policy_pack_catches_a_wrong_external_secret(edit: Any, policy: str, words: str) -> None:
    found = violations(mutated(esr(), edit))
    assert policy in found and any(words in msg for msg in found[policy]), found


# ---- the operator's CRD schema -------------------------------------------------------------

@cache
def crd_dir() -> Path | str:
    done = subprocess.run([str(ROOT / "scripts" / "crds.sh"), "external-secrets"], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["scripts/crds.sh failed"])[-1]
    return Path(done.stdout.strip())


def crd(kind_file: str) -> dict[str, Any]:
    d = crd_dir()
    if isinstance(d, str):
        unavailable(f"the External Secrets Operator CRDs: {d}")
    return dict(yaml.safe_load((d / kind_file).read_text()))


def strict(schema: Any) -> Any:
    """The schema as the API server applies it with strict field validation (kubectl's
    default): a field the schema does not declare is an error, unless it preserves unknown
    fields or has additionalProperties of its own. `metadata` is the API server's."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and \
                not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def validator() -> jsonschema.Draft4Validator:
    doc = crd("external-secrets.io_externalsecrets.yaml")
    group, version = eso.API_VERSION.split("/")
    assert doc["spec"]["group"] == group and doc["spec"]["names"]["kind"] == eso.KIND
    served = {v["name"]: v for v in doc["spec"]["versions"] if v.get("served")}
    assert version in served, f"the pinned operator does not serve {eso.API_VERSION} (it serves {sorted(served)})"
    schema = strict(served[version]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft4Validator(schema)


def problems(m: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(m)]


def test_rendered_external_secrets_validate_against_the_operators_crd() -> None:
    docs = of_kind(esr(), eso.KIND)
    assert len(docs) >= 4  # every tier with credentials
    for m in docs:
        assert m["apiVersion"] == eso.API_VERSION
        assert problems(m) == [], m["metadata"]


@pytest.mark.parametrize(("path", "value", "words"), [
    (("spec", "secretStoreRef", "kind"), "Vault", "is not one of"),
    (("spec", "target", "templat"), {}, "Additional properties"),
    (("spec", "refreshInterval"), 3600, "is not of type 'string'"),
    (("spec", "target", "template", "engineVersion"), "v1", "is not one of"),
], ids=["store-kind", "unknown-field", "interval-type", "engine-v1"])
def test_the_crd_schema_refuses_a_wrong_field(path: tuple[str, ...], value: Any, words: str) -> None:
    m = copy.deepcopy(of_kind(esr(), eso.KIND)[0])
    node = m
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    found = problems(m)
    assert any(words in p for p in found), found


def test_a_secret_key_the_operator_refuses_is_caught() -> None:
    m = copy.deepcopy(of_kind(esr(), eso.KIND)[0])
    m["spec"]["data"][0]["secretKey"] = "not a key!"
    assert any("does not match" in p for p in problems(m))
