"""Command line of the offline tools. Each command lives in infra/commands/<name>.py
with `HELP`, `add_arguments(parser)` and `run(args) -> int`, and optionally `EXAMPLES`
(shown under its `--help`).

User errors (bad config, bad flags, a missing or damaged stack file, an unusable output
path) print one `error:` line naming the key, flag or file and the fix, exit 2 and
change nothing; never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import json
import os
import re
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import NoReturn

import yaml

from .settings import ConfigError, did_you_mean

VERSION = "0.1.0"
"""The version of the offline tools and the program (`python -m infra --version`)."""

COMMANDS = ("plan", "render", "check", "diff", "docs", "capacity", "adopt", "backup", "restore")

EXIT_STATUS = ("Exit status: 0 ok; 1 a check failed (check: a mandatory policy; capacity: over budget; diff "
               "--exit-code: changes; adopt: something needs attention) or a prerequisite is missing (adopt, "
               "backup, restore: no Docker engine answers); 2 a user error (one `error:` line naming the flag, "
               "key or file and the fix; nothing changed).")

STACK_ENV = "PULUMI_STACK"
"""The stack when `-s/--stack` is absent, as the Pulumi CLI reads it."""

PROG_ENV = "OPTIINFRA_PROG"
"""How the user started the tools, set by ./optiinfra (its `$0`); unset: `python -m infra`."""
MODULE_PROG = "python -m infra"


def prog() -> str:
    """The command name usage lines, examples and fixes show: what the user typed to get here."""
    return os.environ.get(PROG_ENV, "").strip() or MODULE_PROG

# Examples for commands whose module has no EXAMPLES (docs.py has its own owner).
_EXAMPLES = {
    "docs": ("python -m infra docs            # rewrite the generated docs\n"
             "python -m infra docs --check    # exit 1 when they are stale\n"
             "python -m infra docs --check --json"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`error: ... Fix: ...`, exit 2) and a did-you-mean
    for a mistyped command or flag."""

    argv: Sequence[str] = ()
    """The command line being parsed (to find the chosen command's flags)."""

    def error(self, message: str) -> NoReturn:
        fix = f"see `{self.prog} --help`"
        choice = re.search(r"invalid choice: '([^']*)'", message)
        if choice:
            message = re.sub(r" \(choose from .*\)$", "", message)
            fix = f"{did_you_mean(choice.group(1), COMMANDS)}use one of: {', '.join(COMMANDS)}"
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            flags = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
            flags += [s for a in self._subparser_actions() for s in a.option_strings if s.startswith("--")]
            hint = did_you_mean(unknown.group(1).split("=")[0], flags)
            command = self.argv[0] if self.argv and self.argv[0] in COMMANDS else ""
            fix = f"{hint}see `{self.prog}{' ' + command if command else ''} --help`"
        print(f"error: {self.prog}: {message}. Fix: {fix}", file=sys.stderr)
        raise SystemExit(2)

    def _subparser_actions(self) -> list[argparse.Action]:
        """The chosen subcommand's options (argparse reports its unknown flags at the top)."""
        subs = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = [p for s in subs for name, p in s.choices.items() if name in self.argv[:1]]
        return [a for p in chosen for a in p._actions]


