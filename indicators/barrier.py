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

from plumbing.errors import ConfigError
from plumbing.timeconv import to_epoch_us

__all__ = [
    "BARRIER_TYPES",
    "BarrierGreeks",
    "BarrierType",
    "barrier_book",
    "barrier_greeks",
    "book_gex_profile",
    "summary_with_book",
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
           a: int, eps: FloatArray, m: float, g: FloatArray, h: float, full: bool = True,
           ) -> tuple[FloatArray | None, FloatArray | None, FloatArray, FloatArray]:
    """Price, delta, gamma, vanna of ``c S^a N(w)``, ``w = eps ((m ln S + g)/s + h s)``.

    With ``full=False`` only gamma and vanna are computed (price and delta are None):
    they need no normal CDF.

    Formula:
        delta = c S^(a-1) (a N + eps m n / s)
        gamma = c S^(a-2) ((2a - 1) eps m n / s - w n / s^2)           (a in {0, 1})
        vanna = c S^(a-1) (a n w_iv - eps m n (w w_iv / s + 1 / (s iv))),
        w_iv = eps (h s - (m ln S + g) / s) / iv,  n = pdf(w)
    """
    u = (m * lnS + g) / s
    w = eps * (u + h * s)
    n = _INV_SQRT_2PI * np.exp(-0.5 * w * w)
    w_iv = eps * (h * s - u) / iv
    em = eps * m
    cn = c * n
    common = em * (w * w_iv / s + 1.0 / (s * iv))
    price = delta = None
    if a == 1:
        gamma = cn / S * (em / s - w / (s * s))
        vanna = cn * (w_iv - common)
        if full:
            N = ndtr(w)
            price = c * S * N
            delta = c * N + cn * em / s
    else:
        gamma = cn / (S * S) * (-em / s - w / (s * s))
        vanna = -cn / S * common
        if full:
            price = c * ndtr(w)
            delta = cn * em / (s * S)
    return price, delta, gamma, vanna


