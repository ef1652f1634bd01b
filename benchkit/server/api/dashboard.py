"""The dashboard at ``/``: project page, runs table, run page, comparison, sign-in.

Who is looking comes from ``Authorization: Bearer <key>`` (scripts, curl, tests) or from a
session cookie set by signing in with a project key or a user account. Without either a page
shows nothing of any project: it redirects to the sign-in page. Every session is re-checked
on every request (a revoked key or a removed user ends it at once).

State-changing requests (sign-in, sign-out) need the form's CSRF token and must come from
this origin (``Origin``, else ``Referer``). Every page is sent with a strict
Content-Security-Policy (nothing from another host, no inline script), and templates escape
everything (Jinja2 autoescape); the pages' scripts write user text with ``textContent`` only.
The JSON the scripts read lives under ``/ui/data`` and takes the same session or key.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path as FsPath
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from anyio import to_thread
from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.responses import StreamingResponse as Streaming
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.templating import Jinja2Templates

from benchkit._version import __version__
from benchkit.server.api.deps import ServicesDep
from benchkit.server.api.tracking import Buckets, MetricKey, RunId, Step
from benchkit.server.services.errors import NotFound, ServiceError, Unauthorized
from benchkit.server.services.runs import RunView, Table
from benchkit.server.services.sessions import (
    LOGIN_COOKIE,
    LOGIN_MAX_AGE_S,
    SESSION_COOKIE,
    Session,
    csrf_ok,
)

log = logging.getLogger(__name__)

DASHBOARD = FsPath(__file__).resolve().parent.parent / "dashboard"
CSP = (
    "default-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
MAX_FORM = 16 * 1024
RECENT_RUNS = 10
LOG_LINES = 2000

router = APIRouter(include_in_schema=False)
_env = Environment(
    loader=FileSystemLoader(DASHBOARD / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
templates = Jinja2Templates(env=_env)
_env.globals["static"] = lambda path: f"/static/{path}?v={__version__}"


class _Static(StaticFiles):
    """The dashboard's assets, with ``nosniff`` (and cached: their URLs carry the version)."""

    async def get_response(self, path: str, scope: Any) -> Response:
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Cache-Control", "public, max-age=86400")
        return response


def install(app: FastAPI) -> None:
    """Mount the static assets and send pages without a viewer to the sign-in form (the page
    routes themselves come in through :data:`router`)."""
    app.mount("/static", _Static(directory=DASHBOARD / "static"), name="static")

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, exc: SignInRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        url = "/signin" + ("" if target == "/" else f"?{urlencode({'next': target})}")
        return RedirectResponse(url, status_code=303, headers=PAGE_HEADERS)


# --- who is looking -----------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    project_id: str
    project_name: str
    who: str
    #: the browser session (None when the request carried a key)
    session: Session | None


def viewer(request: Request, services: Any) -> Viewer | None:
    """The project this request may see, or None (no key and no valid session)."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthorized("use `Authorization: Bearer <key>`")
        p = services.keys.authenticate(token.strip())
        return Viewer(p.project_id, p.project_name, f"API key {p.key_id}", None)
    s = services.sessions.read(request.cookies.get(SESSION_COOKIE))
    if s is None:
        return None
    name = services.sessions.project_name(s)
    if name is None:
        return None
    return Viewer(s.project_id, name, s.username or f"API key {s.key_id}", s)


class SignInRequired(Exception):
    """No key and no valid session: the page redirects to the sign-in form."""


def _need(request: Request, services: Any) -> Viewer:
    v = viewer(request, services)
    if v is None:
        raise SignInRequired()
    return v


def _local_path(target: str | None) -> str:
    """``target`` if it is a path of this site (no open redirect), else ``/``."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _same_origin(request: Request) -> bool:
    """Whether a state-changing request comes from this site (``Origin``, else ``Referer``)."""
    host = request.headers.get("host")
    source = request.headers.get("origin") or request.headers.get("referer")
    if not host or not source or source == "null":
        return False
    return urlsplit(source).netloc == host


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (small; first value of each field)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items() if v}


def _page(request: Request, name: str, ctx: dict[str, Any], status: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, name, ctx, status_code=status, headers=PAGE_HEADERS)


def _ctx(v: Viewer | None, page: str, **more: Any) -> dict[str, Any]:
    project = {"id": v.project_id, "name": v.project_name} if v else None
    csrf = v.session.csrf if v and v.session else None
    return {"project": project, "who": v.who if v else "", "csrf": csrf, "page": page, **more}


