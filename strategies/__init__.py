"""Backtrader strategies and the explicit registry that names them."""
