"""The cat/dog example end to end against a Bench server, with nothing but the server's URL and
a key: migrate data, migrate code, run (once from the file, once from the stored version with
--resume), each in its own process as a user types them, then runs, checkpoints, versions and
datasets (in this process: they only read from the server).

Then issue 13's "done when", literally: a run with another learning rate, and every run in a
real Chromium: the project page (datasets, the code version, checkpoints), the runs table (a
column per hyperparameter and metric, sorted by the example's criterion, filtered), each run's
page (one drawn chart per metric, config, console log, checkpoints with the best marked, a
download), and the comparison with the curves overlaid; no console error, no request off
127.0.0.1. (One test, so the example's data and code are migrated and trained once.)"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from browserkit import canvas_pixel_variety
from selenium.webdriver.common.by import By
from serverkit import child_env

from benchkit.cli.main import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catdog"


def load_make_data():
    spec = importlib.util.spec_from_file_location("catdog_make_data", EXAMPLE / "make_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_catdog_against_a_server_and_in_the_browser(
    sqlite_server, browser, tmp_path, monkeypatch, capsys
):
    project = sqlite_server.create_project("catdog-" + tmp_path.name[-8:])
    data = tmp_path / "data"
    load_make_data().make(data, 120, size=32)
    work = tmp_path / "catdog"
    work.mkdir()
    shutil.copy(EXAMPLE / "train.py", work / "train.py")
    env = child_env(
        CATDOG_DATA=str(data),
        BENCHKIT_HOME=str(tmp_path / "home"),
        BENCHKIT_STORE=sqlite_server.url,
        BENCHKIT_API_KEY=project.key,
        BENCHKIT_PROJECT_ID=project.id,
        OMP_NUM_THREADS="1",
    )

    def bk(*args: str) -> str:
        res = subprocess.run(
            [sys.executable, "-m", "benchkit", *args],
            capture_output=True, text=True, env=env, cwd=work, timeout=600,
        )  # fmt: skip
        assert res.returncode == 0, f"benchkit {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
        return res.stdout

    for name in ("CATDOG_DATA", "BENCHKIT_HOME", "BENCHKIT_STORE", "BENCHKIT_API_KEY",
                 "BENCHKIT_PROJECT_ID"):  # fmt: skip
        monkeypatch.setenv(name, env[name])
    monkeypatch.chdir(work)

    def look(*args: str) -> str:
        """A command that only reads from the server, in this process (the same parser and
        code as the CLI, without an interpreter and torch to start each time)."""
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        assert code == 0, f"benchkit {' '.join(args)}:\n{out.out}\n{out.err}"
        return out.out

    bk("migrate", "data", "train.py", "--yes")
    datasets = json.loads(look("datasets", "list", "--json"))
    assert [(d["name"], d["complete"]) for d in datasets] == [("train", True), ("val", True)]
    assert sum(d["samples"] for d in datasets) == 120
    bk("migrate", "code", "train.py", "-m", "first")
    [version] = json.loads(look("versions", "list", "--json"))
    assert version["version"] == 1 and version["message"] == "first"
    out = bk("run", "train.py", "--cpu", "-c", "epochs=1", "--name", "catdog-server")
    assert "validation accuracy" in out
    out = bk(
        "run", "--version", "1", "--cpu", "-c", "epochs=2", "--name", "catdog-server", "--resume"
    )
    listed = json.loads(look("runs", "list", "--json"))
    assert listed and all(r["status"] == "finished" for r in listed)
    first, second = listed[0], listed[-1]
    checkpoints = json.loads(look("checkpoints", "list", "--json"))
    assert {c["run_id"] for c in checkpoints} <= {first["id"], second["id"]} and checkpoints
    shown = look("runs", "show", second["id"])
    assert "val_accuracy" in shown
    look("checkpoints", "get", checkpoints[-1]["ref"], "--dest", str(tmp_path / "ckpt"))
    assert any((tmp_path / "ckpt").rglob("meta.json"))
    assert project.key not in sqlite_server.log()

    # issue 13: another learning rate, from the stored version, then all of it in the browser
    bk("run", "--version", "1", "--cpu", "-c", "epochs=2", "-c", "workers=0", "-c", f"lr={LR2}",
       "--name", f"catdog lr={LR2:g}")  # fmt: skip
    table = requests.get(f"{sqlite_server.url}/api/v1/tracking/runs", timeout=60,
                         headers={"Authorization": f"Bearer {project.key}"}).json()  # fmt: skip
    assert len(table["runs"]) >= 2 and {r["status"] for r in table["runs"]} == {"finished"}
    dashboard_shows_the_runs(browser, sqlite_server, project, [r["id"] for r in table["runs"]])


LR2 = 3e-4
METRICS = {"loss", "val_accuracy"}  # what the example logs (besides its epoch)


def wait_charts(browser, n_series: int) -> list[str]:
    """Wait until every chart has drawn ``n_series`` series with points; the charts' metrics."""
    browser.wait_for(
        "document.body.dataset.chartsReady === '1' && window.__charts.length >= 2 && "
        f"window.__charts.every(c => c.series.length === {n_series} && "
        "c.series.every(s => s.points > 0) && c.drawnPoints() > 0)",
        timeout=60,
    )
    return browser.run_js("return window.__charts.map(c => c.key)")


