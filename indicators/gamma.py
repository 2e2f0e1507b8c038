"""Dealer gamma exposure (GEX): Black-Scholes greeks, per-row / per-strike GEX, the
sticky-strike profile, the gamma flip, call / put walls and the regime.

Conventions (``../shared/DOMAIN.md`` section 2, binding):

- Black-Scholes on each row's forward ``F = underlying_price`` with r = q = 0 (Black-76).
- Time to expiry ``T = (expiry - ts)`` seconds / (365 * 86400).
- Rows with ``T <= 0``, ``open_interest <= 0`` (or NaN), ``mark_iv <= 0`` (or NaN), or a
  non-finite / non-positive forward or strike are dropped from every sum (their GEX is 0).
- Dollar GEX per 1% move of one row: ``sign * gamma * OI * multiplier * F**2 * 0.01``.
- Dealer positioning (:data:`Dealer`): ``"long_calls_short_puts"`` (default,
  SqueezeMetrics: +1 calls, -1 puts), ``"short_calls_long_puts"`` (inverted) or
  ``"explicit"``: the chain's signed ``dealer_position`` column (contracts, + = dealers
  long) replaces ``sign * OI``; rows whose position is NaN are dropped.
- Profile: every row keeps its IV (sticky strike) and its forward moves with spot,
  ``F' = F * S'/S``, for ``S'`` in ``[0.5 S, 1.5 S]``.
- Reference spot ``S`` of a snapshot: ``index_price`` when the chain has it (non-NaN),
  else the median of the snapshot's rows' forwards (``spot_source`` says which).

Everything is vectorized across snapshots: rows are grouped by snapshot with sorted
arrays, ``np.add.reduceat`` and ``np.bincount``; only blocks of whole snapshots (about
131,072 rows each, for memory and cache) are iterated in Python, never options.

Formula:
    d1      = (ln(F/K) + iv^2 T / 2) / (iv sqrt(T)),   d2 = d1 - iv sqrt(T)
    gamma   = pdf(d1) / (F iv sqrt(T))                           [1 / USD]
    vanna   = d delta / d iv = -pdf(d1) d2 / iv                   [per 1.00 of iv]
    charm   = d delta / dt = pdf(d1) d2 / (2 T)                   [per year passing]
    gex_i   = sign_i OI_i m_i gamma_i F_i^2 0.01                  [USD per 1% move]
    vanna_i = sign_i OI_i m_i vanna_i F_i 0.01                    [USD per +1 vol point]
    charm_i = sign_i OI_i m_i charm_i / 365                       [BTC per day passing]
    profile(x) = sum_i sign_i OI_i m_i gamma_i(x F_i) (x F_i)^2 0.01,   x = S'/S
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd

from plumbing.errors import ConfigError, DataError
from plumbing.timeconv import from_epoch_us, to_epoch_us

__all__ = [
    "DEALERS",
    "Dealer",
    "Exposure",
    "atm_iv",
    "bs_charm",
    "bs_delta",
    "bs_gamma",
    "bs_vanna",
    "exposure_profile",
    "gex_profile",
    "gex_profile_at",
    "row_charm",
    "row_gex",
    "row_vanna",
    "strike_gex",
    "summarize",
]

Dealer = Literal["long_calls_short_puts", "short_calls_long_puts", "explicit"]
#: The dealer-positioning conventions, the default first (the CLI and config offer these).
DEALERS: tuple[str, ...] = get_args(Dealer)
Exposure = Literal["gex", "vanna", "charm"]
FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

YEAR_SECONDS = 365.0 * 86400.0
_US_PER_YEAR = YEAR_SECONDS * 1e6
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
_REQUIRED = ("ts", "expiry", "strike", "right", "open_interest", "mark_iv",
             "underlying_price")
_SOURCE = "<chain>"
# A row whose standardized distance |d1(x)| stays above the cut over a search interval
# contributes at most exp(-cut^2 / 2) of its own peak there: ~6e-13 for the float32
# sign grid (below float32 resolution and 160x below the sign floor), ~5e-32 for the
# float64 refinement. Pruning only serves the flip search; GEX at spot, walls and
# vanna always use every row.
_PRUNE_GRID = 7.5
_PRUNE_REFINE = 12.0
# The profile's sign at a grid point counts only where |profile| > _SIGN_FLOOR * x *
# capacity, capacity = sum_i |a_i| (the gross GEX the snapshot would show with every
# row at the money, an upper bound of |profile| / x): underflow and the ~1e-30 tails
# of regions without any strike (1e-10 of ~1e9 USD is cents) are not crossings. A
# float32 grid value whose magnitude is within _F32_DOUBT of the local gross
# sum_i |a_i| e_i is recomputed in float64 before its sign is used (float32 errors
# stay far below that fraction).
_SIGN_FLOOR = 1e-10
_F32_DOUBT = 1e-3
_CHUNK_ELEMENTS = 1 << 18  # rows x grid points per evaluated block (~1 MB in float32)
_BLOCK_ROWS = 1 << 17  # rows per block of whole snapshots processed together
_BANDS = (0.05, 0.1, 0.2, 0.3)  # nested |S'/S - 1| bands of the flip search, then the span


# ---------------------------------------------------------------------------------------
# Black-Scholes greeks (r = q = 0, on the forward)


def _d1(F: FloatArray, K: FloatArray, T: FloatArray, iv: FloatArray,
        ) -> tuple[FloatArray, FloatArray]:
    s = iv * np.sqrt(T)
    return (np.log(F / K) + 0.5 * s * s) / s, s


def _invalid_greek_inputs(F: FloatArray, K: FloatArray, T: FloatArray, iv: FloatArray) -> Any:
    return ~((F > 0) & (K > 0) & (T > 0) & (iv > 0) & np.isfinite(F) & np.isfinite(K)
             & np.isfinite(T) & np.isfinite(iv))


def bs_gamma(F: ArrayLike, K: ArrayLike, T: ArrayLike, iv: ArrayLike) -> FloatArray:
    """Black-Scholes gamma on the forward (Black-76, r = q = 0), same for calls and puts.

    Parameters
    ----------
    F, K : array_like
        Forward and strike, USD (broadcast together with ``T`` and ``iv``).
    T : array_like
        Time to expiry in years (365-day years).
    iv : array_like
        Implied volatility as a fraction (0.55, not 55).

    Returns
    -------
    numpy.ndarray
        Gamma per 1 USD move of the forward, float64. NaN where ``F, K, T, iv`` is not
        finite and strictly positive (expired or unquoted options have no gamma).

    Formula:
        d1 = (ln(F/K) + iv^2 T / 2) / (iv sqrt(T));  gamma = pdf(d1) / (F iv sqrt(T))
    """
    F, K, T, iv = (np.asarray(a, dtype=np.float64) for a in (F, K, T, iv))
    bad = _invalid_greek_inputs(F, K, T, iv)
    with np.errstate(all="ignore"):
        d1, s = _d1(F, K, T, iv)
        out = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1) / (F * s)
    return np.where(bad, np.nan, out)


def bs_vanna(F: ArrayLike, K: ArrayLike, T: ArrayLike, iv: ArrayLike) -> FloatArray:
    """Black-Scholes vanna on the forward (r = q = 0), same for calls and puts.

    Vanna is the derivative of delta with respect to volatility, equivalently of vega
    with respect to the forward.

    Parameters
    ----------
    F, K, T, iv : array_like
        As in :func:`bs_gamma`.

    Returns
    -------
    numpy.ndarray
        d(delta)/d(iv) per 1.00 of volatility (divide by 100 for one vol point), float64;
        NaN where the inputs are not finite and strictly positive.

    Formula:
        vanna = -pdf(d1) d2 / iv,  d2 = d1 - iv sqrt(T)
    """
    F, K, T, iv = (np.asarray(a, dtype=np.float64) for a in (F, K, T, iv))
    bad = _invalid_greek_inputs(F, K, T, iv)
    with np.errstate(all="ignore"):
        d1, s = _d1(F, K, T, iv)
        out = -_INV_SQRT_2PI * np.exp(-0.5 * d1 * d1) * (d1 - s) / iv
    return np.where(bad, np.nan, out)


def bs_delta(F: ArrayLike, K: ArrayLike, T: ArrayLike, iv: ArrayLike,
             is_call: ArrayLike = True) -> FloatArray:
    """Black-Scholes delta on the forward (r = q = 0), per 1 USD move of the forward.

    Parameters
    ----------
    F, K, T, iv : array_like
        As in :func:`bs_gamma`.
    is_call : array_like of bool
        True for calls, False for puts (broadcast with the other inputs).

    Returns
    -------
    numpy.ndarray
        Delta (calls in [0, 1], puts in [-1, 0]), float64; NaN where the inputs are not
        finite and strictly positive.

    Formula:
        delta_call = N(d1);  delta_put = N(d1) - 1
    """
    from scipy.special import ndtr

    F, K, T, iv = (np.asarray(a, dtype=np.float64) for a in (F, K, T, iv))
    bad = _invalid_greek_inputs(F, K, T, iv)
    with np.errstate(all="ignore"):
        d1, _ = _d1(F, K, T, iv)
        out = ndtr(d1) - np.where(np.asarray(is_call, dtype=bool), 0.0, 1.0)
    return np.where(bad, np.nan, out)


def bs_charm(F: ArrayLike, K: ArrayLike, T: ArrayLike, iv: ArrayLike) -> FloatArray:
    """Black-Scholes charm on the forward (r = q = 0), same for calls and puts.

    Charm is the change of delta as calendar time passes (time to expiry shrinks),
    with the forward and the implied volatility held fixed.

    Parameters
    ----------
    F, K, T, iv : array_like
        As in :func:`bs_gamma`.

    Returns
    -------
    numpy.ndarray
        d(delta)/dt per year of time passing (divide by 365 for one day), float64; NaN
        where the inputs are not finite and strictly positive.

    Formula:
        charm = -d delta / dT = pdf(d1) d2 / (2 T),  d2 = d1 - iv sqrt(T)
    """
    F, K, T, iv = (np.asarray(a, dtype=np.float64) for a in (F, K, T, iv))
    bad = _invalid_greek_inputs(F, K, T, iv)
    with np.errstate(all="ignore"):
        d1, s = _d1(F, K, T, iv)
        out = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1) * (d1 - s) / (2.0 * T)
    return np.where(bad, np.nan, out)


# ---------------------------------------------------------------------------------------
# Input preparation


@dataclass(frozen=True)
class _Inputs:
    """The chain as numpy columns (caller's row order) plus the snapshot grouping."""

    dealer: str
    n_rows: int
    order: npt.NDArray[np.intp] | None  # rows grouped by ts; None when already grouped
    bounds: npt.NDArray[np.intp]  # snapshot j = sorted rows bounds[j]:bounds[j + 1]
    ts_us: npt.NDArray[np.int64]  # one per snapshot, increasing
    expiry_us: npt.NDArray[np.int64]
    row_ts_us: npt.NDArray[np.int64]
    strike: FloatArray
    forward: FloatArray
    open_interest: FloatArray
    iv: FloatArray
    multiplier: FloatArray | None
    position: FloatArray | None  # dealer="explicit" only
    index: FloatArray | None
    is_call: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class _Rows:
    """Valid rows of a block of snapshots, grouped by snapshot, with per-row terms.

    The profile of snapshot j at relative spot ``x = S'/S`` is
    ``x * sum_i a_i exp(-(d_i + k_i ln x)^2)`` over its rows, where
    ``d_i = d1_i / sqrt(2)``, ``k_i = 1 / (sqrt(2) iv_i sqrt(T_i))`` and
    ``a_i = 0.01 w_i F_i / (iv_i sqrt(T_i) sqrt(2 pi))`` so that ``gex_i = a_i exp(-d_i^2)``.
    """

    snap: npt.NDArray[np.intp]  # snapshot index within the block (non-decreasing)
    pos: npt.NDArray[np.intp]  # row position in the caller's order
    strike: FloatArray
    is_call: npt.NDArray[np.bool_]
    gex: FloatArray
    vanna: FloatArray
    charm: FloatArray
    a: FloatArray
    d: FloatArray
    k: FloatArray
    s: FloatArray  # iv sqrt(T)
    vanna_coef: FloatArray  # vanna_i(x) = vanna_coef x pdf(d1(x)) (d1(x) - s)
    charm_coef: FloatArray  # charm_i(x) = charm_coef pdf(d1(x)) (d1(x) - s)


@dataclass(frozen=True)
class _Block:
    n_snap: int
    spot: FloatArray
    spot_is_index: npt.NDArray[np.bool_]
    rows: _Rows


def _as_frame(chain: Any) -> pd.DataFrame:
    if isinstance(chain, pd.DataFrame):
        return chain
    if hasattr(chain, "to_pandas") and hasattr(chain, "schema"):  # pyarrow.Table
        return chain.to_pandas()
    raise DataError(f"unsupported chain type {type(chain).__name__}", source=_SOURCE,
                    expected="a pandas DataFrame or pyarrow Table with the CHAIN columns",
                    fix="load the chain with feeds.loaders.load_chain")


def _check_dealer(dealer: str) -> None:
    options = DEALERS
    if dealer not in options:
        hint = difflib.get_close_matches(str(dealer), options, n=1)
        raise ConfigError(f"unknown dealer convention {dealer!r}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                          column="dealer", expected=f"one of {list(options)}",
                          fix="pass dealer='long_calls_short_puts' (default), "
                              "'short_calls_long_puts' or 'explicit'")


def _floats(df: pd.DataFrame, name: str) -> FloatArray:
    try:
        return df[name].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise DataError(f"column is not numeric ({exc})", source=_SOURCE, column=name,
                        expected="float values (canonical CHAIN schema)",
                        fix="load the chain with feeds.loaders.load_chain") from exc


def _group_starts(keys: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    """Start offsets of runs of equal values in a sorted array."""
    if keys.size == 0:
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])


