"""``create_app(config)``: the FastAPI application of a Bench server.

Building the app opens nothing; the lifespan does, in order: the database (migrations
applied), the server's key file, the blob store, the staging area (stray single-PUT files of
a killed run removed), the catalog items a killed run left pending, and a thread that expires
idle upload sessions. Shutdown closes them in reverse order, after uvicorn has let requests
in flight finish (or cancelled them after the grace period; an upload cancelled half way is
discarded, never made visible).

Routers come from :data:`benchkit.server.api.ROUTERS`; the dashboard (issue 13) and jobs
(issue 14) add theirs there and their services to :class:`Services`.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from benchkit._version import __version__
from benchkit.server.config import ServerConfig
from benchkit.server.db.migrate import upgrade, upgrade_if_needed
from benchkit.server.db.session import Database
from benchkit.server.services.accounts import Accounts
from benchkit.server.services.blobs import Blobs
from benchkit.server.services.catalog import Catalog
from benchkit.server.services.jobs import Jobs, open_jobs
from benchkit.server.services.keys import Keys, load_pepper
from benchkit.server.services.sessions import RateLimiter, Sessions
from benchkit.server.services.staging import Staging
from benchkit.server.services.tracking import Tracking
from benchkit.store import Store, open_store

log = logging.getLogger(__name__)

EXPIRE_EVERY_S = 3600.0


@dataclass
class Services:
    """Everything a route may call, opened once per server process."""

    config: ServerConfig
    db: Database
    keys: Keys
    store: Store
    catalog: Catalog
    blobs: Blobs
    tracking: Tracking
    accounts: Accounts
    sessions: Sessions
    signin_limiter: RateLimiter
    jobs: Jobs

    @classmethod
    def open(cls, config: ServerConfig, migrate: bool = True, quick: bool = False) -> Services:
        """Open the database (migrated), the key file and the store of ``config``.

        ``quick`` (the admin commands): run Alembic only when the schema is not at the head."""
        config.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(config.database_url)
        if migrate:
            (upgrade_if_needed if quick else upgrade)(db)
        keys = Keys(db, load_pepper(config.pepper_file))
        store = open_store(config.blob_store_url)
        catalog = Catalog(db, store)
        staging = Staging(store, config.staging_dir, config.reserve_bytes)
        blobs = Blobs(db, store, staging, catalog, config.max_put_bytes, config.max_upload_bytes)
        jobs = open_jobs(config, db, store, catalog, keys)
        sessions = Sessions(load_pepper(config.data_dir / "session-secret"), db)
        return cls(
            config,
            db,
            keys,
            store,
            catalog,
            blobs,
            Tracking(db, store),
            Accounts(db),
            sessions,
            RateLimiter(),
            jobs,
        )

    def recover(self) -> None:
        """Tidy what a killed server left: stray PUT files, pending catalog items, old uploads."""
        self.blobs.staging.sweep()
        self.catalog.resume_pending()
        self.blobs.expire_uploads(self.config.upload_ttl_s)

    def close(self) -> None:
        self.jobs.stop()
        self.store.close()
        self.db.close()


def create_app(config: ServerConfig) -> FastAPI:
    """The application for ``config`` (nothing is opened until it starts)."""
    from benchkit.server.api import ROUTERS, dashboard
    from benchkit.server.api.errors import install_error_handlers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.open(config)
        services.recover()
        app.state.services = services
        stop = threading.Event()
        expirer = threading.Thread(
            target=_expire_loop, args=(services, stop), name="bench-expire", daemon=True
        )
        expirer.start()
        services.jobs.start()  # reconciles (and so adopts) the jobs a previous run left
        # what is loaded by now lives as long as the server: out of the cyclic collector's
        # sight, so that its full passes stop walking it during ingest (a fifth of the time of
        # a metric batch without this; docs/BENCHMARKS.md issue 13)
        gc.freeze()
        log.info(
            "Bench server %s: database %s, store %s",
            __version__,
            services.db.safe_url(),
            services.store.url,
        )
        try:
            yield
        finally:
            stop.set()
            expirer.join(5)
            services.close()

    app = FastAPI(
        title="Bench server",
        version=__version__,
        summary="Projects, API keys, blobs and the catalog of a self-hosted BenchKit cloud.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(RejectControlCharacters)
    dashboard.install(app)
    return app


class RejectControlCharacters:
    """400 for a URL whose decoded path holds a control character (``%0A``, ``%00``...): no
    route could match it meaningfully, and it must not reach a log line or a file name."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and any(ord(c) < 32 or ord(c) == 127 for c in scope["path"]):
            from starlette.responses import JSONResponse

            response = JSONResponse(
                {"detail": "invalid store key: control characters are not allowed in URLs"},
                status_code=400,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _expire_loop(services: Services, stop: threading.Event) -> None:
    while not stop.wait(EXPIRE_EVERY_S):
        try:
            services.blobs.expire_uploads(services.config.upload_ttl_s)
        except Exception:
            log.exception("expiring upload sessions failed")
