"""The sign-in proxy as prod renders it: the real oauth2-proxy (v7.15.6, scripts/tools.sh) with
the flags and environment of the rendered Deployment, a real OIDC provider (mockoidc, built
from tests/gotools/mockoidc) and a stand-in for Grafana (Python's http.server, recording
the headers it receives). Everything listens on 127.0.0.1 on free ports and is stopped
also when a test fails.

Substituted, and nothing else: the upstream (Grafana's in-cluster address -> the stand-in),
the issuer (the placeholder -> mockoidc; in Grafana's expected claims too), the listen
addresses (0.0.0.0 -> 127.0.0.1: free ports here) and the paths of the two secret files (the
kubelet's mount -> files in tmp). The test client plays the ingress controller: a request for
https://<grafana host>/... goes to the proxy with that Host and X-Forwarded-Proto/-Host, and
it keeps cookies like a browser; the render is asked (a --set, not a rewrite) to trust its
address, 127.0.0.1, as the controller's, except where a test shows an untrusted caller.

What this stands in for, and what it does not prove: no Grafana runs here. With the header
(auth.proxy): that Grafana takes X-Forwarded-Email as the user, creates them with the default
role and refuses anonymous access is its documented behaviour, not tested. With sso.jwksUrl
(auth.jwt): the test does what Grafana's auth.jwt does with the token the stand-in received
(RS256 signature against the provider's JWKS, the rendered expected claims, expiry, the
rendered role path through the `jmespath` package), so what stays unproven is that Grafana
does exactly that (Go's JMESPath agreeing with Python's; the user created and re-roled).
Neither are the ingress controller's TLS, its HSTS header, nor the NetworkPolicy's
enforcement (the reachability test reads the policies; the live-cluster test applies them to
an API server without a CNI).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import http.server
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jmespath
import pytest

from infra import stack as infra_stack
from infra.commands import check as check_cmd

from .conftest import render
from .tools import free_port, go_tool, stop_process, unavailable

WAIT_S = 20.0
PROXY = "oauth2-proxy"


def rendered(name: str, *sets: str) -> tuple[list[str], dict[str, str]]:
    """A workload's first container's args and plain env, read from the prod render."""
    resources = check_cmd.resources_of(render("prod", *sets))
    workload = next(r for r in resources if r.type.startswith("kubernetes:apps/v1:") and r.name == name)
    container = workload.props["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
    return list(container.get("args") or []), env


def rendered_proxy(*sets: str) -> tuple[list[str], dict[str, str]]:
    return rendered(PROXY, *sets)


def behind_proxy() -> str:
    """The UI the proxy forwards to (its Ingress routes to the proxy), from the model."""
    model = infra_stack.model_of("prod")
    return next(e.name for e in model.services.values() if e.via)


def tool(name: str) -> Path:
    found = go_tool(name)
    if isinstance(found, str):
        unavailable(found)
    assert isinstance(found, Path)
    return found


# ---- the stand-in upstream ----------------------------------------------------------------

@dataclass
class Upstream:
    seen: list[dict[str, str]] = field(default_factory=list)
    port: int = 0


def start_upstream() -> tuple[http.server.ThreadingHTTPServer, Upstream]:
    record = Upstream()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            record.seen.append({k.lower(): v for k, v in self.headers.items()})
            body = b"grafana stand-in"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    record.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, record


# ---- processes --------------------------------------------------------------------------

def wait_http(port: int, path: str, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode}: {err}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"nothing answered on 127.0.0.1:{port}{path} within {WAIT_S} s")


@dataclass
class Stack:
    host: str
    proxy_port: int
    upstream: Upstream
    issuer: str
    sets: tuple[str, ...]


@pytest.fixture
def sso(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """mockoidc signing in as `request.param` (email, groups, extra --set of the render), the
    proxy as rendered, and the stand-in upstream; all stopped at the end, pass or fail."""
    email, groups, sets = request.param
    if COMMITTED_RANGES in sets:  # the stack's own trusted ranges: the test client is outside them
        sets = tuple(x for x in sets if x != COMMITTED_RANGES)
    elif not any(x.startswith("sso.trustedProxyCidrs=") for x in sets):
        sets = (*sets, AT_THE_CONTROLLER)  # the test client plays the ingress controller
    proxy_bin, oidc_bin = tool("oauth2-proxy"), tool("mockoidc")
    args, env = rendered_proxy(*sets)
    client_secret = secrets.token_urlsafe(24)
    procs: list[subprocess.Popen[Any]] = []
    server, upstream = start_upstream()
    try:
        oidc_port = free_port()
        client_id = next(a.split("=", 1)[1] for a in args if a.startswith("--client-id="))
        oidc = subprocess.Popen([str(oidc_bin), f"-port={oidc_port}", f"-client-id={client_id}",
                                 f"-client-secret={client_secret}", f"-email={email}", f"-groups={groups}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(oidc)
        assert oidc.stdout is not None
        issuer = oidc.stdout.readline().strip()  # printed once it listens
        assert issuer.startswith(f"http://127.0.0.1:{oidc_port}/"), issuer
        proxy_port, metrics_port = free_port(), free_port()
        files = {"OAUTH2_PROXY_CLIENT_SECRET_FILE": client_secret, "OAUTH2_PROXY_COOKIE_SECRET_FILE":
                 secrets.token_urlsafe(24)[:32]}
        run_env = {}
        for name, value in env.items():
            if name in files:
                path = tmp_path / name.lower()
                path.write_text(files[name])
                value = str(path)
            run_env[name] = value
        assert set(files) <= set(run_env), "the render mounts both secrets as files"
        assert run_env["OAUTH2_PROXY_HTTP_ADDRESS"].startswith("0.0.0.0:")  # in the pod: every interface
        run_env["OAUTH2_PROXY_HTTP_ADDRESS"] = f"127.0.0.1:{proxy_port}"
        run_env["OAUTH2_PROXY_METRICS_ADDRESS"] = f"127.0.0.1:{metrics_port}"
        substitutes = {"--upstream=": f"--upstream=http://127.0.0.1:{upstream.port}/",
                       "--oidc-issuer-url=": f"--oidc-issuer-url={issuer}"}
        argv = [next((new for prefix, new in substitutes.items() if a.startswith(prefix)), a) for a in args]
        host = urlsplit(next(a.split("=", 1)[1] for a in args if a.startswith("--redirect-url="))).hostname
        assert host
        proxy = subprocess.Popen([str(proxy_bin), *argv], env={"PATH": "/usr/bin:/bin", **run_env},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(proxy)
        wait_http(proxy_port, "/ping", proxy)
        yield Stack(host, proxy_port, upstream, issuer, tuple(sets))
    finally:
        for p in reversed(procs):
            stop_process(p)
        server.shutdown()
        server.server_close()


# ---- a browser behind the ingress controller ------------------------------------------------

@dataclass
class Browser:
    stack: Stack
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookies: list[str] = field(default_factory=list)

    def get(self, url: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        if parts.hostname == self.stack.host:  # the Ingress: TLS ends here, the proxy gets the request
            conn = http.client.HTTPConnection("127.0.0.1", self.stack.proxy_port, timeout=10)
            sent = {"Host": self.stack.host, "X-Forwarded-Proto": "https", "X-Forwarded-Host": self.stack.host}
            if self.cookies:
                sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        else:  # the identity provider
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=10)
            sent = {}
        conn.request("GET", path or "/", headers={**sent, **(headers or {})})
        resp = conn.getresponse()
        resp.read()
        for raw in resp.headers.get_all("Set-Cookie") or []:
            self.set_cookies.append(raw)
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return resp

    def follow(self, url: str, hops: int = 8) -> http.client.HTTPResponse:
        resp = self.get(url)
        for _ in range(hops):
            if resp.status not in (301, 302, 303, 307, 308):
                return resp
            location = resp.headers["Location"]
            if location.startswith("/"):
                location = f"https://{self.stack.host}{location}"
            resp = self.get(location)
        raise AssertionError("too many redirects")


AT_THE_CONTROLLER = "sso.trustedProxyCidrs=[127.0.0.1/32]"
"""The stack's setting for the controller's address; here it is the test client's."""
COMMITTED_RANGES = "(the committed sso.trustedProxyCidrs)"
ALLOWED = ("jane.doe@example.com", "", ())
OUTSIDER = ("mallory@elsewhere.test", "", ())
def _group_sets(*extra: str) -> tuple[str, ...]:
    return ("sso.groups=[ops]", "sso.scope=openid email profile groups", *extra)