def _grouped_order(seg: npt.NDArray[np.intp], values: FloatArray) -> npt.NDArray[np.intp]:
    """Permutation sorting rows by (seg, value); finite positive values only.

    One stable sort of a combined float key ``seg * C + value`` (C > 2 * max value), which
    is exact for ordering unless two values of one segment differ by less than the key's
    resolution (then they tie, which is harmless for grouping and medians).
    """
    if seg.size == 0:
        return np.zeros(0, dtype=np.intp)
    scale = 2.0 * float(values.max()) + 1.0
    return np.argsort(seg * scale + values, kind="stable")


def _segment_medians(values: FloatArray, seg: npt.NDArray[np.intp], n_seg: int) -> FloatArray:
    """Median of the finite positive ``values`` per segment id (NaN for none).

    ``seg`` must be grouped (non-decreasing). Segments are padded into a matrix and
    sorted row-wise when that matrix is small; otherwise one stable sort of a combined key.
    """
    ok = np.isfinite(values) & (values > 0)
    v, g = values[ok], seg[ok]
    counts = np.bincount(g, minlength=n_seg)
    out = np.full(n_seg, np.nan)
    if v.size == 0:
        return out
    starts = np.cumsum(counts) - counts
    has = counts > 0
    lo = (counts[has] - 1) // 2
    hi = counts[has] // 2
    width = int(counts.max())
    if n_seg * width <= 4 * v.size + 4096:
        padded = np.full((n_seg, width), np.inf)
        padded[g, np.arange(v.size) - starts[g]] = v
        padded.sort(axis=1)
        rows = np.flatnonzero(has)
        out[has] = 0.5 * (padded[rows, lo] + padded[rows, hi])
    else:
        v = v[_grouped_order(g, v)]
        out[has] = 0.5 * (v[starts[has] + lo] + v[starts[has] + hi])
    return out


