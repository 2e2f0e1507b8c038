"""Canonical data: schemas, loaders for real formats, the simulator, Backtrader feeds."""

from feeds.loaders import bar_freq, load_bars, load_chain, resample_bars

__all__ = ["bar_freq", "load_bars", "load_chain", "resample_bars"]
