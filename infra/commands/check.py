"""`check`: run the policy pack over the offline render, without the Pulumi CLI.

The same rules (policies/optiinfra_policies/rules/) over the same inputs the engine hands
them (the rendered resources, with what the program stamps on them), and the same
enforcement levels and config (policies/config/<stack>.json, reconciled as the engine does)
as `pulumi preview --policy-pack policies --policy-pack-config policies/config/<stack>.json`.
Offline, secret values carry the renderer's `[secret]` mark, so the rules that need it (a
credential in a Docker env value) see more here than under the engine.
Exit 1 when a mandatory policy fails, 0 otherwise (advisory violations are printed),
2 for a user error (bad stack config, flags or policy config).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from policies.optiinfra_policies import core, rules

from .. import capacity, credentials, notifications, offline
from ..cli import add_stack_arguments, present_keys, prog
from ..settings import NAMESPACE, ConfigError
from ..stack import ROOT

HELP = "run the policy pack over the offline render (no Pulumi CLI); exit 1 when a mandatory policy fails"

EXAMPLES = """\
python -m infra check -s prod
python -m infra check -s dev --json
python -m infra check -s prod --policy-config policies/config/prod.json
python -m infra check -s prod --deploy    # as scripts/deploy.sh runs it"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_stack_arguments(p)
    p.add_argument("--policy-config", metavar="FILE", type=Path,
                   help="policy pack config (default: policies/config/<stack>.json, as passed to "
                        "`pulumi preview --policy-pack-config`)")
    p.add_argument("--json", action="store_true", help="print the violations as JSON")
    p.add_argument("--deploy", action="store_true",
                   help="as before `pulumi up` (scripts/deploy.sh passes it): also refuse (exit 2) a credential "
                        "only you can set that the stack file lacks, which the offline render stands in for")


def run(args: argparse.Namespace) -> int:
    rendered = None
    if args.deploy:
        rendered = offline.render(args.stack, args.sets, args.secrets)
        for cred in credentials.unset_user_set(rendered.model, present_keys(args)):
            raise ConfigError(f"{NAMESPACE}:{cred.config_key}", credentials.unset_problem(cred),
                              credentials.user_set_fix(cred, args.stack))
    result = check(args.stack, args.sets, args.secrets, args.policy_config, rendered=rendered)
    print(json.dumps(result.as_json(), indent=2, sort_keys=True) if args.json else result.text())
    return 1 if result.failed else 0


