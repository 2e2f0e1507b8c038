"""The explicit registry of strategies a run can name (no discovery magic)."""

from __future__ import annotations

import difflib

import backtrader as bt

from indicators.errors import ConfigError
from strategies.buy_and_hold import BuyAndHold
from strategies.gamma_flip import GammaFlip

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
                          fix=_did_you_mean(name, STRATEGIES)) from None


def strategy_params(cls: type[bt.Strategy]) -> dict[str, object]:
    """The strategy's Backtrader params and their defaults."""
    return dict(cls.params._getitems())


def check_params(cls: type[bt.Strategy], params: dict[str, object]) -> dict[str, object]:
    """Validate ``params`` against the strategy's declared params, casting to their types.

    Values from the command line arrive as strings: they are cast to the type of the
    default (bool accepts true/false/1/0/yes/no).
    """
    known = strategy_params(cls)
    out: dict[str, object] = {}
    for key, value in params.items():
        if key not in known:
            raise ConfigError(f"unknown parameter {key!r} for strategy {cls.__name__}",
                              column="params", expected=f"one of {sorted(known)}",
                              fix=_did_you_mean(key, known))
        out[key] = _cast(key, value, known[key])
    return out


def _cast(key: str, value: object, default: object) -> object:
    if default is None or not isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            lowered = value.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        return type(default)(value)
    except ValueError:
        raise ConfigError(f"parameter {key}={value!r} is not a {type(default).__name__}",
                          column="params", expected=f"like the default {default!r}",
                          fix=f"pass --param {key}=<{type(default).__name__}>") from None


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"did you mean {close[0]!r}?" if close else f"choose one of {sorted(choices)}"
