"""OptiInfra's policy pack, as a self-contained package (`pulumi policy publish` packages
the `policies/` directory and nothing else, so nothing here imports the program).

`vocabulary` is the contract between the program and the pack: the type tokens, label
keys and `service_of`; the program imports it from here.
"""
