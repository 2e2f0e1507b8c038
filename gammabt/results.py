"""The results store: one folder per run, written atomically.

A run is first written into a hidden temporary folder beside it and renamed to
``<root>/<run_id>/`` only when every file is complete, so a crash never leaves a
folder that looks like a finished run. ``load_run`` reads one back.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from gammabt.index import update_index
from gammabt.report import write_tearsheet
from gammabt.run import RunResult
from gammabt.runpage import write_report_page
from plumbing.atomic import write_dir_atomic

FILES = ("config.json", "metrics.json", "returns.parquet", "equity.parquet",
         "trades.parquet", "orders.parquet", "ledger.parquet", "positions.parquet",
         "tearsheet.html", "report.html")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _dump(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(_json_safe(data), indent=2, sort_keys=True, default=str) + "\n")


def tearsheet_header(result: RunResult) -> dict[str, str]:
    """What the tearsheet shows under its title: who, with what, on what, when."""
    config = result.config
    params = ", ".join(f"{k}={v}" for k, v in config.params) or "defaults"
    terms = "; ".join(f"{kind}: " + ", ".join(f"{k}={v:g}" for k, v in values)
                      for kind, values in config.terms)
    costs = (f"commission {config.commission_bps:g} bps, slippage {config.slippage_bps:g} bps, "
             f"size {config.percent:g}% of equity on {config.instrument}"
             + (", short spot borrowing on" if config.borrow else "")
             + (f"; terms {terms}" if terms else ""))
    data = "; ".join(f"{role}: {Path(path).name} (sha256 {result.input_hashes.get(role, '')[:12]})"
                     for role, path in config.inputs().items())
    r = result.returns
    period = (f"{r.index[0]:%Y-%m-%d} .. {r.index[-1]:%Y-%m-%d} UTC ({len(r)} days)"
              if len(r) else "no days")
    return {"Strategy": config.strategy, "Label": config.label or "(none)",
            "Parameters": params, "Costs": costs, "Data": data or "(none)",
            "Period": period, "Run": result.run_id}


def zero_trade_notice(result: RunResult) -> str | None:
    """A line for runs that never traded, so a flat page does not look broken."""
    metrics = result.metrics
    if metrics.get("n_orders"):
        if metrics.get("n_trades"):
            return None
        if metrics.get("n_completed"):
            return None  # a position was opened and is still held
        return (f"No order was filled: {metrics.get('n_orders')} order(s) were refused "
                "(see orders.parquet); the strategy stayed flat.")
    return ("This run placed no order: the strategy's conditions never held, so its "
            "returns are zero throughout.")


def write_run(result: RunResult, root: str | Path = "results", *,
              tearsheet: bool = True, report: bool = True) -> Path:
    """Write ``result`` to ``root/<run_id>/`` atomically and return that folder.

    ``report.html`` (market charts of the run, :mod:`gammabt.runpage`) links to the
    plotly.js saved once in ``root``. The run is added to ``root/index.parquet``.

    An existing folder is never overwritten: a second run with the same id (same config
    and data within the same second) goes to ``<run_id>-2`` and so on.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / result.run_id
    n = 1
    while final.exists():  # the same config run twice within one second
        n += 1
        final = root / f"{result.run_id}-{n}"

    def fill(tmp: Path) -> None:
        _dump(tmp / "config.json", {
            "run_id": result.run_id,
            "digest": result.digest,
            "config": result.config.to_dict(),
            "input_hashes": result.input_hashes,
            "versions": result.versions,
            "notes": list(result.notes),
        })
        _dump(tmp / "metrics.json", result.metrics)
        frame = pd.DataFrame({"strategy": result.returns, "buy_and_hold": result.benchmark})
        frame.index.name = "date"
        frame.to_parquet(tmp / "returns.parquet")
        result.equity.to_parquet(tmp / "equity.parquet", index=False)
        result.trades.to_parquet(tmp / "trades.parquet", index=False)
        result.orders.to_parquet(tmp / "orders.parquet", index=False)
        result.ledger.to_parquet(tmp / "ledger.parquet", index=False)
        result.positions.to_parquet(tmp / "positions.parquet", index=False)
        if tearsheet:
            write_tearsheet(result.returns, result.benchmark, tmp / "tearsheet.html",
                            title=f"gammabt {result.config.strategy} ({result.run_id})",
                            header=tearsheet_header(result), notice=zero_trade_notice(result))
        if report:
            write_report_page(result, tmp / "report.html", plotlyjs_dir=root)

    write_dir_atomic(final, fill)
    try:
        update_index(root, final)
    except (OSError, ValueError) as exc:  # the run is safe on disk; the index is a cache
        warnings.warn(f"run written to {final}, but results index not updated ({exc}); "
                      "`gammabt ls` rebuilds it from the folders", stacklevel=2)
    return final


def load_run(folder: str | Path) -> dict[str, Any]:
    """Read a finished run folder back: config, metrics and the tables."""
    folder = Path(folder)
    return {
        "config": json.loads((folder / "config.json").read_text()),
        "metrics": json.loads((folder / "metrics.json").read_text()),
        "returns": pd.read_parquet(folder / "returns.parquet"),
        "equity": pd.read_parquet(folder / "equity.parquet"),
        "trades": pd.read_parquet(folder / "trades.parquet"),
        "orders": pd.read_parquet(folder / "orders.parquet"),
        "ledger": pd.read_parquet(folder / "ledger.parquet"),
        "positions": pd.read_parquet(folder / "positions.parquet"),
    }
