"""The dashboard in a real headless Chromium against a real server with real runs: sign in,
the runs table, sorting by a metric, a run's charts, zoom, comparison, sign out; XSS payloads
stay text. The ``browser`` fixture fails the test on any console error and on any request
that leaves 127.0.0.1."""

from __future__ import annotations

import math

import pytest
from browserkit import canvas_pixel_variety
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from trackkit import ingest, make_run

pytestmark = pytest.mark.slow

XSS_NAME = '<img src=x onerror="window.__xss=1">'
XSS_LOG = '<img src=x onerror="window.__xss=4"> epoch done'


def _curve(lr: float, n: int = 300) -> dict[str, list[float]]:
    loss = [math.exp(-lr * 30 * i / n) + 0.05 * math.sin(i) for i in range(n)]
    acc = [min(0.99, 0.5 + lr * 3 * i / n) for i in range(n)]
    return {"loss": loss, "val_accuracy": acc}


@pytest.fixture(scope="module")
def runs(sqlite_server):
    p = sqlite_server.quick_project()
    for rid, lr in (("lr-high", 0.1), ("lr-low", 0.01)):
        make_run(sqlite_server, p.key, rid, f"catdog lr={lr}", {"lr": lr, "epochs": 3},
                 _curve(lr), monitor="val_accuracy", mode="max")  # fmt: skip
    make_run(sqlite_server, p.key, "xss", XSS_NAME, {"note": "<script>window.__xss=2</script>"},
             {'"><svg onload="window.__xss=3">': [1.0, 2.0]})  # fmt: skip
    line = [{"t": 9.0, "message": XSS_LOG}]  # the run's console log
    assert ingest(sqlite_server, p.key, "xss", line, writer="console").status_code == 200
    return p


def wait_charts(browser, n_charts: int, n_series: int = 1) -> None:
    browser.wait_for(
        f"window.__charts && window.__charts.length === {n_charts} && "
        f"window.__charts.every(c => c.uplot && c.series.length === {n_series} && c.drawnPoints() > 0)"
    )


