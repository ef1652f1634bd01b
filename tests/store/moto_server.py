"""Run moto's S3 server (``python -m moto.server``) with its conditional writes made atomic.

moto checks ``If-None-Match: *`` / ``If-Match`` and then writes, without a lock, on a threaded
server: two racing conditional PUTs of one key can both succeed, where S3 lets exactly one
through (which BenchKit's claims, such as ``migrate code``'s version numbers, rely on). Here
requests carrying a condition are handled one at a time; everything else runs as in moto.

    python tests/store/moto_server.py -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import moto.server

_conditional = threading.Lock()
_Dispatcher = moto.server.DomainDispatcherApplication


class AtomicConditionalWrites(_Dispatcher):  # type: ignore[misc, valid-type]
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_IF_NONE_MATCH") or environ.get("HTTP_IF_MATCH"):
            with _conditional:
                return super().__call__(environ, start_response)
        return super().__call__(environ, start_response)


moto.server.DomainDispatcherApplication = AtomicConditionalWrites

if __name__ == "__main__":
    moto.server.main(sys.argv[1:])
