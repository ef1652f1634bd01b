"""The job shim as a real process: its child's output in numbered segments, exit.json, the
heartbeat; SIGINT passed on, SIGKILL after the grace; nothing of the job left behind; log bytes
kept and retried when the store refuses writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from benchkit.remote import joblog
from benchkit.remote.shim import ShimOptions, run_shim
from benchkit.store import LocalStore


def shim(store: Path, job: str, code: str, *flags: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "benchkit", "job-shim", "--job", job, "--store", str(store),
           "--flush", "0.2", "--heartbeat", "0.3", *flags, "--", sys.executable, "-c",
           textwrap.dedent(code)]  # fmt: skip
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ)
    )


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_output_and_exit_status_reach_the_store(tmp_path):
    store = tmp_path / "store"
    p = shim(
        store,
        "j1",
        """
        import sys, time
        for i in range(4):
            print("line", i, flush=True)
            time.sleep(0.3)
        print("to stderr", file=sys.stderr)
        sys.exit(3)
    """,
    )
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 3
    assert b"line 3" in out  # also copied to the shim's stdout (the engine's log)
    s = LocalStore(store)
    rec = joblog.read_exit(s, "j1")
    assert rec is not None and rec.exit_code == 3 and rec.signal is None and not rec.stop_requested
    text, end = joblog.read_log(s, "j1")
    assert text.decode().splitlines() == ["line 0", "line 1", "line 2", "line 3", "to stderr"]
    assert end == rec.bytes == len(text)
    assert len(joblog.list_segments(s, "j1")) == rec.segments >= 2  # flushed while it ran
    beat = joblog.read_heartbeat(s, "j1")
    assert beat is not None and beat.pid == p.pid and beat.bytes > 0


def test_sigint_is_passed_on_then_the_group_is_killed_after_the_grace(tmp_path):
    store = tmp_path / "store"
    p = shim(
        store,
        "j2",
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGINT, lambda *a: print("child got SIGINT", flush=True))
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # a grandchild
        print("ready", flush=True)
        while True:
            time.sleep(0.1)
    """,
        "--grace",
        "1",
    )
    s = LocalStore(store)
    wait_for(lambda: b"ready" in joblog.read_log(s, "j2")[0], what="the child to start")
    beat = wait_for(lambda: joblog.read_heartbeat(s, "j2"), what="a heartbeat")
    group = [q for q in psutil.process_iter() if _pgid(q) == beat.child_pgid]
    assert len(group) == 2  # the child and its grandchild
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=60)
    rec = joblog.read_exit(s, "j2")
    assert rec.stop_requested and rec.killed and rec.signal == "SIGKILL"
    assert p.returncode == 128 + 9
    assert "child got SIGINT" in joblog.read_log(s, "j2")[0].decode()
    assert not [q for q in group if q.is_running() and q.status() != psutil.STATUS_ZOMBIE]


def test_leftover_processes_of_a_finished_job_are_killed(tmp_path):
    store = tmp_path / "store"
    p = shim(
        store,
        "j3",
        """
        import subprocess, sys
        q = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(q.pid, flush=True)
    """,
    )
    p.communicate(timeout=60)
    assert p.returncode == 0
    orphan = int(joblog.read_log(LocalStore(store), "j3")[0].split()[0])
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except (ProcessLookupError, psutil.Error):
        return None


class FlakyStore(LocalStore):
    """A real directory store that refuses the first ``fail`` writes of log segments."""

    def __init__(self, root: Path, fail: int) -> None:
        super().__init__(root)
        self.fail = fail

    def put(self, key, data):
        if "/log/" in key and self.fail > 0:
            self.fail -= 1
            raise OSError("store unavailable")
        return super().put(key, data)


def test_log_segments_refused_by_the_store_are_retried_not_dropped(tmp_path):
    store = FlakyStore(tmp_path / "store", fail=3)
    code = "import time\nfor i in range(20):\n    print('n', i, flush=True)\n    time.sleep(0.05)\n"
    opts = ShimOptions(flush_s=0.1, heartbeat_s=0.5, tee=False, cwd=tmp_path)
    assert run_shim(store, "j4", [sys.executable, "-c", code], opts) == 0
    text, _ = joblog.read_log(store, "j4")
    assert text.decode().splitlines() == [f"n {i}" for i in range(20)]
    assert store.fail == 0


def test_a_second_attempt_continues_the_log_and_replaces_the_outcome(tmp_path):
    store = LocalStore(tmp_path / "store")
    opts = ShimOptions(flush_s=0.1, tee=False, cwd=tmp_path)
    assert (
        run_shim(store, "j5", [sys.executable, "-c", "print('first'); raise SystemExit(1)"], opts)
        == 1
    )
    assert run_shim(store, "j5", [sys.executable, "-c", "print('second')"], opts) == 0
    text, _ = joblog.read_log(store, "j5")
    assert text.decode().split() == ["first", "second"]
    rec = joblog.read_exit(store, "j5")
    assert rec.exit_code == 0 and rec.extra["attempt"] == 2


def test_read_log_from_any_offset_with_a_limit(tmp_path):
    store = LocalStore(tmp_path / "store")
    for seq, (start, data) in enumerate([(0, b"abc"), (3, b"defg"), (7, b"hi")], 1):
        store.put(joblog.segment_key("j6", seq, start), data)
    whole = b"abcdefghi"
    for offset in range(len(whole) + 1):
        got, pos = bytearray(), offset
        while True:  # a follower reading two bytes at a time
            data, pos = joblog.read_log(store, "j6", pos, limit=2)
            if not data:
                break
            got += data
        assert bytes(got) == whole[offset:] and pos == len(whole)


@pytest.mark.parametrize("cmd", [["/nonexistent/program"]])
def test_a_command_that_cannot_start_is_a_recorded_failure(tmp_path, cmd):
    store = LocalStore(tmp_path / "store")
    assert run_shim(store, "j7", cmd, ShimOptions(tee=False, cwd=tmp_path)) == 127
    rec = joblog.read_exit(store, "j7")
    assert rec.exit_code == 127 and "could not start" in rec.message
    assert b"cannot start" in joblog.read_log(store, "j7")[0]
