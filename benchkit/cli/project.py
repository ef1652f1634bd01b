"""Project and settings commands: ``config``, ``startproject``, ``project``, ``logout``."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
from pathlib import Path

from benchkit.cli.common import JSON, console, print_json, print_table
from benchkit.errors import ConfigError
from benchkit.settings import (
    KNOWN_SETTINGS,
    PROJECT_FILE,
    delete_credentials,
    load_credentials,
    load_settings,
    save_credentials,
    write_user_setting,
)


def template_dir() -> Path:
    """The project template: ``project_template/`` of the source tree (editable installs)."""
    here = Path(__file__).resolve().parents[2] / "project_template"
    if here.is_dir():
        return here
    packaged = Path(__file__).resolve().parents[1] / "_template"
    if packaged.is_dir():
        return packaged
    raise ConfigError(
        "the project template was not found next to the benchkit package; "
        "reinstall BenchKit from its source tree (pip install -e .)"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        parents=[JSON],
        help="show or change settings (and where each value comes from)",
    )
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    p.add_argument("--store", metavar="URL", help="show what this flag would do")
    p.set_defaults(func=cmd_config_show)
    s = csub.add_parser("show", parents=[JSON], help="show the effective settings (default)")
    s.add_argument("--store", metavar="URL", help="show what this flag would do")
    s.set_defaults(func=cmd_config_show)
    s = csub.add_parser("set", help="set a user setting")
    s.add_argument("key", choices=sorted(KNOWN_SETTINGS))
    s.add_argument("value")
    s.set_defaults(func=cmd_config_set)
    s = csub.add_parser("unset", help="remove a user setting")
    s.add_argument("key", choices=sorted(KNOWN_SETTINGS))
    s.set_defaults(func=cmd_config_unset)

    p = sub.add_parser(
        "startproject",
        help="create a new project from the template",
        description="Create a project: `startproject DIR`, or the original form "
        "`startproject PROJECT_ID API_KEY`, which also stores those credentials (mode 0600) "
        "and creates the project in ./PROJECT_ID.",
    )
    p.add_argument("target", nargs="?", default=".", help="project directory (default: here)")
    p.add_argument("api_key", nargs="?", help="API key of a Bench server project (original form)")
    p.add_argument("--server", metavar="URL", help="Bench server URL to store with the credentials")
    p.add_argument("--name", help="project name (default: the directory's name)")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")
    p.set_defaults(func=cmd_startproject)

    p = sub.add_parser(
        "login",
        help="use a Bench server as the store: check and save its URL and a project's API key",
        description="Check the key against the server, save the credentials (mode 0600) and "
        "make the server the store (user setting `store`).",
    )
    p.add_argument(
        "url", help="the server, e.g. http://127.0.0.1:8000 or https://bench.example.com"
    )
    p.add_argument("--project", required=True, metavar="ID", help="project id (or name)")
    p.add_argument(
        "--key", metavar="KEY", help="API key (default: BENCHKIT_API_KEY, else a prompt)"
    )
    p.set_defaults(func=cmd_login)

    p = sub.add_parser(
        "project", parents=[JSON], help="show the current project, store and credentials"
    )
    p.set_defaults(func=cmd_project)

    p = sub.add_parser("logout", help="remove the stored credentials (and stop using their server)")
    p.set_defaults(func=cmd_logout)


def cmd_config_show(args: argparse.Namespace) -> int:
    settings = load_settings({"store": getattr(args, "store", None)})
    rows = [(s.key, s.value, s.source) for s in settings.values.values()]
    paths = settings.paths
    dirs = [("config dir", paths.config), ("data dir", paths.data), ("cache dir", paths.cache)]
    if getattr(args, "json", False):
        print_json(
            {
                "settings": {
                    s.key: {"value": s.value, "source": s.source} for s in settings.values.values()
                },
                "paths": {k: str(v) for k, v in dirs},
            }
        )
        return 0
    print_table("Settings", ["setting", "value", "source"], rows)
    print_table("Directories", ["directory", "path"], dirs)
    return 0


def _checked(key: str, value: str) -> str:
    """``value`` for setting ``key``, normalised, or a clear error (nothing is saved then)."""
    from benchkit.store.urls import check_endpoint, check_store_url
    from benchkit.units import parse_size

    if key == "store":
        return check_store_url(value)
    if key == "s3_endpoint":
        return check_endpoint(value, what="s3_endpoint")
    if key == "cache_limit":
        parse_size(value)
    return value


def cmd_config_set(args: argparse.Namespace) -> int:
    value = _checked(args.key, args.value)
    path = write_user_setting(args.key, value)
    note = f" (from {args.value!r})" if value != args.value else ""
    console.print(f"{args.key} = {value!r}{note} saved in {path}", highlight=False, soft_wrap=True)
    return 0


def cmd_config_unset(args: argparse.Namespace) -> int:
    path = write_user_setting(args.key, None)
    console.print(f"{args.key} removed from {path}", highlight=False)
    return 0


def cmd_startproject(args: argparse.Namespace) -> int:
    if args.api_key:  # the original's `startproject <project_id> <api_key>`
        project_id = args.target
        if args.server:
            use_server(args.server, project_id, args.api_key)
        else:
            creds = {"project_id": project_id, "api_key": args.api_key, "server": None}
            path = save_credentials(creds)
            console.print(f"credentials for project {project_id!r} saved in {path} (mode 0600)")
        target = Path(project_id)
    else:
        target = Path(args.target)
    target = target.resolve()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not args.force:
        raise ConfigError(
            f"{target} is not empty; pick a new directory or pass --force to write the "
            "template into it (existing files with the same names are overwritten)"
        )
    name = args.name or target.name
    copy_template(target, name)
    console.print(f"[green]created project[/green] {name!r} in {target}", highlight=False)
    console.print("next:", highlight=False)
    for line in next_commands(target):
        console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    return 0


#: what a new project runs first: draw the sample images, then train (which migrates the
#: datasets of Datasets/ProjectDatasets.py on first use)
FIRST_STEPS = (
    "python make_data.py --count 300 --size 32   # draw a small cat/dog image set into data/",
    "python -m benchkit run train.py             # migrates the datasets, then trains",
)


def next_commands(target: Path) -> list[str]:
    """The shell lines ``startproject`` prints after creating ``target``."""
    rel = os.path.relpath(target)
    return ([] if rel == "." else [f"cd {shlex.quote(rel)}"]) + list(FIRST_STEPS)


def copy_template(target: Path, name: str) -> None:
    """Copy the template into ``target``, filling in the project name."""
    src = template_dir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".benchkit", "data")
    shutil.copytree(src, target, dirs_exist_ok=True, ignore=ignore)
    project_file = target / PROJECT_FILE
    if project_file.is_file():
        text = project_file.read_text().replace("{{project_name}}", name)
        project_file.write_text(text)


def use_server(url: str, project: str, key: str) -> dict:
    """Check ``key`` against the server, save the credentials and make the server the store."""
    from benchkit.api_client import check_login, normalize_url

    url = normalize_url(url)
    who = check_login(url, key, project)
    path = save_credentials({"server": url, "project_id": who["project_id"], "api_key": key})
    write_user_setting("store", url)
    scope = "read-write" if who["scope"] == "write" else "read-only"
    console.print(
        f"logged in to {url}: project [bold]{who['project_name']}[/bold] ({who['project_id']}), "
        f"{scope} key; credentials in {path} (mode 0600); the store is now {url}",
        highlight=False,
    )
    store = load_settings().values["store"]
    if store.value != url:
        console.print(
            f"[yellow]note:[/yellow] {store.source} sets the store to {store.value}, which "
            "takes precedence here",
            highlight=False,
        )
    return who


def cmd_login(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get("BENCHKIT_API_KEY")
    if not key:
        import getpass
        import sys

        if not sys.stdin.isatty():
            raise ConfigError("give the API key with --key (or BENCHKIT_API_KEY)")
        key = getpass.getpass("API key: ").strip()
    use_server(args.url, args.project, key)
    return 0


def _server_status(store: str) -> str | None:
    """For a Bench server store: whether the key works, in words; None for other stores."""
    if not store.startswith(("http://", "https://")):
        return None
    from benchkit.api_client import ApiClient, find_credentials
    from benchkit.errors import BenchKitError

    try:
        creds = find_credentials(store)
        who = ApiClient(store, creds.api_key, creds.project_id).whoami()
    except BenchKitError as e:
        return f"not working: {e}"
    scope = "read-write" if who["scope"] == "write" else "read-only"
    return (
        f"works: project {who['project_name']} ({who['project_id']}), {scope}, key {who['key_id']}"
    )


def cmd_project(args: argparse.Namespace) -> int:
    settings = load_settings()
    creds = load_credentials(settings.paths)
    key_status = _server_status(settings.store)
    info = {
        "project": settings.project,
        "project_root": str(settings.project_root) if settings.project_root else None,
        "store": settings.store,
        "credentials": bool(creds),
        "project_id": creds.get("project_id") if creds else None,
        "server": creds.get("server") if creds else None,
        "key": key_status,
        "key_ok": key_status.startswith("works") if key_status else None,
    }
    if args.json:
        print_json(info)
        return 0
    rows = [
        ("project", info["project"]),
        ("root", info["project_root"] or "(no benchkit.toml found: using defaults)"),
        ("store", info["store"]),
        (
            "credentials",
            f"set for project {info['project_id']!r}"
            + (f" on {info['server']}" if info["server"] else "")
            if creds
            else "not set (only needed for a Bench server)",
        ),
    ]
    if key_status:
        rows.append(("API key", key_status))
    print_table("Project", ["", ""], rows)
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from benchkit.api_client import same_server
    from benchkit.settings import read_user_settings

    creds = load_credentials()
    if delete_credentials():
        console.print("credentials removed")
        server = (creds or {}).get("server")
        if server and same_server(str(read_user_settings().get("store", "")), server):
            write_user_setting("store", None)
            console.print(f"the store is no longer {server} (back to the default)", highlight=False)
    else:
        console.print("no credentials were stored")
    return 0
