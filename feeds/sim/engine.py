"""The step loop: agents' flows -> price impact -> books, one internal step at a time.

The loop runs in Python over time steps; every step is a handful of numpy operations
over the option pairs (about n_options / 2) and the liquidation-level grid, plus scalar
arithmetic for the other agents. The model and its equations are documented in
:mod:`feeds.synthetic`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from scipy.signal import lfilter

from feeds.sim.barriers import BarrierBook
from feeds.sim.calendar import US_PER_DAY, US_PER_YEAR, listed_expiries, to_us
from feeds.sim.options import OptionBook
from feeds.sim.perps import LeverageBook
from plumbing.errors import ConfigError

US_PER_MINUTE = 60_000_000
US_PER_HOUR = 60 * US_PER_MINUTE
LN2 = math.log(2.0)
EXPIRY_OFFSET = 8 * US_PER_HOUR  # options and futures expire at 08:00 UTC

#: Per-step flow components recorded (BTC, + = market buying), in this order.
FLOW_NAMES = ("noise", "etf", "dealer", "liquidation", "perp", "basis", "shock",
              "dealer_book")


@dataclass(frozen=True)
class Grid:
    """Time grid: bars of ``freq_us`` split into ``n_sub`` internal steps."""

    start_us: int
    freq_us: int
    n_bars: int
    n_sub: int

    @property
    def step_us(self) -> int:
        return self.freq_us // self.n_sub

    @property
    def n_steps(self) -> int:
        return self.n_bars * self.n_sub


def make_grid(start_us: int, days: float, freq_us: int, step_minutes: float) -> Grid:
    """Bars covering ``days`` at ``freq_us`` with sub-steps of about ``step_minutes``.

    Raises
    ------
    ConfigError
        If ``freq`` is below one minute or ``days`` too short for one bar.
    """
    if freq_us < US_PER_MINUTE:
        raise ConfigError(f"bar frequency of {freq_us / 1e6:g} s is too short",
                          source="simulate", column="freq", expected="at least 1 minute",
                          fix="pass freq='1min' or coarser")
    n_bars = int(days * US_PER_DAY // freq_us)
    if n_bars < 1:
        raise ConfigError(f"days={days} is shorter than one bar of the requested freq",
                          source="simulate", column="days",
                          expected="days * 86400 s >= freq", fix="increase days")
    target = max(1, round(freq_us / (step_minutes * US_PER_MINUTE)))
    n_sub = target
    while n_sub > 1 and freq_us % n_sub:
        n_sub -= 1
    return Grid(start_us, freq_us, n_bars, n_sub)


@dataclass
class Raw:
    """Everything the loop records, as arrays; turned into tables by ``output``."""

    grid: Grid
    spot_path: np.ndarray            # (n_steps + 1,) spot at step boundaries
    ln_high: np.ndarray              # (n_steps,) intra-step log high
    ln_low: np.ndarray
    prem_path: np.ndarray            # (n_steps + 1,) perp premium at step boundaries
    flows: np.ndarray                # (n_flows, n_steps) BTC per component
    volume: np.ndarray               # (n_steps,) spot volume, BTC
    perp_volume: np.ndarray
    bar: dict[str, np.ndarray]       # per-bar state at bar open
    funding_ts: list[int] = field(default_factory=list)
    funding_rate: list[float] = field(default_factory=list)
    liq_step: list[np.ndarray] = field(default_factory=list)
    liq_side: list[np.ndarray] = field(default_factory=list)
    liq_price: list[np.ndarray] = field(default_factory=list)
    liq_size: list[np.ndarray] = field(default_factory=list)
    fut: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    snaps: list[tuple[Any, ...]] = field(default_factory=list)
    expiry_names: list[str] = field(default_factory=list)
    etf_daily_usd: np.ndarray = field(default_factory=lambda: np.zeros(0))
    barriers: list[tuple[int, str, float, float, int, float, float]] = field(
        default_factory=list)  # every barrier position added: ts, type, K, H, expiry, N, side


def _std_t(rng: np.random.Generator, df: float, n: int) -> np.ndarray:
    if df <= 0:
        return rng.standard_normal(n)
    return rng.standard_t(df, n) / math.sqrt(df / (df - 2.0))


def _listed_futures(now_us: int, monthly: int, quarterly: int) -> list[int]:
    """Dated futures listed at ``now_us``: monthly and quarterly last Fridays."""
    a = listed_expiries(now_us, daily=0, weekly=0, monthly=monthly, quarterly=0)
    b = listed_expiries(now_us, daily=0, weekly=0, monthly=0, quarterly=quarterly)
    return sorted(set(a) | set(b))


def _etf_per_step(p: dict[str, Any], grid: Grid, rng: np.random.Generator,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Daily ETF flow series (USD/day) and its spread over the steps (USD/step)."""
    e = p["etf"]
    step = grid.step_us
    t = grid.start_us + step * np.arange(grid.n_steps, dtype=np.int64)
    day_idx = (t - grid.start_us) // US_PER_DAY
    n_days = int(day_idx[-1]) + 1
    # one draw per day, in order: a longer run extends a shorter one (prefix-stable)
    eps = rng.standard_normal(n_days) * e["vol_usd_day"] * math.sqrt(1 - e["ar1"] ** 2)
    eps[0] /= math.sqrt(1 - e["ar1"] ** 2)  # stationary start
    daily = lfilter([1.0], [1.0, -e["ar1"]], eps) + e["mean_usd_day"]
    for sh in e["shocks"]:
        d0 = int(math.floor(sh["day"]))
        d1 = int(math.ceil(sh["day"] + sh["days"]))
        daily[max(d0, 0):max(min(d1, n_days), 0)] += sh["usd_day"]
    if e["us_hours"]:
        tod = (t % US_PER_DAY) / US_PER_HOUR
        active = (tod >= 14.5) & (tod < 21.0)
    else:
        active = np.ones(len(t), bool)
    counts = np.bincount(day_idx, active, n_days)
    all_counts = np.bincount(day_idx, minlength=n_days).astype(np.float64)
    # days with no active step (short runs, coarse steps): spread over the whole day
    use_all = counts[day_idx] == 0
    weight = np.where(use_all, 1.0 / all_counts[day_idx],
                      active / np.maximum(counts[day_idx], 1.0))
    return daily, daily[day_idx] * weight


