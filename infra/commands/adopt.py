"""`adopt`: read the local Docker engine's docker-compose deployment and print how this
program takes it over on the same volumes.

    python -m infra adopt --stack dev [--project optiinfra] [--docker-host unix:///var/run/docker.sock]
    python -m infra adopt --stack dev --json

`--json` prints the findings as one object instead (the same exit status): stack, project,
host, containers[] {name, service, state, composeService}, adopted[] {service, volume,
path, dockerVolume, configKey}, fresh[], notes[], unmatched[], blockers[], credentials[]
{service, configKey, env, state}, owners[] {dockerVolume, user}, networks[], volumesSeen,
needsAttention.

Only reads the engine (GET requests: containers, their config and mounts, volumes,
networks); changes nothing, on the engine or in the stack. Prints the containers and
volumes mapped onto the catalog, what it cannot match, the `pulumi config set` lines that
adopt the volumes, the commands to stop compose, and the credentials to rotate. The
step-by-step guide is docs/adoption.md.

Exit status: 0 when every compose volume is adopted and nothing blocks `pulumi up`; 1 when
something needs attention first (a volume or container it cannot match, data on a host
directory, a data directory the catalog puts elsewhere), when the engine has nothing of
the project, or when no engine answers (the message says where it looked); 2 on a user
error (bad flag, unknown stack, a stack that does not deploy to Docker).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Any

from policies.optiinfra_policies.vocabulary import CONTAINER_PREFIX

from .. import adoption, dockerapi, stack
from ..cli import add_stack_arguments
from ..settings import ConfigError

HELP = ("read the local Docker engine's docker-compose deployment (read-only) and print the stack config, "
        "commands and credential rotation to take it over on the same volumes")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    examples, more = (__doc__ or "\n\n\n\n").split("\n\n", 2)[1:]  # the docstring's examples, then the rest
    p.epilog = f"Examples:\n{textwrap.indent(textwrap.dedent(examples), '  ')}\n\n{more}"
    add_stack_arguments(p)
    p.add_argument("--project", default=adoption.DEFAULT_PROJECT,
                   help=f"docker-compose project name (label {adoption.PROJECT_LABEL}; default %(default)s)")
    p.add_argument("--docker-host", default=None, metavar="URL",
                   help=f"the engine: unix:///path or tcp://host:port (default: DOCKER_HOST, else "
                        f"{dockerapi.DEFAULT_HOST})")
    p.add_argument("--json", action="store_true", help="print the findings as JSON (the same exit status)")


def as_json(found: adoption.Findings, stack_name: str, host: str) -> dict[str, Any]:
    """The findings `report` prints, as data (no credential value: there is none in them)."""
    return {
        "stack": stack_name, "project": found.project, "host": host,
        "containers": [{"name": c.name, "service": c.service, "state": c.state, "composeService": c.compose_service}
                       for c in found.containers],
        "adopted": [{"service": a.service, "volume": a.volume, "path": a.path, "dockerVolume": a.docker_volume,
                     "configKey": a.key} for a in found.adopted],
        "fresh": found.fresh, "notes": found.notes, "unmatched": found.unmatched, "blockers": found.blockers,
        "credentials": [{"service": c.service, "configKey": c.config_key, "env": c.env, "state": c.state}
                        for c in found.credentials],
        "owners": [{"dockerVolume": a.docker_volume, "user": user} for a, user in found.owners],
        "networks": found.networks, "volumesSeen": found.volumes_seen, "needsAttention": found.needs_attention,
    }


def run(args: argparse.Namespace) -> int:
    model = stack.model_of(args.stack, args.sets, args.secrets)
    if model.settings.target != "docker":
        raise ConfigError("--stack", f"stack {args.stack} deploys to {model.settings.target}, and adopt takes over a "
                          "docker-compose deployment on Docker", "use a Docker stack such as dev")
    host = dockerapi.resolve_host(args.docker_host)
    try:
        engine = dockerapi.Engine(host)
    except dockerapi.DockerUnavailable as err:  # not a place an engine could be: a bad value, exit 2
        raise ConfigError("--docker-host", str(err), "write unix:///path/to/docker.sock or tcp://host:port") from None
    try:
        found = adoption.discover(engine, model, args.project)
    except dockerapi.DockerUnavailable as err:  # a missing prerequisite: exit 1 (cli.EXIT_STATUS)
        print(f"error: {err}. Fix: start the Docker engine that runs the compose deployment, or point "
              "--docker-host (or DOCKER_HOST) at it", file=sys.stderr)
        return 1
    if not found.containers and not found.volumes_seen:
        print(f"error: the Docker engine at {host} has no container or volume of compose project {args.project} "
              f"(label {adoption.PROJECT_LABEL}) and no container named {CONTAINER_PREFIX}*. "
              "Fix: pass --project NAME (docker compose ls shows it)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(as_json(found, args.stack, host), indent=2))
        return 1 if found.needs_attention else 0
    print(adoption.report(found, args.stack, host))
    if found.needs_attention:
        print(f"\n{len(found.unmatched)} not matched, {len(found.blockers)} to fix before `pulumi up` (above; "
              f"{adoption.GUIDE})", file=sys.stderr)
        return 1
    return 0
