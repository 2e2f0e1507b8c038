"""Barrier book in the gamma summary (separate and combined columns, the combined flip),
and the barrier file loader's errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feeds.barriers import load_barriers
from indicators import barrier as br
from indicators import gamma
from plumbing.errors import DataError
from tests.unit.test_gamma import make_chain


@pytest.fixture(scope="module")
def market() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A 4-snapshot hourly chain, bars closing exactly at its snapshots at its spots,
    and a book of down-and-in puts (dealers long) with a knock-out put (dealers short)."""
    chain = make_chain(3, n_snap=4)
    s = gamma.summarize(chain)
    close_ts = s["ts"]
    spot = s["spot"].to_numpy()
    bars = pd.DataFrame({"ts": close_ts - pd.Timedelta("1h"), "open": spot,
                         "high": spot * 1.002, "low": spot * 0.998, "close": spot,
                         "volume": 1.0})
    exp = pd.Timestamp("2024-04-26 08:00", tz="UTC")
    book = pd.DataFrame({
        "ts": pd.to_datetime(["2024-03-01 08:00", "2024-03-01 08:00", "2024-03-01 10:30"],
                             utc=True),
        "type": ["down_in_put", "down_out_put", "down_in_put"],
        "strike": [38_000.0, 40_000.0, 36_000.0], "barrier": [34_000.0, 36_000.0, 32_000.0],
        "expiry": [exp, exp, exp], "notional": [3_000.0, 2_000.0, 4_000.0],
        "dealer_side": [1.0, -1.0, 1.0]})
    return chain, bars, book


def test_book_columns_match_the_per_bar_book(market) -> None:
    chain, bars, book = market
    s = gamma.summarize(chain)
    out = br.summary_with_book(s, chain, book, bars, iv=0.6, include=False)
    lines, _ = br.barrier_book(book, bars, iv=0.6)
    np.testing.assert_allclose(out["barrier_gex"], lines["barrier_gex"], rtol=1e-12)
    np.testing.assert_allclose(out["barrier_vanna"], lines["barrier_vanna"], rtol=1e-12)
    np.testing.assert_allclose(out["gex_total"], s["gex"] + lines["barrier_gex"], rtol=1e-12)
    np.testing.assert_allclose(out["vanna_total"], s["vanna"] + lines["barrier_vanna"],
                               rtol=1e-12)
    # include=False: the options' own flip, GEX and regime are untouched
    pd.testing.assert_series_equal(out["gamma_flip"], s["gamma_flip"])
    pd.testing.assert_series_equal(out["gex"], s["gex"])
    assert (np.abs(out["barrier_gex"]) > 0).all()


def test_combined_flip_is_a_zero_of_the_combined_profile(market) -> None:
    chain, bars, book = market
    s = gamma.summarize(chain)
    out = br.summary_with_book(s, chain, book, bars, iv=0.6)
    assert (out["regime"] == np.sign(out["gex_total"])).all()
    flip = out["gamma_flip"].to_numpy()
    has = np.isfinite(flip)
    assert has.sum() >= 3
    # where there is none, the combined profile keeps one sign over the whole span
    xs = np.linspace(0.5, 1.5, 201)[None, :].repeat(len(out), axis=0)
    spot = out["spot"].to_numpy()
    opt, _ = gamma.gex_profile_at(chain, xs)
    whole = opt + br.book_gex_profile(book, bars, out["ts"], spot, xs, iv=0.6)
    assert (np.abs(np.diff(np.sign(whole[~has]), axis=1)) < 2).all()
    assert not np.allclose(flip[has], s["gamma_flip"][has], rtol=1e-3)  # the book moves it
    flip, spot, out = flip[has], spot[has], out[has]
    x = (flip / spot)[:, None] * np.array([1 - 1e-4, 1.0, 1 + 1e-4])[None, :]
    opt, _ = gamma.gex_profile_at(chain, _full(x, has))
    opt = opt[has]
    tot = opt + br.book_gex_profile(book, bars, out["ts"], spot, x, iv=0.6)
    assert (np.sign(tot[:, 0]) * np.sign(tot[:, 2]) < 0).all()  # a sign change at the flip
    gross = np.abs(tot[:, [0, 2]]).max(axis=1)
    assert (np.abs(tot[:, 1]) < 0.02 * gross).all()
    # an empty book gives back the options' flip (same definition, finer bracket)
    none = br.summary_with_book(s, chain, book.iloc[:0], bars, iv=0.6)
    np.testing.assert_allclose(none["gamma_flip"], s["gamma_flip"], rtol=2e-5)


def _full(x: np.ndarray, has: np.ndarray) -> np.ndarray:
    out = np.ones((has.size, x.shape[1]))
    out[has] = x
    return out


def test_gex_profile_at_matches_the_profile(market) -> None:
    chain, _, _ = market
    levels = np.array([0.7, 0.95, 1.0, 1.2])
    prof = gamma.gex_profile(chain, levels=levels)["gex"].to_numpy().reshape(-1, 4)
    at, spot = gamma.gex_profile_at(chain, np.tile(levels, (4, 1)))
    np.testing.assert_allclose(at, prof, rtol=1e-12)
    np.testing.assert_allclose(spot, gamma.summarize(chain)["spot"], rtol=1e-15)


HEADER = "ts,type,strike,barrier,expiry,notional,dealer_side,iv\n"
GOOD = "2026-02-03T00:00:00Z,down_in_put,70000,64000,2026-03-27T08:00:00Z,500,1,0.55\n"


def write(tmp_path, text: str, name: str = "b.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_loader_reads_the_canonical_file(tmp_path) -> None:
    t = load_barriers(write(tmp_path, HEADER + GOOD + GOOD.replace("down_in_put", "Up_Out_Call")
                            .replace("64000", "80000").replace(",1,0.55", ",-1,")))
    df = t.to_pandas()
    assert list(df["type"]) == ["down_in_put", "up_out_call"]
    assert str(df["ts"].dtype) == "datetime64[us, UTC]"
    assert df["iv"].iloc[0] == 0.55 and np.isnan(df["iv"].iloc[1])


@pytest.mark.parametrize(("row", "column", "message"), [
    (GOOD.replace("down_in_put", "down_in_puts"), "type", "did you mean 'down_in_put'"),
    (GOOD.replace(",500,1,", ",500,2,"), "dealer_side", r"not \+1 or -1"),
    (GOOD.replace("2026-03-27T08:00:00Z", "2026-02-01T08:00:00Z"), "expiry", "not after ts"),
    (GOOD.replace(",500,", ",-5,"), "notional", "out of range"),
    (GOOD.replace("0.55", "55"), "iv", "percent"),
    (GOOD.replace("down_in_put,70000,64000", "down_out_put,60000,64000"), "barrier",
     "worthless"),
    (GOOD.replace("2026-02-03T00:00:00Z", "2026-02-03 00:00"), "ts", "naive"),
])
def test_loader_errors_name_row_and_column(tmp_path, row: str, column: str,
                                           message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        load_barriers(write(tmp_path, HEADER + GOOD + row))
    text = str(err.value)
    assert "b.csv" in text and column in text
    if column != "ts":
        assert "row 1" in text


def test_loader_missing_column(tmp_path) -> None:
    with pytest.raises(DataError, match=r"missing column\(s\) \['dealer_side'\]"):
        load_barriers(write(tmp_path, "ts,type,strike,barrier,expiry,notional\n"
                            "2026-02-03T00:00:00Z,down_in_put,1,1,2026-03-01T00:00:00Z,1\n"))
