"""Is a sweep's winner real? Deflated Sharpe ratio and probability of backtest overfitting.

Pure numpy/scipy functions over per-period (daily) returns; nothing here runs a
backtest. Sharpe ratios are **per period** (mean over sample standard deviation,
``ddof=1``, no annualization) as both papers require.

Formulas
--------
Deflated Sharpe ratio (Bailey and Lopez de Prado, 2014), for the best of ``N`` trials
whose Sharpe ratios have variance ``V``, over ``T`` returns with skewness ``skew`` and
**raw** kurtosis ``kurt`` (3 for a normal distribution)::

    SR0 = sqrt(V) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e)))
    DSR = Phi((SR - SR0) * sqrt(T - 1) / sqrt(1 - skew * SR + (kurt - 1) / 4 * SR^2))

with ``g = 0.5772156649`` (Euler-Mascheroni). Significant when ``DSR >= 0.95``.

Probability of backtest overfitting by combinatorially symmetric cross-validation
(Bailey, Borwein, Lopez de Prado and Zhu, 2015): the ``T x N`` returns matrix loses its
first ``T mod S`` rows and is cut into ``S`` (even) contiguous blocks; for each of the
``C(S, S/2)`` choices of training blocks (the rest, in time order, is the test set) the
trial with the best training Sharpe has rank ``r`` among the ``N`` test Sharpe ratios
(1 = worst, ties averaged), ``w = r / (N + 1)``, ``lambda = ln(w / (1 - w))``, and::

    PBO = #{lambda <= 0} / C(S, S/2)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

EULER_GAMMA = 0.5772156649
SIGNIFICANT_DSR = 0.95

FloatArray = npt.NDArray[np.float64]


def _matrix(returns: npt.ArrayLike, *, name: str = "returns") -> FloatArray:
    arr = np.asarray(returns, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 1-D series or a T x N matrix, got {arr.ndim} dims")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN: fill missing periods with 0.0 (flat) first")
    return arr


def _sharpe_from_moments(total: FloatArray, total_sq: FloatArray, count: int) -> FloatArray:
    """Per-period Sharpe from column sums; a column with zero variance has Sharpe 0."""
    mean = total / count
    var = (total_sq - count * mean**2) / (count - 1)
    std = np.sqrt(np.maximum(var, 0.0))
    # relative tolerance: cancellation leaves ~1e-16 * mean^2 where the true variance is 0
    flat = std <= 1e-12 * np.maximum(np.abs(mean), 1e-300)
    return np.where(flat, 0.0, mean / np.where(flat, 1.0, std))


def sharpe_per_period(returns: npt.ArrayLike) -> FloatArray:
    """Per-period Sharpe ratio of each column: ``mean / std(ddof=1)``, not annualized.

    Parameters
    ----------
    returns
        ``T`` simple returns (1-D) or a ``T x N`` matrix, one column per trial. NaN is
        refused (fill flat periods with 0.0).

    Returns
    -------
    numpy.ndarray
        ``N`` Sharpe ratios; a column with zero variance (never traded) has Sharpe 0.
        Fewer than two rows gives NaN.
    """
    arr = _matrix(returns)
    if arr.shape[0] < 2:
        return np.full(arr.shape[1], np.nan)
    mean = arr.mean(axis=0)
    std = arr.std(axis=0, ddof=1)
    flat = std <= 1e-12 * np.maximum(np.abs(mean), 1e-300)
    return np.where(flat, 0.0, mean / np.where(flat, 1.0, std))


def expected_max_sharpe(n_trials: int, var_sharpe: float) -> float:
    """Expected maximum Sharpe ratio of ``n_trials`` skill-less trials (``SR0``).

    Formula: ``sqrt(V) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e)))``.
    One trial (or zero variance) gives 0: nothing was selected.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    if var_sharpe < 0:
        raise ValueError(f"var_sharpe must be >= 0, got {var_sharpe}")
    if n_trials == 1 or var_sharpe == 0:
        return 0.0
    g = EULER_GAMMA
    z1 = stats.norm.ppf(1.0 - 1.0 / n_trials)
    z2 = stats.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(var_sharpe) * ((1.0 - g) * z1 + g * z2))


