"""Buy on the first bar and hold: the benchmark every tearsheet compares against."""

from __future__ import annotations

from dataclasses import dataclass

from strategies.base import GammaStrategy
from strategies.rules import SingleLegRules


@dataclass(frozen=True)
class HoldRules(SingleLegRules):
    """Long whenever flat (the sizer sizes it); never anything else."""

    def decide(self, values: tuple[float, ...], direction: int, held: int | None,
               entry_price: float | None) -> int | None:
        return +1 if direction == 0 else None


class BuyAndHold(GammaStrategy):
    """Go long once, sized by the run's sizer, and never trade again."""

    param_ranges = {}  # no parameters
    rules_class = HoldRules

    def __init__(self) -> None:
        super().__init__()
        self.rules = HoldRules()

    def next(self) -> None:
        target = self.rules.decide((), self.direction(), None, None)
        if target is not None:
            self.go(target)
