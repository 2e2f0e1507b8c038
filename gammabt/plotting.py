"""Matplotlib set-up for reports: headless backend, a font for "Arial", quiet libraries.

QuantStats draws every chart with ``fontname="Arial"`` hard-coded in its plotting
functions (``quantstats/_plotting/core.py`` and ``wrappers.py``; the tearsheet does not
let a caller choose another), and its import sets ``rcParams["font.family"] = "Arial"``
before seaborn's theme puts "Arial" first in ``font.sans-serif``. Linux rarely has Arial,
so matplotlib logs ``findfont: Font family 'Arial' not found`` once per text element:
about 130 lines for one tearsheet.

What we do instead of silencing the ``matplotlib.font_manager`` logger: register the
family name "Arial" in matplotlib's font manager as an alias of a font that is installed
(:func:`register_font_alias`). The lookup then succeeds, nothing is logged, and a
genuinely missing font elsewhere would still be reported. The alias target is, in order
of preference, "Liberation Sans" or "Arimo" (metric-compatible with Arial, so text
widths match what QuantStats' layout expects) and otherwise "DejaVu Sans", which ships
inside matplotlib and is therefore always present. Where a real Arial is installed
(macOS, Windows, msttcorefonts) nothing is changed.

The alias lives only in the in-memory font list of this process (matplotlib's on-disk
font cache is not touched) and is added at most once; it only adds a name that did not
resolve before, so no existing lookup changes.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib
from matplotlib import font_manager

__all__ = [
    "ALIAS_CANDIDATES",
    "QUANTSTATS_FONT",
    "configure_matplotlib",
    "quiet_report_warnings",
    "register_font_alias",
    "use_headless_backend",
]

QUANTSTATS_FONT = "Arial"
"""The family QuantStats asks for in every chart."""

ALIAS_CANDIDATES: tuple[str, ...] = ("Liberation Sans", "Arimo", "DejaVu Sans")
"""Installed families that may stand in for Arial, best first (metric-compatible first;
DejaVu Sans ships with matplotlib)."""

# Backends that never open a window; anything else is switched to Agg for reports.
_NON_INTERACTIVE = {"agg", "pdf", "ps", "svg", "pgf", "cairo", "template"}
_NOTEBOOK_INLINE = "module://matplotlib_inline.backend_inline"

# QuantStats' own UserWarnings for degenerate series (messages, as regexes).
_QUANTSTATS_NOTICES = (
    r"set_ticklabels\(\) should only be used with a fixed number of ticks",
    r"No non-zero returns found for win rate calculation",
    r"Beta is zero, cannot calculate Treynor ratio",
)

# Aliases this process registered: family asked for -> installed family serving it.
_ALIASES: dict[str, str] = {}


def _families() -> set[str]:
    return {entry.name for entry in font_manager.fontManager.ttflist}


def register_font_alias(family: str = QUANTSTATS_FONT,
                        candidates: tuple[str, ...] = ALIAS_CANDIDATES) -> str:
    """Make ``family`` resolve to an installed font (idempotent).

    Parameters
    ----------
    family
        The family name code asks for ("Arial" for QuantStats).
    candidates
        Installed families to alias it to, best first.

    Returns
    -------
    str
        The family that now serves ``family``: ``family`` itself when it was already
        installed (nothing changed), otherwise the first installed candidate.

    Notes
    -----
    Every face of the target (regular, bold, oblique, ...) is copied into the font
    manager's list under the new name, so bold titles stay bold. The lookup cache is
    cleared afterwards because matplotlib caches "not found" results too.
    """
    fm = font_manager.fontManager
    installed = _families()
    if family in installed:
        return _ALIASES.get(family, family)
    target = next((name for name in candidates if name in installed), None)
    if target is None:  # matplotlib always ships DejaVu Sans; this means a broken install
        raise RuntimeError(
            f"none of the fonts {candidates} is known to matplotlib; reinstall matplotlib "
            "(it ships DejaVu Sans) or install fonts-liberation"
        )
    fm.ttflist.extend(
        [dataclasses.replace(e, name=family) for e in fm.ttflist if e.name == target]
    )
    _ALIASES[family] = target
    # Same step as FontManager.addfont: "not found" answers are cached as well.
    fm._findfont_cached.cache_clear()
    return target


def use_headless_backend() -> str:
    """Switch matplotlib to Agg unless the current backend already draws no window.

    A notebook's inline backend is kept (it opens no window either). Returns the name of
    the backend in use afterwards.
    """
    backend = matplotlib.get_backend()
    if backend.lower() not in _NON_INTERACTIVE and backend != _NOTEBOOK_INLINE:
        matplotlib.use("Agg")
    return matplotlib.get_backend()


def configure_matplotlib() -> str:
    """Headless backend plus the "Arial" alias: everything a report run needs.

    Returns
    -------
    str
        The installed family that renders QuantStats' "Arial" text.
    """
    use_headless_backend()
    return register_font_alias()


@contextmanager
def quiet_report_warnings() -> Iterator[None]:
    """Hide the warnings QuantStats and seaborn raise from their own internals.

    Ignored, and only inside this block:

    - deprecation notices attributed to code inside ``quantstats`` or ``seaborn``
      (pandas' ``Pandas4Warning`` for ``inplace=``, matplotlib's ``vert=`` and
      ``set_bad`` deprecations): nothing a user of gammabt can act on;
    - matplotlib's ``set_ticklabels()`` notice triggered by QuantStats' yearly chart;
    - QuantStats' notices for degenerate but legitimate series (a strategy that never
      traded: "No non-zero returns found for win rate", "Beta is zero ... Treynor") and
      scipy's ``invalid value`` RuntimeWarning when QuantStats fits a normal curve to a
      series without spread. The metrics dict reports those values as None instead.

    Warnings from our own code or any other library still surface. ``warnings.catch_warnings`` is process-wide state,
    so do not rely on this from several threads at once.
    """
    libs = r"(quantstats|seaborn)(\..*)?$"
    with warnings.catch_warnings():
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=libs)
        for message in _QUANTSTATS_NOTICES:
            warnings.filterwarnings("ignore", message=message, category=UserWarning,
                                    module=libs)
        # scipy's norm fit in QuantStats' distribution charts, for a series with no spread
        warnings.filterwarnings("ignore", message="invalid value encountered",
                                category=RuntimeWarning, module=r"scipy\.stats\.")
        yield
