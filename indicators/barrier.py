"""Single-barrier options (structured-note books): closed-form price and greeks, and
the dealer exposure of a book of positions tracked along bars.

Conventions (``../shared/DOMAIN.md`` section 2, binding):

- Continuously monitored single barrier, no rebate, European payoff at expiry.
- Reiner and Rubinstein (1991) closed forms on the forward with r = q = 0 (cost of carry
  b = 0, so mu = (b - iv^2 / 2) / iv^2 = -1/2 and the reflection factor (H/S)^(2 mu + 2)
  is H/S).
- In + out = vanilla for every strike/barrier pair.
- Spot at or through the barrier (S <= H for down, S >= H for up barriers): a
  knock-in option *is* the vanilla, a knock-out option is worth 0 (knocked out).
- Every function here depends on volatility and time only through ``s = iv sqrt(T)``,
  so charm (d delta / dt, time passing) is ``-vanna iv / (2 T)``.

Formula:
    s = iv sqrt(T);  phi = +1 call, -1 put;  eta = +1 down, -1 up barrier
    x1 = ln(S/K)/s + s/2            x2 = ln(S/H)/s + s/2
    y1 = ln(H^2/(S K))/s + s/2      y2 = ln(H/S)/s + s/2
    A = phi S N(phi x1) - phi K N(phi (x1 - s))              (the vanilla)
    B = phi S N(phi x2) - phi K N(phi (x2 - s))
    C = phi H N(eta y1) - phi K (S/H) N(eta (y1 - s))
    D = phi H N(eta y2) - phi K (S/H) N(eta (y2 - s))
    down_in_put  = B - C + D (K > H), A (K <= H)
    down_out_put = A - B + C - D (K > H), 0 (K <= H)
    up_out_call  = 0 (K >= H), A - B + C - D (K < H)
    (the other five types in :data:`BARRIER_TYPES` follow Haug's table)
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import ndtr

from indicators.errors import ConfigError, DataError

__all__ = [
    "BARRIER_TYPES",
    "BarrierGreeks",
    "BarrierType",
    "barrier_book",
    "barrier_greeks",
    "barrier_price",
]

BarrierType = Literal["down_in_put", "down_out_put", "up_out_call", "up_in_call",
                      "down_in_call", "down_out_call", "up_in_put", "up_out_put"]
BARRIER_TYPES: tuple[str, ...] = get_args(BarrierType)
FloatArray = npt.NDArray[np.float64]

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
_US_PER_YEAR = 365.0 * 86400.0 * 1e6
# (phi, eta, weights of A, B, C, D when K > H, weights when K <= H)
_TABLE: dict[str, tuple[float, float, tuple[float, ...], tuple[float, ...]]] = {
    "down_in_call": (1.0, 1.0, (0, 0, 1, 0), (1, -1, 0, 1)),
    "up_in_call": (1.0, -1.0, (1, 0, 0, 0), (0, 1, -1, 1)),
    "down_in_put": (-1.0, 1.0, (0, 1, -1, 1), (1, 0, 0, 0)),
    "up_in_put": (-1.0, -1.0, (1, -1, 0, 1), (0, 0, 1, 0)),
    "down_out_call": (1.0, 1.0, (1, 0, -1, 0), (0, 1, 0, -1)),
    "up_out_call": (1.0, -1.0, (0, 0, 0, 0), (1, -1, 1, -1)),
    "down_out_put": (-1.0, 1.0, (1, -1, 1, -1), (0, 0, 0, 0)),
    "up_out_put": (-1.0, -1.0, (0, 1, 0, -1), (1, 0, -1, 0)),
}
_CODE = {name: i for i, name in enumerate(BARRIER_TYPES)}
_PHI = np.array([_TABLE[n][0] for n in BARRIER_TYPES])
_ETA = np.array([_TABLE[n][1] for n in BARRIER_TYPES])
_W_ABOVE = np.array([_TABLE[n][2] for n in BARRIER_TYPES], dtype=np.float64)
_W_BELOW = np.array([_TABLE[n][3] for n in BARRIER_TYPES], dtype=np.float64)
_IS_IN = np.array(["_in_" in n for n in BARRIER_TYPES])
_IS_DOWN = np.array([n.startswith("down") for n in BARRIER_TYPES])


@dataclass(frozen=True)
class BarrierGreeks:
    """Price and greeks of one unit (1 BTC of underlying) of each option, float64.

    Attributes
    ----------
    price
        USD.
    delta
        d price / d S, BTC per BTC (dimensionless).
    gamma
        d delta / d S, per USD.
    vanna
        d delta / d iv, per 1.00 of volatility.
    charm
        d delta / dt as time passes, per year.
    """

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vanna: FloatArray
    charm: FloatArray


def _codes(kind: Any) -> npt.NDArray[np.intp]:
    arr = np.asarray(kind)
    if arr.dtype.kind in "iu":
        return arr.astype(np.intp)
    flat = np.ravel(arr).astype(str)
    uniq, inv = np.unique(flat, return_inverse=True)
    codes = np.empty(uniq.size, dtype=np.intp)
    for i, name in enumerate(uniq):
        if name not in _CODE:
            hint = difflib.get_close_matches(name, BARRIER_TYPES, n=1)
            raise ConfigError(f"unknown barrier type {name!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                              column="type", expected=f"one of {list(BARRIER_TYPES)}",
                              fix="spell the type as listed")
        codes[i] = _CODE[name]
    return codes[inv].reshape(arr.shape)


def _terms(lnS: FloatArray, S: FloatArray, s: FloatArray, iv: FloatArray, c: FloatArray,
           a: int, eps: FloatArray, m: float, g: FloatArray, h: float,
           ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Price, delta, gamma, vanna of ``c S^a N(w)``, ``w = eps ((m ln S + g)/s + h s)``.

    Formula:
        delta = c S^(a-1) (a N + eps m n / s)
        gamma = c S^(a-2) ((2a - 1) eps m n / s - w n / s^2)           (a in {0, 1})
        vanna = c S^(a-1) (a n w_iv - eps m n (w w_iv / s + 1 / (s iv))),
        w_iv = eps (h s - (m ln S + g) / s) / iv,  n = pdf(w)
    """
    u = (m * lnS + g) / s
    w = eps * (u + h * s)
    N = ndtr(w)
    n = _INV_SQRT_2PI * np.exp(-0.5 * w * w)
    w_iv = eps * (h * s - u) / iv
    em = eps * m
    if a == 1:
        price = c * S * N
        delta = c * (N + em * n / s)
        gamma = c / S * (em * n / s - w * n / (s * s))
        vanna = c * (n * w_iv - em * n * (w * w_iv / s + 1.0 / (s * iv)))
    else:
        price = c * N
        delta = c / S * (em * n / s)
        gamma = c / (S * S) * (-em * n / s - w * n / (s * s))
        vanna = c / S * (-em * n * (w * w_iv / s + 1.0 / (s * iv)))
    return price, delta, gamma, vanna


