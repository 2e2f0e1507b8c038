"""The one reporting adapter: run metrics and the HTML tearsheet, both from QuantStats.

Conventions
-----------
- Returns are daily **simple** returns indexed by UTC dates. Crypto trades every day,
  so everything is annualized with ``periods_per_year=365`` (QuantStats defaults to
  252); the value is passed explicitly to every QuantStats function that takes one
  (``sharpe``, ``sortino``, ``volatility``, ``cagr``, ``calmar``, ``greeks`` and the
  tearsheet). CAGR therefore uses ``years = n_days / 365``.
- QuantStats strips time zones itself and some of its helpers compare tz-naive dates,
  so the adapter converts a tz-aware index to UTC and drops the zone before calling it
  (a naive index is taken to be UTC already). Inputs are never modified.
- Missing days (NaN) are dropped: statistics are computed on observed days, as
  QuantStats does. Infinite values, returns below -100 %, duplicated or unsorted dates
  raise :class:`~plumbing.errors.InputError`.
- The benchmark is a return **series** (buy and hold on the same bars), never a ticker,
  so QuantStats has nothing to download. Benchmark figures are computed on the dates
  both series have.
- Every metric is a plain ``float``/``int`` or ``None``; ``None`` means undefined for this
  input (empty or one-day series, zero volatility, no losing day, no benchmark ...).
  NaN and infinities never leave this module, so the dict is JSON-safe as it is.

QuantStats quirk worth knowing: it decides whether a series holds prices or returns by
looking at it (``min >= 0`` and ``max >= 1`` reads as prices). A return series with no
losing day and a day of +100 % or more would be silently misread; the adapter detects
that, emits :class:`AmbiguousReturnsWarning` and reports ``None`` for the affected
metrics instead of wrong numbers.
"""

from __future__ import annotations

import html
import math
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from gammabt.plotting import configure_matplotlib, quiet_report_warnings
from plumbing.aliases import PathLike
from plumbing.atomic import temp_sibling, write_text_atomic
from plumbing.errors import ConfigError, InputError

__all__ = [
    "BENCHMARK_KEYS",
    "METRIC_KEYS",
    "ORDER_KEYS",
    "RETURN_KEYS",
    "TRADE_KEYS",
    "AmbiguousReturnsWarning",
    "BenchmarkCoverageWarning",
    "ReportWarning",
    "compare_metrics",
    "compute_metrics",
    "write_tearsheet",
]

Metrics = dict[str, float | int | None]

RETURN_KEYS: tuple[str, ...] = (
    "periods_per_year",  # annualization used (365 for crypto daily returns)
    "n_days",  # observed daily returns
    "total_return",  # compounded, fraction (0.12 = +12 %)
    "cagr",  # (1 + total_return) ** (periods_per_year / n_days) - 1
    "volatility_ann",  # std(ddof=1) * sqrt(periods_per_year)
    "sharpe",  # mean / std(ddof=1) * sqrt(periods_per_year), rf = 0
    "sortino",  # mean / sqrt(sum(r[r<0]^2) / n) * sqrt(periods_per_year)
    "max_drawdown",  # fraction <= 0 (-0.25 = -25 %), from the start equity
    "calmar",  # cagr / |max_drawdown|
    "win_rate",  # up days / non-zero days
    "best_day",  # largest daily return
    "worst_day",  # smallest daily return
)
BENCHMARK_KEYS: tuple[str, ...] = (
    "benchmark_total_return",
    "benchmark_cagr",
    "benchmark_volatility_ann",
    "benchmark_sharpe",
    "benchmark_max_drawdown",
    "alpha_ann",  # (mean(r) - beta * mean(b)) * periods_per_year
    "beta",  # cov(r, b) / var(b)
    "r_squared",
    "information_ratio_daily",  # mean(r - b) / std(r - b), not annualized (as QuantStats)
)
TRADE_KEYS: tuple[str, ...] = (
    "n_trades",  # closed round trips
    "n_trades_won",  # pnl > 0
    "n_trades_lost",  # pnl < 0
    "trade_win_rate",  # n_trades_won / n_trades
    "avg_trade_pnl",  # quote currency (USD), net of commission when known
    "best_trade_pnl",
    "worst_trade_pnl",
    "profit_factor",  # sum of winning pnl / |sum of losing pnl|
)
ORDER_KEYS: tuple[str, ...] = (
    "n_orders",
    "n_completed",
    "n_rejected",  # n_rejected_margin + n_rejected_broker
    "n_rejected_margin",  # Backtrader "Margin": not enough cash / margin
    "n_rejected_broker",  # Backtrader "Rejected"
    "n_canceled",
    "n_expired",
)
METRIC_KEYS: tuple[str, ...] = RETURN_KEYS + BENCHMARK_KEYS + TRADE_KEYS + ORDER_KEYS
"""Every key :func:`compute_metrics` returns, in display order."""

