"""Run a Bench server with uvicorn until SIGTERM or SIGINT.

uvicorn handles both signals: it stops accepting connections, lets requests in flight finish
for ``config.shutdown_grace_s`` seconds, then cancels the rest (an upload cancelled half way
is discarded; see :mod:`benchkit.server.services.blobs`), and runs the app's shutdown. One
process serves every request (SQLite allows one writer; uploads are coordinated in memory).
"""

from __future__ import annotations

import ctypes
import logging
import platform

from benchkit.server.config import ServerConfig

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def logging_config(level: str = "info") -> dict:
    """Server logs on stderr: BenchKit's and uvicorn's, with the access log (method, path and
    status; never headers, so never a key)."""
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {"stderr": handler},
        "loggers": {
            "benchkit": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "alembic": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        },
    }


#: glibc ``mallopt`` parameters (malloc.h) and the values the server sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: blocks up to this size come from the heap, not from a fresh ``mmap`` each
MMAP_THRESHOLD = 4 * 1024 * 1024
#: free memory a heap keeps before giving it back to the system
TRIM_THRESHOLD = 32 * 1024 * 1024


def keep_freed_blocks() -> bool:
    """Let glibc reuse the freed memory of request bodies instead of returning it to the
    system and taking it back, zeroed, page by page. Without this, receiving 256 MB cost
    12,000 to 21,000 minor page faults (glibc gives back any free heap top over 2 x the
    size of the largest block freed so far); with it, a few.

    The cost: each malloc arena keeps up to ``TRIM_THRESHOLD`` bytes of free memory. Returns
    whether the setting took (False off glibc: musl, macOS, Windows)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def serve(config: ServerConfig, log_level: str = "info") -> None:
    """Listen on ``config.host:config.port`` and serve until stopped."""
    import uvicorn

    from benchkit.server.app import create_app

    config.check_listen()
    if not keep_freed_blocks():
        log.debug("malloc tuning not available here: large bodies cost more page faults")
    uv = uvicorn.Config(
        create_app(config),
        host=config.host,
        port=config.port,
        log_config=logging_config(log_level),
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        timeout_graceful_shutdown=int(config.shutdown_grace_s),
        server_header=False,
        proxy_headers=False,
        h11_max_incomplete_event_size=64 * 1024,
    )
    uvicorn.Server(uv).run()
