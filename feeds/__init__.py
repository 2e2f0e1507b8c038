"""Canonical data: schemas, loaders for real formats, the simulator, Backtrader feeds."""
