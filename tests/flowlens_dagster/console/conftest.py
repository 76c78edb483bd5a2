"""Fixtures of the console's browser tests: headless Debian Chromium against the real API.

- ``browser`` (session): Playwright's Chromium (``flowlens_dagster.api.browser``).
- ``page`` (function): a 1280x800 page; its screenshot is saved as ``<tmp_path>/console.png`` at
  the end of the test, passed or failed, and the page's JavaScript errors fail the test.
- ``console`` (module): the API started as ``flowlens api`` on the test database with the known
  topology of ``topology.py`` loaded, and a viewer account; see ``ConsoleSite``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowlens_dagster.api import browser as chromium

SCREENSHOT = "console.png"


@pytest.fixture(scope="session")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = chromium.launch(playwright)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, tmp_path: Path) -> Iterator:
    context = browser.new_context(viewport=chromium.VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    yield page
    page.screenshot(path=str(tmp_path / SCREENSHOT))
    context.close()
    assert not errors, f"JavaScript errors in the console: {errors}"