@pytest.mark.parametrize("sso", [ALLOWED], indirect=True)
def test_anonymous_request_is_sent_to_the_issuer_and_never_reaches_grafana(sso: Stack) -> None:
    browser = Browser(sso)
    resp = browser.get(f"https://{sso.host}/d/overview")
    assert resp.status == 302
    start = resp.headers["Location"]
    if start.startswith("/oauth2/start") or f"{sso.host}/oauth2/start" in start:
        resp = browser.get(start if "://" in start else f"https://{sso.host}{start}")
        assert resp.status == 302
    assert resp.headers["Location"].startswith(sso.issuer), resp.headers["Location"]
    assert sso.upstream.seen == []


@pytest.mark.parametrize("sso", [ALLOWED], indirect=True)
def test_a_forged_identity_header_without_a_session_is_refused(sso: Stack) -> None:
    browser = Browser(sso)
    forged = {"X-Forwarded-Email": "admin@example.com", "X-Forwarded-User": "admin",
              "X-Forwarded-Groups": "admins", "Authorization": f"Bearer {FORGED_TOKEN}"}
    resp = browser.get(f"https://{sso.host}/api/dashboards/home", forged)
    assert resp.status in (302, 401, 403)
    assert sso.upstream.seen == []


@pytest.mark.parametrize("sso", [ALLOWED], indirect=True)
def test_after_signing_in_grafana_receives_the_users_identity_from_a_secure_httponly_cookie(sso: Stack) -> None:
    browser = Browser(sso)
    resp = browser.follow(f"https://{sso.host}/d/overview")
    assert resp.status == 200
    assert [h["x-forwarded-email"] for h in sso.upstream.seen] == ["jane.doe@example.com"]
    session = [c for c in browser.set_cookies if c.startswith("_optiinfra_sso=") and "_csrf" not in c.split("=")[0]]
    assert session, browser.set_cookies
    attributes = {a.strip().split("=")[0].lower(): a.strip() for a in session[-1].split(";")[1:]}
    assert "secure" in attributes and "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=lax"
    # The parent domain (RFC 6265 drops a leading dot): the portal's host gets it too.
    assert attributes["domain"].lower().replace("domain=.", "domain=") == "domain=optiinfra.example.com"
    # Signed in, a header the browser forges is replaced by the proxy's own.
    browser.get(f"https://{sso.host}/api/user", {"X-Forwarded-Email": "admin@example.com"})
    assert sso.upstream.seen[-1]["x-forwarded-email"] == "jane.doe@example.com"


