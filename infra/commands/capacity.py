"""`capacity`: CPU, memory and storage of a stack, per service, tier and in total,
against the stack's budget (`optiinfra:budget`). Exit 1 when it does not fit."""

from __future__ import annotations

import argparse
import json
import sys

from .. import capacity, stack
from ..cli import add_stack_arguments

HELP = ("CPU and memory requests and limits and persistent storage per service, tier and in total, "
        "against the stack's budget; exit 1 when it does not fit")

EXAMPLES = """\
python -m infra capacity -s prod
python -m infra capacity -s dev --set budget.memory=4Gi --json"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_stack_arguments(p)
    p.add_argument("--json", action="store_true", help="print the footprint as JSON")


def run(args: argparse.Namespace) -> int:
    fp = capacity.footprint(stack.model_of(args.stack, args.sets, args.secrets), args.stack)
    print(json.dumps(capacity.as_json(fp), indent=2, sort_keys=True) if args.json else capacity.text(fp))
    for problem in fp.problems:
        print(f"error: {problem}", file=sys.stderr)
    return 0 if fp.fits else 1
