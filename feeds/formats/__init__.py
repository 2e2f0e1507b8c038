"""Vendor data formats: one module per vendor family, one dispatch for every input kind.

Each format module defines ``FORMATS``, a tuple of :class:`~feeds.formats.base.Format`
(``detect`` / ``read`` / ``map``) for the kinds it reads; :mod:`feeds.formats.dispatch`
finds them, picks the one that scores a file highest and runs the shared
:func:`~feeds.formats.conform.conform` step. The public loaders are in
:mod:`feeds.loaders` (bars, chains) and :mod:`feeds.derivs` (funding, open interest,
liquidations, futures) and :mod:`feeds.barriers`.

Shared parts
------------
base            Format, Mapped, LoadOptions
sniffing        sniff a file, read CSV/Parquet, parse cells
times           vendor time columns to UTC
chain_columns   option-chain column helpers (greeks, IV unit)
conform         the conform step, for every kind
dispatch        registry, detection, loading, cache keys, window filter

Formats
-------
generic             bars: generic CSV, Parquet
cryptodatadownload  bars
binance             bars (klines, hourly export), funding, open interest, liquidations
community           funding: daily means, 8-hourly spreadsheet
optionsdx           chain
deribit             chain: hourly file, API dumps (flat and dict greeks); instrument names
tardis              chain: options_chain
canonical           chain, funding, open interest, liquidations, futures, barriers
forwards            futures read off a chain's listed forwards
"""
