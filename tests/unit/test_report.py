"""The reporting adapter: metrics against closed forms, tearsheet silent, offline, atomic."""

from __future__ import annotations

import json
import logging
import math
import socket
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from gammabt import report
from gammabt.plotting import QUANTSTATS_FONT, configure_matplotlib
from gammabt.report import (
    METRIC_KEYS,
    AmbiguousReturnsWarning,
    BenchmarkCoverageWarning,
    compare_metrics,
    compute_metrics,
    write_tearsheet,
)
from plumbing.errors import ConfigError, InputError

ANN = 365


def _days(n: int, start: str = "2022-01-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="D", tz="UTC")


@pytest.fixture
def noisy_returns() -> pd.Series:
    """400 days of N(0.1 %, 3 %) daily returns, seed 20240521."""
    rng = np.random.default_rng(20240521)
    return pd.Series(rng.normal(0.001, 0.03, 400), index=_days(400), name="strategy")


@pytest.fixture
def noisy_benchmark() -> pd.Series:
    """400 days of N(0.05 %, 3.5 %) daily returns, seed 7."""
    rng = np.random.default_rng(7)
    return pd.Series(rng.normal(0.0005, 0.035, 400), index=_days(400), name="buy_and_hold")


# --------------------------------------------------------------- closed forms


def test_constant_return_closed_forms():
    r, n = 0.002, 100
    m = compute_metrics(pd.Series(r, index=_days(n)))
    assert m["n_days"] == n and m["periods_per_year"] == ANN
    assert m["total_return"] == pytest.approx((1 + r) ** n - 1, rel=1e-12)
    # CAGR with 365-day years: years = n / 365, so (1 + r) ** 365 - 1.
    assert m["cagr"] == pytest.approx((1 + r) ** ANN - 1, rel=1e-10)
    assert m["volatility_ann"] == pytest.approx(0.0, abs=1e-15)
    assert m["sharpe"] is None  # mean / 0: undefined, not inf and not a float-noise 1e16
    assert m["sortino"] is None  # no losing day
    assert m["max_drawdown"] == 0.0
    assert m["calmar"] is None  # cagr / 0
    assert m["win_rate"] == 1.0
    assert m["best_day"] == m["worst_day"] == pytest.approx(r)


def test_volatility_sharpe_sortino_use_ddof1_and_365(noisy_returns):
    m = compute_metrics(noisy_returns)
    x = noisy_returns.to_numpy()
    std1 = x.std(ddof=1)
    assert m["volatility_ann"] == pytest.approx(std1 * math.sqrt(ANN), rel=1e-12)
    assert m["sharpe"] == pytest.approx(x.mean() / std1 * math.sqrt(ANN), rel=1e-12)
    # QuantStats really uses the sample std (ddof=1); the population one differs here.
    assert not np.isclose(m["sharpe"], x.mean() / x.std(ddof=0) * math.sqrt(ANN), rtol=1e-6)
    downside = math.sqrt((x[x < 0] ** 2).sum() / len(x))
    assert m["sortino"] == pytest.approx(x.mean() / downside * math.sqrt(ANN), rel=1e-12)
    total = np.prod(1 + x) - 1
    assert m["total_return"] == pytest.approx(total, rel=1e-12)
    assert m["cagr"] == pytest.approx((1 + total) ** (ANN / len(x)) - 1, rel=1e-10)
    assert m["win_rate"] == pytest.approx((x > 0).sum() / (x != 0).sum())
    assert m["best_day"] == x.max() and m["worst_day"] == x.min()


def test_periods_per_year_is_really_passed(noisy_returns):
    m365 = compute_metrics(noisy_returns)  # the default
    m252 = compute_metrics(noisy_returns, periods_per_year=252)
    assert m365["periods_per_year"] == 365 and m252["periods_per_year"] == 252
    ratio = math.sqrt(365 / 252)
    assert m365["sharpe"] == pytest.approx(m252["sharpe"] * ratio, rel=1e-12)
    assert m365["volatility_ann"] == pytest.approx(m252["volatility_ann"] * ratio, rel=1e-12)
    assert m365["sortino"] == pytest.approx(m252["sortino"] * ratio, rel=1e-12)
    total, n = m365["total_return"], len(noisy_returns)
    assert m365["cagr"] == pytest.approx((1 + total) ** (365 / n) - 1, rel=1e-10)
    assert m252["cagr"] == pytest.approx((1 + total) ** (252 / n) - 1, rel=1e-10)
    assert m365["cagr"] != pytest.approx(m252["cagr"], rel=1e-3)


def test_max_drawdown_and_calmar_by_hand():
    r = pd.Series([0.1, -0.2, 0.05, -0.5, 0.3], index=_days(5))
    m = compute_metrics(r)
    equity = np.cumprod(1 + r.to_numpy())  # 1.1, 0.88, 0.924, 0.462, 0.6006
    assert m["max_drawdown"] == pytest.approx(equity.min() / equity.max() - 1, rel=1e-12)
    assert m["max_drawdown"] == pytest.approx(-0.58, rel=1e-12)
    assert m["calmar"] == pytest.approx(m["cagr"] / 0.58, rel=1e-12)
    # A loss on the very first day counts from the starting equity (1.0).
    first = compute_metrics(pd.Series([-0.1, 0.05, 0.02], index=_days(3)))
    assert first["max_drawdown"] == pytest.approx(-0.1, rel=1e-12)


def test_daily_win_rate_ignores_flat_days():
    m = compute_metrics(pd.Series([0.01, 0.0, -0.01, 0.02, 0.0], index=_days(5)))
    assert m["win_rate"] == pytest.approx(2 / 3)
    assert compute_metrics(pd.Series(0.0, index=_days(5)))["win_rate"] is None


# ------------------------------------------------------------------ edge rows


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_one_day_do_not_crash(n, noisy_benchmark, recwarn):
    r = pd.Series([0.01] * n, index=_days(n), dtype="float64")
    m = compute_metrics(r, noisy_benchmark.iloc[:n], trades=pd.DataFrame({"pnl_net": []}),
                        orders=pd.DataFrame({"status": []}))
    assert list(m) == list(METRIC_KEYS)
    assert m["n_days"] == n
    for key in ("volatility_ann", "sharpe", "sortino", "beta", "alpha_ann", "r_squared",
                "information_ratio_daily", "benchmark_sharpe"):
        assert m[key] is None, key
    if n == 0:
        assert m["total_return"] is None and m["cagr"] is None
    else:
        assert m["total_return"] == pytest.approx(0.01)
        assert m["benchmark_total_return"] == pytest.approx(noisy_benchmark.iloc[0])
    assert m["n_trades"] == 0 and m["trade_win_rate"] is None and m["n_orders"] == 0
    assert json.dumps(m, allow_nan=False)
    assert not recwarn.list


def test_metrics_are_plain_json_safe_values(noisy_returns, noisy_benchmark):
    flat = pd.Series(0.0, index=_days(30))
    for m in (compute_metrics(noisy_returns, noisy_benchmark),
              compute_metrics(flat, flat, trades=pd.DataFrame({"pnl_net": [1.0, 2.0]})),
              compute_metrics(noisy_returns.iloc[:1])):
        json.dumps(m, allow_nan=False)  # raises on NaN / inf
        for key, value in m.items():
            assert type(value) in (int, float, type(None)), (key, type(value))


def test_time_zone_handling_and_no_mutation(noisy_returns, noisy_benchmark):
    before_r, before_b = noisy_returns.copy(), noisy_benchmark.copy()
    aware = compute_metrics(noisy_returns, noisy_benchmark)
    naive = compute_metrics(noisy_returns.tz_localize(None), noisy_benchmark.tz_localize(None))
    tokyo = compute_metrics(noisy_returns.tz_convert("Asia/Tokyo"),
                            noisy_benchmark.tz_convert("Asia/Tokyo"))
    assert aware == naive == tokyo
    pd.testing.assert_series_equal(noisy_returns, before_r)
    pd.testing.assert_series_equal(noisy_benchmark, before_b)
    assert str(noisy_returns.index.tz) == "UTC"


def test_nan_days_are_dropped(noisy_returns):
    gappy = noisy_returns.copy()
    gappy.iloc[[0, 10, 200]] = np.nan
    assert compute_metrics(gappy) == compute_metrics(gappy.dropna())
    assert compute_metrics(gappy)["n_days"] == len(noisy_returns) - 3


@pytest.mark.parametrize(("bad", "match"), [
    (pd.DataFrame({"r": [0.01, 0.02]}, index=_days(2)), "must be a pandas Series"),
    (pd.Series([0.01, 0.02]), "not dates"),
    (pd.Series(["a", "b"], index=_days(2)), "dtype"),
    (pd.Series([0.01, 0.02], index=_days(1).append(_days(1))), "duplicated date"),
    (pd.Series([0.01, 0.02], index=_days(2)[::-1]), "sort_index"),
    (pd.Series([0.01, np.inf], index=_days(2)), "not a simple return"),
    (pd.Series([0.01, -1.5], index=_days(2)), "not a simple return"),
])
def test_bad_returns_raise_input_error(bad, match):
    with pytest.raises(InputError, match=match):
        compute_metrics(bad)


@pytest.mark.parametrize("periods", [0, -365, 365.0, True, "365"])
def test_bad_periods_per_year(noisy_returns, periods):
    with pytest.raises(ConfigError, match="periods_per_year"):
        compute_metrics(noisy_returns, periods_per_year=periods)


def test_ambiguous_returns_warn_and_give_none():
    # QuantStats would read a series with no loss and a +150 % day as prices.
    r = pd.Series([0.0, 1.5, 0.2, 0.0], index=_days(4))
    with pytest.warns(AmbiguousReturnsWarning, match="simple returns"):
        m = compute_metrics(r)
    assert m["total_return"] == pytest.approx(2.5 * 1.2 - 1)
    assert m["sharpe"] is None and m["max_drawdown"] is None and m["cagr"] is None


# ------------------------------------------------------------------ benchmark


def test_benchmark_relative_closed_forms(noisy_benchmark, recwarn):
    a, beta = 0.0004, 1.5
    r = a + beta * noisy_benchmark
    m = compute_metrics(r, noisy_benchmark)
    b = noisy_benchmark.to_numpy()
    assert m["beta"] == pytest.approx(beta, rel=1e-10)
    assert m["alpha_ann"] == pytest.approx(a * ANN, rel=1e-8)
    assert m["r_squared"] == pytest.approx(1.0, rel=1e-12)
    diff = r.to_numpy() - b
    assert m["information_ratio_daily"] == pytest.approx(diff.mean() / diff.std(ddof=1),
                                                         rel=1e-12)
    assert m["benchmark_total_return"] == pytest.approx(np.prod(1 + b) - 1, rel=1e-12)
    assert m["benchmark_sharpe"] == pytest.approx(
        b.mean() / b.std(ddof=1) * math.sqrt(ANN), rel=1e-12)
    assert m["benchmark_volatility_ann"] == pytest.approx(b.std(ddof=1) * math.sqrt(ANN))
    assert not recwarn.list


def test_benchmark_on_common_dates_only(noisy_returns, noisy_benchmark):
    short = noisy_benchmark.iloc[50:]
    with pytest.warns(BenchmarkCoverageWarning, match="lacks 50"):
        m = compute_metrics(noisy_returns, short)
    expected = compute_metrics(noisy_returns.iloc[50:], short)
    assert m["benchmark_total_return"] == expected["benchmark_total_return"]
    assert m["beta"] == expected["beta"]
    assert m["total_return"] != expected["total_return"]  # the strategy keeps all its days
    with pytest.raises(InputError, match="share no date"):
        compute_metrics(noisy_returns, pd.Series(0.01, index=_days(5, "2030-01-01")))


def test_constant_benchmark_gives_no_beta(noisy_returns):
    m = compute_metrics(noisy_returns, pd.Series(0.0, index=noisy_returns.index))
    assert m["beta"] is None and m["alpha_ann"] is None and m["r_squared"] is None
    assert m["benchmark_sharpe"] is None and m["benchmark_total_return"] == 0.0


def test_no_benchmark_keys_are_none(noisy_returns):
    m = compute_metrics(noisy_returns)
    assert all(m[k] is None for k in report.BENCHMARK_KEYS)


# -------------------------------------------------------------- trades/orders


def test_trade_metrics():
    trades = pd.DataFrame({"pnl": [10.0, -5.0, 30.0, -20.0, 0.0],
                           "pnl_net": [9.0, -6.0, 29.0, -21.0, -1.0]})
    m = compute_metrics(pd.Series(0.01, index=_days(3)), trades=trades)
    net = trades["pnl_net"].to_numpy()  # net of commission is preferred
    assert m["n_trades"] == 5 and m["n_trades_won"] == 2 and m["n_trades_lost"] == 3
    assert m["trade_win_rate"] == pytest.approx(2 / 5)
    assert m["avg_trade_pnl"] == pytest.approx(net.mean())
    assert m["best_trade_pnl"] == 29.0 and m["worst_trade_pnl"] == -21.0
    assert m["profit_factor"] == pytest.approx(38.0 / 28.0)
    # Gross PnL when no net column; pyarrow tables are accepted.
    gross = compute_metrics(pd.Series(0.01, index=_days(3)),
                            trades=pa.Table.from_pandas(trades[["pnl"]]))
    assert gross["profit_factor"] == pytest.approx(40.0 / 25.0)
    # No losing trade: profit factor undefined (not inf).
    winners = compute_metrics(pd.Series(0.01, index=_days(3)),
                              trades=pd.DataFrame({"pnl_net": [1.0, 2.0]}))
    assert winners["profit_factor"] is None and winners["trade_win_rate"] == 1.0


def test_trade_and_order_tables_are_checked():
    r = pd.Series(0.01, index=_days(3))
    with pytest.raises(InputError, match="pnl_net"):
        compute_metrics(r, trades=pd.DataFrame({"profit": [1.0]}))
    with pytest.raises(InputError, match="not finite"):
        compute_metrics(r, trades=pd.DataFrame({"pnl_net": [1.0, np.nan]}))
    with pytest.raises(InputError, match="status"):
        compute_metrics(r, orders=pd.DataFrame({"state": ["completed"]}))
    m = compute_metrics(r)
    assert all(m[k] is None for k in report.TRADE_KEYS + report.ORDER_KEYS)


def test_order_counts():
    orders = pd.DataFrame({
        "ref": [1, 2, 3, 4, 5, 6, 7, 7],
        "status": ["completed", "Margin", "margin", "rejected", "canceled", "expired",
                   "submitted", " Completed "],
    })
    m = compute_metrics(pd.Series(0.01, index=_days(3)), orders=orders)
    assert m["n_orders"] == 7  # order 7 appears twice: its last state counts
    assert m["n_completed"] == 2
    assert m["n_rejected_margin"] == 2 and m["n_rejected_broker"] == 1
    assert m["n_rejected"] == 3
    assert m["n_canceled"] == 1 and m["n_expired"] == 1


# ------------------------------------------------------------------ compare


def test_compare_metrics_side_by_side(noisy_returns, noisy_benchmark):
    a = compute_metrics(noisy_returns, noisy_benchmark)
    b = compute_metrics(noisy_benchmark) | {"final_value": 123.0}
    table = compare_metrics({"gamma_flip": a, "buy_and_hold": b})
    assert list(table.columns) == ["gamma_flip", "buy_and_hold"]
    assert list(table.index) == list(METRIC_KEYS) + ["final_value"]
    assert table.loc["sharpe", "gamma_flip"] == a["sharpe"]
    assert table.loc["sharpe", "buy_and_hold"] == b["sharpe"]
    assert np.isnan(table.loc["beta", "buy_and_hold"])  # None -> NaN
    assert np.isnan(table.loc["final_value", "gamma_flip"])  # missing -> NaN
    assert table.dtypes.eq("float64").all()
    with pytest.raises(InputError, match="no runs"):
        compare_metrics({})
    with pytest.raises(InputError, match="not a metrics dict"):
        compare_metrics({"a": [1, 2]})


# ------------------------------------------------------------------ tearsheet


class _Page(HTMLParser):
    """Tags, title text and the metrics table rows of a tearsheet."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.open: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self.h1 = ""
        self._in_h1 = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in ("html", "head", "body", "table"):
            self.open.append(tag)
        self._in_h1 = self._in_h1 or tag == "h1"
        if tag == "tr":
            self._row = []
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("html", "head", "body", "table"):
            assert self.open and self.open[-1] == tag, f"unbalanced </{tag}>"
            self.open.pop()
        if tag == "h1":
            self._in_h1 = False
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._in_h1:
            self.h1 += data
        if self._cell is not None:
            self._cell.append(data)


def test_tearsheet_is_complete_silent_and_offline(tmp_path, monkeypatch, capsys, caplog,
                                                  recwarn, noisy_returns, noisy_benchmark):
    import quantstats as qs
    import yfinance

    calls: list[str] = []

    def refuse(name):
        def fail(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} called: the tearsheet must not download anything")
        return fail

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(yfinance, "download", refuse("yfinance.download"))
    monkeypatch.setattr(qs.utils, "download_returns", refuse("qs.utils.download_returns"))
    monkeypatch.setattr("webbrowser.open", refuse("webbrowser.open"))
    caplog.set_level(logging.WARNING)

    title = "gamma_flip <BTC> run"
    path = write_tearsheet(noisy_returns, noisy_benchmark, tmp_path / "sub" / "tearsheet.html",
                           title=title)

    assert path == tmp_path / "sub" / "tearsheet.html" and path.is_file()
    assert calls == []
    out, err = capsys.readouterr()
    assert "findfont" not in err and "findfont" not in out and "findfont" not in caplog.text
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [str(w.message) for w in recwarn.list] == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["tearsheet.html"]  # no temp left

    text = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    page.close()
    assert page.open == []  # html/head/body/table all closed
    assert {"html", "head", "body", "table", "svg"} <= set(page.tags)
    assert page.tags.count("svg") >= 10  # the charts, inline
    assert "gamma_flip <BTC> run" in page.h1  # escaped in the source, intact when parsed
    assert "gamma_flip &lt;BTC&gt; run" in text
    assert "Buy &amp; hold" in text and "Periods/Year: 365" in text
    assert "favicon" not in text and 'onload="save()"' not in text
    assert "\ufe6a" not in text and "CAGR%" in text  # no glyph the page's fonts lack

    # The tearsheet's numbers are the adapter's numbers (365 periods both sides).
    m = compute_metrics(noisy_returns, noisy_benchmark)
    rows = {row[0]: row[1:] for row in page.rows if row}
    assert rows["Metric"] == ["Buy & hold", "Strategy"]
    bench_sharpe, strat_sharpe = (float(v) for v in rows["Sharpe"])
    assert strat_sharpe == pytest.approx(m["sharpe"], abs=0.006)
    assert bench_sharpe == pytest.approx(m["benchmark_sharpe"], abs=0.006)


def test_arial_resolves_instead_of_being_silenced():
    from matplotlib import font_manager

    target = configure_matplotlib()
    found = font_manager.fontManager.findfont(
        font_manager.FontProperties(family=QUANTSTATS_FONT), fallback_to_default=False)
    assert Path(found).is_file()
    assert target in {e.name for e in font_manager.fontManager.ttflist}
    logger = logging.getLogger("matplotlib.font_manager")
    assert not logger.disabled and logger.level in (logging.NOTSET, logging.WARNING)


def test_tearsheet_of_a_strategy_that_never_traded(tmp_path, noisy_benchmark, recwarn):
    import quantstats as qs

    original = qs.stats.r_squared
    flat = pd.Series(0.0, index=noisy_benchmark.index[:60])
    path = write_tearsheet(flat, noisy_benchmark.iloc[:60], tmp_path / "t.html", title="flat")
    assert "Strategy" in path.read_text(encoding="utf-8")
    assert qs.stats.r_squared is original  # the guard is undone
    assert [str(w.message) for w in recwarn.list] == []


def _failing_html(*args, output, **kwargs):
    Path(output).write_text("<html><body>half a page")
    raise RuntimeError("renderer crashed mid-write")


def test_failed_write_leaves_no_file(tmp_path, monkeypatch, noisy_returns, noisy_benchmark):
    import quantstats as qs

    monkeypatch.setattr(qs.reports, "html", _failing_html)
    target = tmp_path / "tearsheet.html"
    with pytest.raises(RuntimeError, match="mid-write"):
        write_tearsheet(noisy_returns, noisy_benchmark, target, title="x")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_tearsheet(tmp_path, monkeypatch, noisy_returns):
    import quantstats as qs

    target = tmp_path / "tearsheet.html"
    target.write_text("previous tearsheet")
    monkeypatch.setattr(qs.reports, "html", _failing_html)
    with pytest.raises(RuntimeError):
        write_tearsheet(noisy_returns, None, target, title="x")
    assert target.read_text() == "previous tearsheet"
    assert [p.name for p in tmp_path.iterdir()] == ["tearsheet.html"]


def test_ticker_benchmark_is_refused(tmp_path, noisy_returns):
    # QuantStats would download a ticker; the adapter only takes return series.
    with pytest.raises(InputError, match="must be a pandas Series"):
        write_tearsheet(noisy_returns, "BTC-USD", tmp_path / "t.html", title="x")
    with pytest.raises(InputError, match="must be a pandas Series"):
        compute_metrics(noisy_returns, "BTC-USD")
    assert list(tmp_path.iterdir()) == []


def test_tearsheet_needs_two_days(tmp_path, noisy_returns):
    with pytest.raises(InputError, match="at least two"):
        write_tearsheet(noisy_returns.iloc[:1], None, tmp_path / "t.html", title="x")
    with pytest.raises(ConfigError):
        write_tearsheet(noisy_returns, None, tmp_path / "t.html", title="x",
                        periods_per_year=0)
    assert list(tmp_path.iterdir()) == []
