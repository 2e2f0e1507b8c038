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
            "ref": order.ref,
            "side": "buy" if order.isbuy() else "sell",
            "status": _STATUS[order.status],
            "size": order.created.size,
            "price": order.executed.price if order.status == order.Completed else float("nan"),
            "filled": order.executed.size,
            "commission": order.executed.comm,
            "value": order.executed.value,
        })

    def get_analysis(self) -> pd.DataFrame:
        columns = ["ts", "ref", "side", "status", "size", "price", "filled", "commission",
                   "value"]
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
