"""Futures basis, perpetual premium and funding: closed forms, curves and dislocations.

Pure numpy / pandas; no backtrader. Conventions: ``../shared/DOMAIN.md`` section 2.
All rates are fractions (0.09 = 9% annualized); ``jump_pp`` arguments are percentage
points (3.0 = 0.03).

Formula::

    basis_ann   = (F / S - 1) * 365 / DTE_days
    premium     = perp / spot - 1
    funding_apr = rate_8h * 3 * 365

Example (DOMAIN.md): 3.3% to 9% annualized at 30 days is a raw premium F/S - 1 moving
from 0.033 * 30 / 365 = 0.27% to 0.09 * 30 / 365 = 0.74%.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from plumbing.errors import ConfigError, DataError
from plumbing.timeconv import duration_us, modal_spacing_us, to_epoch_us

__all__ = [
    "annualized_basis",
    "basis_table",
    "constant_maturity",
    "dislocations",
    "funding_apr",
    "perp_premium",
    "rolling_zscore",
]

DAY_S = 86_400.0


def _frame(x: Any) -> pd.DataFrame:
    return x.to_pandas() if hasattr(x, "to_pandas") and not isinstance(x, pd.DataFrame) else x


def _wrap(result: np.ndarray, like: Any) -> Any:
    if isinstance(like, pd.Series):
        return pd.Series(result, index=like.index, name=like.name)
    if isinstance(like, pd.DataFrame):
        return pd.DataFrame(result, index=like.index, columns=like.columns)
    if np.ndim(result) == 0:
        return float(result)
    return result


def annualized_basis(F: Any, S: Any, dte_days: Any) -> Any:
    """Annualized basis of a dated future over spot.

    Formula::

        basis_ann = (F / S - 1) * 365 / dte_days

    Parameters
    ----------
    F, S
        Future and spot prices, USD (scalars, arrays or Series; broadcast).
    dte_days
        Days to expiry (fractional).

    Returns
    -------
    float, numpy.ndarray or pandas.Series
        Annualized basis as a fraction. NaN where any input is NaN, where ``dte_days <= 0``
        (expired: no annualization) or where a price is not > 0. A Series input keeps
        its index (the first Series among F, S, dte_days).
    """
    f = np.asarray(F, dtype="float64")
    s = np.asarray(S, dtype="float64")
    d = np.asarray(dte_days, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (f / s - 1.0) * 365.0 / d
    out = np.where((d > 0) & (f > 0) & (s > 0), out, np.nan)
    like = next((v for v in (F, S, dte_days) if isinstance(v, pd.Series)), None)
    return _wrap(out, like)


def perp_premium(perp_close: Any, spot_close: Any) -> Any:
    """Perpetual premium over spot, fraction.

    Formula::

        premium = perp / spot - 1

    Two pandas Series are aligned on their index first (inner join: only stamps present
    in both); arrays must have the same length. NaN where either side is NaN or not > 0.
    Not annualized (a perp has no expiry; compare with :func:`funding_apr` instead).
    """
    if isinstance(perp_close, pd.Series) and isinstance(spot_close, pd.Series):
        p, s = perp_close.align(spot_close, join="inner")
        vals = _premium(p.to_numpy(dtype="float64", na_value=np.nan),
                        s.to_numpy(dtype="float64", na_value=np.nan))
        return pd.Series(vals, index=p.index, name="perp_premium")
    p_arr = np.asarray(perp_close, dtype="float64")
    s_arr = np.asarray(spot_close, dtype="float64")
    if p_arr.shape != s_arr.shape and p_arr.ndim and s_arr.ndim:
        raise DataError(f"lengths differ: perp {p_arr.shape} vs spot {s_arr.shape}",
                        column="close", expected="arrays of the same length",
                        fix="align them on time first (or pass two pandas Series)")
    like = perp_close if isinstance(perp_close, pd.Series) else spot_close
    return _wrap(_premium(p_arr, s_arr), like if isinstance(like, pd.Series) else None)


def _premium(p: np.ndarray, s: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = p / s - 1.0
    return np.where((p > 0) & (s > 0), out, np.nan)


def funding_apr(rate_8h: Any) -> Any:
    """Annualized funding (simple, not compounded).

    Formula::

        funding_apr = rate_8h * 3 * 365

    ``rate_8h`` is a fraction per 8 hours (1e-4 = 0.01%); daily means of 8-hourly rates
    are still per-8h rates. NaN propagates; a Series or DataFrame keeps its labels.
    """
    out = np.asarray(rate_8h, dtype="float64") * 3.0 * 365.0
    return _wrap(out, rate_8h if isinstance(rate_8h, pd.Series | pd.DataFrame) else None)


def rolling_zscore(x: Any, window: int, *, min_periods: int | None = None) -> Any:
    """Point-in-time z-score of each value against the *previous* ``window`` values.

    Formula::

        z_t = (x_t - mean(x_{t-window} .. x_{t-1})) / std(x_{t-window} .. x_{t-1})  (ddof=1)

    The current value is not part of its own reference window, so a jump is measured
    against the calm before it, and no value after ``t`` is ever used.

    Parameters
    ----------
    x
        Series or 1-D array (observations in time order).
    window
        Number of past observations (>= 2).
    min_periods
        Minimum non-NaN past observations (default ``window``); fewer gives NaN.

    Returns
    -------
    Series or numpy.ndarray
        NaN during warm-up, where ``x_t`` is NaN, or where the past std is 0.
    """
    if int(window) < 2:
        raise ConfigError(f"window={window!r} too small", column="window",
                          expected="an integer >= 2", fix="use a longer window")
    mp = int(window) if min_periods is None else int(min_periods)
    if not 2 <= mp <= int(window):
        raise ConfigError(f"min_periods={min_periods!r} out of range", column="min_periods",
                          expected=f"2 <= min_periods <= window ({window})",
                          fix="change min_periods")
    s = pd.Series(np.asarray(x, dtype="float64"))
    past = s.shift(1).rolling(int(window), min_periods=mp)
    mean = past.mean()
    std = past.std(ddof=1)
    z = ((s - mean) / std.where(std > 0)).to_numpy()
    if isinstance(x, pd.Series):
        return pd.Series(z, index=x.index, name=x.name)
    return z


def dislocations(
    basis: pd.Series,
    window: int,
    k_sigma: float = 3.0,
    jump_pp: float = 3.0,
    oi: pd.Series | None = None,
    *,
    oi_drop_frac: float = 0.05,
) -> pd.DataFrame:
    """Flag basis dislocations: a jump of >= ``k_sigma`` sigma or >= ``jump_pp`` points.

    Formula::

        change_t   = x_t - x_{t-1}
        z_t        = change_t / std(change_{t-window} .. change_{t-1})       (ddof=1, past only)
        sigma_jump = |z_t| >= k_sigma
        move_t     = x_t - x_{t-j} with the largest |.| over j = 1..window
        pp_jump    = |move_t| >= jump_pp / 100
        flag       = sigma_jump | pp_jump
        oi_change  = OI_t / max(OI_{t-window} .. OI_{t-1}) - 1               (when OI given)
        oi_drop    = oi_change <= -oi_drop_frac
        flag_oi    = flag & oi_drop

    Parameters
    ----------
    basis
        Basis (or funding, premium) series as fractions, in time order. Its index is kept.
    window
        Observations in the look-back window (>= 2).
    k_sigma
        Threshold in standard deviations of past one-step changes.
    jump_pp
        Threshold in percentage points over the window (3.0 = a 0.03 move).
    oi
        Optional open interest. Same index as ``basis``, or (both DatetimeIndex) joined
        point in time: the last OI stamped at or before each basis stamp.
    oi_drop_frac
        Fall from the window's OI maximum that counts as a drop (0.05 = 5%).

    Returns
    -------
    pandas.DataFrame
        Indexed like ``basis``: ``basis, change, z, move, sigma_jump, pp_jump, flag,
        direction`` (+1 up, -1 down, 0 none), and with OI ``oi, oi_change, oi_drop,
        flag_oi``. Flags are False where the inputs are NaN or in warm-up.
    """
    if int(window) < 2:
        raise ConfigError(f"window={window!r} too small", column="window",
                          expected="an integer >= 2", fix="use a longer window")
    if not k_sigma > 0 or not jump_pp > 0:
        raise ConfigError("k_sigma and jump_pp must be > 0", column="k_sigma",
                          expected="positive thresholds", fix="e.g. k_sigma=3, jump_pp=3")
    b = pd.Series(basis, dtype="float64") if not isinstance(basis, pd.Series) else basis.astype(
        "float64")
    w = int(window)
    change = b.diff()
    z = pd.Series(rolling_zscore(change.to_numpy(), w), index=b.index)
    values = b.to_numpy()
    move = np.full(len(b), np.nan)
    for j in range(1, w + 1):
        lagged = np.concatenate([np.full(min(j, len(b)), np.nan), values[:-j]])[: len(b)]
        d = values - lagged
        take = np.isnan(move) | (np.abs(d) > np.abs(move))
        move = np.where(take & ~np.isnan(d), d, move)
    sigma_jump = (np.abs(z.to_numpy()) >= k_sigma) & ~np.isnan(z.to_numpy())
    pp_jump = (np.abs(move) >= jump_pp / 100.0) & ~np.isnan(move)
    flag = sigma_jump | pp_jump
    sign_src = np.where(pp_jump, move, change.to_numpy())
    direction = np.where(flag, np.sign(np.nan_to_num(sign_src)), 0).astype("int64")
    out = pd.DataFrame({"basis": b, "change": change, "z": z, "move": move,
                        "sigma_jump": sigma_jump, "pp_jump": pp_jump, "flag": flag,
                        "direction": direction}, index=b.index)
    if oi is not None:
        o = _align_oi(oi, b)
        prior_max = o.shift(1).rolling(w, min_periods=1).max()
        oi_change = o / prior_max.where(prior_max > 0) - 1.0
        oi_drop = (oi_change <= -oi_drop_frac).fillna(False).to_numpy(dtype=bool)
        out["oi"] = o
        out["oi_change"] = oi_change
        out["oi_drop"] = oi_drop
        out["flag_oi"] = flag & oi_drop
    return out


def _align_oi(oi: pd.Series, b: pd.Series) -> pd.Series:
    oi = pd.Series(oi, dtype="float64") if not isinstance(oi, pd.Series) else oi.astype("float64")
    if oi.index.equals(b.index):
        return oi
    if isinstance(oi.index, pd.DatetimeIndex) and isinstance(b.index, pd.DatetimeIndex):
        left = pd.DataFrame({"t": b.index})
        right = pd.DataFrame({"t": oi.index, "oi": oi.to_numpy()}).sort_values("t")
        joined = pd.merge_asof(left, right, on="t", direction="backward")
        return pd.Series(joined["oi"].to_numpy(), index=b.index, name="oi")
    if len(oi) == len(b):
        return pd.Series(oi.to_numpy(), index=b.index, name="oi")
    raise DataError("open interest does not line up with the basis series", column="oi",
                    expected="the same index, two DatetimeIndex, or the same length",
                    fix="reindex the OI series on the basis stamps")


def _dte_days(df: pd.DataFrame) -> np.ndarray:
    if "dte_days" in df.columns:
        return df["dte_days"].to_numpy(dtype="float64", na_value=np.nan)
    if "expiry" in df.columns and "ts" in df.columns:
        return ((df["expiry"] - df["ts"]).dt.total_seconds() / DAY_S).to_numpy(dtype="float64")
    raise DataError("need 'dte_days' or 'ts' and 'expiry'", column="dte_days",
                    expected="days to expiry per row", fix="add a dte_days column")


def constant_maturity(
    table: Any,
    tenors: Sequence[float] = (30, 60, 90, 120),
    *,
    value: str = "basis_ann",
) -> pd.DataFrame:
    """Constant-maturity curve by linear interpolation across listed expiries.

    Per snapshot ``ts`` the listed points ``(dte_days, value)`` are sorted by DTE (rows
    with NaN value or ``dte_days <= 0`` are dropped, equal DTEs averaged) and each tenor
    is interpolated linearly between its two neighbours. A tenor outside
    ``[min DTE, max DTE]`` of that snapshot is NaN: there is no extrapolation, because a
    curve extended beyond its last listed future says nothing about where the market is.

    Formula::

        v(T) = v_i + (v_{i+1} - v_i) * (T - d_i) / (d_{i+1} - d_i),   d_i <= T <= d_{i+1}

    Parameters
    ----------
    table
        DataFrame (or Arrow table) with ``ts``, ``value`` and ``dte_days`` (or ``expiry``,
        from which ``dte_days = (expiry - ts)`` in days), e.g. :func:`basis_table` output.
    tenors
        Target maturities in days.
    value
        Column to interpolate (annualized basis by default).

    Returns
    -------
    pandas.DataFrame
        One row per snapshot (sorted): ``ts`` and ``{value}_{T}d`` per tenor
        (``basis_ann_30d``, ...).
    """
    df = _frame(table)
    if "ts" not in df.columns or value not in df.columns:
        raise DataError(f"need columns 'ts' and {value!r}", column=value,
                        expected="a per-snapshot, per-expiry table", fix="see basis_table()")
    tenors = [float(t) for t in tenors]
    if not tenors or any(not t > 0 for t in tenors):
        raise ConfigError(f"tenors {tenors} invalid", column="tenors",
                          expected="positive days", fix="e.g. (30, 60, 90, 120)")
    work = pd.DataFrame({"ts": df["ts"].to_numpy(), "d": _dte_days(df),
                         "v": df[value].to_numpy(dtype="float64", na_value=np.nan)})
    work = work[(work["d"] > 0) & work["v"].notna()]
    work = work.groupby(["ts", "d"], sort=True)["v"].mean().reset_index()
    names = [f"{value}_{_fmt_tenor(t)}d" for t in tenors]
    rows = []
    stamps = pd.Series(df["ts"]).drop_duplicates().sort_values()
    groups = {k: g for k, g in work.groupby("ts", sort=False)}
    for ts in stamps:
        g = groups.get(ts)
        vals = [np.nan] * len(tenors)
        if g is not None and len(g):
            d = g["d"].to_numpy()
            v = g["v"].to_numpy()
            for j, t in enumerate(tenors):
                if d[0] <= t <= d[-1]:
                    vals[j] = float(np.interp(t, d, v))
        rows.append(vals)
    out = pd.DataFrame(rows, columns=names)
    out.insert(0, "ts", stamps.reset_index(drop=True))
    return out


def _fmt_tenor(t: float) -> str:
    return str(int(t)) if float(t).is_integer() else f"{t:g}"


def basis_table(futures: Any, spot_bars: Any, *, bar_freq: Any = None,
                max_staleness: Any = "2h") -> pd.DataFrame:
    """Annualized basis per snapshot and expiry, with point-in-time spot.

    Spot at time ``t`` is the close of the last bar that *closed* at or before ``t``
    (bar close = ``ts + bar_freq``); older than ``max_staleness`` gives NaN.

    Parameters
    ----------
    futures
        FUTURES table (``ts, expiry, price`` [+ ``instrument``]).
    spot_bars
        BARS table of spot.
    bar_freq
        Bar length; default the modal spacing of the bars' ``ts``.
    max_staleness
        Maximum age of the spot close (Timedelta-like), None for no limit.

    Returns
    -------
    pandas.DataFrame
        ``ts, expiry, dte_days, future, spot, basis_ann`` (+ ``instrument``), sorted by
        ``ts, expiry``; rows at or after expiry get NaN ``basis_ann``.
    """
    fut = _frame(futures)
    bars = _frame(spot_bars)
    for name, df, cols in (("futures", fut, ("ts", "expiry", "price")),
                           ("spot", bars, ("ts", "close"))):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataError(f"missing column(s) {missing}", source=name,
                            expected=f"columns {list(cols)}", fix="use the canonical loaders")
    fut = fut.sort_values(["ts", "expiry"], kind="stable").reset_index(drop=True)
    bts = bars["ts"].sort_values(kind="stable")
    order = bts.index
    b_us = to_epoch_us(bts)
    freq_us = (modal_spacing_us(b_us, source="spot") if bar_freq is None
               else duration_us(bar_freq, name="bar_freq"))
    close_us = b_us + freq_us
    closes = bars["close"].to_numpy(dtype="float64")[order.to_numpy()]
    t_us = to_epoch_us(fut["ts"])
    j = np.searchsorted(close_us, t_us, side="right") - 1
    jj = np.clip(j, 0, None)
    spot = np.where(j >= 0, closes[jj] if len(closes) else np.nan, np.nan)
    if max_staleness is not None and len(closes):
        stale = (t_us - close_us[jj]) > duration_us(max_staleness, name="max_staleness",
                                                    minimum="nonnegative")
        spot = np.where(stale, np.nan, spot)
    dte = ((fut["expiry"] - fut["ts"]).dt.total_seconds() / DAY_S).to_numpy(dtype="float64")
    price = fut["price"].to_numpy(dtype="float64")
    out = pd.DataFrame({"ts": fut["ts"], "expiry": fut["expiry"], "dte_days": dte,
                        "future": price, "spot": spot,
                        "basis_ann": annualized_basis(price, spot, dte)})
    if "instrument" in fut.columns:
        out["instrument"] = fut["instrument"].to_numpy()
    return out