# Trade PnL columns in order of preference: net of commission first.
_PNL_COLUMNS = ("pnl_net", "pnlcomm", "pnl")


class ReportWarning(UserWarning):
    """Base class of the reporting adapter's warnings."""


class AmbiguousReturnsWarning(ReportWarning):
    """QuantStats would read this return series as prices.

    Its heuristic treats a series with no negative value and a maximum of at least 1 as
    prices. The affected metrics are reported as ``None`` (and the tearsheet's figures
    are unreliable). Remedy: check that the series holds simple returns (0.01 = +1 %),
    not percentages or prices.
    """


class BenchmarkCoverageWarning(ReportWarning):
    """The benchmark lacks some of the strategy's dates.

    Benchmark figures (and the tearsheet) use only the common dates. Remedy: build the
    benchmark from the same bars and reindex it to the strategy's dates.
    """


@cache
def _qs() -> ModuleType:
    """QuantStats, imported on first use after the headless backend and the font alias
    are in place (its import configures pyplot and seaborn)."""
    configure_matplotlib()
    with quiet_report_warnings():
        import quantstats

    return quantstats


# ----------------------------------------------------------------------------- inputs


def _clean_returns(series: Any, name: str) -> pd.Series:
    """Validated float copy with a tz-naive UTC DatetimeIndex, NaN days dropped."""
    source = f"<{name}>"
    if not isinstance(series, pd.Series):
        raise InputError(
            f"{name} must be a pandas Series of daily returns, got {type(series).__name__}",
            source=source, expected="pd.Series indexed by UTC dates",
            fix="pass one column, e.g. frame['strategy']",
        )
    if not isinstance(series.index, pd.DatetimeIndex):
        raise InputError(
            f"{name} is indexed by {type(series.index).__name__}, not dates",
            source=source, expected="a DatetimeIndex of UTC dates",
            fix="set the dates as the index (series.index = pd.DatetimeIndex(...))",
        )
    if not pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(
            series.dtype):
        raise InputError(
            f"{name} has dtype {series.dtype}", source=source,
            expected="numeric simple returns (0.01 = +1 %)",
            fix="convert with pd.to_numeric",
        )
    index = series.index
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    if index.has_duplicates:
        row = int(np.flatnonzero(index.duplicated())[0])
        raise InputError(
            f"duplicated date {index[row]}", source=source, row=row,
            expected="one return per day", fix="aggregate to daily returns first",
        )
    if not index.is_monotonic_increasing:
        row = int(np.flatnonzero(np.diff(index.asi8) < 0)[0]) + 1
        raise InputError(
            f"dates not sorted at {index[row]}", source=source, row=row,
            expected="increasing dates", fix="call .sort_index() first",
        )
    bad = np.isinf(values) | (values < -1.0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"return {values[row]} on {index[row]} is not a simple return", source=source,
            row=row, expected="finite values >= -1 (simple returns, 0.01 = +1 %)",
            fix="compute returns as equity / equity.shift(1) - 1 on positive equity",
        )
    clean = pd.Series(values, index=index, name=name)
    return clean[~np.isnan(values)]


def _reads_as_prices(series: pd.Series) -> bool:
    """QuantStats' own price-or-returns test (``utils._prepare_returns`` and
    ``_looks_like_returns``): no negative value and a maximum >= 1 reads as prices."""
    return bool(len(series)) and series.min() >= 0 and series.max() >= 1