@pytest.mark.parametrize("sso", [OUTSIDER], indirect=True)
def test_a_user_outside_the_allowed_domain_is_refused(sso: Stack) -> None:
    resp = Browser(sso).follow(f"https://{sso.host}/d/overview")
    assert resp.status == 403
    assert sso.upstream.seen == []


@pytest.mark.parametrize("sso", [("jane.doe@example.com", "dev", _group_sets())], indirect=True)
def test_with_groups_set_a_user_outside_them_is_refused(sso: Stack) -> None:
    resp = Browser(sso).follow(f"https://{sso.host}/d/overview")
    assert resp.status == 403
    assert sso.upstream.seen == []


@pytest.mark.parametrize("sso", [("jane.doe@example.com", "dev,ops", _group_sets())], indirect=True)
def test_with_groups_set_a_member_signs_in_and_grafana_gets_the_groups(sso: Stack) -> None:
    resp = Browser(sso).follow(f"https://{sso.host}/d/overview")
    assert resp.status == 200
    assert sso.upstream.seen[-1]["x-forwarded-email"] == "jane.doe@example.com"
    assert set(sso.upstream.seen[-1]["x-forwarded-groups"].split(",")) == {"dev", "ops"}


# ---- Admin for a configured group: the ID token Grafana verifies (sso.jwksUrl, sso.adminGroups) ----

JWKS_PLACEHOLDER = "https://login.example.com/realms/optiinfra/protocol/openid-connect/certs"
ADMIN_GROUP = "ops-admins"
_TOKEN_SETS = _group_sets(f"sso.jwksUrl={JWKS_PLACEHOLDER}", f"sso.adminGroups=[{ADMIN_GROUP}]",
                          "sso.groups=[ops,ops-admins]")
