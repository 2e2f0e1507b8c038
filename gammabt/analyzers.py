"""Backtrader analyzers that record a run as plain tables (equity, orders, trades)."""

from __future__ import annotations

import backtrader as bt
import pandas as pd

_STATUS = {bt.Order.Completed: "completed", bt.Order.Canceled: "canceled",
           bt.Order.Margin: "margin", bt.Order.Rejected: "rejected",
           bt.Order.Expired: "expired"}


class EquityCurve(bt.Analyzer):
    """Portfolio value, cash and position size at every bar close."""

    def start(self) -> None:
        self.rows: list[tuple] = []

    def next(self) -> None:
        broker, data = self.strategy.broker, self.strategy.datas[0]
        self.rows.append((data.datetime.datetime(0), broker.getvalue(), broker.getcash(),
                          self.strategy.getposition(data).size, data.close[0]))

    def get_analysis(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=["ts", "value", "cash", "position", "close"])
        frame["ts"] = pd.to_datetime(frame["ts"]).dt.tz_localize("UTC").dt.as_unit("us")
        return frame


class PositionLog(bt.Analyzer):
    """Every open position at every bar close: ``ts, instrument, qty, mark, notional,
    unrealized_usd, margin_used_usd`` (bars without a position in an instrument have no
    row). Needs the :class:`gammabt.broker.AccountBroker`."""

    COLUMNS = ("ts", "instrument", "qty", "mark", "notional", "unrealized_usd",
               "margin_used_usd")

    def start(self) -> None:
        self.rows: list[tuple] = []

    def next(self) -> None:
        broker = self.strategy.broker
        for data, pos in broker.positions.items():
            if pos.size:
                mark = data.close[0]
                self.rows.append((data.datetime[0], data._name, pos.size, mark,
                                  pos.size * mark, pos.size * (mark - pos.price),
                                  broker.margin_used(data)))

    def get_analysis(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=list(self.COLUMNS))
        frame["ts"] = _utc([bt.num2date(t) for t in frame["ts"]])
        return frame.astype({"instrument": str, "qty": float, "mark": float,
                             "notional": float, "unrealized_usd": float,
                             "margin_used_usd": float})


def _utc(values) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values))).dt.tz_localize("UTC").dt.as_unit("us")


class OrderLog(bt.Analyzer):
    """Every order's final state: completed, canceled, margin (rejected for cash) ..."""

    def start(self) -> None:
        self.rows: list[dict] = []

    def notify_order(self, order: bt.Order) -> None:
        if order.status not in _STATUS:
            return
        data = order.data
        self.rows.append({
            "ts": data.datetime.datetime(0),
            "instrument": data._name,
            "ref": order.ref,
            "side": "buy" if order.isbuy() else "sell",
            "status": _STATUS[order.status],
            "size": order.created.size,
            "price": order.executed.price if order.status == order.Completed else float("nan"),
            "filled": order.executed.size,
            "commission": order.executed.comm,
            "value": order.executed.value,
            "reason": order.info.get("refused") or order.info.get("reason") or "",
        })

    def get_analysis(self) -> pd.DataFrame:
        columns = ["ts", "instrument", "ref", "side", "status", "size", "price", "filled",
                   "commission", "value", "reason"]
        frame = pd.DataFrame(self.rows, columns=columns)
        frame["ts"] = pd.to_datetime(frame["ts"]).dt.tz_localize("UTC").dt.as_unit("us")
        return frame


class TradeLog(bt.Analyzer):
    """Closed round trips with entry/exit time, size, gross and net PnL (USD)."""

    def start(self) -> None:
        self.rows: list[dict] = []
        self.peak_size: dict[int, float] = {}

    def notify_trade(self, trade: bt.Trade) -> None:
        peak = max(self.peak_size.get(trade.ref, 0.0), abs(trade.size))
        self.peak_size[trade.ref] = peak
        if not trade.isclosed:
            return
        opened = self.peak_size.pop(trade.ref)
        self.rows.append({
            "entry_ts": bt.num2date(trade.dtopen),
            "exit_ts": bt.num2date(trade.dtclose),
            "side": "long" if trade.long else "short",
            "size": opened,
            "entry_price": trade.price,
            "bars": trade.barlen,
            "pnl": trade.pnl,
            "pnl_net": trade.pnlcomm,
            "commission": trade.commission,
        })

    def get_analysis(self) -> pd.DataFrame:
        columns = ["entry_ts", "exit_ts", "side", "size", "entry_price", "bars", "pnl",
                   "pnl_net", "commission"]
        frame = pd.DataFrame(self.rows, columns=columns)
        for col in ("entry_ts", "exit_ts"):
            frame[col] = pd.to_datetime(frame[col]).dt.tz_localize("UTC").dt.as_unit("us")
        return frame