def dashboard_shows_the_runs(browser, server, project, run_ids: list[str]) -> None:
    """Sign in with the project's key and look at everything the issue lists."""
    d = browser.driver
    browser.get(server.url + "/")
    d.find_element(By.ID, "api_key").send_keys(project.key)
    d.find_element(By.ID, "signin-key").click()
    browser.wait_for("document.querySelector('#project-name') !== null")

    # the project page: datasets, the code version, checkpoints, runs
    assert d.find_element(By.ID, "project-name").text == project.name
    datasets = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#datasets tr td:first-child")]
    assert datasets == ["train", "val"]
    versions = d.find_elements(By.CSS_SELECTOR, "#versions tr td:first-child")
    assert [v.text for v in versions] == ["1"]
    ckpt_rows = d.find_elements(By.CSS_SELECTOR, "#checkpoints tr td:first-child")
    assert len(ckpt_rows) >= 2  # each run keeps its last (and its best) checkpoint
    assert d.find_element(By.ID, "runs-count").text == f"{len(run_ids)} runs"
    browser.screenshot("project")

    # the runs table: every run, best first by the example's criterion; a column per lr
    d.find_element(By.ID, "runs-count").click()
    browser.wait_for("document.querySelector('#runs-table') !== null")
    cols = [th.get_attribute("data-column") for th in d.find_elements(By.CSS_SELECTOR, "#runs-table th[data-column]")]  # fmt: skip
    assert {"best", "config.lr", "config.epochs", "metric.loss", "metric.val_accuracy"} <= set(cols)
    rows = d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")
    assert sorted(r.get_attribute("data-run") for r in rows) == sorted(run_ids)
    best = [float(r.find_element(By.CSS_SELECTOR, 'td[data-col="best"]').text) for r in rows]
    assert best == sorted(best, reverse=True)  # val_accuracy, max: best first
    lrs = {float(r.find_element(By.CSS_SELECTOR, 'td[data-col="config.lr"]').text) for r in rows}
    assert lrs == {3e-3, LR2}  # the example's default and the other one
    ids = [r.get_attribute("data-run") for r in rows]
    browser.screenshot("runs")
    # filter by a hyperparameter through the form
    d.find_element(By.ID, "filter").send_keys("lr>0.001")
    d.find_element(By.CSS_SELECTOR, "#filter-form button[type=submit]").click()
    browser.wait_for("location.search.includes('q=')")
    names = [a.text for a in d.find_elements(By.CSS_SELECTOR, "#runs-table a.run-link")]
    assert names and set(names) == {"catdog-server"}

    # each run: one drawn chart per metric, its config, its console log, its checkpoints
    for rid in ids:
        browser.get(f"{server.url}/runs/{rid}")
        keys = wait_charts(browser, 1)
        assert set(keys) >= METRICS  # one chart per metric
        assert [h.text for h in d.find_elements(By.CSS_SELECTOR, "#charts h3")] == keys
        assert canvas_pixel_variety(browser, "#charts section.chart canvas") > 20
        assert d.find_element(By.ID, "run-status").text == "finished"
        assert "validation accuracy" in d.find_element(By.ID, "run-log").text
        assert "best" in d.find_element(By.ID, "run-checkpoints").text
        config = d.find_element(By.ID, "run-config").text
        assert "lr" in config and "epochs" in config
        if rid == ids[0]:
            browser.screenshot("run")
    link = d.find_element(By.CSS_SELECTOR, "#run-checkpoints a.download").get_attribute("href")
    cookie = {c["name"]: c["value"] for c in d.get_cookies()}
    got = requests.get(link, cookies=cookie, timeout=60)
    assert got.status_code == 200 and got.content
    assert got.headers["content-disposition"].startswith("attachment")

    # the comparison: the runs' curves overlaid on every chart
    browser.get(server.url + "/runs")
    for rid in ids:
        d.find_element(By.CSS_SELECTOR, f'tr[data-run="{rid}"] input[name=run]').click()
    d.find_element(By.ID, "compare").click()
    assert set(wait_charts(browser, len(ids))) == set(keys)
    assert canvas_pixel_variety(browser, "#charts section.chart canvas") > 20
    browser.screenshot("compare")
    browser.assert_clean()
