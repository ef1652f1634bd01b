"""A ``bench.File`` whose reading kills the process reading it (for the worker-crash test).

It lives in its own small module so spawned chunking workers can import it cheaply.
"""

from __future__ import annotations

import os
import signal

from benchkit.data.sample import File


class KillerFile(File):
    """Reading it SIGKILLs the reading process, as the OOM killer would."""

    __slots__ = ()

    def read_bytes(self) -> bytes:
        os.kill(os.getpid(), signal.SIGKILL)
        return b""  # pragma: no cover
