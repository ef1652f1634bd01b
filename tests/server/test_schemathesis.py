"""Schemathesis against the live server's OpenAPI document: no input gives a 5xx answer, and
no operation that declares a key works without one. Half the generated identifiers name real
things of the project (an object, a dataset, a code version, a run), so fuzzed ranges, bodies
and headers reach the code behind the 404s. A few examples per operation keep it cheap on a small
machine (a deeper fuzz is ``MAX_EXAMPLES`` away); the JUnit report shows that every operation
of the OpenAPI document was still tested."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import requests

from benchkit.store.http import HttpStore

MAX_EXAMPLES = 4
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
            "--report", "junit", "--report-junit-path", str(tmp_path / "junit.xml"),
        ],
        capture_output=True,
        text=True,
        timeout=580,
        cwd=tmp_path,
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert "passed" in out.lower(), out[-2000:]
    spec = requests.get(bench_server.url + "/openapi.json", timeout=60).json()
    operations = {
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "put", "post", "patch", "delete", "head", "options"}
    }
    tested = {case.get("name") for case in ET.parse(tmp_path / "junit.xml").iter("testcase")}
    assert operations and operations <= tested, sorted(operations - tested)  # every one ran
    assert project.key not in bench_server.log()
