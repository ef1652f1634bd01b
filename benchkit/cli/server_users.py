"""``benchkit server users``: dashboard accounts (there is no sign-up and no default user).

``create NAME --project P`` asks for the password twice (or reads one line from stdin with
``--password-stdin``, for scripts); the password never appears on the command line.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

from benchkit.cli.common import console, print_json, print_table
from benchkit.errors import BenchKitError, ConfigError


def register(ssub: argparse._SubParsersAction, data_flags: Callable[..., None]) -> None:
    """Add ``users create|list|delete|passwd|grant|revoke`` under ``benchkit server``."""
    u = ssub.add_parser("users", help="dashboard user accounts (passwords hashed with Argon2id)")
    usub = u.add_subparsers(dest="users_command", metavar="ACTION", required=True)

    s = usub.add_parser("create", help="a new user who may see the given projects")
    s.add_argument("username")
    s.add_argument(
        "--project", action="append", required=True, metavar="P",
        help="a project (id or name) the user may see; repeat for several",
    )  # fmt: skip
    s.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    s.add_argument("--json", action="store_true", help="print JSON")
    data_flags(s, top=False)
    s.set_defaults(func=cmd_create)

    s = usub.add_parser("list", help="the users and their projects")
    s.add_argument("--json", action="store_true", help="print JSON")
    data_flags(s, top=False)
    s.set_defaults(func=cmd_list)

    s = usub.add_parser("delete", help="delete a user (their sessions end at once)")
    s.add_argument("username")
    data_flags(s, top=False)
    s.set_defaults(func=cmd_delete)

    s = usub.add_parser("passwd", help="set a user's password")
    s.add_argument("username")
    s.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    data_flags(s, top=False)
    s.set_defaults(func=cmd_passwd)

    for action, helptext in (("grant", "let a user see a project"), ("revoke", "stop it")):
        s = usub.add_parser(action, help=helptext)
        s.add_argument("username")
        s.add_argument("project", help="project id or name")
        data_flags(s, top=False)
        s.set_defaults(func=cmd_grant if action == "grant" else cmd_revoke)


def _accounts(args: argparse.Namespace):
    from benchkit.cli.server import _config
    from benchkit.server.db.migrate import upgrade_if_needed
    from benchkit.server.db.session import Database
    from benchkit.server.services.accounts import Accounts

    config = _config(args)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(config.database_url)
    upgrade_if_needed(db)
    return Accounts(db)


def _errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapper(args: argparse.Namespace) -> int:
        from benchkit.server.services.errors import ServiceError

        try:
            return fn(args)
        except ServiceError as e:
            raise BenchKitError(str(e)) from e

    return wrapper


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise ConfigError("no terminal to ask for the password: pass --password-stdin")
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the passwords differ; nothing changed")
    return password


def _row(u: Any) -> dict[str, Any]:
    return u.to_json()


@_errors
def cmd_create(args: argparse.Namespace) -> int:
    accounts = _accounts(args)
    user = accounts.create(args.username, _password(args), args.project)
    if args.json:
        print_json(_row(user))
    else:
        console.print(f"created user {user.username} ({len(user.projects)} project(s))")
    return 0


@_errors
def cmd_list(args: argparse.Namespace) -> int:
    rows = [_row(u) for u in _accounts(args).list_users()]
    if args.json:
        print_json(rows)
        return 0
    print_table(
        "Users",
        ["user", "projects", "created (UTC)"],
        [(r["username"], ", ".join(r["projects"]), r["created_at"][:19]) for r in rows],
    )
    return 0


@_errors
def cmd_delete(args: argparse.Namespace) -> int:
    _accounts(args).delete(args.username)
    console.print(f"deleted user {args.username}")
    return 0


@_errors
def cmd_passwd(args: argparse.Namespace) -> int:
    _accounts(args).set_password(args.username, _password(args))
    console.print(f"changed the password of {args.username}")
    return 0


@_errors
def cmd_grant(args: argparse.Namespace) -> int:
    user = _accounts(args).grant(args.username, args.project)
    console.print(f"{user.username} may see: {', '.join(user.projects)}")
    return 0


@_errors
def cmd_revoke(args: argparse.Namespace) -> int:
    user = _accounts(args).revoke(args.username, args.project)
    console.print(f"{user.username} may see: {', '.join(user.projects) or 'nothing'}")
    return 0
