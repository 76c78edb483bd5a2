"""Headless Chromium for the console's tests and ``flowlens bench console``: Debian's browser, never a download.

Playwright for Python drives the system Chromium (``/usr/bin/chromium``, installed by
``scripts/setup.sh``; ``FLOWLENS_TEST_CHROMIUM`` points elsewhere).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM_ENV = "FLOWLENS_TEST_CHROMIUM"
VIEWPORT = {"width": 1280, "height": 800}  # the smallest screen the console is laid out for


def chromium_path() -> Path | None:
    """The system Chromium, or None when it is not installed."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return Path(found) if found else None


def launch(playwright):
    """A headless Chromium from a started ``sync_playwright()``; RuntimeError naming the fix when there is none."""
    path = chromium_path()
    if path is None:
        raise RuntimeError(
            f"no Chromium found (looked for ${CHROMIUM_ENV}, then `chromium` on PATH): "
            "run scripts/setup.sh, which installs Debian's chromium"
        )
    # --no-sandbox: the tests run as root on CI, where Chromium's sandbox refuses to start.
    return playwright.chromium.launch(executable_path=str(path), headless=True, args=["--no-sandbox"])