def deflated_sharpe(sharpe: float, *, n_trials: int, var_sharpe: float, n_obs: int,
                    skew: float, kurt: float) -> float:
    """Deflated Sharpe ratio: probability that the true Sharpe exceeds ``SR0``.

    Parameters
    ----------
    sharpe
        Per-period Sharpe ratio of the selected (best) trial.
    n_trials, var_sharpe
        Number of trials tried and the variance of their per-period Sharpe ratios.
    n_obs
        Number of returns ``T`` behind ``sharpe``.
    skew, kurt
        Skewness and **raw** kurtosis (3 for a normal) of the selected trial's returns.

    Returns
    -------
    float
        ``Phi((SR - SR0) * sqrt(T - 1) / sqrt(1 - skew*SR + (kurt - 1)/4 * SR^2))``
        in [0, 1]; significant when >= 0.95.
    """
    if n_obs < 2:
        raise ValueError(f"n_obs must be at least 2, got {n_obs}")
    if kurt < 1:
        raise ValueError(f"kurt is raw kurtosis (3 for a normal, always >= 1), got {kurt}; "
                         "add 3 to an excess kurtosis")
    sr0 = expected_max_sharpe(n_trials, var_sharpe)
    denom = 1.0 - skew * sharpe + (kurt - 1.0) / 4.0 * sharpe**2
    if denom <= 0:
        raise ValueError(f"1 - skew*SR + (kurt-1)/4*SR^2 = {denom:.3g} <= 0: the moments are "
                         "inconsistent (check that kurt is raw, not excess)")
    z = (sharpe - sr0) * math.sqrt(n_obs - 1) / math.sqrt(denom)
    return float(stats.norm.cdf(z))


@dataclass(frozen=True)
class DSRResult:
    """The deflated Sharpe ratio of the best trial with every input it used."""

    dsr: float
    best: int  # column index of the best trial
    sharpe: float  # per-period Sharpe of the best trial
    sr0: float  # expected maximum Sharpe under no skill
    n_trials: int
    var_sharpe: float
    n_obs: int
    skew: float
    kurt: float  # raw

    @property
    def significant(self) -> bool:
        return self.dsr >= SIGNIFICANT_DSR


def deflated_sharpe_of(returns: npt.ArrayLike, *, n_trials: int | None = None,
                       best: int | None = None) -> DSRResult:
    """DSR of the best column of a ``T x N`` returns matrix (one column per trial).

    ``n_trials`` defaults to ``N``; pass a larger number when more configurations were
    tried than are in the matrix. ``best`` is the selected column (default: the highest
    Sharpe; pass the sweep's winner when it was chosen by another objective). The
    variance of the Sharpe ratios uses ``ddof=1``; skewness and raw kurtosis are the
    (biased) sample moments of the selected column.
    """
    arr = _matrix(returns)
    if arr.shape[0] < 3:
        raise ValueError(f"need at least 3 returns per trial, got {arr.shape[0]}")
    sharpes = sharpe_per_period(arr)
    best = int(np.argmax(sharpes)) if best is None else int(best)
    n = arr.shape[1] if n_trials is None else int(n_trials)
    var = float(np.var(sharpes, ddof=1)) if arr.shape[1] > 1 else 0.0
    col = arr[:, best]
    if np.std(col) == 0:
        skew, kurt = 0.0, 3.0
    else:
        skew = float(stats.skew(col))
        kurt = float(stats.kurtosis(col, fisher=False))
    sr = float(sharpes[best])
    return DSRResult(dsr=deflated_sharpe(sr, n_trials=n, var_sharpe=var, n_obs=arr.shape[0],
                                         skew=skew, kurt=kurt),
                     best=best, sharpe=sr, sr0=expected_max_sharpe(n, var), n_trials=n,
                     var_sharpe=var, n_obs=arr.shape[0], skew=skew, kurt=kurt)


@dataclass(frozen=True)
class PBOResult:
    """CSCV outcome: PBO plus the per-split logits and the chosen trial's Sharpe ratios."""

    pbo: float
    logits: FloatArray  # lambda per split
    train_sharpe: FloatArray  # chosen trial, training set, per split
    test_sharpe: FloatArray  # chosen trial, test set, per split
    n_blocks: int
    n_trials: int
    n_obs: int  # rows used (after dropping the first T mod S)

    @property
    def n_splits(self) -> int:
        return len(self.logits)

    @property
    def degradation(self) -> float:
        """Median of (test Sharpe - training Sharpe) of the chosen trial (per period)."""
        return float(np.median(self.test_sharpe - self.train_sharpe))

    @property
    def prob_loss(self) -> float:
        """Share of splits where the chosen trial loses money out of sample (test SR < 0)."""
        return float(np.mean(self.test_sharpe < 0))


