"""``runs list|show|delete`` and ``checkpoints list|get|delete`` (+ the original's aliases)."""

from __future__ import annotations

import json

import pytest
import torch

import benchkit as bench
from benchkit.store import open_store
from benchkit.training import runs


def make_run(name: str, epochs: int = 2) -> str:
    with bench.Run({"epochs": epochs, "keep_checkpoints": 5}, name=name, cpu=True) as run:
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model, opt = run.prepare(model, opt)
        for _epoch in run.epochs():
            for _ in range(3):
                loss = model(torch.ones(2, 2)).pow(2).mean()
                run.backward(loss)
                opt.step()
                opt.zero_grad()
                run.log({"loss": loss, "lr": 0.1})
            run.save_checkpoint()
    return run.run_id


@pytest.fixture
def two_runs(store):
    return make_run("alpha"), make_run("beta", epochs=1)


def test_runs_list_table_and_json(cli, two_runs):
    a, b = two_runs
    code, out, _ = cli("runs", "list")
    assert code == 0
    assert "alpha" in out and "beta" in out and "finished" in out and "loss=" in out
    code, out, _ = cli("runs", "list", "--json")
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [a, b]
    assert rows[0]["status"] == "finished" and rows[0]["duration"] >= 0
    assert rows[0]["last"]["lr"] == 0.1 and rows[0]["config"]["epochs"] == 2


def test_runs_show_text_and_json(cli, two_runs):
    a, _ = two_runs
    code, out, _ = cli("runs", "show", "alpha")  # a name means its latest run
    assert code == 0
    assert a in out and "config" in out and "loss" in out and "epoch-0002" in out
    assert any(ch in out for ch in "▁▂▃▄▅▆▇█")  # the chart
    code, out, _ = cli("runs", "show", "1", "--json")  # a row number of `runs list`
    data = json.loads(out)
    assert data["id"] == a
    assert [p["step"] for p in data["metrics"]["loss"]] == list(range(6))
    assert any("checkpoint epoch-0001 saved" in m["message"] for m in data["messages"])


def test_runs_show_unknown_run_is_an_error(cli, store):
    code, _, err = cli("runs", "show", "nope")
    assert code == 1 and "no run 'nope'" in err and "runs list" in err


def test_runs_delete_needs_yes_and_removes_checkpoints(cli, two_runs, store):
    a, b = two_runs
    code, _, _ = cli("runs", "delete", a)  # no terminal, no --yes: refused
    assert code == 1 and a in runs.list_run_ids(open_store(store))
    code, _, _ = cli("runs", "delete", a, "--yes")
    assert code == 0
    s = open_store(store)
    assert runs.list_run_ids(s) == [b]
    assert s.list(f"checkpoints/{a}/") == [] and s.list(f"runs/{a}/") == []


def test_checkpoints_list_filter_and_alias(cli, two_runs):
    a, b = two_runs
    code, out, _ = cli("checkpoints", "list", "--json")
    rows = json.loads(out)
    assert [r["ref"] for r in rows] == [f"{a}/epoch-0001", f"{a}/epoch-0002", f"{b}/epoch-0001"]
    assert all(r["size"] > 0 for r in rows)
    code, out, _ = cli("checkpoints", "list", "--run", b, "--json")
    assert [r["ref"] for r in json.loads(out)] == [f"{b}/epoch-0001"]
    code, out, _ = cli("show-check")
    assert code == 0 and "epoch-0002" in out and "Checkpoints" in out


def test_checkpoints_get_by_name_ref_and_row(cli, two_runs, tmp_path):
    a, b = two_runs
    code, _, err = cli("checkpoints", "get", "epoch-0001", "--dest", tmp_path / "x")
    assert code == 1 and "several runs" in err  # the name is in both runs
    code, _, _ = cli("checkpoints", "get", "epoch-0002", "--dest", tmp_path / "by-name")
    assert code == 0 and (tmp_path / "by-name" / "model.safetensors").is_file()
    code, _, _ = cli("checkpoints", "get", f"{b}/epoch-0001", "--dest", tmp_path / "by-ref")
    meta = json.loads((tmp_path / "by-ref" / "meta.json").read_text())
    assert code == 0 and meta["run_id"] == b
    code, _, _ = cli("get-check", "3", "--dest", tmp_path / "by-row")  # the original's alias, row 3
    assert code == 0 and json.loads((tmp_path / "by-row" / "meta.json").read_text())["run_id"] == b
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    code, _, err = cli("checkpoints", "get", "3", "--dest", tmp_path / "mine")
    assert code == 1 and "already exists" in err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_checkpoints_delete_by_names_not_rows(cli, two_runs, store):
    a, b = two_runs
    code, _, err = cli("del-check", "2", "--yes")  # rows shift: deleting by row is refused
    assert code == 1 and "'2' is not a checkpoint name" in err and "RUN/NAME" in err
    code, _, _ = cli("checkpoints", "delete", f"{a}/epoch-0001", "--yes")  # full id
    assert code == 0
    code, _, _ = cli("del-check", f"{runs.short_id(b)}/epoch-0001", "--yes")  # short id
    assert code == 0
    s = open_store(store)
    assert s.list("checkpoints/") == [f"checkpoints/{a}/epoch-0002"]
    assert [c["name"] for c in runs.load_record(s, a).checkpoints] == ["epoch-0002"]
    code, _, err = cli("del-check")  # no name and no terminal to ask on
    assert code == 1 and "which checkpoint" in err
    code, _, err = cli("runs", "delete", "1", "--yes")
    assert code == 1 and "looks like a row number" in err


def test_checkpoint_epochs_agree_between_table_and_json(cli, two_runs):
    a, _ = two_runs
    code, out, _ = cli("checkpoints", "list", "--run", a, "--json")
    rows = json.loads(out)
    assert [(r["name"], r["epoch"]) for r in rows] == [("epoch-0001", 1), ("epoch-0002", 2)]
    code, out, _ = cli("checkpoints", "list", "--run", a)
    table = [line for line in out.splitlines() if "epoch-000" in line]
    assert [line.split("│")[4].strip() for line in table] == ["1", "2"]
    code, out, _ = cli("runs", "show", a, "--json")  # the run's own listing counts the same way
    assert [(c["name"], c["epoch"]) for c in json.loads(out)["checkpoints"]] == [
        ("epoch-0001", 1), ("epoch-0002", 2),
    ]  # fmt: skip


def test_runs_table_fits_80_columns_with_whole_short_ids(cli, two_runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = cli("runs", "list")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    for rid in two_runs:
        assert runs.short_id(rid) in out and len(runs.short_id(rid)) == 8
    code, out, _ = cli("runs", "show", runs.short_id(two_runs[0]), "--json")
    assert json.loads(out)["id"] == two_runs[0]


def test_a_digit_is_a_row_number_never_a_short_id_prefix(cli, two_runs):
    """Short ids are random hex: one may start with '1'; `runs delete 1` must still be refused
    as a row number (prefixes count from four characters, as in git)."""
    a, _ = two_runs
    for ref in ("1", "12", "123", runs.short_id(a)[:3]):
        code, _, err = cli("runs", "delete", ref, "--yes")
        assert code == 1, ref
    code, _, _ = cli("runs", "delete", runs.short_id(a)[:4], "--yes")
    assert code == 0
