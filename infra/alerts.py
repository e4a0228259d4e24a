"""The scraper's rule file: recording and alert rules generated from the catalog.

Alerts are declared in the catalog, never here: the platform's (`Catalog.alerts`, on every
scraped service: down, memory near its limit, restarting) and each service's own
(`Service.alerts`, on what its metrics say: an exporter's view of its database, the Celery
backlog). This module fills their placeholders per stack (`$job`: the declaring service's
scrape job; `$threshold`: stack config `alerting.thresholds`, else the catalog's default;
`$claim`: a volume alert's claim size in bytes, from the model, Kubernetes only) and adds
the recording rules they and the dashboards read:

- `service:memory_limit_bytes`: one constant series per scraped service, the memory limit
  its target gives one instance (Docker keeps the limit; a Guaranteed pod on Kubernetes
  has limit = request), so a limit set in stack config moves the alert with it;
- `service:memory_usage:ratio`: each instance's resident memory over that limit;
- `service:up:ratio`: the share of a service's instances that answer their scrape.

One rule per scraped service and one per declared alert: linear in the services. The
output is sorted, deterministic YAML (promtool checks it in tests/test_alerts.py).
"""

from __future__ import annotations

from datetime import date, timedelta
from itertools import pairwise
from string import Template

import yaml

from . import probes
from .graph import Resolved
from .model import Alert, Generated

MEMORY_LIMIT = "service:memory_limit_bytes"
MEMORY_RATIO = "service:memory_usage:ratio"
UP_RATIO = "service:up:ratio"
RECORDED = (MEMORY_LIMIT, MEMORY_RATIO, UP_RATIO)
"""The series the rule file records (dashboards may read them as if scraped)."""

RESIDENT = "process_resident_memory_bytes"
MIB = 1024 * 1024


def threshold(model: Resolved, alert: Alert) -> float | None:
    """The alert's threshold in this stack: stack config, else the catalog's default."""
    return model.settings.alerting.thresholds.get(alert.name, alert.threshold)


def _number(value: float) -> str:
    return f"{value:g}"


def claim_bytes(model: Resolved, alert: Alert, job: str) -> int | None:
    """The size in bytes of the volume a volume alert compares with (`Alert.volume` of the
    service it is about), on a stack where that volume is a claim of fixed size (Kubernetes:
    `kubernetes.storage.<service>`, else the catalog's); None otherwise."""
    owner = model.services.get(alert.about or job)
    if not alert.volume or owner is None or model.settings.target != "kubernetes":
        return None
    return owner.volume_mib(alert.volume) * MIB


def expression(model: Resolved, alert: Alert, job: str = "") -> str:
    """The alert's PromQL with `$job`, `$threshold` and (a volume alert's) `$claim` filled in."""
    value = threshold(model, alert)
    claim = claim_bytes(model, alert, job)
    return Template(alert.expr).substitute(job=job, threshold=_number(value) if value is not None else "",
                                           claim=str(claim) if claim is not None else "")


def _alert_rule(model: Resolved, alert: Alert, job: str = "", service: str = "") -> dict[str, object]:
    labels: dict[str, str] = {"severity": alert.severity}
    if job:
        labels["service"] = service or alert.about or job
    rule: dict[str, object] = {"alert": alert.name, "expr": expression(model, alert, job)}
    if alert.for_ != "0m":
        rule["for"] = alert.for_
    rule["labels"] = labels
    rule["annotations"] = {"summary": alert.summary, "runbook": alert.runbook}
    return rule


def alerts_of(model: Resolved) -> list[tuple[str, Alert]]:
    """Every alert this stack evaluates, with the scrape job it reads ('' for the platform's,
    which match every job): the platform's, then each scraped, enabled service's own."""
    out: list[tuple[str, Alert]] = [("", a) for a in model.catalog.alerts]
    for eff in model.scrape_targets():
        # A volume alert only where its volume is a claim (Kubernetes): a Docker volume has no size.
        out += [(eff.name, a) for a in eff.service.alerts if not a.volume or claim_bytes(model, a, eff.name)]
    return out