def _evaluate(S: FloatArray, K: FloatArray, H: FloatArray, T: FloatArray, iv: FloatArray,
              code: npt.NDArray[np.intp], full: bool = True) -> tuple[FloatArray, ...]:
    """(price, delta, gamma, vanna) of the barrier options, valid inputs only (price and
    delta are zeros unless ``full``)."""
    phi, eta = _PHI[code], _ETA[code]
    above = K > H
    wts = np.where(above[:, None], _W_ABOVE[code], _W_BELOW[code])
    s = iv * np.sqrt(T)
    lnS, lnK, lnH = np.log(S), np.log(K), np.log(H)
    out = [np.zeros_like(S) for _ in range(4)]
    for col in range(4):
        wt = wts[:, col]
        idx = np.flatnonzero(wt != 0)
        if idx.size == 0:
            continue
        Si, lSi, si, ivi, wi = S[idx], lnS[idx], s[idx], iv[idx], wt[idx]
        ph, et, Ki, lKi, lHi = phi[idx], eta[idx], K[idx], lnK[idx], lnH[idx]
        if col < 2:
            g = -(lKi if col == 0 else lHi)
            terms = [(ph * wi, 1, ph, 1.0, g, 0.5), (-ph * Ki * wi, 0, ph, 1.0, g, -0.5)]
        else:
            g = (2 * lHi - lKi) if col == 2 else lHi
            Hi = H[idx]
            terms = [(ph * Hi * wi, 0, et, -1.0, g, 0.5),
                     (-ph * Ki / Hi * wi, 1, et, -1.0, g, -0.5)]
        for c, a, eps, m, g_, h in terms:
            vals = _terms(lSi, Si, si, ivi, c, a, eps, m, g_, h, full)
            for o, v in zip(out, vals, strict=True):
                if v is not None:
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
                   T: npt.ArrayLike, iv: npt.ArrayLike, *, full: bool = True,
                   ) -> BarrierGreeks:
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
    full : bool
        False computes gamma, vanna and charm only (price and delta are NaN), about
        twice as fast (no normal CDF).

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
        vals = _evaluate(S[i], K[i], H[i], T[i], iv[i], code[i], full)
        for o, v in zip(out, vals, strict=True):
            o[i] = v
        if not full:
            out[0][i] = out[1][i] = np.nan
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
    st = _track(positions, bars, iv, bar_freq_us, values=False)
    n_bar = st.close.size
    gex = np.zeros(n_bar)
    vanna = np.zeros(n_bar)
    charm_day = np.zeros(n_bar)
    nearest = np.full(n_bar, -np.inf)
    # chunks of pairs keep every temporary small (a year of a large book is tens of
    # millions of position-bars)
    for lo in range(0, st.pos.size, _CHUNK):
        pos, bar = st.pos[lo:lo + _CHUNK], st.bar[lo:lo + _CHUNK]
        after = st.after[lo:lo + _CHUNK]
        S = st.close[bar]
        T = (st.exp_us[pos] - st.close_us[bar]) / _US_PER_YEAR
        own = st.own_iv[pos]
        vol = np.where(np.isnan(own), st.iv_bar[bar], own)
        g, va = _pair_greeks(st, S, T, vol, pos, after, at_close=True)
        wS = st.N[pos] * S * 0.01
        gex += np.bincount(bar, weights=wS * g * S, minlength=n_bar)
        vanna += np.bincount(bar, weights=wS * va, minlength=n_bar)
        charm_day += np.bincount(bar, weights=st.N[pos] * va * vol / (-730.0 * T),
                                 minlength=n_bar)
        # nearest untouched barrier below the close
        Hp = st.H[pos]
        below = ~after & (Hp < S)
        np.maximum.at(nearest, bar[below], Hp[below])
    live = np.bincount(st.bar, minlength=n_bar).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.where(np.isfinite(nearest), st.close / nearest - 1.0, np.nan)
    lines = pd.DataFrame({"ts": pd.to_datetime(st.open_us, unit="us", utc=True),
                          "barrier_gex": gex, "barrier_vanna": vanna,
                          "barrier_charm": charm_day, "dist_to_barrier": dist,
                          "n_barrier_live": live})
    knocked = st.knock < _NEVER
    ktime = pd.to_datetime(np.where(knocked, st.open_us[np.minimum(st.knock, n_bar - 1)], 0),
                           unit="us", utc=True)
    events = pd.DataFrame({"knock_ts": ktime.where(knocked), "knocked": knocked})
    return lines, events


_NEVER = np.iinfo(np.int64).max
_CHUNK = 1 << 16


@dataclass(frozen=True)
class _Track:
    """Positions and their (position, bar) pairs while alive, with knock status."""

    open_us: npt.NDArray[np.int64]
    close_us: npt.NDArray[np.int64]
    close: FloatArray
    code: npt.NDArray[np.intp]
    K: FloatArray
    H: FloatArray
    N: FloatArray  # dealer_side * notional, BTC
    exp_us: npt.NDArray[np.int64]
    knock: npt.NDArray[np.int64]  # first touching bar, _NEVER if none
    iv_bar: FloatArray
    own_iv: FloatArray
    pos: npt.NDArray[np.intp]
    bar: npt.NDArray[np.intp]
    after: npt.NDArray[np.bool_]  # knocked in (a vanilla) at that bar
    S: FloatArray
    T: FloatArray
    vol: FloatArray  # S, T, vol per pair: empty when built with values=False


