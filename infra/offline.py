"""The offline renderer: the real program under Pulumi's mock runtime.

No Pulumi CLI, no Docker, no cluster. The stack's config is read from
`Pulumi.<stack>.yaml` (plus `--set`/`--secret` overrides), handed to the program the
way the engine hands it over, and every resource registration is recorded with its
inputs, parent, dependencies and options. Secret values are kept apart: the recorded
inputs carry the marker `[secret]`, and the plain values are only available to tests
that ask for them (to prove they never leak).

With a `fingerprint_key`, each secret is recorded as `[secret]#<fingerprint>` instead:
the first 16 hex digits of an HMAC-SHA256 under that key, so two renders with the same
key can tell a changed secret from an unchanged one (the offline diff) without either
value being recoverable. The key is made per run and never stored, so a fingerprint
means nothing outside that run. What is hashed (`fingerprint`) is a contract between
revisions: `diff --base` compares a fingerprint made by another revision's renderer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import struct_pb2
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import rpc

from policies.optiinfra_policies.vocabulary import PROJECT, RANDOM_PASSWORD, SECRET_MARK, STACK, UNKNOWN_MARK

from . import stack as stack_config
from .graph import Resolved
from .model import Catalog

SECRET = SECRET_MARK
UNKNOWN = UNKNOWN_MARK
# Pulumi's property wire format marks a secret as {SIG_KEY: SECRET_SIG, "value": ...} (the
# resource protocol's "special signatures", fixed constants of the protocol that every
# language SDK and the engine share: sdk/go/common/resource/properties.go SigKey, SecretSig).
# Written here, not read from the Python SDK's private names.
_SIG = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_ENV_ENTRY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class Resource:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    dependencies: list[str]
    protect: bool
    delete_before_replace: bool

    @property
    def short(self) -> str:
        return f"{self.type.split(':')[-1]}/{self.name}"


@dataclass(frozen=True)
class Read:
    """An existing resource the program reads (`<Resource>.get`): the engine records it as
    external and never creates, updates or deletes it (no policy sees it either)."""

    urn: str
    type: str
    name: str
    id: str
    parent: str


@dataclass
class Render:
    stack: str
    resources: list[Resource]
    outputs: dict[str, Any]
    model: Resolved
    """The resolved model the program deployed."""
    secret_values: set[str] = field(default_factory=set)
    """Every plain secret value seen (for leak tests; never printed)."""
    reads: list[Read] = field(default_factory=list)
    """Existing resources the program reads (`Resource.get`) and never manages."""

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def by_name(self, type_: str, name: str) -> Resource:
        for r in self.resources:
            if r.type == type_ and r.name == name:
                return r
        raise KeyError(f"{type_} {name}")


def fingerprint(key: bytes, value: Any) -> str:
    """`#<16 hex>`: HMAC-SHA256 under `key` of a secret's protobuf value (its JSON with
    sorted keys for a struct or list, else its Python repr)."""
    if isinstance(value, (struct_pb2.Struct, struct_pb2.ListValue)):
        from google.protobuf import json_format  # only a render with a key needs it (plan does not)

        text = json_format.MessageToJson(value, sort_keys=True)
    else:
        text = repr(value)
    return "#" + hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:16]


def _plain(value: Any, secrets: set[str], key: bytes | None = None) -> Any:
    """A protobuf value as plain data with each secret replaced by the marker (with a
    key: the marker and the secret's keyed fingerprint)."""
    if isinstance(value, struct_pb2.Struct):
        if _SIG in value and value[_SIG] == _SECRET_SIG:
            _collect(value["value"], secrets)
            inner = value["value"]
            marker = SECRET if key is None else SECRET + fingerprint(key, inner)
            # `NAME=value` (a Docker env entry): the name is no secret, show it.
            if isinstance(inner, str) and _ENV_ENTRY.match(inner):
                return inner.split("=", 1)[0] + "=" + marker
            return marker
        if _SIG in value:  # assets, archives, resource references
            return {k: _plain(v, secrets, key) for k, v in sorted(value.items()) if k != _SIG}
        return {k: _plain(v, secrets, key) for k, v in sorted(value.items())}
    if isinstance(value, struct_pb2.ListValue):
        return [_plain(v, secrets, key) for v in value]
    if value == rpc.UNKNOWN:
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _collect(value: Any, secrets: set[str]) -> None:
    if isinstance(value, struct_pb2.Struct):
        for v in value.values():
            _collect(v, secrets)
    elif isinstance(value, struct_pb2.ListValue):
        for v in value:
            _collect(v, secrets)
    elif isinstance(value, str) and value:
        secrets.add(value)


class _Mocks(pmocks.Mocks):
    """Outputs the providers compute: known where a plan needs them, unknown otherwise
    (as in `pulumi preview`)."""

    def new_resource(self, args: pmocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ == RANDOM_PASSWORD:
            # A stand-in value, secret like the real one; never a usable password.
            state["result"] = f"generated-{args.name}-" + "x" * 24
        return f"{args.name}-id", state

    def call(self, args: pmocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


class _Recorder(pmocks.MockMonitor):
    def __init__(self, fingerprint_key: bytes | None = None) -> None:
        super().__init__(_Mocks())
        self.records: list[Resource] = []
        self.reads: list[Read] = []
        self.secret_values: set[str] = set()
        self.fingerprint_key = fingerprint_key

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        """URNs as the engine writes them: the parent's whole type chain, without the
        root stack's type (the mock's own version keeps only the last link)."""
        if parent:
            qualified = parent.split("::")[2]
            if qualified != STACK:
                type_ = f"{qualified}${type_}"
        return f"urn:pulumi:{pulumi.get_stack()}::{pulumi.get_project()}::{type_}::{name}"

    # The SDK calls these from the default executor's threads, and the mock monitor's
    # `_sync_await` there would leave a new event loop in each thread, never closed: at
    # interpreter exit the garbage collector then closes them after their sockets, and
    # now and then prints "Exception ignored in BaseEventLoop.__del__ ... Invalid file
    # descriptor: -1". Each call gets its own loop instead, closed when it returns.
    def Invoke(self, request: Any) -> Any:
        return _on_own_loop(lambda: super(_Recorder, self).Invoke(request))  # type: ignore[no-untyped-call]

    def RegisterResource(self, request: Any) -> Any:
        return _on_own_loop(lambda: self._register(request))

    def ReadResource(self, request: Any) -> Any:
        return _on_own_loop(lambda: self._read(request))

    def _register(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != STACK:
            self.records.append(Resource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                custom=bool(request.custom),
                inputs=_plain(request.object, self.secret_values, self.fingerprint_key),
                dependencies=sorted(set(request.dependencies)),
                protect=bool(request.protect),
                delete_before_replace=bool(request.deleteBeforeReplace),
            ))
        return response

    def _read(self, request: Any) -> Any:
        response = super().ReadResource(request)  # type: ignore[no-untyped-call]
        self.reads.append(Read(urn=response.urn, type=request.type, name=request.name, id=request.id,
                               parent=request.parent))
        return response


def _on_own_loop(call: Callable[[], Any]) -> Any:
    """`call()` with a fresh event loop as this thread's, closed afterwards."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return call()
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@contextmanager
def _main_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop for one render, closed deterministically at its end (its
    executor's threads joined first), never left for the garbage collector."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


# ---- rendering ------------------------------------------------------------------

def render(stack: str, sets: Sequence[str] = (), secrets: Sequence[str] = (), catalog: Catalog | None = None,
           stack_path: Path | None = None, fingerprint_key: bytes | None = None) -> Render:
    """Render a stack offline. Raises ConfigError for bad config or flags. With
    `fingerprint_key`, secrets in the inputs are `[secret]#<fingerprint>` (module doc)."""

    config = stack_config.read(stack, sets, secrets, stack_path)
    with _main_loop():
        return _render(stack, config, catalog, fingerprint_key)


def _render(stack: str, config: stack_config.StackConfig, catalog: Catalog | None,
            fingerprint_key: bytes | None) -> Render:
    """The program under the mocks, with the SDK's public API only. The order matters:
    the config is validated (`program.load`) before `set_mocks` registers the root stack,
    so a refused render leaves no registration outstanding and nothing to drain; the
    registrations of an accepted one are awaited by `pulumi.runtime.test`, which returns
    only when every RPC and output of the program has finished."""
    from . import program

    # Fresh settings per render (no root stack, no outputs of an earlier render in this
    # process): set_mocks keeps the previous root, which would parent this stack's
    # resources under another stack's URN.
    pulumi.runtime.reset_options(project=PROJECT, stack=stack, preview=True)
    # As the engine hands config to a program; the program reads it with pulumi.Config.
    pulumi.runtime.set_all_config(dict(config.values), sorted(config.secret_keys))
    model, supplied = program.load(config.values.keys(), catalog)  # raises ConfigError before any resource exists
    recorder = _Recorder(fingerprint_key)
    outputs: dict[str, Any] = {}

    def run() -> Coroutine[Any, Any, None]:
        pulumi.runtime.set_mocks(recorder.mocks, project=PROJECT, stack=stack, preview=True, monitor=recorder)
        return _resolve(program.deploy(model, supplied), outputs)

    # `test` runs `run`, awaits what it returns, then every outstanding RPC and output.
    pulumi.runtime.test(run)()  # type: ignore[no-untyped-call]
    # Registrations arrive from several threads; order them by URN so that two renders
    # of the same stack are identical.
    return Render(stack=stack, resources=sorted(recorder.records, key=lambda r: r.urn), outputs=outputs,
                  model=model, secret_values=recorder.secret_values,
                  reads=sorted(recorder.reads, key=lambda r: r.urn))


async def _resolve(exported: dict[str, Any], into: dict[str, Any]) -> None:
    """Each stack output's value into `into` (a secret one as the marker)."""
    for key, value in exported.items():
        out = pulumi.Output.from_input(value)
        resolved = await out.future()
        into[key] = SECRET if await out.is_secret() else resolved


def plan_json(r: Render) -> dict[str, Any]:
    """The step shape of `pulumi preview --json` (all creates, as against empty state)."""
    steps = []
    for res in r.resources:
        steps.append({
            "op": "create",
            "urn": res.urn,
            "newState": {
                "urn": res.urn,
                "type": res.type,
                "custom": res.custom,
                "parent": res.parent,
                "inputs": res.inputs,
                "dependencies": res.dependencies,
                "protect": res.protect,
                "deleteBeforeReplace": res.delete_before_replace,
            },
        })
    summary = {"create": len(steps)}
    for e in r.reads:  # as `pulumi preview --json` shows a `.get`: a read step
        steps.append({"op": "read", "urn": e.urn,
                      "newState": {"urn": e.urn, "type": e.type, "id": e.id, "parent": e.parent, "external": True}})
    if r.reads:
        summary["read"] = len(r.reads)
    return {"config": {"stack": r.stack}, "steps": steps, "outputs": r.outputs, "changeSummary": summary}