def _prepare(chain: Any, dealer: str) -> _Inputs:
    """Validate the chain and group its rows by snapshot (no per-row maths yet)."""
    _check_dealer(dealer)
    df = _as_frame(chain)
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}", source=_SOURCE,
                        expected=f"the canonical CHAIN columns {list(_REQUIRED)}",
                        fix="load the chain with feeds.loaders.load_chain")
    if dealer == "explicit" and "dealer_position" not in df.columns:
        raise ConfigError("dealer='explicit' needs a signed 'dealer_position' column",
                          source=_SOURCE, column="dealer_position",
                          expected="signed dealer contracts per row (+ = dealers long)",
                          fix="add the column or use dealer='long_calls_short_puts'")
    n = len(df)
    empty = np.zeros(0, dtype=np.int64)
    # an empty frame may have no dtypes
    ts = to_epoch_us(df["ts"], column="ts", source=_SOURCE) if n else empty
    expiry = to_epoch_us(df["expiry"], column="expiry", source=_SOURCE) if n else empty
    iv = _floats(df, "mark_iv")
    right = df["right"]
    is_call = (right == "C").to_numpy(dtype=bool, na_value=False)
    bad_right = ~(is_call | (right == "P").to_numpy(dtype=bool, na_value=False))
    if bad_right.any():
        row = int(np.flatnonzero(bad_right)[0])
        raise DataError(f"option right {right.iloc[row]!r} not understood", source=_SOURCE,
                        row=row, column="right", expected="'C' or 'P'",
                        fix="map calls to 'C' and puts to 'P' (feeds.loaders does this)")
    with np.errstate(invalid="ignore"):
        quoted = np.count_nonzero(iv > 0)
        if quoted and np.count_nonzero(iv > 5.0) > quoted // 2:  # median IV above 500%
            raise DataError("mark_iv looks like percent (median above 5)", source=_SOURCE,
                            column="mark_iv",
                            expected="implied volatility as a fraction (0.55 for 55%)",
                            fix="divide mark_iv by 100")
    # Group rows by snapshot: a stable sort only when the input is not grouped already.
    order = None
    if n and np.any(ts[1:] < ts[:-1]):
        order = np.argsort(ts, kind="stable")
    ts_sorted = ts if order is None else ts[order]
    starts = _group_starts(ts_sorted)
    return _Inputs(
        dealer=dealer, n_rows=n, order=order, bounds=np.r_[starts, n].astype(np.intp),
        ts_us=ts_sorted[starts], expiry_us=expiry, row_ts_us=ts,
        strike=_floats(df, "strike"), forward=_floats(df, "underlying_price"),
        open_interest=_floats(df, "open_interest"), iv=iv,
        multiplier=_floats(df, "multiplier") if "multiplier" in df.columns else None,
        position=_floats(df, "dealer_position") if dealer == "explicit" else None,
        index=_floats(df, "index_price") if "index_price" in df.columns else None,
        is_call=is_call)


def _blocks(inp: _Inputs) -> list[tuple[int, int]]:
    """Consecutive snapshot ranges [s0, s1) of about ``_BLOCK_ROWS`` rows each."""
    out = []
    n_snap = inp.ts_us.size
    s0 = 0
    while s0 < n_snap:
        s1 = int(np.searchsorted(inp.bounds, inp.bounds[s0] + _BLOCK_ROWS, side="right")) - 1
        s1 = min(max(s1, s0 + 1), n_snap)
        out.append((s0, s1))
        s0 = s1
    return out


def _block(inp: _Inputs, s0: int, s1: int, second_order: bool = True) -> _Block:
    """Per-row terms of the valid rows of snapshots [s0, s1), and their reference spots."""
    lo, hi = int(inp.bounds[s0]), int(inp.bounds[s1])
    sel: slice | npt.NDArray[np.intp] = slice(lo, hi) if inp.order is None else inp.order[lo:hi]
    nb = s1 - s0
    snap_all = np.repeat(np.arange(nb), np.diff(inp.bounds[s0:s1 + 1]))

    # Reference spot: index price (median of the non-NaN values) else median forward.
    F = inp.forward[sel]
    spot = (_segment_medians(inp.index[sel], snap_all, nb) if inp.index is not None
            else np.full(nb, np.nan))
    spot_is_index = np.isfinite(spot)
    if not spot_is_index.all():
        spot = np.where(spot_is_index, spot, _segment_medians(F, snap_all, nb))

    K, iv, oi = inp.strike[sel], inp.iv[sel], inp.open_interest[sel]
    is_call = inp.is_call[sel]
    T = (inp.expiry_us[sel] - inp.row_ts_us[sel]) / _US_PER_YEAR
    if inp.position is not None:  # dealer == "explicit"
        weight = inp.position[sel].copy()
    elif inp.dealer == "long_calls_short_puts":
        weight = np.where(is_call, oi, -oi)
    else:
        weight = np.where(is_call, -oi, oi)
    if inp.multiplier is not None:
        weight *= inp.multiplier[sel]
    with np.errstate(invalid="ignore"):
        valid = ((T > 0) & (oi > 0) & (iv > 0) & (F > 0) & (K > 0) & np.isfinite(F)
                 & np.isfinite(K) & np.isfinite(weight) & (weight != 0))
    keep = np.flatnonzero(valid)
    keep = keep[_sign_partition(snap_all[keep], weight[keep] < 0)]  # see _grid_sums
    F, K, T, iv, w = F[keep], K[keep], T[keep], iv[keep], weight[keep]
    d1, s = _d1(F, K, T, iv)
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
    base = 0.01 * w * F / s  # gex = base * pdf(d1) = w gamma F^2 0.01
    if second_order:
        vanna_coef = -0.01 * w * F / iv
        charm_coef = w / (730.0 * T)  # pdf d2 / (2 T) per year, / 365 per day
        pdf_d2 = pdf * (d1 - s)
    else:  # callers that read neither vanna nor charm
        vanna_coef = charm_coef = pdf_d2 = np.zeros_like(w)
    pos = lo + keep if inp.order is None else inp.order[lo:hi][keep]
    rows = _Rows(snap=snap_all[keep], pos=pos, strike=K, is_call=is_call[keep],
                 gex=base * pdf, vanna=vanna_coef * pdf_d2, charm=charm_coef * pdf_d2,
                 a=base * _INV_SQRT_2PI, d=d1 / np.sqrt(2.0), k=1.0 / (np.sqrt(2.0) * s),
                 s=s, vanna_coef=vanna_coef, charm_coef=charm_coef)
    return _Block(n_snap=nb, spot=spot, spot_is_index=spot_is_index, rows=rows)


def row_gex(chain: pd.DataFrame | Any, dealer: Dealer = "long_calls_short_puts") -> FloatArray:
    """Dealer GEX of every row, USD per 1% move, in the chain's row order.

    Parameters
    ----------
    chain : pandas.DataFrame or pyarrow.Table
        Canonical CHAIN columns (``feeds.schema.CHAIN``); ``multiplier`` defaults to 1
        when absent; ``dealer_position`` is needed for ``dealer="explicit"``.
    dealer : {"long_calls_short_puts", "short_calls_long_puts", "explicit"}
        Dealer positioning convention (see the module docstring).

    Returns
    -------
    numpy.ndarray
        float64, one value per row, never NaN: dropped rows (expired, no OI, no IV,
        no dealer position) give 0.

    Raises
    ------
    DataError
        Missing columns, naive timestamps, unknown ``right`` values, IV in percent.
    ConfigError
        Unknown ``dealer``, or ``"explicit"`` without a ``dealer_position`` column.

    Formula:
        gex_i = sign_i * gamma_i * OI_i * multiplier_i * F_i^2 * 0.01
    """
    return _row_values(chain, dealer, "gex")


def _row_values(chain: pd.DataFrame | Any, dealer: str, field: str) -> FloatArray:
    inp = _prepare(chain, dealer)
    out = np.zeros(inp.n_rows)
    for s0, s1 in _blocks(inp):
        rows = _block(inp, s0, s1).rows
        out[rows.pos] = getattr(rows, field)
    return out


def row_vanna(chain: pd.DataFrame | Any, dealer: Dealer = "long_calls_short_puts",
              ) -> FloatArray:
    """Dealer vanna exposure of every row, USD of dealer delta change per +1 vol point.

    Parameters and row dropping as in :func:`row_gex` (dropped rows give 0). Positive:
    a rise of implied volatility makes dealers longer delta, so they sell to re-hedge.

    Formula:
        vanna_i = sign_i * (-pdf(d1_i) d2_i / iv_i) * OI_i * multiplier_i * F_i * 0.01
    """
    return _row_values(chain, dealer, "vanna")