def run(p: dict[str, Any], grid: Grid, chain_us: int, seed: int) -> Raw:
    """Simulate the market described by the resolved parameters ``p`` on ``grid``.

    Parameters
    ----------
    p
        Resolved scenario parameters (see ``feeds/scenarios/_defaults.toml``).
    grid
        Bars and internal steps.
    chain_us
        Interval between option chain snapshots, microseconds.
    seed
        Seed of ``numpy.random.default_rng``.
    """
    mk, dl, op, pp, bs = p["market"], p["dealers"], p["options"], p["perps"], p["basis"]
    rng = np.random.default_rng(seed)
    (r_info, r_flow, r_hi, r_lo, r_act, r_etf, r_prem, r_basis) = rng.spawn(8)
    n, n_sub, step_us = grid.n_steps, grid.n_sub, grid.step_us
    dt = step_us / US_PER_YEAR                     # years
    dt_days = step_us / US_PER_DAY
    sq_dt = math.sqrt(dt)
    steps_per_day = max(1, round(US_PER_DAY / step_us))

    # ---- exogenous random inputs, drawn up front (deterministic per seed)
    z_info = _std_t(r_info, mk["tail_df"], n)
    z_flow = _std_t(r_flow, mk["tail_df"], n)
    ln_u_hi = np.log1p(-r_hi.random(n))            # log U, U in (0, 1]
    ln_u_lo = np.log1p(-r_lo.random(n))
    phi_a = math.exp(-LN2 * step_us / (mk["activity_halflife_hours"] * US_PER_HOUR))
    av = mk["activity_vol"]
    eps_a = r_act.standard_normal(n) * av * math.sqrt(1 - phi_a ** 2)
    eps_a[0] /= math.sqrt(1 - phi_a ** 2)  # stationary start
    activity = np.exp(lfilter([1.0], [1.0, -phi_a], eps_a) - 0.5 * av * av)
    etf_daily, etf_usd = _etf_per_step(p, grid, r_etf)
    z_prem = r_prem.standard_normal(n)
    z_basis = r_basis.standard_normal(n)

    # ---- schedules (step indices)
    def step_of(day: float) -> int:
        return int(round(day * US_PER_DAY / step_us))

    clusters_at: dict[int, list[dict[str, Any]]] = {}
    for cl in op["clusters"]:
        clusters_at.setdefault(step_of(cl["day"]), []).append(cl)
    shocks = sorted(p["shocks"], key=lambda s: s["day"])
    shock_start: dict[int, list[dict[str, Any]]] = {}
    for sh in shocks:
        shock_start.setdefault(step_of(sh["day"]), []).append(sh)
    stacks_at: dict[int, list[dict[str, Any]]] = {}
    for st in pp["stacks"]:
        stacks_at.setdefault(step_of(st["day"]), []).append(st)
    barriers_at: dict[int, list[dict[str, Any]]] = {}
    for it in op["barriers"]:
        barriers_at.setdefault(step_of(it["day"]), []).append(it)

    # ---- agents
    S = p["sim"]["spot0"]
    t0 = grid.start_us
    book = OptionBook(op, dl, bs["term_slope"])
    book.list_new(t0, S)
    iv_base = op["iv_base"]
    book.relax(t0, S, iv_base, 1.0, 1.0)            # warm background book at its target
    for cl in clusters_at.pop(0, []):
        book.add_cluster(t0, S, cl)
    bbook = BarrierBook()
    for it in barriers_at.pop(0, []):
        bbook.add(t0, S, it)
    lev = LeverageBook(S, pp["level_step"], pp["mmr"])
    lev.set_mix(np.asarray(pp["leverage"]), np.asarray(pp["leverage_weights"]))
    lev_mix = np.asarray(pp["leverage"], np.float64)
    lev_w = np.asarray(pp["leverage_weights"], np.float64)
    lev_w = lev_w / lev_w.sum()
    for st in stacks_at.pop(0, []):
        _open_stack(lev, st, S, lev_mix, lev_w)
    # warm start of the organic leveraged book: its steady state under hold_halflife
    hold_rate = LN2 / (pp["hold_halflife_days"] * US_PER_DAY / step_us)
    warm = pp["open_btc_day"] * dt_days / hold_rate
    # entries spread like the recent path: normal in log price, sd = vol * sqrt(hold time)
    spread = iv_base * math.sqrt(pp["hold_halflife_days"] / 365.0)
    zq = np.linspace(-2.0, 2.0, 41)
    w_q = np.exp(-0.5 * zq * zq)
    w_q /= w_q.sum()
    for z_i, w_i in zip(zq, w_q, strict=True):
        price = S * math.exp(spread * z_i)
        lev.open(price, warm * w_i * pp["long_share"], "long", lev_mix, lev_w)
        lev.open(price, warm * w_i * (1 - pp["long_share"]), "short", lev_mix, lev_w)
    lev.trigger(math.log(S), math.log(S), math.log(S) - 1, math.log(S) + 1)  # drop crossed
    lev.resync()

    hedge = bool(dl["hedge"])
    # vanna_hedge = false: the part of a delta change caused by implied volatility moving
    # is never traded (dealers re-base their delta silently); every other change is
    # hedged as usual. Ablation of the vanna flow.
    vanna_hedge = bool(dl["vanna_hedge"])
    m_min = 1.0 / dl["max_amplification"]
    L0 = mk["depth_btc"]
    health = 1.0
    inv = 0.0
    rec = 1 - math.exp(-LN2 * step_us / (mk["mm_recovery_halflife_hours"] * US_PER_HOUR))
    inv_keep = math.exp(-LN2 * step_us / (mk["mm_inventory_halflife_hours"] * US_PER_HOUR))
    sens = mk["mm_loss_sensitivity"] / mk["mm_capital_usd"]
    h_min = mk["mm_min_depth"]
    rv_keep = math.exp(-LN2 * step_us / (op["rv_halflife_hours"] * US_PER_HOUR))
    rv2 = iv_base ** 2
    iv_shock = 0.0
    ivs_keep = math.exp(-LN2 * step_us / (op["iv_shock_halflife_hours"] * US_PER_HOUR))
    beta_rv = op["iv_rv_beta"]
    iv_min = op["iv_min"]

    def atm_of(rv2_: float, shock_: float) -> float:
        return max(iv_base + beta_rv * (math.sqrt(rv2_) - iv_base), iv_min) + shock_

    book_every = max(1, round(p["sim"]["book_interval_minutes"] * US_PER_MINUTE / step_us))
    oi_frac = 1 - math.exp(-LN2 * book_every * step_us / (op["oi_halflife_days"] * US_PER_DAY))
    dd_len = max(1, round(op["drawdown_days"] * US_PER_DAY / (book_every * step_us)))
    dd_hist = np.full(n // book_every + 2, S)
    dd_n = 1
    put_demand = 1.0
    iv_dd = 0.0  # spot-vol feedback: ATM IV added per unit of drawdown from the peak

    # basis traders and futures
    B_ref = bs["book_btc"]
    B = B_ref
    b = bs["base_ann"]
    other = bs["other_oi_btc"]
    b_keep = math.exp(-LN2 * step_us / (bs["halflife_hours"] * US_PER_HOUR))
    oth_keep = math.exp(-LN2 * step_us / (bs["other_oi_halflife_days"] * US_PER_DAY))
    b_noise = bs["noise_ann"] * math.sqrt(dt_days)
    interest_apr = pp["interest_8h"] * 3 * 365
    fund_apr = interest_apr
    futs = _listed_futures(t0, bs["monthly"], bs["quarterly"])

    # perp premium and funding
    p_keep = math.exp(-LN2 * step_us / (pp["premium_halflife_hours"] * US_PER_HOUR))
    p_sd = pp["premium_vol"] * math.sqrt(1 - p_keep ** 2)
    prem_ou = 0.0
    prem_sum, prem_cnt = 0.0, 0
    fund_keep = math.exp(-LN2 * 8.0 / 24.0)
    base_oi = pp["base_oi_btc"]

    # recorders
    spot_path = np.empty(n + 1)
    prem_path = np.empty(n + 1)
    ln_hi = np.empty(n)
    ln_lo = np.empty(n)
    flows = np.zeros((len(FLOW_NAMES), n))
    volume = np.empty(n)
    perp_volume = np.empty(n)
    nb = grid.n_bars
    bar = {k: np.empty(nb) for k in (
        "net_gamma", "dealer_gex_usd", "dealer_delta_btc", "spot", "depth_btc", "mm_health",
        "basis_ann", "basis_book_btc", "futures_oi_btc", "perp_oi_btc", "perp_long_btc",
        "perp_short_btc", "premium", "iv_atm", "put_demand", "book_oi_btc",
        "dealer_vanna_usd", "barrier_gex_usd")}
    raw = Raw(grid, spot_path, ln_hi, ln_lo, prem_path, flows, volume, perp_volume, bar,
              etf_daily_usd=etf_daily)

    bg_vol = mk["background_volume_btc_day"] * dt_days
    sig_info = mk["info_vol"] * sq_dt
    sig_flow = mk["noise_flow_vol"] * sq_dt
    drift = mk["drift"] * dt
    r_cap = mk["max_step_return"]
    open_step = pp["open_btc_day"] * dt_days
    long_share, mom_beta = pp["long_share"], pp["momentum_beta"]
    hold_frac = 1 - math.exp(-hold_rate)
    imb_beta = pp["premium_imbalance"]
    levels = lev.levels
    fut_slope = bs["term_slope"]

    def greeks(S_: float, t_: int, atm_: float, b_: float, full: bool = False,
               ) -> tuple[float, float, Any]:
        """Dealer delta and gamma of the option book plus the barrier book."""
        d_, g_, extra = book.greeks(S_, t_, atm_, b_, full)
        if bbook.n:
            d2, g2 = bbook.greeks(S_, t_, atm_)
            d_, g_ = d_ + d2, g_ + g2
        return d_, g_, extra

    atm = atm_of(rv2, iv_shock)
    D, G, _ = greeks(S, t0, atm, b)
    resid = 0.0          # dealer hedge not yet executed (charm, vanna, convexity), BTC
    liq_pending = 0.0    # forced orders of liquidations triggered last step, BTC
    basis_pending = 0.0  # basis traders' spot trade decided last step, BTC
    active: list[tuple[int, int, dict[str, Any], float]] = []   # running shocks
    settle_steps = max(1, round(dl["settle_hours"] * US_PER_HOUR / step_us))
    settle_rate, settle_left = 0.0, 0
    lnS_hist = np.empty(n + 1)
    lnS = math.log(S)
    last_chain = -1
    last_fund = t0 // (8 * US_PER_HOUR)
    last_roll = (t0 - EXPIRY_OFFSET) // US_PER_DAY
    if not barriers_at and not bbook.n:
        greeks = book.greeks  # no barrier book: spare every step the wrapper call

    for k in range(n):
        t = t0 + k * step_us
        spot_path[k] = S
        lnS_hist[k] = lnS
        # 1. listing calendar: expiries roll off at 08:00 UTC, new ones list (no flow:
        #    cash settlement nets against customers' hedges)
        roll = (t - EXPIRY_OFFSET) // US_PER_DAY
        if roll != last_roll:
            last_roll = roll
            D_before = D
            book.expire(t)
            bbook.expire(t)
            book.list_new(t, S)
            futs = [e for e in futs if e > t]
            for e in _listed_futures(t, bs["monthly"], bs["quarterly"]):
                if e not in futs:
                    futs.append(e)
            futs.sort()
            D, G, _ = greeks(S, t, atm, b)
            if hedge:
                # the hedges of settled options are unwound over the next settle_steps
                settle_rate += (D_before - D) / settle_steps
                settle_left = settle_steps
        # 2. customers trade options with dealers; dealers hedge the change in delta
        traded = False
        D_before = D
        q_delever = 0.0
        if k > 0 and k % book_every == 0:
            dd_hist[dd_n] = S
            dd_n += 1
            peak = float(dd_hist[max(0, dd_n - dd_len):dd_n].max())
            put_demand = 1.0 + op["put_demand_beta"] * max(0.0, 1.0 - S / peak)
            iv_dd = op["iv_spot_beta"] * max(0.0, 1.0 - S / peak)
            book.relax(t, S, atm, put_demand, oi_frac)
            traded = True
        if k in clusters_at:
            for cl in clusters_at[k]:
                book.add_cluster(t, S, cl)
            traded = True
        if k in barriers_at:
            for it in barriers_at[k]:
                bbook.add(t, S, it)
            traded = True
        if k in stacks_at:
            # positions entered elsewhere (no order here); those already crossed at S are
            # dropped. Every older level is below the last low (longs) or above the last
            # high (shorts), so the drop touches only the new stack.
            for st in stacks_at[k]:
                _open_stack(lev, st, S, lev_mix, lev_w)
            lev.trigger(lnS, lnS, lev.lo, lev.lo + lev.n * lev.step)
            lev.resync()
        atm_step = atm
        for sh in shock_start.get(k, ()):
            n_h = max(1, round(sh["hours"] * US_PER_HOUR / step_us))
            active.append((k, k + n_h, sh, B))
            health *= 1.0 - sh["depth_hit"]
            iv_shock += sh["iv_jump"]
            other *= 1.0 - sh["other_oi_frac"]
            if sh["perp_deleverage_frac"] > 0:  # margin calls: closed at market now
                cl_long, cl_short = lev.close_fraction(sh["perp_deleverage_frac"])
                q_delever += cl_short - cl_long
            if sh["put_buy_btc"] > 0:
                book.add_puts(t, S, sh["put_moneyness"], sh["put_buy_btc"])
                traded = True
            atm = atm_of(rv2, iv_shock + iv_dd)
        D_traded = None  # without vanna hedging: the new book's delta at the old IV
        if not vanna_hedge and atm != atm_step:
            D_traded = greeks(S, t, atm_step, b)[0] if traded else D
            traded = True  # re-base the delta to the new IV (not traded)
        if traded:
            D, G, _ = greeks(S, t, atm, b)
        book_flow = -((D if D_traded is None else D_traded) - D_before) if hedge else 0.0
        # 3. funding every 8 hours from the average premium since the last payment
        fslot = t // (8 * US_PER_HOUR)
        if fslot != last_fund and prem_cnt:
            last_fund = fslot
            prem_avg = prem_sum / prem_cnt
            rate = prem_avg + min(max(pp["interest_8h"] - prem_avg, -pp["funding_clamp_8h"]),
                                  pp["funding_clamp_8h"])
            rate = min(max(rate, -pp["funding_cap_8h"]), pp["funding_cap_8h"])
            raw.funding_ts.append(fslot * 8 * US_PER_HOUR)
            raw.funding_rate.append(rate)
            fund_apr = fund_keep * fund_apr + (1 - fund_keep) * rate * 3 * 365
            prem_sum, prem_cnt = 0.0, 0
        prem = prem_ou + imb_beta * (lev.total_long - lev.total_short) / (
            lev.total_long + lev.total_short + base_oi)
        prem_path[k] = prem
        # 4. observations at this instant
        if k % n_sub == 0:
            i = k // n_sub
            bar["net_gamma"][i] = G
            bar["dealer_gex_usd"][i] = G * S * S * 0.01
            bar["dealer_delta_btc"][i] = D
            _, _, (iv_o, F_o) = greeks(S, t, atm, b, full=True)
            bar["dealer_vanna_usd"][i] = book.vanna_usd(t, iv_o, F_o)
            bar["barrier_gex_usd"][i] = bbook.greeks(S, t, atm)[1] * S * S * 0.01
            bar["spot"][i] = S
            bar["depth_btc"][i] = L0 * health
            bar["mm_health"][i] = health
            bar["basis_ann"][i] = b
            bar["basis_book_btc"][i] = B
            bar["futures_oi_btc"][i] = B + other
            bar["perp_long_btc"][i] = lev.total_long
            bar["perp_short_btc"][i] = lev.total_short
            bar["perp_oi_btc"][i] = base_oi + lev.total_long + lev.total_short
            bar["premium"][i] = prem
            bar["iv_atm"][i] = atm
            bar["put_demand"][i] = put_demand
            bar["book_oi_btc"][i] = float(book.oi_c.sum() + book.oi_p.sum()
                                          + book.cl_oi_c.sum() + book.cl_oi_p.sum())
            fe = np.asarray(futs, np.int64)
            T = (fe - t) / US_PER_YEAR
            fprice = S * (1.0 + (b + fut_slope * (T - 30.0 / 365.0)) * T)
            w = np.exp(-T / 0.25)
            raw.fut.append((t, fe, fprice, (B + other) * w / w.sum()))
        slot = (t - t0) // chain_us
        if slot != last_chain:
            last_chain = slot
            _, _, (iv, F) = greeks(S, t, atm, b, full=True)
            raw.snaps.append((t, S, book.K.copy(), book.exp_us.copy(), book.code.copy(),
                              book.oi_c + book.cl_oi_c, book.oi_p + book.cl_oi_p,
                              book.pos_c.copy(), book.pos_p.copy(), iv, F))
        # 5. flows of this step (BTC, + = buy)
        a = activity[k]
        L = L0 * health
        q_noise = L0 * sig_flow * a * z_flow[k]
        q_etf = etf_usd[k] / S
        back = max(0, k - steps_per_day)
        p_long = min(max(long_share + mom_beta * (lnS - lnS_hist[back]), 0.05), 0.95)
        n_long = open_step * a * p_long * lev.long_share  # 1x longs are not leveraged
        n_short = open_step * a * (1 - p_long)
        lev.open_mix(lnS, n_long, n_short)
        c_long, c_short = lev.close_fraction(hold_frac)
        q_perp = n_long - n_short - c_long + c_short
        q_shock = q_delever
        q_basis = basis_pending
        forced = False
        if active:
            still = []
            for (k0, k1, sh, B0) in active:
                if k < k1:
                    n_h = k1 - k0
                    u = min(sh["basis_unwind_frac"] * B0 / n_h, B)
                    B -= u
                    q_basis -= u
                    q_shock -= sh["spot_sell_btc"] / n_h
                    forced = forced or sh["basis_unwind_frac"] > 0
                    still.append((k0, k1, sh, B0))
            active = still
        q_dealer_pre = (book_flow + resid) if hedge else 0.0
        q_book = book_flow if hedge else 0.0
        if settle_left:
            q_dealer_pre += settle_rate
            q_book += settle_rate
            settle_left -= 1
            if not settle_left:
                settle_rate = 0.0
        q_liq = liq_pending
        X = q_noise + q_etf + q_liq + q_perp + q_basis + q_shock + q_dealer_pre
        # 6. price: r = (X / L + news) / m, m = 1 + G S / L (dealers hedge the move itself)
        m = max(1.0 + G * S / L, m_min) if hedge else 1.0
        r = (X / L + sig_info * a * z_info[k] + drift) / m
        r = min(max(r, -r_cap), r_cap)
        S1 = S * math.exp(r)
        lnS1 = lnS + r
        s_step = a * math.sqrt(sig_info ** 2 + (sig_flow * L0 / L) ** 2) / m
        var2 = -2.0 * s_step * s_step
        hi = 0.5 * (lnS + lnS1 + math.sqrt(r * r + var2 * ln_u_hi[k]))
        lo = 0.5 * (lnS + lnS1 - math.sqrt(r * r + var2 * ln_u_lo[k]))
        ln_hi[k] = hi
        ln_lo[k] = lo
        h_lin = -G * S * (S1 / S - 1.0) if hedge else 0.0
        q_total = X + h_lin
        # 7. market makers absorb the net flow; losses thin the book, time restores it
        pnl = inv * (S1 - S)
        inv = (inv - q_total) * inv_keep
        health += (1.0 - health) * rec - sens * max(-pnl, 0.0)
        health = min(max(health, h_min), 1.0)
        # 8. liquidations: levels crossed by the intra-step path execute next step
        bbook.knock(lo, hi)  # knocks change the dealers' delta; re-hedged below (step 10)
        li, ls, si, ss = lev.trigger(lo, hi, min(lnS, lo), max(lnS, hi))
        liq_pending = 0.0
        if len(ls) or len(ss):
            te = k + 1
            if len(ls):
                raw.liq_step.append(np.full(len(ls), te))
                raw.liq_side.append(np.zeros(len(ls), np.int8))
                raw.liq_price.append(levels[li])
                raw.liq_size.append(ls)
                liq_pending -= float(ls.sum())
            if len(ss):
                raw.liq_step.append(np.full(len(ss), te))
                raw.liq_side.append(np.ones(len(ss), np.int8))
                raw.liq_price.append(levels[si])
                raw.liq_size.append(ss)
                liq_pending += float(ss.sum())
        # 9. volatility state, perp premium, basis traders
        rv2 = rv_keep * rv2 + (1 - rv_keep) * r * r / dt
        iv_shock *= ivs_keep
        atm_prev = atm
        atm = atm_of(rv2, iv_shock + iv_dd)
        prem_ou = p_keep * prem_ou + p_sd * z_prem[k]
        prem_sum += prem
        prem_cnt += 1
        b_eq = (bs["base_ann"] + bs["funding_beta"] * (fund_apr - interest_apr)
                + bs["book_beta"] * (1.0 - B / B_ref if B_ref > 0 else 0.0))
        b += (b_eq - b) * (1 - b_keep) + b_noise * z_basis[k]
        basis_pending = 0.0
        if not forced and B_ref > 0:
            dB = bs["rebuild_per_day"] * (b - bs["base_ann"]) * B_ref * dt_days
            dB = min(max(dB, -B), 3 * B_ref - B)
            B += dB
            basis_pending = dB
        other += (bs["other_oi_btc"] - other) * (1 - oth_keep)
        # 10. dealers re-mark their book at the new spot and time
        D1, G1, _ = greeks(S1, t + step_us, atm, b)
        if hedge:
            D1_traded = D1 if vanna_hedge else greeks(S1, t + step_us, atm_prev, b)[0]
            resid = -(D1_traded - D) - h_lin
        flows[0, k] = q_noise
        flows[1, k] = q_etf
        flows[2, k] = q_dealer_pre + h_lin
        flows[3, k] = q_liq
        flows[4, k] = q_perp
        flows[5, k] = q_basis
        flows[6, k] = q_shock
        flows[7, k] = q_book
        volume[k] = (bg_vol + abs(q_noise) + abs(q_etf) + abs(q_dealer_pre + h_lin)
                     + abs(q_basis) + abs(q_shock))
        perp_volume[k] = (pp["background_volume_ratio"] * bg_vol + n_long + n_short + c_long
                          + c_short + abs(q_liq))
        S, lnS, D, G = S1, lnS1, D1, G1
        if k % 1000 == 999:
            lev.resync()
    spot_path[n] = S
    prem_path[n] = prem_ou + imb_beta * (lev.total_long - lev.total_short) / (
        lev.total_long + lev.total_short + base_oi)
    raw.expiry_names = book.names
    raw.barriers = bbook.records
    return raw


def _open_stack(lev: LeverageBook, st: dict[str, Any], spot: float, mix: np.ndarray,
                weights: np.ndarray) -> None:
    """A block of positions with entries spread over [entry_lo, entry_hi] * spot.

    ``spot`` is the price when the stack enters the book (``spot0`` for ``day = 0``).
    Levels already crossed at ``spot`` are removed by the caller's next trigger.
    """
    lv = np.asarray(st["leverage"], np.float64) if st["leverage"] else mix
    w = np.asarray(st["leverage_weights"], np.float64) if st["leverage"] else weights
    w = w / w.sum()
    entries = spot * np.linspace(st["entry_lo"], st["entry_hi"], 25)
    for e in entries:
        lev.open(float(e), st["size_btc"] / len(entries), st["side"], lv, w)


def start_us_of(text: str) -> int:
    """Parse ``sim.start`` (ISO 8601 with offset) into UTC microseconds."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"sim.start = {text!r} is not a timestamp", source="scenario",
                          column="sim.start", expected="ISO 8601, e.g. 2025-01-06T00:00:00Z",
                          fix="fix the date") from exc
    if dt.tzinfo is None:
        raise ConfigError(f"sim.start = {text!r} has no time zone", source="scenario",
                          column="sim.start", expected="a UTC offset ('Z' or '+00:00')",
                          fix="append Z")
    return to_us(dt.astimezone(UTC))