def _track(positions: pd.DataFrame | Any, bars: pd.DataFrame, iv: npt.ArrayLike | float,
           bar_freq_us: int | None, values: bool = True) -> _Track:
    df = positions.to_pandas() if hasattr(positions, "to_pandas") else positions
    open_us = to_epoch_us(bars["ts"], source="bars", column="ts")
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
    start = np.searchsorted(close_us, to_epoch_us(df["ts"], source="barriers", column="ts"),
                            side="left")
    exp_us = to_epoch_us(df["expiry"], source="barriers", column="expiry")
    end = np.searchsorted(close_us, exp_us, side="left")  # bars with close < expiry
    count = np.maximum(end - start, 0)
    # every (position, bar) pair while the position can be alive
    total = int(count.sum())
    pos = np.repeat(np.arange(len(df)), count)
    first = np.cumsum(count) - count
    bar = (np.arange(total) - np.repeat(first, count)) + np.repeat(start, count)
    down = _IS_DOWN[code]
    touch = np.where(down[pos], low[bar] <= H[pos], high[bar] >= H[pos])
    knock = np.full(len(df), _NEVER)
    np.minimum.at(knock, pos[touch], bar[touch])
    is_in = _IS_IN[code]
    # knock-outs leave the book at the touching bar
    alive = ~(~is_in[pos] & (bar >= knock[pos]))
    pos, bar = pos[alive], bar[alive]
    if values:
        S = close[bar]
        T = (exp_us[pos] - close_us[bar]) / _US_PER_YEAR
        vol = np.where(np.isnan(own_iv[pos]), iv_bar[bar], own_iv[pos])
    else:  # the caller computes them chunk by chunk
        S = T = vol = np.zeros(0)
    return _Track(open_us=open_us, close_us=close_us, close=close, code=code, K=K, H=H, N=N,
                  exp_us=exp_us, knock=knock, iv_bar=iv_bar, own_iv=own_iv, pos=pos, bar=bar,
                  after=bar >= knock[pos], S=S, T=T, vol=vol)


def _pair_greeks(st: _Track, S: FloatArray, T: FloatArray, vol: FloatArray,
                 pos: npt.NDArray[np.intp] | None = None,
                 after: npt.NDArray[np.bool_] | None = None, at_close: bool = False,
                 ) -> tuple[FloatArray, FloatArray]:
    """Gamma and vanna per pair: the barrier option, or the vanilla once knocked in.

    Pairs are evaluated in chunks of ``_CHUNK`` so the temporaries stay in cache-sized
    arrays (a year of a large book is tens of millions of pairs)."""
    pos = st.pos if pos is None else pos
    after = st.after if after is None else after
    if S.size > _CHUNK:
        g = np.empty(S.size)
        va = np.empty(S.size)
        for lo in range(0, S.size, _CHUNK):
            sl = slice(lo, lo + _CHUNK)
            g[sl], va[sl] = _pair_greeks(st, S[sl], T[sl], vol[sl], pos[sl], after[sl],
                                         at_close)
        return g, va
    g = np.empty(S.size)
    va = np.empty(S.size)
    i = np.flatnonzero(~after)
    if i.size:
        p = pos[i]
        if at_close:
            # untouched so far: the bar's close lies strictly on the live side of the
            # barrier and T > 0, so the closed form applies without validity masks
            _, _, g[i], va[i] = _evaluate(S[i], st.K[p], st.H[p], T[i], vol[i], st.code[p],
                                          full=False)
        else:  # hypothetical spots may lie beyond the barrier
            res = barrier_greeks(st.code[p], S[i], st.K[p], st.H[p], T[i], vol[i],
                                 full=False)
            g[i], va[i] = res.gamma, res.vanna
    i = np.flatnonzero(after)
    if i.size:
        _, _, g[i], va[i] = _vanilla(S[i], st.K[pos[i]], T[i], vol[i], _PHI[st.code[pos[i]]])
    return g, va


