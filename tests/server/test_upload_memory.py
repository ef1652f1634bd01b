"""The server's memory while it receives a large body: the blocks of a body are reused, not
taken from the system page by page (minor page faults of the server process, counted by the
kernel), and a large upload leaves the server's resident memory where it was."""

from __future__ import annotations

import os
import sys

import pytest

from benchkit.server.serve import keep_freed_blocks
from benchkit.store.http import HttpStore

MiB = 1024 * 1024

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the server's counters from /proc"
)


def _minor_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])  # field 10, minflt


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_malloc_keeps_freed_blocks_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_blocks()


def test_a_large_upload_reuses_the_servers_memory(sqlite_server, tmp_path):
    project = sqlite_server.quick_project()
    store = HttpStore(sqlite_server.url, project.key, project.id, part_size=32 * MiB)
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        for _ in range(128):
            f.write(os.urandom(MiB))
    pid = sqlite_server.proc.pid
    store.put_file("warm.bin", path)  # the first body sizes the heap
    rss, faults = _rss(pid), _minor_faults(pid)
    store.put_file("big.bin", path)
    faults = _minor_faults(pid) - faults
    grown = _rss(pid) - rss
    print(f"128 MiB upload: {faults} minor faults, RSS {grown / MiB:+.1f} MiB")
    # 128 MiB is 32,768 pages: without the tuning glibc hands about a third of them back
    # and faults them in again; with it, blocks come from memory the server already holds
    assert faults < 2000, f"{faults} minor page faults for one 128 MiB upload"
    assert grown < 32 * MiB
    assert (
        store.get_range("big.bin", 5 * MiB, 5 * MiB + 4096)
        == path.read_bytes()[5 * MiB : 5 * MiB + 4096]
    )
