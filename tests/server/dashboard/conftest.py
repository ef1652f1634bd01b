"""Fixtures of the dashboard tests: one headless Chromium per session (see ``browserkit``)."""

from __future__ import annotations

import pytest
from browserkit import Browser, session


@pytest.fixture(scope="session")
def chromium(request):
    yield from session(request)


@pytest.fixture
def browser(chromium: Browser, tmp_path) -> Browser:
    """The session's browser, its logs cleared, screenshots going to this test's tmp dir.

    A test that leaves a console error or an off-host request behind fails at teardown.
    """
    shots = tmp_path / "screenshots"
    shots.mkdir()
    chromium.reset(shots)
    yield chromium
    errors, offhost = chromium.console_errors(), chromium.offhost_requests()
    chromium.reset(None)
    if errors or offhost:
        pytest.fail(f"console errors: {errors}; requests that left 127.0.0.1: {offhost}")
