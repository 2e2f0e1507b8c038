"""The one error hierarchy of gammabt.

It lives in the lowest layer so every package (``indicators``, ``feeds``,
``strategies``, ``gammabt``) can raise and catch the same classes without
breaking the one-way import rule.

Every message a user sees says *where* (file, row, column), *what was expected*
and *how to fix it*. The CLI prints ``str(error)`` on one line and exits non-zero.
"""

from __future__ import annotations


class GammabtError(Exception):
    """Base class of every error a user can act on."""


class InputError(GammabtError, ValueError):
    """Input that cannot be used as given.

    Parameters
    ----------
    problem
        What is wrong, in a few words ("high < low", "column missing").
    source
        File path or other origin of the data ("<DataFrame>" when in memory).
    row
        0-based data row (excluding header lines) where the problem was first seen.
    column
        Column (or field) name concerned.
    expected
        What valid input looks like.
    fix
        What the user should do.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        row: int | None = None,
        column: str | None = None,
        expected: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.row = row
        self.column = column
        self.expected = expected
        self.fix = fix
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.source is not None:
            where.append(str(self.source))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        text = (", ".join(where) + ": " if where else "") + self.problem
        if self.expected:
            text += f"; expected {self.expected}"
        if self.fix:
            text += f". Fix: {self.fix}"
        return text


class DataError(InputError):
    """A data file or table that does not meet its canonical schema."""


class ConfigError(InputError):
    """A configuration value, CLI option or strategy parameter that is not valid."""