def _align_benchmark(returns: pd.Series, benchmark: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Both series restricted to their common dates; warns when strategy days are lost."""
    common = returns.index.intersection(benchmark.index)
    if len(common) == 0 and len(returns):
        raise InputError(
            "benchmark and returns share no date", source="<benchmark>",
            expected="returns on the strategy's dates",
            fix="build the benchmark from the same bars (buy and hold) and reindex it",
        )
    if len(common) < len(returns):
        warnings.warn(BenchmarkCoverageWarning(
            f"the benchmark lacks {len(returns) - len(common)} of the strategy's "
            f"{len(returns)} days; benchmark figures use the {len(common)} common days. "
            "Build the benchmark from the same bars and reindex it to the strategy's dates."
        ), stacklevel=3)
    return returns.loc[common], benchmark.loc[common]


def _frame(table: Any, name: str) -> pd.DataFrame:
    if hasattr(table, "to_pandas") and not isinstance(table, pd.DataFrame):
        table = table.to_pandas()
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"{name} must be a DataFrame, got {type(table).__name__}",
                         source=f"<{name}>", fix=f"pass the run's {name} table")
    return table


def _num(value: Any) -> float | None:
    """Plain float, or None for NaN/inf/None (JSON-safe)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------- metrics


def _return_stats(series: pd.Series, periods: int, prefix: str = "") -> Metrics:
    """Stand-alone statistics of one cleaned return series (keys of RETURN_KEYS)."""
    stats = _qs().stats
    n = len(series)
    out: Metrics = dict.fromkeys(RETURN_KEYS[2:])
    if n == 0:
        return {prefix + k: v for k, v in out.items()}
    trusted = not _reads_as_prices(series)
    if not trusted:
        warnings.warn(AmbiguousReturnsWarning(
            f"{series.name}: no negative day and a maximum of {series.max():.4g} (>= +100 %); "
            "QuantStats would read it as prices, so cagr, volatility, sharpe, sortino, "
            "drawdown and calmar are reported as None. Check the series holds simple "
            "returns (0.01 = +1 %)."
        ), stacklevel=3)
    # Functions below that take prepare_returns get False: the input is already clean.
    out["total_return"] = _num(stats.comp(series))
    out["best_day"] = _num(stats.best(series, prepare_returns=False))
    out["worst_day"] = _num(stats.worst(series, prepare_returns=False))
    if (series != 0).any():
        out["win_rate"] = _num(stats.win_rate(series, prepare_returns=False))
    if trusted:
        out["cagr"] = _num(stats.cagr(series, rf=0.0, compounded=True, periods=periods))
        max_dd = _num(stats.max_drawdown(series))
        out["max_drawdown"] = max_dd
        if max_dd:  # a zero drawdown leaves Calmar undefined (QuantStats would divide by 0)
            out["calmar"] = _num(stats.calmar(series, prepare_returns=False, compounded=True,
                                              periods=periods))
        if n >= 2:  # dispersion needs two days
            out["volatility_ann"] = _num(stats.volatility(
                series, periods=periods, annualize=True, prepare_returns=False))
            if np.ptp(series.to_numpy()) > 0:  # constant returns: Sharpe undefined
                out["sharpe"] = _num(stats.sharpe(series, rf=0.0, periods=periods,
                                                  annualize=True))
            # QuantStats returns NaN itself when no day is negative.
            out["sortino"] = _num(stats.sortino(series, rf=0.0, periods=periods,
                                                annualize=True))
    return {prefix + k: v for k, v in out.items()}


def _relative_stats(returns: pd.Series, benchmark: pd.Series, periods: int) -> Metrics:
    """Benchmark-relative statistics on common dates (alpha, beta, R^2, IR)."""
    stats = _qs().stats
    out: Metrics = dict.fromkeys(BENCHMARK_KEYS[5:])
    if len(returns) < 2 or _reads_as_prices(returns) or _reads_as_prices(benchmark):
        return out
    r_moves = np.ptp(returns.to_numpy()) > 0
    b_moves = np.ptp(benchmark.to_numpy()) > 0
    if b_moves:  # beta needs benchmark variance (QuantStats would report 0 instead)
        greeks = stats.greeks(returns, benchmark, periods=periods, prepare_returns=False)
        out["alpha_ann"] = _num(greeks["alpha"])
        out["beta"] = _num(greeks["beta"])
        if r_moves:
            out["r_squared"] = _num(stats.r_squared(returns, benchmark, prepare_returns=False))
    if np.ptp((returns - benchmark).to_numpy()) > 0:  # else QuantStats reports 0 for 0/0
        out["information_ratio_daily"] = _num(
            stats.information_ratio(returns, benchmark, prepare_returns=False))
    return out


def _trade_stats(trades: pd.DataFrame | None) -> Metrics:
    out: Metrics = dict.fromkeys(TRADE_KEYS)
    if trades is None:
        return out
    trades = _frame(trades, "trades")
    closed = trades
    for flag in ("is_closed", "isclosed"):
        if flag in trades.columns:
            closed = trades[trades[flag].astype(bool)]
            break
    column = next((c for c in _PNL_COLUMNS if c in trades.columns), None)
    if column is None:
        raise InputError(
            "no trade PnL column", source="<trades>", column=_PNL_COLUMNS[0],
            expected=f"one of {', '.join(_PNL_COLUMNS)} (quote currency per closed trade)",
            fix="pass the run's trade log (gammabt.analyzers.TradeLog)",
        )
    pnl = pd.to_numeric(closed[column], errors="coerce").to_numpy(dtype="float64")
    if not np.isfinite(pnl).all():
        row = int(np.flatnonzero(~np.isfinite(pnl))[0])
        raise InputError("trade PnL is missing or not finite", source="<trades>", row=row,
                         column=column, expected="a finite PnL for every closed trade",
                         fix="drop open trades or fill their PnL")
    n = len(pnl)
    out["n_trades"] = n
    out["n_trades_won"] = int((pnl > 0).sum())
    out["n_trades_lost"] = int((pnl < 0).sum())
    if n:
        out["trade_win_rate"] = out["n_trades_won"] / n
        out["avg_trade_pnl"] = _num(pnl.mean())
        out["best_trade_pnl"] = _num(pnl.max())
        out["worst_trade_pnl"] = _num(pnl.min())
        if (pnl < 0).any():  # otherwise undefined (QuantStats says inf)
            out["profit_factor"] = _num(_qs().stats.profit_factor(
                pd.Series(pnl), prepare_returns=False))
    return out


def _order_stats(orders: pd.DataFrame | None) -> Metrics:
    out: Metrics = dict.fromkeys(ORDER_KEYS)
    if orders is None:
        return out
    orders = _frame(orders, "orders")
    if "status" not in orders.columns:
        raise InputError(
            "no order status column", source="<orders>", column="status",
            expected="Backtrader status names (completed, margin, rejected, canceled, ...)",
            fix="pass the run's order log (gammabt.analyzers.OrderLog)",
        )
    if "ref" in orders.columns:  # a notification log: keep each order's final state
        orders = orders.drop_duplicates("ref", keep="last")
    status = orders["status"].astype(str).str.strip().str.lower()
    out["n_orders"] = len(status)
    out["n_completed"] = int((status == "completed").sum())
    out["n_rejected_margin"] = int((status == "margin").sum())
    out["n_rejected_broker"] = int((status == "rejected").sum())
    out["n_rejected"] = out["n_rejected_margin"] + out["n_rejected_broker"]
    out["n_canceled"] = int(status.isin(("canceled", "cancelled")).sum())
    out["n_expired"] = int((status == "expired").sum())
    return out


def _check_periods(periods_per_year: Any) -> int:
    if isinstance(periods_per_year, bool) or not isinstance(periods_per_year, int | np.integer) \
            or periods_per_year <= 0:
        raise ConfigError(
            f"periods_per_year={periods_per_year!r}", column="periods_per_year",
            expected="a positive integer (365 for daily crypto returns)",
            fix="pass periods_per_year=365",
        )
    return int(periods_per_year)


def account_metrics(ledger: pd.DataFrame, positions: pd.DataFrame, equity: pd.DataFrame,
                    *, spot_instruments: tuple[str, ...] = ("spot",)) -> dict[str, Any]:
    """Cash-flow and exposure figures of a run's account (USD unless a ratio).

    Parameters
    ----------
    ledger
        ``ts, instrument, kind, qty, price, amount_usd`` (one row per cash movement).
    positions
        ``ts, instrument, qty, mark, notional, unrealized_usd, margin_used_usd`` per bar
        and open position.
    equity
        Per bar ``ts, value`` (the account value at each bar close).
    spot_instruments
        Names of spot legs (their PnL includes the holdings' value, not a mark PnL).

    Returns
    -------
    dict
        ``fees_paid_usd`` (fees, liquidation fees excluded, as a positive number),
        ``funding_paid_usd`` and ``funding_received_usd`` (both >= 0), ``borrow_paid_usd``,
        ``n_liquidations`` (forced-close events), ``max_margin_usage`` (max over bars of
        initial margin used / account value), ``gross_exposure_max`` and
        ``gross_exposure_mean`` (sum of |notional| / value), ``net_exposure_mean``
        (sum of notional / value), and ``pnl_by_instrument`` (ledger amounts plus the
        final holdings value for spot or unrealized PnL for derivatives; they add up to
        final value minus initial cash).
    """
    amount = ledger["amount_usd"]
    kind = ledger["kind"]
    funding = amount[kind == "funding"]
    liq_events = ledger.loc[kind == "liquidation", "ts"].nunique()
    out: dict[str, Any] = {
        # 0.0 - x: a sum of nothing is reported as 0, not -0
        "fees_paid_usd": 0.0 - float(amount[kind == "fee"].sum()),
        "funding_paid_usd": 0.0 - float(funding[funding < 0].sum()),
        "funding_received_usd": float(funding[funding > 0].sum()),
        "borrow_paid_usd": 0.0 - float(amount[kind == "borrow"].sum()),
        "n_liquidations": int(liq_events),
    }
    value = equity.set_index("ts")["value"]
    if len(positions):
        per_bar = positions.assign(gross=positions["notional"].abs()).groupby("ts")[
            ["margin_used_usd", "gross", "notional"]].sum()
        per_bar = per_bar.reindex(value.index, fill_value=0.0).div(value, axis=0)
        out["max_margin_usage"] = float(per_bar["margin_used_usd"].max())
        out["gross_exposure_max"] = float(per_bar["gross"].max())
        out["gross_exposure_mean"] = float(per_bar["gross"].mean())
        out["net_exposure_mean"] = float(per_bar["notional"].mean())
    else:
        out.update(max_margin_usage=0.0, gross_exposure_max=0.0, gross_exposure_mean=0.0,
                   net_exposure_mean=0.0)
    pnl = amount.groupby(ledger["instrument"]).sum()
    if len(positions) and len(value):
        last = positions[positions["ts"] == value.index[-1]].set_index("instrument")
        final = np.where(last.index.isin(spot_instruments), last["notional"],
                         last["unrealized_usd"])
        pnl = pnl.add(pd.Series(final, index=last.index), fill_value=0.0)
    out["pnl_by_instrument"] = {str(k): float(v) for k, v in pnl.sort_index().items()}
    return out


def compute_metrics(
    returns: pd.Series,
    benchmark: pd.Series | None = None,
    *,
    periods_per_year: int = 365,
    trades: pd.DataFrame | None = None,
    orders: pd.DataFrame | None = None,
) -> dict[str, float | int | None]:
    """Run metrics from QuantStats, annualized with ``periods_per_year``.

    Parameters
    ----------
    returns
        Daily simple returns (0.01 = +1 %) indexed by UTC dates (tz-aware; naive is
        taken as UTC). NaN days are dropped.
    benchmark
        Daily simple returns of the benchmark (buy and hold on the same bars), or None.
        Benchmark figures use the dates both series have; missing strategy dates emit
        :class:`BenchmarkCoverageWarning`.
    periods_per_year
        Annualization factor: 365 for crypto daily returns (QuantStats' default of 252
        is never used).
    trades
        Closed trades, one row each, with a PnL column ``pnl_net`` (preferred), ``pnlcomm``
        or ``pnl`` in quote currency; an ``is_closed``/``isclosed`` column, if present,
        selects the closed ones. ``pyarrow.Table`` is accepted.
    orders
        Order log with a ``status`` column of Backtrader status names (``completed``,
        ``margin``, ``rejected``, ``canceled``, ``expired``; case-insensitive). When a
        ``ref`` column repeats, the last row per order counts.

    Returns
    -------
    dict
        Every key of :data:`METRIC_KEYS`, values ``float``, ``int`` or ``None``:

        - returns (:data:`RETURN_KEYS`): ``total_return`` = prod(1 + r) - 1;
          ``cagr`` = (1 + total_return) ** (periods_per_year / n_days) - 1;
          ``volatility_ann`` = std(r, ddof=1) * sqrt(periods_per_year);
          ``sharpe`` = mean(r) / std(r, ddof=1) * sqrt(periods_per_year) (rf = 0);
          ``sortino`` = mean(r) / sqrt(sum(r[r < 0] ** 2) / n) * sqrt(periods_per_year);
          ``max_drawdown`` <= 0 measured from the starting equity;
          ``calmar`` = cagr / |max_drawdown|; ``win_rate`` = up days / non-zero days;
          ``best_day``, ``worst_day``.
        - benchmark (:data:`BENCHMARK_KEYS`): the same stand-alone figures prefixed
          ``benchmark_``, plus ``alpha_ann``, ``beta``, ``r_squared`` and
          ``information_ratio_daily`` (per day, not annualized, as QuantStats reports it).
        - trades (:data:`TRADE_KEYS`) and orders (:data:`ORDER_KEYS`): counts and PnL
          figures; all ``None`` when the table is not given.

        ``None`` marks an undefined value: no data, fewer than two days for dispersion
        measures, constant returns (Sharpe), no losing day (Sortino), no drawdown
        (Calmar), a constant benchmark (beta), no losing trade (profit factor).

    Raises
    ------
    InputError
        Returns or benchmark not a date-indexed numeric Series, with duplicated or
        unsorted dates, infinite values or returns below -100 %; trades without a PnL
        column, orders without a status column.
    ConfigError
        ``periods_per_year`` not a positive integer.

    Examples
    --------
    >>> m = compute_metrics(returns, benchmark, trades=trades, orders=orders)
    >>> m["sharpe"], m["benchmark_total_return"], m["n_rejected"]
    """
    periods = _check_periods(periods_per_year)
    r = _clean_returns(returns, "returns")
    b = None if benchmark is None else _clean_returns(benchmark, "benchmark")
    metrics: Metrics = {"periods_per_year": periods, "n_days": len(r)}
    with quiet_report_warnings():
        metrics.update(_return_stats(r, periods))
        if b is None:
            metrics.update(dict.fromkeys(BENCHMARK_KEYS))
        else:
            r_common, b_common = _align_benchmark(r, b)
            metrics.update(_return_stats(b_common, periods, prefix="benchmark_"))
            metrics.update(_relative_stats(r_common, b_common, periods))
        metrics.update(_trade_stats(trades))
        metrics.update(_order_stats(orders))
    return {key: metrics[key] for key in METRIC_KEYS}


def compare_metrics(runs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Metrics of several runs side by side.

    Parameters
    ----------
    runs
        ``{run name: metrics dict}``, e.g. ``compute_metrics`` output or a run folder's
        ``metrics.json``.

    Returns
    -------
    pandas.DataFrame
        One row per metric (:data:`METRIC_KEYS` order first, then any other keys in the
        order first seen), one column per run in the given order; a metric a run lacks
        or reports as ``None`` is NaN. ``float64`` when every value is numeric, object
        otherwise.

    Raises
    ------
    InputError
        ``runs`` is empty or a value is not a mapping.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise InputError("no runs to compare", source="<runs>",
                         expected="{run name: metrics dict} with at least one run",
                         fix="pass e.g. {'a': result_a.metrics, 'b': result_b.metrics}")
    for name, metrics in runs.items():
        if not isinstance(metrics, Mapping):
            raise InputError(f"run {name!r} has {type(metrics).__name__}, not a metrics dict",
                             source="<runs>", column=str(name),
                             fix="pass the run's metrics dict (compute_metrics output)")
    keys = [k for k in METRIC_KEYS if any(k in m for m in runs.values())]
    for metrics in runs.values():
        keys.extend(k for k in metrics if k not in keys)
    table = pd.DataFrame(
        {name: [np.nan if m.get(k) is None else m.get(k) for k in keys]
         for name, m in runs.items()},
        index=pd.Index(keys, name="metric"), dtype=object,
    )
    try:
        return table.astype("float64")
    except (TypeError, ValueError):
        return table


# -------------------------------------------------------------------------- tearsheet

# QuantStats' template links its favicon from the web and calls an undefined save() on
# load; drop both so the tearsheet is self-contained and opens without console errors.
# Its metric labels use U+FE6A SMALL PERCENT SIGN ("CAGR﹪"), which common Linux fonts
# lack (a tofu box in the browser): use the ordinary percent sign.
_REMOTE_ICON = re.compile(r'<link[^>]*rel="shortcut icon"[^>]*>\s*')
_ONLOAD = ' onload="save()"'


def _self_contained(page: str) -> str:
    return _REMOTE_ICON.sub("", page).replace(_ONLOAD, "").replace("\ufe6a", "%")


def _is_constant(series: pd.Series | None) -> bool:
    values = series.dropna().to_numpy(dtype="float64") if series is not None else None
    return values is not None and (len(values) < 2 or np.ptp(values) == 0)


@contextmanager
def _regression_guard(stats: ModuleType, returns: pd.Series,
                      benchmark: pd.Series | None) -> Iterator[None]:
    """Let the tearsheet of a constant series (a strategy that never traded) render.

    QuantStats' metrics table computes R^2 with ``scipy.stats.linregress(returns,
    benchmark)``, which raises "Cannot calculate a linear regression if all x values are
    identical" when the strategy's returns are constant; the whole tearsheet then fails.
    Only in that case, and only for the duration of the call, ``quantstats.stats.r_squared``
    answers NaN (shown as "-"/nan in the table) for constant inputs and defers to
    QuantStats otherwise. Not thread-safe (it swaps a module attribute).
    """
    if benchmark is None or not (_is_constant(returns) or _is_constant(benchmark)):
        yield
        return
    original = stats.r_squared

    def r_squared(returns: pd.Series, benchmark: pd.Series, prepare_returns: bool = True):
        if _is_constant(returns) or _is_constant(benchmark):
            return np.float64(np.nan)
        return original(returns, benchmark, prepare_returns=prepare_returns)

    stats.r_squared = r_squared
    try:
        yield
    finally:
        stats.r_squared = original


def rolling_windows(n_days: int, periods_per_year: int = 365) -> tuple[int, int]:
    """Rolling windows (long, short) fitted to a run of ``n_days`` observed days.

    QuantStats uses a year and half a year; on shorter runs those panels are empty.
    The windows shrink to half and a quarter of the run (at least 5 and 3 days) and
    never exceed a year and half a year.
    """
    long = int(min(periods_per_year, max(5, n_days // 2)))
    short = int(min(periods_per_year // 2, max(3, n_days // 4)))
    return long, min(short, long)


@contextmanager
def _fitted_windows(plots: ModuleType, n_days: int, periods: int) -> Iterator[None]:
    """During one call, QuantStats' rolling panels use :func:`rolling_windows`.

    Only the window arguments of ``quantstats.plots.rolling_volatility``,
    ``rolling_sharpe``, ``rolling_sortino`` (``period``) and ``rolling_beta``
    (``window1``, ``window2``) are replaced; annualization (``periods_per_year``) and
    the metrics table are untouched. Swaps module attributes: not thread-safe.
    """
    long, short = rolling_windows(n_days, periods)
    originals = {name: getattr(plots, name, None)
                 for name in ("rolling_volatility", "rolling_sharpe", "rolling_sortino",
                              "rolling_beta")}

    def fitted(original: Any, beta: bool) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if beta:
                kwargs.update(window1=short, window2=long)
            else:
                kwargs["period"] = short
            return original(*args, **kwargs)
        return call

    for name, original in originals.items():
        if original is not None:
            setattr(plots, name, fitted(original, name == "rolling_beta"))
    try:
        yield
    finally:
        for name, original in originals.items():
            if original is not None:
                setattr(plots, name, original)


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV",
           "DEC")


def blank_outside(table: pd.DataFrame, first: pd.Timestamp, last: pd.Timestamp,
                  ) -> pd.DataFrame:
    """QuantStats' monthly table (years by ``JAN``..``DEC``) with NaN for the months
    before ``first`` and after ``last`` (it fills them with 0, read as a flat month)."""
    out = table.astype("float64").copy()
    lo, hi = first.year * 12 + first.month, last.year * 12 + last.month
    for year in out.index:
        for month, col in enumerate(_MONTHS, start=1):
            if col in out.columns and not lo <= int(year) * 12 + month <= hi:
                out.loc[year, col] = np.nan
    return out


@contextmanager
def _blank_missing_months(stats: ModuleType) -> Iterator[None]:
    """During one call, QuantStats' monthly heatmap leaves months without data blank
    (swaps ``quantstats.stats.monthly_returns``; not thread-safe)."""
    original = stats.monthly_returns

    def monthly_returns(returns: Any, *args: Any, **kwargs: Any) -> pd.DataFrame:
        table = original(returns, *args, **kwargs)
        index = getattr(returns, "index", None)
        if not isinstance(table, pd.DataFrame) or not isinstance(index, pd.DatetimeIndex) \
                or not len(index):
            return table
        return blank_outside(table, index.min(), index.max())

    stats.monthly_returns = monthly_returns
    try:
        yield
    finally:
        stats.monthly_returns = original


def _header_html(header: Mapping[str, str] | None, notice: str | None) -> str:
    parts = ['<div class="gammabt-header" style="font-size:13px;margin:8px 0 16px 0">']
    if notice:
        parts.append('<p class="gammabt-notice" style="background:#fff3cd;border-left:4px '
                     f'solid #e0a800;padding:6px 10px">{html.escape(notice)}</p>')
    if header:
        parts.append('<table class="gammabt-run">')
        for key, value in header.items():
            parts.append(f"<tr><th style=\"text-align:left;padding-right:12px\">"
                         f"{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>")
        parts.append("</table>")
    parts.append("</div>")
    return "".join(parts)


def write_tearsheet(
    returns: pd.Series,
    benchmark: pd.Series | None,
    path: PathLike,
    *,
    title: str,
    periods_per_year: int = 365,
    benchmark_title: str = "Buy & hold",
    strategy_title: str = "Strategy",
    header: Mapping[str, str] | None = None,
    notice: str | None = None,
) -> Path:
    """Write the QuantStats HTML tearsheet of a run, atomically.

    Parameters
    ----------
    returns
        Daily simple returns indexed by UTC dates (see :func:`compute_metrics`).
    benchmark
        Benchmark daily returns as a Series (never a ticker: nothing is downloaded), or
        None for a tearsheet without benchmark. Only dates both series have are shown.
    path
        Destination file; parent folders are created.
    title
        Heading of the page (HTML-escaped; QuantStats appends "(Compounded)").
    periods_per_year
        Annualization of every figure and rolling window (365 for crypto).
    benchmark_title, strategy_title
        Names in the legends and tables.
    header
        Rows shown under the title (strategy, label, parameters, costs, data, period),
        HTML-escaped.
    notice
        A highlighted line above them (e.g. that the run never traded), HTML-escaped.

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----
    The page is rendered into a temporary file beside ``path`` and moved into place
    with ``os.replace``, so ``path`` is either the complete new tearsheet or untouched.
    The run is silent: Agg backend, "Arial" aliased to an installed font
    (:mod:`gammabt.plotting`), QuantStats' and seaborn's internal deprecation warnings
    suppressed inside the call only. ``match_dates=False`` is passed because QuantStats
    would otherwise cut the report to start at the first day both series move, hiding
    the flat days before a strategy's first trade (and disagreeing with
    :func:`compute_metrics`). The favicon link to the QuantStats web site is removed so
    opening the page loads nothing from the network.

    Raises
    ------
    InputError
        Invalid returns/benchmark (see :func:`compute_metrics`), or fewer than two days.
    """
    periods = _check_periods(periods_per_year)
    path = Path(path)
    r = _clean_returns(returns, "returns")
    b = None
    if benchmark is not None:
        r, b = _align_benchmark(r, _clean_returns(benchmark, "benchmark"))
    if len(r) < 2:
        raise InputError(
            f"only {len(r)} day(s) of returns", source="<returns>",
            expected="at least two daily returns for a tearsheet",
            fix="run the backtest over a longer period",
        )
    if b is not None and _is_constant(r) and _is_constant(b):
        # QuantStats' distribution chart (a KDE over both series) cannot fit constant data.
        warnings.warn(ReportWarning(
            "returns and benchmark are both constant: the tearsheet is drawn without the "
            "benchmark (there is nothing to compare). Check the bars actually move."
        ), stacklevel=2)
        b = None
    for series in (r, b):
        if series is not None and _reads_as_prices(series):
            warnings.warn(AmbiguousReturnsWarning(
                f"{series.name}: QuantStats will read this series as prices; the "
                "tearsheet's figures are unreliable. Check it holds simple returns."
            ), stacklevel=2)
    qs = _qs()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)  # QuantStats writes here; the finished page is written atomically
    try:
        with quiet_report_warnings(), _regression_guard(qs.stats, r, b), \
                _fitted_windows(qs.plots, len(r), periods), _blank_missing_months(qs.stats):
            qs.reports.html(
                r, b, rf=0.0, title=html.escape(title), output=str(tmp),
                compounded=True, periods_per_year=periods, match_dates=False,
                figfmt="svg", strategy_title=strategy_title,
                benchmark_title=benchmark_title if b is not None else None,
            )
        page = _self_contained(tmp.read_text(encoding="utf-8"))
        if header or notice:
            at = page.find("</h4>")
            at = at + len("</h4>") if at >= 0 else page.find(">", page.find("<body")) + 1
            page = page[:at] + _header_html(header, notice) + page[at:]
        write_text_atomic(path, page)
    finally:
        tmp.unlink(missing_ok=True)
    return path