def _message(request: Request, title: str, message: str, status: int, v: Viewer | None = None):
    return _page(request, "message.html", _ctx(v, "message", title=title, message=message), status)


# --- signing in and out -------------------------------------------------------------------


def _cookie_flags(request: Request) -> dict[str, Any]:
    return {"httponly": True, "samesite": "lax", "secure": request.url.scheme == "https"}


def _signin_page(request: Request, services: Any, error: str = "", status: int = 200, nxt="/"):
    cookie, token = services.sessions.login_token()
    ctx = _ctx(None, "signin", csrf_login=token, error=error, next=_local_path(nxt))
    response = _page(request, "signin.html", ctx, status)
    response.set_cookie(LOGIN_COOKIE, cookie, max_age=LOGIN_MAX_AGE_S, **_cookie_flags(request))
    return response


@router.get("/signin", response_class=HTMLResponse)
def signin_form(request: Request, services: ServicesDep, next: str = "/") -> Response:
    return _signin_page(request, services, nxt=next)


@router.post("/signin", response_class=HTMLResponse)
async def signin(request: Request, services: ServicesDep) -> Response:
    form = await _form(request)
    if not _same_origin(request):
        return _message(request, "Refused", "Sign-in must come from this dashboard's page.", 403)
    if not services.sessions.check_login(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
        return _signin_page(
            request, services, "The sign-in form expired or is not this site's; try again.", 403
        )
    nxt = form.get("next")
    client = f"ip:{request.client.host if request.client else '?'}"
    username = form.get("username", "").strip()
    keys = [client] + ([f"user:{username.lower()}"] if username else [])
    wait = services.signin_limiter.retry_after(*keys)
    if wait > 0:
        response = _signin_page(
            request, services, f"Too many failed sign-ins; wait {int(wait) + 1} s.", 429, nxt
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    session = await to_thread.run_sync(_authenticate, services, form, username)
    if session is None:
        services.signin_limiter.failed(*keys)
        return _signin_page(request, services, "Wrong key, user or password.", 401, nxt)
    response = RedirectResponse(_local_path(nxt), status_code=303, headers=PAGE_HEADERS)
    response.set_cookie(
        SESSION_COOKIE, session, max_age=services.sessions.max_age_s, **_cookie_flags(request)
    )
    response.delete_cookie(LOGIN_COOKIE)
    return response


def _authenticate(services: Any, form: dict[str, str], username: str) -> str | None:
    """A session cookie for a good key or user, else None."""
    key = form.get("api_key", "").strip()
    if key:
        try:
            p = services.keys.authenticate(key)
        except Unauthorized:
            return None
        return services.sessions.issue(p.project_id, key_id=p.key_id)[0]
    if not username:
        return None
    user = services.accounts.verify(username, form.get("password", ""))
    if user is None or not user.projects:
        return None
    names = {p.id: p.name for p in services.keys.list_projects()}
    project = sorted(user.projects, key=lambda pid: names.get(pid, pid))[0]
    return services.sessions.issue(project, user_id=user.id, username=user.username)[0]


@router.post("/signout", response_class=HTMLResponse)
async def signout(request: Request, services: ServicesDep) -> Response:
    form = await _form(request)
    s = services.sessions.read(request.cookies.get(SESSION_COOKIE))
    if s is None:
        return RedirectResponse("/signin", status_code=303, headers=PAGE_HEADERS)
    if not _same_origin(request) or not csrf_ok(s, form.get("csrf")):
        return _message(request, "Refused", "This form is not from this dashboard.", 403)
    response = RedirectResponse("/signin", status_code=303, headers=PAGE_HEADERS)
    response.delete_cookie(SESSION_COOKIE)
    return response


# --- pages --------------------------------------------------------------------------------


def _when(iso: str | None) -> str | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    return (
        f"{s // 3600}h {s // 60 % 60:02d}m {s % 60:02d}s"
        if s >= 3600
        else f"{s // 60}m {s % 60:02d}s"
    )


def _fmt(v: Any) -> str:
    """A value as the pages show it (the ``value`` macro of macros.html, in Python: the runs
    table formats thousands of cells, too many for a macro call each)."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.5g}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)
    return str(v)


@router.get("/", response_class=HTMLResponse)
def project_page(request: Request, services: ServicesDep) -> Response:
    v = _need(request, services)
    views = services.tracking.list_runs(v.project_id)
    recent = sorted(views, key=lambda r: r.started or "", reverse=True)[:RECENT_RUNS]
    monitor = next((r.monitor for r in reversed(views) if r.monitor and r.mode), None)
    mode = next((r.mode for r in reversed(views) if r.monitor == monitor and r.mode), None)
    versions = [
        {
            "version": m.get("version"),
            "created": _when(m.get("created")),
            "entry": m.get("entry_point"),
            "files": len(m.get("files") or []),
        }
        for m in services.catalog.versions(v.project_id)
        if isinstance(m, dict)
    ]
    ctx = _ctx(
        v,
        "project",
        runs_total=len(views),
        running=sum(r.status == "running" for r in views),
        recent=[
            {
                "id": r.id,
                "name": r.name,
                "status": r.status,
                "started": _when(r.started),
                "best_display": _fmt(r.best if r.monitor == monitor else None),
            }
            for r in recent
        ],
        monitor=monitor,
        mode=mode,
        datasets=services.catalog.datasets(v.project_id),
        versions=versions,
        checkpoints=services.catalog.checkpoints(v.project_id),
    )
    return _page(request, "project.html", ctx)


def _table_view(table: Table) -> dict[str, Any]:
    """The runs table with each column's sort link and CSS class."""

    def href(col: str) -> str:
        if col == table.sort:  # the sorted column flips its order
            order = "asc" if table.order == "desc" else "desc"
        elif col == "best":
            order = "asc" if table.mode == "min" else "desc"
        else:  # newest, longest, highest first; names and hyperparameters A to Z
            order = "desc" if col in ("started", "duration") or col.startswith("metric.") else "asc"
        q = {"sort": col, "order": order}
        if table.query:
            q["q"] = table.query
        return "/runs?" + urlencode(q)

    columns = [
        {
            "id": c.id,
            "label": c.label,
            "numeric": c.numeric,
            "css": " ".join(
                filter(None, [f"group-{c.group}" if c.group != "run" else "", "num" * c.numeric])
            ),
            "title": {"config": "hyperparameter", "metric": "metric (last value)"}.get(c.group, ""),
            "href": href(c.id),
        }
        for c in table.columns
    ]
    # the value cells of a row as one escaped string: a thousand runs make tens of thousands
    # of cells, and a template loop with three escapes per cell was most of the page's time;
    # the column attributes are escaped once per column, each cell's text once
    shown = [
        (c["id"], f'<td class="{"num" if c["numeric"] else ""}" data-col="{escape(c["id"])}">')
        for c in columns
        if c["id"] not in ("name", "status")
    ]
    rows = []
    for run, cells in table.rows:
        cells = dict(cells)
        cells["started"] = _when(cells.get("started"))
        html = "".join([f"{td}{escape(_fmt(cells[cid]))}</td>" for cid, td in shown])
        rows.append({"id": run.id, "name": run.name, "status": run.status, "cells": Markup(html)})
    return {
        "columns": columns,
        "rows": rows,
        "total": table.total,
        "sort": table.sort,
        "order": table.order,
        "query": table.query,
        "monitor": table.monitor,
        "mode": table.mode,
        "error": table.error,
    }


@router.get("/runs", response_class=HTMLResponse)
def runs_page(
    request: Request,
    services: ServicesDep,
    sort: Annotated[str | None, Query(max_length=300)] = None,
    order: Annotated[str | None, Query(pattern="^(asc|desc)$")] = None,
    q: Annotated[str, Query(max_length=1000)] = "",
) -> Response:
    v = _need(request, services)
    try:
        table = services.tracking.table(v.project_id, sort, order, q, strict=False)
    except ServiceError as e:  # an unknown sort column: say so, show the default order
        table = services.tracking.table(v.project_id, None, None, q, strict=False)
        table.error = str(e)
    return _page(request, "runs.html", _ctx(v, "runs", table=_table_view(table)))


def _log_view(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**line, "time_text": time.strftime("%H:%M:%S", time.localtime(line["t"]))}
        for line in lines
    ]


def _checkpoints(services: Any, project_id: str, run: RunView) -> list[dict[str, Any]]:
    stored = services.catalog.checkpoints(project_id, run.id)
    best = run.record.get("best_checkpoint")
    return [{**c, "best": c["name"] == best} for c in stored]


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(run_id: RunId, request: Request, services: ServicesDep) -> Response:
    v = _need(request, services)
    try:
        run = services.tracking.get_run(v.project_id, run_id)
    except NotFound:
        return _message(request, "Not found", f"No run {run_id} in this project.", 404, v)
    lines = services.tracking.log(v.project_id, run_id, None, LOG_LINES)
    view = {
        **run.to_json(),
        "started": _when(run.started),
        "ended": _when(run.ended),
        "duration_text": _duration(run.duration),
        "config": run.config,
        "checkpoints": _checkpoints(services, v.project_id, run),
        "log": _log_view(lines),
    }
    page_data = {
        "run": {"id": run.id, "name": run.name, "status": run.status},
        "keys": sorted(run.summaries),
        "chartUrl": "/ui/data/chart",
        "runUrl": f"/ui/data/runs/{quote(run.id)}",
        "lastLogTime": lines[-1]["t"] if lines else None,
    }
    return _page(request, "run.html", _ctx(v, "run", run=view, page_data=page_data))


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    services: ServicesDep,
    run: Annotated[list[str], Query(max_length=20)] = [],  # noqa: B006 - FastAPI's list query
) -> Response:
    v = _need(request, services)
    ids = list(dict.fromkeys(r for r in run if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", r)))
    if len(ids) < 2:
        return _message(
            request, "Compare runs", "Select two runs or more in the runs table.", 400, v
        )
    found = {r.id: r for r in services.tracking.list_runs(v.project_id, ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        return _message(request, "Not found", f"No run {missing[0]} in this project.", 404, v)
    views = [found[i] for i in ids]
    keys = sorted({k for r in views for k in r.summaries})
    config_keys = sorted({k for r in views for k in r.config})
    page_data = {
        "runs": [{"id": r.id, "name": r.name, "status": r.status} for r in views],
        "keys": keys,
        "chartUrl": "/ui/data/chart",
    }
    ctx = _ctx(v, "compare", runs=views, config_keys=config_keys, page_data=page_data)
    return _page(request, "compare.html", ctx)


@router.get("/runs/{run_id}/checkpoints/{name}")
def download_checkpoint(
    run_id: RunId,
    name: Annotated[str, Path(max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")],
    request: Request,
    services: ServicesDep,
) -> Response:
    """A checkpoint's bytes as a download (never rendered on the dashboard's origin)."""
    v = _need(request, services)
    plan = services.blobs.read(v.project_id, f"checkpoints/{run_id}/{name}")
    headers = {
        "Content-Disposition": f'attachment; filename="{run_id}-{name}"',
        "Content-Length": str(plan.size),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }
    return Streaming(
        plan.open(0, plan.size), headers=headers, media_type="application/octet-stream"
    )


# --- data for the pages' scripts ----------------------------------------------------------


def _data_viewer(request: Request, services: Any) -> Viewer:
    v = viewer(request, services)
    if v is None:
        raise Unauthorized("sign in first")
    return v


@router.get("/ui/data/chart")
def chart_data(
    request: Request,
    services: ServicesDep,
    key: MetricKey,
    run: Annotated[list[str], Query(max_length=20)],
    n: Buckets = 1000,
    x0: Step = None,
    x1: Step = None,
) -> JSONResponse:
    v = _data_viewer(request, services)
    body = services.tracking.chart(v.project_id, run, key, x0, x1, n)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/ui/data/table")
def table_data(
    request: Request,
    services: ServicesDep,
    sort: Annotated[str | None, Query(max_length=300)] = None,
    order: Annotated[str | None, Query(pattern="^(asc|desc)$")] = None,
    q: Annotated[str, Query(max_length=1000)] = "",
) -> JSONResponse:
    """The runs table as the runs page shows it (its script refreshes running runs)."""
    v = _data_viewer(request, services)
    table = services.tracking.table(v.project_id, sort, order, q, strict=False)
    return JSONResponse(table.to_json(), headers={"Cache-Control": "no-store"})


@router.get("/ui/data/runs/{run_id}")
def run_data(
    run_id: RunId,
    request: Request,
    services: ServicesDep,
    log_after: Annotated[float | None, Query()] = None,
) -> JSONResponse:
    v = _data_viewer(request, services)
    run = services.tracking.get_run(v.project_id, run_id)
    lines = services.tracking.log(v.project_id, run_id, log_after, LOG_LINES)
    body = {"id": run.id, "status": run.status, "summaries": run.summaries, "log": lines}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
