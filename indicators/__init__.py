"""Pure numpy/pandas analytics: dealer gamma, liquidation levels, futures basis.

Nothing here imports backtrader except :mod:`indicators.bt`, the thin wrapper
module, and nothing here imports another package of this project.
"""
