"""Credentials: never in plaintext, never a default, delivered as files, and every Secret a pod reads
is one the stack writes."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .. import vocabulary as v
from ..core import Resource, Rule, as_dict, as_list, get_in, is_secret, is_unknown
from ..standards import KNOWN_DEFAULT_CREDENTIALS
from .common import (
    CONFIGMAP,
    CONTAINER,
    DOCKER,
    EXTERNAL_SECRET,
    K8S_SECRET,
    WORKLOADS,
    annotation,
    docker_envs,
    docker_service,
    k8s_service,
    pod_containers,
    pod_spec,
)


def _secret_ok(res: Resource, value: Any) -> bool:
    """Offline: marked secret (or not known yet). Under the engine secrets arrive unwrapped,
    so only an unknown value is known to be fine; callers skip what they cannot judge."""
    return is_unknown(value) or (res.secrets_marked and is_secret(value))


URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:(?P<password>[^/\s@]*)@", re.IGNORECASE)


def _plaintext_url_password(value: str) -> str | None:
    """The password inside a URL of a plain (non-secret) string, if any."""
    m = URL_PASSWORD.search(value)
    return m.group("password") if m else None



CREDENTIAL_NAME = r"(?i)(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|(^|_)KEY$|CREDENTIAL|AUTH$)"
USER_NAME = r"(?i)(^|_)(USER|USERNAME|LOGIN)$"


# ---- no plaintext credential ------------------------------------------------------------------

def _credential_name(cfg: Mapping[str, Any], name: str) -> bool:
    return bool(name) and re.search(str(cfg["namePattern"]), name) is not None


def secret_mounts(spec: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    """Mount paths of the container's read-only volumes that come from a Secret."""
    secret_volumes = {str(as_dict(vol).get("name")) for vol in as_list(spec.get("volumes"))
                      if as_dict(vol).get("secret") is not None}
    return [str(m["mountPath"]) for m in map(as_dict, as_list(container.get("volumeMounts")))
            if m.get("name") in secret_volumes and m.get("readOnly") is True and m.get("mountPath")]


def _secret_file(spec: Mapping[str, Any], container: Mapping[str, Any], value: Any) -> bool:
    """Whether `value` is the path of a file inside one of the container's Secret mounts."""
    if not isinstance(value, str) or not value.startswith("/"):
        return False
    return any(value.startswith(path.rstrip("/") + "/") for path in secret_mounts(spec, container))


def _docker_mounted_file(props: Mapping[str, Any], value: Any) -> bool:
    """Whether `value` is the path of a file inside one of a container's read-only named volumes."""
    if not isinstance(value, str) or not value.startswith("/"):
        return False
    return any(value.startswith(str(m["containerPath"]).rstrip("/") + "/")
               for m in map(as_dict, as_list(props.get("volumes")))
               if m.get("volumeName") and m.get("readOnly") is True and m.get("containerPath"))