def test_sign_in_browse_sort_chart_zoom_compare_sign_out(browser, sqlite_server, runs):
    d = browser.driver
    browser.get(sqlite_server.url + "/runs")
    assert d.current_url.startswith(sqlite_server.url + "/signin")
    d.find_element(By.ID, "api_key").send_keys(runs.key)
    d.find_element(By.ID, "signin-key").click()
    browser.wait_for("document.querySelector('#runs-table') !== null")
    browser.screenshot("runs")
    rows = [
        r.get_attribute("data-run")
        for r in d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")
    ]
    assert rows[:2] == ["lr-high", "lr-low"]  # by the criterion, best first

    # sort by a metric (click its column header): ascending, then descending
    d.find_element(By.CSS_SELECTOR, 'th[data-column="metric.loss"] a').click()
    browser.wait_for("location.search.includes('sort=metric.loss')")
    first = d.find_element(By.CSS_SELECTOR, "#runs-table tbody tr").get_attribute("data-run")
    d.find_element(By.CSS_SELECTOR, 'th[data-column="metric.loss"] a').click()
    browser.wait_for("location.search.includes('order=asc')")
    again = d.find_element(By.CSS_SELECTOR, "#runs-table tbody tr").get_attribute("data-run")
    assert (first, again) == ("lr-low", "lr-high")  # the higher last loss first, then the lower

    # a run: one chart per metric, with drawn points
    d.find_element(By.CSS_SELECTOR, 'tr[data-run="lr-low"] a.run-link').click()
    wait_charts(browser, 2)
    assert d.find_element(By.ID, "run-name").text == "catdog lr=0.01"
    assert canvas_pixel_variety(browser, "#charts section.chart canvas") > 20
    browser.screenshot("run")
    # smoothing, log scale and time on the x axis only redraw
    d.execute_script(
        "const s = document.getElementById('smoothing'); s.value = 0.8; s.dispatchEvent(new Event('input'))"
    )
    d.find_element(By.ID, "log-scale").click()
    d.execute_script(
        "const x = document.getElementById('x-mode'); x.value = 'time'; x.dispatchEvent(new Event('input'))"
    )
    wait_charts(browser, 2)
    assert (
        browser.run_js("return window.__charts[0].uplot.series.length") > 3
    )  # smoothed + raw + band
    d.execute_script(
        "const x = document.getElementById('x-mode'); x.value = 'step'; x.dispatchEvent(new Event('input'))"
    )
    d.find_element(By.ID, "log-scale").click()

    # zoom: drag across the first chart; the server re-buckets the range
    loads = browser.run_js("return window.__charts[0].loads")
    over = d.find_element(By.CSS_SELECTOR, "#charts section.chart .u-over")
    w = over.size["width"]
    ActionChains(d).move_to_element_with_offset(over, -w // 4, 0).click_and_hold().move_by_offset(
        w // 5, 0).release().perform()  # fmt: skip
    browser.wait_for(f"window.__charts[0].range !== null && window.__charts[0].loads > {loads}")
    lo, hi = browser.run_js("return window.__charts[0].range")
    assert 0 <= lo < hi < 299
    xs = browser.run_js("return window.__charts[0].series[0].x")
    assert xs[0] >= lo - 16 and xs[-1] <= hi + 16  # buckets of the zoomed range only
    browser.screenshot("zoomed")

    # compare two runs: curves overlaid
    browser.get(sqlite_server.url + "/runs")
    for rid in ("lr-high", "lr-low"):
        d.find_element(By.CSS_SELECTOR, f'tr[data-run="{rid}"] input[name=run]').click()
    d.find_element(By.ID, "compare").click()
    wait_charts(browser, 2, n_series=2)
    assert canvas_pixel_variety(browser, "#charts section.chart canvas") > 20
    browser.screenshot("compare")

    # sign out: the project is gone from the browser
    d.find_element(By.ID, "signout").click()
    browser.wait_for("location.pathname === '/signin'")
    browser.get(sqlite_server.url + "/runs")
    assert d.current_url.startswith(sqlite_server.url + "/signin")
    assert "catdog" not in d.page_source
    browser.assert_clean()


def test_xss_payloads_stay_text_in_the_browser(browser, sqlite_server, runs):
    d = browser.driver
    browser.get(sqlite_server.url + "/signin")
    d.find_element(By.ID, "api_key").send_keys(runs.key)
    d.find_element(By.ID, "signin-key").click()
    browser.wait_for("document.querySelector('#project-name') !== null")
    for path in ("/", "/runs", "/runs/xss", "/compare?run=xss&run=lr-low"):
        browser.get(sqlite_server.url + path)
        browser.wait_for("document.readyState === 'complete'")
        if path.startswith(("/runs/", "/compare")):
            browser.wait_for("document.body.dataset.chartsReady === '1'")
        assert browser.run_js("return window.__xss === undefined"), path
        with pytest.raises(NoAlertPresentException):
            d.switch_to.alert.text  # noqa: B018
    browser.get(sqlite_server.url + "/runs/xss")
    browser.wait_for("document.body.dataset.chartsReady === '1'")
    assert d.find_element(By.ID, "run-name").text == XSS_NAME
    titles = [h.text for h in d.find_elements(By.CSS_SELECTOR, "#charts h3")]
    assert titles == ['"><svg onload="window.__xss=3">']
    assert XSS_LOG in d.find_element(By.ID, "run-log").text  # shown as text
    browser.assert_clean()


def test_a_running_run_updates_live_in_the_table_and_its_charts(browser, sqlite_server, runs):
    from trackkit import put_record, record

    d = browser.driver
    put_record(sqlite_server, runs.key, record("live", "live run", {"lr": 0.5}, status="running"))
    assert ingest(
        sqlite_server, runs.key, "live", [{"t": 1.0, "step": 0, "values": {"loss": 9.0}}]
    ).ok
    browser.get(sqlite_server.url + "/signin")
    d.find_element(By.ID, "api_key").send_keys(runs.key)
    d.find_element(By.ID, "signin-key").click()
    browser.wait_for("document.querySelector('#project-name') !== null")
    browser.get(sqlite_server.url + "/runs")
    cell = 'document.querySelector(\'tr[data-run="live"] td[data-col="metric.loss"]\').textContent'
    assert browser.run_js(f"return {cell}") == "9"
    recs = [{"t": 2.0, "step": 1, "values": {"loss": 4.5}}]
    assert ingest(sqlite_server, runs.key, "live", recs, first_seq=2).ok
    browser.wait_for(f"{cell} === '4.5'", timeout=30)  # the table's poll picked it up
    browser.get(sqlite_server.url + "/runs/live")
    browser.wait_for("document.body.dataset.chartsReady === '1'")
    assert browser.run_js("return window.__charts[0].series[0].points") == 2
    recs = [{"t": 3.0 + i, "step": 2 + i, "values": {"loss": 1.0}} for i in range(3)]
    assert ingest(sqlite_server, runs.key, "live", recs, first_seq=3).ok
    browser.wait_for("window.__charts[0].series[0].points === 5", timeout=30)
    browser.assert_clean()
