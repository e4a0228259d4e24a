"""`capacity`: CPU, memory and storage of a stack, per service, tier and in total,
against the stack's budget (`optiinfra:budget`). Exit 1 when it does not fit."""

from __future__ import annotations

import argparse
import json
import sys

from .. import capacity, offline
from ..catalog import default_catalog
from ..cli import add_stack_arguments
from ..graph import Model, resolve
from ..settings import parse_settings

HELP = ("CPU and memory requests and limits and persistent storage per service, tier and in total, "
        "against the stack's budget; exit 1 when it does not fit")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_stack_arguments(p)
    p.add_argument("--json", action="store_true", help="print the footprint as JSON")


def model_for(stack: str, sets: list[str], secrets: list[str]) -> Model:
    """The resolved model of a stack file plus overrides, without rendering. Raises ConfigError."""
    config, _ = offline.load_config(stack, sets, secrets)
    catalog = default_catalog()
    settings = parse_settings(config, list(catalog.services), {c.config_key for c in catalog.credentials.values()})
    return resolve(catalog, settings)


def run(args: argparse.Namespace) -> int:
    fp = capacity.footprint(model_for(args.stack, args.sets, args.secrets), args.stack)
    print(json.dumps(capacity.as_json(fp), indent=2, sort_keys=True) if args.json else capacity.text(fp))
    for problem in fp.problems:
        print(f"error: {problem}", file=sys.stderr)
    return 0 if fp.fits else 1
