"""`diff`: what `pulumi up` would change, offline, and what a port change sets off.

    python -m infra diff --stack dev --set services.grafana.hostPort=3100
    python -m infra diff --stack dev --base            # merge base with main -> working tree
    python -m infra diff --stack dev --base HEAD~1 --json

Without `--base` it compares the working tree with the working tree plus the
`--set`/`--secret` overrides. With `--base [REV]` it renders REV (default: the merge base
of HEAD and main) with REV's own code and stack file, and compares that with the working
tree (plus any overrides).

`--json` prints one object (stable; `version` changes if its shape does):

    version      1
    stack, old, new, empty
    summary      {create, update, replace, delete, same}: counts
    resources[]  {urn, type, name, op, service, protect, deleteBeforeReplace,
                  changes[] {path, old, new, replaces, reason, secret}, notes[]}
                 only changed resources; op is create|update|replace|delete; a path is
                 dotted, with [key] for list items (env entries by name, other objects
                 by name/label/file, else by index); secrets appear as "[secret]"
    outputs[]    {path, old, new}: changed stack outputs
    ports[]      {service, port, old, new: {container, host, bind} | null, summary,
                  effects[] {kind, subject, detail, follows, resources[], outputs[], seen}}
                 kind: container|health|dependent|scrape|datasource|network-policy|ingress|output;
                 follows=false items say why something is NOT affected
    warnings[]   {kind, message}; kind: stateful-replace|data-at-risk|host-port-taken|band|
                 unreachable|stale-port|no-delete-first|dormant-update|
                 stateful-restart|protected-replace|not-restarted
    notes[]      strings
    cost[]       strings: what the change costs a month per service ("+2 data-collector-worker
                 replicas: +$9.03/month"), then "total: ..."; [] when nothing priced changes

Exit status: 0 (also with changes; with `--exit-code`, 1 when there are changes),
2 on a user error (bad flag, config that does not validate, unknown revision).
"""

from __future__ import annotations

import argparse
import json
import textwrap

from ..cli import add_stack_arguments
from ..diffing import report

HELP = "compare two offline renders of a stack (overrides or a git revision) and show what a port change sets off"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    examples, more = (__doc__ or "\n\n\n\n").split("\n\n", 2)[1:]  # the docstring's examples, then the rest
    p.epilog = f"Examples:\n{textwrap.indent(textwrap.dedent(examples), '  ')}\n\n{more}"
    add_stack_arguments(p)
    p.add_argument("--base", nargs="?", const="", default=None, metavar="REV",
                   help="compare with the stack as rendered at git revision REV "
                        "(no REV: the merge base of HEAD and main)")
    p.add_argument("--json", action="store_true",
                   help="print the diff as JSON (a stable shape, below)")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when there are changes (like git diff --exit-code)")


def run(args: argparse.Namespace) -> int:
    base: str | bool | None = False if args.base is None else (args.base or None)
    d = report.run_diff(args.stack, args.sets, args.secrets, base=base)
    if args.json:
        print(json.dumps(d.to_json(), indent=2, sort_keys=True))
    else:
        print(report.text(d))
    return 1 if args.exit_code and not d.empty else 0
