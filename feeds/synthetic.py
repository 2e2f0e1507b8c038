"""Agent-based BTC market simulator with dealer-hedging feedback (the default market).

``simulate(scenario, days=, freq=, chain_freq=, seed=)`` returns a :class:`Market` of
canonical tables (``feeds.schema``) plus the ground truth behind them: the true dealer
gamma at every bar and every liquidation. Same seed, same bytes. Scenarios are TOML
presets in ``feeds/scenarios/`` (every key documented in ``_defaults.toml``); a path to
your own TOML works too.

Time
----
Bars of ``freq`` (>= 1 minute) are split into ``n_sub = round(freq / sim.step_minutes)``
internal steps of ``dt`` (10 minutes by default; a 1-minute bar is one step). Each
step draws the agents' market orders, moves the price, then updates the books. A bar's
OHLC comes from its steps: open and close are step boundaries; high and low are the
maxima/minima of a Brownian bridge drawn inside every step (exact law of the extremes
of a bridge from ``a`` to ``b`` with variance ``s^2``:
``ln H = (a + b + sqrt((b - a)^2 - 2 s^2 ln U)) / 2``, U uniform), so the same intra-step
path drives the bars and the liquidation triggers.

Price formation (units: BTC of net market buying, log price)
------------------------------------------------------------
::

    r = ln(S[t+dt] / S[t]) = (X / L  +  sigma_info * a_t * eps_t  +  mu dt) / m
    m = max(1 + G S / L, 1 / max_amplification)
    L = depth_btc * health_t

- ``X``: the sum of the agents' market orders below (BTC, + = buy).
- ``L``: market depth, the BTC that moves ln S by 1 (150,000 BTC -> 1,500 BTC per 1%).
- ``sigma_info * a_t * eps_t``: exogenous news (quotes move without trading);
  ``eps`` Student-t (``tail_df``) with unit variance; ``a_t`` an activity factor,
  ``ln a`` an AR(1) (``activity_vol``, ``activity_halflife_hours``): volatility clusters.
- ``G``: the dealers' net gamma d(delta)/dS in BTC per USD. Dealers hedge the move
  itself: their order is ``H = -G dS = -G S r`` BTC, so ``r = (X + H) / L + news`` solves
  to the division by ``m``. Short gamma (G < 0) gives m < 1 (moves amplified, hedges
  trade *with* the move); long gamma m > 1 (damped, hedges trade *against* it). The
  cap ``max_amplification`` keeps effective depth positive.
- Each step's log return is clipped to ``+-max_step_return`` (a price band).

Agents (flows in BTC per step, + = buy)
---------------------------------------
Noise traders
    ``q = depth_btc * noise_flow_vol * sqrt(dt) * a_t * z_t`` (Student-t ``z``): zero-mean
    flow with fat tails; its impact grows when depth thins.
Spot ETFs
    A daily AR(1) series in USD (``etf.mean_usd_day``, ``vol_usd_day``, ``ar1``) plus
    scenario shocks (``[[etf.shocks]]``), executed during US hours (14:30-21:00 UTC),
    converted to BTC at the current price.
Dealers (option market makers)
    Hold the other side of the customers' option book and delta-hedge every step:
    hedge order = minus the change of their option delta. Three parts: (1) the price
    move, ``-G S r``, inside the impact equation above; (2) everything else in the change
    of delta over the step (convexity, charm as time passes, vanna as IV moves),
    executed in the next step; (3) changes of the book: customers' trades (hourly) and
    the unwinding of hedges of options settled at 08:00 (spread over ``settle_hours``).
    Delta and gamma are Black-76 on each pair's forward ``F = S (1 + b(T) T)`` with the
    smile IV, exactly the conventions of ``indicators.gamma``: true
    ``dealer_gex_usd = G S^2 * 0.01 = sum_i pos_i gamma_i F_i^2 * 0.01`` (USD per 1% move).
Option customers
    Background open interest per (expiry, strike, right) relaxes toward a target
    (half-life ``oi_halflife_days``) centred on the current forward: total ``oi_btc``,
    expiry weight ~ ``T^oi_tenor_power``, a Gaussian in standardized moneyness
    ``z = ln(K/S) / (iv sqrt T)`` of width ``oi_width``, calls out of the money above spot
    and puts below (logistic of slope ``otm_bias``); the put target is multiplied by
    ``1 + put_demand_beta * drawdown`` (drawdown from the ``drawdown_days`` maximum):
    customers buy protection after falls. Dealers take side ``dealers.call_sign`` /
    ``put_sign`` (default +1 / -1: long calls, short puts, the SqueezeMetrics
    convention). Scenario ``[[options.clusters]]`` add fixed blocks at a strike with an
    explicit dealer sign (held to expiry; ``day > 0`` = a customer trade on that day).
    Listing: Deribit-like expiries at 08:00 UTC (``daily`` next days, ``weekly`` Fridays,
    ``monthly`` and ``quarterly`` last Fridays), about ``n_options`` rows per snapshot,
    round strikes over +-3 standard deviations; expired options roll off at 08:00.
Implied volatility
    ``atm_short = iv_base + iv_rv_beta (RV - iv_base) + shock jumps``, RV an EWMA of
    squared returns (``rv_halflife_hours``); ``atm(T) = iv_base + (atm_short - iv_base)
    exp(-T / iv_term_days)``; smile ``iv = atm (1 + skew z + curvature z^2)``, z clipped.
Leveraged perp traders
    Open ``open_btc_day * a_t`` BTC a day at the current price, long with probability
    ``long_share + momentum_beta * (1-day log return)`` (trend chasing), split over the
    ``leverage`` mix; each position closes voluntarily with half-life
    ``hold_halflife_days``. A linear perp opened at EP with leverage L is liquidated at
    ``EP (1 - 1/L) / (1 - MMR)`` (long) or ``EP (1 + 1/L) / (1 + MMR)`` (short): when the
    intra-step low (high) crosses it, the position becomes a forced market order in the
    next step, which can trigger the next levels (a cascade). Levels are kept on a 0.1%
    log-price grid. ``[[perps.stacks]]`` add blocks of positions opened before the start
    (or entering the book on a given day, entries relative to the spot then).
    Perp OI = ``base_oi_btc`` (unlevered counterparties) + leveraged longs + shorts.
    Premium = AR(1) noise + ``premium_imbalance * (long - short) / (long + short + base)``;
    funding every 8 h (00/08/16 UTC): ``P + clamp(I - P, +-funding_clamp_8h)``, P the mean
    premium since the last payment, capped at ``funding_cap_8h``.
Basis traders
    Hold ``B`` BTC long spot / short dated futures (``basis.book_btc`` at rest). The
    near-month annualized basis relaxes (``halflife_hours``) toward
    ``base_ann + funding_beta (funding APR - interest APR) + book_beta (1 - B / book_btc)``:
    their futures selling compresses it. They add to the book when the basis pays more
    than ``base_ann`` (``dB/dt = rebuild_per_day (b - base_ann) book_btc``), buying spot.
    A stress shock forces them to close ``basis_unwind_frac`` of the book within
    ``hours``: they sell spot and buy back futures, so spot falls, the basis jumps and
    futures OI (= B + other directional OI) collapses, then rebuilds as the wide basis
    attracts new basis trades. Futures of expiry T trade at ``S (1 + b(T) T)``,
    ``b(T) = b + term_slope (T - 30 d)``, so ``(F / S - 1) * 365 / DTE = b(T)``.
Market makers
    Absorb the net flow (inventory ``I -= X + H``, laid off with half-life
    ``mm_inventory_halflife_hours``). A loss on their inventory cuts depth:
    ``health -= mm_loss_sensitivity * loss / mm_capital_usd``; depth recovers toward full
    with half-life ``mm_recovery_halflife_hours`` and never falls below ``mm_min_depth``.
Stress shocks (``[[shocks]]``)
    At ``day``: depth hit, IV jump, forced basis unwind, perp de-leveraging, extra spot
    selling, customers buying puts (see ``_defaults.toml``).

Outputs (:class:`Market`)
-------------------------
``bars``, ``perp`` (BARS), ``chain`` (CHAIN, hourly by default, with ``index_price`` =
spot, each row's forward and ``dealer_position``), ``perp_oi``, ``funding``,
``liquidations`` (ground truth: ts of the step end, side, level, BTC), ``futures``
(+ ``open_interest``), ``dealer_gamma`` (true ``dealer_gex_usd`` and ``net_gamma`` at
every bar open, ``regime``, ``hedge_flow_btc``, ``dealer_vanna_usd`` of the option book,
``barrier_gex_usd`` of the barrier book), ``flows`` (every agent's flow per bar and the
state: depth, basis book, IV, put demand) and, when the scenario has
``[[options.barriers]]``, ``barriers`` (BARRIERS: the dealers' barrier positions,
:mod:`feeds.sim.barriers`). Bars, dealer gamma, futures and perp
OI are stamped at the bar open ``ts`` and describe that instant; a chain snapshot at
``ts`` describes the same instant, so ``dealer_gamma`` and the chain line up.

Performance: the step loop is Python over time, numpy over the ~n_options/2 option
pairs and the level grid; a year of hourly bars with 800-option hourly chains takes
about 11 s and 1.4 GB peak memory here (``python -m bench simulator``).
"""

