#!/usr/bin/env python
"""The dashboard with real runs: a Bench server, the cat/dog example trained twice against it
with two learning rates, and screenshots of the runs table, a run and the comparison taken by
headless Chromium (the README's picture).

    PYTHONPATH=. .venv/bin/python examples/catdog/dashboard.py [--out docs] [--keep]

Everything happens in a temporary directory (the server's data, BenchKit's home, the images);
``--keep`` leaves the server running afterwards and prints its URL and key.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default=str(ROOT / "docs"), help="where the PNGs go")
    p.add_argument("--lr", nargs=2, type=float, default=[3e-3, 3e-4])
    p.add_argument("--keep", action="store_true", help="leave the server running")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="catdog-dashboard-"))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BENCHKIT_HOME": str(work / "home"),
        "OMP_NUM_THREADS": "1",
    }
    py = sys.executable

    def bk(*a: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([py, "-m", "benchkit", *a], env=env, check=True, cwd=ROOT, **kw)

    data = work / "server"
    key = json.loads(
        bk("server", "create-project", "catdog", "--json", "--data-dir", str(data),
           capture_output=True, text=True).stdout
    )["api_key"]  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [py, "-m", "benchkit", "server", "--data-dir", str(data), "--port", str(port)],
        env=env, stdout=open(work / "server.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                requests.get(url + "/api/v1/info", timeout=2)
                break
            except requests.RequestException:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"the server did not start; see {work / 'server.log'}"
                    ) from None
                time.sleep(0.2)
        env.update(BENCHKIT_STORE=url, BENCHKIT_API_KEY=key)
        subprocess.run([py, "examples/catdog/make_data.py"], env=env, check=True, cwd=ROOT)
        bk("migrate", "data", "examples/catdog/train.py", "--yes")
        for lr in args.lr:
            bk(
                "run",
                "examples/catdog/train.py",
                "--name",
                f"catdog lr={lr:g}",
                "--config",
                f"lr={lr}",
            )
        bk("runs", "list")
        listed = json.loads(bk("runs", "list", "--json", capture_output=True, text=True).stdout)
        ids = [r["id"] for r in listed[-len(args.lr) :]]
        shoot(url, key, ids, Path(args.out))
        if args.keep:
            print(f"the server keeps running at {url} (key {key}); stop it with kill {server.pid}")
            return 0
    finally:
        if not args.keep:
            server.terminate()
            server.wait(60)
    return 0


def shoot(url: str, key: str, ids: list[str], out: Path) -> None:
    """Sign in, then screenshot the runs table, the first run and the comparison."""
    import browserkit
    from selenium.webdriver.common.by import By

    b = browserkit.start()
    try:
        d = b.driver
        d.set_window_size(1400, 1000)
        b.get(url + "/signin")
        d.find_element(By.ID, "api_key").send_keys(key)
        d.find_element(By.ID, "signin-key").click()
        b.wait_for("document.querySelector('#project-name') !== null")
        b.get(url + "/runs")
        b.shots = out
        out.mkdir(parents=True, exist_ok=True)
        b.screenshot("dashboard-runs")
        b.get(f"{url}/runs/{ids[0]}")
        b.wait_for("document.body.dataset.chartsReady === '1'")
        b.screenshot("dashboard-run")
        d.set_window_size(1400, 1300)
        b.get(url + "/compare?" + "&".join(f"run={i}" for i in ids))
        b.wait_for("document.body.dataset.chartsReady === '1'")
        b.screenshot("dashboard")
        errors, offhost = b.console_errors(), b.offhost_requests()
        if errors or offhost:
            raise SystemExit(f"console errors {errors}, off-host requests {offhost}")
        print(f"screenshots in {out}: dashboard.png, dashboard-run.png, dashboard-runs.png")
    finally:
        browserkit.stop(b)


if __name__ == "__main__":
    sys.exit(main())
