"""A prepared market on disk: Arrow IPC files that workers memory-map instead of reloading.

Layout of a prepared folder (written atomically: a temporary sibling renamed into place)::

    market.json            key, analytic settings (inputs by kind, delay overrides),
                           input hashes, publication delays used, legs, notes
    leg-<i>.arrow          one per leg: open_us, close_us and every feed line (float64)
    strikes-rows.arrow     per-strike GEX rows of all snapshots (when a chain was given)
    strikes-index.arrow    snapshot stamps and row offsets
    liqmap-*.arrow         stored liquidation maps, same two-file layout, or
    liqmap.pkl             the lazy liquidation-map estimator (maps built on demand)

Arrow IPC files are uncompressed so :func:`load_prepared` maps them with
``pyarrow.memory_map``: the line arrays are zero-copy, read-only views of the page
cache, shared by every process on the machine that opens the same folder.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from feeds.btfeed import FeedArrays, LazySnapshots, Snapshots
from feeds.legs import Leg
from gammabt.run import PreparedMarket
from plumbing.atomic import write_dir_atomic
from plumbing.errors import DataError

FORMAT = 2  # 2: publication delays per input kind (``delays``)
MANIFEST = "market.json"


def _write_ipc(path: Path, columns: dict[str, np.ndarray]) -> None:
    table = pa.table({k: pa.array(np.ascontiguousarray(v)) for k, v in columns.items()})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _read_ipc(path: Path) -> dict[str, np.ndarray]:
    source = pa.memory_map(str(path), "r")
    table = pa.ipc.open_file(source).read_all()
    out = {}
    for name in table.column_names:
        col = table[name].combine_chunks() if table[name].num_chunks != 1 else table[name].chunk(0)
        out[name] = col.to_numpy(zero_copy_only=True)
    return out


def _write_snapshots(folder: Path, stem: str, snaps: Snapshots) -> None:
    _write_ipc(folder / f"{stem}-rows.arrow", dict(snaps.columns))
    _write_ipc(folder / f"{stem}-index.arrow", {"stamps_us": snaps.stamps_us,
                                                "offset": snaps.offsets[:-1]})


def _read_snapshots(folder: Path, stem: str) -> Snapshots:
    rows = _read_ipc(folder / f"{stem}-rows.arrow")
    index = _read_ipc(folder / f"{stem}-index.arrow")
    n_rows = len(next(iter(rows.values()))) if rows else 0
    offsets = np.append(index["offset"], n_rows).astype(np.int64)
    offsets.setflags(write=False)
    return Snapshots(index["stamps_us"], offsets, rows)


def save_prepared(market: PreparedMarket, out: str | Path) -> Path:
    """Write ``market`` to the folder ``out`` (atomically) and return the folder.

    A folder that already holds the same key is left as it is (content-addressed).
    """
    out = Path(out)
    if out.exists():
        try:
            if json.loads((out / MANIFEST).read_text())["key"] == market.key:
                return out
        except (OSError, ValueError, KeyError):
            pass
        raise DataError("the output folder exists and holds something else", source=str(out),
                        expected="a new folder or one prepared from the same inputs",
                        fix="choose another --out or delete the folder")

    def fill(tmp: Path) -> None:
        first = market.legs[0][1]
        legs = []
        for i, (leg, arrays) in enumerate(market.legs):
            if arrays.strikes is not first.strikes or arrays.liq_map is not first.liq_map:
                raise ValueError("all legs must share the spot leg's snapshots")
            _write_ipc(tmp / f"leg-{i}.arrow", {"open_us": arrays.open_us,
                                                "close_us": arrays.close_us, **arrays.lines})
            legs.append({"name": leg.name, "kind": leg.kind,
                         "expiry": None if leg.expiry is None else leg.expiry.isoformat()})
        if first.strikes is not None:
            _write_snapshots(tmp, "strikes", first.strikes)
        liq = None
        if isinstance(first.liq_map, Snapshots):
            _write_snapshots(tmp, "liqmap", first.liq_map)
            liq = "stored"
        elif isinstance(first.liq_map, LazySnapshots):
            _write_ipc(tmp / "liqmap-index.arrow", {"stamps_us": first.liq_map.stamps_us})
            with open(tmp / "liqmap.pkl", "wb") as fh:
                pickle.dump(first.liq_map.source, fh, protocol=pickle.HIGHEST_PROTOCOL)
            liq = "lazy"
        manifest = {"format": FORMAT, "key": market.key, "market": market.market,
                    "input_hashes": market.input_hashes, "notes": list(market.notes),
                    "delays": dict(market.delays),
                    "legs": legs, "bar_freq_us": first.bar_freq_us,
                    "max_staleness_us": dict(first.max_staleness_us), "liq_map": liq}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")

    write_dir_atomic(out, fill)
    return out


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The ``market.json`` of a prepared folder (DataError naming the fix if missing)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"not a prepared market ({exc.__class__.__name__})", source=str(path),
                        expected="a folder written by `gammabt prepare --out`",
                        fix="run `gammabt prepare ... --out DIR` first") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"prepared format {manifest.get('format')!r}", source=str(path),
                        expected=f"format {FORMAT}", fix="prepare the market again")
    return manifest


def load_prepared(folder: str | Path) -> PreparedMarket:
    """Open a prepared folder; line arrays are memory-mapped (zero-copy, read-only)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    strikes = _read_snapshots(folder, "strikes") if (folder / "strikes-rows.arrow").exists() \
        else None
    liq: Snapshots | LazySnapshots | None = None
    if manifest["liq_map"] == "stored":
        liq = _read_snapshots(folder, "liqmap")
    elif manifest["liq_map"] == "lazy":
        with open(folder / "liqmap.pkl", "rb") as fh:
            source = pickle.load(fh)  # written by save_prepared above, never foreign data
        liq = LazySnapshots(_read_ipc(folder / "liqmap-index.arrow")["stamps_us"], source)
    legs = []
    for i, meta in enumerate(manifest["legs"]):
        cols = _read_ipc(folder / f"leg-{i}.arrow")
        open_us, close_us = cols.pop("open_us"), cols.pop("close_us")
        expiry = None if meta["expiry"] is None else pd.Timestamp(meta["expiry"])
        arrays = FeedArrays(open_us=open_us, close_us=close_us, lines=cols,
                            bar_freq_us=int(manifest["bar_freq_us"]), strikes=strikes,
                            liq_map=liq, max_staleness_us=manifest["max_staleness_us"])
        legs.append((Leg(meta["name"], meta["kind"], expiry), arrays))
    return PreparedMarket(legs=tuple(legs), market=manifest["market"], key=manifest["key"],
                          input_hashes=manifest["input_hashes"],
                          notes=tuple(manifest["notes"]), delays=dict(manifest["delays"]))
