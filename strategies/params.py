"""Declared parameter ranges of strategies and the checks that enforce them.

A strategy keeps its parameters as Backtrader ``params`` (so ``optstrategy`` and
pickling work) and states what values make sense as plain class data::

    class GammaFlip(GammaStrategy):
        params = (("lookback", 12), ("momentum_min", 0.01), ("allow_short", True))
        param_ranges = {"lookback": (1, 10_000), "momentum_min": (0.0, 1.0)}

A range is either inclusive numeric bounds ``(low, high)`` or, for a string
parameter, a tuple of the allowed choices ``("fast", "slow")``. Bool parameters need
none. Ranges are inherited: a subclass's ``param_ranges`` adds to (and overrides)
those of its bases.

Values are checked against the type of the parameter's default:

- bool: ``True``/``False``; strings ``1/0, true/false, yes/no, on/off``.
- int: whole numbers; ``2.5`` is refused, never truncated (``12.0`` and ``"12"``
  are accepted as 12).
- float: any real number (strings are parsed), never NaN or infinite.
- str: a string, one of the choices when a range is declared.
- default ``None``: not type-checked; a declared range still applies.

Any other default type is cast from strings as before and otherwise passed through.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import TypeAlias

import backtrader as bt

from plumbing.errors import ConfigError

Bounds: TypeAlias = tuple[int, int] | tuple[float, float]
Choices: TypeAlias = tuple[str, ...]
ParamRange: TypeAlias = Bounds | Choices

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def strategy_params(cls: type[bt.Strategy]) -> dict[str, object]:
    """The strategy's Backtrader params and their defaults, in declaration order."""
    return dict(cls.params._getitems())


def declared_ranges(cls: type[bt.Strategy]) -> dict[str, ParamRange]:
    """The ``param_ranges`` of ``cls`` merged over its bases (subclass entries win).

    Parameters
    ----------
    cls
        A ``backtrader.Strategy`` subclass; it may declare no ranges at all.

    Returns
    -------
    dict
        Parameter name -> ``(low, high)`` inclusive bounds or a tuple of string choices.
    """
    merged: dict[str, ParamRange] = {}
    for klass in reversed(cls.__mro__):
        own = klass.__dict__.get("param_ranges")
        if isinstance(own, Mapping):
            merged.update(own)
    return merged


def range_problems(cls: type[bt.Strategy], *, require_all: bool = True) -> list[str]:
    """Everything wrong with a strategy's declared ranges, as readable sentences.

    Parameters
    ----------
    cls
        A ``backtrader.Strategy`` subclass.
    require_all
        When true (the rule for registered strategies), every numeric parameter must
        declare a range. User strategies loaded by spec are checked with ``False``:
        they may omit ranges, but what they declare must still be well formed.

    Returns
    -------
    list of str
        Empty when the declaration is sound: every range names a parameter, has the
        right shape for the default's type, and contains the default.
    """
    params = strategy_params(cls)
    ranges = declared_ranges(cls)
    name = cls.__name__
    problems = [f"{name}.param_ranges names {key!r}, which is not a parameter "
                f"(parameters: {sorted(params)})" for key in ranges if key not in params]
    for key, default in params.items():
        allowed = ranges.get(key)
        if allowed is None:
            if require_all and _is_number(default):
                problems.append(f"{name} parameter {key!r} (default {default!r}) "
                                f"declares no range in param_ranges")
            continue
        shape = _shape_problem(default, allowed)
        if shape:
            problems.append(f"{name}.param_ranges[{key!r}] = {allowed!r}: {shape}")
            continue
        if default is not None:
            try:
                check_value(name, key, default, default, allowed)
            except ConfigError:
                problems.append(f"{name} parameter {key!r}: default {default!r} lies "
                                f"outside its declared range {_describe(default, allowed)}")
    return problems