from __future__ import annotations

import copy
from typing import Any

from feeds.sim.config import list_scenarios, resolve
from feeds.sim.engine import make_grid, run, start_us_of
from feeds.sim.market import Market, load_market
from feeds.sim.output import build_tables
from plumbing.errors import ConfigError
from plumbing.timeconv import duration_us

__all__ = ["Market", "list_scenarios", "load_market", "simulate"]


def simulate(scenario: str = "calm", *, days: float = 30, freq: str = "1h",
             chain_freq: str = "1h", seed: int = 0, n_options: int | None = None,
             overrides: dict[str, Any] | None = None) -> Market:
    """Simulate a market and return its tables.

    Parameters
    ----------
    scenario
        Preset name (:func:`list_scenarios`) or a path to a TOML preset.
    days
        Length of the run in days (bars of ``freq`` that fit entirely).
    freq
        Bar frequency, a pandas duration >= ``"1min"`` ("1min", "15min", "1h", "4h", "1D").
    chain_freq
        Interval between option chain snapshots (``"1h"`` default).
    seed
        Seed of ``numpy.random.default_rng``; the same seed gives the same tables.
    n_options
        Target chain rows per snapshot (``options.n_options``, 800 by default).
    overrides
        Parameter patch over the preset: nested (``{"market": {"depth_btc": 2e5}}``) or
        dotted (``{"market.depth_btc": 2e5}``). Unknown keys raise ConfigError.

    Returns
    -------
    Market
        Canonical tables plus the ground truth; see the module docstring.

    Raises
    ------
    ConfigError
        Unknown scenario or key (with a "did you mean" hint), wrong types, a frequency
        below one minute, ``days`` shorter than one bar.

    Examples
    --------
    >>> from feeds.synthetic import simulate
    >>> m = simulate("gamma_squeeze_down", days=10, seed=3)
    >>> m.write("markets/squeeze-3")        # doctest: +SKIP
    """
    name, params = resolve(scenario, overrides)
    if n_options is not None:
        if int(n_options) < 20:
            raise ConfigError(f"n_options={n_options}", source="simulate", column="n_options",
                              expected=">= 20", fix="pass n_options=800 (or None)")
        params["options"]["n_options"] = int(n_options)
    freq_us = duration_us(freq, name="freq", source="simulate")
    chain_us = duration_us(chain_freq, name="chain_freq", source="simulate")
    grid = make_grid(start_us_of(params["sim"]["start"]), float(days), freq_us,
                     params["sim"]["step_minutes"])
    raw = run(params, grid, chain_us, int(seed))
    tables = build_tables(raw)
    meta = {"days": days, "freq": str(freq), "chain_freq": str(chain_freq),
            "n_options": params["options"]["n_options"], "n_sub": grid.n_sub,
            "step_seconds": grid.step_us / 1e6}
    return Market(**tables, scenario=name, seed=int(seed), params=copy.deepcopy(params),
                  meta=meta)
