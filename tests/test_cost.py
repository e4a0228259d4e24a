"""What a stack and a change cost a month (infra/cost.py via `capacity` and `diff`).

Prices are the defaults in infra/settings.py (Prices) unless a test sets its own; the
expected figures are worked by hand in the comments.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from infra import cli


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    cli.main(list(argv))
    out = capsys.readouterr().out
    return dict(json.loads(out))


def monthly(capsys: pytest.CaptureFixture[str], stack: str, *sets: str) -> float:
    argv = ["capacity", "--stack", stack, "--json"]
    for s in sets:
        argv += ["--set", s]
    return float(run_json(capsys, *argv)["monthlyCost"]["total"])


def test_two_more_workers_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    sets = ("services.data-collector-worker.replicas=5",)
    d = run_json(capsys, "diff", "--stack", "prod", "--json", "--set", sets[0])
    # A prod worker requests 0.25 cores and 256 MiB: 0.25 x 0.021811 + 0.25 x 0.002923 = 0.0061835
    # USD an hour, x 730 hours = 4.514 a month each; two more: +$9.03.
    assert d["cost"][0] == "+2 data-collector-worker replicas: +$9.03/month"
    assert d["cost"][-1].startswith("total: +$9.03/month")


@pytest.mark.parametrize(("stack", "sets"), [
    ("prod", ("services.data-collector-worker.replicas=5",)),
    ("prod", ("services.clickhouse.memory=4Gi", "kubernetes.storage.clickhouse=80Gi")),
    ("staging", ("services.portal.replicas=2", "services.performance-agent.replicas=3")),
    ("dev", ("services.clickhouse.memory=2Gi",)),
])
def test_the_cost_of_a_change_is_the_difference_of_the_two_stacks(
        capsys: pytest.CaptureFixture[str], stack: str, sets: tuple[str, ...]) -> None:
    # diff reads the priced amounts from the two renders; capacity from the two models.
    argv = ["diff", "--stack", stack, "--json"]
    for s in sets:
        argv += ["--set", s]
    d = run_json(capsys, *argv)
    total = d["cost"][-1]
    before, after = monthly(capsys, stack), monthly(capsys, stack, *sets)
    # The two stacks' totals are the ones capacity reports, to the cent.
    assert total.endswith(f"/month (${before:,.2f} -> ${after:,.2f})"), (total, before, after)
    # The change is their difference, taken before rounding: it may differ by a cent from the
    # difference of the two rounded totals.
    m = re.fullmatch(r"total: ([+-])\$([\d,]+\.\d\d)/month \(.*\)", total)
    assert m, total
    cents = round(float(m[2].replace(",", "")) * 100) * (1 if m[1] == "+" else -1)
    assert abs(cents - round((after - before) * 100)) <= 1, (total, before, after)
    assert after != before


def test_prices_come_from_the_stack_settings(capsys: pytest.CaptureFixture[str]) -> None:
    # Memory free, cores at $0.01 an hour: prod's 5.32 cores of requests (test_capacity's
    # test_prod_totals_by_hand: 1.85 + 1.12 + 1.25 + 0.9 + 0.2) x 730 h = $38.84, and its
    # claims at $0 (storage free) and backups at $0.
    cost = monthly(capsys, "prod", "prices.gibHour=0", "prices.coreHour=0.01",
                   "prices.storageGibMonth={default: 0}", "prices.backupGibMonth=0")
    assert cost == pytest.approx(5.32 * 0.01 * 730, abs=0.01)
    # A node price replaces cores and memory for the budget: 3 nodes x $50.
    report = run_json(capsys, "capacity", "--stack", "prod", "--json", "--set", "prices.nodeMonth=50")
    assert report["monthlyCost"]["budget"] == 150
