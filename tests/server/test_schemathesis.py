"""Schemathesis against the live server's OpenAPI document: no input gives a 5xx answer, and
no operation that declares a key works without one. Half the generated identifiers name real
things of the project (an object, a dataset, a code version, a run), so fuzzed ranges, bodies
and headers reach the code behind the 404s."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchkit.store.http import HttpStore

MAX_EXAMPLES = 10
RUN = "20260101-000000-fuzz-0001"

CONFIG = """
[dictionaries.keys]
values = ["data/obj.bin", "data/empty", "datasets/ds/index.json", "runs/{run}/run.json"]
[dictionaries.prefixes]
values = ["", "data/", "datasets/", "d"]
[dictionaries.names]
values = ["ds"]
[dictionaries.runs]
values = ["{run}"]
[dictionaries.versions]
values = [1]

[parameters]
"path.key" = {{ dictionary = "keys", probability = 0.5 }}
"query.prefix" = {{ dictionary = "prefixes", probability = 0.5 }}
"path.name" = {{ dictionary = "names", probability = 0.5 }}
"path.run_id" = {{ dictionary = "runs", probability = 0.5 }}
"path.version" = {{ dictionary = "versions", probability = 0.5 }}
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_input_makes_the_server_fail(bench_server, tmp_path):
    project = bench_server.quick_project()
    store = HttpStore(bench_server.url, project.key, project.id)
    store.put("data/obj.bin", bytes(range(256)) * 40)
    store.put("data/empty", b"")
    store.put_json(
        "datasets/ds/index.json", {"name": "ds"}
    )  # not a valid index: listed as incomplete
    store.put_json("code/1/manifest.json", {"version": 1, "files": []})
    store.put_json(f"runs/{RUN}/run.json", {"id": RUN, "name": "fuzz", "status": "finished"})
    (tmp_path / "schemathesis.toml").write_text(CONFIG.format(run=RUN))
    res = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run", bench_server.url + "/openapi.json",
            "--checks", "not_a_server_error,ignored_auth",
            "--header", f"Authorization: Bearer {project.key}",
            "--max-examples", str(MAX_EXAMPLES), "--seed", "12",
            # one worker: two share a code cache that crashes on this Python (schemathesis, not us)
            "--workers", "1",
            "--phases", "examples,coverage,fuzzing", "--generation-database", "none",
            "--request-timeout", "60", "--no-color", "--suppress-health-check", "all",
        ],
        capture_output=True,
        text=True,
        timeout=580,
        cwd=tmp_path,
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert "passed" in out.lower(), out[-2000:]
    assert project.key not in bench_server.log()
