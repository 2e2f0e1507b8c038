"""The liquidation-map estimator against the simulator's true liquidations.

The simulator (``feeds.synthetic``) keeps every leveraged position at its true
liquidation level and records each forced close (``Market.liquidations``). The map is
estimated from what a user would have, bars and open interest, with the default
parameters (whose leverage mix differs from the simulator's on purpose) and scored by
:func:`indicators.liquidation.cluster_hit_rate`: the USD share of true liquidations
within a tolerance of a cluster predicted one bar before, against the same number of
levels spread evenly (``uniform``) or at random over the same price range.

Measured (``calm``, 30 days, hourly, burn-in 72 bars, seeds 0..5, OI mode) on the preset
calibrated to real hourly BTC (fat-tailed news, see feeds/scenarios/calm.toml): at 0.25%
tolerance hit rate 0.35..0.41 against 0.06..0.25 (uniform) and 0.15..0.25 (random); at
0.5% 0.50..0.57 against 0.17..0.59 and 0.26..0.42: with fatter tails, price jumps past
clusters and evenly spread levels catch up already at 0.5% (seed 2 loses there). Before
that calibration (thinner tails) the map still led at 0.5% by 1.25x or more. At 1% and
wider, evenly spread levels cover most of the range and the advantage fades.
"""

from __future__ import annotations

import contextlib
import io

import pytest

from indicators.liquidation import cluster_hit_rate, estimate_liq_map


@pytest.fixture(scope="module")
def market():
    from feeds import synthetic
    with contextlib.redirect_stdout(io.StringIO()):
        return synthetic.simulate("calm", days=30, seed=0)


def test_clusters_beat_naive_levels(market) -> None:
    m = estimate_liq_map(market.bars, oi=market.perp_oi)
    tight = cluster_hit_rate(m, market.liquidations, tol_frac=0.0025, burn_in=72)
    loose = cluster_hit_rate(m, market.liquidations, tol_frac=0.005, burn_in=72)
    assert tight["n_events"] > 100 and tight["usd"] > 1e8
    assert tight["hit_rate"] > 0.25
    assert tight["hit_rate"] > 1.5 * max(tight["uniform_baseline"], tight["random_baseline"])
    assert loose["hit_rate"] > 0.40
    # at 0.5% the map no longer leads clearly on the calibrated market (see the module
    # docstring): it must still be at least as good as either baseline on this seed
    assert loose["hit_rate"] >= max(loose["uniform_baseline"], loose["random_baseline"])


def test_true_events_replace_the_estimate(market) -> None:
    est = estimate_liq_map(market.bars, oi=market.perp_oi)
    obs = estimate_liq_map(market.bars, oi=market.perp_oi, liquidations=market.liquidations)
    liq = market.liquidations.to_pandas()
    realized = obs.lines["realized_long_usd"] + obs.lines["realized_short_usd"]
    assert realized.sum() == pytest.approx(float((liq["price"] * liq["size"]).sum()))
    assert est.lines["realized_long_usd"].isna().all()
    # the observed sizes, not the map's, explain OI drops: fewer voluntary closes are
    # inferred, so the map keeps more at risk (the events lie inside the bars' ranges)
    assert obs.lines["long_usd"].iloc[-1] >= est.lines["long_usd"].iloc[-1]
    assert obs.lines["short_usd"].iloc[-1] >= est.lines["short_usd"].iloc[-1]
