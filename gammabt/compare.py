"""``gammabt compare``: several finished runs on one offline HTML page.

The page holds the metrics side by side (best per row marked, with the direction of
"better"), equity and drawdown overlays with one benchmark, monthly return heatmaps,
rolling Sharpe with a window fitted to the common period, trade statistics, the
distribution of daily returns, the config diff (differing keys first) and links to
each run's tearsheet and report page.

Runs over different periods are compared on their common window: return and benchmark
metrics are then recomputed on it (trade and account figures stay those of the whole
run, and the page says so). Runs whose periods do not overlap are refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gammabt.index import resolve_runs
from gammabt.pages import esc, fig_html, fmt_metric, plotlyjs_name, render, write_plotlyjs
from gammabt.report import BENCHMARK_KEYS, RETURN_KEYS, compute_metrics
from plumbing.atomic import write_atomic
from plumbing.atomic import write_text_atomic as _write_text
from plumbing.errors import ConfigError

__all__ = ["DIRECTION", "MAX_RUNS", "RunData", "common_window", "config_diff",
           "load_runs", "metrics_table", "rolling_window", "write_compare"]

MAX_RUNS = 50

# +1: higher is better, -1: lower is better, 0: neither (shown, not ranked).
DIRECTION: dict[str, int] = {
    "total_return": 1, "cagr": 1, "sharpe": 1, "sortino": 1, "max_drawdown": 1,
    "calmar": 1, "volatility_ann": -1, "win_rate": 1, "best_day": 1, "worst_day": 1,
    "n_days": 0, "benchmark_total_return": 0, "alpha_ann": 1, "beta": 0,
    "information_ratio_daily": 1, "n_trades": 0, "trade_win_rate": 1, "avg_trade_pnl": 1,
    "best_trade_pnl": 1, "worst_trade_pnl": 1, "profit_factor": 1, "n_orders": 0,
    "n_rejected": -1, "fees_paid_usd": -1, "funding_paid_usd": -1,
    "funding_received_usd": 1, "borrow_paid_usd": -1, "n_liquidations": -1,
    "max_margin_usage": -1, "gross_exposure_mean": 0, "net_exposure_mean": 0,
    "final_value": 1,
}
"""Direction of "better" per metric row; ``pnl:<instrument>`` rows are higher-better."""

LABELS: dict[str, str] = {
    "total_return": "Total return", "cagr": "CAGR", "sharpe": "Sharpe (365)",
    "sortino": "Sortino (365)", "max_drawdown": "Max drawdown", "calmar": "Calmar",
    "volatility_ann": "Volatility (ann.)", "win_rate": "Winning days", "best_day": "Best day",
    "worst_day": "Worst day", "n_days": "Days", "benchmark_total_return":
    "Buy & hold total return", "alpha_ann": "Alpha (ann.)", "beta": "Beta",
    "information_ratio_daily": "Information ratio (daily)", "n_trades": "Closed trades",
    "trade_win_rate": "Trade win rate", "avg_trade_pnl": "Avg trade PnL (USD)",
    "best_trade_pnl": "Best trade (USD)", "worst_trade_pnl": "Worst trade (USD)",
    "profit_factor": "Profit factor", "n_orders": "Orders", "n_rejected": "Refused orders",
    "fees_paid_usd": "Fees paid (USD)", "funding_paid_usd": "Funding paid (USD)",
    "funding_received_usd": "Funding received (USD)", "borrow_paid_usd": "Borrow paid (USD)",
    "n_liquidations": "Liquidations", "max_margin_usage": "Max margin usage",
    "gross_exposure_mean": "Gross exposure (mean)", "net_exposure_mean": "Net exposure (mean)",
    "final_value": "Final value (USD)",
}
_WINDOWED = set(RETURN_KEYS) | set(BENCHMARK_KEYS)


@dataclass(frozen=True)
class RunData:
    """What the comparison reads from one run folder."""

    folder: Path
    run_id: str
    label: str
    strategy: str
    config: dict[str, Any]
    input_hashes: dict[str, str]
    metrics: dict[str, Any]
    returns: pd.Series
    benchmark: pd.Series
    trades: pd.DataFrame

    @property
    def name(self) -> str:
        """Short display name: the label, else the run id."""
        return self.label or self.run_id


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("run file missing", source=str(path),
                          expected="a complete run folder written by gammabt run",
                          fix="rerun the backtest or drop this run") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON ({exc})", source=str(path),
                          expected="the JSON gammabt run writes", fix="rerun the backtest") \
            from None


def load_run_data(folder: str | Path) -> RunData:
    """Read one run folder (config, metrics, daily returns, trades)."""
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    metrics = _read_json(folder / "metrics.json")
    path = folder / "returns.parquet"
    if not path.is_file():
        raise ConfigError("run file missing", source=str(path),
                          expected="daily returns written by gammabt run",
                          fix="rerun the backtest or drop this run")
    frame = pd.read_parquet(path)
    trades_path = folder / "trades.parquet"
    trades = pd.read_parquet(trades_path) if trades_path.is_file() else pd.DataFrame()
    cfg = config.get("config", {})
    return RunData(folder=folder, run_id=folder.name, label=str(cfg.get("label") or ""),
                   strategy=str(cfg.get("strategy", "")), config=cfg,
                   input_hashes=dict(config.get("input_hashes", {})), metrics=metrics,
                   returns=frame["strategy"].dropna(), benchmark=frame["buy_and_hold"].dropna(),
                   trades=trades)


def load_runs(specs: list[str], root: str | Path = "results") -> list[RunData]:
    """Resolve run ids, label globs or folders and load 2 to ``MAX_RUNS`` runs."""
    folders = resolve_runs(specs, root)
    if not 2 <= len(folders) <= MAX_RUNS:
        raise ConfigError(f"{len(folders)} run(s) selected", source=" ".join(specs),
                          expected=f"2 to {MAX_RUNS} runs",
                          fix="name more runs (ids, label globs or folders)"
                          if len(folders) < 2 else "narrow the label glob")
    return [load_run_data(f) for f in folders]


def common_window(runs: list[RunData]) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last date every run has returns for; refuses runs that do not overlap."""
    for run in runs:
        if run.returns.empty:
            raise ConfigError("run has no daily returns", source=str(run.folder),
                              expected="at least one day", fix="drop this run")
    start = max(r.returns.index[0] for r in runs)
    end = min(r.returns.index[-1] for r in runs)
    if start > end:
        late = max(runs, key=lambda r: r.returns.index[0])
        early = min(runs, key=lambda r: r.returns.index[-1])
        raise ConfigError(
            f"run {late.run_id} ({late.returns.index[0]:%Y-%m-%d} .. "
            f"{late.returns.index[-1]:%Y-%m-%d}) does not overlap run {early.run_id} "
            f"({early.returns.index[0]:%Y-%m-%d} .. {early.returns.index[-1]:%Y-%m-%d})",
            source=str(late.folder), expected="runs sharing at least one day",
            fix="compare runs over overlapping periods")
    return start, end


