"""The Bench server: a self-hosted gateway over a store, with projects, API keys and a catalog.

Layers, each knowing only the ones below it::

    api/       FastAPI routes: parse the request, authorise it, call a service
    services/  projects and keys, blobs and upload sessions, the catalog (no HTTP in them)
    db/        SQLAlchemy models, engine and sessions, Alembic migrations (applied at start)

``create_app(config)`` in :mod:`benchkit.server.app` builds the application and
:mod:`benchkit.server.serve` runs it with uvicorn. Nothing here is imported by the client
side of BenchKit; it needs the ``benchkit[server]`` extra.
"""
