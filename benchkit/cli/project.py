"""Project and settings commands: ``config``, ``startproject``, ``project``, ``logout``."""

from __future__ import annotations

import argparse
import os
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
        "project", parents=[JSON], help="show the current project, store and credentials"
    )
    p.set_defaults(func=cmd_project)

    p = sub.add_parser("logout", help="remove the stored credentials")
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


def cmd_config_set(args: argparse.Namespace) -> int:
    path = write_user_setting(args.key, args.value)
    console.print(f"{args.key} = {args.value!r} saved in {path}", highlight=False)
    return 0


def cmd_config_unset(args: argparse.Namespace) -> int:
    path = write_user_setting(args.key, None)
    console.print(f"{args.key} removed from {path}", highlight=False)
    return 0


def cmd_startproject(args: argparse.Namespace) -> int:
    if args.api_key:  # the original's `startproject <project_id> <api_key>`
        project_id = args.target
        creds = {"project_id": project_id, "api_key": args.api_key, "server": args.server}
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
    console.print(f"next: cd {os.path.relpath(target)} && python -m benchkit run train.py")
    return 0


def copy_template(target: Path, name: str) -> None:
    """Copy the template into ``target``, filling in the project name."""
    src = template_dir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".benchkit", "data")
    shutil.copytree(src, target, dirs_exist_ok=True, ignore=ignore)
    project_file = target / PROJECT_FILE
    if project_file.is_file():
        text = project_file.read_text().replace("{{project_name}}", name)
        project_file.write_text(text)


def cmd_project(args: argparse.Namespace) -> int:
    settings = load_settings()
    creds = load_credentials(settings.paths)
    info = {
        "project": settings.project,
        "project_root": str(settings.project_root) if settings.project_root else None,
        "store": settings.store,
        "credentials": bool(creds),
        "project_id": creds.get("project_id") if creds else None,
        "server": creds.get("server") if creds else None,
    }
    if args.json:
        print_json(info)
        return 0
    print_table(
        "Project",
        ["", ""],
        [
            ("project", info["project"]),
            ("root", info["project_root"] or "(no benchkit.toml found: using defaults)"),
            ("store", info["store"]),
            (
                "credentials",
                f"set for project {info['project_id']!r}"
                if creds
                else "not set (only needed for a Bench server)",
            ),
        ],
    )
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    if delete_credentials():
        console.print("credentials removed")
    else:
        console.print("no credentials were stored")
    return 0