def _windowed_metrics(run: RunData, start: pd.Timestamp, end: pd.Timestamp,
                      ) -> dict[str, Any]:
    """metrics.json when the run covers exactly the window, else return and benchmark
    metrics recomputed on it (the rest from metrics.json)."""
    r = run.returns
    if r.index[0] == start and r.index[-1] == end:
        return dict(run.metrics)
    clip_r = r.loc[start:end]
    clip_b = run.benchmark.loc[start:end].reindex(clip_r.index)
    out = dict(run.metrics)
    out.update({k: v for k, v in compute_metrics(clip_r, clip_b, periods_per_year=365).items()
                if k in _WINDOWED})
    return out


def _rows(metrics_list: list[dict[str, Any]]) -> list[str]:
    keys = [k for k in DIRECTION if any(k in m for m in metrics_list)]
    pnl = sorted({f"pnl:{name}" for m in metrics_list
                  for name in (m.get("pnl_by_instrument") or {})})
    return keys + pnl


def _value(metrics: dict[str, Any], key: str) -> Any:
    if key.startswith("pnl:"):
        return (metrics.get("pnl_by_instrument") or {}).get(key[4:])
    return metrics.get(key)


def _best(values: list[Any], direction: int) -> set[int]:
    nums = [(i, float(v)) for i, v in enumerate(values)
            if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)]
    if direction == 0 or len(nums) < 2:
        return set()
    target = max(v for _, v in nums) if direction > 0 else min(v for _, v in nums)
    if all(v == target for _, v in nums):
        return set()  # a tie everywhere marks nothing
    return {i for i, v in nums if v == target}