def row_charm(chain: pd.DataFrame | Any, dealer: Dealer = "long_calls_short_puts",
              ) -> FloatArray:
    """Dealer charm exposure of every row, BTC of dealer delta change per day passing.

    Parameters and row dropping as in :func:`row_gex` (dropped rows give 0). Positive:
    as a day passes (spot and IV unchanged) dealers get longer delta and sell to hedge.

    Formula:
        charm_i = sign_i * (pdf(d1_i) d2_i / (2 T_i)) * OI_i * multiplier_i / 365
    """
    return _row_values(chain, dealer, "charm")


def _strike_cells(r: _Rows, second_order: bool = False,
                  ) -> tuple[npt.NDArray[np.intp], FloatArray, FloatArray, FloatArray,
                             FloatArray, FloatArray]:
    """Per-(snapshot, strike) call and put GEX (and, with ``second_order``, net vanna and
    charm) summed over expiries.

    Returns ``(snapshot id, strike, gex_call, gex_put, vanna, charm)`` per cell, sorted
    by (snapshot, strike); only cells with at least one valid row. ``vanna`` and
    ``charm`` are empty unless ``second_order``.
    """
    order = _grouped_order(r.snap, r.strike)
    snap, strike = r.snap[order], r.strike[order]
    empty = np.zeros(0)
    if snap.size == 0:
        return snap, strike, empty, empty, empty, empty
    starts = np.flatnonzero(np.r_[True, (snap[1:] != snap[:-1]) | (strike[1:] != strike[:-1])])
    g, c = r.gex[order], r.is_call[order]
    call = np.add.reduceat(np.where(c, g, 0.0), starts)
    put = np.add.reduceat(np.where(c, 0.0, g), starts)
    vanna = np.add.reduceat(r.vanna[order], starts) if second_order else empty
    charm = np.add.reduceat(r.charm[order], starts) if second_order else empty
    return snap[starts], strike[starts], call, put, vanna, charm


def _walls(cell_snap: npt.NDArray[np.intp], cell_strike: FloatArray, value: FloatArray,
           n_snap: int, largest: bool) -> FloatArray:
    """Strike of the largest (or most negative) strictly signed value per snapshot.

    Cells are sorted by (snapshot, strike), so the first maximal cell is the lowest
    strike among ties. NaN when no cell of the snapshot has the required sign.
    """
    out = np.full(n_snap, np.nan)
    score = value if largest else -value
    ok = score > 0
    if not ok.any():
        return out
    snap, strike, score = cell_snap[ok], cell_strike[ok], score[ok]
    ids, starts, _ = _segments(snap)
    best = np.maximum.reduceat(score, starts)
    pos = np.arange(score.size)
    hit = np.where(score == np.repeat(best, np.diff(np.r_[starts, score.size])), pos, score.size)
    out[ids] = strike[np.minimum.reduceat(hit, starts)]
    return out


def strike_gex(chain: pd.DataFrame | Any,
               dealer: Dealer = "long_calls_short_puts") -> pd.DataFrame:
    """Dealer GEX per snapshot and strike, summed over expiries, USD per 1% move.

    Parameters
    ----------
    chain : pandas.DataFrame or pyarrow.Table
        Canonical CHAIN columns (see :func:`row_gex`).
    dealer : {"long_calls_short_puts", "short_calls_long_puts", "explicit"}
        Dealer positioning convention.

    Returns
    -------
    pandas.DataFrame
        Columns ``ts`` (datetime64[us, UTC]), ``strike`` (USD), ``gex_call``,
        ``gex_put``, ``gex_net`` (= call + put), ``vanna`` (net dealer vanna exposure,
        USD of delta change per +1 vol point), ``charm`` (net dealer charm exposure,
        BTC of delta change per day), sorted by (ts, strike). A strike appears when at
        least one of its rows enters the sums; an empty chain (or one where every row
        is dropped) gives an empty frame with these columns.

    Formula:
        gex_net(K) = sum over expiries of gex_i at strike K; same for vanna_i, charm_i
    """
    inp = _prepare(chain, dealer)
    empty = np.zeros(0)
    parts: list[tuple[Any, ...]] = [(np.zeros(0, np.intp), empty, empty, empty, empty, empty)]
    for s0, s1 in _blocks(inp):
        snap, *rest = _strike_cells(_block(inp, s0, s1).rows, second_order=True)
        parts.append((snap + s0, *rest))
    snap, strike, call, put, vanna, charm = (np.concatenate(p)
                                             for p in zip(*parts, strict=True))
    out = pd.DataFrame({
        "ts": from_epoch_us(inp.ts_us[snap]),
        "strike": strike,
        "gex_call": call,
        "gex_put": put,
    })
    out["gex_net"] = out["gex_call"] + out["gex_put"]
    out["vanna"] = vanna
    out["charm"] = charm
    return out


# ---------------------------------------------------------------------------------------
# Profile evaluation and the flip


def _segments(snap: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp],
                                                  npt.NDArray[np.intp]]:
    """(segment ids, starts, counts) of runs in a non-decreasing id array."""
    starts = _group_starts(snap)
    counts = np.diff(np.r_[starts, snap.size])
    return snap[starts], starts, counts


