"""The run index: ``<results>/index.parquet``, one row per finished run folder.

Every :func:`gammabt.results.write_run` adds its run with :func:`update_index`. The
index is a cache of what the run folders hold, never the source of truth: when it is
missing, unreadable or does not list exactly the run folders on disk (a run written by
an older version, a folder deleted by hand) :func:`load_index` rebuilds it from the
folders.

Concurrency: writers serialize on a lock file created with ``O_CREAT | O_EXCL``; a
writer that cannot take the lock within ``timeout`` seconds leaves the index alone (the
next reader sees it stale and rebuilds it from the folders, so no run is ever lost).
A lock older than ``STALE_LOCK_S`` (a writer that crashed) is broken. Writes go to a
temporary file renamed over the index with ``os.replace``: readers see the old or the
new index, never half of one.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from gammabt.inputs import INPUT_SPECS
from plumbing.atomic import write_atomic
from plumbing.errors import ConfigError

__all__ = ["COLUMNS", "HEADLINE", "INDEX_NAME", "LABEL_PATTERN", "IndexWarning", "check_label",
           "load_index", "rebuild_index", "resolve_runs", "run_folders", "run_row",
           "update_index"]

INDEX_NAME = "index.parquet"
LOCK_NAME = ".index.lock"
STALE_LOCK_S = 60.0

LABEL_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""A run label: 1 to 64 letters, digits, ``-``, ``_`` or ``.`` (it becomes part of a
folder name and is shown in pages)."""

HEADLINE: tuple[str, ...] = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown",
                             "volatility_ann", "n_trades", "final_value",
                             "benchmark_total_return")
"""Metrics copied into the index (floats; NaN when the run has none)."""

COLUMNS: tuple[str, ...] = ("run_id", "label", "strategy", "params", "start", "end",
                            "n_days", "inputs", *HEADLINE, "path")


def check_label(label: str | None, source: str = "label") -> str | None:
    """Return ``label`` unchanged when valid; raise ConfigError otherwise.

    Parameters
    ----------
    label
        The proposed run label, or None for no label.
    source
        Where it came from, named in the error (``--label``, a TOML file ...).
    """
    if label is None:
        return None
    if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
        raise ConfigError(f"invalid run label {label!r}", source=source, column="label",
                          expected="1-64 letters, digits, '-', '_' or '.'",
                          fix="e.g. --label flip-lookback8")
    return label


def run_folders(root: str | Path) -> list[Path]:
    """Finished run folders under ``root`` (those holding config.json and metrics.json)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".")
                  and (p / "config.json").is_file() and (p / "metrics.json").is_file())


def _float(value: Any) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def run_row(folder: str | Path) -> dict[str, Any]:
    """The index row of one run folder (config.json, metrics.json, returns.parquet)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    cfg = config.get("config", {})
    start = end = pd.NaT
    returns = folder / "returns.parquet"
    if returns.is_file():
        index = pd.read_parquet(returns, columns=[]).index
        if len(index):
            start, end = index.min(), index.max()
    inputs = {key: cfg.get(key) for key in INPUT_SPECS if cfg.get(key)}
    row: dict[str, Any] = {
        "run_id": folder.name,
        "label": cfg.get("label") or "",
        "strategy": str(cfg.get("strategy", "")),
        "params": json.dumps(cfg.get("params", {}), sort_keys=True, default=str),
        "start": start,
        "end": end,
        "n_days": int(metrics.get("n_days") or 0),
        "inputs": json.dumps(inputs, sort_keys=True, default=str),
    }
    for key in HEADLINE:
        row[key] = _float(metrics.get(key))
    row["path"] = str(folder.resolve())
    return row


class IndexWarning(UserWarning):
    """A run folder could not be read into the index (it is left out)."""


def _rows_of(folders: Sequence[Path]) -> list[dict[str, Any]]:
    """Index rows of ``folders``; an unreadable folder is left out with one warning."""
    rows, skipped = [], []
    for folder in folders:
        try:
            rows.append(run_row(folder))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            skipped.append(f"{folder.name} ({type(exc).__name__}: {exc})")
    if skipped:
        warnings.warn(IndexWarning(
            f"left out of the run index, unreadable: {'; '.join(skipped)}. Repair or remove "
            "these folders."), stacklevel=3)
    return rows


