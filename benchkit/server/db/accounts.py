"""Tables of dashboard accounts: users (created by an admin command, never by sign-up) and the
projects each may see. Passwords are stored as Argon2id hashes only."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, ForeignKey, PrimaryKeyConstraint, String, Table

from benchkit.server.db.models import Base

users = Table(
    "users",
    Base.metadata,
    Column("id", String(32), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    #: an Argon2id hash (argon2-cffi's encoded form, parameters included)
    Column("password_hash", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

user_projects = Table(
    "user_projects",
    Base.metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE")),
    Column("project_id", String(32), ForeignKey("projects.id", ondelete="CASCADE")),
    PrimaryKeyConstraint("user_id", "project_id"),
)
