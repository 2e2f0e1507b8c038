"""Implementation modules of the market simulator; the public entry is :mod:`feeds.synthetic`."""
