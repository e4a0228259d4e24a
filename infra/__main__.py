"""`python -m infra COMMAND --stack STACK ...`: the offline tools (see README.md)."""

import gc

# A command is one short process whose heap is mostly long-lived: modules, the catalog, the
# SDK's registrations. The collector's passes over that heap cost about a tenth of a `plan`;
# run it rarely (a young pass per 50,000 allocations instead of 700) and never over what the
# imports left behind (frozen). Cycles are still collected; peak memory does not move.
gc.set_threshold(50_000, 20, 20)

from .cli import main  # noqa: E402

gc.freeze()

raise SystemExit(main())
