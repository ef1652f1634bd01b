"""BenchTracker: an Accelerate tracker recording config, values and messages in the store."""

from __future__ import annotations

import math
import time

import pytest
import torch
from accelerate.tracking import GeneralTracker

from benchkit.errors import TrainError
from benchkit.store import open_store
from benchkit.training import runs
from benchkit.training.helpers import get_accelerator
from benchkit.training.tracker import BenchAccelerateTracker, BenchTracker


def test_logged_values_steps_and_config_reach_the_store(tmp_path):
    store = open_store(tmp_path / "store")
    tracker = BenchTracker("exp", store=store, flush_interval=3600)
    acc = get_accelerator(log_with=tracker, cpu=True)
    acc.init_trackers("proj", config={"lr": 0.1, "layers": [2, 3]})
    acc.log({"loss": torch.tensor(0.5), "acc": 0.25, "phase": "train"}, step=0)
    acc.log({"loss": 0.25}, step=1)
    tracker.message("hello")
    assert runs.metric_parts(store, tracker.run_id) == []  # buffered, not yet written
    acc.end_training()
    rec = runs.load_record(store, tracker.run_id)
    assert rec.name == "exp" and rec.status == runs.FINISHED
    assert rec.config == {"lr": 0.1, "layers": [2, 3]}
    events = runs.read_events(store, tracker.run_id)
    assert len(runs.metric_parts(store, tracker.run_id)) == 1
    assert [e.get("step") for e in events if "values" in e] == [0, 1]
    assert events[0]["values"] == {"loss": 0.5, "acc": 0.25, "phase": "train"}
    assert all(isinstance(e["time"], float) for e in events)
    assert [e["message"] for e in events if "message" in e] == ["hello"]
    assert runs.metric_series(events)["loss"] == [(0, 0.5), (1, 0.25)]


def test_buffer_is_flushed_in_the_background_into_new_parts(tmp_path):
    store = open_store(tmp_path / "store")
    tracker = BenchTracker("bg", store=store, flush_interval=0.05)
    tracker.start()
    tracker.log({"x": 1.0}, step=0)
    deadline = time.monotonic() + 20
    while not runs.metric_parts(store, tracker.run_id) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(runs.metric_parts(store, tracker.run_id)) == 1
    tracker.log({"x": 2.0}, step=1)
    tracker.finish()
    parts = runs.metric_parts(store, tracker.run_id)
    assert len(parts) == 2  # the first part was not rewritten, a second one was added
    assert [e["values"]["x"] for e in runs.read_events(store, tracker.run_id)] == [1.0, 2.0]


def test_a_second_tracker_on_the_same_run_appends_parts(tmp_path):
    store = open_store(tmp_path / "store")
    first = BenchTracker("r", store=store, flush_interval=3600)
    first.start()
    first.log({"x": 1}, step=0)
    first.finish()
    second = BenchTracker("r", store=store, run_id=first.run_id, flush_interval=3600)
    second.start()
    second.log({"x": 2}, step=0)  # a resumed run repeats a step: the later value wins
    second.finish()
    parts = [p.rsplit("/", 1)[1] for p in runs.metric_parts(store, first.run_id)]
    # one part per writer, keyed by its seq range; the first writer's part is not rewritten
    assert parts == [f"{first.journal.writer}-000000000001-000000000001.jsonl",
                     f"{second.journal.writer}-000000000001-000000000001.jsonl"]  # fmt: skip
    assert runs.metric_series(runs.read_events(store, first.run_id))["x"] == [(0, 2)]


def test_metric_parts_of_older_versions_are_still_read(tmp_path):
    store = open_store(tmp_path / "store")
    rid = "20261124-153000-old-ab12"
    runs.save_record(store, runs.RunRecord(id=rid, name="old", status=runs.FINISHED))
    store.put(runs.run_key(rid, "metrics/000001.jsonl"),
              b'{"step": 0, "time": 1.0, "values": {"loss": "NaN", "acc": 0.5}}\n'
              b'{"time": 1.5, "message": "hello"}\n')  # fmt: skip
    store.put(runs.run_key(rid, "metrics/000002.jsonl"),
              b'{"step": 1, "time": 2.0, "values": {"loss": "-Infinity", "acc": 0.75}}\n')  # fmt: skip
    events = runs.read_events(store, rid)
    assert [e.get("message") for e in events] == [None, "hello", None]
    series = runs.metric_series(events)
    assert math.isnan(series["loss"][0][1]) and series["loss"][1] == (1, float("-inf"))
    assert series["acc"] == [(0, 0.5), (1, 0.75)]


def test_non_scalar_tensor_is_refused_with_its_key(tmp_path):
    tracker = BenchTracker("t", store=tmp_path / "store", flush_interval=3600)
    tracker.start()
    with pytest.raises(TrainError, match="'weights' is a tensor of shape \\(3,\\)"):
        tracker.log({"weights": torch.ones(3)})
    tracker.finish()


def test_the_original_tracker_works_through_get_accelerator(store):
    tracker_config = {"epochs": 10, "bs": 16, "lr": 1e-2}
    tracker = BenchAccelerateTracker("trial run", tracker_config["epochs"])
    acc = get_accelerator(log_with=tracker, cpu=True)
    acc.init_trackers("my_project", config=tracker_config)
    for step in range(3):
        acc.log({"loss": 1.0 / (step + 1)}, step=step)
    acc.end_training()
    s = open_store(store)
    [rid] = runs.list_run_ids(s)
    rec = runs.load_record(s, rid)
    assert rec.name == "trial run" and rec.status == runs.FINISHED
    assert rec.config == tracker_config
    assert runs.last_values(runs.read_events(s, rid)) == {"loss": pytest.approx(1 / 3)}
    assert rec.last == {"loss": pytest.approx(1 / 3)}


class ListTracker(GeneralTracker):
    """A second Accelerate tracker, keeping what it is given in a list."""

    name = "list"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.logged = []

    @property
    def tracker(self):
        return self.logged

    def log(self, values, step=None, **kwargs):
        self.logged.append((step, dict(values)))


def test_other_trackers_log_alongside(tmp_path):
    tracker, other = (
        BenchTracker("both", store=tmp_path / "store", flush_interval=3600),
        ListTracker(),
    )
    acc = get_accelerator(log_with=[tracker, other], cpu=True)
    acc.init_trackers("proj")
    acc.log({"loss": 0.5}, step=0)
    acc.end_training()
    assert runs.read_events(tracker.store, tracker.run_id)[0]["values"] == {"loss": 0.5}
    assert other.logged == [(0, {"loss": 0.5})]