class Result:
    def __init__(self, stack: str, resources: list[core.Resource], findings: list[core.Finding],
                 settings: dict[str, core.Setting], config_path: Path | None) -> None:
        self.stack, self.resources, self.findings = stack, resources, findings
        self.settings, self.config_path = settings, config_path
        self.version = core.pack_version()

    capacity: list[str] = []
    """The stack's capacity problems (infra/capacity.py: packing, N+1, budget), each one line."""
    capacity_level = "advisory"
    """mandatory on Kubernetes (staging, prod: a stack that does not fit must not deploy),
    advisory on Docker (dev: a developer's machine, its budget an estimate)."""

    @property
    def failed(self) -> bool:
        return any(f.level == "mandatory" for f in self.findings) or bool(
            self.capacity and self.capacity_level == "mandatory")

    def _resource(self, urn: str) -> core.Resource | None:
        return next((r for r in self.resources if r.urn == urn), None)

    def text(self) -> str:
        pack = f"{core.PACK_NAME}@v{self.version}"
        config = _display(self.config_path) if self.config_path else "none (every policy advisory)"
        lines = [f"Policy check of stack {self.stack}: {len(self.resources)} resources (offline render, nothing "
                 f"deployed); policy pack {pack}, config {config}"]
        if self.findings:
            lines += ["", "Policy Violations:"]
        for f in sorted(self.findings, key=lambda f: (f.level != "mandatory", f.violation.policy, f.violation.urn)):
            res = self._resource(f.violation.urn)
            where = res.label if res else "stack"
            lines.append(f"    [{f.level}]  {pack}  {f.violation.policy} ({where})")
            lines.append(f"    {f.description}")
            lines.append(f"    {f.violation.message}")
            if f.violation.urn:
                lines.append(f"    urn: {f.violation.urn}")
        counts = Counter(f.level for f in self.findings)
        per_policy = Counter(f.violation.policy for f in self.findings)
        lines += ["", f"Capacity ({self.capacity_level}; {prog()} capacity --stack {self.stack}): "
                  + ("FAIL" if self.capacity else "ok")]
        lines += [f"    error: {p}" for p in self.capacity]
        lines += ["", "Policies:"]
        for rule in rules.RULES:
            level = self.settings[rule.name].level
            n = per_policy.get(rule.name, 0)
            mark = "skipped" if level == "disabled" else ("FAIL" if n and level != "advisory" else "warn" if n
                                                           else "ok")
            lines.append(f"    {mark:7} [{level}]  {rule.name}  ({rule.severity})"
                         + (f"  {n} violation{'s' if n != 1 else ''}" if n else ""))
        lines.append("")
        lines.append(f"Summary: {len(self.findings)} violations ({counts.get('mandatory', 0)} mandatory, "
                     f"{counts.get('advisory', 0)} advisory) from {len(rules.RULES)} policies.")
        if self.failed:
            failed = sorted({f.violation.policy for f in self.findings if f.level == "mandatory"})
            if self.capacity and self.capacity_level == "mandatory":
                failed.append("capacity")
            lines.append(f"FAILED: mandatory policies violated: {', '.join(failed)}")
        else:
            lines.append("PASSED: no mandatory policy violated")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        violations = []
        for f in self.findings:
            res = self._resource(f.violation.urn)
            violations.append({
                "policyName": f.violation.policy,
                "policyPackName": core.PACK_NAME,
                "policyPackVersion": self.version,
                "enforcementLevel": f.level,
                "severity": f.severity,
                "description": f.description,
                "message": f.violation.message,
                "urn": f.violation.urn,
                "resourceType": res.type if res else None,
                "resourceName": res.name if res else None,
            })
        counts = Counter(f.level for f in self.findings)
        return {
            "stack": self.stack,
            "policyPack": {"name": core.PACK_NAME, "version": self.version,
                           "config": _display(self.config_path) if self.config_path else None},
            "resources": len(self.resources),
            "policies": [{"name": r.name, "enforcementLevel": self.settings[r.name].level, "severity": r.severity,
                          "violations": sum(1 for f in self.findings if f.violation.policy == r.name)}
                         for r in rules.RULES],
            "violations": violations,
            "summary": {"mandatory": counts.get("mandatory", 0), "advisory": counts.get("advisory", 0)},
            "capacity": {"enforcementLevel": self.capacity_level, "problems": self.capacity},
            "passed": not self.failed,
        }


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def resources_of(r: offline.Render) -> list[core.Resource]:
    return [core.Resource(urn=res.urn, type=res.type, name=res.name, props=res.inputs, protect=res.protect)
            for res in r.resources]


def check(stack: str, sets: list[str] = (), secrets: list[str] = (),  # type: ignore[assignment]
          policy_config: Path | None = None, *, rendered: offline.Render | None = None) -> Result:
    """Render (unless given) and check a stack. Raises ConfigError for user errors."""
    path = policy_config or core.stack_config_file(stack)
    try:
        if policy_config is None and not path.exists():
            pack_config: dict[str, Any] = {}
            shown: Path | None = None
        else:
            pack_config, shown = core.load_pack_config(path), path
        settings = core.reconcile(rules.RULES, pack_config, source=_display(path))
    except core.PolicyConfigError as err:
        raise ConfigError(err.key, err.problem, err.fix) from None
    r = rendered or offline.render(stack, sets, secrets)
    notifications.require_receiver(r.model)
    resources = resources_of(r)
    findings = core.evaluate(rules.RULES, resources, settings)
    result = Result(stack, resources, findings, settings, shown)
    result.capacity = capacity.footprint(r.model, stack).problems
    result.capacity_level = "mandatory" if r.model.settings.target == "kubernetes" else "advisory"
    return result
