"""Projects and API keys.

A key is ``bk_<key id>_<secret>``: 16 hex digits that name the row, then 256 random bits.
Only ``HMAC-SHA256(pepper, key id + secret)`` is stored; the pepper is a random file (mode
0600) in the server's data directory, so a copy of the database alone cannot be used to test
guesses. A fast hash is enough because the secret has full entropy (no passwords here).
Authentication looks the row up by key id and compares digests with
:func:`hmac.compare_digest`, against a dummy digest when the id is unknown, so the time taken
does not tell whether a key id exists. Nothing here logs or returns a secret except
:func:`create_key`'s result, shown to the admin once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from benchkit.errors import ConfigError
from benchkit.server.db.models import ApiKey, Project, utcnow
from benchkit.server.db.session import Database
from benchkit.server.services.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
)

log = logging.getLogger(__name__)

READ = "read"
WRITE = "write"
SCOPES = (READ, WRITE)
KEY_RE = re.compile(r"^bk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
PROJECT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: ``last_used_at`` is written at most this often per key and server process (a write per
#: request would serialise every request on SQLite)
LAST_USED_EVERY_S = 60.0
_DUMMY = "0" * 64


def load_pepper(path: Path) -> bytes:
    """The server's HMAC key: created on first use (random, mode 0600), refused if others can
    read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"the server's key file {path} is readable by other users (mode {mode:o}); "
            f"run: chmod 600 {path}"
        )
    pepper = path.read_bytes()
    if len(pepper) < 32:
        raise ConfigError(
            f"the server's key file {path} is damaged ({len(pepper)} bytes); restore it from a "
            "backup (without it no existing API key works)"
        )
    return pepper


@dataclass(frozen=True)
class Principal:
    """Who is calling: the project comes from the key, never from the request."""

    project_id: str
    project_name: str
    key_id: str
    scope: str

    @property
    def can_write(self) -> bool:
        return self.scope == WRITE


@dataclass(frozen=True)
class ProjectInfo:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class KeyInfo:
    id: str
    project_id: str
    scope: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewKey:
    """A key just created: ``token`` is the secret, shown once."""

    info: KeyInfo
    token: str


def _project_info(p: Project) -> ProjectInfo:
    return ProjectInfo(p.id, p.name, p.created_at)


def _key_info(k: ApiKey) -> KeyInfo:
    return KeyInfo(k.id, k.project_id, k.scope, k.label, k.created_at, k.last_used_at, k.revoked_at)


class Keys:
    """Projects and keys over one database and pepper."""

    def __init__(self, db: Database, pepper: bytes) -> None:
        self.db = db
        self._pepper = pepper
        #: when this process last wrote each key's ``last_used_at`` (monotonic seconds)
        self._touched: dict[str, float] = {}

    def _digest(self, key_id: str, secret: str) -> str:
        return hmac.new(self._pepper, f"{key_id}:{secret}".encode(), hashlib.sha256).hexdigest()

    # --- projects ------------------------------------------------------------------------------

    def create_project(self, name: str, scope: str = WRITE) -> tuple[ProjectInfo, NewKey]:
        """A new project and its first key."""
        if not PROJECT_NAME_RE.match(name or ""):
            raise BadRequest(
                f"invalid project name {name!r}: use letters, digits, '_', '.' and '-' "
                "(starting with a letter or digit), at most 128 characters"
            )
        with self.db.write() as s:
            if s.scalar(select(Project).where(Project.name == name)) is not None:
                raise Conflict(f"a project named {name!r} exists already")
            project = Project(id=secrets.token_hex(16), name=name, created_at=utcnow())
            s.add(project)
            s.flush()
            key = self._add_key(s, project.id, scope, "created with the project")
        log.info("created project %s (%s) with key %s", project.id, name, key.info.id)
        return _project_info(project), key

    def list_projects(self) -> list[ProjectInfo]:
        with self.db.read() as s:
            return [_project_info(p) for p in s.scalars(select(Project).order_by(Project.name))]

    def project(self, ref: str) -> ProjectInfo:
        """A project by id or name."""
        with self.db.read() as s:
            p = s.get(Project, ref) or s.scalar(select(Project).where(Project.name == ref))
            if p is None:
                raise NotFound(f"no project {ref!r}; list them with `benchkit server projects`")
            return _project_info(p)

    # --- keys ----------------------------------------------------------------------------------

    def _add_key(self, s, project_id: str, scope: str, label: str) -> NewKey:
        if scope not in SCOPES:
            raise BadRequest(f"invalid scope {scope!r}: use {' or '.join(SCOPES)}")
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        row = ApiKey(
            id=key_id,
            project_id=project_id,
            digest=self._digest(key_id, secret),
            scope=scope,
            label=label[:128],
            created_at=utcnow(),
        )
        s.add(row)
        s.flush()
        return NewKey(_key_info(row), f"bk_{key_id}_{secret}")

    def create_key(self, project_ref: str, scope: str = WRITE, label: str = "") -> NewKey:
        project = self.project(project_ref)
        with self.db.write() as s:
            key = self._add_key(s, project.id, scope, label)
        log.info("created %s key %s for project %s", scope, key.info.id, project.id)
        return key

    def list_keys(self, project_ref: str) -> list[KeyInfo]:
        project = self.project(project_ref)
        with self.db.read() as s:
            rows = s.scalars(
                select(ApiKey).where(ApiKey.project_id == project.id).order_by(ApiKey.created_at)
            )
            return [_key_info(k) for k in rows]

    def revoke_key(self, key_id: str) -> KeyInfo:
        """Revoke a key (by its id, or the whole key); effective on the next request."""
        m = KEY_RE.match(key_id)
        key_id = m.group(1) if m else key_id
        with self.db.write() as s:
            row = s.get(ApiKey, key_id)
            if row is None:
                raise NotFound(f"no API key with id {key_id!r}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            info = _key_info(row)
        log.info("revoked key %s of project %s", info.id, info.project_id)
        return info

    def authenticate(self, token: str | None, write: bool = False) -> Principal:
        """The principal of a bearer token, or :class:`Unauthorized` (never says which part
        was wrong, and never logs the token); with ``write``, :class:`Forbidden` for a
        read-only key. One indexed query (key and project together) per call, so a revoked
        key fails on its next request."""
        m = KEY_RE.match(token or "")
        key_id, secret = (m.group(1), m.group(2)) if m else ("", "")
        row = self.db.query_one(_AUTH_SQL, key_id) if key_id else None
        expected = row[0] if row is not None else _DUMMY
        ok = hmac.compare_digest(self._digest(key_id, secret), expected)
        if not ok or row is None or row[2]:
            log.warning("rejected an API key (key id %s)", key_id or "malformed")
            raise Unauthorized("invalid or revoked API key")
        principal = Principal(row[3], row[4], key_id, row[1])
        if write and not principal.can_write:
            raise Forbidden("this API key is read-only")
        now, last = time.monotonic(), self._touched.get(key_id)
        if last is None or now - last > LAST_USED_EVERY_S:
            self._touched[key_id] = now
            self._touch(key_id)
        return principal

    def _touch(self, key_id: str) -> None:
        with self.db.write() as s:
            row = s.get(ApiKey, key_id)
            if row is not None:
                row.last_used_at = utcnow()


#: the key's digest, scope, whether it is revoked, and its project's id and name
_AUTH_SQL = (
    "SELECT k.digest, k.scope, k.revoked_at IS NOT NULL, p.id, p.name "
    "FROM api_keys k JOIN projects p ON p.id = k.project_id WHERE k.id = ?"
)
