"""Dashboard user accounts: created by an admin command, never by sign-up; no default user.

Passwords are hashed with Argon2id (argon2-cffi's defaults, parameters stored with the hash,
re-hashed on sign-in when the defaults grow). Verifying an unknown user still runs one Argon2
verification against a dummy hash, so the time taken does not tell which usernames exist.
A user sees only the projects granted to them.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select

from benchkit.server.db.accounts import user_projects, users
from benchkit.server.db.models import Project
from benchkit.server.db.session import Database
from benchkit.server.services.errors import BadRequest, Conflict, NotFound

log = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 12


@dataclass(frozen=True)
class UserInfo:
    id: str
    username: str
    projects: tuple[str, ...]  # project ids
    created_at: datetime

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "username": self.username,
            "projects": list(self.projects),
            "created_at": self.created_at.isoformat(),
        }


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"the password must have at least {MIN_PASSWORD} characters")


class Accounts:
    """Users and the projects they may see."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.hasher = PasswordHasher()  # Argon2id
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))

    def _project_id(self, s, ref: str) -> str:
        p = s.get(Project, ref) or s.scalar(select(Project).where(Project.name == ref))
        if p is None:
            raise NotFound(f"no project {ref!r}; list them with `benchkit server projects`")
        return p.id

    def create(self, username: str, password: str, projects: list[str]) -> UserInfo:
        """A new user who may see ``projects`` (ids or names)."""
        if not USERNAME_RE.match(username or ""):
            raise BadRequest(
                f"invalid username {username!r}: letters, digits, '_', '.', '@', '-', at most 64"
            )
        check_password(password)
        if not projects:
            raise BadRequest("give at least one project the user may see (--project NAME)")
        with self.db.write() as s:
            if s.execute(select(users.c.id).where(users.c.username == username)).first():
                raise Conflict(f"a user named {username!r} exists already")
            ids = sorted({self._project_id(s, p) for p in projects})
            uid = secrets.token_hex(16)
            s.execute(
                users.insert().values(
                    id=uid,
                    username=username,
                    password_hash=self.hasher.hash(password),
                    created_at=datetime.now(timezone.utc),
                )
            )
            s.execute(user_projects.insert(), [{"user_id": uid, "project_id": p} for p in ids])
        log.info("created user %s with access to %s", username, ", ".join(ids))
        return self.get(username)

    def get(self, username: str) -> UserInfo:
        with self.db.read() as s:
            row = s.execute(select(users).where(users.c.username == username)).first()
            if row is None:
                raise NotFound(f"no user {username!r}; list them with `benchkit server users list`")
            return self._info(s, row)

    def _info(self, s, row) -> UserInfo:
        pids = s.scalars(
            select(user_projects.c.project_id)
            .where(user_projects.c.user_id == row.id)
            .order_by(user_projects.c.project_id)
        ).all()
        created = row.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        return UserInfo(row.id, row.username, tuple(pids), created)

    def list_users(self) -> list[UserInfo]:
        with self.db.read() as s:
            rows = s.execute(select(users).order_by(users.c.username)).all()
            return [self._info(s, r) for r in rows]

    def delete(self, username: str) -> None:
        with self.db.write() as s:
            if s.execute(delete(users).where(users.c.username == username)).rowcount == 0:
                raise NotFound(f"no user {username!r}")
        log.info("deleted user %s", username)

    def set_password(self, username: str, password: str) -> None:
        check_password(password)
        with self.db.write() as s:
            done = s.execute(
                users.update()
                .where(users.c.username == username)
                .values(password_hash=self.hasher.hash(password))
            ).rowcount
            if not done:
                raise NotFound(f"no user {username!r}")
        log.info("changed the password of user %s", username)

    def grant(self, username: str, project: str) -> UserInfo:
        with self.db.write() as s:
            uid = s.scalar(select(users.c.id).where(users.c.username == username))
            if uid is None:
                raise NotFound(f"no user {username!r}")
            pid = self._project_id(s, project)
            have = s.execute(
                select(user_projects).where(
                    user_projects.c.user_id == uid, user_projects.c.project_id == pid
                )
            ).first()
            if have is None:
                s.execute(user_projects.insert().values(user_id=uid, project_id=pid))
        return self.get(username)

    def revoke(self, username: str, project: str) -> UserInfo:
        with self.db.write() as s:
            uid = s.scalar(select(users.c.id).where(users.c.username == username))
            if uid is None:
                raise NotFound(f"no user {username!r}")
            pid = self._project_id(s, project)
            s.execute(
                delete(user_projects).where(
                    user_projects.c.user_id == uid, user_projects.c.project_id == pid
                )
            )
        return self.get(username)

    def verify(self, username: str, password: str) -> UserInfo | None:
        """The user if the password is theirs, else None (never says which part was wrong)."""
        with self.db.read() as s:
            row = s.execute(select(users).where(users.c.username == username)).first()
            info = self._info(s, row) if row is not None else None
        stored = row.password_hash if row is not None else self._dummy
        try:
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            log.warning("failed sign-in for user %r", username[:64])
            return None
        if row is None:
            return None
        if self.hasher.check_needs_rehash(stored):
            with self.db.write() as s:
                s.execute(
                    users.update()
                    .where(users.c.id == row.id)
                    .values(password_hash=self.hasher.hash(password))
                )
        return info

    def may_see(self, user_id: str, project_id: str) -> bool:
        with self.db.read() as s:
            return (
                s.execute(
                    select(user_projects.c.user_id).where(
                        user_projects.c.user_id == user_id, user_projects.c.project_id == project_id
                    )
                ).first()
                is not None
            )