def check_plaintext(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    """Structural where the resource shows it (Kubernetes: a credential comes through
    secretKeyRef; no URL with a password in a pod spec, a command line or a ConfigMap);
    by the secret mark where only the mark tells (a Docker env value, a Secret's data):
    offline only, as the engine hands the pack secrets unwrapped (package docstring)."""
    if res.type == CONTAINER:
        service = docker_service(res)
        for name, value, entry in docker_envs(res.props) if res.secrets_marked else ():
            if _secret_ok(res, entry):
                continue
            if _credential_name(cfg, name) and _docker_mounted_file(res.props, value):
                continue  # names a file the container reads from a read-only volume (`*_FILE`)
            if _credential_name(cfg, name):
                yield (f"{service}: environment variable {name} looks like a credential but is not a secret. Fix: "
                       "deliver it as a secret Output (a catalog Secret/Url value, set with "
                       "`pulumi config set --secret`).")
            elif _plaintext_url_password(value) is not None:
                yield (f"{service}: environment variable {name} holds a URL with a password in plaintext. Fix: "
                       "build it from the catalog (infra/wiring.py makes such URLs secret).")
        args = [("command", a) for a in as_list(res.props.get("command"))]
        args += [("entrypoints", a) for a in as_list(res.props.get("entrypoints"))]
        args += [("healthcheck", a) for a in as_list(get_in(res.props, "healthcheck", "tests"))]
        for where, arg in args:
            # A process's arguments are readable by anyone on the host, secret Output or not.
            if isinstance(arg, str) and not is_unknown(arg) and _plaintext_url_password(arg) is not None:
                yield (f"{service}: the {where} carries a URL with a password in plaintext (and in the process "
                       "list). Fix: pass it through a secret environment variable.")
        return
    if res.type in WORKLOADS:
        service, spec = k8s_service(res), pod_spec(res) or {}
        for cname, c in pod_containers(spec):
            for env in as_list(c.get("env")):
                name, literal = str(as_dict(env).get("name", "")), as_dict(env).get("value")
                if literal is None or is_unknown(literal):
                    continue  # valueFrom (secretKeyRef, configMapKeyRef, fieldRef)
                if _credential_name(cfg, name) and _secret_file(spec, c, literal):
                    continue  # names a file the container reads from a mounted Secret (`*_FILE`)
                if _credential_name(cfg, name):
                    # A literal is stored in the pod spec as it is, whatever the program marked it.
                    if cfg.get("kubernetesRequireSecretRef") or (res.secrets_marked and not is_secret(literal)):
                        yield (f"{service}: container {cname} sets {name} as a literal value; the pod spec stores "
                               "it in plaintext. Fix: put it in a Secret and use valueFrom.secretKeyRef.")
                elif isinstance(literal, str) and _plaintext_url_password(literal) is not None:
                    yield (f"{service}: container {cname} sets {name} to a URL with a password in plaintext. Fix: "
                           "put it in a Secret and use valueFrom.secretKeyRef.")
        return
    if res.type == K8S_SECRET:
        if not res.secrets_marked:
            return  # the engine unwraps the marks (pulumi-kubernetes keeps a Secret's data secret itself)
        for key in ("data", "stringData"):
            data = res.props.get(key)
            if data is None or _secret_ok(res, data):
                continue
            plain = sorted(k for k, val in as_dict(data).items() if not _secret_ok(res, val))
            if plain:
                yield (f"Secret {res.name}: {key} {', '.join(plain)} is not marked secret in the program, so Pulumi "
                       "keeps it in plaintext in the state and the plan. Fix: pass pulumi.Output.secret(...).")
        return
    if res.type == EXTERNAL_SECRET:
        yield from _external_secret_plaintext(res)
        return
    if res.type == CONFIGMAP:
        # A ConfigMap is plaintext in the cluster: no credential belongs there, marked or not.
        for key, value in as_dict(res.props.get("data")).items():
            if is_unknown(value):
                continue
            if _credential_name(cfg, key) or (isinstance(value, str) and _plaintext_url_password(value)):
                yield f"ConfigMap {res.name}: {key} holds a credential in plaintext. Fix: move it into a Secret."


def _external_secret_plaintext(res: Resource) -> Iterator[str]:
    """An ExternalSecret's spec is plain in Pulumi state and in the cluster: every key of the
    Secret it writes is a credential, so each template entry must take its value from the
    store (a `{{ ... }}` action), and no literal text of it may be a URL's password."""
    template = as_dict(get_in(res.props, "spec", "target", "template"))
    entries = [(f"template.data.{k}", val) for k, val in as_dict(template.get("data")).items()]
    entries += [(f"templateFrom[{i}].literal", get_in(t, "literal"))
                for i, t in enumerate(as_list(template.get("templateFrom")))]
    for where, value in entries:
        if not isinstance(value, str) or is_unknown(value):
            continue
        if _plaintext_url_password(value) is not None:
            yield (f"ExternalSecret {res.name}: {where} carries a URL with a password in plaintext. Fix: put the "
                   "password in the store and template it in ('{{ index . \"<secretKey>\" | urlquery }}').")
        elif "{{" not in value and where.startswith("template.data."):
            yield (f"ExternalSecret {res.name}: {where} is a literal, so the credential it holds is stored in "
                   "plaintext (Pulumi state, the cluster). Fix: take it from the store with spec.data and "
                   "'{{ index . \"<secretKey>\" }}' (infra/external_secrets.py builds these).")


NO_PLAINTEXT_CREDENTIALS = Rule(
    name="no-plaintext-credentials",
    description=("An environment value whose name looks like a password, token, key or secret is a secret "
                 "(on Kubernetes: a secretKeyRef); no URL carries a password in plaintext; an ExternalSecret "
                 "takes every value from its store."),
    severity="critical",
    config={
        "namePattern": {"type": "string", "default": CREDENTIAL_NAME,
                        "description": "Regular expression for names of credential-bearing variables."},
        "kubernetesRequireSecretRef": {"type": "boolean", "default": True,
                                       "description": "On Kubernetes a credential comes from a Secret "
                                                      "(valueFrom.secretKeyRef), never a literal env value."},
    },
    remediation="Deliver the value as a secret Output / Kubernetes Secret.",
    check=check_plaintext,
    types=DOCKER | WORKLOADS | frozenset({K8S_SECRET, EXTERNAL_SECRET, CONFIGMAP}),
    tags=("credentials",),
)


# ---- no known default credential ----------------------------------------------------------------

def _defaults(cfg: Mapping[str, Any]) -> set[str]:
    return {d.lower() for d in KNOWN_DEFAULT_CREDENTIALS} | {str(d).lower() for d in as_list(cfg.get("extraDefaults"))}


def _default_problem(cfg: Mapping[str, Any], name: str, value: Any) -> str | None:
    """Judged on the value wherever it is visible: secret or not under the engine (which
    unwraps secrets); offline a secret shows only its mark (the settings refuse a supplied
    default before anything renders). Messages never carry a value that is not a default."""
    if not isinstance(value, str) or is_unknown(value) or is_secret(value):
        return None
    if _credential_name(cfg, name) and value.strip().lower() in _defaults(cfg):
        return f"{name} is a well-known default credential" + (" (empty)" if not value.strip() else "")
    if re.search(str(cfg["userPattern"]), name) and value.strip().lower() in {
            str(u).lower() for u in as_list(cfg.get("defaultUsers"))}:
        return f"{name} is a well-known default account name ('{value}')"
    password = _plaintext_url_password(value)
    if password is not None and password.lower() in _defaults(cfg):
        return f"{name} embeds a well-known default password in its URL"
    return None


def check_default_credentials(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    fix = ("Fix: leave the credential to the stack (generated, or `pulumi config set --secret <key> <strong "
           "value>`), and use a non-default account name.")
    if res.type == CONTAINER:
        service = docker_service(res)
        for name, value, _ in docker_envs(res.props):
            problem = _default_problem(cfg, name, value)
            if problem:
                yield f"{service}: {problem}. {fix}"
        return
    if res.type in WORKLOADS:
        service = k8s_service(res)
        for cname, c in pod_containers(pod_spec(res) or {}):
            for env in as_list(c.get("env")):
                problem = _default_problem(cfg, str(as_dict(env).get("name", "")), as_dict(env).get("value"))
                if problem:
                    yield f"{service}: container {cname}: {problem}. {fix}"
        return
    if res.type == K8S_SECRET:
        for key in ("data", "stringData"):
            for name, value in as_dict(res.props.get(key)).items():
                # A Secret's keys are credentials by construction; base64 `data` is decoded by nobody here.
                if key == "stringData" and isinstance(value, str) and not is_unknown(value) and \
                        not is_secret(value) and value.strip().lower() in _defaults(cfg):
                    yield f"Secret {res.name}: {name} is a well-known default credential. {fix}"


NO_DEFAULT_CREDENTIALS = Rule(
    name="no-default-credentials",
    description=("No credential is a well-known default (admin, password, postgres, changeme, empty, ...), "
                 "and no admin account keeps its default name."),
    severity="critical",
    config={
        "namePattern": {"type": "string", "default": CREDENTIAL_NAME,
                        "description": "Regular expression for names of credential-bearing variables."},
        "extraDefaults": {"type": "array", "items": {"type": "string"}, "default": [],
                          "description": "Values refused on top of the known defaults "
                                         "(optiinfra_policies/known_defaults.json)."},
        "userPattern": {"type": "string", "default": USER_NAME,
                        "description": "Regular expression for names of account-name variables."},
        "defaultUsers": {"type": "array", "items": {"type": "string"}, "default": ["admin", "root"],
                         "description": "Account names refused (the seed's Grafana admin/admin)."},
    },
    remediation="Let the stack generate the credential, or set a strong one as a stack secret.",
    check=check_default_credentials,
    types=DOCKER | WORKLOADS | frozenset({K8S_SECRET}),
    tags=("credentials",),
)


# ---- secrets as files where the image reads them ------------------------------------------------------

def check_secret_files(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    """A Kubernetes container takes a Secret through an environment variable only where the
    catalog writes why its image reads no file (stamp `optiinfra.io/secret-env`): anything in
    the environment leaks into `kubectl describe`, crash dumps and child processes."""
    if res.type not in WORKLOADS:
        return
    if str(annotation(res, v.K8S_SECRET_ENV) or "").strip():
        return
    service = k8s_service(res)
    for cname, c in pod_containers(pod_spec(res) or {}):
        names = sorted(str(as_dict(env).get("name")) for env in as_list(c.get("env"))
                       if get_in(env, "valueFrom", "secretKeyRef") is not None)
        if names:
            yield (f"{service}: container {cname} takes {', '.join(names)} from a Secret as environment "
                   f"variables. Fix: mount the Secret read-only and point the image's *_FILE option at it "
                   f"(catalog SecretFile), or write why the image reads no file (Service.secret_env_reason, "
                   f"stamped as {v.K8S_SECRET_ENV}).")


SECRETS_AS_FILES = Rule(
    name="secrets-as-files",
    description=("On Kubernetes a credential reaches a container as a file from a mounted Secret; an "
                 "environment variable only where the catalog writes why the image reads no file."),
    severity="medium",
    config={},
    remediation="Declare a SecretFile for the credential in infra/catalog.py, or the image's reason "
                "(secret_env_reason).",
    check=check_secret_files,
    types=WORKLOADS,
    tags=("credentials",),
)


# ---- every Secret a workload reads is one the stack writes ------------------------------------------

def _secret_keys(res: Resource) -> set[str] | None:
    """The keys of the Secret a Secret or an ExternalSecret makes (None: cannot tell)."""
    if res.type == K8S_SECRET:
        keys = {k for k in str(annotation(res, v.K8S_SECRET_KEYS) or "").split(",") if k}
        for field in ("data", "stringData"):
            keys |= set(as_dict(res.props.get(field)))
        return keys or None
    template = as_dict(get_in(res.props, "spec", "target", "template"))
    if template.get("templateFrom"):
        return None  # keys rendered from another object
    data = {str(get_in(d, "secretKey")) for d in as_list(get_in(res.props, "spec", "data"))}
    if template.get("data") is None:
        return data
    templated = set(as_dict(template.get("data")))
    return templated | data if template.get("mergePolicy") == "Merge" else templated


def _written_secrets(resources: Sequence[Resource]) -> dict[tuple[str, str], tuple[Resource, set[str] | None]]:
    """(namespace, Secret name) -> what writes it: a Secret, or an ExternalSecret's target."""
    out: dict[tuple[str, str], tuple[Resource, set[str] | None]] = {}
    for r in resources:
        ns, name = str(get_in(r.props, "metadata", "namespace") or ""), get_in(r.props, "metadata", "name")
        if r.type == EXTERNAL_SECRET:
            name = get_in(r.props, "spec", "target", "name") or name
        elif r.type != K8S_SECRET:
            continue
        if isinstance(name, str) and not is_unknown(name):
            out[(ns, name)] = (r, _secret_keys(r))
    return out


def _secret_reads(spec: Mapping[str, Any]) -> Iterator[tuple[str, str | None, str]]:
    """(Secret name, key or None for the whole Secret, where) of everything a pod reads from a
    Secret that it does not mark optional."""
    for cname, c in pod_containers(spec):
        for env in as_list(c.get("env")):
            ref = as_dict(get_in(env, "valueFrom", "secretKeyRef"))
            if ref and not ref.get("optional"):
                yield str(ref.get("name")), str(ref.get("key")), f"container {cname} env {as_dict(env).get('name')}"
        for src in as_list(c.get("envFrom")):
            ref = as_dict(get_in(src, "secretRef"))
            if ref and not ref.get("optional"):
                yield str(ref.get("name")), None, f"container {cname} envFrom"
    for vol in as_list(spec.get("volumes")):
        sec = as_dict(get_in(vol, "secret"))
        if not sec or sec.get("optional"):
            continue
        items = [as_dict(i).get("key") for i in as_list(sec.get("items"))]
        for key in items or [None]:
            yield str(sec.get("secretName")), None if key is None else str(key), f"volume {as_dict(vol).get('name')}"


def check_secret_references(resources: Sequence[Resource], cfg: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Whichever source writes a Secret (the program's Secret, or the External Secrets
    Operator from an ExternalSecret's target), a pod that reads it finds it, with the key."""
    written = _written_secrets(resources)
    for res in resources:
        if res.type not in WORKLOADS:
            continue
        ns = str(get_in(res.props, "metadata", "namespace") or "")
        for name, key, where in _secret_reads(pod_spec(res) or {}):
            if is_unknown(name) or (key is not None and is_unknown(key)):
                continue
            source = written.get((ns, name))
            if source is None:
                others = sorted(n for (n_ns, n) in written if n_ns == ns)
                yield res.urn, (f"{res.name}: {where} reads Secret {name}, which nothing in the stack writes in "
                                f"namespace {ns} (written there: {', '.join(others) or 'none'}). Fix: read the tier's "
                                "credentials Secret, or make the ExternalSecret's spec.target.name that name.")
                continue
            writer, keys = source
            if key is not None and keys is not None and key not in keys:
                kind = "ExternalSecret" if writer.type == EXTERNAL_SECRET else "Secret"
                yield res.urn, (f"{res.name}: {where} reads key {key} of Secret {name}, but the {kind} "
                                f"{writer.name} writes only {', '.join(sorted(keys)) or 'no keys'}. Fix: render "
                                "both from the catalog (the backend writes every key its workloads read).")


SECRET_REFERENCES = Rule(
    name="secret-references",
    description=("Every Secret key a Kubernetes pod reads (env secretKeyRef, envFrom, a secret volume) is "
                 "written by the stack: a Secret, or the target of an ExternalSecret (External Secrets "
                 "Operator) that writes that key."),
    severity="high",
    config={},
    remediation="Read the tier's credentials Secret; keep an ExternalSecret's spec.target.name and template "
                "keys as the backend renders them.",
    check_stack=check_secret_references,
    tags=("credentials",),
)


RULES: tuple[Rule, ...] = (NO_PLAINTEXT_CREDENTIALS, NO_DEFAULT_CREDENTIALS, SECRETS_AS_FILES, SECRET_REFERENCES)
