"""``benchkit server``: run a Bench server, and administer its projects and keys.

``benchkit server`` serves; ``create-project``, ``projects``, ``keys list|create|revoke`` and
``reindex`` act on the server's database directly (the same ``--data-dir``/``--db`` as the
server), not over HTTP: whoever can run them can read the server's files anyway, and no HTTP
route can create a project or a key.
"""

from __future__ import annotations

import argparse
from typing import Any

from benchkit.cli import server_users
from benchkit.cli.common import JSON, console, print_json, print_table
from benchkit.errors import BenchKitError, ConfigError


def _data_flags(p: argparse.ArgumentParser, top: bool) -> None:
    """``--data-dir``/``--db``/``--store`` on ``server`` and again on each subcommand (where
    they default to "not given", so ``server --db X keys list`` keeps X)."""
    default: Any = None if top else argparse.SUPPRESS
    p.add_argument(
        "--data-dir", metavar="DIR", default=default,
        help="the server's directory: SQLite database, key file, local blobs "
        "(default: <BenchKit data dir>/server)",
    )  # fmt: skip
    p.add_argument(
        "--db", metavar="URL", default=default,
        help="database URL, e.g. postgresql+psycopg://user:pass@host/db (default: SQLite in --data-dir)",
    )  # fmt: skip
    p.add_argument(
        "--store", metavar="URL", default=default,
        help="where the blobs live: a directory, s3://bucket/prefix, gs://... (default: --data-dir/store)",
    )  # fmt: skip


