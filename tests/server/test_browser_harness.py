"""The browser harness itself: it sees drawn canvases, console errors and off-host requests.

Pages are served from a temporary directory on 127.0.0.1 together with the vendored uPlot, so
these checks need no Bench server; the dashboard tests rely on them to fail when they should.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest
from browserkit import canvas_pixel_variety, is_local

import benchkit

UPLOT = Path(benchkit.__file__).parent / "server" / "dashboard" / "static" / "vendor" / "uplot"

CHART_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="uPlot.min.css"><script src="uPlot.iife.min.js"></script></head>
<body><div id="c"></div><script src="chart.js"></script></body></html>"""
CHART_JS = """
const xs = [], ys = [];
for (let i = 0; i < 500; i++) { xs.push(i); ys.push(Math.sin(i / 20)); }
window.__charts = [new uPlot({width: 600, height: 300, series: [{}, {label: "y", stroke: "red"}]},
                             [xs, ys], document.getElementById("c"))];
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A static site on 127.0.0.1 with uPlot and a few pages; yields its base URL."""
    root = tmp_path_factory.mktemp("site")
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):
        shutil.copy(UPLOT / name, root / name)
    (root / "favicon.ico").write_bytes(b"")
    (root / "chart.html").write_text(CHART_PAGE)
    (root / "chart.js").write_text(CHART_JS)
    (root / "blank.html").write_text('<!doctype html><canvas id="c" width="300" height="150">')
    (root / "error.html").write_text('<!doctype html><script src="error.js"></script>')
    (root / "error.js").write_text('console.error("something broke");')
    (root / "offhost.html").write_text('<!doctype html><img src="http://cdn.example.com/x.png">')
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


def test_a_drawn_chart_has_pixels_and_exposes_its_data(browser, site):
    browser.get(f"{site}/chart.html")
    n = browser.wait_for("window.__charts && window.__charts[0].data[1].length")
    assert n == 500
    assert canvas_pixel_variety(browser, "#c canvas") > 10
    browser.get(f"{site}/blank.html")
    assert canvas_pixel_variety(browser, "#c") <= 2
    assert browser.screenshot("chart").stat().st_size > 0
    browser.assert_clean()


def test_console_errors_are_seen(browser, site):
    browser.get(f"{site}/error.html")
    assert any("something broke" in m for m in browser.console_errors())
    browser.reset(browser.shots)  # seen on purpose: keep the fixture's teardown check quiet


def test_requests_to_other_hosts_are_seen_and_go_nowhere(browser, site):
    browser.get(f"{site}/offhost.html")
    browser.wait_for("document.readyState === 'complete'")
    assert browser.offhost_requests() == ["http://cdn.example.com/x.png"]
    browser.reset(browser.shots)


def test_only_loopback_and_inline_urls_count_as_local():
    assert is_local("http://127.0.0.1:8000/static/a.js")
    assert is_local("data:image/png;base64,AAAA")
    assert not is_local("http://localhost:8000/")
    assert not is_local("https://example.com/")
    assert not is_local("ws://10.0.0.1/")


def test_a_missing_browser_fails_in_ci_and_skips_elsewhere(monkeypatch):
    import browserkit

    monkeypatch.setattr(browserkit, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="need Chromium in CI"):
        next(browserkit.session(None))
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/chromium is missing"):
        next(browserkit.session(None))