def recording_rules(model: Resolved) -> list[dict[str, object]]:
    target = model.settings.target
    rules: list[dict[str, object]] = []
    for eff in model.scrape_targets():
        limit_mib, _ = eff.resources.limits(target)
        rules.append({"record": MEMORY_LIMIT, "expr": f"vector({limit_mib * MIB})",
                      "labels": {"service": eff.name, "tier": eff.tier.value}})
    rules.append({"record": MEMORY_RATIO,
                  "expr": f"max by (service, tier, instance) ({RESIDENT}) "
                          f"/ on (service) group_left () {MEMORY_LIMIT}"})
    rules.append({"record": UP_RATIO, "expr": "avg by (service, tier) (up)"})
    return rules


def rules(model: Resolved) -> str:
    """The rule file's body (Generated.RULES): a recording group, then an alert group."""
    groups = [
        {"name": "optiinfra-recording", "rules": recording_rules(model)},
        {"name": "optiinfra-alerts", "rules": [_alert_rule(model, a, job) for job, a in alerts_of(model)]
         + [_alert_rule(model, a, job, service) for job, service, a in probes.job_alerts(model)]},
        *([{"name": DRILL_GROUP, "rules": drill}] if (drill := drill_rules(model)) else []),
    ]
    return yaml.safe_dump({"groups": groups}, sort_keys=False, width=200)


def rule_file_paths(model: Resolved) -> list[str]:
    """Where the scraper finds its rule files (its ConfigFiles of kind RULES)."""
    scraper = model.scraper()
    if scraper is None:
        return []
    return [f.path for f in scraper.service.files if f.generator is Generated.RULES]


# ---- the restore drills (docs/backups.md) ----------------------------------------------------

DRILL_GROUP = "optiinfra-backup-drills"
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def _cron_field(text: str, low: int, high: int) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        span, _, step = part.partition("/")
        first, last = (low, high) if span == "*" else (int(span.partition("-")[0]),
                                                         int(span.partition("-")[2] or span.partition("-")[0]))
        if step and span != "*" and "-" not in span:
            last = high
        out.update(range(first, last + 1, int(step or 1)))
    return out


def longest_gap_s(schedule: str) -> int:
    """The longest time between two consecutive runs of a five-field cron schedule (UTC, as
    Kubernetes reads it: day of month or weekday when both are restricted), over a year of runs."""
    fields = schedule.split()
    minutes, hours, days, months, weekdays = (_cron_field(f, lo, hi) for f, (lo, hi) in zip(fields, _CRON_RANGES,
                                                                                            strict=True))
    either = fields[2] != "*" and fields[4] != "*"
    runs: list[int] = []
    start = date(2027, 1, 1)
    for n in range(2 * 366):
        d = start + timedelta(days=n)
        dom, dow = d.day in days, (d.isoweekday() % 7) in weekdays
        if d.month in months and ((dom or dow) if either else (dom and dow)):
            runs += [n * 86400 + h * 3600 + m * 60 for h in sorted(hours) for m in sorted(minutes)]
    gaps = [b - a for a, b in pairwise(runs)]
    return max(gaps) if gaps else 2 * 366 * 86400


def drill_rules(model: Resolved) -> list[dict[str, object]]:
    """The catalog's drill alerts (`Catalog.drill_alerts`), one rule each per drilled service:
    `$service` that service, `$allowed` the seconds its schedule allows (BackupDrillFailed: the
    drill schedule's longest gap plus a run's deadline; BackupTooOld: the backup schedule's
    longest gap), `$threshold` as for every alert. None without drills (no store, Docker)."""
    from .objectstore import DRILL_DEADLINE_S
    drilled = model.drilled()
    if not drilled:
        return []
    cfg = model.settings.backups
    allowed = {"BackupTooOld": longest_gap_s(cfg.schedule)}
    default = longest_gap_s(cfg.drill_schedule) + DRILL_DEADLINE_S
    out: list[dict[str, object]] = []
    for alert in model.catalog.drill_alerts:
        value = threshold(model, alert)
        for eff in drilled:
            fill = {"service": eff.name, "allowed": str(allowed.get(alert.name, default)),
                    "threshold": _number(value) if value is not None else ""}
            rule: dict[str, object] = {"alert": alert.name, "expr": Template(alert.expr).substitute(fill)}
            if alert.for_ != "0m":
                rule["for"] = alert.for_
            rule["labels"] = {"severity": alert.severity, "service": eff.name}
            rule["annotations"] = {"summary": alert.summary, "runbook": alert.runbook}
            out.append(rule)
    return out