class _Once(argparse.Action):
    """A flag given at most once: a second `--stack` is refused (in `_stack_of`, as one line)
    instead of silently winning."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        before = getattr(namespace, self.dest, None)
        if before is not None and not getattr(namespace, f"{self.dest}_repeated", None):
            namespace.__dict__[f"{self.dest}_repeated"] = (before, values)
        setattr(namespace, self.dest, values)


def add_stack_arguments(p: argparse.ArgumentParser, *, stack_required: bool = True) -> None:
    """-s/--stack and the --set/--secret/--secret-file overrides shared by every command."""
    p.add_argument("-s", "--stack", default=None, action=_Once,
                   help=f"stack name: a Pulumi.<stack>.yaml next to Pulumi.yaml (default: ${STACK_ENV})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override stack config for this run, e.g. services.grafana.hostPort=3100 (repeatable)")
    p.add_argument("--secret", dest="secrets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a secret config value for this run, e.g. postgresPassword=...; KEY=- reads the "
                        "value from standard input, so it stays out of shell history (repeatable)")
    p.add_argument("--secret-file", dest="secret_files", action="append", default=[], metavar="PATH",
                   help="read secret config values from a file: KEY=VALUE lines, or a YAML/JSON map "
                        "(repeatable; - is standard input)")
    p.set_defaults(stack_required=stack_required)


def present_keys(args: argparse.Namespace) -> set[str]:
    """The `optiinfra:` keys the stack file and the --secret flags set (what the offline
    render does not stand in for)."""
    from .settings import NAMESPACE
    from .stack import keys_in_file

    keys = set(keys_in_file(args.stack))
    for item in getattr(args, "secrets", []):
        key = item.partition("=")[0].strip()
        keys.add(key if ":" in key else f"{NAMESPACE}:{key}")
    return keys


def version() -> str:
    try:
        sdk = metadata.version("pulumi")
    except metadata.PackageNotFoundError:
        sdk = "not installed"
    return f"{prog()} {VERSION} (pulumi SDK {sdk}, Python {sys.version.split()[0]})"


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI. With `only`, just that command's module is imported (each pulls in its
    own dependencies: the policy pack, the Kubernetes SDK, ...); the full listing for
    `--help` and for mistakes imports them all."""
    name = prog()
    top = _Parser(prog=name, description="Offline tools for the OptiInfra Pulumi program.",
                  epilog=f"Examples:\n  {name} plan -s dev\n  PULUMI_STACK=prod {name} check\n"
                         f"  {name} COMMAND --help\n\n" + EXIT_STATUS,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--version", action="version", version=version(),
                     help="print the version and exit")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS if only is None else (only,):
        mod = importlib.import_module(f".commands.{command}", __package__)
        p = sub.add_parser(command, help=mod.HELP, description=mod.HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        if p.epilog is None:  # diff and adopt write their own (examples, then more and exit status)
            examples = getattr(mod, "EXAMPLES", None) or _EXAMPLES.get(command, "")
            p.epilog = "Examples:\n" + "\n".join(f"  {line}" for line in examples.splitlines()) + "\n\n" + EXIT_STATUS
        p.epilog = p.epilog.replace(MODULE_PROG, name)  # as the user started it: ./optiinfra or python -m infra
        p.set_defaults(run=mod.run)
    return top


# ---- secrets from a file or standard input -----------------------------------------

_LINE = re.compile(r"(?P<key>[A-Za-z_][A-Za-z0-9_.:-]*)\s*=(?P<value>.*)")


def _quoted(key: str, value: str) -> str:
    """`KEY=VALUE` for --secret with VALUE kept exactly (a JSON string is a YAML string)."""
    return f"{key}={json.dumps(value, ensure_ascii=False)}"


def _stdin(what: str) -> str:
    if sys.stdin is None or sys.stdin.closed:
        raise ConfigError("--secret", f"{what} reads standard input, but there is none", "pipe the value in")
    if sys.stdin.isatty():
        return getpass.getpass(f"{what}: ")
    return sys.stdin.read()


def secret_file(source: str, text: str) -> list[str]:
    """--secret values from a file's text: `KEY=VALUE` lines (blank lines and # comments
    skipped), or a YAML/JSON map of KEY: value. Values are never echoed in errors."""
    name = "--secret-file " + ("- (standard input)" if source == "-" else source)
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip() and
             not line.lstrip().startswith("#")]
    if lines and all(_LINE.fullmatch(line.strip()) for _, line in lines):
        out = []
        for _, line in lines:
            m = _LINE.fullmatch(line.strip())
            assert m is not None
            out.append(_quoted(m["key"], m["value"].strip()))
        return out
    try:
        data = yaml.safe_load(text) if lines else {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{name} line {mark.line + 1}" if mark is not None else name
        raise ConfigError("--secret-file", "is neither KEY=VALUE lines nor a YAML/JSON map",
                          "write one KEY=VALUE per line, e.g. postgresPassword=...", where=where) from None
    if not isinstance(data, dict):
        raise ConfigError("--secret-file", "is neither KEY=VALUE lines nor a YAML/JSON map",
                          "write one KEY=VALUE per line, e.g. postgresPassword=...", where=name)
    out = []
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError("--secret-file", f"the value of '{key}' is not a string",
                              f"quote it: {key}: \"...\" (or write KEY=VALUE lines)", where=name)
        out.append(_quoted(key, str(value)))
    return out


def resolve_secrets(secrets: Sequence[str], files: Sequence[str]) -> list[str]:
    """--secret KEY=VALUE as given, KEY=- with the value read from standard input, then
    each --secret-file's values. Raises ConfigError."""
    out: list[str] = []
    stdin_used = False
    for path in files:
        if path == "-":
            if stdin_used:
                raise ConfigError("--secret-file", "reads standard input a second time", "pass one - only")
            stdin_used = True
            out += secret_file(path, _stdin("--secret-file -"))
            continue
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("--secret-file", f"there is no file {path}", "give the path of an existing file") \
                from None
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "it is not UTF-8 text"
            raise ConfigError("--secret-file", f"{path} cannot be read ({reason})",
                              "give a readable UTF-8 file") from None
        out += secret_file(path, text)
    for item in secrets:
        key, sep, value = item.partition("=")
        if sep and value == "-":
            if stdin_used:
                raise ConfigError("--secret", f"{key}=- reads standard input, which another value already read",
                                  "read one value from standard input; put the others in a --secret-file")
            stdin_used = True
            text = _stdin(f"--secret {key}")
            value = text[:-1] if text.endswith("\n") else text
            value = value[:-1] if value.endswith("\r") else value
            if not value:
                raise ConfigError("--secret", f"{key}=- read an empty value from standard input",
                                  f"pipe the value in, e.g. pass show optiinfra/{key} | ... --secret {key}=-")
            out.append(_quoted(key.strip(), value))
        else:
            out.append(item)
    return out


def _stack_of(args: argparse.Namespace) -> None:
    """-s/--stack, else $PULUMI_STACK; a command that needs one and has neither stops."""
    repeated = getattr(args, "stack_repeated", None)
    if repeated:
        raise ConfigError("--stack", f"is given twice ({repeated[0]} and {repeated[1]})",
                          "give one -s/--stack per command (one stack at a time)")
    if getattr(args, "stack", "") is None:
        args.stack = os.environ.get(STACK_ENV) or None
        args.stack_from_env = args.stack is not None
        if args.stack is None and getattr(args, "stack_required", False):
            from .stack import available_stacks

            raise ConfigError("--stack", "is missing", f"pass -s STACK (one of: {', '.join(available_stacks())}) "
                              f"or set {STACK_ENV}")
    if getattr(args, "stack", None):
        from .stack import available_stacks, stack_file

        known = available_stacks()
        if args.stack not in known:  # stack names are case-sensitive, whatever the file system says
            raise ConfigError("--stack", f"there is no stack file {stack_file(args.stack).name}",
                              f"{did_you_mean(args.stack, known)}use one of: {', '.join(known) or 'none found'}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = parser(argv[0] if argv and argv[0] in COMMANDS else None)
    if isinstance(top, _Parser):
        top.argv = argv
    args = top.parse_args(argv)
    try:
        _stack_of(args)
        if hasattr(args, "secrets"):
            args.secrets = resolve_secrets(args.secrets, getattr(args, "secret_files", []))
        return int(args.run(args))
    except ConfigError as err:
        if err.key == "--stack" and getattr(args, "stack_from_env", False):  # not a flag: say where it came from
            err = ConfigError(err.key, err.problem, f"{err.fix} (or pass -s STACK)",
                              where=f"environment variable {STACK_ENV}={args.stack}")
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("error: interrupted. Fix: run the command again", file=sys.stderr)
        return 130

