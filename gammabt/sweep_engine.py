"""A lean replay of single-leg spot and perpetual runs, for parameter sweeps.

A Backtrader run spends almost all its time in per-bar machinery (line buffers,
analyzers, the broker's value loop). A sweep of a single-leg strategy needs none of
it: :func:`replay` walks the bars in a plain Python loop over numpy arrays, calls the
strategy's own decision (:class:`strategies.rules.SingleLegRules`, the object its
Backtrader ``next()`` calls too), and keeps the account with the same arithmetic, in
the same order, as :class:`gammabt.broker.AccountBroker` on Backtrader's
``BackBroker``. The equity, orders, trades, ledger and positions it produces go
through the same metric code as :func:`gammabt.run.run`, so a supported run gives
the same metrics to the last bit (``tests/unit/test_sweep_engine.py``).

What it replays (the run's ``instrument`` is spot or the perpetual; other legs of the
market may be present, untraded):

- market orders placed at a bar's close, checked by the broker's rules at the next
  bar and filled at the next fresh bar's open, with the configured slippage capped at
  the bar's high (buys) or low (sells);
- sizes from :class:`strategies.sizing.PercentOfEquity` (value at order time / close);
- taker fees per the instrument's terms; spot: short sales refused without borrowing
  (counted as rejected orders, as the broker does) and charged the borrow APR per bar
  with it; perpetual: fills on the broker's lifted cash, realized PnL on close,
  unrealized PnL in the value, funding at the funding stamps;
- the order and trade tables the analyzers record, the per-bar equity, ledger and
  positions, and from them every metric a run reports.

What it refuses (:class:`Unsupported`, so the caller runs Backtrader instead; never
an approximation): strategies without declared rules (``rules_class`` on the class
itself, so a subclass overriding ``next`` is never assumed away), dated futures and
the front series as the traded instrument, multi-leg strategies (they declare no
rules), sub-second bar stamps, missing prices or funding rates in the window, and
any run whose path comes near an order refused for cash or margin, a fill Backtrader
would refuse for cash, or an own liquidation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gammabt.config import RunConfig
from gammabt.run import (
    PreparedMarket,
    assemble_metrics,
    check_market,
    check_window_length,
    coverage_problems,
    effective_params,
    input_coverage,
    window_bounds,
)
from strategies.registry import get_strategy, strategy_source_sha256
from strategies.rules import SingleLegRules, go_order

#: leg kinds the replay trades
TRADED = ("spot", "perp")

#: relative distance to a refusal or liquidation boundary under which the replay
#: gives up (the broker's own arithmetic decides there, not ours)
SAFETY = 1e-6


@dataclass(frozen=True)
class Unsupported:
    """The run is outside what :func:`replay` reproduces exactly; ``reason`` says why."""

    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True)
class LeanRun:
    """What a lean replay produces: the tables a run records, and its metrics."""

    config: RunConfig
    digest: str
    returns: pd.Series
    benchmark: pd.Series
    equity: pd.DataFrame
    orders: pd.DataFrame
    trades: pd.DataFrame
    ledger: pd.DataFrame
    positions: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)


def rules_for(config: RunConfig) -> SingleLegRules | Unsupported:
    """The strategy's decision object for ``config``'s parameters, or why there is none."""
    cls = get_strategy(config.strategy)
    rules_class = cls.__dict__.get("rules_class")
    if rules_class is None:
        return Unsupported(f"strategy {cls.__name__} declares no per-bar rules "
                           "(rules_class) the lean engine can call")
    return rules_class.from_params(effective_params(config))


def static_check(config: RunConfig, market: PreparedMarket) -> Unsupported | None:
    """Why :func:`replay` can never reproduce ``config`` on ``market`` (None: it may)."""
    rules = rules_for(config)
    if isinstance(rules, Unsupported):
        return rules
    legs = {leg.name: (leg, arrays) for leg, arrays in market.legs}
    if config.instrument not in legs or legs[config.instrument][0].kind not in TRADED:
        return Unsupported(f"instrument {config.instrument!r}: the lean engine trades spot "
                           "or the perpetual (dated futures expire, the front series is "
                           "not tradable)")
    arrays = legs[config.instrument][1]
    if arrays.bar_freq_us % 1_000_000 or np.any(arrays.close_us % 1_000_000):
        return Unsupported("bar stamps below a second (Backtrader's date numbers round them)")
    return None


def replay(config: RunConfig, market: PreparedMarket) -> LeanRun | Unsupported:
    """Replay ``config`` on ``market`` as :func:`gammabt.run.run` would run it.

    Returns
    -------
    LeanRun or Unsupported
        The run's tables and metrics, or why this run must go through Backtrader.

    Raises
    ------
    DataError
        As :func:`gammabt.run.run`: an empty window, or an input covering no bar.
    """
    why = static_check(config, market)
    if why is not None:
        return why
    rules = rules_for(config)
    assert isinstance(rules, SingleLegRules)
    check_market(config, market)  # as build_legs: the settings the market was built with
    spot = market.legs[0][1]
    lo, hi = window_bounds(pd.to_datetime(spot.open_us, unit="us", utc=True), config)
    check_window_length(config, hi - lo)
    coverage = input_coverage(market, config, lo, hi)
    warnings_ = coverage_problems(coverage, config)
    [(leg, traded)] = [(g, a) for g, a in market.legs if g.name == config.instrument]
    lines = {name: values[lo:hi] for name, values in traded.lines.items()}
    prices = np.stack([lines[k] for k in ("open", "high", "low", "close")])
    if not np.isfinite(prices).all():
        return Unsupported(f"a {leg.name} price is missing in the window")
    if leg.kind == "perp" and not np.isfinite(lines.get("funding_rate", 0.0)).all():
        return Unsupported("a funding rate is missing in the window")
    book = _replay(config, rules, lines, traded.close_us[lo:hi], spot.bar_freq_us,
                   derivative=leg.kind != "spot")
    if isinstance(book, Unsupported):
        return book
    equity, orders, trades, ledger, positions, refusals = book
    returns, benchmark, metrics = assemble_metrics(
        config, market, lo, hi, equity=equity, orders=orders, trades=trades, ledger=ledger,
        positions=positions, refusals=refusals, coverage=coverage, warnings_=warnings_)
    hashes = {**market.input_hashes, "strategy_source": strategy_source_sha256(config.strategy)}
    return LeanRun(config=config, digest=config.digest(hashes), returns=returns,
                   benchmark=benchmark, equity=equity, orders=orders, trades=trades,
                   ledger=ledger, positions=positions, metrics=metrics)


def _replay(config: RunConfig, rules: SingleLegRules, lines: dict[str, np.ndarray],
            close_us: np.ndarray, bar_freq_us: int, *, derivative: bool,
            ) -> tuple | Unsupported:
    """The bar loop. Every float operation mirrors Backtrader's ``BackBroker`` with
    :class:`gammabt.broker.LegCommission` (stock-like, ``shortcash``, leverage 1) and
    :class:`gammabt.broker.AccountBroker`, in the same order, so the results are
    bit-identical; comments name the Backtrader step each block stands for.
    ``derivative``: the traded leg is the linear perpetual (no cash to open, realized
    PnL on close, unrealized PnL in the value, funding, margin for longs too)."""
    n = len(close_us)
    terms = config.resolved_terms()["perp" if derivative else "spot"]
    rate = terms.taker_bps / 1e4
    slip = config.slippage_bps / 1e4 if config.slippage_bps > 0 else 0.0
    borrow_apr = terms.borrow_apr
    bar_years = (bar_freq_us / 1e6) / (365 * 86_400)
    percent = config.percent
    open_, high, low, close = (lines[k].tolist() for k in ("open", "high", "low", "close"))
    fresh = lines["fresh"].tolist() if "fresh" in lines else [1.0] * n
    funding = lines["funding_rate"].tolist() if derivative and "funding_rate" in lines \
        else [0.0] * n
    columns = {**lines, **rules.indicators(lines)}
    inputs = [columns[name].tolist() for name in rules.inputs]
    rows = zip(*inputs, strict=True) if inputs else iter([()] * n)
    warmup = rules.warmup
    decide = rules.decide

    cash = float(config.cash)
    value = cash
    size = 0.0  # position (BTC)
    pos_price = 0.0  # broker's average entry price
    trade_price = 0.0  # the open trade's price (Backtrader's Trade keeps its own)
    trade_comm = 0.0
    trade_open_k = 0
    # the strategy's state (GammaStrategy: pending, entry_bar; and the entry price)
    pending: list[Any] | None = None  # [side, size, created_k, created_price, accepted]
    entry_bar: int | None = None
    entry_price: float | None = None
    ref = 0
    refusals: dict[str, int] = {}
    values, cashes, sizes = [0.0] * n, [0.0] * n, [0.0] * n
    pos_k: list[int] = []
    pos_entry: list[float] = []
    order_rows: list[tuple] = []
    trade_rows: list[tuple] = []
    ledger_rows: list[tuple] = []

    for k, row in enumerate(rows):
        # -- broker.next(): check_submitted, then try to execute the pending order
        if pending is not None:
            side, qty, created_k, created_price, accepted = pending
            if not accepted:
                reason = _refusal(side, qty, size, cash, value, created_price, rate,
                                  terms.leverage, config.borrow, derivative)
                if reason == "unsupported":
                    return Unsupported("an order comes near a cash or margin refusal")
                if reason is not None:
                    refusals[reason] = refusals.get(reason, 0) + 1
                    order_rows.append((k, ref, side, "rejected", qty, math.nan, 0.0, 0.0,
                                       reason))
                    pending = None
                else:
                    pending[4] = True
            if pending is not None and fresh[k] >= 0.5:
                if slip:
                    if side == "buy":
                        price = open_[k] * (1 + slip)
                        if not price <= high[k]:
                            price = high[k]
                    else:
                        price = open_[k] * (1 - slip)
                        if not price >= low[k]:
                            price = low[k]
                else:
                    price = open_[k]
                cash0 = cash
                signed = qty if side == "buy" else -qty
                comm = abs(signed) * price * rate
                # AccountBroker: a derivative fills on temporarily lifted cash
                lift = max(0.0, comm - cash) + 1.0 if derivative else 0.0
                cash += lift
                if size == 0:  # opens (from flat)
                    if not derivative:  # shortcash: a short sale credits its proceeds
                        cash -= signed * price
                    cash -= comm
                    # Backtrader refuses a fill that leaves cash below 0 (a lifted
                    # derivative fill never does)
                    if not derivative and cash < SAFETY * abs(cash0):
                        return Unsupported("a fill comes near Backtrader's cash refusal")
                    cash -= lift
                    size, pos_price = signed, price
                    trade_price = (0.0 + signed * price) / signed
                    trade_comm = 0.0 + comm
                    trade_open_k = k
                    entry_price = (0.0 + signed * price) / signed
                else:  # closes the whole position (go() never adds or reverses at once)
                    held_size = size
                    pnl = held_size * (price - pos_price)
                    cash += (0.0 if derivative else held_size * pos_price) + pnl
                    cash -= comm
                    cash -= lift
                    trade_comm += comm
                    trade_pnl = 0.0 + held_size * (price - trade_price)
                    trade_rows.append((trade_open_k, k, "long" if held_size > 0 else "short",
                                       abs(held_size), trade_price, k - trade_open_k,
                                       trade_pnl, trade_pnl - trade_comm, trade_comm))
                    size, pos_price = 0.0, 0.0
                order_rows.append((k, ref, side, "completed", qty, price, signed, comm, ""))
                ledger_rows.append((k, "fill", signed, price, cash - cash0 + comm))
                if comm:
                    ledger_rows.append((k, "fee", signed, price, -comm))
                pending = None
        # -- AccountBroker: own liquidation (margin positions), then funding or borrow
        if size < 0 or (derivative and size > 0):
            worst = high[k] if size < 0 else low[k]
            equity_worst = cash + size * (worst - (pos_price if derivative else 0.0))
            maintenance = terms.mmr * abs(size) * worst
            if equity_worst < maintenance + SAFETY * abs(maintenance) + SAFETY * abs(cash):
                return Unsupported("a position comes near its own liquidation")
        if derivative:
            funding_rate = funding[k]
            if size and funding_rate:
                amount = -size * close[k] * funding_rate
                cash += amount
                ledger_rows.append((k, "funding", size, close[k], amount))
        elif size < 0:
            if borrow_apr:
                amount = size * close[k] * borrow_apr * bar_years
                cash += amount
                ledger_rows.append((k, "borrow", size, close[k], amount))
        # -- BackBroker._get_value (LegCommission, leverage 1, shortcash); AccountBroker
        # adds a derivative's unrealized PnL (Backtrader values it at 0)
        if derivative:
            value = cash + 0.0
            if size:
                value += size * (close[k] - pos_price)
        elif size > 0:
            dvalue = size * close[k]
            unrealized = size * (close[k] - pos_price)
            value = cash + ((0.0 + (dvalue - unrealized) / 1.0) + unrealized)
        elif size < 0:
            value = cash + (0.0 + size * close[k])
        else:
            value = cash + 0.0
        # -- the strategy: notifications, then next() once past the warm-up
        direction = 0 if abs(size) < 1e-12 else (1 if size > 0 else -1)
        if k >= warmup:
            held = None if entry_bar is None else (k + 1) - entry_bar
            target = decide(row, direction, held, entry_price)
            if target is not None and pending is None:
                step = go_order(target, direction)
                if step is not None:
                    order, restart = step
                    if order == "close":
                        qty = abs(size)
                        side = "sell" if size > 0 else "buy"
                    else:
                        side = order
                        c = close[k]
                        qty = value * percent / 100.0 / c if (c > 0 and value > 0) else 0.0
                    if qty:
                        ref += 1
                        pending = [side, qty, k, close[k], False]
                    entry_bar = (k + 1) if restart else None
        # -- analyzers
        values[k], cashes[k], sizes[k] = value, cash, size
        if size:
            pos_k.append(k)
            pos_entry.append(pos_price)
    return _tables(config, close_us, close, values, cashes, sizes, pos_k, pos_entry,
                   order_rows, trade_rows, ledger_rows, refusals, terms.leverage,
                   derivative)


def _refusal(side: str, qty: float, s0: float, cash: float, value: float, price: float,
             rate: float, leverage: float, borrow: bool, derivative: bool) -> str | None:
    """AccountBroker._refusal for one order: None (accepted), the reason of a rejection
    the replay reproduces, or ``unsupported`` near a cash/margin refusal."""
    if not math.isfinite(price) or price <= 0:
        return "no_price"
    signed = qty if side == "buy" else -qty
    s1 = s0 + signed
    if not derivative and s1 < -1e-12 and not borrow:
        return "short_without_borrow"
    if abs(s1) <= abs(s0) and s0 * s1 >= 0:
        return None
    fee = abs(signed) * price * rate
    cost = fee
    if not derivative and s1 > 0:
        cost += (s1 - max(s0, 0.0)) * price
        if cost > cash * (1 - SAFETY):
            return "unsupported"
    margin = abs(s1) * price / leverage if derivative or s1 < 0 else 0.0
    if margin > (value - fee) * (1 - SAFETY):
        return "unsupported"
    return None


def _tables(config: RunConfig, close_us: np.ndarray, close: list[float], values: list[float],
            cashes: list[float], sizes: list[float], pos_k: list[int],
            pos_entry: list[float], order_rows: list[tuple], trade_rows: list[tuple],
            ledger_rows: list[tuple], refusals: dict[str, int], leverage: float,
            derivative: bool) -> tuple:
    """The analyzers' and the ledger's tables, with the columns and dtypes a run has."""
    name = config.instrument
    ts = pd.to_datetime(close_us, unit="us", utc=True).as_unit("us")
    closes = np.asarray(close)
    equity = pd.DataFrame({"ts": ts, "value": values, "cash": cashes, "position": sizes,
                           "close": closes})
    idx = np.asarray(pos_k, dtype=np.int64)
    qty = np.asarray(sizes)[idx]
    mark = closes[idx]
    margin = np.where((qty < 0) | derivative, np.abs(qty) * mark / leverage, 0.0)
    positions = pd.DataFrame({"ts": ts[idx], "instrument": name, "qty": qty, "mark": mark,
                              "notional": qty * mark,
                              "unrealized_usd": qty * (mark - np.asarray(pos_entry)),
                              "margin_used_usd": margin})
    positions["instrument"] = positions["instrument"].astype(str)
    o = list(zip(*order_rows, strict=True)) if order_rows else [[]] * 9
    orders = pd.DataFrame({"ts": ts[np.asarray(o[0], dtype=np.int64)], "instrument": name,
                           "ref": np.asarray(o[1], dtype=np.int64), "side": list(o[2]),
                           "status": list(o[3]), "size": np.asarray(o[4], dtype=float),
                           "price": np.asarray(o[5], dtype=float),
                           "filled": np.asarray(o[6], dtype=float),
                           "commission": np.asarray(o[7], dtype=float),
                           "reason": list(o[8])})
    t = list(zip(*trade_rows, strict=True)) if trade_rows else [[]] * 9
    trades = pd.DataFrame({"entry_ts": ts[np.asarray(t[0], dtype=np.int64)],
                           "exit_ts": ts[np.asarray(t[1], dtype=np.int64)],
                           "side": list(t[2]), "size": np.asarray(t[3], dtype=float),
                           "entry_price": np.asarray(t[4], dtype=float),
                           "bars": np.asarray(t[5], dtype=np.int64),
                           "pnl": np.asarray(t[6], dtype=float),
                           "pnl_net": np.asarray(t[7], dtype=float),
                           "commission": np.asarray(t[8], dtype=float)})
    g = list(zip(*ledger_rows, strict=True)) if ledger_rows else [[]] * 5
    ledger = pd.DataFrame({"ts": ts[np.asarray(g[0], dtype=np.int64)], "instrument": name,
                           "kind": list(g[1]), "qty": np.asarray(g[2], dtype=float),
                           "price": np.asarray(g[3], dtype=float),
                           "amount_usd": np.asarray(g[4], dtype=float)})
    ledger = ledger.astype({"instrument": str, "kind": str})
    return equity, orders, trades, ledger, positions, refusals
