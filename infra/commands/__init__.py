"""Offline commands (`python -m infra COMMAND`)."""
