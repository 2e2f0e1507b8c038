"""The explicit registry of strategies a run can name (no discovery magic).

Registered strategies must declare a range for every numeric parameter (a unit test
walks :data:`STRATEGIES`). See :mod:`strategies.params` for the rules.
"""

from __future__ import annotations

import backtrader as bt

from indicators.errors import ConfigError
from strategies.buy_and_hold import BuyAndHold
from strategies.gamma_flip import GammaFlip
from strategies.params import (
    check_value,
    declared_ranges,
    did_you_mean,
    strategy_params,
)

__all__ = ["STRATEGIES", "check_params", "get_strategy", "strategy_params"]

STRATEGIES: dict[str, type[bt.Strategy]] = {
    "gamma_flip": GammaFlip,
    "buy_and_hold": BuyAndHold,
}


def get_strategy(name: str) -> type[bt.Strategy]:
    """Return the registered strategy class, or raise ConfigError with a hint."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(f"unknown strategy {name!r}", column="strategy",
                          expected=f"one of {sorted(STRATEGIES)}",
                          fix=did_you_mean(name, STRATEGIES)) from None


def check_params(cls: type[bt.Strategy], params: dict[str, object]) -> dict[str, object]:
    """Validate ``params`` against the strategy's params and declared ranges.

    Parameters
    ----------
    cls
        The strategy class (from :func:`get_strategy`).
    params
        Parameter name -> value. Command-line values arrive as strings and are cast to
        the type of the default (bool accepts true/false/1/0/yes/no/on/off); TOML
        values arrive typed and are checked as they are.

    Returns
    -------
    dict
        The cast values, for the parameters given only (defaults are not filled in).

    Raises
    ------
    ConfigError
        An unknown parameter (with a "did you mean" hint); a value of the wrong type
        (``lookback=2.5`` for an integer is refused, not truncated); NaN or infinity;
        a value outside the declared range. The message names the strategy, the
        parameter, the range and how to set it.
    """
    known = strategy_params(cls)
    ranges = declared_ranges(cls)
    owner = strategy_label(cls)
    out: dict[str, object] = {}
    for key, value in params.items():
        if key not in known:
            raise ConfigError(f"unknown parameter {key!r} for strategy {owner}",
                              column="params", expected=f"one of {sorted(known)}",
                              fix=did_you_mean(key, known))
        out[key] = check_value(owner, key, value, known[key], ranges.get(key))
    return out


def strategy_label(cls: type[bt.Strategy]) -> str:
    """How messages name a strategy: its registered name, else ``module:Class``."""
    for name, registered in STRATEGIES.items():
        if registered is cls:
            return name
    return f"{cls.__module__}:{cls.__qualname__}"
