"""`python -m infra COMMAND --stack STACK ...`: the offline tools (see README.md)."""

import gc

# A command is one short process whose heap is mostly long-lived: modules, the catalog, the
# SDK's registrations. The collector's passes over that heap cost about a tenth of a `plan`;
# run it rarely (a young pass per 50,000 allocations instead of 700) and never over what the
# imports left behind (frozen). Cycles are still collected; peak memory does not move.
gc.set_threshold(50_000, 20, 20)

import importlib.util  # noqa: E402
import sys  # noqa: E402

# A Python without the pinned requirements (`python3 -m infra` on a fresh clone): one line, not
# the traceback of whichever command imports them first.
_MISSING = [name for name in ("pulumi", "pydantic", "yaml") if importlib.util.find_spec(name) is None]
if _MISSING:
    sys.stderr.write(f"error: this Python ({sys.executable}) lacks the program's requirements (no module "
                     f"{', '.join(map(repr, _MISSING))}). Fix: run ./optiinfra, which creates ./venv with them "
                     "and runs the command, or use venv/bin/python -m infra\n")
    raise SystemExit(2)

from .cli import main  # noqa: E402

gc.freeze()

raise SystemExit(main())
