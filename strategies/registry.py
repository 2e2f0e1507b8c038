"""The explicit registry of strategies a run can name (no discovery magic).

A run names its strategy in one of three ways:

- a registered name, a key of :data:`STRATEGIES` (``gamma_flip``);
- a file and a class, ``path/to/file.py:ClassName``;
- a module and a class, ``package.module:ClassName``.

User strategies need no edit here. Registered strategies must declare a range for
every numeric parameter (a unit test walks :data:`STRATEGIES`); user strategies may
omit ``param_ranges``, and their parameters are then only type-checked against the
defaults. See :mod:`strategies.params` for the rules.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import backtrader as bt

from plumbing.errors import ConfigError
from strategies.basis_dislocation import BasisDislocation
from strategies.buy_and_hold import BuyAndHold
from strategies.funding_carry import FundingCarry
from strategies.gamma_flip import GammaFlip
from strategies.liquidation_cascade import LiquidationCascade
from strategies.loading import SPEC_FORMS, is_spec, load_strategy, loaded_file
from strategies.params import (
    check_value,
    declared_ranges,
    did_you_mean,
    range_problems,
    strategy_params,
)
from strategies.vol_shock import VolShock

__all__ = ["STRATEGIES", "check_params", "get_strategy", "strategy_params",
           "strategy_source_sha256"]

STRATEGIES: dict[str, type[bt.Strategy]] = {
    "gamma_flip": GammaFlip,
    "buy_and_hold": BuyAndHold,
    "basis_dislocation": BasisDislocation,
    "liquidation_cascade": LiquidationCascade,
    "funding_carry": FundingCarry,
    "vol_shock": VolShock,
}


def get_strategy(spec: str) -> type[bt.Strategy]:
    """Return the strategy class a run names.

    Parameters
    ----------
    spec
        A registered name (``gamma_flip``), ``path/to/file.py:ClassName`` or
        ``package.module:ClassName``. A user strategy must subclass
        ``backtrader.Strategy``; it may leave out ``param_ranges`` (its parameters are
        then only type-checked against their defaults), but ranges it does declare
        must name its parameters and contain their defaults.

    Returns
    -------
    type
        The ``backtrader.Strategy`` subclass; the same object on repeated calls.

    Raises
    ------
    ConfigError
        Unknown registered name (with a "did you mean" hint), bad spec syntax, missing
        file, a file or module that fails to import, a missing class, a class that is
        not a Strategy subclass, or malformed ``param_ranges``.
    """
    if not is_spec(spec):
        try:
            return STRATEGIES[spec]
        except KeyError:
            raise ConfigError(f"unknown strategy {spec!r}", column="strategy",
                              expected=f"one of {sorted(STRATEGIES)} or {SPEC_FORMS}",
                              fix=did_you_mean(spec, STRATEGIES)) from None
    cls = load_strategy(spec)
    problems = range_problems(cls, require_all=False)
    if problems:
        raise ConfigError(f"strategy {spec} declares unusable parameter ranges: "
                          + "; ".join(problems), column="strategy",
                          expected="param_ranges entries that name a parameter and "
                                   "contain its default",
                          fix="correct param_ranges in the strategy class")
    return cls


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
                              column=key, expected=f"one of {sorted(known)}",
                              fix=did_you_mean(key, known))
        try:
            out[key] = check_value(owner, key, value, known[key], ranges.get(key))
        except ConfigError as exc:  # name the user's key, not the container
            raise ConfigError(exc.problem, source=exc.source, column=key,
                              expected=exc.expected, fix=exc.fix) from None
    return out


def strategy_label(cls: type[bt.Strategy]) -> str:
    """How messages name a strategy: its registered name, else ``file.py:Class`` or
    ``module:Class``."""
    for name, registered in STRATEGIES.items():
        if registered is cls:
            return name
    file = loaded_file(cls)
    if file is not None:
        return f"{file}:{cls.__qualname__}"
    return f"{cls.__module__}:{cls.__qualname__}"


def strategy_source_sha256(spec: str) -> str:
    """sha256 (hex) of the bytes of the source file that defines the strategy.

    Parameters
    ----------
    spec
        Anything :func:`get_strategy` accepts.

    Returns
    -------
    str
        64 hex digits over the defining file: the module file of a registered or
        module-spec strategy, the named file of a file-spec strategy. Files the
        strategy imports (such as ``strategies/base.py``) are not included.

    Raises
    ------
    ConfigError
        Whatever :func:`get_strategy` raises, or a class with no source file.
    """
    cls = get_strategy(spec)
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if not file or not Path(file).is_file():
        raise ConfigError(f"strategy {spec} has no source file to hash", column="strategy",
                          expected="a class defined in a .py file",
                          fix="define the strategy in a file and name it by path or module")
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()
