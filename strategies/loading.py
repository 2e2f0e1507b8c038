"""User strategies named by spec: ``path/to/file.py:ClassName`` or ``package.module:ClassName``.

A file is loaded with :func:`importlib.util.spec_from_file_location` under a module
name derived from its resolved path (``gammabt_user_strategy_<stem>_<hash>``) and kept
in ``sys.modules``, so loading the same file twice in one process returns the same
class and the class pickles by reference within that process and in forked workers.
Workers started with ``spawn`` import nothing of the sort and must load the spec
themselves. The file's bytes are hashed, compiled and run as read (no ``.pyc`` is
written beside it); a file whose bytes changed since it was loaded is loaded again.

The file's folder is not added to ``sys.path``: a strategy file may import installed
packages and gammabt's own (``strategies.base``), not its neighbours.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import backtrader as bt

from plumbing.errors import ConfigError
from strategies.params import did_you_mean

USER_MODULE_PREFIX = "gammabt_user_strategy_"
SPEC_FORMS = "path/to/file.py:ClassName or package.module:ClassName"

# module name -> sha256 of the file bytes it was loaded from
_LOADED_SHA256: dict[str, str] = {}


def is_spec(text: str) -> bool:
    """True when ``text`` names a user strategy (a file or module) rather than a
    registered strategy: it holds a colon, a path separator or ends with ``.py``."""
    return ":" in text or "/" in text or "\\" in text or text.endswith(".py")


def load_strategy(spec: str) -> type[bt.Strategy]:
    """Load the ``backtrader.Strategy`` subclass a spec names.

    Parameters
    ----------
    spec
        ``path/to/file.py:ClassName`` (relative paths resolve against the current
        directory, ``~`` is expanded) or ``package.module:ClassName``.

    Returns
    -------
    type
        The class, identical across repeated calls while the file is unchanged.

    Raises
    ------
    ConfigError
        Bad spec syntax, missing file, a file or module that fails to import (the
        underlying error on the same line), a missing class (with a hint over the
        Strategy classes it defines), or a class that is not a Strategy subclass.
    """
    target, class_name = _split(spec)
    if _is_file_target(target):
        module = _load_file(target)
        where = f"file {module.__file__}"
    else:
        module = _import_module(target)
        where = f"module {target}"
    found = getattr(module, class_name, None)
    if found is None:
        candidates = sorted(
            name for name, value in vars(module).items()
            if isinstance(value, type) and issubclass(value, bt.Strategy)
            and value.__module__ == module.__name__)
        fix = (did_you_mean(class_name, candidates) if candidates
               else f"define a backtrader.Strategy subclass named {class_name} in it")
        raise ConfigError(f"no class {class_name!r} in {where}", column="strategy",
                          expected=f"one of its Strategy classes {candidates}", fix=fix)
    if not (isinstance(found, type) and issubclass(found, bt.Strategy)):
        if isinstance(found, type):
            kind = "a class"
            fix = (f"derive {class_name} from strategies.base.GammaStrategy "
                   f"(or backtrader.Strategy)")
        else:
            kind = f"a {type(found).__name__}"
            fix = "name a class that subclasses backtrader.Strategy"
        raise ConfigError(f"{class_name} in {where} is {kind}, not a backtrader.Strategy "
                          f"subclass", column="strategy",
                          expected="a subclass of backtrader.Strategy", fix=fix)
    return found


def loaded_file(cls: type) -> Path | None:
    """The file a user strategy class was loaded from by path, else ``None``."""
    if not cls.__module__.startswith(USER_MODULE_PREFIX):
        return None
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    return Path(file) if file else None


def module_name_for(path: Path) -> str:
    """The deterministic module name a strategy file at ``path`` is loaded under."""
    resolved = path.expanduser().resolve()
    stem = re.sub(r"\W", "_", resolved.stem)
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    return f"{USER_MODULE_PREFIX}{stem}_{digest}"


def _bad_spec(spec: str, problem: str) -> ConfigError:
    return ConfigError(f"strategy spec {spec!r}: {problem}", column="strategy",
                       expected=f"a registered name or {SPEC_FORMS}",
                       fix="write the target, a colon, then the class name, "
                           "e.g. my_strategies.py:MyStrategy")


def _split(spec: str) -> tuple[str, str]:
    if ":" not in spec:
        raise _bad_spec(spec, "no class name after a colon")
    target, class_name = spec.rsplit(":", 1)
    target, class_name = target.strip(), class_name.strip()
    if not target:
        raise _bad_spec(spec, "nothing before the colon")
    if not class_name.isidentifier():
        raise _bad_spec(spec, f"{class_name!r} is not a class name")
    if not _is_file_target(target) and not all(
            part.isidentifier() for part in target.split(".")):
        raise _bad_spec(spec, f"{target!r} is neither a .py file nor a dotted module name")
    return target, class_name


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _load_file(target: str) -> ModuleType:
    given = Path(target).expanduser()
    path = given.resolve()
    if not path.is_file():
        raise ConfigError("strategy file not found", source=str(given), column="strategy",
                          expected="an existing .py file",
                          fix=f"check the path (resolved to {path}); relative paths are "
                              f"taken from the current directory")
    if path.suffix != ".py":
        raise ConfigError("strategy file is not a .py file", source=str(path),
                          column="strategy", expected="a Python source file ending in .py",
                          fix="rename the file or point at the .py source")
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    name = module_name_for(path)
    cached = sys.modules.get(name)
    if cached is not None and _LOADED_SHA256.get(name) == digest:
        return cached
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None:
        raise ConfigError("cannot make a module of the strategy file", source=str(path),
                          column="strategy", expected="a Python source file ending in .py",
                          fix="point at the .py source")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before executing, as import does (dataclasses, pickle)
    try:
        # run the very bytes that were hashed: the loader would re-read the file and may
        # reuse a cached .pyc of an edit made within the same second
        exec(compile(source, str(path), "exec", dont_inherit=True), module.__dict__)
    except Exception as exc:
        sys.modules.pop(name, None)
        _LOADED_SHA256.pop(name, None)
        raise ConfigError(f"strategy file failed to load ({_one_line(exc)})",
                          source=str(path), column="strategy",
                          expected="a Python file that imports cleanly",
                          fix=f"run `python {path}` to see the full traceback") from None
    _LOADED_SHA256[name] = digest
    return module


def _import_module(target: str) -> ModuleType:
    try:
        return importlib.import_module(target)
    except Exception as exc:
        missing = isinstance(exc, ModuleNotFoundError) and exc.name is not None \
            and (target == exc.name or target.startswith(exc.name + "."))
        fix = ("check the dotted name and that the package is installed or on sys.path"
               if missing else f"run `python -c 'import {target}'` to see the full traceback")
        raise ConfigError(f"cannot import strategy module {target} ({_one_line(exc)})",
                          column="strategy", expected="an importable module", fix=fix) from None