def book_gex_profile(positions: pd.DataFrame | Any, bars: pd.DataFrame,
                     stamps: pd.Series | pd.DatetimeIndex, spot: npt.ArrayLike,
                     rel: npt.ArrayLike, *, iv: npt.ArrayLike | float = 0.5,
                     bar_freq_us: int | None = None) -> FloatArray:
    """Dealer gamma of the barrier book over hypothetical spots at given times.

    The book in force at ``stamps[j]`` is the one after the last bar closed at or
    before it (positions known by then, knock status from the bars so far); each
    option is re-priced at ``S' = rel * spot[j]`` with its time to expiry from
    ``stamps[j]`` and its implied volatility as of that bar (sticky strike).
    A position not yet knocked is kept as a barrier option even where ``S'`` is
    beyond its barrier (its closed form then gives the vanilla or 0).

    Returns
    -------
    numpy.ndarray
        (len(stamps), len(rel)), USD per 1% move at ``S'``; 0 where no bar has closed
        yet or nothing is live.

    Formula:
        profile_j(x) = sum_live side_i N_i gamma_i(x S_j, T_i(t_j)) (x S_j)^2 0.01
    """
    st = _track(positions, bars, iv, bar_freq_us)
    t_us = to_epoch_us(pd.Series(pd.DatetimeIndex(stamps)), source="summary", column="ts")
    spot = np.asarray(spot, dtype=np.float64)
    rel = np.asarray(rel, dtype=np.float64)
    rel2 = np.broadcast_to(rel, (t_us.size, rel.shape[-1]))
    m = rel2.shape[1]
    out = np.zeros((t_us.size, m))
    j_bar = np.searchsorted(st.close_us, t_us, side="right") - 1
    order = np.argsort(st.bar, kind="stable")
    bar_sorted = st.bar[order]
    for j, b in enumerate(j_bar):
        if b < 0:
            continue
        lo, hi = np.searchsorted(bar_sorted, [b, b + 1])
        idx = order[lo:hi]
        if idx.size == 0:
            continue
        p = st.pos[idx]
        T = (st.exp_us[p] - t_us[j]) / _US_PER_YEAR
        ok = T > 0
        idx, p, T = idx[ok], p[ok], T[ok]
        n_p = idx.size
        if n_p == 0:
            continue
        S = np.tile(spot[j] * rel2[j], n_p)
        rep = np.repeat(np.arange(n_p), m)
        g, _ = _pair_greeks(st, S, T[rep], st.vol[idx][rep], pos=p[rep],
                            after=st.after[idx][rep])
        out[j] = np.bincount(np.tile(np.arange(m), n_p),
                             weights=st.N[p][rep] * g * S * S * 0.01, minlength=m)
    return out


