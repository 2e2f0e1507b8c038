"""Atomic writes: a reader sees the old content or the complete new one, never a part.

Both functions write into a uniquely named temporary sibling of the target (same
folder, so the final ``os.replace`` is a rename on one file system), flush it to disk
with ``fsync`` and only then move it into place. The temporary name carries the process
id and a random part, so concurrent writers (``pytest -n``, two CLI runs) never share
one. On any error the temporary is removed and the target is untouched.

Functions
---------
write_atomic        one file, written by a callback (bytes, text, a Parquet table, ...)
write_bytes_atomic  one file from bytes
write_text_atomic   one file from text (UTF-8)
write_dir_atomic    one folder, filled by a callback
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from plumbing.aliases import PathLike

__all__ = ["temp_sibling", "write_atomic", "write_bytes_atomic", "write_dir_atomic",
           "write_text_atomic"]


def temp_sibling(path: PathLike) -> Path:
    """A fresh, unique hidden name beside ``path`` (``.<name>.<pid>.<random>.tmp``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be synced
        _fsync(path)


def write_atomic(path: PathLike, write: Callable[[Path], object]) -> Path:
    """Write the file ``path`` atomically through ``write(temporary_path)``.

    Parameters
    ----------
    path
        The target file; its folder is created if missing.
    write
        Called once with the temporary path to write, e.g.
        ``lambda p: frame.to_parquet(p, index=False)``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def write_dir_atomic(path: PathLike, fill: Callable[[Path], object], *,
                     overwrite: bool = False) -> Path:
    """Create the folder ``path`` atomically through ``fill(temporary_folder)``.

    ``fill`` writes every file into the (empty, existing) temporary folder; the files
    are then synced and the folder renamed to ``path``.

    Parameters
    ----------
    path
        The target folder; its parent is created if missing.
    fill
        Called once with the temporary folder.
    overwrite
        Replace an existing folder at ``path`` (it is moved aside, the new one moved in,
        then the old one deleted). Without it an existing non-empty folder makes the
        final rename fail with ``OSError`` and nothing changes.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    tmp.mkdir()
    try:
        fill(tmp)
        for root, _dirs, files in os.walk(tmp):
            for name in files:
                _fsync(Path(root) / name)
            _fsync_dir(Path(root))
        if overwrite and path.exists():
            old = temp_sibling(path)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)
    return path
