"""The tracker's server sink over real HTTP: which answers are retried (connection errors,
408, 429 with its ``Retry-After``, 5xx) and which stop sending (other 4xx, records kept for
``benchkit sync``), the 409 rewind, and values (NaN, infinities, text) as the real server
stores them. A scripted HTTP server on 127.0.0.1 gives the answers a real server gives only
under load or faults."""

from __future__ import annotations

import gzip
import json
import math
import time

import pytest
from serverkit import free_port
from test_client import _info, scripted  # noqa: F401  (the scripted HTTP server)
from trackkit import points_of

from benchkit.api_client import ApiClient
from benchkit.training.journal import Journal
from benchkit.training.sender import Sender, send_pending
from benchkit.training.server_sink import ServerSink

INGEST = "/api/v1/runs/run-1/metrics"
OK = (200, {"Content-Type": "application/json"}, b'{"acked_through": 5}')


def journal(tmp_path, url: str, n: int = 5) -> Journal:
    j = Journal.create("run-1", "w1", url, root=tmp_path / "journal")
    j.append([{"step": i, "time": 1.0 + i, "values": {"x": float(i)}} for i in range(n)])
    return j


def bodies(handler) -> list[dict]:
    return [json.loads(gzip.decompress(b)) for b in handler.bodies]


@pytest.fixture
def server(scripted):  # noqa: F811
    url, handler = scripted
    handler.script["/api/v1/info"] = [_info()]
    handler.bodies = []
    original = handler.do_POST

    def record_body(self) -> None:
        handler.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        original(self)

    handler.do_POST = record_body
    yield url, handler
    handler.do_POST = original


@pytest.mark.parametrize(
    "failure", [(503, {}), (502, {}), (500, {}), (408, {}), (429, {"Retry-After": "1"})],
    ids=["503", "502", "500", "408", "429"],
)  # fmt: skip
def test_transient_answers_are_retried_with_the_same_batch(tmp_path, server, failure):
    url, handler = server
    status, extra = failure
    handler.script[INGEST] = [(status, extra, b'{"detail":"busy"}'), OK]
    sender = Sender(journal(tmp_path, url), ServerSink(ApiClient(url, "bk_x")))
    t0 = time.monotonic()
    assert sender.drain(time.monotonic() + 60, 5) is True
    assert sender.failures == 0 and sender.rejected is None and sender.journal.acked() == 5
    sent = bodies(handler)
    assert len(sent) == 2 and sent[0] == sent[1]  # exactly the same batch again
    assert sent[0]["writer"] == "w1" and sent[0]["first_seq"] == 1
    assert [r["values"]["x"] for r in sent[0]["records"]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    if "Retry-After" in extra:
        assert time.monotonic() - t0 >= 1.0  # the server's wish was honoured


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_client_errors_stop_sending_and_keep_the_records(tmp_path, server, status):
    url, handler = server
    handler.script[INGEST] = [(status, {}, b'{"detail":"refused for a reason"}')]
    j = journal(tmp_path, url)
    sender = Sender(j, ServerSink(ApiClient(url, "bk_x")))
    assert sender.drain(time.monotonic() + 30, 5) is False
    why = "rejected the API key" if status == 401 else "refused for a reason"
    assert why in (sender.rejected or "")  # said, not retried (a revoked key stays revoked)
    assert len(handler.bodies) == 1  # never retried
    assert j.acked() == 0 and j.unsent() == 5  # all of it left for `benchkit sync`


def test_a_server_that_misses_earlier_records_gets_them_again(tmp_path, server):
    url, handler = server
    j = journal(tmp_path, url)
    j.ack(3)  # acknowledged before the server lost them (say, restored from a backup)
    handler.script[INGEST] = [
        (409, {"Content-Type": "application/json"}, b'{"detail":"gap","expected_seq":2}'),
        OK,
    ]
    assert send_pending(j, ServerSink(ApiClient(url, "bk_x")), timeout=30) == (2, 0)
    first, second = bodies(handler)
    assert first["first_seq"] == 4 and second["first_seq"] == 2  # rewound to what it misses
    assert [r["values"]["x"] for r in second["records"]] == [1.0, 2.0, 3.0, 4.0]


def test_an_unreachable_server_is_retried_not_fatal(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    sender = Sender(journal(tmp_path, url), ServerSink(ApiClient(url, "bk_x")))
    t0 = time.monotonic()
    assert sender.drain(time.monotonic() + 2, 5) is False
    assert time.monotonic() - t0 < 20  # bounded by the deadline, not hanging on the network
    assert sender.failures >= 1 and sender.rejected is None
    assert "cannot reach the Bench server" in (sender.last_error or "")
    assert sender.journal.unsent() == 5


def test_values_reach_a_real_server_as_logged(tmp_path, sqlite_server):
    p = sqlite_server.quick_project()
    j = Journal.create("vals", "w1", sqlite_server.url, root=tmp_path / "journal")
    logged = [1.5, math.nan, math.inf, -math.inf, 7, True]
    j.append([{"step": i, "time": 1.0 + i, "values": {"v": v}} for i, v in enumerate(logged)])
    j.append([{"step": 6, "time": 8.0, "values": {"v": 2.0, "note": "text, kept"}}])
    sink = ServerSink(ApiClient(sqlite_server.url, p.key, p.id))
    assert send_pending(j, sink, timeout=60) == (7, 0)
    assert send_pending(Journal.open(j.dir), sink, timeout=60) == (0, 0)  # sync again: nothing
    got = [pt["value"] for pt in points_of(sqlite_server, p.key, "vals", "v")]
    assert got == [1.5, "NaN", "Infinity", "-Infinity", 7.0, 1.0, 2.0]
    log = sink.client.json("GET", "runs", "vals", "log")
    assert "note=text, kept" in json.dumps(log)


def test_accelerate_and_the_tracker_log_to_a_real_server(sqlite_server, monkeypatch):
    """``accelerator.log`` through ``BenchAccelerateTracker`` with the server as the store: the
    run, its config and every value end up in the server's tracking tables."""
    import requests
    from trackkit import headers

    from benchkit.training.helpers import get_accelerator
    from benchkit.training.tracker import BenchAccelerateTracker

    p = sqlite_server.quick_project()
    monkeypatch.setenv("BENCHKIT_STORE", sqlite_server.url)
    monkeypatch.setenv("BENCHKIT_API_KEY", p.key)
    monkeypatch.setenv("BENCHKIT_PROJECT_ID", p.id)
    tracker = BenchAccelerateTracker("accelerate run", 10)
    acc = get_accelerator(log_with=tracker, cpu=True)
    acc.init_trackers("my_project", config={"lr": 0.01, "bs": 16})
    for step in range(50):
        acc.log({"loss": 1.0 / (step + 1)}, step=step)
    acc.end_training()
    table = requests.get(
        f"{sqlite_server.url}/api/v1/tracking/runs", headers=headers(p.key), timeout=60
    ).json()
    [run] = table["runs"]
    assert run["name"] == "accelerate run" and run["status"] == "finished"
    assert run["config"] == {"lr": 0.01, "bs": 16, "epochs": 10}
    pts = points_of(sqlite_server, p.key, run["id"], "loss")
    assert [(q["step"], q["value"]) for q in pts] == [(s, 1.0 / (s + 1)) for s in range(50)]
