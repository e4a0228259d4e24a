"""OptiInfra's policy pack (Pulumi CrossGuard) and the rules it runs.

- `policies.core`: what a rule sees (a resource as type token + camelCase inputs, the
  stack's resolved model) and how policy config is reconciled, as the Pulumi engine does.
- `policies.rules`: the rules, pure functions over rendered resources.
- `policies.pack`: the CrossGuard adapter (`pulumi_policy` policies built from the rules).
- `policies/__main__.py`: constructs the PolicyPack (which starts a server and blocks);
  nothing imports it.

The same rules run under `pulumi preview --policy-pack policies` and offline under
`python -m infra check`.
"""
