"""Run a Bench server with uvicorn until SIGTERM or SIGINT.

uvicorn handles both signals: it stops accepting connections, lets requests in flight finish
for ``config.shutdown_grace_s`` seconds, then cancels the rest (an upload cancelled half way
is discarded; see :mod:`benchkit.server.services.blobs`), and runs the app's shutdown. One
process serves every request (SQLite allows one writer; uploads are coordinated in memory).
"""

from __future__ import annotations

import logging

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


def serve(config: ServerConfig, log_level: str = "info") -> None:
    """Listen on ``config.host:config.port`` and serve until stopped."""
    import uvicorn

    from benchkit.server.app import create_app

    config.check_listen()
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
