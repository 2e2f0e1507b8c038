"""Content-addressed Parquet cache of canonical tables.

A canonical table built from a source file is stored as
``<cache dir>/<kind>-<key>.parquet`` where ``key`` is the sha256 of a JSON document
holding the sha256 of the source file's bytes, a digest of the loader code that built
it (:func:`feeds.formats.dispatch.code_digest`: the format's module, the dispatch and
the conform step) and the loader options. Editing the file (even touching one byte),
changing an option or changing the loader's code therefore misses the cache; renaming
or moving the file does not.

The cache directory is ``$GAMMABT_CACHE`` (e.g. outside the checkout, shared by several
worktrees) or ``<repo>/.cache/canonical/``.

Writes are atomic (:func:`plumbing.atomic.write_atomic`): the table is written to a
temporary file in the cache directory and moved into place with ``os.replace``, so a reader never sees a half-written entry
and concurrent writers (``pytest -n``) cannot corrupt one another. Entries that cannot
be read (truncated, not Parquet, wrong columns) are treated as misses and rewritten.
Only complete, validated tables are ever passed to :func:`write_cached`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from plumbing.aliases import PathLike
from plumbing.atomic import write_atomic

ENV_VAR = "GAMMABT_CACHE"
DEFAULT = Path(__file__).resolve().parent.parent / ".cache" / "canonical"

_CHUNK = 1 << 20


class CacheWriteWarning(UserWarning):
    """The cache directory could not be written; the table is returned uncached.

    Fix: point ``$GAMMABT_CACHE`` at a writable folder, or pass ``cache=False``.
    """


def cache_dir() -> Path:
    """Return the cache directory (``$GAMMABT_CACHE`` or ``<repo>/.cache/canonical``).

    The directory is not created here; :func:`write_cached` creates it on first use.
    """
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT


def file_sha256(path: PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks.

    Parameters
    ----------
    path
        File to hash (the compressed bytes for a ``.gz`` file).

    Returns
    -------
    str
        64 hexadecimal characters.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(source_sha256: str, *, kind: str, code: str,
              options: Mapping[str, object] | None = None) -> str:
    """Key of a cache entry: sha256 over source hash, kind, loader code and options.

    Parameters
    ----------
    source_sha256
        :func:`file_sha256` of the source file.
    kind
        What the entry holds, e.g. ``"bars:cryptodatadownload"``.
    code
        Digest of the loader code that builds the entry; a changed loader misses.
    options
        Loader options that change the output. Values must be JSON-serializable or
        have a stable ``str`` (they are serialized with ``sort_keys=True``).
    """
    payload = json.dumps({"source": source_sha256, "kind": kind, "code": code,
                          "options": dict(options or {})}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def cache_path(key: str, *, kind: str = "table") -> Path:
    """Path of the cache entry for ``key`` (it may not exist)."""
    safe_kind = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in kind)
    return cache_dir() / f"{safe_kind}-{key}.parquet"


def read_cached(key: str, *, kind: str = "table",
                required: Iterable[str] = ()) -> pa.Table | None:
    """Read a cache entry, or return None when it is absent or unusable.

    Parameters
    ----------
    key, kind
        As given to :func:`write_cached`.
    required
        Column names the entry must have; an entry lacking one is a miss.

    Returns
    -------
    pyarrow.Table or None
        None on a miss, including a corrupt entry (which is deleted so that the next
        write replaces it).
    """
    path = cache_path(key, kind=kind)
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException, ValueError):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    if any(name not in table.column_names for name in required):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return table


def write_cached(key: str, table: pa.Table, *, kind: str = "table") -> Path | None:
    """Write ``table`` atomically as the cache entry for ``key``.

    The table goes to a temporary file in the cache directory, which is then renamed
    over the entry with ``os.replace``. On an ``OSError`` (read-only or full disk)
    a :class:`CacheWriteWarning` is issued, nothing is left behind and None is
    returned.

    Returns
    -------
    pathlib.Path or None
        The entry's path, or None when it could not be written.
    """
    path = cache_path(key, kind=kind)
    try:
        write_atomic(path, lambda tmp: pq.write_table(table, tmp))
    except OSError as exc:
        warnings.warn(f"could not write cache entry {path}: {exc}. Fix: set ${ENV_VAR} to "
                      "a writable folder or pass cache=False", CacheWriteWarning, stacklevel=2)
        return None
    return path


def cached_table(source: PathLike, build: Callable[[], pa.Table], *, kind: str,
                 code: str, options: Mapping[str, object] | None = None,
                 required: Iterable[str] = ()) -> pa.Table:
    """Return the cached table for ``source`` or build, cache and return it.

    ``build`` is called only on a miss; if it raises, nothing is written.

    Parameters
    ----------
    source
        The source file whose bytes key the entry.
    build
        Zero-argument function producing the complete, validated table.
    kind, code, options
        See :func:`cache_key`.
    required
        See :func:`read_cached`.
    """
    key = cache_key(file_sha256(source), kind=kind, code=code, options=options)
    hit = read_cached(key, kind=kind, required=required)
    if hit is not None:
        return hit
    table = build()
    write_cached(key, table, kind=kind)
    return table