def metrics_table(runs: list[RunData], start: pd.Timestamp, end: pd.Timestamp,
                  ) -> pd.DataFrame:
    """Metric rows by run columns on the common window, plus ``direction``.

    Returns
    -------
    pandas.DataFrame
        Index: metric keys (``pnl:<instrument>`` for per-instrument PnL); columns: run
        ids in the given order, then ``direction`` (+1 higher is better, -1 lower is
        better, 0 not ranked). Missing values are NaN.
    """
    per_run = [_windowed_metrics(r, start, end) for r in runs]
    rows = _rows(per_run)
    data = {r.run_id: [_value(m, k) for k in rows] for r, m in zip(runs, per_run, strict=True)}
    frame = pd.DataFrame(data, index=pd.Index(rows, name="metric"), dtype="object")
    frame = frame.apply(pd.to_numeric, errors="coerce").astype("float64")
    frame["direction"] = [DIRECTION.get(k, 1) for k in rows]
    return frame


def _flatten(run: RunData) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in sorted(run.config.items()):
        if key == "params":
            continue
        if isinstance(value, dict):
            for sub, inner in sorted(value.items()):
                out[f"{key}.{sub}"] = json.dumps(inner, sort_keys=True, default=str)
        else:
            out[key] = json.dumps(value, sort_keys=True, default=str)
    for key, value in sorted((run.config.get("params") or {}).items()):
        out[f"params.{key}"] = json.dumps(value, sort_keys=True, default=str)
    for key, value in sorted(run.input_hashes.items()):
        out[f"data sha256 {key}"] = str(value)[:12]
    return out


def config_diff(runs: list[RunData]) -> list[dict[str, Any]]:
    """Every config key with each run's value; keys whose values differ come first."""
    flat = [_flatten(r) for r in runs]
    keys = sorted(set().union(*flat))
    rows = [{"key": k, "values": [f.get(k, "(absent)") for f in flat]} for k in keys]
    for row in rows:
        row["differs"] = len(set(row["values"])) > 1
    return sorted(rows, key=lambda row: not row["differs"])


