"""``bench.File`` subclasses that misbehave when read, for the chunk writer's worker tests.

They live in their own small module so spawned chunking workers can import them cheaply.
"""

from __future__ import annotations

import os
import signal
import time

from benchkit.data.sample import File


class KillerFile(File):
    """Reading it SIGKILLs the reading process, as the OOM killer would."""

    __slots__ = ()

    def read_bytes(self) -> bytes:
        os.kill(os.getpid(), signal.SIGKILL)
        return b""  # pragma: no cover


class SlowFile(File):
    """Reading it takes 20 ms (a slow disk), so the generator can outrun the workers."""

    __slots__ = ()

    def read_bytes(self) -> bytes:
        time.sleep(0.02)
        return super().read_bytes()
