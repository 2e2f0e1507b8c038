"""Shared helpers under every other package: errors, typing aliases, time conversion,
atomic writes.

Imports flow into this package from ``indicators``, ``feeds``, ``strategies`` and
``gammabt``; it imports nothing of ours (``tests/unit/test_layering.py``).

Modules
-------
errors    the one error hierarchy every package raises and the CLI prints
aliases   typing aliases used across packages (``PathLike``, ``TimeLike``, ...)
timeconv  tz-aware time <-> epoch microseconds, duration parsing, bar spacing
atomic    atomic file and folder writes (temporary sibling, fsync, ``os.replace``)
"""
