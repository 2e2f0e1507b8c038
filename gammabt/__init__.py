"""gammabt: gamma-, liquidation- and basis-aware crypto backtesting on Backtrader."""

__version__ = "0.1.0"
