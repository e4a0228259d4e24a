"""The notifier's configuration (Generated.NOTIFIER_CONFIG, Alertmanager's format): where
firing alerts go, from stack config `alerting.receivers`.

Routing: alerts are grouped by `alertname` and `service` (one notification per alert
about a service, whatever the number of its instances); critical ones go to every receiver
that takes critical alerts and repeat every hour while they fire, warnings to those that
take warnings every four hours. A critical alert about a service holds back that service's
warnings (an inhibit rule: a ServiceDown says enough). With no receiver set, every alert
goes to the `null` receiver, which sends nothing (plan and deploy say so).

No secret is in this file: each receiver names the file its URL or password is in
(`url_file`, `api_url_file`, `auth_password_file`), which the backend delivers apart from
the config (a mounted Secret on Kubernetes; a tmpfs file the entrypoint wrapper writes on
Docker: `SecretFile.path_on`). Output is deterministic YAML; amtool checks it in
tests/test_alertmanager.py.
"""

from __future__ import annotations

import yaml

from policies.optiinfra_policies.vocabulary import NO_RECEIVER_MARK

from .graph import Effective, Resolved
from .model import Credential, SecretFile
from .settings import NAMESPACE, SEVERITIES, ConfigError, EmailReceiver, Receiver, SlackReceiver

NULL = "null"
"""The receiver that sends nothing (no integration): where alerts go while none is set."""
GROUP_BY = ("alertname", "service")
REPEAT = {"critical": "1h", "warning": "4h"}
"""How often a notification repeats while its alert still fires, by severity."""
HEARTBEAT = "heartbeat"
"""The receiver of the Watchdog alert only (`alerting.receivers.heartbeat`)."""
HEARTBEAT_EVERY = "1m"
"""How often the Watchdog is sent to the heartbeat URL (its route's group and repeat interval)."""
HEARTBEAT_STALE_MIN = 4
"""Minutes Alertmanager keeps a firing alert after Prometheus' last send: Prometheus sets endsAt
to four times its resend delay (1m) ahead, so a dead Prometheus stops the heartbeat within this."""


def nowhere(model: Resolved) -> bool:
    """True when the stack sends alerts nowhere: a notifier runs, but no receiver is set."""
    return model.notifier() is not None and not model.settings.alerting.receivers.on()


def required(model: Resolved) -> bool:
    """A Kubernetes stack (staging, prod) must send its alerts somewhere, unless its stack file
    states why not (`alerting.noReceiver`); a Docker stack (dev) may keep the null receiver."""
    return (model.settings.target == "kubernetes" and nowhere(model)
            and not model.settings.alerting.no_receiver.strip())


def require_receiver(model: Resolved) -> None:
    """Refuse (ConfigError: one line, key and fix) a stack whose alerts would go nowhere; what
    `check` and the program under `pulumi up` call (plan, render and diff only say so)."""
    if not required(model):
        return
    webhook = next(c for c in model.catalog.credentials.values() if c.receiver == "webhook")
    raise ConfigError(f"{NAMESPACE}:alerting.receivers",
                      "no receiver is set, so every alert of this Kubernetes stack would go nowhere",
                      f"set one (e.g. webhook: {{}}) and its secret: pulumi config set --secret {webhook.config_key} "
                      "https://...; or state why not: optiinfra:alerting.noReceiver: <reason> (docs/monitoring.md)")


def status_line(model: Resolved) -> str:
    """One line for plan and deploy: where this stack's alerts go."""
    if model.notifier() is None:
        return "Alerts: no notifier is deployed; firing alerts show only in Prometheus' /alerts page"
    on = model.settings.alerting.receivers.on()
    if not on:
        webhook = next(c for c in model.catalog.credentials.values() if c.receiver == "webhook")
        where = (f"put its URL in the ClusterSecretStore under {webhook.config_key}'s remote key "
                 "(kubernetes.externalSecrets; docs/credentials.md)"
                 if model.settings.target == "kubernetes" and model.settings.kubernetes.external_secrets is not None
                 else f"pulumi config set --secret {webhook.config_key} https://...")
        because = model.settings.alerting.no_receiver.strip()
        return ("Alerts: go nowhere until a receiver is set: optiinfra:alerting.receivers (webhook, slack, email) "
                f"and its secret, e.g. {where} (docs/monitoring.md)"
                + (f"; the stack says why: {because}" if because else ""))
    parts = [f"{sev} -> {', '.join(k for k, r in on.items() if sev in r.severities) or 'nowhere'}"
             for sev in SEVERITIES]
    return f"Alerts: {'; '.join(parts)}"