def rolling_window(n_days: int) -> int | None:
    """Rolling-Sharpe window fitted to ``n_days``: a quarter of it, 7 to 90 days; None
    below 21 days (too short for a rolling figure worth drawing)."""
    if n_days < 21:
        return None
    return int(min(90, max(7, n_days // 4)))


def _charts(runs: list[RunData], start: pd.Timestamp, end: pd.Timestamp,
            ) -> tuple[list[dict[str, str]], list[str]]:
    import plotly.graph_objects as go

    notes: list[str] = []
    charts: list[dict[str, str]] = []
    rets = {r.run_id: r.returns.loc[start:end] for r in runs}
    names = {r.run_id: esc(r.name) for r in runs}
    bench = runs[0].benchmark.loc[start:end]
    # equity
    fig = go.Figure()
    for r in runs:
        growth = (1 + rets[r.run_id]).cumprod()
        fig.add_scatter(x=growth.index, y=growth.to_numpy(), mode="lines", name=names[r.run_id])
    if len(bench):
        fig.add_scatter(x=bench.index, y=(1 + bench).cumprod().to_numpy(), mode="lines",
                        name="Buy &amp; hold", line={"dash": "dot", "color": "#555"})
    fig.update_layout(
        title=f"Growth of 1 USD (common window)<br><sup>benchmark: buy and hold on the bars "
              f"of {names[runs[0].run_id]}</sup>", yaxis_title="value", xaxis_title="UTC date",
        updatemenus=[{"type": "buttons", "direction": "right", "x": 1, "y": 1.15,
                      "buttons": [{"label": "linear", "method": "relayout",
                                   "args": [{"yaxis.type": "linear"}]},
                                  {"label": "log", "method": "relayout",
                                   "args": [{"yaxis.type": "log"}]}]}])
    charts.append({"id": "chart-equity", "title": "Equity", "html": fig_html(fig, "chart-equity")})
    # drawdown
    fig = go.Figure()
    for r in runs:
        growth = (1 + rets[r.run_id]).cumprod()
        dd = growth / np.maximum(growth.cummax(), 1.0) - 1
        fig.add_scatter(x=dd.index, y=dd.to_numpy(), mode="lines", name=names[r.run_id])
    fig.update_layout(title="Drawdown (common window)", yaxis_tickformat=".0%",
                      xaxis_title="UTC date")
    charts.append({"id": "chart-drawdown", "title": "Drawdowns",
                   "html": fig_html(fig, "chart-drawdown", 360)})
    # rolling sharpe
    n_days = len(rets[runs[0].run_id])
    window = rolling_window(n_days)
    if window is None:
        notes.append(f"Rolling Sharpe not drawn: the common window has {n_days} days "
                     "(fewer than 21).")
    else:
        fig = go.Figure()
        for r in runs:
            x = rets[r.run_id]
            roll = x.rolling(window).mean() / x.rolling(window).std() * np.sqrt(365)
            roll = roll.replace([np.inf, -np.inf], np.nan)
            fig.add_scatter(x=roll.index, y=roll.to_numpy(), mode="lines",
                            name=names[r.run_id])
        fig.update_layout(title=f"Rolling Sharpe, {window}-day window (365/yr)",
                          xaxis_title="UTC date", xaxis_range=[start, end])
        charts.append({"id": "chart-rolling", "title": "Rolling Sharpe",
                       "html": fig_html(fig, "chart-rolling", 360)})
    # monthly heatmap: one row per run and year, blank where the run has no data
    months = []
    for r in runs:
        x = rets[r.run_id]
        monthly = (1 + x).groupby([x.index.year, x.index.month]).prod() - 1
        for year in sorted(set(x.index.year)):
            months.append((f"{names[r.run_id]} {year}",
                           [monthly.get((year, m), np.nan) for m in range(1, 13)]))
    z = np.array([row for _, row in months], dtype=float)
    text = [["" if np.isnan(v) else f"{v:.1%}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                "Dec"], y=[name for name, _ in months], text=text, texttemplate="%{text}",
        colorscale="RdYlGn", zmid=0, hoverongaps=False, colorbar={"tickformat": ".0%"}))
    fig.update_layout(title="Monthly returns (common window; blank = no data)",
                      yaxis_autorange="reversed")
    charts.append({"id": "chart-monthly", "title": "Monthly returns",
                   "html": fig_html(fig, "chart-monthly", max(260, 60 + 28 * len(months)))})
    # distribution
    fig = go.Figure()
    for r in runs:
        fig.add_histogram(x=rets[r.run_id].to_numpy(), name=names[r.run_id], opacity=0.55,
                          nbinsx=60)
    fig.update_layout(title="Distribution of daily returns (common window)", barmode="overlay",
                      xaxis_tickformat=".1%")
    charts.append({"id": "chart-dist", "title": "Daily returns",
                   "html": fig_html(fig, "chart-dist", 360)})
    return charts, notes


def _trade_stats(run: RunData) -> dict[str, str]:
    t = run.trades
    m = run.metrics
    out = {"Closed trades": fmt_metric("n_trades", m.get("n_trades")),
           "Win rate": fmt_metric("trade_win_rate", m.get("trade_win_rate")),
           "Avg PnL (USD)": fmt_metric("avg_trade_pnl", m.get("avg_trade_pnl")),
           "Best / worst (USD)": f"{fmt_metric('best_trade_pnl', m.get('best_trade_pnl'))}"
                                 f" / {fmt_metric('worst_trade_pnl', m.get('worst_trade_pnl'))}",
           "Profit factor": fmt_metric("profit_factor", m.get("profit_factor"))}
    if len(t) and "side" in t.columns:
        out["Long / short"] = f"{int((t['side'] == 'long').sum())} / " \
                              f"{int((t['side'] == 'short').sum())}"
    if len(t) and "bars" in t.columns:
        out["Median bars held"] = f"{float(t['bars'].median()):g}"
    return out


def _link(target: Path, page_dir: Path) -> str | None:
    if not target.is_file():
        return None
    return Path(os.path.relpath(target.resolve(), page_dir.resolve())).as_posix()


def write_compare(runs: list[RunData], out: str | Path, *, csv: str | Path | None = None,
                  parquet: str | Path | None = None) -> Path:
    """Write the comparison page of ``runs`` to ``out`` (plotly.js beside it).

    Parameters
    ----------
    runs
        2 to :data:`MAX_RUNS` runs from :func:`load_runs`.
    out
        The HTML file to write (atomically).
    csv, parquet
        Optional exports of the metrics table (rows: metrics; columns: ``metric``,
        ``direction`` and one per run id).

    Raises
    ------
    ConfigError
        Fewer than two runs, or runs that do not overlap.
    """
    if not 2 <= len(runs) <= MAX_RUNS:
        raise ConfigError(f"{len(runs)} run(s) given", expected=f"2 to {MAX_RUNS} runs",
                          fix="compare at least two runs")
    out = Path(out)
    start, end = common_window(runs)
    table = metrics_table(runs, start, end)
    notes: list[str] = []
    differ = [r for r in runs if r.returns.index[0] != start or r.returns.index[-1] != end]
    if differ:
        notes.append(
            f"The runs cover different periods; returns, drawdowns and return metrics are "
            f"compared on their common window {start:%Y-%m-%d} .. {end:%Y-%m-%d} "
            f"({len(runs[0].returns.loc[start:end])} days). Trade and account figures are "
            f"those of each whole run. Runs cut to the window: "
            f"{', '.join(r.name for r in differ)}.")
    charts, chart_notes = _charts(runs, start, end)
    notes.extend(chart_notes)
    rows = []
    for key in table.index:
        values = [None if np.isnan(v) else v for v in table.loc[key, [r.run_id for r in runs]]]
        if key in ("n_days", "n_trades", "n_orders", "n_rejected", "n_liquidations"):
            values = [None if v is None else int(v) for v in values]
        direction = int(table.loc[key, "direction"])
        best = _best(values, direction)
        rows.append({"key": key,
                     "label": LABELS.get(key, f"PnL {key[4:]} (USD)" if key.startswith("pnl:")
                                         else key),
                     "direction": {1: "higher", -1: "lower", 0: ""}[direction],
                     "cells": [{"text": fmt_metric(key, v), "raw": "" if v is None else repr(v),
                                "best": i in best} for i, v in enumerate(values)]})
    page_dir = out.parent
    page_dir.mkdir(parents=True, exist_ok=True)
    write_plotlyjs(page_dir)
    run_info = [{"run_id": r.run_id, "name": r.name, "label": r.label, "strategy": r.strategy,
                 "period": f"{r.returns.index[0]:%Y-%m-%d} .. {r.returns.index[-1]:%Y-%m-%d}",
                 "tearsheet": _link(r.folder / "tearsheet.html", page_dir),
                 "report": _link(r.folder / "report.html", page_dir),
                 "trades": _trade_stats(r)} for r in runs]
    html = render("compare.html.j2", title=f"Comparison of {len(runs)} runs",
                  window=f"{start:%Y-%m-%d} .. {end:%Y-%m-%d}", runs=run_info, rows=rows,
                  charts=charts, notes=notes, diff=config_diff(runs),
                  plotlyjs=plotlyjs_name())
    _write_text(out, html)
    export = table.reset_index()
    export = export[["metric", "direction", *[r.run_id for r in runs]]]
    for path, kind in ((csv, "csv"), (parquet, "parquet")):
        if path is None:
            continue
        if kind == "csv":
            write_atomic(path, lambda tmp: export.to_csv(tmp, index=False))
        else:
            write_atomic(path, lambda tmp: export.to_parquet(tmp, index=False))
    return out
