"""The option book held by dealers against customers, its smile and its greeks.

The book is a set of (expiry, strike) *pairs*, each with a call and a put. Per pair:

- background customer open interest ``oi_c, oi_p`` (contracts = BTC, >= 0), on which
  dealers take the side ``dealers.call_sign`` / ``dealers.put_sign``;
- scenario *cluster* positions ``cl_c, cl_p`` (signed dealer contracts) and their open
  interest ``cl_oi_c, cl_oi_p``.

Dealer position ``pos = sign * oi + cl``; open interest ``OI = oi + cl_oi``. Under the
convention book (call_sign = +1, put_sign = -1, clusters with the same signs) the
chain's ``OI * (+1 calls, -1 puts)`` equals the dealer position exactly.

Greeks are Black-76 on each pair's forward ``F = S (1 + b(T) T)`` (r = q = 0), the same
formulas as :mod:`indicators.gamma`; a call and a put of one pair share ``d1``, so the
dealer delta of a pair is ``(pos_c + pos_p) N(d1) - pos_p`` (forward units).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import ndtr

from feeds.sim.calendar import (
    US_PER_DAY,
    US_PER_YEAR,
    expiry_name,
    listed_expiries,
    strike_grid,
    strikes_per_expiry,
)

INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
MIN_T = 1.0 / (365.0 * 24.0 * 60.0)  # one minute, in years


class OptionBook:
    """Listed options, customer open interest and dealer positions (vectorized over pairs).

    Parameters
    ----------
    opts
        The ``options`` table of the scenario parameters.
    dealers
        The ``dealers`` table (signs of the background book).
    basis_slope
        ``basis.term_slope``: forward basis of tenor T is ``b_near + slope (T - 30d)``.
    """

    def __init__(self, opts: dict[str, Any], dealers: dict[str, Any], basis_slope: float):
        self.o = opts
        self.call_sign = float(dealers["call_sign"])
        self.put_sign = float(dealers["put_sign"])
        self.slope = float(basis_slope)
        self.n_pairs_target = max(opts["n_options"] // 2, 10)
        self.names: list[str] = []          # expiry code -> underlying_index name
        self._code: dict[int, int] = {}     # expiry us -> code
        self._w_norm: float | None = None
        self.K = np.zeros(0)
        self.logK = np.zeros(0)
        self.exp_us = np.zeros(0, np.int64)
        self.code = np.zeros(0, np.int64)
        self.oi_c = np.zeros(0)
        self.oi_p = np.zeros(0)
        self.cl_c = np.zeros(0)
        self.cl_p = np.zeros(0)
        self.cl_oi_c = np.zeros(0)
        self.cl_oi_p = np.zeros(0)
        self._derive()

    # ------------------------------------------------------------------ structure
    _FIELDS = ("K", "logK", "exp_us", "code", "oi_c", "oi_p", "cl_c", "cl_p",
               "cl_oi_c", "cl_oi_p")

    def _derive(self) -> None:
        self.pos_c = self.call_sign * self.oi_c + self.cl_c
        self.pos_p = self.put_sign * self.oi_p + self.cl_p
        self.sum_pos = self.pos_c + self.pos_p
        self.exp_years = self.exp_us.astype(np.float64) / US_PER_YEAR
        # expiry index within the current listing (for per-expiry normalisation)
        _, self.exp_local = np.unique(self.exp_us, return_inverse=True)
        self.n_exp = int(self.exp_local.max()) + 1 if len(self.exp_local) else 0

    def _select(self, keep: np.ndarray) -> None:
        for f in self._FIELDS:
            setattr(self, f, getattr(self, f)[keep])

    def _append(self, K: np.ndarray, exp_us: int) -> None:
        n = len(K)
        if exp_us not in self._code:
            self._code[exp_us] = len(self.names)
            self.names.append(expiry_name(exp_us, prefix="SYN.BTC"))
        new = {"K": K, "logK": np.log(K), "exp_us": np.full(n, exp_us, np.int64),
               "code": np.full(n, self._code[exp_us], np.int64)}
        for f in self._FIELDS:
            add = new.get(f, np.zeros(n))
            setattr(self, f, np.concatenate([getattr(self, f), add]))

    def _sort(self) -> None:
        order = np.lexsort((self.K, self.exp_us))
        self._select(order)

    def expire(self, now_us: int) -> int:
        """Remove pairs whose expiry is at or before ``now_us``; return how many went."""
        keep = self.exp_us > now_us
        gone = int((~keep).sum())
        if gone:
            self._select(keep)
            self._derive()
        return gone

    def list_new(self, now_us: int, spot: float) -> int:
        """List the expiries of the Deribit pattern not yet listed; return how many."""
        o = self.o
        exps = listed_expiries(now_us, daily=o["daily"], weekly=o["weekly"],
                               monthly=o["monthly"], quarterly=o["quarterly"])
        tenor_days = (np.asarray(exps, np.float64) - now_us) / US_PER_DAY
        weights = strikes_per_expiry(tenor_days)
        if self._w_norm is None:
            self._w_norm = float(weights.sum())
        have = set(np.unique(self.exp_us).tolist())
        new = [i for i, e in enumerate(exps) if e not in have]
        if not new:
            return 0
        # strike counts follow a tenor template, scaled so the book stays near n_options
        template = self.n_pairs_target * weights[new] / self._w_norm
        budget = self.n_pairs_target - len(self.K)
        scale = min(max(budget / template.sum(), 0.5), 1.5) if len(self.K) else 1.0
        for i, n_k in zip(new, template * scale, strict=True):
            grid = strike_grid(spot, tenor_days[i] / 365.0, max(5, round(n_k)), o["iv_base"])
            self._append(grid, exps[i])
        added = len(new)
        if added:
            self._sort()
            self._derive()
        return added

    def add_cluster(self, now_us: int, spot: float, cl: dict[str, Any]) -> None:
        """Add a scenario position at ``moneyness * spot`` in the matching expiries."""
        exps = np.unique(self.exp_us)
        dte = (exps - now_us) / US_PER_DAY
        chosen = exps[(dte >= cl["min_days"]) & (dte <= cl["max_days"])]
        if len(chosen) == 0:
            later = exps[dte >= cl["min_days"]]
            chosen = later[:1] if len(later) else exps[-1:]
        target = cl["moneyness"] * spot
        per_exp = cl["oi_btc"] / len(chosen)
        for e in chosen:
            idx = np.flatnonzero(self.exp_us == e)
            ks = self.K[idx]
            step = float(np.median(np.diff(ks))) if len(ks) > 1 else max(target * 0.01, 1.0)
            k0 = round(target / step) * step
            want = k0 + step * (np.arange(cl["strikes"]) - (cl["strikes"] - 1) // 2)
            want = want[want > 0]
            missing = want[~np.isin(want, ks)]
            if len(missing):
                self._append(missing, int(e))
                self._sort()
            for k in want:
                j = np.flatnonzero((self.exp_us == e) & (self.K == k))[0]
                size = per_exp / len(want)
                if cl["right"] == "C":
                    self.cl_c[j] += cl["dealer_sign"] * size
                    self.cl_oi_c[j] += size
                else:
                    self.cl_p[j] += cl["dealer_sign"] * size
                    self.cl_oi_p[j] += size
        self._derive()

    def add_puts(self, now_us: int, spot: float, moneyness: float, size: float,
                 min_days: float = 1.0, max_days: float = 40.0) -> None:
        """Customers buy ``size`` puts from dealers (a shock's put demand)."""
        self.add_cluster(now_us, spot, {"moneyness": moneyness, "right": "P", "oi_btc": size,
                                        "dealer_sign": -1, "min_days": min_days,
                                        "max_days": max_days, "strikes": 3})

    # ------------------------------------------------------------------ customers
    def targets(self, now_us: int, spot: float, atm: float,
                put_demand: float) -> tuple[np.ndarray, np.ndarray]:
        """Background OI targets (calls, puts) centred on the current forward."""
        o = self.o
        T = np.maximum(self.exp_years - now_us / US_PER_YEAR, 1.0 / 365.0)
        z = (self.logK - math.log(spot)) / (atm * np.sqrt(T))
        dens = np.exp(-0.5 * (z / o["oi_width"]) ** 2)
        s = 1.0 / (1.0 + np.exp(-o["otm_bias"] * z))
        w_exp = np.zeros(self.n_exp)
        np.maximum.at(w_exp, self.exp_local, T ** o["oi_tenor_power"])
        w_exp /= w_exp.sum()
        tc = dens * s
        tp = dens * (1.0 - s)
        norm_c = np.bincount(self.exp_local, tc, self.n_exp)
        norm_p = np.bincount(self.exp_local, tp, self.n_exp)
        tc = tc / np.maximum(norm_c, 1e-300)[self.exp_local] * w_exp[self.exp_local]
        tp = tp / np.maximum(norm_p, 1e-300)[self.exp_local] * w_exp[self.exp_local]
        total = o["oi_btc"]
        return total * o["call_share"] * tc, total * (1 - o["call_share"]) * put_demand * tp

    def relax(self, now_us: int, spot: float, atm: float, put_demand: float,
              frac: float) -> None:
        """Customers trade: background OI moves ``frac`` of the way to its target."""
        tc, tp = self.targets(now_us, spot, atm, put_demand)
        self.oi_c += (tc - self.oi_c) * frac
        self.oi_p += (tp - self.oi_p) * frac
        self._derive()

    # ------------------------------------------------------------------ greeks
    def greeks(self, spot: float, now_us: int, atm_short: float, b_near: float,
               full: bool = False) -> tuple[float, float, Any]:
        """Dealer delta and gamma with respect to spot.

        Returns
        -------
        (delta_btc, gamma_per_usd, extra)
            Dealer option delta in BTC, dealer gamma d(delta)/dS in BTC per USD, and
            (when ``full``) a tuple ``(iv, F)`` of per-pair arrays, else None.
        """
        o = self.o
        if len(self.K) == 0:
            return 0.0, 0.0, (np.zeros(0), np.zeros(0)) if full else None
        T = self.exp_years - now_us / US_PER_YEAR
        np.maximum(T, MIN_T, out=T)
        bT = (b_near + self.slope * (T - 30.0 / 365.0)) * T
        F = spot * (1.0 + bT)
        lnF = np.log(F)
        base = o["iv_base"]
        atm = base + (atm_short - base) * np.exp(T * (-365.0 / o["iv_term_days"]))
        x = self.logK - lnF
        z = x / (atm * np.sqrt(np.maximum(T, 1.0 / 365.0)))
        np.clip(z, -3.0, 3.0, out=z)
        iv = atm * (1.0 + z * (o["iv_skew"] + o["iv_curvature"] * z))
        np.maximum(iv, o["iv_min"], out=iv)
        s = iv * np.sqrt(T)
        d1 = 0.5 * s - x / s
        nd1 = ndtr(d1)
        pdf = np.exp(-0.5 * d1 * d1) * INV_SQRT_2PI
        ratio = F / spot
        delta = float(ratio @ (self.sum_pos * nd1 - self.pos_p))
        gamma = float((self.sum_pos * ratio * ratio / (F * s)) @ pdf)
        return delta, gamma, (iv, F) if full else None

    def vanna_usd(self, now_us: int, iv: np.ndarray, F: np.ndarray) -> float:
        """Dealers' vanna: USD of dealer delta change per +1 vol point of every pair's IV.

        ``iv`` and ``F`` are the per-pair arrays of :meth:`greeks` (``full=True``). The
        dealer delta in BTC of spot is ``(F / S) (sum_pos N(d1) - pos_p)``; its change
        per vol point valued at spot is ``0.01 sum_pos pdf(d1) dd1/div F``, with
        ``dd1/div = -d2 / iv``.
        """
        if len(self.K) == 0:
            return 0.0
        T = self.exp_years - now_us / US_PER_YEAR
        np.maximum(T, MIN_T, out=T)
        s = iv * np.sqrt(T)
        d1 = 0.5 * s - (self.logK - np.log(F)) / s
        pdf = np.exp(-0.5 * d1 * d1) * INV_SQRT_2PI
        return float(0.01 * (self.sum_pos * F * pdf * -(d1 - s) / iv).sum())
