"""Offline diff of two renders of one stack, and what a port change sets off.

Two snapshots are compared resource by resource: the working tree against the working
tree with `--set`/`--secret` overrides, or a git revision (rendered by that revision's
own code) against the working tree. Secret values never appear: the offline renderer
records them as keyed fingerprints (infra/offline.py), shown as `[secret]`.

    replace.py   what a provider replaces, for which field of which resource type (and why)
    snapshot.py  a render as a snapshot; another git revision rendered by its own code
    compare.py   the resource and field changes between two snapshots, with typed notes
    impact.py    port changes, what follows from each (from the model), and the typed alerts
    report.py    the whole diff (`diff`, `run_diff`) and its text; `Diff.to_json` for --json
"""