FORGED_TOKEN = ("eyJhbGciOiJub25lIn0." + base64.urlsafe_b64encode(
    b'{"sub":"x","email":"admin@example.com","groups":["ops-admins"]}').decode().rstrip("=") + ".")


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verified_claims(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """What Grafana's auth.jwt does first: the signature (RS256, RSASSA-PKCS1-v1_5 with SHA-256,
    the key named by `kid` in the provider's JWKS), else refused. Plain integer arithmetic."""
    head, body, signature = token.split(".")
    header = json.loads(_b64(head))
    if header.get("alg") != "RS256":
        raise ValueError(f"alg {header.get('alg')!r}")
    key = next(k for k in jwks["keys"] if k.get("kid") == header.get("kid") or "kid" not in header)
    n, e = (int.from_bytes(_b64(key[x]), "big") for x in ("n", "e"))
    size = (n.bit_length() + 7) // 8
    decoded = pow(int.from_bytes(_b64(signature), "big"), e, n).to_bytes(size, "big")
    sha256_prefix = bytes.fromhex("3031300d060960864801650304020105000420")  # DER DigestInfo, RFC 8017 9.2
    digest = sha256_prefix + hashlib.sha256(f"{head}.{body}".encode()).digest()
    if not hmac.compare_digest(decoded, b"\x00\x01" + b"\xff" * (size - len(digest) - 3) + b"\x00" + digest):
        raise ValueError("bad signature")
    claims: dict[str, Any] = json.loads(_b64(body))
    return claims


def grafana_checks(sets: tuple[str, ...], issuer: str) -> tuple[dict[str, Any], str, str]:
    """Grafana's rendered auth.jwt settings (expected claims, role path, the claims naming the
    user, the JWKS URL), with the issuer's placeholder read as mockoidc's, as the proxy's is."""
    args, _ = rendered_proxy(*sets)
    _, env = rendered(behind_proxy(), *sets)
    placeholder = next(a.split("=", 1)[1] for a in args if a.startswith("--oidc-issuer-url="))
    expect = json.loads(env["GF_AUTH_JWT_EXPECT_CLAIMS"])
    assert expect["iss"] == placeholder and expect["aud"] == [
        next(a.split("=", 1)[1] for a in args if a.startswith("--client-id="))]
    expect["iss"] = issuer
    assert env["GF_AUTH_JWT_ENABLED"] == "true" and env["GF_AUTH_PROXY_ENABLED"] == "false"
    assert env["GF_AUTH_JWT_HEADER_NAME"] == "Authorization" and env["GF_AUTH_JWT_JWK_SET_URL"] == JWKS_PLACEHOLDER
    return expect, env["GF_AUTH_JWT_ROLE_ATTRIBUTE_PATH"], env["GF_AUTH_JWT_EMAIL_CLAIM"]


def signed_in_token(sso: Stack) -> tuple[str, dict[str, Any]]:
    """Sign in; the token the upstream received and the provider's keys."""
    resp = Browser(sso).follow(f"https://{sso.host}/d/overview")
    assert resp.status == 200
    authorization = sso.upstream.seen[-1]["authorization"]
    assert authorization.startswith("Bearer ")
    parts = urlsplit(sso.issuer)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    conn.request("GET", parts.path.rstrip("/") + "/.well-known/openid-configuration")
    jwks_uri = json.loads(conn.getresponse().read())["jwks_uri"]
    conn.request("GET", urlsplit(jwks_uri).path)
    return authorization.removeprefix("Bearer "), json.loads(conn.getresponse().read())


def grafana_role(sso: Stack, token: str, jwks: dict[str, Any]) -> tuple[str, str]:
    """(user, role) as Grafana's auth.jwt would take them from this token; raises if it would refuse it."""
    expect, role_path, email_claim = grafana_checks(sso.sets, sso.issuer)
    claims = verified_claims(token, jwks)
    assert claims["iss"] == expect["iss"] and set(expect["aud"]) <= set(
        [claims["aud"]] if isinstance(claims["aud"], str) else claims["aud"])
    assert claims["exp"] > time.time() and claims["sub"]
    role = jmespath.search(role_path, claims)
    assert role in ("Viewer", "Editor", "Admin"), role  # role_attribute_strict: anything else is refused
    return claims[email_claim], role


@pytest.mark.parametrize("sso", [("jane.doe@example.com", f"ops,{ADMIN_GROUP}", _TOKEN_SETS)], indirect=True)
def test_a_member_of_an_admin_group_arrives_with_a_signed_token_that_maps_to_admin(sso: Stack) -> None:
    token, jwks = signed_in_token(sso)
    assert grafana_role(sso, token, jwks) == ("jane.doe@example.com", "Admin")
    # The token is what the provider signed: one changed claim and the signature fails.
    head, body, sig = token.split(".")
    claims = json.loads(_b64(body))
    claims["email"] = "mallory@example.com"
    tampered = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    with pytest.raises(ValueError, match="bad signature"):
        verified_claims(f"{head}.{tampered}.{sig}", jwks)
    with pytest.raises(ValueError, match="alg"):
        verified_claims(FORGED_TOKEN, jwks)


@pytest.mark.parametrize("sso", [("john.roe@example.com", "ops", _TOKEN_SETS)], indirect=True)
def test_a_user_outside_the_admin_groups_maps_to_the_default_role_and_cannot_bring_their_own_token(
        sso: Stack) -> None:
    token, jwks = signed_in_token(sso)
    assert grafana_role(sso, token, jwks) == ("john.roe@example.com", "Viewer")
    # Signed in, an Authorization header the browser sends is replaced by the proxy's token.
    browser = Browser(sso)
    browser.follow(f"https://{sso.host}/d/overview")
    browser.get(f"https://{sso.host}/api/user", {"Authorization": f"Bearer {FORGED_TOKEN}"})
    assert FORGED_TOKEN not in sso.upstream.seen[-1]["authorization"]
    assert grafana_role(sso, sso.upstream.seen[-1]["authorization"].removeprefix("Bearer "), jwks)[1] == "Viewer"


def test_the_role_path_never_matches_a_substring_nor_a_missing_claim() -> None:
    _, env = rendered(behind_proxy(), *_TOKEN_SETS)
    path = env["GF_AUTH_JWT_ROLE_ATTRIBUTE_PATH"]
    assert jmespath.search(path, {"groups": [ADMIN_GROUP]}) == "Admin"
    assert jmespath.search(path, {"groups": f"{ADMIN_GROUP}-not"}) == "Viewer"
    assert jmespath.search(path, {"groups": [f"x{ADMIN_GROUP}"]}) == "Viewer"
    assert jmespath.search(path, {}) == "Viewer"
    _, env = rendered(behind_proxy(), *_TOKEN_SETS, "sso.defaultRole=Editor")
    assert jmespath.search(env["GF_AUTH_JWT_ROLE_ATTRIBUTE_PATH"], {"groups": ["ops"]}) == "Editor"


# ---- X-Forwarded-* only from the ingress controller (sso.trustedProxyCidrs) ----------------------

FORGED_FORWARDING = {"X-Forwarded-Host": "portal.optiinfra.example.com", "X-Forwarded-Uri": "/forged-path",
                     "X-Forwarded-For": "203.0.113.7"}


def redirect_after_sign_in(sso: Stack, headers: dict[str, str]) -> str:
    """Where the proxy would send the browser back after signing in (the state it gives the issuer)."""
    browser = Browser(sso)
    resp = browser.get(f"https://{sso.host}/d/overview", headers)
    for _ in range(3):
        location = resp.headers["Location"]
        if location.startswith(sso.issuer):
            state = parse_qs(urlsplit(location).query)["state"][0]
            return unquote(state.split(":", 1)[1])
        assert resp.status == 302, resp.status
        resp = browser.get(location if "://" in location else f"https://{sso.host}{location}", headers)
    raise AssertionError("never sent to the issuer")


@pytest.mark.parametrize("sso", [("jane.doe@example.com", "", (COMMITTED_RANGES,))], indirect=True)
def test_the_committed_trusted_ranges_exclude_a_caller_outside_them(sso: Stack) -> None:
    args, _ = rendered_proxy()
    trusted = [a.split("=", 1)[1] for a in args if a.startswith("--trusted-proxy-ip=")]
    assert trusted and "0.0.0.0/0" not in trusted and "127.0.0.1/32" not in trusted
    assert redirect_after_sign_in(sso, {}) == redirect_after_sign_in(sso, FORGED_FORWARDING)
    assert redirect_after_sign_in(sso, FORGED_FORWARDING) == "/d/overview"
    assert sso.upstream.seen == []


@pytest.mark.parametrize("sso", [("jane.doe@example.com", "", (AT_THE_CONTROLLER,))], indirect=True)
def test_from_the_controller_the_forwarded_headers_count(sso: Stack) -> None:
    """The other side: the test would see a forged header that the proxy believed."""
    assert redirect_after_sign_in(sso, FORGED_FORWARDING) == "https://portal.optiinfra.example.com/forged-path"
