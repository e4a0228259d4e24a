"""What the Pulumi CLI runs for `--policy-pack policies`: it constructs the pack and nothing else.

The CLI starts `python -m pulumi.policy <engine> .` in this directory, which runs this file
as a script with this directory on sys.path: the pack's code is the package
`optiinfra_policies` next to it (from the project root the same modules are
`policies.optiinfra_policies`, which is how tests and `python -m infra check` import them).
Constructing `PolicyPack` starts the analyzer's gRPC server and blocks.
"""

from optiinfra_policies.pack import pack_arguments
from pulumi_policy import PolicyPack

PolicyPack(**pack_arguments())