def _evaluate(S: FloatArray, K: FloatArray, H: FloatArray, T: FloatArray, iv: FloatArray,
              code: npt.NDArray[np.intp]) -> tuple[FloatArray, ...]:
    """(price, delta, gamma, vanna) of the barrier options, valid inputs only."""
    phi, eta = _PHI[code], _ETA[code]
    above = K > H
    wts = np.where(above[:, None], _W_ABOVE[code], _W_BELOW[code])
    s = iv * np.sqrt(T)
    lnS, lnK, lnH = np.log(S), np.log(K), np.log(H)
    out = [np.zeros_like(S) for _ in range(4)]
    one = np.ones_like(S)
    blocks = (  # (weight column, [(c, a, eps, m, g, h), ...])
        (0, [(phi, 1, phi, 1.0, -lnK, 0.5), (-phi * K, 0, phi, 1.0, -lnK, -0.5)]),
        (1, [(phi, 1, phi, 1.0, -lnH, 0.5), (-phi * K, 0, phi, 1.0, -lnH, -0.5)]),
        (2, [(phi * H, 0, eta, -1.0, 2 * lnH - lnK, 0.5),
             (-phi * K / H, 1, eta, -1.0, 2 * lnH - lnK, -0.5)]),
        (3, [(phi * H, 0, eta, -1.0, lnH, 0.5), (-phi * K / H, 1, eta, -1.0, lnH, -0.5)]),
    )
    for col, terms in blocks:
        wt = wts[:, col]
        used = wt != 0
        if not used.any():
            continue
        idx = np.flatnonzero(used)
        for c, a, eps, m, g, h in terms:
            vals = _terms(lnS[idx], S[idx], s[idx], iv[idx], (c * one)[idx] * wt[idx], a,
                          (eps * one)[idx], m, (g * one)[idx], h)
            for o, v in zip(out, vals, strict=True):
                o[idx] += v
    return tuple(out)


