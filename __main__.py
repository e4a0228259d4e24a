"""OptiInfra: the whole platform from one catalog (see README.md)."""

from infra.program import main

main()
