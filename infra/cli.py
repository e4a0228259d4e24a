"""Command line of the offline tools. Each command lives in infra/commands/<name>.py
with `HELP`, `add_arguments(parser)` and `run(args) -> int`.

User errors (bad config, bad flags, a missing stack) print one `error:` line naming
the key and the fix, exit 2 and change nothing; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .settings import ConfigError

COMMANDS = ("plan", "render", "check", "diff", "docs", "capacity", "adopt", "backup", "restore")


def add_stack_arguments(p: argparse.ArgumentParser, *, stack_required: bool = True) -> None:
    """--stack and the --set/--secret overrides shared by every command."""
    p.add_argument("--stack", required=stack_required, help="stack name: a Pulumi.<stack>.yaml next to Pulumi.yaml")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override stack config for this run, e.g. services.grafana.hostPort=3100 (repeatable)")
    p.add_argument("--secret", dest="secrets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a secret config value for this run, e.g. postgresPassword=... (repeatable)")


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI. With `only`, just that command's module is imported (each pulls in its
    own dependencies: the policy pack, the Kubernetes SDK, ...); the full listing for
    `--help` and for mistakes imports them all."""
    top = argparse.ArgumentParser(prog="python -m infra", description="Offline tools for the OptiInfra Pulumi program.")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS if only is None else (only,):
        mod = importlib.import_module(f".commands.{name}", __package__)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(run=mod.run)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
