"""Shared helpers under every other package: typing aliases, time conversion, atomic writes.

Imports flow into this package from ``indicators``, ``feeds``, ``strategies`` and
``gammabt``; it imports nothing of ours except the error classes of
:mod:`indicators.errors`, which are due to move here (``plumbing.errors``).

Modules
-------
aliases   typing aliases used across packages (``PathLike``, ``TimeLike``, ...)
timeconv  tz-aware time <-> epoch microseconds, duration parsing, bar spacing
atomic    atomic file and folder writes (temporary sibling, fsync, ``os.replace``)
"""
