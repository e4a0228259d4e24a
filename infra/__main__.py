"""`python -m infra COMMAND --stack STACK ...`: the offline tools (see README.md)."""

from .cli import main

raise SystemExit(main())
