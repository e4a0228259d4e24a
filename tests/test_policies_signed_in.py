"""The pack's `public-ui-signed-in` (exposure family) and the settings' refusals before it: every
public UI on Kubernetes has a sign-in in front of it, every Ingress TLS, and no workload turns
anonymous access on. Each mutation of the prod render that the settings cannot produce makes
the rule fail, naming the Ingress (or workload) and the fix."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from infra import stack as infra_stack
from infra.settings import ConfigError
from policies.optiinfra_policies import rules

from .policy_tools import changed, prod_resources, violations
from .tools import ROOT

POLICY = "public-ui-signed-in"
INGRESS, SERVICE = rules.INGRESS, rules.K8S_SERVICE


def _proxied() -> tuple[str, str]:
    """(UI whose Ingress routes to the proxy, the proxy), from the model."""
    model = infra_stack.model_of("prod")
    ui = next(e for e in model.services.values() if e.via)
    assert ui.via is not None
    return ui.name, ui.via


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_the_committed_kubernetes_stacks_pass(stack: str) -> None:
    from infra.commands import check as check_cmd

    from .conftest import render
    assert violations(POLICY, check_cmd.resources_of(render(stack))) == []


def test_proxy_taken_out_of_the_path_fails_naming_the_ingress() -> None:
    ui, _ = _proxied()
    port = infra_stack.model_of("prod").services[ui].service.port("web").container

    def direct(props: dict[str, Any]) -> None:
        path = props["spec"]["rules"][0]["http"]["paths"][0]
        path["backend"]["service"] = {"name": ui, "port": {"number": port}}
        props["metadata"]["labels"]["app.kubernetes.io/name"] = ui

    found = violations(POLICY, changed(prod_resources(), INGRESS, ui, direct))
    assert len(found) == 1
    assert f"Ingress {ui} routes to the UI {ui} with no sign-in in front of it" in found[0][1]
    assert "optiinfra:sso" in found[0][1]


def test_external_auth_removed_from_a_ui_ingress_fails() -> None:
    model = infra_stack.model_of("prod")
    guarded = next(e.name for e in model.services.values() if e.auth)

    def no_auth(props: dict[str, Any]) -> None:
        props["metadata"]["annotations"] = {k: v for k, v in props["metadata"]["annotations"].items()
                                            if not k.startswith("nginx.ingress.kubernetes.io/auth-")}

    found = violations(POLICY, changed(prod_resources(), INGRESS, guarded, no_auth))
    assert [m for _, m in found if f"Ingress {guarded} routes to the UI {guarded}" in m]


def test_tls_removed_fails() -> None:
    ui, _ = _proxied()

    def plain(props: dict[str, Any]) -> None:
        props["spec"].pop("tls")

    found = violations(POLICY, changed(prod_resources(), INGRESS, ui, plain))
    assert len(found) == 1
    assert f"Ingress {ui} serves" in found[0][1] and "over plain HTTP (no TLS)" in found[0][1]
    assert "tlsSecretName" in found[0][1] and "certManagerIssuer" in found[0][1]


def test_anonymous_access_on_fails() -> None:
    ui, _ = _proxied()

    def anonymous(props: dict[str, Any]) -> None:
        env = props["spec"]["template"]["spec"]["containers"][0]["env"]
        for e in env:
            if e["name"] == "GF_AUTH_ANONYMOUS_ENABLED":
                e["value"] = "true"

    found = violations(POLICY, changed(prod_resources(), rules.STATEFULSET, ui, anonymous))
    assert len(found) == 1
    assert "GF_AUTH_ANONYMOUS_ENABLED=true" in found[0][1]


# ---- the settings refuse the same, before anything renders ---------------------------------------

def _without(key: str, **changes: str) -> dict[str, str]:
    values = dict(infra_stack.read("prod").values)
    values.pop(key, None)
    values.update(changes)
    return values


def test_a_public_ui_without_sso_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        infra_stack.load_stack(_without("optiinfra:sso"))
    assert err.value.key == "optiinfra:sso"
    assert "would answer anyone" in err.value.problem


def test_a_public_ingress_without_tls_is_refused() -> None:
    values = _without("optiinfra:kubernetes")
    values["optiinfra:kubernetes"] = infra_stack.read("prod").values["optiinfra:kubernetes"].replace(
        '"tlsSecretName": "optiinfra-tls"', '"className": "nginx"')
    with pytest.raises(ConfigError) as err:
        infra_stack.load_stack(values)
    assert err.value.key == "optiinfra:kubernetes.ingress.tlsSecretName"
    assert "plain HTTP" in err.value.problem and "certManagerIssuer" in err.value.fix


def test_cert_manager_gives_tls_without_a_named_secret() -> None:
    values = _without("optiinfra:kubernetes")
    values["optiinfra:kubernetes"] = infra_stack.read("prod").values["optiinfra:kubernetes"].replace(
        '"tlsSecretName": "optiinfra-tls"', '"certManagerIssuer": "letsencrypt"')
    model = infra_stack.load_stack(values)
    assert all(e.external_url is None or e.external_url.startswith("https://") for e in model.services.values())


def test_sso_that_admits_anyone_is_refused_on_the_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "infra", "check", "--stack", "prod", "--set", "sso.emailDomains=[]"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config key 'optiinfra:sso.emailDomains'"), lines


def test_sso_on_docker_is_refused() -> None:
    values = dict(infra_stack.read("dev").values)
    values["optiinfra:sso"] = infra_stack.read("prod").values["optiinfra:sso"]
    with pytest.raises(ConfigError) as err:
        infra_stack.load_stack(values)
    assert err.value.key == "optiinfra:sso" and "Docker" in err.value.problem


def test_the_client_secret_is_required_by_the_program_but_stood_in_offline() -> None:
    offline = infra_stack.read("prod")
    assert "optiinfra:ssoClientSecret" in offline.secret_keys
    from infra.credentials import supplied
    model = infra_stack.load_stack(offline.values)
    engine_form = {k: v for k, v in offline.values.items() if k != "optiinfra:ssoClientSecret"}
    with pytest.raises(ConfigError) as err:
        supplied(model, engine_form)
    assert err.value.key == "optiinfra:ssoClientSecret" and "never generated" in err.value.problem


def test_default_role_reaches_the_ui() -> None:
    model = infra_stack.model_of("prod", ("sso.defaultRole=Admin",))
    ui, _ = _proxied()
    env = dict((k, v) for k, v in model.services[ui].service.env if isinstance(v, str))
    assert env["GF_USERS_AUTO_ASSIGN_ORG_ROLE"] == "Admin"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    dev = infra_stack.model_of("dev")
    assert dict((k, v) for k, v in dev.services[ui].service.env if isinstance(v, str))[
        "GF_AUTH_ANONYMOUS_ENABLED"] == "true"


REDIRECTS = ("nginx.ingress.kubernetes.io/ssl-redirect", "nginx.ingress.kubernetes.io/force-ssl-redirect")


def test_an_ingress_without_the_https_redirect_fails_naming_it() -> None:
    ui, _ = _proxied()

    def no_redirect(props: dict[str, Any]) -> None:
        for key in REDIRECTS:
            props["metadata"]["annotations"].pop(key)

    found = violations(POLICY, changed(prod_resources(), INGRESS, ui, no_redirect))
    assert len(found) == 1
    assert f"Ingress {ui} answers plain HTTP without redirecting it to HTTPS" in found[0][1]
    assert 'force-ssl-redirect: "true"' in found[0][1]


def test_one_redirect_annotation_is_enough_and_false_is_not() -> None:
    ui, _ = _proxied()

    def only_ssl_redirect(props: dict[str, Any]) -> None:
        props["metadata"]["annotations"].pop("nginx.ingress.kubernetes.io/force-ssl-redirect")

    def both_false(props: dict[str, Any]) -> None:
        for key in REDIRECTS:
            props["metadata"]["annotations"][key] = "false"

    assert violations(POLICY, changed(prod_resources(), INGRESS, ui, only_ssl_redirect)) == []
    found = violations(POLICY, changed(prod_resources(), INGRESS, ui, both_false))
    assert [m for _, m in found if "without redirecting it to HTTPS" in m]


def test_admin_groups_without_a_verified_token_are_refused_on_the_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "infra", "check", "--stack", "prod", "--set", "sso.adminGroups=[ops]"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config key 'optiinfra:sso.adminGroups'"), lines
    assert "jwksUrl" in lines[0]


@pytest.mark.parametrize(("change", "key"), [
    ("sso.trustedProxyCidrs=[0.0.0.0/0]", "optiinfra:sso.trustedProxyCidrs"),
    ("sso.jwksUrl=http://login.example.com/certs", "optiinfra:sso.jwksUrl"),
])
def test_trusting_everyone_or_keys_over_plain_http_is_refused(change: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        infra_stack.model_of("prod", (change,))
    assert err.value.key == key


def test_the_ui_reaches_the_provider_only_when_it_verifies_tokens() -> None:
    ui, proxy = _proxied()
    header = infra_stack.model_of("prod")
    token = infra_stack.model_of("prod", ("sso.jwksUrl=https://login.example.com/certs", "sso.adminGroups=[ops]"))
    assert header.outside(header.services[ui]) == ()
    assert [o.ports for o in token.outside(token.services[ui])] == [(443,)]
    env = dict((k, v) for k, v in token.services[ui].service.env if isinstance(v, str))
    assert env["GF_AUTH_PROXY_ENABLED"] == "false" and env["GF_AUTH_JWT_ENABLED"] == "true"
    assert "--pass-authorization-header=true" in token.services[proxy].service.command
    assert "--pass-authorization-header=true" not in header.services[proxy].service.command