def _vanilla(S: FloatArray, K: FloatArray, T: FloatArray, iv: FloatArray,
             phi: FloatArray) -> tuple[FloatArray, ...]:
    s = iv * np.sqrt(T)
    d1 = np.log(S / K) / s + 0.5 * s
    d2 = d1 - s
    n = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
    price = phi * (S * ndtr(phi * d1) - K * ndtr(phi * d2))
    delta = ndtr(d1) - (phi < 0)
    gamma = n / (S * s)
    vanna = -n * d2 / iv
    return price, delta, gamma, vanna


def barrier_greeks(kind: Any, S: npt.ArrayLike, K: npt.ArrayLike, H: npt.ArrayLike,
                   T: npt.ArrayLike, iv: npt.ArrayLike) -> BarrierGreeks:
    """Closed-form price and greeks of single-barrier options, vectorized.

    Parameters
    ----------
    kind : str or array of str (or of codes into :data:`BARRIER_TYPES`)
        ``down_in_put``, ``down_out_put``, ``up_out_call``, ``up_in_call``,
        ``down_in_call``, ``down_out_call``, ``up_in_put``, ``up_out_put``.
    S, K, H : array_like
        Forward (the underlying at r = q = 0), strike and barrier, USD.
    T : array_like
        Time to expiry in years (365-day years).
    iv : array_like
        Implied volatility as a fraction.

    Returns
    -------
    BarrierGreeks
        Per unit of underlying. Spot at or through the barrier gives the vanilla's
        values for knock-ins and 0 for knock-outs. NaN where ``S, K, H, T, iv`` are
        not finite and strictly positive.

    Raises
    ------
    ConfigError
        Unknown barrier type (with a suggestion).

    Formula:
        see the module docstring; charm = -vanna iv / (2 T)
    """
    code = _codes(kind)
    S, K, H, T, iv = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64)
                                           for v in (S, K, H, T, iv)), code)[:5]
    code = np.broadcast_to(code, S.shape)
    shape = S.shape
    S, K, H, T, iv, code = (np.ravel(v) for v in (S, K, H, T, iv, code))
    with np.errstate(invalid="ignore"):
        ok = ((S > 0) & (K > 0) & (H > 0) & (T > 0) & (iv > 0) & np.isfinite(S)
              & np.isfinite(K) & np.isfinite(H) & np.isfinite(T) & np.isfinite(iv))
    down = _IS_DOWN[code]
    knocked = ok & np.where(down, S <= H, S >= H)
    live = ok & ~knocked
    out = [np.full(S.shape, np.nan) for _ in range(4)]
    i = np.flatnonzero(live)
    if i.size:
        for o, v in zip(out, _evaluate(S[i], K[i], H[i], T[i], iv[i], code[i]), strict=True):
            o[i] = v
    j = np.flatnonzero(knocked)
    if j.size:
        vals = _vanilla(S[j], K[j], T[j], iv[j], _PHI[code[j]])
        keep = _IS_IN[code[j]]
        for o, v in zip(out, vals, strict=True):
            o[j] = np.where(keep, v, 0.0)
    with np.errstate(invalid="ignore"):
        charm = -out[3] * iv / (2.0 * T)
    price, delta, gamma, vanna = (o.reshape(shape) for o in out)
    return BarrierGreeks(price, delta, gamma, vanna, charm.reshape(shape))


