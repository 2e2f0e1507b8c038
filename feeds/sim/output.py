"""Turn the loop's raw arrays into canonical Arrow tables (built with ``conform``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from feeds.schema import (
    BARRIERS,
    BARS,
    CHAIN,
    FUNDING,
    FUTURES,
    LIQUIDATIONS,
    PERP_OI,
    Schema,
    conform,
)
from feeds.sim.calendar import expiry_name
from feeds.sim.engine import FLOW_NAMES, Raw
from plumbing.timeconv import from_epoch_us

SOURCE = "feeds.synthetic"
#: Chain snapshots per ``conform`` call: bounds peak memory on year-long runs.
CHAIN_CHUNK_ROWS = 600_000


def _table(df: pd.DataFrame, schema: Schema, name: str) -> pa.Table:
    """``conform`` or, for no rows, an empty table of the schema (conform refuses those)."""
    if len(df) == 0:
        fields = [schema.arrow.field(c) for c in df.columns if c in schema.names]
        return pa.Table.from_pylist([], schema=pa.schema(fields))
    return conform(df, schema, source=f"{SOURCE}:{name}")


def _plain(df: pd.DataFrame) -> pa.Table:
    """Tables without a canonical schema (dealer_gamma, flows): ts in us UTC, floats."""
    return pa.Table.from_pandas(df, preserve_index=False)


def build_tables(raw: Raw) -> dict[str, pa.Table]:
    """All output tables of one simulation, keyed by their Market field name."""
    g = raw.grid
    n_sub, nb = g.n_sub, g.n_bars
    bar_ts = g.start_us + g.freq_us * np.arange(nb, dtype=np.int64)
    ts = from_epoch_us(bar_ts)
    path = raw.spot_path
    opens = path[:-1:n_sub][:nb]
    closes = path[n_sub::n_sub][:nb]
    highs = np.exp(raw.ln_high.reshape(nb, n_sub).max(axis=1))
    lows = np.exp(raw.ln_low.reshape(nb, n_sub).min(axis=1))
    highs = np.maximum(highs, np.maximum(opens, closes))
    lows = np.minimum(lows, np.minimum(opens, closes))
    vol = raw.volume.reshape(nb, n_sub).sum(axis=1)
    out: dict[str, pa.Table] = {}
    out["bars"] = _table(pd.DataFrame({"ts": ts, "open": opens, "high": highs, "low": lows,
                                       "close": closes, "volume": vol}), BARS, "bars")
    # perp: spot path times (1 + premium), extremes on the same intra-step path
    prem = raw.prem_path
    p_hi = np.maximum(prem[:-1], prem[1:])
    p_lo = np.minimum(prem[:-1], prem[1:])
    perp_hi = (np.exp(raw.ln_high) * (1 + p_hi)).reshape(nb, n_sub).max(axis=1)
    perp_lo = (np.exp(raw.ln_low) * (1 + p_lo)).reshape(nb, n_sub).min(axis=1)
    perp_open = opens * (1 + prem[:-1:n_sub][:nb])
    perp_close = closes * (1 + prem[n_sub::n_sub][:nb])
    out["perp"] = _table(pd.DataFrame({
        "ts": ts, "open": perp_open,
        "high": np.maximum(perp_hi, np.maximum(perp_open, perp_close)),
        "low": np.minimum(perp_lo, np.minimum(perp_open, perp_close)),
        "close": perp_close,
        "volume": raw.perp_volume.reshape(nb, n_sub).sum(axis=1)}), BARS, "perp")
    b = raw.bar
    out["perp_oi"] = _table(pd.DataFrame({"ts": ts, "oi_btc": b["perp_oi_btc"],
                                          "oi_usd": b["perp_oi_btc"] * b["spot"]}),
                            PERP_OI, "perp_oi")
    out["funding"] = _table(pd.DataFrame({
        "ts": from_epoch_us(np.asarray(raw.funding_ts, np.int64)),
        "rate_8h": np.asarray(raw.funding_rate, np.float64),
        "interval_h": np.full(len(raw.funding_ts), 8.0)}), FUNDING, "funding")
    out["liquidations"] = _liquidations(raw)
    out["futures"] = _futures(raw)
    flow = raw.flows.reshape(len(FLOW_NAMES), nb, n_sub).sum(axis=2)
    regime = np.sign(b["net_gamma"])
    out["dealer_gamma"] = _plain(pd.DataFrame({
        "ts": ts, "spot": b["spot"], "dealer_gex_usd": b["dealer_gex_usd"],
        "net_gamma": b["net_gamma"], "regime": regime.astype(np.int8),
        "dealer_delta_btc": b["dealer_delta_btc"], "hedge_flow_btc": flow[2],
        "dealer_vanna_usd": b["dealer_vanna_usd"], "barrier_gex_usd": b["barrier_gex_usd"]}))
    cols: dict[str, object] = {"ts": ts}
    for i, name in enumerate(FLOW_NAMES):
        cols[f"{name}_btc"] = flow[i]
    for key in ("depth_btc", "mm_health", "basis_ann", "basis_book_btc", "futures_oi_btc",
                "perp_long_btc", "perp_short_btc", "premium", "iv_atm", "put_demand",
                "book_oi_btc"):
        cols[key] = b[key]
    out["flows"] = _plain(pd.DataFrame(cols))
    out["chain"] = _chain(raw)
    if raw.barriers:
        ts_, kind, K, H, exp_, size, side = (list(c) for c in zip(*raw.barriers, strict=True))
        out["barriers"] = _table(pd.DataFrame({
            "ts": from_epoch_us(np.asarray(ts_, np.int64)), "type": kind, "strike": K, "barrier": H,
            "expiry": from_epoch_us(np.asarray(exp_, np.int64)), "notional": size,
            "dealer_side": side}), BARRIERS, "barriers")
    return out


def _liquidations(raw: Raw) -> pa.Table:
    g = raw.grid
    if raw.liq_step:
        step = np.concatenate(raw.liq_step)
        side = np.concatenate(raw.liq_side)
        price = np.concatenate(raw.liq_price)
        size = np.concatenate(raw.liq_size)
    else:
        step = np.zeros(0, np.int64)
        side = np.zeros(0, np.int8)
        price = size = np.zeros(0)
    keep = size > 0
    df = pd.DataFrame({"ts": from_epoch_us(g.start_us + step[keep] * g.step_us),
                       "side": np.where(side[keep] == 0, "long", "short"),
                       "price": price[keep], "size": size[keep]})
    return _table(df, LIQUIDATIONS, "liquidations")


def _futures(raw: Raw) -> pa.Table:
    counts = np.array([len(f[1]) for f in raw.fut])
    ts = np.repeat(np.array([f[0] for f in raw.fut], np.int64), counts)
    exp = np.concatenate([f[1] for f in raw.fut])
    price = np.concatenate([f[2] for f in raw.fut])
    oi = np.concatenate([f[3] for f in raw.fut])
    uniq, inv = np.unique(exp, return_inverse=True)
    names = [expiry_name(int(e)) for e in uniq]
    df = pd.DataFrame({"ts": from_epoch_us(ts), "expiry": from_epoch_us(exp), "price": price,
                       "instrument": pd.Categorical.from_codes(inv, names)})
    table = _table(df, FUTURES, "futures")
    # extra column: open interest per future (BTC); rows are already in (ts, expiry) order
    return table.append_column(pa.field("open_interest", pa.float64()), pa.array(oi))


def _chain(raw: Raw) -> pa.Table:
    """Chain snapshots -> CHAIN rows (call then put of each (expiry, strike))."""
    snaps = raw.snaps
    names = raw.expiry_names
    parts: list[pa.Table] = []
    i = 0
    while i < len(snaps):
        j, rows = i, 0
        while j < len(snaps) and (rows == 0 or rows + 2 * len(snaps[j][2]) <= CHAIN_CHUNK_ROWS):
            rows += 2 * len(snaps[j][2])
            j += 1
        chunk = snaps[i:j]
        snaps[i:j] = [None] * (j - i)  # free the raw snapshots as they are converted
        lens = np.array([len(s[2]) for s in chunk])
        cat = [np.concatenate([s[f] for s in chunk]) for f in range(2, 11)]
        K, exp, code, oi_c, oi_p, pos_c, pos_p, iv, F = cat
        ts = np.repeat(np.array([s[0] for s in chunk], np.int64), 2 * lens)
        spot = np.repeat(np.array([s[1] for s in chunk]), 2 * lens)
        n = 2 * len(K)
        right = np.empty(n, object)
        right[0::2] = "C"
        right[1::2] = "P"
        df = pd.DataFrame({
            "ts": from_epoch_us(ts), "expiry": from_epoch_us(np.repeat(exp, 2)), "strike": np.repeat(K, 2),
            "right": right, "open_interest": np.column_stack([oi_c, oi_p]).ravel(),
            "mark_iv": np.repeat(iv, 2), "underlying_price": np.repeat(F, 2),
            "multiplier": np.ones(n), "index_price": spot,
            "underlying_index": pd.Categorical.from_codes(np.repeat(code, 2), names),
            "dealer_position": np.column_stack([pos_c, pos_p]).ravel()})
        # background OI decays geometrically and never reaches exactly 0: tiny values
        # are noise that a real exchange would not show
        df.loc[df["open_interest"] < 1e-6, ["open_interest", "dealer_position"]] = 0.0
        parts.append(conform(df, CHAIN, source=f"{SOURCE}:chain"))
        del df, cat, chunk
        i = j
    if not parts:
        return pa.Table.from_pylist([], schema=CHAIN.arrow)
    return pa.concat_tables(parts)