def summary_with_book(summary: pd.DataFrame, chain: pd.DataFrame | Any,
                      positions: pd.DataFrame | Any, bars: pd.DataFrame, *,
                      dealer: str = "long_calls_short_puts", iv: npt.ArrayLike | float = 0.5,
                      include: bool = True, span: tuple[float, float] = (0.5, 1.5),
                      grid_step: float = 0.005, bar_freq_us: int | None = None,
                      ) -> pd.DataFrame:
    """Add the barrier book to a :func:`indicators.gamma.summarize` frame.

    Parameters
    ----------
    summary
        ``summarize(chain, dealer)`` output (one row per snapshot, sorted).
    chain, dealer
        The chain and convention that produced ``summary``.
    positions, bars, iv, bar_freq_us
        As in :func:`barrier_book`; the book in force at a snapshot is the one after
        the last bar closed at or before it.
    include
        True: ``gex``, ``regime`` and ``gamma_flip`` describe options plus barrier book
        (the options-only values move to ``gex_options`` and ``gamma_flip_options``);
        False: they stay options-only and the book is only reported beside them.
    span, grid_step
        Flip search range and coarse grid, relative to spot (as in ``summarize``).

    Returns
    -------
    pandas.DataFrame
        A copy with ``barrier_gex`` (USD per 1% move), ``barrier_vanna`` (USD per +1
        vol point), ``gex_total`` and ``vanna_total`` (options + book),
        ``gex_options``, ``gamma_flip_options``, and, with ``include``, the combined
        ``gex``, ``regime`` and ``gamma_flip`` (zero of the combined profile nearest to
        spot, bracketed to 5e-6 of spot then interpolated; NaN without a crossing).

    Formula:
        gex_total(x) = options_profile(x) + book_profile(x);  flip: gex_total(x*) = 0
    """
    from indicators import gamma

    out = summary.copy()
    n = len(out)
    stamps = out["ts"]
    spot = out["spot"].to_numpy(np.float64)
    one = np.ones((n, 1))
    st = _track(positions, bars, iv, bar_freq_us)
    t_us = to_epoch_us(stamps, source="summary", column="ts")
    j_bar = np.searchsorted(st.close_us, t_us, side="right") - 1
    vanna = np.zeros(n)
    if st.pos.size and n:
        # vanna of the book at the snapshot: the bar in force, re-timed to the snapshot
        for j in np.flatnonzero(j_bar >= 0):
            sel = np.flatnonzero(st.bar == j_bar[j])
            p = st.pos[sel]
            T = (st.exp_us[p] - t_us[j]) / _US_PER_YEAR
            ok = T > 0
            sel, p, T = sel[ok], p[ok], T[ok]
            S = np.full(sel.size, spot[j])
            _, va = _pair_greeks(st, S, T, st.vol[sel], pos=p, after=st.after[sel])
            vanna[j] = float((st.N[p] * va * S * 0.01).sum())
    book_at_spot = book_gex_profile(positions, bars, stamps, spot, one, iv=iv,
                                    bar_freq_us=bar_freq_us)[:, 0]
    out["barrier_gex"] = book_at_spot
    out["barrier_vanna"] = vanna
    out["gex_options"] = out["gex"]
    out["gamma_flip_options"] = out["gamma_flip"]
    out["gex_total"] = out["gex"] + book_at_spot
    out["vanna_total"] = out["vanna"] + vanna
    if not include or n == 0:
        return out
    lo, hi = span
    xs = np.r_[np.linspace(lo, 1.0, round((1 - lo) / grid_step) + 1),
               np.linspace(1.0, hi, round((hi - 1) / grid_step) + 1)[1:]]
    center = int(np.argmin(np.abs(xs - 1.0)))

    def total(rel: FloatArray) -> FloatArray:
        opt, _ = gamma.gex_profile_at(chain, rel, dealer=dealer)
        return opt + book_gex_profile(positions, bars, stamps, spot, rel, iv=iv,
                                      bar_freq_us=bar_freq_us)

    vals = total(np.broadcast_to(xs, (n, xs.size)).copy())
    sgn = np.sign(vals)
    cross = sgn[:, :-1] * sgn[:, 1:] < 0
    flip = np.full(n, np.nan)
    cand_lo = np.full(n, np.nan)
    for j in range(n):
        cells = np.flatnonzero(cross[j])
        if cells.size == 0:
            continue
        # nearest cell to spot (ties: the lower one)
        dist = np.where(cells < center, 1.0 - xs[cells + 1], xs[cells] - 1.0)
        cand_lo[j] = xs[cells[np.lexsort((cells, dist))[0]]]
    todo = np.flatnonzero(np.isfinite(cand_lo))
    if todo.size:
        a = cand_lo[todo]
        width = grid_step
        sub = 10
        for _ in range(3):  # each round narrows the bracket ten times
            pts = a[:, None] + width * np.arange(sub + 1)[None, :] / sub
            rel = np.ones((n, sub + 1))
            rel[todo] = pts
            v = total(rel)[todo]
            s2 = np.sign(v)
            c2 = s2[:, :-1] * s2[:, 1:] <= 0
            k = np.argmax(c2, axis=1)
            a = pts[np.arange(todo.size), k]
            width /= sub
            va_, vb_ = v[np.arange(todo.size), k], v[np.arange(todo.size), k + 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.clip(np.where(vb_ != va_, va_ / (va_ - vb_), 0.5), 0.0, 1.0)
        flip[todo] = (a + frac * width) * spot[todo]
    out["gex"] = out["gex_total"]
    out["regime"] = np.sign(out["gex_total"].to_numpy()).astype(np.int8)
    out["gamma_flip"] = flip
    return out
