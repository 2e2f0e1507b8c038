"""Headless Chromium for page tests: the DOM after scripts ran, console messages, a
screenshot, all from ``file://`` with the network off.

Without Chromium the tests skip with a reason, except in CI (``CI=true``), where a
missing browser is a failure: CI installs the Debian ``chromium`` package.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
XSS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")


def find_chromium() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def require_chromium() -> str:
    """The browser's path; skip (or fail when ``CI=true``) when there is none."""
    path = find_chromium()
    if path is None:
        why = (f"headless Chromium not installed (looked for {', '.join(CANDIDATES)} and "
               "/usr/bin/chromium)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{why}; CI must install the chromium package")
        pytest.skip(f"{why}; browser checks skipped")
    return path


def flags(profile: Path) -> list[str]:
    # Offline: every host resolves to nothing and any proxy use fails, so a page that
    # tried to fetch something would log a console error.
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--disable-default-apps", "--mute-audio", f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]


@dataclass(frozen=True)
class Rendered:
    dom: str
    console: list[str]


_CONSOLE = re.compile(r":CONSOLE[:(\]].*")


def render(chromium: str, page: Path, work: Path) -> Rendered:
    """The page's DOM after its scripts ran, and every console message it logged."""
    done = subprocess.run([chromium, *flags(work / "profile"), "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [m.group(0) for m in _CONSOLE.finditer(done.stderr)]
    return Rendered(dom=done.stdout, console=console)


def screenshot_dark_share(chromium: str, page: Path, work: Path,
                          size: str = "1280,2000") -> float:
    """Share of pixels darker than light grey in a screenshot of ``page``."""
    shot = work / "page.png"
    done = subprocess.run([chromium, *flags(work / "profile-shot"), f"--screenshot={shot}",
                           f"--window-size={size}", page.as_uri()],
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"))
    return float((pixels < 200).mean())


def chart_sections(dom: str) -> dict[str, str]:
    """DOM of each ``<div class="chart" data-chart=ID>`` by ID."""
    parts = re.split(r'<div class="chart" data-chart="([^"]+)">', dom)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def chart_has_data(section: str) -> bool:
    """Plotly drew something: a non-empty path in a trace, or a heatmap image."""
    if 'class="main-svg"' not in section:
        return False
    drawn = re.search(r'class="(js-line|point|hm|surface)"', section) is not None \
        or "<image" in section
    paths = re.findall(r'<path[^>]* d="(M[^"]{10,})"', section)
    return drawn and len(paths) > 0 or "<image" in section


def no_injected_markup(dom: str) -> bool:
    """None of the XSS payloads became an element (as text they are escaped)."""
    return (re.search(r"<script[^>]*>\s*alert\(1\)", dom) is None
            and re.search(r"<img[^>]*onerror", dom) is None)
