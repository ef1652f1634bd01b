"""fsutil: atomic writes, the file hash, writing many pieces at once and the exclusive lock
shared by every layer."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from benchkit import fsutil
from benchkit.errors import LockTimeout
from benchkit.fsutil import atomic_file, exclusive_lock, sha256_file


def test_sha256_file_matches_hashlib_across_blocks(tmp_path):
    data = bytes(range(256)) * 40_000  # > one 8 MiB block
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_atomic_file_leaves_the_old_file_on_error(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(path) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_exclusive_lock_excludes_another_process_and_times_out_with_the_lock_file(tmp_path):
    lock = tmp_path / "locks" / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from benchkit.fsutil import exclusive_lock\n"
         f"with exclusive_lock({str(lock)!r}):\n"
         "    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(
                LockTimeout, match=r"the journal is held by another process \(lock file .*x\.lock\)"
            ),
            exclusive_lock(lock, timeout=0.2, what="the journal"),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive_lock(lock, timeout=30):  # free once the holder is gone
        pass


def test_write_all_goes_on_after_short_writes_and_past_iov_max(tmp_path, monkeypatch):
    calls = []
    real = os.writev

    def short_writev(fd, buffers):  # a kernel may write less than asked: at most 7 bytes here
        calls.append(len(buffers))
        total, out = 0, []
        for b in buffers:
            take = bytes(b[: 7 - total])
            out.append(take)
            total += len(take)
            if total == 7:
                break
        return real(fd, out)

    pieces = [bytes([i % 251]) * (i % 5) for i in range(3000)]  # empty ones among them
    expected = b"".join(pieces)
    monkeypatch.setattr(os, "writev", short_writev)
    with open(tmp_path / "out", "wb", buffering=0) as f:
        assert fsutil.write_all(f.fileno(), pieces) == len(expected)
    assert (tmp_path / "out").read_bytes() == expected
    assert max(calls) <= fsutil._IOV_MAX


def test_write_all_writes_more_pieces_than_iov_max(tmp_path):
    pieces = [os.urandom(1000) for _ in range(2500)]
    with open(tmp_path / "out", "wb", buffering=0) as f:
        assert fsutil.write_all(f.fileno(), pieces) == 2_500_000
    assert (tmp_path / "out").read_bytes() == b"".join(pieces)
