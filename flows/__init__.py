"""Prefect flows and the `enginesweep` CLI: thin wiring over `engines` and `evaluation`."""
