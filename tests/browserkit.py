"""A real headless Chromium for dashboard tests, watched for console errors and off-host requests.

Debian's ``chromium`` driven by Selenium through Debian's ``chromedriver`` (same source package,
so the versions always match; ``SE_OFFLINE`` keeps Selenium Manager from downloading anything).
Every request the page makes is read back from Chrome's performance log (the DevTools
``Network.requestWillBeSent`` events) and every console message from its browser log, so a test
fails when the dashboard logs an error or asks any host but 127.0.0.1 for anything (no CDN, no
fonts, no telemetry). Other hosts also resolve to nothing (``--host-resolver-rules``), so even a
missed request could not leave the machine.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
#: URL schemes that never reach the network
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-error", "devtools"}


def missing_reason() -> str | None:
    """Why a browser test cannot run here, or None when Chromium and its driver are installed."""
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not shutil.which(path):
            return f"{path} is missing (apt-get install {pkg})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'benchkit[dev]')"
    return None


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return True
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname == "127.0.0.1"


@dataclass
class Browser:
    """One Chromium for a test session; :meth:`reset` between tests."""

    driver: object
    profile: Path
    shots: Path | None = None
    console: list[dict] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def get(self, url: str) -> None:
        self.driver.get(url)  # type: ignore[attr-defined]

    def collect(self) -> None:
        """Read the browser's console and network logs gathered since the last call."""
        d = self.driver
        self.console += d.get_log("browser")  # type: ignore[attr-defined]
        for entry in d.get_log("performance"):  # type: ignore[attr-defined]
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                self.requests.append(msg["params"]["request"]["url"])
            elif msg.get("method") == "Network.webSocketCreated":
                self.requests.append(msg["params"]["url"])

    def console_errors(self) -> list[str]:
        self.collect()
        return [m["message"] for m in self.console if m.get("level") == "SEVERE"]

    def offhost_requests(self) -> list[str]:
        self.collect()
        return [u for u in self.requests if not is_local(u)]

    def assert_clean(self) -> None:
        """Fail on any console error or any request that left 127.0.0.1 so far."""
        errors, offhost = self.console_errors(), self.offhost_requests()
        assert not errors, f"console errors: {errors}"
        assert not offhost, f"requests that left 127.0.0.1: {offhost}"

    def screenshot(self, name: str) -> Path:
        """A PNG of the whole window under the test's temporary directory."""
        assert self.shots is not None, "screenshot() is for use inside a test"
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))  # type: ignore[attr-defined]
        return path

    def reset(self, shots: Path | None) -> None:
        # leave the page first: a page left open keeps polling (a live run), and once the
        # cookies are gone its 401s would show up as the next test's console errors
        self.driver.get("about:blank")  # type: ignore[attr-defined]
        self.collect()
        self.console.clear()
        self.requests.clear()
        self.shots = shots
        # every site's cookies (delete_all_cookies only reaches the current page's: none here)
        self.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})  # type: ignore[attr-defined]

    def run_js(self, script: str, *args: object) -> object:
        return self.driver.execute_script(script, *args)  # type: ignore[attr-defined]

    def wait_for(self, script: str, timeout: float = 20.0) -> object:
        """Poll ``return <script>`` until it is truthy; return its value."""
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
            lambda d: d.execute_script("return " + script)
        )


def start() -> Browser:
    """Start headless Chromium with a fresh profile and logging of console and network."""
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="benchkit-chromium-"))
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    opts.add_experimental_option("perfLoggingPrefs", {"enableNetwork": True, "enablePage": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    return Browser(driver=driver, profile=profile)


def stop(b: Browser) -> None:
    try:
        b.driver.quit()  # type: ignore[attr-defined]
    finally:
        shutil.rmtree(b.profile, ignore_errors=True)


def canvas_pixel_variety(b: Browser, css: str) -> int:
    """How many distinct colours the element at ``css`` shows (a blank canvas shows one)."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    png = b.driver.find_element(By.CSS_SELECTOR, css).screenshot_as_png  # type: ignore[attr-defined]
    img = Image.open(io.BytesIO(png)).convert("RGB")
    return len(img.getcolors(maxcolors=1 << 20) or [])


def session(request) -> Iterator[Browser]:
    """The body of the session fixture: skip outside CI when there is no browser, fail in CI."""
    reason = missing_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests need Chromium in CI: {reason}")
        pytest.skip(reason)
    b = start()
    try:
        yield b
    finally:
        stop(b)


@pytest.fixture(scope="session")
def chromium(request):
    """One headless Chromium for the whole session."""
    yield from session(request)


@pytest.fixture
def browser(chromium: Browser, tmp_path) -> Iterator[Browser]:
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