def _check_cscv(arr: FloatArray, n_blocks: int) -> None:
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"n_blocks must be even and >= 2, got {n_blocks}")
    if arr.shape[1] < 2:
        raise ValueError(f"PBO needs at least 2 trials, got {arr.shape[1]}")
    if arr.shape[0] // n_blocks < 2:
        raise ValueError(f"{arr.shape[0]} periods are too few for {n_blocks} blocks "
                         f"(need at least {2 * n_blocks}): use fewer blocks or a longer run")


def _logit(rank: FloatArray, n_trials: int) -> FloatArray:
    w = rank / (n_trials + 1.0)
    return np.log(w / (1.0 - w))


def probability_of_overfitting(returns: npt.ArrayLike, *, n_blocks: int = 16,
                               chunk: int = 512) -> PBOResult:
    """PBO by combinatorially symmetric cross-validation (vectorized over splits).

    Parameters
    ----------
    returns
        ``T x N`` per-period returns, one column per trial (no NaN).
    n_blocks
        ``S``, even; the first ``T mod S`` rows are dropped so blocks are equal.
    chunk
        Splits evaluated at once (bounds memory at about ``chunk * N * 8 * 6`` bytes).

    Returns
    -------
    PBOResult
        Ties in the test ranking are averaged; a zero-variance column has Sharpe 0.
    """
    arr = _matrix(returns)
    _check_cscv(arr, n_blocks)
    t, n = arr.shape
    arr = arr[t % n_blocks:]
    size = arr.shape[0] // n_blocks
    blocks = arr.reshape(n_blocks, size, n)
    sums, sq = blocks.sum(axis=1), (blocks**2).sum(axis=1)  # S x N
    half = n_blocks // 2
    combos = np.array(list(itertools.combinations(range(n_blocks), half)), dtype=np.intp)
    masks = np.zeros((len(combos), n_blocks))
    np.put_along_axis(masks, combos, 1.0, axis=1)
    logits, train_sr, test_sr = [], [], []
    count = half * size
    for lo in range(0, len(masks), chunk):
        m = masks[lo:lo + chunk]
        train = _sharpe_from_moments(m @ sums, m @ sq, count)
        test = _sharpe_from_moments((1 - m) @ sums, (1 - m) @ sq, count)
        chosen = np.argmax(train, axis=1)
        rows = np.arange(len(m))
        pick = test[rows, chosen][:, None]
        rank = (test < pick).sum(axis=1) + ((test == pick).sum(axis=1) + 1) / 2.0
        logits.append(_logit(rank, n))
        train_sr.append(train[rows, chosen])
        test_sr.append(pick[:, 0])
    lam = np.concatenate(logits)
    return PBOResult(pbo=float(np.mean(lam <= 0)), logits=lam,
                     train_sharpe=np.concatenate(train_sr), test_sharpe=np.concatenate(test_sr),
                     n_blocks=n_blocks, n_trials=n, n_obs=arr.shape[0])


def probability_of_overfitting_reference(returns: npt.ArrayLike, *, n_blocks: int = 16,
                                         ) -> PBOResult:
    """Slow, literal CSCV (concatenate blocks, rank with scipy) to check the fast one."""
    arr = _matrix(returns)
    _check_cscv(arr, n_blocks)
    t, n = arr.shape
    arr = arr[t % n_blocks:]
    blocks = np.split(arr, n_blocks)
    logits, train_sr, test_sr = [], [], []
    for train_idx in itertools.combinations(range(n_blocks), n_blocks // 2):
        test_idx = [i for i in range(n_blocks) if i not in train_idx]
        train = sharpe_per_period(np.concatenate([blocks[i] for i in train_idx]))
        test = sharpe_per_period(np.concatenate([blocks[i] for i in test_idx]))
        chosen = int(np.argmax(train))
        rank = stats.rankdata(test)[chosen]
        logits.append(float(_logit(np.array([rank]), n)[0]))
        train_sr.append(train[chosen])
        test_sr.append(test[chosen])
    lam = np.array(logits)
    return PBOResult(pbo=float(np.mean(lam <= 0)), logits=lam, train_sharpe=np.array(train_sr),
                     test_sharpe=np.array(test_sr), n_blocks=n_blocks, n_trials=n,
                     n_obs=arr.shape[0])
