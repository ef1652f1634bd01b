"""Browser sessions of the dashboard: signed cookies, CSRF tokens and sign-in rate limits.

A session is an ``itsdangerous``-signed cookie (HttpOnly, SameSite=Lax, Secure under TLS)
naming the project and who signed in (an API key's id or a user's id) plus a random CSRF token;
the signing secret is a random file (mode 0600) in the server's data directory, created once.
Every request re-checks that the key is not revoked or that the user still may see the project,
so a revocation ends the session at once. Every form carries the session's CSRF token and every
state-changing request must come from the dashboard's own origin. The sign-in form itself is
protected the same way with a short-lived token bound to a cookie of its own.

Failed sign-ins are limited per client address and per username (:class:`RateLimiter`).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from benchkit.server.db.accounts import user_projects
from benchkit.server.db.models import ApiKey, Project
from benchkit.server.db.session import Database

SESSION_COOKIE = "bk_session"
LOGIN_COOKIE = "bk_signin"
SESSION_MAX_AGE_S = 12 * 3600
LOGIN_MAX_AGE_S = 3600


@dataclass(frozen=True)
class Session:
    project_id: str
    csrf: str
    key_id: str | None = None
    user_id: str | None = None
    username: str | None = None


class Sessions:
    """Issues and reads session cookies and sign-in tokens."""

    def __init__(self, secret: bytes, db: Database, max_age_s: int = SESSION_MAX_AGE_S) -> None:
        self._sessions = URLSafeTimedSerializer(secret, salt="benchkit-session")
        self._logins = URLSafeTimedSerializer(secret, salt="benchkit-signin")
        self.db = db
        self.max_age_s = max_age_s

    def project_name(self, s: Session) -> str | None:
        """The session's project name while the session is still good: its key not revoked,
        or its user still allowed to see the project; None otherwise."""
        with self.db.read() as db:
            project = db.get(Project, s.project_id)
            if project is None:
                return None
            if s.key_id is not None:
                key = db.get(ApiKey, s.key_id)
                if key is None or key.revoked_at is not None or key.project_id != s.project_id:
                    return None
            elif s.user_id is not None:
                allowed = db.execute(
                    select(user_projects.c.user_id).where(
                        user_projects.c.user_id == s.user_id,
                        user_projects.c.project_id == s.project_id,
                    )
                ).first()
                if allowed is None:
                    return None
            else:
                return None
            return project.name

    def issue(
        self,
        project_id: str,
        key_id: str | None = None,
        user_id: str | None = None,
        username: str | None = None,
    ) -> tuple[str, Session]:
        """A new session (a fresh CSRF token) and its cookie value."""
        s = Session(project_id, secrets.token_urlsafe(32), key_id, user_id, username)
        data = {"p": s.project_id, "c": s.csrf, "k": s.key_id, "u": s.user_id, "n": s.username}
        return self._sessions.dumps(data), s

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie, or None when it is missing, forged or expired."""
        if not cookie:
            return None
        try:
            d = self._sessions.loads(cookie, max_age=self.max_age_s)
        except BadSignature:
            return None
        if not isinstance(d, dict) or not isinstance(d.get("p"), str):
            return None
        return Session(d["p"], str(d.get("c", "")), d.get("k"), d.get("u"), d.get("n"))

    def login_token(self) -> tuple[str, str]:
        """``(cookie value, form token)`` for the sign-in form."""
        token = secrets.token_urlsafe(32)
        return self._logins.dumps(token), token

    def check_login(self, cookie: str | None, form_token: str | None) -> bool:
        if not cookie or not form_token:
            return False
        try:
            token = self._logins.loads(cookie, max_age=LOGIN_MAX_AGE_S)
        except BadSignature:
            return False
        return isinstance(token, str) and hmac.compare_digest(token, form_token)


def csrf_ok(session: Session, form_token: str | None) -> bool:
    return bool(form_token) and hmac.compare_digest(session.csrf, form_token or "")


#: failed sign-ins allowed per minute: per username, and per client address (several people
#: may sign in from behind one address)
SIGNIN_LIMITS = {"user": 5, "ip": 30}


class RateLimiter:
    """At most ``limits[kind]`` failures per ``window_s`` for each key ``kind:value`` (a client
    address, a username); :meth:`retry_after` says how long a blocked key waits. In memory:
    the server is one process."""

    def __init__(self, limits: dict[str, int] | None = None, window_s: float = 60.0) -> None:
        self.limits = dict(SIGNIN_LIMITS if limits is None else limits)
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def retry_after(self, *keys: str) -> float:
        """0 when every key may try again now, else the seconds until one more try."""
        now = time.monotonic()
        with self._lock:
            waits = [
                self.window_s - (now - q[0])
                for k, q in ((k, self._recent(k, now)) for k in keys)
                if len(q) >= self.limits.get(k.split(":", 1)[0], 5)
            ]
        return max(waits, default=0.0)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for k in keys:
                self._recent(k, now).append(now)
            if len(self._failures) > 100_000:  # forget idle keys rather than grow without bound
                for k in [k for k, q in self._failures.items() if not q]:
                    del self._failures[k]
