"""Fixtures shared by the page tests."""

from __future__ import annotations

import pytest

from tests.integration.browser import require_chromium


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of headless Chromium; skips (fails in CI) when it is not installed."""
    return require_chromium()