def barrier_price(kind: Any, S: npt.ArrayLike, K: npt.ArrayLike, H: npt.ArrayLike,
                  T: npt.ArrayLike, iv: npt.ArrayLike) -> FloatArray:
    """Closed-form price (USD per unit of underlying); see :func:`barrier_greeks`."""
    return barrier_greeks(kind, S, K, H, T, iv).price


# ---------------------------------------------------------------------------------------
# A book of positions along bars

BOOK_COLUMNS = ("barrier_gex", "barrier_vanna", "barrier_charm", "dist_to_barrier",
                "n_barrier_live")


def _us(col: pd.Series, source: str, column: str) -> npt.NDArray[np.int64]:
    if not isinstance(col.dtype, pd.DatetimeTZDtype):
        raise DataError("timestamps are not timezone-aware", source=source, column=column,
                        expected="timezone-aware UTC timestamps",
                        fix="load the file with feeds.loaders.load_barriers")
    return np.asarray(pd.DatetimeIndex(col).tz_convert("UTC").as_unit("us").asi8)


def barrier_book(positions: pd.DataFrame | Any, bars: pd.DataFrame, *,
                 iv: npt.ArrayLike | float = 0.5, bar_freq_us: int | None = None,
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dealer exposure of a barrier book along bars, point in time, vectorized.

    Parameters
    ----------
    positions : pandas.DataFrame or pyarrow.Table
        Canonical BARRIERS columns: ``ts`` (when the position is known, UTC), ``type``
        (:data:`BARRIER_TYPES`), ``strike``, ``barrier`` (USD), ``expiry`` (UTC),
        ``notional`` (BTC of underlying, > 0), ``dealer_side`` (+1 dealers long, -1
        short); optional ``iv`` (fraction) overrides the ``iv`` argument per position.
    bars : pandas.DataFrame
        Canonical BARS (``ts`` = bar open, ``high, low, close``), strictly increasing.
    iv : float or array_like
        Implied volatility used for positions without their own ``iv``: one value, or
        one per bar (e.g. the chain's ATM IV as of each bar; NaN bars fall back to the
        last finite value, then to 0.5).
    bar_freq_us : int, optional
        Bar spacing in microseconds (default: the modal spacing of ``bars.ts``).

    Returns
    -------
    (lines, events)
        ``lines``: one row per bar, ``ts`` (bar open) and

        - ``barrier_gex``: dealer gamma of the live book at the close, USD per 1% move
          (``sum side N gamma S^2 0.01``);
        - ``barrier_vanna``: USD of dealer delta change per +1 vol point
          (``sum side N vanna S 0.01``);
        - ``barrier_charm``: BTC of dealer delta change per day (``sum side N charm / 365``);
        - ``dist_to_barrier``: ``close / H - 1`` for the nearest live (not yet touched)
          barrier below the close, NaN when none;
        - ``n_barrier_live``: positions in the book at the close.

        ``events``: one row per position: ``knock_ts`` (open time of the first bar
        whose range touches the barrier after the position is known, NaT if never
        before expiry) and ``knocked`` (bool).

    Notes
    -----
    A position stamped ``ts`` enters at the first bar whose close is at or after
    ``ts``; it is evaluated at each bar's close with ``T = (expiry - close) / year``
    until it expires. A bar whose [low, high] touches the barrier knocks it: from that
    bar on a knock-in is the vanilla and a knock-out has left the book.

    Formula:
        barrier_gex(t) = sum_live side_i N_i gamma_i(close_t, T_i(t)) close_t^2 0.01
    """
    df = positions.to_pandas() if hasattr(positions, "to_pandas") else positions
    open_us = _us(bars["ts"], "bars", "ts")
    n_bar = open_us.size
    if bar_freq_us is None:
        bar_freq_us = int(np.median(np.diff(open_us))) if n_bar > 1 else 3_600_000_000
    close_us = open_us + bar_freq_us
    close = bars["close"].to_numpy(np.float64)
    high = bars["high"].to_numpy(np.float64)
    low = bars["low"].to_numpy(np.float64)
    iv_bar = np.broadcast_to(np.asarray(iv, dtype=np.float64), (n_bar,)).copy()
    if np.isnan(iv_bar).any():
        iv_bar = pd.Series(iv_bar).ffill().fillna(0.5).to_numpy()
    code = _codes(df["type"].to_numpy()) if len(df) else np.zeros(0, np.intp)
    K = df["strike"].to_numpy(np.float64)
    H = df["barrier"].to_numpy(np.float64)
    N = df["notional"].to_numpy(np.float64) * df["dealer_side"].to_numpy(np.float64)
    own_iv = df["iv"].to_numpy(np.float64) if "iv" in df.columns else np.full(len(df), np.nan)
    start = np.searchsorted(close_us, _us(df["ts"], "barriers", "ts"), side="left")
    exp_us = _us(df["expiry"], "barriers", "expiry")
    end = np.searchsorted(close_us, exp_us, side="left")  # bars with close < expiry
    count = np.maximum(end - start, 0)
    # every (position, bar) pair while the position can be alive
    total = int(count.sum())
    pos = np.repeat(np.arange(len(df)), count)
    first = np.cumsum(count) - count
    bar = (np.arange(total) - np.repeat(first, count)) + np.repeat(start, count)
    down = _IS_DOWN[code]
    touch = np.where(down[pos], low[bar] <= H[pos], high[bar] >= H[pos])
    knock = np.full(len(df), np.iinfo(np.int64).max)
    np.minimum.at(knock, pos[touch], bar[touch])
    knocked = knock < np.iinfo(np.int64).max
    is_in = _IS_IN[code]
    # knock-outs leave the book at the touching bar
    alive = ~(~is_in[pos] & (bar >= knock[pos]))
    pos, bar = pos[alive], bar[alive]
    S = close[bar]
    T = (exp_us[pos] - close_us[bar]) / _US_PER_YEAR
    vol = np.where(np.isnan(own_iv[pos]), iv_bar[bar], own_iv[pos])
    after = bar >= knock[pos]  # knocked-in: the vanilla from the touching bar on
    g = np.empty(S.size)
    va = np.empty(S.size)
    if (~after).any():
        i = np.flatnonzero(~after)
        res = barrier_greeks(code[pos[i]], S[i], K[pos[i]], H[pos[i]], T[i], vol[i])
        g[i], va[i] = res.gamma, res.vanna
    if after.any():
        i = np.flatnonzero(after)
        _, _, g[i], va[i] = _vanilla(S[i], K[pos[i]], T[i], vol[i], _PHI[code[pos[i]]])
    w = N[pos]
    charm = -va * vol / (2.0 * T)
    gex = np.bincount(bar, weights=w * g * S * S * 0.01, minlength=n_bar)
    vanna = np.bincount(bar, weights=w * va * S * 0.01, minlength=n_bar)
    charm_day = np.bincount(bar, weights=w * charm / 365.0, minlength=n_bar)
    live = np.bincount(bar, minlength=n_bar).astype(np.int64)
    # nearest untouched barrier below the close
    below = ~after & (H[pos] < S)
    nearest = np.full(n_bar, -np.inf)
    np.maximum.at(nearest, bar[below], H[pos[below]])
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.where(np.isfinite(nearest), close / nearest - 1.0, np.nan)
    lines = pd.DataFrame({"ts": bars["ts"].to_numpy(), "barrier_gex": gex,
                          "barrier_vanna": vanna, "barrier_charm": charm_day,
                          "dist_to_barrier": dist, "n_barrier_live": live})
    lines["ts"] = pd.to_datetime(open_us, unit="us", utc=True)
    ktime = pd.to_datetime(np.where(knocked, open_us[np.minimum(knock, n_bar - 1)], 0),
                           unit="us", utc=True)
    events = pd.DataFrame({"knock_ts": ktime.where(knocked), "knocked": knocked})
    return lines, events
