"""Buy on the first bar and hold: the benchmark every tearsheet compares against."""

from __future__ import annotations

from strategies.base import GammaStrategy


class BuyAndHold(GammaStrategy):
    """Go long once, sized by the run's sizer, and never trade again."""

    param_ranges = {}  # no parameters

    def next(self) -> None:
        if self.direction() == 0 and self.pending is None:
            self.go(+1)
