"""The simulated market as a value (:class:`Market`) and its on-disk form.

A market folder holds ``<table>.parquet`` for every table plus ``market.json``
(scenario, seed, resolved parameters, simulation settings, row counts). It is written
atomically: everything goes into a hidden temporary sibling first, which is then renamed.
No wall-clock time is stored, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from feeds.schema import (
    BARS,
    CHAIN,
    FUNDING,
    FUTURES,
    LIQUIDATIONS,
    PERP_OI,
    Schema,
    check_table,
)
from plumbing.atomic import write_dir_atomic
from plumbing.errors import ConfigError, DataError

FORMAT = "gammabt.market/1"
#: Tables every market folder has, in the order of the Market fields.
TABLES = ("bars", "chain", "perp", "perp_oi", "funding", "liquidations", "futures",
          "dealer_gamma")
OPTIONAL_TABLES = ("flows", "barriers")
#: Canonical schema of each table (columns a reader relies on).
SCHEMAS: dict[str, Schema] = {"bars": BARS, "chain": CHAIN, "perp": BARS, "perp_oi": PERP_OI,
                              "funding": FUNDING, "liquidations": LIQUIDATIONS,
                              "futures": FUTURES}


@dataclass(frozen=True, eq=False)
class Market:
    """One simulated market: canonical tables plus the ground truth behind them.

    Attributes
    ----------
    bars
        Spot OHLCV (``feeds.schema.BARS``); ``ts`` is the bar open.
    chain
        Option chain snapshots (``CHAIN``) with ``index_price`` (spot) and
        ``dealer_position`` (signed dealer contracts; customers hold the other side).
    perp
        Perpetual OHLCV (``BARS``).
    perp_oi
        Perpetual open interest (``PERP_OI``), BTC and USD, at each bar open.
    funding
        Funding rates per 8 hours (``FUNDING``), paid at 00:00, 08:00, 16:00 UTC.
    liquidations
        Every forced close (``LIQUIDATIONS``): ``ts`` is the end of the internal step
        in which price crossed the level, ``price`` the liquidation level, ``size`` BTC.
    futures
        Dated futures (``FUTURES``) at each bar open, plus ``open_interest`` (BTC).
    dealer_gamma
        True dealer exposure at each bar open: ``ts, spot, dealer_gex_usd`` (USD per 1%
        move), ``net_gamma`` (BTC per USD), ``regime`` (+1 long / -1 short gamma),
        ``dealer_delta_btc`` and ``hedge_flow_btc`` (dealer market orders during the bar),
        ``dealer_vanna_usd`` (USD of dealer delta change per +1 vol point of the option
        book) and ``barrier_gex_usd`` (the barrier book's part of ``dealer_gex_usd``).
    scenario, seed, params
        Scenario name, seed and the fully resolved parameters.
    flows
        Per-bar agent flows (BTC, + = buying) and state (depth, basis book, IV...).
    meta
        Simulation settings: ``days, freq, chain_freq, n_options, format``.
    barriers
        The dealers' barrier positions (``BARRIERS``: ``ts`` = when each entered the
        book), when the scenario has ``[[options.barriers]]``; else None.
    """

    bars: pa.Table
    chain: pa.Table
    perp: pa.Table
    perp_oi: pa.Table
    funding: pa.Table
    liquidations: pa.Table
    futures: pa.Table
    dealer_gamma: pa.Table
    scenario: str
    seed: int
    params: dict[str, Any]
    flows: pa.Table | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    barriers: pa.Table | None = None

    def tables(self) -> dict[str, pa.Table]:
        """All tables by name (``flows`` included when present)."""
        out = {name: getattr(self, name) for name in TABLES}
        for name in OPTIONAL_TABLES:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def write(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write every table as Parquet plus ``market.json``, atomically.

        Parameters
        ----------
        folder
            Target folder. It must not exist or be empty unless ``overwrite``.
        overwrite
            Replace an existing non-empty folder.

        Returns
        -------
        Path
            The folder written.

        Raises
        ------
        ConfigError
            If ``folder`` exists, is not empty and ``overwrite`` is False.
        """
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ConfigError("output path is a file", source=str(folder),
                              expected="a folder path", fix="choose another --out")
        if folder.is_dir() and any(folder.iterdir()) and not overwrite:
            raise ConfigError("output folder exists and is not empty", source=str(folder),
                              expected="a new or empty folder",
                              fix="pass overwrite=True (--overwrite) or choose another folder")

        def fill(tmp: Path) -> None:
            rows = {}
            for name, table in self.tables().items():
                pq.write_table(table, tmp / f"{name}.parquet")
                rows[name] = table.num_rows
            info = {"format": FORMAT, "scenario": self.scenario, "seed": self.seed,
                    "meta": self.meta, "rows": rows, "params": self.params}
            (tmp / "market.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

        return write_dir_atomic(folder, fill, overwrite=True)


def load_market(folder: str | Path) -> Market:
    """Read a folder written by :meth:`Market.write`.

    Raises
    ------
    DataError
        If ``market.json`` or a table file is missing or unreadable.
    """
    folder = Path(folder)
    meta_path = folder / "market.json"
    if not meta_path.is_file():
        raise DataError("not a simulated-market folder (no market.json)", source=str(folder),
                        expected="a folder written by `gammabt simulate` / Market.write",
                        fix="simulate a market first or point to the right folder")
    try:
        info = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"market.json is not valid JSON ({exc})", source=str(meta_path),
                        expected="the JSON written by Market.write",
                        fix="re-create the folder with `gammabt simulate`") from exc
    tables: dict[str, pa.Table | None] = {}
    for name in TABLES + OPTIONAL_TABLES:
        path = folder / f"{name}.parquet"
        if not path.is_file():
            if name in OPTIONAL_TABLES:
                tables[name] = None
                continue
            raise DataError(f"table file {path.name} is missing", source=str(folder),
                            expected=f"{', '.join(t + '.parquet' for t in TABLES)}",
                            fix="re-create the folder with `gammabt simulate`")
        try:
            tables[name] = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"table {path.name} is not a readable Parquet file ({exc})",
                            source=str(path), expected="the Parquet table Market.write wrote",
                            fix="re-create the folder with `gammabt simulate`") from None
        schema = SCHEMAS.get(name)
        if schema is not None:
            missing = [f.name for f in schema.fields
                       if f.required and f.name not in tables[name].column_names]
            if missing:
                raise DataError(f"table {path.name} lacks column(s) {missing}",
                                source=str(path),
                                expected=f"the {schema.name} table ({', '.join(schema.names)})",
                                fix="re-create the folder with `gammabt simulate`")
            try:  # a hand-edited or damaged table: the loaders' value rules apply too
                check_table(tables[name], schema, str(path))
            except DataError as exc:
                raise DataError(exc.problem, source=exc.source, row=exc.row,
                                column=exc.column, expected=exc.expected,
                                fix=f"{exc.fix}, or re-create the folder with "
                                    "`gammabt simulate`") from None
    return Market(**tables, scenario=str(info.get("scenario", "")),
                  seed=int(info.get("seed", 0)), params=info.get("params", {}),
                  meta=info.get("meta", {}))