def _executor_flags(p: argparse.ArgumentParser) -> None:
    """How the server runs jobs (``benchkit run --remote``)."""
    g = p.add_argument_group("jobs (benchkit run --remote)")
    g.add_argument(
        "--executor", choices=("local", "ray", "none"), default="local",
        help="run jobs on this machine's worker slots (default), on a Ray cluster, or not at all",
    )  # fmt: skip
    g.add_argument("--slots", type=int, metavar="N",
                   help="local executor: processes at a time (default: one per CPU)")  # fmt: skip
    g.add_argument("--ray-address", metavar="URL",
                   help="ray executor: the cluster's dashboard, e.g. http://HEAD:8265 "
                   "(token: RAY_AUTH_TOKEN)")  # fmt: skip
    g.add_argument("--ray-placement", default="STRICT_SPREAD",
                   choices=("STRICT_SPREAD", "SPREAD", "PACK", "STRICT_PACK"),
                   help="how a --nodes M job's nodes spread over the cluster (default: one per "
                   "machine)")  # fmt: skip
    g.add_argument("--ray-python", default="python", metavar="PATH",
                   help="the interpreter with BenchKit on the Ray nodes (default: python)")  # fmt: skip
    g.add_argument("--job-url", metavar="URL",
                   help="the URL jobs reach this server at (default: the address it listens on)")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "server",
        help="run a Bench server (projects, API keys, blobs, catalog) and administer it",
        description="Run the Bench server, a self-hosted BenchKit cloud. With no action it "
        "serves until SIGTERM/SIGINT; the actions act on its database directly.",
    )
    _data_flags(p, top=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--tls-cert", metavar="PEM", help="TLS certificate (chain) file")
    p.add_argument("--tls-key", metavar="PEM", help="TLS private key file")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address without TLS (API keys then travel in clear text)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _executor_flags(p)
    p.set_defaults(func=cmd_serve)
    ssub = p.add_subparsers(dest="server_command", metavar="ACTION")

    s = ssub.add_parser(
        "create-project", parents=[JSON], help="create a project; prints its id and an API key"
    )
    s.add_argument("name", help="project name (letters, digits, _ . -)")
    s.add_argument("--read-only", action="store_true", help="make the first key read-only")
    _data_flags(s, top=False)
    s.set_defaults(func=cmd_create_project)

    s = ssub.add_parser("projects", parents=[JSON], help="list the projects")
    _data_flags(s, top=False)
    s.set_defaults(func=cmd_projects)

    k = ssub.add_parser("keys", help="list, create or revoke a project's API keys")
    ksub = k.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    s = ksub.add_parser(
        "list", parents=[JSON], help="a project's keys (ids, scopes, last use; never secrets)"
    )
    s.add_argument("project", help="project id or name")
    _data_flags(s, top=False)
    s.set_defaults(func=cmd_keys_list)
    s = ksub.add_parser("create", parents=[JSON], help="a new key for a project (shown once)")
    s.add_argument("project", help="project id or name")
    s.add_argument("--read-only", action="store_true", help="read-only key")
    s.add_argument("--label", default="", help="what the key is for")
    _data_flags(s, top=False)
    s.set_defaults(func=cmd_keys_create)
    s = ksub.add_parser("revoke", help="revoke a key (effective on its next request)")
    s.add_argument("key_id", help="the key's id (from `keys list`) or the whole key")
    _data_flags(s, top=False)
    s.set_defaults(func=cmd_keys_revoke)

    s = ssub.add_parser(
        "reindex", help="rebuild the catalog (datasets, versions, runs, ...) from the blobs"
    )
    s.add_argument("project", nargs="?", help="project id or name (default: every project)")
    _data_flags(s, top=False)
    s.set_defaults(func=cmd_reindex)

    server_users.register(ssub, _data_flags)


def _config(args: argparse.Namespace, **extra: Any):
    try:
        from benchkit.server.config import ServerConfig, default_data_dir
    except ImportError as e:  # pragma: no cover - without the extra
        raise ConfigError(
            f"the Bench server needs its extra dependencies ({e.name} is missing): "
            'pip install "benchkit[server]"'
        ) from e
    return ServerConfig(
        data_dir=getattr(args, "data_dir", None) or default_data_dir(),
        db_url=getattr(args, "db", None),
        store_url=getattr(args, "store", None),
        **extra,
    )


def _keys(args: argparse.Namespace):
    from benchkit.server.db.migrate import upgrade_if_needed
    from benchkit.server.db.session import Database
    from benchkit.server.services.keys import Keys, load_pepper

    config = _config(args)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(config.database_url)
    upgrade_if_needed(db)
    return Keys(db, load_pepper(config.pepper_file))


def _service_errors(fn):
    """Service refusals (no such project, a bad name) as BenchKit errors for the CLI."""

    def wrapper(args: argparse.Namespace) -> int:
        from benchkit.server.services.errors import ServiceError

        try:
            return fn(args)
        except ServiceError as e:
            raise BenchKitError(str(e)) from e

    return wrapper


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchkit.server.serve import serve

    config = _config(
        args,
        host=args.host,
        port=args.port,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        insecure=args.insecure,
        executor=args.executor,
        ray_address=args.ray_address,
        ray_placement=args.ray_placement,
        ray_python=args.ray_python,
        job_slots=args.slots,
        job_store_url=args.job_url,
    )
    config.check_listen()
    if args.executor == "ray" and not args.ray_address:
        raise ConfigError(
            "--executor ray needs the Ray cluster's dashboard address: --ray-address http://HEAD:8265"
        )
    serve(config, args.log_level)
    return 0


def _key_row(k) -> dict[str, Any]:
    return {
        "key_id": k.id,
        "project_id": k.project_id,
        "scope": k.scope,
        "label": k.label,
        "created": k.created_at.isoformat(timespec="seconds"),
        "last_used": k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else None,
        "revoked": k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else None,
    }


@_service_errors
def cmd_create_project(args: argparse.Namespace) -> int:
    project, key = _keys(args).create_project(args.name, "read" if args.read_only else "write")
    out = {
        "project_id": project.id,
        "name": project.name,
        "api_key": key.token,
        "key_id": key.info.id,
        "scope": key.info.scope,
    }
    if args.json:
        print_json(out)
        return 0
    console.print(f"created project [bold]{project.name}[/bold]", highlight=False)
    console.print(f"  project id: {project.id}", highlight=False)
    console.print(
        f"  API key:    {key.token}  ({key.info.scope}; shown once: keep it safe)", highlight=False
    )
    console.print(
        f"next, on the client: benchkit login URL --project {project.id} --key <API key>",
        highlight=False,
    )
    return 0


@_service_errors
def cmd_projects(args: argparse.Namespace) -> int:
    projects = _keys(args).list_projects()
    rows = [
        {"project_id": p.id, "name": p.name, "created": p.created_at.isoformat(timespec="seconds")}
        for p in projects
    ]
    if args.json:
        print_json(rows)
        return 0
    print_table(
        "Projects",
        ["name", "id", "created (UTC)"],
        [(r["name"], r["project_id"], r["created"]) for r in rows],
    )
    return 0


@_service_errors
def cmd_keys_list(args: argparse.Namespace) -> int:
    rows = [_key_row(k) for k in _keys(args).list_keys(args.project)]
    if args.json:
        print_json(rows)
        return 0
    print_table(
        f"API keys of {args.project}",
        ["key id", "scope", "label", "created", "last used", "revoked"],
        [(r["key_id"], r["scope"], r["label"], r["created"], r["last_used"] or "never", r["revoked"] or "") for r in rows],
    )  # fmt: skip
    return 0


@_service_errors
def cmd_keys_create(args: argparse.Namespace) -> int:
    key = _keys(args).create_key(args.project, "read" if args.read_only else "write", args.label)
    out = {**_key_row(key.info), "api_key": key.token}
    if args.json:
        print_json(out)
        return 0
    console.print(f"new {key.info.scope} key for {args.project}: {key.token}", highlight=False)
    console.print("(shown once: keep it safe)")
    return 0


@_service_errors
def cmd_keys_revoke(args: argparse.Namespace) -> int:
    info = _keys(args).revoke_key(args.key_id)
    console.print(f"revoked key {info.id} of project {info.project_id}", highlight=False)
    return 0


@_service_errors
def cmd_reindex(args: argparse.Namespace) -> int:
    from benchkit.server.app import Services

    services = Services.open(_config(args), quick=True)
    try:
        projects = (
            [services.keys.project(args.project)] if args.project else services.keys.list_projects()
        )
        for p in projects:
            n = services.catalog.reindex(p.id)
            console.print(f"project {p.name}: {n} catalog items", highlight=False)
    finally:
        services.close()
    return 0
