"""What the Pulumi CLI runs for `--policy-pack policies`: it constructs the pack and nothing else.

The CLI starts `python -m pulumi.policy <engine> .` in this directory, which runs this file
as a script; constructing `PolicyPack` starts the analyzer's gRPC server and blocks. The
rules live in importable modules (policies/rules.py) so that tests and
`python -m infra check` use them without a server.
"""

import sys
from pathlib import Path

# Run as a script, this directory is on sys.path and the project root is not. Import the
# rules as the package `policies` (the very modules tests and the offline check import) and
# keep this directory off the path, so that `core`, `rules` or `config` never shadow a
# top-level module of that name.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from pulumi_policy import PolicyPack  # noqa: E402

from policies.optiinfra_policies.pack import pack_arguments  # noqa: E402

PolicyPack(**pack_arguments())
