"""Fixtures of the console tests: one headless Chromium per session, a fresh page per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from tests.tools.console.helpers import VIEWPORT, launch_chromium


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    with sync_playwright() as p:
        browser = launch_chromium(p)
        yield browser
        browser.close()


@pytest.fixture
def new_page(chromium: Any) -> Iterator[Any]:
    """Factory of pages, each in its own browser context (own storage), closed after the test."""
    contexts: list[Any] = []

    def make() -> Any:
        ctx = chromium.new_context(viewport=VIEWPORT)
        ctx.set_default_timeout(10_000)
        contexts.append(ctx)
        return ctx.new_page()

    yield make
    for ctx in contexts:
        ctx.close()