def _frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    for col in ("start", "end"):
        frame[col] = pd.to_datetime(frame[col], utc=True).dt.as_unit("us")
    frame["n_days"] = frame["n_days"].astype("int64")
    for key in HEADLINE:
        frame[key] = frame[key].astype("float64")
    for col in ("run_id", "label", "strategy", "params", "inputs", "path"):
        frame[col] = frame[col].astype(str)
    return frame.sort_values("run_id", ignore_index=True)


def _write(root: Path, frame: pd.DataFrame) -> None:
    write_atomic(root / INDEX_NAME, lambda tmp: frame.to_parquet(tmp, index=False))


@contextlib.contextmanager
def _lock(root: Path, timeout: float) -> Iterator[bool]:
    """Hold ``root/.index.lock`` (yields True) or give up after ``timeout`` (False)."""
    path = root / LOCK_NAME
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - path.stat().st_mtime > STALE_LOCK_S:
                    path.unlink()  # its writer died holding it
                    continue
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(0.02)
            continue
        try:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            yield True
        finally:
            path.unlink(missing_ok=True)
        return


def _read(root: Path) -> pd.DataFrame | None:
    path = root / INDEX_NAME
    if not path.is_file():
        return None
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError):
        return None  # unreadable: rebuilt from the folders
    if list(frame.columns) != list(COLUMNS):
        return None  # written by another version
    return frame


def rebuild_index(root: str | Path = "results", *, timeout: float = 10.0) -> pd.DataFrame:
    """Rebuild the index from every run folder under ``root``, write it and return it."""
    root = Path(root)
    frame = _frame(_rows_of(run_folders(root)))
    if root.is_dir():
        with _lock(root, timeout) as held:
            if held:
                _write(root, frame)
    return frame


def update_index(root: str | Path, folder: str | Path, *, timeout: float = 10.0) -> bool:
    """Add (or replace) the row of run ``folder`` in ``root``'s index.

    Returns False when the lock could not be taken within ``timeout`` seconds; the index
    is then left as it was and the next :func:`load_index` rebuilds it from the folders.
    """
    root = Path(root)
    row = run_row(folder)
    with _lock(root, timeout) as held:
        if not held:
            return False
        current = _read(root)
        if current is None:
            frame = _frame(_rows_of(run_folders(root)))
        else:
            current = current[current["run_id"] != row["run_id"]]
            frame = _frame([*current.to_dict("records"), row])
        _write(root, frame)
    return True


def load_index(root: str | Path = "results") -> pd.DataFrame:
    """The index of ``root``, rebuilt first when missing, unreadable or stale.

    Stale means the run ids it lists differ from the finished run folders on disk.
    """
    root = Path(root)
    current = _read(root)
    on_disk = {p.name for p in run_folders(root)}
    if current is not None and set(current["run_id"]) == on_disk:
        return current
    return rebuild_index(root)


def resolve_runs(specs: Sequence[str], root: str | Path = "results") -> list[Path]:
    """Run folders named by run id, label glob or path, in the order given.

    A spec that is an existing folder is taken as a run folder; otherwise it is matched
    against run ids under ``root``, then against labels (shell-style glob, so
    ``flip-*`` selects every run labelled ``flip-...``). Duplicates are dropped.
    """
    root = Path(root)
    index = None
    out: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            if not (path / "metrics.json").is_file():
                raise ConfigError("not a run folder", source=str(path),
                                  expected="a folder written by gammabt run (metrics.json)",
                                  fix="pass a results/<run_id> folder")
            found = [path]
        else:
            if index is None:
                index = load_index(root)
            ids = index["run_id"]
            hits = index[ids == spec]
            if hits.empty:
                by_id = [fnmatch.fnmatchcase(v, spec) for v in ids]
                by_label = [fnmatch.fnmatchcase(v, spec) for v in index["label"]]
                hits = index[[a or b for a, b in zip(by_id, by_label, strict=True)]]
            if hits.empty:
                raise ConfigError(f"no run matches {spec!r}", source=str(root),
                                  expected="a run id, a label glob or a run folder",
                                  fix="list the runs with `gammabt ls`")
            found = [Path(p) for p in hits.sort_values("run_id")["path"]]
        for folder in found:
            if folder.resolve() not in {f.resolve() for f in out}:
                out.append(folder)
    return out
