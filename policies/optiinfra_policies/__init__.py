"""OptiInfra's policy pack (Pulumi CrossGuard), as a self-contained package.

`pulumi policy publish` packages the pack directory (policies/: PulumiPolicy.yaml,
__main__.py, requirements.txt, config/, this package) and nothing else, so nothing here
imports the program: only the standard library, PyYAML and pulumi-policy's public API.
Run by the CLI, __main__.py imports this package as `optiinfra_policies`; from the project
root the program, `python -m infra check` and the tests import `policies.optiinfra_policies`
(relative imports inside make both work).

Modules
- `vocabulary`: the contract between the program and the pack: type tokens, label and
  annotation keys, the stamp formats, `service_of`/`tier_of`. The program imports it.
- `standards`: what both refuse: well-known default credentials (known_defaults.json),
  unpinned image references. The program's settings import them from here.
- `core`: what a rule sees (`Resource`), policy config reconciled as the engine does.
- `rules`: the rules, pure functions of resources and policy config, one module per family
  (exposure, supply chain, reliability, isolation, credentials, data).
- `pack`: the CrossGuard adapter (public pulumi-policy API only).

Where each fact comes from
The rules judge what the resources carry, what the stack's other resources carry (stack
policies), and the policy config (policies/config/<stack>.json over the schema defaults).
They never read the stack config or the program's model, so under the engine and offline
they see the same thing and the pack has no copy of the program.
- On the resources, written by the program anyway: service and tier labels, the Docker
  `public` label, image references, ports, networks joined, namespaces, probes, limits,
  security contexts, volumes, NetworkPolicy peers, `protect`.
- Stamped by the program from the catalog (vocabulary.py; absent means "the program said
  nothing"): each catalog port's name, band and range (Docker label
  `io.optiinfra.port.<container port>`, Service annotation `optiinfra.io/port.<name>`,
  `http:metrics:9000-9999`); the networks a container's connections need
  (`io.optiinfra.networks`); the catalog's volume paths (`...data-paths`); the reason an
  image cannot run a Docker health check (`io.optiinfra.no-healthcheck`); slow start
  (`optiinfra.io/slow-start`); public on Services and Ingresses (`optiinfra.io/public`);
  the stack's `kubernetes.requireDigest` (`optiinfra.io/require-digest`).
  Trade-off: a fact the pack needs becomes a visible, reviewable input of the resource
  (a few labels and annotations more in the plan) instead of a second reading of the
  config; the catalog stays the one source (the bands, for one, stay in infra/catalog.py:
  the program stamps the band and its range, the pack keeps no copy). The pack trusts
  stamps as it trusts labels: they catch a renderer or a hand edit that diverges from
  them, not a wrong catalog.
- By naming convention (vocabulary.tier_scoped_name): a tier network or namespace is
  `<prefix>-<tier>`, so its tier is read back from its name (`tier_of_name`).
- In policy config: enforcement levels, the forbidden tier pairs (databases and frontend
  never share a network or a NetworkPolicy peer, a schema default: the rule judges the
  rendered edges against it, so a dependency the stack config adds, like
  `services.portal.dependsOn=[postgres]`, still fails tier-isolation), exceptions and
  exemptions with their reasons, and switches (requireDigest, requireLoopback, ...).

Secrets and unknowns under the engine
pulumi-policy hands validations secret inputs unwrapped (no public API keeps the mark),
so a rule cannot tell a secret value from plaintext there. Offline, the renderer marks
every secret `[secret]`; `Resource.secrets_marked` says which of the two a rule has.
- Structural, both ways: on Kubernetes a credential-named env var must come through
  `valueFrom.secretKeyRef`; a URL with a password in an env value, a ConfigMap, or a
  command / health-check argument is a violation, marked or not.
- By value, both ways: a well-known default credential is a violation whether it travels
  as a secret or not (under the engine the value is visible; offline a secret shows only
  its mark, and the settings refuse a supplied default before anything renders).
- By mark, offline only: a credential-named Docker env value that is not secret, and a
  Kubernetes Secret whose data the program did not mark secret. Under the engine every
  Docker env value arrives plain, so `no-plaintext-credentials` does not judge Docker env
  values there (it would flag every generated password); `python -m infra check` (CI runs
  it on every pull request and before `pulumi up` in pulumi-up.yml) covers them, and the program
  builds every credential as a secret Output. pulumi-kubernetes keeps a Secret's data
  secret in the state itself.
Values not known yet (preview) are read through the proxy's public Mapping/Sequence
protocol; a read the proxy refuses (UnknownValueError) becomes `[unknown]`, which rules
treat as "cannot judge yet".
"""