def _secret_path(model: Resolved, notifier: Effective, kind: str) -> str:
    """Where the notifier reads the secret of receiver `kind` on this stack's target."""
    cred: Credential = next(c for c in notifier.service.credentials if c.receiver == kind)
    file: SecretFile = next(f for f in notifier.service.secret_files if f.credential == cred.id)
    return file.path_on(model.settings.target)


def _integration(model: Resolved, notifier: Effective, kind: str, r: Receiver) -> dict[str, object]:
    out: dict[str, object] = {"send_resolved": r.send_resolved}
    if isinstance(r, SlackReceiver):
        out |= {"api_url_file": _secret_path(model, notifier, kind), "channel": r.channel,
                "title": '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.service }})',
                "text": "{{ range .Alerts }}{{ .Annotations.summary }}\n{{ .Annotations.runbook }}\n{{ end }}"}
    elif isinstance(r, EmailReceiver):
        out |= {"to": r.to, "from": r.from_, "smarthost": r.smarthost, "require_tls": True}
        if r.username is not None:
            out |= {"auth_username": r.username, "auth_password_file": _secret_path(model, notifier, kind)}
    else:
        out["url_file"] = _secret_path(model, notifier, kind)
    return out


_KEYS = {"webhook": "webhook_configs", "slack": "slack_configs", "email": "email_configs"}


def config(model: Resolved) -> str:
    """alertmanager.yml of this stack (the body; monitoring.py adds the header)."""
    notifier = model.notifier()
    receivers: list[dict[str, object]] = [{"name": NULL}]
    routes: list[dict[str, object]] = []
    watchdog = model.catalog.watchdog
    if watchdog is not None:
        # The dead man's switch first, and only it: the Watchdog never reaches a person, and
        # nothing else reaches the heartbeat. Without a heartbeat it ends at `null`.
        beat = model.settings.alerting.receivers.heartbeat is not None and notifier is not None
        if beat:
            assert notifier is not None
            receivers.append({"name": HEARTBEAT, "webhook_configs": [
                {"send_resolved": False, "url_file": _secret_path(model, notifier, HEARTBEAT)}]})
        routes.append({"matchers": [f'alertname="{watchdog.name}"'], "receiver": HEARTBEAT if beat else NULL,
                       "group_wait": "0s", "group_interval": HEARTBEAT_EVERY, "repeat_interval": HEARTBEAT_EVERY})
    on = model.settings.alerting.receivers.on()
    for severity in SEVERITIES:
        takes = {kind: r for kind, r in on.items() if severity in r.severities}
        if notifier is None or not takes:
            continue
        receiver: dict[str, object] = {"name": severity}
        for kind, r in takes.items():
            receiver[_KEYS[kind]] = [_integration(model, notifier, kind, r)]
        receivers.append(receiver)
        routes.append({"matchers": [f'severity="{severity}"'], "receiver": severity,
                       "repeat_interval": REPEAT[severity]})
    doc: dict[str, object] = {
        "global": {"resolve_timeout": "5m"},
        "route": {"receiver": NULL, "group_by": list(GROUP_BY), "group_wait": "30s", "group_interval": "5m",
                  "repeat_interval": REPEAT["warning"], "routes": routes},
        "inhibit_rules": [{"source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'],
                           "equal": ["service"]}],
        "receivers": receivers,
    }
    if not routes:
        del doc["route"]["routes"]  # type: ignore[attr-defined]
    body = yaml.safe_dump(doc, sort_keys=False, width=200)
    because = model.settings.alerting.no_receiver.strip()
    if because and nowhere(model):
        # What the policy pack reads (it sees the rendered file, not the stack's settings).
        body = f"# {NO_RECEIVER_MARK}: {' '.join(because.split())}\n" + body
    return body