def check_value(owner: str, key: str, value: object, default: object,
                allowed: ParamRange | None) -> object:
    """Cast one parameter value to its default's type and check it against its range.

    Parameters
    ----------
    owner
        How the strategy is named in messages (``gamma_flip``, ``my.py:MyStrat``).
    key
        Parameter name.
    value
        The value given (a string from the command line, a TOML value, ...).
    default
        The parameter's Backtrader default; its type is the expected type.
    allowed
        The declared range, or ``None`` when there is none.

    Returns
    -------
    object
        The value, cast to the default's type (see the module docstring).

    Raises
    ------
    ConfigError
        Wrong type, a non-integral number for an int, NaN or infinity for a float, a
        value outside the bounds, or a string that is not one of the choices. The
        message names the strategy, the parameter, the range and how to set it.
    """
    def refuse(what: str) -> ConfigError:
        return ConfigError(f"strategy {owner} parameter {key}={value!r} {what}",
                           column="params", expected=_describe(default, allowed),
                           fix=_fix(key, default, allowed))

    if isinstance(default, bool):
        out = _as_bool(value)
        if out is None:
            raise refuse("is not a boolean")
    elif isinstance(default, int):
        out = _as_int(value)
        if out is None:
            raise refuse("is not an integer")
    elif isinstance(default, float):
        out = _as_float(value)
        if out is None:
            raise refuse("is not a number")
        if not math.isfinite(out):
            raise refuse("is not a finite number")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise refuse("is not a string")
        out = value
    elif default is None or not isinstance(value, str):
        out = value
    else:
        try:
            out = type(default)(value)
        except (TypeError, ValueError):
            raise refuse(f"is not a {type(default).__name__}") from None
    if allowed is None:
        return out
    if _is_choices(allowed):
        if out not in allowed:
            raise refuse(f"is not one of {list(allowed)} ({did_you_mean(str(out), allowed)})")
        return out
    if not _is_number(out):
        raise refuse("is not a number")
    if isinstance(out, float) and not math.isfinite(out):
        raise refuse("is not a finite number")
    low, high = allowed
    if not (low <= out <= high):
        raise refuse("is out of range")
    return out


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A short hint: the closest choice, or the list of all of them."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    return f"did you mean {close[0]!r}?" if close else f"choose one of {sorted(choices)}"


# -- casting ----------------------------------------------------------------------------

def _as_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy.bool_, without importing numpy
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isfinite(number) and number.is_integer():
            return int(number)
    return None


def _as_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


# -- describing ranges --------------------------------------------------------------------

def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_choices(allowed: object) -> bool:
    return (isinstance(allowed, tuple) and len(allowed) > 0
            and all(isinstance(c, str) for c in allowed))


def _is_bounds(allowed: object) -> bool:
    return (isinstance(allowed, tuple) and len(allowed) == 2
            and all(_is_number(b) and not math.isnan(b) for b in allowed)
            and allowed[0] <= allowed[1])


def _shape_problem(default: object, allowed: object) -> str | None:
    if isinstance(default, bool):
        return "a bool parameter takes no range (remove the entry)"
    if isinstance(default, str):
        return None if _is_choices(allowed) else "a string parameter needs a tuple of choices"
    if _is_bounds(allowed):
        return None
    if default is None and _is_choices(allowed):
        return None
    return "expected inclusive numeric bounds (low, high) with low <= high"


def _fmt(number: float) -> str:
    return str(number) if isinstance(number, numbers.Integral) else f"{number:g}"


def _describe(default: object, allowed: ParamRange | None) -> str:
    if isinstance(default, bool):
        return "true or false (also 1/0, yes/no, on/off)"
    if allowed is not None and _is_choices(allowed):
        return f"one of {list(allowed)}"
    kind = ("an integer" if isinstance(default, int)
            else "a finite number" if isinstance(default, float)
            else "a string" if isinstance(default, str)
            else f"a {type(default).__name__}" if default is not None else "a value")
    if allowed is not None and _is_bounds(allowed):
        low, high = allowed
        return f"{kind} in [{_fmt(low)}, {_fmt(high)}]"
    return kind


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _fix(key: str, default: object, allowed: ParamRange | None) -> str:
    example = default
    if allowed is not None and _is_choices(allowed) and default not in allowed:
        example = allowed[0]
    elif allowed is not None and _is_bounds(allowed) and not (
            _is_number(default) and allowed[0] <= default <= allowed[1]):
        example = allowed[0]
    if example is None:
        return f"pass --param {key}=VALUE or {key} = VALUE under [params]"
    cli = _toml(example) if isinstance(example, bool) else str(example)
    return (f"use e.g. --param {key}={cli} or {key} = {_toml(example)} under [params] "
            f"(the default is {_toml(default)})")
