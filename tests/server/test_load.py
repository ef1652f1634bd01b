"""16 concurrent clients writing and reading back through one server for a bounded time:
no errors, no corrupt reads (correctness only; throughput is in benchmarks/server.py)."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time

import pytest

from benchkit.store.http import HttpStore

CLIENTS = 16
DURATION_S = 6.0
MiB = 1024 * 1024
SIZES = [0, 1, 1000, 64 * 1024, 300 * 1024, MiB, 2 * MiB + 7]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sixteen_clients_write_and_read_back_without_errors(bench_server):
    project = bench_server.quick_project()
    errors: list[str] = []
    corrupt: list[str] = []
    ops = [0] * CLIENTS
    stop_at = time.monotonic() + DURATION_S

    def client(i: int) -> None:
        rng = random.Random(i)
        # 1 MiB parts: the larger objects go through upload sessions, concurrently
        store = HttpStore(bench_server.url, project.key, project.id, part_size=MiB)
        mine: dict[str, str] = {}
        n = 0
        while time.monotonic() < stop_at:
            key = f"load/{i}/{n % 5}.bin"
            data = os.urandom(rng.choice(SIZES))
            try:
                store.put(key, data)
                mine[key] = hashlib.sha256(data).hexdigest()
                back = store.get(key)
                if back != data:
                    corrupt.append(f"{key}: got {len(back)} bytes, wrote {len(data)}")
                if data:
                    a = rng.randrange(len(data))
                    b = rng.randrange(a, len(data) + 10)
                    if store.get_range(key, a, b) != data[a:b]:
                        corrupt.append(f"{key}[{a}:{b}]")
                if store.stat(key).size != len(data):
                    corrupt.append(f"{key}: wrong size")
                if n % 7 == 6:
                    listed = store.list(f"load/{i}/")
                    if sorted(listed) != sorted(mine):
                        corrupt.append(f"listing of client {i}: {listed} != {sorted(mine)}")
                ops[i] += 1
            except Exception as e:  # counted, not raised: every thread reports
                errors.append(f"client {i}: {type(e).__name__}: {e}")
            n += 1
        store.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    assert not corrupt, corrupt[:5]
    assert all(n > 0 for n in ops), ops
    print(f"{sum(ops)} write+read rounds by {CLIENTS} clients in {DURATION_S:.0f} s")
