"""Event-study statistics: forward-window measures, moving-block bootstrap, permutation test.

Pure numpy; no I/O, no backtrader. Each fast function has a slow, readable reference
(``*_reference``) that the tests compare it with.

Conventions
-----------
- An *entry* is a bar index: the first bar whose open is at or after the moment the
  information became available (point in time). The window of ``H`` bars is
  ``entry .. entry + H - 1``; its returns are ``log(close[entry] / open[entry])`` then
  close-to-close. A window that runs past the data, or whose bars are not consecutive
  (a missing bar inside), gives NaN.
- Realized volatility is the root mean square of those log returns (mean taken as 0, the
  usual high-frequency estimator), annualized with ``periods_per_year`` (24 * 365 for
  hourly crypto bars).
- Regime labels: -1 short gamma, +1 long gamma (0 or NaN values are left out).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from plumbing.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
HOURS_PER_YEAR = 24 * 365

__all__ = ["HOURS_PER_YEAR", "entry_index", "forward_measures", "forward_measures_reference",
           "mean_run_length", "block_bootstrap_indices", "ratio_of_means", "bootstrap_ratio",
           "bootstrap_ratio_reference", "bootstrap_mean_ci", "permutation_pvalue",
           "permutation_pvalue_reference"]


def entry_index(bar_open_us: npt.ArrayLike, available_us: npt.ArrayLike) -> IntArray:
    """Index of the first bar whose open is at or after each availability time.

    Parameters
    ----------
    bar_open_us : array of int
        Bar open times, epoch microseconds, strictly increasing.
    available_us : array of int
        Moments the information became usable, epoch microseconds.

    Returns
    -------
    numpy.ndarray of int64
        Bar index, ``len(bar_open_us)`` when no bar opens at or after the moment.
    """
    return np.searchsorted(np.asarray(bar_open_us, dtype=np.int64),
                           np.asarray(available_us, dtype=np.int64), side="left").astype(np.int64)


def _check_horizon(horizon_bars: int) -> None:
    if int(horizon_bars) < 1:
        raise ConfigError(f"horizon of {horizon_bars} bars", column="horizon",
                          expected="at least 1 bar", fix="use a horizon of one bar or more")


def forward_measures(ts_us: npt.ArrayLike, open_: npt.ArrayLike, high: npt.ArrayLike,
                     low: npt.ArrayLike, close: npt.ArrayLike, entry: npt.ArrayLike,
                     horizon_bars: int, *, bar_us: int,
                     periods_per_year: float = HOURS_PER_YEAR) -> dict[str, FloatArray]:
    """Forward-window measures from each entry bar over ``horizon_bars`` bars.

    Formula::

        r_0 = log(C[e] / O[e]),  r_j = log(C[e+j] / C[e+j-1]),  j = 1..H-1
        vol_ann     = sqrt(mean(r^2) * periods_per_year)
        ret         = log(C[e+H-1] / O[e])          (signed, log units)
        abs_ret     = |ret|
        max_adverse = max(-min_j log(L[e+j] / O[e]), max_j log(H[e+j] / O[e]), 0)

    ``max_adverse`` is the largest excursion from the entry price against a position of
    either side (the worse of the drawdown for a long and the run-up for a short), in
    log units.

    Parameters
    ----------
    ts_us : array of int
        Bar open times, epoch microseconds, increasing.
    open_, high, low, close : array of float
        Bar prices (USD).
    entry : array of int
        Entry bar per event (see :func:`entry_index`); out of range gives NaN.
    horizon_bars : int
        Window length in bars (>= 1).
    bar_us : int
        Bar length in microseconds; a window spanning more than ``(H - 1) * bar_us``
        (a missing bar) gives NaN.
    periods_per_year : float
        Bars per year for annualizing the volatility.

    Returns
    -------
    dict of str to numpy.ndarray
        ``vol_ann``, ``ret``, ``abs_ret``, ``max_adverse``, one value per entry (NaN when
        the window is incomplete).
    """
    _check_horizon(horizon_bars)
    h = int(horizon_bars)
    ts = np.asarray(ts_us, dtype=np.int64)
    o, hi, lo, c = (np.asarray(x, dtype=np.float64) for x in (open_, high, low, close))
    e = np.asarray(entry, dtype=np.int64)
    n = ts.size
    out = {k: np.full(e.size, np.nan) for k in ("vol_ann", "ret", "abs_ret", "max_adverse")}
    if n < h or e.size == 0:
        return out
    ok = (e >= 0) & (e + h <= n)
    ee = e[ok]
    ok_idx = np.flatnonzero(ok)
    contiguous = ts[ee + h - 1] - ts[ee] == (h - 1) * int(bar_us)
    ee, ok_idx = ee[contiguous], ok_idx[contiguous]
    if ee.size == 0:
        return out
    logc = np.log(c)
    r = np.empty(n)
    r[0] = 0.0
    r[1:] = np.diff(logc)
    sq = np.r_[0.0, np.cumsum(r * r)]
    first = (logc[ee] - np.log(o[ee])) ** 2
    rest = sq[ee + h] - sq[ee + 1]
    out["vol_ann"][ok_idx] = np.sqrt(np.maximum(first + rest, 0.0) / h * periods_per_year)
    ret = logc[ee + h - 1] - np.log(o[ee])
    out["ret"][ok_idx] = ret
    out["abs_ret"][ok_idx] = np.abs(ret)
    win_lo = np.lib.stride_tricks.sliding_window_view(lo, h)[ee].min(axis=1)
    win_hi = np.lib.stride_tricks.sliding_window_view(hi, h)[ee].max(axis=1)
    lo_move = -np.log(win_lo / o[ee])
    hi_move = np.log(win_hi / o[ee])
    out["max_adverse"][ok_idx] = np.maximum(np.maximum(lo_move, hi_move), 0.0)
    return out


def forward_measures_reference(ts_us, open_, high, low, close, entry, horizon_bars, *,
                               bar_us, periods_per_year=HOURS_PER_YEAR):
    """Slow per-event loop computing the same as :func:`forward_measures`."""
    h = int(horizon_bars)
    n = len(ts_us)
    out = {k: [] for k in ("vol_ann", "ret", "abs_ret", "max_adverse")}
    for e in entry:
        e = int(e)
        if e < 0 or e + h > n or ts_us[e + h - 1] - ts_us[e] != (h - 1) * bar_us:
            for k in out:
                out[k].append(float("nan"))
            continue
        prices = [open_[e]] + [close[j] for j in range(e, e + h)]
        rets = [float(np.log(prices[j + 1] / prices[j])) for j in range(h)]
        out["vol_ann"].append(float(np.sqrt(sum(x * x for x in rets) / h * periods_per_year)))
        total = float(np.log(close[e + h - 1] / open_[e]))
        out["ret"].append(total)
        out["abs_ret"].append(abs(total))
        worst = 0.0
        for j in range(e, e + h):
            worst = max(worst, -float(np.log(low[j] / open_[e])),
                        float(np.log(high[j] / open_[e])))
        out["max_adverse"].append(worst)
    return {k: np.array(v, dtype=float) for k, v in out.items()}


def mean_run_length(labels: npt.ArrayLike) -> float:
    """Mean length of runs of equal consecutive labels (1.0 for an empty input)."""
    x = np.asarray(labels)
    if x.size == 0:
        return 1.0
    runs = 1 + int(np.count_nonzero(x[1:] != x[:-1]))
    return x.size / runs


def block_bootstrap_indices(n: int, block_len: int, n_boot: int,
                            rng: np.random.Generator) -> IntArray:
    """Moving-block bootstrap resamples of ``range(n)``: shape ``(n_boot, n)``.

    Each resample glues ``ceil(n / block_len)`` blocks of ``block_len`` consecutive
    indices whose starts are drawn uniformly from ``0 .. n - block_len`` and cuts the
    result to ``n`` (Kunsch 1989). Blocks keep runs of the same regime together, so
    the persistence of regimes survives the resampling.
    """
    if n < 1:
        raise ConfigError("bootstrap of an empty sample", expected="at least one value",
                          fix="widen the data window")
    b = int(min(max(block_len, 1), n))
    k = -(-n // b)
    starts = rng.integers(0, n - b + 1, size=(n_boot, k))
    idx = (starts[:, :, None] + np.arange(b)[None, None, :]).reshape(n_boot, k * b)
    return idx[:, :n].astype(np.int64)


def _clean(values: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    v = np.asarray(values, dtype=np.float64)
    lab = np.asarray(labels, dtype=np.float64)
    keep = np.isfinite(v) & np.isfinite(lab) & (lab != 0)
    return v[keep], np.sign(lab[keep])


def ratio_of_means(values: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """``mean(values | label < 0) / mean(values | label > 0)``; NaN if a side is empty."""
    v, lab = _clean(values, labels)
    s, lg = v[lab < 0], v[lab > 0]
    if s.size == 0 or lg.size == 0 or lg.mean() == 0:
        return float("nan")
    return float(s.mean() / lg.mean())


def _default_block(labels: FloatArray) -> int:
    return max(2, int(round(mean_run_length(labels))))


def bootstrap_ratio(values: npt.ArrayLike, labels: npt.ArrayLike, *,
                    block_len: int | None = None, n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95) -> dict[str, float]:
    """Short/long ratio of means with a moving-block bootstrap percentile interval.

    Parameters
    ----------
    values : array of float
        One measure per event, in time order (NaN events are dropped first).
    labels : array
        Regime per event: < 0 short gamma, > 0 long gamma; 0/NaN dropped.
    block_len : int, optional
        Block length in events; default the mean regime run length (at least 2), so a
        block typically holds a whole regime spell.
    n_boot, seed, level
        Resamples, generator seed (``numpy.random.default_rng``), interval coverage.

    Returns
    -------
    dict
        ``ratio``, ``lo``, ``hi`` (percentile interval), ``n_short``, ``n_long``,
        ``block_len``, ``n_valid`` (resamples with both regimes present).
    """
    v, lab = _clean(values, labels)
    b = _default_block(lab) if block_len is None else int(block_len)
    res = {"ratio": ratio_of_means(v, lab), "lo": float("nan"), "hi": float("nan"),
           "n_short": int((lab < 0).sum()), "n_long": int((lab > 0).sum()),
           "block_len": b, "n_valid": 0}
    if not np.isfinite(res["ratio"]):
        return res
    idx = block_bootstrap_indices(v.size, b, n_boot, np.random.default_rng(seed))
    vv, short = v[idx], lab[idx] < 0
    n_s = short.sum(axis=1)
    n_l = v.size - n_s
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = ((vv * short).sum(axis=1) / n_s) / ((vv * ~short).sum(axis=1) / n_l)
    reps = reps[np.isfinite(reps)]
    res["n_valid"] = int(reps.size)
    if reps.size:
        a = (1 - level) / 2
        res["lo"], res["hi"] = (float(q) for q in np.quantile(reps, [a, 1 - a]))
    return res


def bootstrap_ratio_reference(values, labels, idx, level=0.95):
    """Slow loop over given resample indices ``idx``: (ratio, lo, hi)."""
    v, lab = _clean(values, labels)
    reps = []
    for row in idx:
        s = [v[i] for i in row if lab[i] < 0]
        lg = [v[i] for i in row if lab[i] > 0]
        if s and lg:
            reps.append((sum(s) / len(s)) / (sum(lg) / len(lg)))
    a = (1 - level) / 2
    return ratio_of_means(v, lab), float(np.quantile(reps, a)), float(np.quantile(reps, 1 - a))


def bootstrap_mean_ci(values: npt.ArrayLike, *, block_len: int = 1, n_boot: int = 2000,
                      seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Moving-block bootstrap percentile interval of the mean of ``values`` (NaN dropped).

    Returns ``(nan, nan)`` for fewer than two values.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return float("nan"), float("nan")
    idx = block_bootstrap_indices(v.size, block_len, n_boot, np.random.default_rng(seed))
    means = v[idx].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def _shift_set(n: int, n_perm: int, rng: np.random.Generator) -> IntArray:
    shifts = np.arange(1, n, dtype=np.int64)
    if shifts.size > n_perm:
        shifts = np.sort(rng.choice(shifts, size=n_perm, replace=False))
    return shifts


def permutation_pvalue(values: npt.ArrayLike, labels: npt.ArrayLike, *, n_perm: int = 2000,
                       seed: int = 0, method: Literal["shift", "shuffle"] = "shift") -> float:
    """Two-sided permutation p-value of the short/long ratio of means.

    The statistic is ``|log(ratio)|``. ``method='shift'`` (default) rotates the regime
    sequence against the values by every circular shift ``1 .. n-1`` (a random subset of
    ``n_perm`` when there are more): the labels keep their run structure, so regime
    persistence does not make the test over-confident. ``'shuffle'`` permutes labels
    independently (valid only for independent events). ``p = (1 + #{T* >= T}) / (1 + m)``
    over the ``m`` rearrangements with a defined ratio; NaN when the ratio is undefined.
    """
    v, lab = _clean(values, labels)
    obs = ratio_of_means(v, lab)
    if not np.isfinite(obs) or obs <= 0:
        return float("nan")
    t_obs = abs(np.log(obs))
    rng = np.random.default_rng(seed)
    n = v.size
    if method == "shift":
        shifts = _shift_set(n, n_perm, rng)
        pos = (np.arange(n)[None, :] - shifts[:, None]) % n
        perm_lab = lab[pos]
    elif method == "shuffle":
        perm_lab = np.stack([rng.permutation(lab) for _ in range(n_perm)]) if n_perm else \
            np.empty((0, n))
    else:
        raise ConfigError(f"permutation method {method!r}", column="method",
                          expected="'shift' or 'shuffle'", fix="use method='shift'")
    short = perm_lab < 0
    n_s = short.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = ((v * short).sum(axis=1) / n_s) / ((v * ~short).sum(axis=1) / (n - n_s))
        t = np.abs(np.log(reps))
    t = t[np.isfinite(t)]
    # a tiny tolerance so a rearrangement that reproduces the observed split counts as >=
    return float((1 + np.count_nonzero(t >= t_obs - 1e-12)) / (1 + t.size))


def permutation_pvalue_reference(values, labels, n_perm=2000, seed=0):
    """Slow loop over circular shifts; same shift set as :func:`permutation_pvalue`."""
    v, lab = _clean(values, labels)
    obs = abs(np.log(ratio_of_means(v, lab)))
    n = len(v)
    shifts = _shift_set(n, n_perm, np.random.default_rng(seed))
    hits, m = 0, 0
    for k in shifts:
        rolled = [lab[(i - k) % n] for i in range(n)]
        s = [v[i] for i in range(n) if rolled[i] < 0]
        lg = [v[i] for i in range(n) if rolled[i] > 0]
        if not s or not lg:
            continue
        m += 1
        if abs(np.log((sum(s) / len(s)) / (sum(lg) / len(lg)))) >= obs - 1e-12:
            hits += 1
    return (1 + hits) / (1 + m)


def abs_return_autocorr(r: npt.ArrayLike, lag: int) -> float:
    """Autocorrelation of ``|r|`` at ``lag`` (Pearson correlation of the lagged pairs;
    NaN pairs dropped). NaN when fewer than three pairs remain."""
    a = np.abs(np.asarray(r, dtype=np.float64))
    if a.size <= lag + 2:
        return float("nan")
    x, y = a[:-lag], a[lag:]
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return float("nan")
    return float(np.corrcoef(x[keep], y[keep])[0, 1])


def stylized_facts(r: npt.ArrayLike, *, periods_per_year: float = HOURS_PER_YEAR,
                   lags: tuple[int, ...] = (1, 24, 168)) -> dict[str, float]:
    """Stylized facts of a log-return series (NaN dropped for the moments).

    Returns ``vol_ann`` (sample standard deviation times ``sqrt(periods_per_year)``),
    ``kurtosis_excess`` (fourth standardized moment minus 3, 0 for a normal; population
    moments) and ``acf_abs_<lag>`` for each lag (see :func:`abs_return_autocorr`).
    """
    x = np.asarray(r, dtype=np.float64)
    v = x[np.isfinite(x)]
    out: dict[str, float] = {"n": float(v.size)}
    if v.size < 4:
        out.update({"vol_ann": float("nan"), "kurtosis_excess": float("nan")})
    else:
        d = v - v.mean()
        out["vol_ann"] = float(v.std(ddof=1) * np.sqrt(periods_per_year))
        out["kurtosis_excess"] = float(np.mean(d ** 4) / np.mean(d ** 2) ** 2 - 3.0)
    for lag in lags:
        out[f"acf_abs_{lag}"] = abs_return_autocorr(x, lag)
    return out


def path_measures(open_: npt.ArrayLike, high: npt.ArrayLike, low: npt.ArrayLike,
                  close: npt.ArrayLike, *, periods_per_year: float = HOURS_PER_YEAR,
                  speed_bars: int = 24) -> dict[str, float]:
    """Price-path measures of one window of consecutive bars.

    Formula::

        ret            = log(C[-1] / O[0])
        vol_ann        = sqrt(mean(r^2) * periods_per_year),  r = log returns as in
                         forward_measures (first bar open-to-close, then close-to-close)
        max_drawdown   = max over t of (1 - L[t] / max(O[0], H[0..t]))   (fraction)
        worst_move     = min over windows of speed_bars bars of log(C[j] / O[j-k+1])
                         (the fastest fall, log units per speed_bars bars)
        bars_to_trough = bars from the running peak to the max-drawdown bar

    NaN everywhere for an empty window; ``worst_move`` NaN when the window is shorter
    than ``speed_bars``.
    """
    o, h, lo, c = (np.asarray(x, dtype=np.float64) for x in (open_, high, low, close))
    n = c.size
    nan = float("nan")
    if n == 0:
        return {"ret": nan, "vol_ann": nan, "max_drawdown": nan, "worst_move": nan,
                "bars_to_trough": nan}
    r = np.r_[np.log(c[0] / o[0]), np.diff(np.log(c))]
    peak = np.maximum.accumulate(np.maximum(h, o[0]))
    dd = 1.0 - lo / peak
    t = int(np.argmax(dd))
    peak_at = int(np.flatnonzero(np.maximum(h[: t + 1], o[0]) == peak[t])[0])
    k = int(speed_bars)
    worst = float(np.min(np.log(c[k - 1:] / o[: n - k + 1]))) if n >= k else nan
    return {"ret": float(np.log(c[-1] / o[0])),
            "vol_ann": float(np.sqrt(np.mean(r * r) * periods_per_year)),
            "max_drawdown": float(max(dd[t], 0.0)), "worst_move": worst,
            "bars_to_trough": float(t - peak_at)}


def cluster_touches(high: npt.ArrayLike, low: npt.ArrayLike, below: npt.ArrayLike,
                    below_usd: npt.ArrayLike, above: npt.ArrayLike, above_usd: npt.ArrayLike,
                    *, min_usd: float = 0.0) -> dict[str, np.ndarray]:
    """Bars that reach a liquidation cluster known at the previous bar's close.

    Formula::

        down touch at bar i:  low[i]  <= below[i-1]  and below_usd[i-1] >= min_usd
        up touch at bar i:    high[i] >= above[i-1]  and above_usd[i-1] >= min_usd

    ``below``/``above`` are the nearest long-/short-liquidation clusters per bar
    (USD price, NaN when none), point in time at each bar's close, as
    ``indicators.liquidation.estimate_liq_map(...).lines`` gives them. A bar that
    reaches both gives two touches.

    Returns
    -------
    dict of numpy.ndarray
        ``bar`` (touching bar index), ``direction`` (-1 down through a long cluster, +1
        up through a short one) and ``level`` (USD), in bar order (down before up on a
        bar that does both).
    """
    h, lo = (np.asarray(x, dtype=np.float64) for x in (high, low))
    b, bu, a, au = (np.asarray(x, dtype=np.float64) for x in (below, below_usd, above,
                                                                above_usd))
    with np.errstate(invalid="ignore"):
        down = np.r_[False, (lo[1:] <= b[:-1]) & (bu[:-1] >= min_usd)]
        up = np.r_[False, (h[1:] >= a[:-1]) & (au[:-1] >= min_usd)]
    bars = np.r_[np.flatnonzero(down), np.flatnonzero(up)]
    direction = np.r_[np.full(down.sum(), -1), np.full(up.sum(), 1)].astype(np.int64)
    level = np.r_[b[np.flatnonzero(down) - 1], a[np.flatnonzero(up) - 1]]
    order = np.lexsort((direction, bars))
    return {"bar": bars[order].astype(np.int64), "direction": direction[order],
            "level": level[order]}


def cluster_touches_reference(high, low, below, below_usd, above, above_usd, *, min_usd=0.0):
    """Slow per-bar loop computing the same as :func:`cluster_touches`."""
    rows = []
    for i in range(1, len(high)):
        if low[i] <= below[i - 1] and below_usd[i - 1] >= min_usd:
            rows.append((i, -1, below[i - 1]))
        if high[i] >= above[i - 1] and above_usd[i - 1] >= min_usd:
            rows.append((i, 1, above[i - 1]))
    return rows
