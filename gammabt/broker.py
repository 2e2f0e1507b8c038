"""The account: Backtrader's broker extended the way a crypto exchange keeps a USD
cross-margin account (``../shared/DOMAIN.md`` section 4), in one place.

What Backtrader already does and is kept: order matching (market orders fill at the
next bar's open, slippage), position bookkeeping (average entry price), percentage
commissions through a ``CommInfoBase`` subclass (so trade ``pnlcomm`` stays right), and
spot cash (a buy debits ``qty * price``, a sale credits it; with ``shortcash`` a short
sale credits the proceeds and the holding is valued negative).

What this module adds:

- **Derivatives** (linear perpetuals and dated futures, quantity in BTC, USD margined):
  Backtrader's futures mode settles variation margin into cash every bar; here a fill
  moves cash only by the PnL it realizes on the part it closes (``qty * (price -
  entry)``) besides its fee, and the account value carries the unrealized PnL at mark.
- **Margin** (cross): an order that adds risk is accepted only when the account's
  equity, less the order's fee, covers the initial margin of every position after it
  (``|qty| * price / leverage`` per derivative, and per short spot position); a spot
  buy must also be paid from cash. Refused orders get Backtrader's ``Margin`` status.
- **Spot borrow**: selling more spot than is held is refused (``Rejected``) unless
  borrowing is enabled; a short spot position is charged ``borrow_apr`` on its notional
  every bar (kind ``borrow``).
- **Funding** at the perpetual's funding stamps: ``qty * mark * rate`` is paid (kind
  ``funding``; longs pay when the rate is positive).
- **Expiry**: a dated future still held on its settlement bar is closed at the
  settlement price (kind ``settlement``, no fee).
- **Own liquidation**: when equity at the bar's adverse extremes (low for longs, high
  for shorts) falls below the maintenance margin (``mmr * |qty| * price`` per margin
  position), every margin position is closed at the prices where equity equals
  maintenance margin, plus the liquidation fee on the notional (kind ``liquidation``).
  Prices are taken to move from the bar's open toward the adverse extremes along one
  straight path, so with one position this is the exchange's formula exactly. A
  deficit left after the fee (a gap through the level) is covered, as an exchange's
  insurance fund does: the account ends at zero, never below.
- **Fees**: taker (market orders) or maker (limit orders) in bps of notional, per
  instrument (kind ``fee``).
- **Ledger**: every cash movement is one row ``ts, instrument, kind, qty, price,
  amount_usd`` (``ts`` is the close time of the bar in which it happened), so that at
  every bar ``value = initial cash + sum(amount_usd) + unrealized PnL of derivatives at
  mark + spot holdings at price``.

Limits (documented, not modelled): no funding on dated futures; no maker rebates; the
liquidation path assumes every leg moves in a straight line from open to its adverse
extreme at once (pessimistic for hedged books); no partial liquidation; fills ignore
depth. Orders on a leg without a fresh price stay pending until a fresh price comes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import backtrader as bt
import pandas as pd

from feeds.legs import Leg
from plumbing.errors import ConfigError

KINDS = ("spot", "perp", "future", "front")
LEDGER_COLUMNS = ("ts", "instrument", "kind", "qty", "price", "amount_usd")
EPS = 1e-12


@dataclass(frozen=True, kw_only=True)
class Terms:
    """Trading terms of one instrument.

    Attributes
    ----------
    taker_bps, maker_bps
        Fees in basis points of notional: market orders pay taker, limit orders maker.
    leverage
        Initial margin is ``|qty| * price / leverage`` (derivatives, short spot; 3x for
        short spot by default, as on a crypto exchange's cross-margin account). Spot
        longs are never levered: they are paid from cash.
    mmr
        Maintenance margin rate: ``mmr * |qty| * price``.
    liquidation_fee_bps
        Charged on the notional closed by a liquidation.
    borrow_apr
        Spot only: annual rate charged on the notional of a short spot position.
    """

    taker_bps: float = 5.0
    maker_bps: float = 2.0
    leverage: float = 10.0
    mmr: float = 0.005
    liquidation_fee_bps: float = 50.0
    borrow_apr: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{f.name}={value!r}", column=f.name,
                                  expected="a finite number >= 0",
                                  fix=f"set {f.name} to e.g. {getattr(Terms, f.name)}")
        if self.leverage < 1 or self.mmr >= 1 / self.leverage:
            raise ConfigError(f"leverage={self.leverage}, mmr={self.mmr}", column="leverage",
                              expected="leverage >= 1 and mmr < 1 / leverage (else a new "
                                       "position is liquidated at once)",
                              fix="lower mmr or leverage")


DEFAULT_TERMS: dict[str, Terms] = {
    # spot longs are paid from cash; leverage and mmr apply to short (borrowed) spot
    "spot": Terms(leverage=3.0, mmr=0.1, liquidation_fee_bps=50.0, borrow_apr=0.10),
    "perp": Terms(),
    "future": Terms(),
    "front": Terms(),
}


def resolve_terms(overrides: Mapping[str, Mapping[str, Any]] | None = None, *,
                  taker_bps: float | None = None) -> dict[str, Terms]:
    """Terms per instrument kind: the defaults, the run's taker fee, then ``overrides``
    (``{"perp": {"taker_bps": 4}}``); unknown kinds or fields are a ConfigError."""
    out: dict[str, Terms] = {}
    names = {f.name for f in fields(Terms)}
    overrides = overrides or {}
    for kind in overrides:
        if kind not in KINDS:
            raise ConfigError(f"unknown instrument kind {kind!r} in terms", column="terms",
                              expected=f"one of {list(KINDS)}", fix="e.g. terms.perp.taker_bps")
    for kind, base in DEFAULT_TERMS.items():
        values = {f.name: getattr(base, f.name) for f in fields(Terms)}
        if taker_bps is not None:
            values["taker_bps"] = taker_bps
        for key, value in overrides.get(kind, {}).items():
            if key not in names:
                raise ConfigError(f"unknown term {kind}.{key}", column="terms",
                                  expected=f"one of {sorted(names)}", fix="check the spelling")
            values[key] = value
        out[kind] = Terms(**values)
    return out


class LegCommission(bt.CommInfoBase):
    """Fees and valuation of one leg for Backtrader's broker.

    Spot is stock-like. Derivatives cost no cash to open and are valued at 0 by
    Backtrader (the :class:`AccountBroker` adds their unrealized PnL and moves cash by
    realized PnL), with no per-bar variation margin. The fee rate depends on
    ``mode``, set by the broker around each execution.
    """

    params = (
        ("stocklike", True),
        ("commtype", bt.CommInfoBase.COMM_PERC),
        ("percabs", True),
        ("derivative", False),
        ("maker", 0.0),
        ("liquidation", 0.0),
    )

    mode = "taker"

    def _getcommission(self, size: float, price: float, pseudoexec: bool) -> float:
        rate = {"taker": self.p.commission, "maker": self.p.maker,
                "liquidation": self.p.liquidation, "settlement": 0.0}[self.mode]
        return abs(size) * price * rate

    def getsize(self, price: float, cash: float) -> float:
        return cash / price

    def getoperationcost(self, size: float, price: float) -> float:
        return 0.0 if self.p.derivative else abs(size) * price

    def getvaluesize(self, size: float, price: float) -> float:
        return 0.0 if self.p.derivative or size == 0 else size * price

    def getvalue(self, position: Any, price: float) -> float:
        return self.getvaluesize(position.size, price)

    def profitandloss(self, size: float, price: float, newprice: float) -> float:
        return 0.0 if size == 0 else size * (newprice - price)

    def cashadjust(self, size: float, price: float, newprice: float) -> float:
        return 0.0


def _previous(line: Any) -> float:
    """The line's value on the previous bar (NaN on the first)."""
    return line[-1] if len(line) > 1 else float("nan")


class AccountBroker(bt.brokers.BackBroker):
    """Backtrader's ``BackBroker`` keeping an exchange-style USD cross-margin account.

    Call :meth:`setup` before the run with the legs (by feed name) and their terms.
    Feeds must be :class:`feeds.legs.InstrumentFeed` (lines ``fresh, settle,
    funding_rate``).
    """

    def setup(self, legs: Mapping[str, tuple[Leg, Terms]], *, borrow: bool,
              bar_seconds: float) -> None:
        self.legs = dict(legs)
        self.borrow = borrow
        self.bar_years = bar_seconds / (365 * 86_400)
        self.ledger: list[tuple] = []
        self.refusals: Counter[str] = Counter()
        self.liquidations: list[dict[str, Any]] = []
        self._owner: Any = None
        self._mode: str | None = None
        for name, (leg, terms) in self.legs.items():
            self.addcommissioninfo(LegCommission(
                commission=terms.taker_bps / 1e4, maker=terms.maker_bps / 1e4,
                liquidation=terms.liquidation_fee_bps / 1e4,
                derivative=leg.kind in ("perp", "future", "front")), name=name)

    # -- state -----------------------------------------------------------------------

    def leg_of(self, data: Any) -> tuple[Leg, Terms]:
        return self.legs[data._name]

    def is_derivative(self, data: Any) -> bool:
        return self.legs[data._name][0].kind != "spot"

    def unrealized(self, data: Any, price: float | None = None) -> float:
        """Unrealized PnL (USD) of the leg's position at ``price`` (default: close)."""
        pos = self.positions[data]
        if not pos.size:
            return 0.0
        mark = data.close[0] if price is None else price
        return pos.size * (mark - pos.price)

    def margin_used(self, data: Any, size: float | None = None,
                    price: float | None = None) -> float:
        """Initial margin of a position (USD): derivatives and short spot."""
        size = self.positions[data].size if size is None else size
        price = data.close[0] if price is None else price
        if not size:
            return 0.0
        leg, terms = self.leg_of(data)
        if leg.kind == "spot" and size > 0:
            return 0.0
        return abs(size) * price / terms.leverage

    def _get_value(self, datas: Any = None, lever: bool = False) -> float:
        value = super()._get_value(datas=datas, lever=lever)
        if datas is not None:
            return value
        self._value += sum(self.unrealized(d) for d, p in self.positions.items()
                           if p.size and self.is_derivative(d))
        return self._value

    # -- orders ----------------------------------------------------------------------

    def submit(self, order: bt.Order, check: bool = True) -> bt.Order:
        self._owner = order.owner
        return super().submit(order, check=check)

    def check_submitted(self) -> None:
        """Accept or refuse new orders by the account's margin rules (in order)."""
        sizes = {d: p.size for d, p in self.positions.items()}
        cash = self.cash
        while self.submitted:
            order = self.submitted.popleft()
            if self._take_children(order) is None:
                continue
            data = order.data
            reason, cost = self._refusal(order, sizes, cash)
            if reason is None:
                sizes[data] = sizes.get(data, 0.0) + order.size
                cash -= cost
                self.submit_accept(order)
                continue
            self.refusals[reason] += 1
            order.addinfo(refused=reason)
            if reason in ("margin", "cash"):
                order.margin()
            else:
                order.reject(self)
            self.notify(order)
            self._ococheck(order)
            self._bracketize(order, cancel=True)

    def _refusal(self, order: bt.Order, sizes: dict[Any, float], cash: float,
                 ) -> tuple[str | None, float]:
        # Decided on what was known when the order was created (the previous bar's
        # close): the data has already moved to the bar the order may fill in.
        data = order.data
        leg, terms = self.leg_of(data)
        price = order.created.price
        if leg.kind == "front":
            return "not_tradable", 0.0
        if leg.kind == "future" and not _previous(data.dte) > 0:
            return "expired", 0.0
        if not math.isfinite(price) or price <= 0:
            return "no_price", 0.0
        s0 = sizes.get(data, 0.0)
        s1 = s0 + order.size
        if leg.kind == "spot" and s1 < -EPS and not self.borrow:
            return "short_without_borrow", 0.0
        if abs(s1) <= abs(s0) and s0 * s1 >= 0:
            return None, 0.0  # reduces risk: always accepted
        fee = abs(order.size) * price * terms.taker_bps / 1e4
        cost = fee
        if leg.kind == "spot" and s1 > 0:
            cost += (s1 - max(s0, 0.0)) * price
            if cost > cash:
                return "cash", 0.0
        after = dict(sizes)
        after[data] = s1
        margin = sum(self.margin_used(d, size=s, price=price if d is data
                                      else _previous(d.close))
                     for d, s in after.items() if s)
        if margin > (self.getvalue() - fee) * (1 + 1e-9):  # 1e-9: an exact fit passes
            return "margin", 0.0
        return None, cost

    def _try_exec(self, order: bt.Order) -> None:
        if order.data.fresh[0] < 0.5:
            return  # no price stamped in this bar: wait for a fresh one
        super()._try_exec(order)

    def _execute(self, order: bt.Order, ago: Any = None, price: float | None = None,
                 cash: float | None = None, position: Any = None, dtcoc: Any = None) -> Any:
        if ago is None or price is None:
            return super()._execute(order, ago=ago, price=price, cash=cash,
                                    position=position, dtcoc=dtcoc)
        data = order.data
        pos = self.positions[data]
        s0, cash0 = pos.size, self.cash
        comminfo = self.getcommissioninfo(data)
        comminfo.mode = self._mode or ("maker" if order.exectype == bt.Order.Limit
                                       else "taker")
        # Backtrader refuses an opening fill that leaves cash below zero. That is right
        # for spot; a derivative needs margin (checked on submission), not cash, so its
        # fill runs on temporarily lifted cash (only its fee and realized PnL move it).
        lift = 0.0
        if self.is_derivative(data):
            lift = max(0.0, comminfo._getcommission(order.executed.remsize, price, True)
                       - self.cash) + 1.0
        self.cash += lift
        try:
            super()._execute(order, ago=ago, price=price, cash=cash, position=position,
                             dtcoc=dtcoc)
        finally:
            self.cash -= lift
            qty = pos.size - s0
            fee = comminfo._getcommission(qty, price, False)
            comminfo.mode = "taker"
        if not qty:
            return None
        # with Backtrader's stock-like cash rules and a zero "value" for derivatives, the
        # cash moved by a fill is -qty * price for spot and the realized PnL for a
        # derivative, less the fee in both cases
        kind = self._mode or "fill"
        self._book(data, kind, qty, price, self.cash - cash0 + fee)
        if fee:
            self._book(data, "fee" if kind == "fill" else kind, qty, price, -fee)
        return None

    def _book(self, data: Any, kind: str, qty: float, price: float, amount: float) -> None:
        self.ledger.append((data.datetime[0], data._name, kind, qty, price, amount))

    def _force_close(self, data: Any, price: float, mode: str) -> None:
        """Close the leg's whole position now at ``price`` (liquidation, settlement)."""
        size = -self.positions[data].size
        cls = bt.order.BuyOrder if size > 0 else bt.order.SellOrder
        order = cls(owner=self._owner, data=data, size=abs(size), price=price,
                    exectype=bt.Order.Market, simulated=True)
        order.addinfo(reason=mode)
        self._ocoize(order, None)
        order.submit(self)
        order.accept(self)
        self.orders.append(order)
        self._mode = mode
        try:
            self._execute(order, ago=0, price=price)
        finally:
            self._mode = None

    # -- the bar ---------------------------------------------------------------------

    def next(self) -> None:
        super().next()  # accept/refuse new orders, fill at the open
        self._liquidate_if_due()
        for data, pos in list(self.positions.items()):
            if pos.size:
                self._carry(data, pos)
        self._get_value()

    def _carry(self, data: Any, pos: Any) -> None:
        leg, terms = self.leg_of(data)
        close = data.close[0]
        if leg.kind == "perp":
            rate = data.funding_rate[0]
            if rate:
                amount = -pos.size * close * rate
                self.cash += amount
                self._book(data, "funding", pos.size, close, amount)
        elif leg.kind == "spot" and pos.size < 0 and terms.borrow_apr:
            amount = pos.size * close * terms.borrow_apr * self.bar_years
            self.cash += amount
            self._book(data, "borrow", pos.size, close, amount)
        elif leg.kind == "future":
            settle = data.settle[0]
            if settle == settle:  # not NaN: this bar reaches the expiry
                self._force_close(data, settle, "settlement")

    def _liquidate_if_due(self) -> None:
        """Close every margin position if equity at the bar's adverse extremes falls
        below maintenance margin, at the prices where the two are equal."""
        held = [(d, p) for d, p in self.positions.items() if p.size]
        margin_legs = [(d, p) for d, p in held if self.is_derivative(d) or p.size < 0]
        if not margin_legs:
            return
        e0 = e1 = self.cash
        m0 = m1 = 0.0
        path: dict[Any, tuple[float, float]] = {}
        for data, pos in held:
            start = data.open[0]
            worst = data.low[0] if pos.size > 0 else data.high[0]
            path[data] = (start, worst)
            base = pos.price if self.is_derivative(data) else 0.0
            e0 += pos.size * (start - base)
            e1 += pos.size * (worst - base)
            if self.is_derivative(data) or pos.size < 0:
                mmr = self.leg_of(data)[1].mmr
                m0 += mmr * abs(pos.size) * start
                m1 += mmr * abs(pos.size) * worst
        if e1 >= m1:
            return
        x = 0.0 if e0 <= m0 else (e0 - m0) / ((e0 - m0) - (e1 - m1))
        closed = []
        for data, pos in margin_legs:
            start, worst = path[data]
            price = start + x * (worst - start)
            closed.append((data._name, pos.size, price))
            self._force_close(data, price, "liquidation")
        for order in list(self.pending):
            self.cancel(order)
        # an exchange's insurance fund takes a deficit left after a liquidation
        deficit = -self._get_value()
        if deficit > 0:
            self.cash += deficit
            self._book(margin_legs[0][0], "liquidation", 0.0, float("nan"), deficit)
        self.liquidations.append({"ts": held[0][0].datetime[0], "closed": closed})

    # -- output ----------------------------------------------------------------------

    def ledger_frame(self) -> pd.DataFrame:
        """The ledger as a DataFrame (``ts`` UTC, one row per cash movement)."""
        frame = pd.DataFrame(self.ledger, columns=list(LEDGER_COLUMNS))
        frame["ts"] = pd.to_datetime([bt.num2date(t) for t in frame["ts"]]
                                     if len(frame) else [], utc=True).as_unit("us")
        frame["kind"] = frame["kind"].astype(str)
        return frame.astype({"instrument": str, "qty": float, "price": float,
                             "amount_usd": float})