def _ranges(starts: npt.NDArray[np.intp], counts: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """Concatenation of ``arange(s, s + c)`` for every (s, c)."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.intp)
    shift = starts - (np.cumsum(counts) - counts)
    return np.repeat(shift, counts) + np.arange(total)


def _keep_near(d: FloatArray, k: FloatArray, u_lo: FloatArray | float,
               u_hi: FloatArray | float, cut_d1: float) -> npt.NDArray[np.bool_]:
    """Rows whose |d1(u)| gets below ``cut_d1`` somewhere on [u_lo, u_hi]."""
    cut = cut_d1 / np.sqrt(2.0)
    return (d + k * u_lo < cut) & (d + k * u_hi > -cut)  # d + k u increases with u


def _grid_sums(d: FloatArray, k: FloatArray, a: FloatArray, seg: npt.NDArray[np.intp],
               n_seg: int, u: FloatArray, dtype: type = np.float32,
               ) -> tuple[FloatArray, FloatArray]:
    """Profile sums ``g = sum_i a_i e_i`` and local gross ``sum_i |a_i| e_i`` per segment,
    ``e_i = exp(-(d_i + k_i u_j)^2)``; rows sorted by ``seg``, and within a segment the
    rows with ``a >= 0`` before those with ``a < 0`` (see :func:`_sign_partition`).

    Works on blocks of whole segments laid out (grid point, row) so that every numpy
    inner loop runs over contiguous rows, summing the positive and the negative rows of
    a segment as two runs. ``float32`` (the default) only serves
    to locate sign changes. Returns two float64 arrays (n_seg, len(u)); empty segments
    give 0.
    """
    g = np.zeros((n_seg, u.size))
    gross = np.zeros((n_seg, u.size))
    if seg.size == 0 or u.size == 0:
        return g, gross
    _, starts, counts = _segments(seg)
    ends = starts + counts
    negative = a < 0
    key = 2 * seg + negative
    run_starts = _group_starts(key)
    run_seg, run_neg = seg[run_starts], negative[run_starts]
    uc = u.astype(dtype)[:, None]
    dc, kc, ac = d.astype(dtype), k.astype(dtype), np.abs(a).astype(dtype)
    # Accumulate in float64 only when a run is long enough for float32 rounding
    # (n * 6e-8 of the gross) to approach the _F32_DOUBT margin.
    acc = np.float64 if int(np.diff(np.r_[run_starts, seg.size]).max()) > 4096 else dtype
    block = max(1, _CHUNK_ELEMENTS // u.size)
    buf = np.empty((u.size, max(block, int(counts.max()))), dtype=dtype)
    first = 0
    while first < starts.size:
        # Whole segments up to ``block`` rows (a larger single segment goes alone).
        last = max(first + 1, int(np.searchsorted(ends, starts[first] + block, side="right")))
        lo, hi = starts[first], ends[last - 1]
        B = buf[:, : hi - lo]
        np.multiply(uc, kc[None, lo:hi], out=B)
        np.add(B, dc[None, lo:hi], out=B)
        np.square(B, out=B)
        np.negative(B, out=B)
        np.exp(B, out=B)
        np.multiply(B, ac[None, lo:hi], out=B)
        r0, r1 = np.searchsorted(run_starts, [lo, hi])
        sums = np.add.reduceat(B, run_starts[r0:r1] - lo, axis=1, dtype=acc).T
        rs, rn = run_seg[r0:r1], run_neg[r0:r1]
        pos, neg = rs[~rn], rs[rn]  # each appears at most once: no repeated indices
        g[pos] += sums[~rn]
        g[neg] -= sums[rn]
        gross[pos] += sums[~rn]
        gross[neg] += sums[rn]
        first = last
    return g, gross


def _sign_partition(snap: npt.NDArray[np.intp], negative: npt.NDArray[np.bool_],
                    ) -> npt.NDArray[np.intp]:
    """Stable permutation putting, within each snapshot (``snap`` sorted), the rows with
    ``negative == False`` first. O(n), no sort."""
    n = snap.size
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    starts = np.r_[0, np.flatnonzero(snap[1:] != snap[:-1]) + 1]
    run = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, n]))
    pos = ~negative
    pos_before = np.cumsum(pos) - pos  # positive rows before each row (global)
    neg_before = np.arange(n) - pos_before
    rank_pos = pos_before - pos_before[starts][run]
    rank_neg = neg_before - neg_before[starts][run]
    n_pos = np.add.reduceat(pos.astype(np.intp), starts)
    target = starts[run] + np.where(negative, n_pos[run] + rank_neg, rank_pos)
    perm = np.empty(n, dtype=np.intp)
    perm[target] = np.arange(n)
    return perm


def _exact_points(rows: _Rows, seg_starts: npt.NDArray[np.intp],
                  seg_counts: npt.NDArray[np.intp], snaps: npt.NDArray[np.intp],
                  u: FloatArray) -> FloatArray:
    """float64 ``sum_i a_i exp(-(d_i + k_i u)^2)`` for each (snapshot, u) pair, no pruning.

    Pairs are taken in chunks of about ``_BLOCK_ROWS`` rows to bound memory.
    """
    out = np.zeros(snaps.size)
    rows_per = seg_counts[snaps]
    ends = np.cumsum(rows_per)
    first = 0
    while first < snaps.size:
        base = ends[first] - rows_per[first]
        last = max(first + 1, int(np.searchsorted(ends, base + _BLOCK_ROWS, side="right")))
        part = slice(first, last)
        idx = _ranges(seg_starts[snaps[part]], rows_per[part])
        owner = np.repeat(np.arange(last - first), rows_per[part])
        t = rows.d[idx] + rows.k[idx] * u[part][owner]
        out[part] = np.bincount(owner, weights=rows.a[idx] * np.exp(-t * t),
                                minlength=last - first)
        first = last
    return out


def _crossings(values: FloatArray, center: int,
               ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.intp],
                          npt.NDArray[np.bool_], npt.NDArray[np.intp]]:
    """Nearest strict sign change below and above grid index ``center`` (x = 1).

    Returns (has_below, cell_below, has_above, cell_above) per row of ``values``;
    cell c spans grid points c and c + 1. Exact zeros (e.g. underflow far from every
    strike) are not sign changes.
    """
    sgn = np.sign(values)
    cross = sgn[:, :-1] * sgn[:, 1:] < 0
    below, above = cross[:, :center], cross[:, center:]
    n = values.shape[0]
    has_b = below.any(axis=1) if center > 0 else np.zeros(n, dtype=bool)
    cell_b = (center - 1 - np.argmax(below[:, ::-1], axis=1) if center > 0
              else np.zeros(n, dtype=np.intp))
    has_a = above.any(axis=1) if above.shape[1] else np.zeros(n, dtype=bool)
    cell_a = center + (np.argmax(above, axis=1) if above.shape[1] else np.zeros(n, np.intp))
    return has_b, cell_b, has_a, cell_a


def _refine(rows: _Rows, seg_starts: npt.NDArray[np.intp], seg_counts: npt.NDArray[np.intp],
            task_snap: npt.NDArray[np.intp], x_lo: FloatArray, x_hi: FloatArray,
            g_lo: FloatArray, g_hi: FloatArray, tol: float,
            ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Root of the profile in each bracket [x_lo, x_hi] (vectorized over tasks).

    ``g_lo``/``g_hi`` are the (float32 grid) profile values at the bracket ends. Each
    step evaluates, in float64 and on the rows of the task's snapshot that can matter
    inside its bracket, two probes ``tol / 2`` apart around the false-position estimate
    (around the midpoint when the previous step did not halve the bracket) and keeps the
    sub-bracket holding the sign change, until the bracket is below ``tol``; the root is
    interpolated linearly inside it. Near-linear profiles finish in one step.
    ``confirmed`` is False when float64 values at the final bracket ends do not have
    strictly opposite signs (the float32 grid saw a sign change that is not there).
    Returns (root as x = S'/S, confirmed).
    """
    n_task = task_snap.size
    idx = _ranges(seg_starts[task_snap], seg_counts[task_snap])
    owner0 = np.repeat(np.arange(n_task), seg_counts[task_snap])
    keep = _keep_near(rows.d[idx], rows.k[idx], np.log(x_lo)[owner0], np.log(x_hi)[owner0],
                      _PRUNE_REFINE)
    idx, owner0 = idx[keep], owner0[keep]
    d0, k0, a0 = rows.d[idx], rows.k[idx], rows.a[idx]
    d, k, a, owner = d0, k0, a0, owner0

    def profile(*xs: FloatArray) -> list[FloatArray]:
        out = []
        for x in xs:
            t = d + k * np.log(x)[owner]
            out.append(np.bincount(owner, weights=a * np.exp(-t * t), minlength=n_task))
        return out

    x_lo, x_hi = x_lo.astype(np.float64), x_hi.astype(np.float64)
    exact_lo = np.zeros(n_task, dtype=bool)  # end value computed here in float64
    exact_hi = np.zeros(n_task, dtype=bool)
    active = x_hi - x_lo > tol
    bisect = np.zeros(n_task, dtype=bool)
    for _ in range(64):
        if not active.any():
            break
        on_rows = active[owner]
        d, k, a, owner = d[on_rows], k[on_rows], a[on_rows], owner[on_rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.clip(g_lo / (g_lo - g_hi), 0.0, 1.0)
        frac = np.where(bisect | ~np.isfinite(frac), 0.5, frac)
        est = x_lo + frac * (x_hi - x_lo)
        p = np.maximum(x_lo, est - 0.25 * tol)  # probes tol / 2 apart: [p, q] ends it
        q = np.minimum(x_hi, p + 0.5 * tol)
        g_p, g_q = profile(p, q)
        width = x_hi - x_lo
        left = np.sign(g_p) != np.sign(g_lo)  # root in [lo, p]
        inner = ~left & (np.sign(g_q) != np.sign(g_p))  # root in [p, q], else in [q, hi]
        x_lo, g_lo, exact_lo = (np.where(active & ~left, np.where(inner, p, q), x_lo),
                                np.where(active & ~left, np.where(inner, g_p, g_q), g_lo),
                                np.where(active & ~left, True, exact_lo))
        x_hi, g_hi, exact_hi = (np.where(active & left, p, np.where(active & inner, q, x_hi)),
                                np.where(active & left, g_p,
                                         np.where(active & inner, g_q, g_hi)),
                                np.where(active & (left | inner), True, exact_hi))
        bisect = (x_hi - x_lo) > 0.5 * width
        active &= (x_hi - x_lo) > tol
    # Bracket ends still carrying float32 grid values: evaluate them in float64.
    check = ~(exact_lo & exact_hi)
    if check.any():
        d, k, a, owner = d0, k0, a0, owner0
        on_rows = check[owner]
        d, k, a, owner = d[on_rows], k[on_rows], a[on_rows], owner[on_rows]
        f_lo, f_hi = profile(x_lo, x_hi)
        g_lo = np.where(check & ~exact_lo, f_lo, g_lo)
        g_hi = np.where(check & ~exact_hi, f_hi, g_hi)
    confirmed = np.sign(g_lo) * np.sign(g_hi) < 0
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = g_lo / (g_lo - g_hi)
    frac = np.where(np.isfinite(frac), np.clip(frac, 0.0, 1.0), 0.5)
    return x_lo + frac * (x_hi - x_lo), confirmed


def _relative_grid(span: tuple[float, float], step: float) -> tuple[FloatArray, int]:
    """Grid of x = S'/S over ``span`` with x = 1 on it; returns (x, index of 1)."""
    lo, hi = span
    n_lo = int(np.ceil((1.0 - lo) / step - 1e-9))
    n_hi = int(np.ceil((hi - 1.0) / step - 1e-9))
    x = np.r_[np.linspace(lo, 1.0, n_lo + 1), np.linspace(1.0, hi, n_hi + 1)[1:]]
    return x, n_lo


def _candidates(rows: _Rows, seg_starts: npt.NDArray[np.intp],
                seg_counts: npt.NDArray[np.intp], snaps: npt.NDArray[np.intp], u: FloatArray,
                dtype: type, prune: bool) -> tuple[FloatArray, FloatArray]:
    """Grid sums and local gross (len(snaps), len(u)) for the given snapshots."""
    sel = _ranges(seg_starts[snaps], seg_counts[snaps])
    local = np.repeat(np.arange(snaps.size), seg_counts[snaps])
    if prune:
        keep = _keep_near(rows.d[sel], rows.k[sel], u.min(), u.max(), _PRUNE_GRID)
        sel, local = sel[keep], local[keep]
    return _grid_sums(rows.d[sel], rows.k[sel], rows.a[sel], local, snaps.size, u, dtype)


def _flip(r: _Rows, n_snap: int, span: tuple[float, float], grid_step: float, tol: float,
          ) -> FloatArray:
    """Gamma flip as x = S'/S per snapshot (NaN when the profile does not cross zero).

    The coarse float32 grid is evaluated in nested bands around spot (``_BANDS``:
    |x - 1| <= 0.05, 0.1, 0.2, 0.3, then the whole span), each band only for the
    snapshots without a sign change in the previous one: a crossing inside a band is
    nearer to spot than any outside it. Grid values within ``_F32_DOUBT`` of zero
    (relative to the local gross gamma) are recomputed in float64, and values within
    ``_SIGN_FLOOR`` of the snapshot's capacity count as zero (no sign). The nearest
    sign change below and above spot are refined in float64 (only the nearer one when
    the grid already tells) and the nearer root wins. As a safety net, a bracket whose float64 end
    values do not confirm the grid's sign change sends its snapshot through the same
    search on a float64 grid.
    """
    flip = np.full(n_snap, np.nan)
    if r.snap.size == 0:
        return flip
    x, center = _relative_grid(span, grid_step)
    u = np.log(x)
    seg_counts = np.bincount(r.snap, minlength=n_snap)
    seg_starts = np.cumsum(seg_counts) - seg_counts
    capacity = np.bincount(r.snap, weights=np.abs(r.a), minlength=n_snap)
    vals = np.zeros((n_snap, x.size))
    has_b = np.zeros(n_snap, dtype=bool)
    has_a = np.zeros(n_snap, dtype=bool)
    cell_b = np.zeros(n_snap, dtype=np.intp)
    cell_a = np.zeros(n_snap, dtype=np.intp)

    def search(snaps: npt.NDArray[np.intp], dtype: type, bands: tuple[float, ...]) -> None:
        lo_prev, hi_prev = center, center - 1  # evaluated index range (empty)
        todo = snaps
        for band in (*bands, np.inf):
            lo_i = int(np.searchsorted(x, 1.0 - band - 1e-12))
            hi_i = int(np.searchsorted(x, 1.0 + band + 1e-12, side="right")) - 1
            new = np.r_[np.arange(lo_i, lo_prev), np.arange(hi_prev + 1, hi_i + 1)]
            if new.size and todo.size:
                block, local = _candidates(r, seg_starts, seg_counts, todo, u[new], dtype,
                                           prune=dtype is np.float32)
                floor = _SIGN_FLOOR * capacity[todo][:, None]
                if dtype is np.float32:
                    # float32 errors are a tiny fraction of the local gross: signs are
                    # doubtful only when |g| is within _F32_DOUBT of it (recompute those
                    # in float64); no sign at all where even the gross is below the floor.
                    empty = local <= 0.5 * floor
                    i, j = np.nonzero(~empty & (np.abs(block) <= _F32_DOUBT * local))
                    if i.size:
                        block[i, j] = _exact_points(r, seg_starts, seg_counts, todo[i],
                                                    u[new][j])
                    block[empty] = 0.0
                block[np.abs(block) <= floor] = 0.0
                vals[np.ix_(todo, new)] = block
            hb, cb, ha, ca = _crossings(vals[todo, lo_i:hi_i + 1], center - lo_i)
            has_b[todo], cell_b[todo] = hb, cb + lo_i
            has_a[todo], cell_a[todo] = ha, ca + lo_i
            todo = todo[~(hb | ha)]
            lo_prev, hi_prev = lo_i, hi_i
            if todo.size == 0:
                break

    def refine(snaps: npt.NDArray[np.intp]) -> tuple[FloatArray, FloatArray,
                                                      npt.NDArray[np.bool_]]:
        hb, ha = has_b[snaps], has_a[snaps]
        # Skip the side whose cell is entirely farther from spot than the other's.
        cb, ca = cell_b[snaps], cell_a[snaps]
        both = hb & ha
        hb = hb & ~(both & (1.0 - x[cb + 1] > x[ca + 1] - 1.0))
        ha = ha & ~(both & (x[ca] - 1.0 > 1.0 - x[cb]))
        tasks = np.r_[snaps[hb], snaps[ha]]
        cells = np.r_[cell_b[snaps][hb], cell_a[snaps][ha]]
        roots, ok = _refine(r, seg_starts, seg_counts, tasks, x[cells], x[cells + 1],
                            vals[tasks, cells], vals[tasks, cells + 1], tol)
        return tasks, roots, ok

    active = np.flatnonzero(seg_counts > 0)
    search(active, np.float32, _BANDS)
    tasks, roots, ok = refine(active)
    redo = np.unique(tasks[~ok])
    if redo.size:  # rare: float32 noise at a grid point next to a root
        keep = ~np.isin(tasks, redo)
        search(redo, np.float64, ())
        t2, r2, _ = refine(redo)
        tasks, roots = np.r_[tasks[keep], t2], np.r_[roots[keep], r2]
    if tasks.size == 0:
        return flip
    # Per snapshot keep the root nearest to spot (ties: the lower one).
    order = np.lexsort((roots, np.abs(roots - 1.0), tasks))
    first = np.r_[True, tasks[order][1:] != tasks[order][:-1]]
    flip[tasks[order[first]]] = roots[order[first]]
    return flip


def _check_search(span: tuple[float, float], grid_step: float, flip_tol: float) -> None:
    lo, hi = span
    if not (0 < lo < 1 < hi):
        raise ConfigError(f"span {span!r} does not bracket spot", column="span",
                          expected="(lo, hi) with 0 < lo < 1 < hi, e.g. (0.5, 1.5)",
                          fix="pass span=(0.5, 1.5)")
    if not (0 < grid_step <= 0.05):
        raise ConfigError(f"grid_step {grid_step!r} out of range", column="grid_step",
                          expected="a fraction of spot in (0, 0.05], e.g. 0.005",
                          fix="pass grid_step=0.005")
    if not (0 < flip_tol <= 5e-4):
        raise ConfigError(f"flip_tol {flip_tol!r} out of range", column="flip_tol",
                          expected="a fraction of spot in (0, 5e-4] (0.05% at most)",
                          fix="pass flip_tol=1e-4")


def gex_profile(chain: pd.DataFrame | Any, dealer: Dealer = "long_calls_short_puts", *,
                levels: ArrayLike | None = None) -> pd.DataFrame:
    """Net dealer GEX profile over hypothetical spots (sticky strike), float64.

    Parameters
    ----------
    chain : pandas.DataFrame or pyarrow.Table
        Canonical CHAIN columns (see :func:`row_gex`).
    dealer : {"long_calls_short_puts", "short_calls_long_puts", "explicit"}
        Dealer positioning convention.
    levels : array_like, optional
        Hypothetical spots relative to each snapshot's reference spot, ``x = S'/S``
        (default: 201 points over [0.5, 1.5]).

    Returns
    -------
    pandas.DataFrame
        Long format, one row per (snapshot, level): ``ts``, ``spot`` (reference, USD),
        ``rel`` (x), ``level`` (S' = x * spot, USD), ``gex`` (USD per 1% move at S').
        Snapshots without any valid row give ``gex = 0``.

    Formula:
        gex(x) = sum_i sign_i OI_i m_i gamma(x F_i, K_i, T_i, iv_i) (x F_i)^2 0.01
    """
    def term(r: Any, lo: int, hi: int, u: FloatArray) -> FloatArray:
        t = r.d[lo:hi, None] + r.k[lo:hi, None] * u[None, :]
        return r.a[lo:hi, None] * np.exp(-t * t)

    return _profile(chain, dealer, levels, term, scale_by_level=True, name="gex")


def exposure_profile(chain: pd.DataFrame | Any, dealer: Dealer = "long_calls_short_puts",
                     *, kind: Exposure = "vanna", levels: ArrayLike | None = None,
                     ) -> pd.DataFrame:
    """Net dealer GEX, vanna or charm exposure over hypothetical spots (sticky strike).

    Parameters
    ----------
    chain : pandas.DataFrame or pyarrow.Table
        Canonical CHAIN columns (see :func:`row_gex`).
    dealer : {"long_calls_short_puts", "short_calls_long_puts", "explicit"}
        Dealer positioning convention.
    kind : {"gex", "vanna", "charm"}
        ``gex`` in USD per 1% move (same as :func:`gex_profile`), ``vanna`` in USD of
        dealer delta change per +1 vol point, ``charm`` in BTC of dealer delta change
        per day.
    levels : array_like, optional
        Relative spots ``x = S'/S`` (default: 201 points over [0.5, 1.5]).

    Returns
    -------
    pandas.DataFrame
        Long format, one row per (snapshot, level): ``ts``, ``spot``, ``rel``,
        ``level`` (USD) and a column named after ``kind``. Snapshots without a valid
        row give 0.

    Formula:
        d1_i(x) = d1_i + ln(x) / (iv_i sqrt(T_i)),  d2_i(x) = d1_i(x) - iv_i sqrt(T_i)
        vanna(x) = sum_i -sign_i OI_i m_i pdf(d1_i(x)) d2_i(x) / iv_i (x F_i) 0.01
        charm(x) = sum_i sign_i OI_i m_i pdf(d1_i(x)) d2_i(x) / (2 T_i) / 365
    """
    options = get_args(Exposure)
    if kind not in options:
        hint = difflib.get_close_matches(str(kind), options, n=1)
        raise ConfigError(f"unknown exposure kind {kind!r}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                          column="kind", expected=f"one of {list(options)}",
                          fix="pass kind='vanna'")
    if kind == "gex":
        return gex_profile(chain, dealer, levels=levels)
    def term(r: Any, lo: int, hi: int, u: FloatArray) -> FloatArray:
        coef = r.vanna_coef if kind == "vanna" else r.charm_coef
        d1x = r.d[lo:hi, None] * np.sqrt(2.0) + u[None, :] / r.s[lo:hi, None]
        return (coef[lo:hi, None] * _INV_SQRT_2PI * np.exp(-0.5 * d1x * d1x)
                * (d1x - r.s[lo:hi, None]))

    return _profile(chain, dealer, levels, term, scale_by_level=kind == "vanna", name=kind)


def _profile(chain: pd.DataFrame | Any, dealer: Dealer, levels: ArrayLike | None,
             term: Callable[[Any, int, int, FloatArray], FloatArray], *,
             scale_by_level: bool, name: str) -> pd.DataFrame:
    """Sum ``term`` (per row and relative spot, over chunks of a block's rows) per
    snapshot over the grid ``levels`` (default 201 points over [0.5, 1.5]); times the
    relative spot with ``scale_by_level``. Long frame: ``ts, spot, rel, level, name``."""
    rel = (np.linspace(0.5, 1.5, 201) if levels is None
           else np.asarray(levels, dtype=np.float64).ravel())
    if rel.size and not (np.all(np.isfinite(rel)) and np.all(rel > 0)):
        raise ConfigError("levels must be finite and > 0", column="levels",
                          expected="relative spots S'/S, e.g. numpy.linspace(0.5, 1.5, 201)",
                          fix="pass positive relative levels")
    inp = _prepare(chain, dealer)
    n_snap = inp.ts_us.size
    prof = np.zeros((n_snap, rel.size))
    spot = np.zeros(n_snap)
    u = np.log(rel)
    step = max(1, _CHUNK_ELEMENTS // max(1, rel.size))
    for s0, s1 in _blocks(inp):
        blk = _block(inp, s0, s1)
        spot[s0:s1] = blk.spot
        r = blk.rows
        for lo in range(0, r.snap.size, step):
            hi = min(r.snap.size, lo + step)
            ids, starts, _ = _segments(r.snap[lo:hi])
            prof[s0 + ids] += np.add.reduceat(term(r, lo, hi, u), starts, axis=0)
    if scale_by_level:
        prof *= rel[None, :]
    snap_rep = np.repeat(np.arange(n_snap), rel.size)
    return pd.DataFrame({
        "ts": from_epoch_us(inp.ts_us[snap_rep]),
        "spot": spot[snap_rep],
        "rel": np.tile(rel, n_snap),
        "level": spot[snap_rep] * np.tile(rel, n_snap),
        name: prof.ravel(),
    })


def gex_profile_at(chain: pd.DataFrame | Any, rel: ArrayLike,
                   dealer: Dealer = "long_calls_short_puts") -> tuple[FloatArray, FloatArray]:
    """Net dealer GEX of each snapshot at its own relative spots, float64.

    Parameters
    ----------
    chain : pandas.DataFrame or pyarrow.Table
        Canonical CHAIN columns.
    rel : array_like
        (n_snapshots, m) relative spots ``x = S'/S``, one row per snapshot in ``ts``
        order (as in :func:`summarize`).
    dealer
        Dealer positioning convention.

    Returns
    -------
    (values, spot)
        ``values`` (n_snapshots, m): GEX at ``x * spot`` in USD per 1% move (the same
        sticky-strike profile as :func:`gex_profile`); ``spot``: reference spots.
    """
    inp = _prepare(chain, dealer)
    n_snap = inp.ts_us.size
    x = np.asarray(rel, dtype=np.float64).reshape(n_snap, -1)
    out = np.zeros_like(x)
    spot = np.zeros(n_snap)
    for s0, s1 in _blocks(inp):
        blk = _block(inp, s0, s1)
        spot[s0:s1] = blk.spot
        r = blk.rows
        seg_counts = np.bincount(r.snap, minlength=blk.n_snap)
        seg_starts = np.cumsum(seg_counts) - seg_counts
        snaps = np.repeat(np.arange(blk.n_snap), x.shape[1])
        vals = _exact_points(r, seg_starts, seg_counts, snaps, np.log(x[s0:s1]).ravel())
        out[s0:s1] = vals.reshape(blk.n_snap, -1) * x[s0:s1]
    return out, spot


def atm_iv(chain: pd.DataFrame | Any, tenor_days: float = 30.0) -> pd.DataFrame:
    """At-the-money implied volatility per snapshot, from the expiry nearest a tenor.

    Parameters
    ----------
    chain : pandas.DataFrame or pyarrow.Table
        Canonical CHAIN columns.
    tenor_days : float
        Target time to expiry (default 30 days); the listed expiry nearest to it is
        used (ties: the shorter one).

    Returns
    -------
    pandas.DataFrame
        ``ts`` (sorted, one row per snapshot) and ``atm_iv`` (fraction): the mean IV of
        that expiry's rows whose strike is nearest to their forward (both the call and
        the put when quoted). NaN when the snapshot has no quoted, unexpired row.

    Formula:
        e* = argmin_e |T_e - tenor|;  atm_iv = mean iv_i over rows of e* with minimal
        |ln(K_i / F_i)|
    """
    inp = _prepare(chain, "long_calls_short_puts")
    n_snap = inp.ts_us.size
    out = np.full(n_snap, np.nan)
    sel = slice(None) if inp.order is None else inp.order
    row_ts = inp.row_ts_us[sel]
    T = (inp.expiry_us[sel] - row_ts) / _US_PER_YEAR
    iv, F, K = inp.iv[sel], inp.forward[sel], inp.strike[sel]
    snap = np.repeat(np.arange(n_snap), np.diff(inp.bounds))
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (T > 0) & (iv > 0) & (F > 0) & (K > 0) & np.isfinite(F) & np.isfinite(K)
        m = np.abs(np.log(K / F))
    i = np.flatnonzero(ok)
    if i.size:
        snap, T, iv, m = snap[i], T[i], iv[i], m[i]
        gap = np.abs(T - tenor_days / 365.0)
        # per snapshot: nearest expiry (ties -> shorter), then the strikes nearest spot
        order = np.lexsort((m, T, gap, snap))
        snap, T, iv, m, gap = snap[order], T[order], iv[order], m[order], gap[order]
        first = np.r_[True, snap[1:] != snap[:-1]]
        lead = np.flatnonzero(first)
        owner = np.cumsum(first) - 1
        best = (T == T[lead][owner]) & (m <= m[lead][owner] * (1 + 1e-12))
        sums = np.bincount(snap[best], weights=iv[best], minlength=n_snap)
        counts = np.bincount(snap[best], minlength=n_snap)
        have = counts > 0
        out[have] = sums[have] / counts[have]
    return pd.DataFrame({"ts": from_epoch_us(inp.ts_us), "atm_iv": out})


# ---------------------------------------------------------------------------------------
# Summary per snapshot


def summarize(chain: pd.DataFrame | Any, dealer: Dealer = "long_calls_short_puts", *,
              span: tuple[float, float] = (0.5, 1.5), grid_step: float = 0.005,
              flip_tol: float = 2.5e-4, second_order: bool = True) -> pd.DataFrame:
    """Dealer gamma summary, one row per snapshot ``ts`` (sorted), vectorized.

    Parameters
    ----------
    chain : pandas.DataFrame or pyarrow.Table
        Canonical CHAIN columns (see :func:`row_gex`); optional ``index_price`` gives
        the reference spot.
    dealer : {"long_calls_short_puts", "short_calls_long_puts", "explicit"}
        Dealer positioning convention.
    span : (float, float)
        Hypothetical spots swept for the flip, relative to spot (default 0.5..1.5).
    grid_step : float
        Coarse grid spacing as a fraction of spot (default 0.5%). Two crossings closer
        together than one step can go unseen (as with any grid search).
    flip_tol : float
        Bisection stops once the bracket is narrower than ``flip_tol * spot`` (at most
        5e-4, i.e. 0.05%); the flip is then interpolated linearly inside the bracket.
    second_order : bool
        False skips vanna and charm (their columns are NaN), for callers that only need
        the gamma columns.

    Returns
    -------
    pandas.DataFrame
        Columns:

        - ``ts``: snapshot time (datetime64[us, UTC]).
        - ``spot``: reference spot S, USD; ``spot_source``: ``'index'`` (median
          ``index_price`` of the snapshot) or ``'forward_median'`` (median of the rows'
          ``underlying_price``).
        - ``gex``, ``gex_call``, ``gex_put``: net / call / put dealer GEX at spot, USD
          per 1% move (0 when no row enters the sums).
        - ``gamma_flip``: zero crossing of the profile nearest to spot, USD (NaN when
          the profile does not change sign on ``span``; ties go to the lower root).
        - ``call_wall``: strike with the largest positive call GEX (summed over
          expiries); ``put_wall``: strike with the most negative put GEX. NaN when no
          strike qualifies (e.g. the call wall under ``short_calls_long_puts``, where
          every call GEX is negative); ties go to the lower strike.
        - ``regime``: int8, +1 when net GEX at spot > 0 (dealers long gamma), -1 when
          < 0, 0 when exactly 0 (including snapshots with no valid row).
        - ``vanna``: dealer vanna exposure, USD of dealer delta change per +1 vol
          point rise of every IV (``sum sign OI m vanna F 0.01``); positive: dealers
          sell to re-hedge when IV rises.
        - ``charm``: dealer charm exposure, BTC of dealer delta change per day of time
          passing (``sum sign OI m charm / 365``); positive: dealers sell as time passes.
        - ``n_contracts``: rows that entered the sums (after dropping expired,
          zero-OI and unquoted rows).

        An empty chain gives an empty frame with these columns.

    Raises
    ------
    DataError, ConfigError
        See :func:`row_gex`; ConfigError also for invalid ``span``, ``grid_step``,
        ``flip_tol``.

    Notes
    -----
    The flip search evaluates the profile on a coarse float32 grid of step
    ``grid_step`` in nested bands around spot (``|S'/S - 1| <= 0.05``, then 0.1, 0.2,
    0.3 and the whole ``span``, each band only for the snapshots without a crossing
    yet), takes the nearest sign change below and above spot and refines it in
    float64 on the rows of those snapshots only (false position with a bracketing
    check, bisection when that stalls); the nearer root wins. Snapshots are processed
    in blocks of about 131,072 rows, so memory stays bounded for long chains.

    Like any grid search it can miss two crossings closer together than ``grid_step``,
    and a crossing where the whole profile is within float32 noise of zero (about 1e-7
    of the gross gamma there, i.e. an economically empty region) may go unseen. A
    float32 sign change that float64 does not confirm is re-searched in float64.
    """
    _check_search(span, grid_step, flip_tol)
    inp = _prepare(chain, dealer)
    n_snap = inp.ts_us.size
    cols = {name: np.zeros(n_snap) for name in ("spot", "gex", "gex_call", "gex_put",
                                                "gamma_flip", "call_wall", "put_wall",
                                                "vanna", "charm")}
    from_index = np.zeros(n_snap, dtype=bool)
    n_contracts = np.zeros(n_snap, dtype=np.int64)
    for s0, s1 in _blocks(inp):
        blk = _block(inp, s0, s1, second_order)
        r, nb = blk.rows, blk.n_snap
        cols["spot"][s0:s1] = blk.spot
        from_index[s0:s1] = blk.spot_is_index
        cols["gex_call"][s0:s1] = np.bincount(r.snap, weights=np.where(r.is_call, r.gex, 0.0),
                                              minlength=nb)
        cols["gex_put"][s0:s1] = np.bincount(r.snap, weights=np.where(r.is_call, 0.0, r.gex),
                                             minlength=nb)
        cols["gex"][s0:s1] = np.bincount(r.snap, weights=r.gex, minlength=nb)
        cols["vanna"][s0:s1] = np.bincount(r.snap, weights=r.vanna, minlength=nb)
        cols["charm"][s0:s1] = np.bincount(r.snap, weights=r.charm, minlength=nb)
        n_contracts[s0:s1] = np.bincount(r.snap, minlength=nb)
        cell_snap, cell_strike, cell_call, cell_put, _, _ = _strike_cells(r)
        cols["call_wall"][s0:s1] = _walls(cell_snap, cell_strike, cell_call, nb, largest=True)
        cols["put_wall"][s0:s1] = _walls(cell_snap, cell_strike, cell_put, nb, largest=False)
        cols["gamma_flip"][s0:s1] = _flip(r, nb, span, grid_step, flip_tol) * blk.spot
    if not second_order:
        cols["vanna"][:] = np.nan
        cols["charm"][:] = np.nan
    return pd.DataFrame({
        "ts": from_epoch_us(inp.ts_us),
        "spot": cols["spot"],
        "spot_source": pd.Series(np.where(from_index, "index", "forward_median"),
                                 dtype="string"),
        "gex": cols["gex"],
        "gex_call": cols["gex_call"],
        "gex_put": cols["gex_put"],
        "gamma_flip": cols["gamma_flip"],
        "call_wall": cols["call_wall"],
        "put_wall": cols["put_wall"],
        "regime": np.sign(cols["gex"]).astype(np.int8),
        "vanna": cols["vanna"],
        "charm": cols["charm"],
        "n_contracts": n_contracts,
    })
