"""HTTP routes under ``/api/v1``: each parses the request, authorises it (the project comes
from the API key) and calls a service.

:data:`ROUTERS` is what :func:`benchkit.server.app.create_app` mounts; a new area (metrics,
dashboard pages, jobs) adds its router here. Every route that touches project data must
depend on :func:`benchkit.server.api.deps.reader` or ``writer``; the cross-project test walks
the OpenAPI document and fails on a route it does not know how to probe.
"""

from __future__ import annotations

from benchkit.server.api import blobs, catalog, dashboard, info, jobs, tracking, uploads

ROUTERS = [info.router, blobs.router, uploads.router, catalog.router, tracking.router, jobs.router]
ROUTERS.append(dashboard.router)  # the pages at / (outside the API and its schema)
