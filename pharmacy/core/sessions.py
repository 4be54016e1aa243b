"""Staff sessions the server can end: a random id in the signed cookie, its SHA-256 in `staff_sessions`.

A signed cookie alone stays valid until it expires, so a cookie copied before sign-out would keep working
for hours. Here each sign-in opens a row; the user loader accepts the cookie only while that row is open
and the user's `session_version` still matches. Signing out ends the row; a password change or a
deactivation ends every row of the user (and bumps the version); the idle and absolute limits end it too.
A browser that is simply closed never signs out, so `prune` (nightly, and `flask users prune-sessions`) ends the
rows past the absolute limit and deletes ended rows after a while — sign-ins stay in the audit trail.
"""
from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from flask import g, session

from pharmacy.core.context import now, settings
from pharmacy.core.models import StaffSession, User
from pharmacy.core.numbers import digits_only
from pharmacy.extensions import db

SESSION_ID_KEY = "sid"
KEEP_ENDED_DAYS = 30  # how long an ended row is kept (who was signed in when, for an inquiry)


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def open_session(user: User) -> None:
    """A new server-side session for this browser (call after clearing the old cookie's contents)."""
    raw = secrets.token_urlsafe(32)
    db.session.add(StaffSession(user_id=user.id, token_hash=_hash(raw), created_at=now()))
    db.session.flush()
    session[SESSION_ID_KEY] = raw


def end_current(reason: str) -> None:
    """End this browser's session on the server (sign-out, idle or absolute limit)."""
    raw = session.get(SESSION_ID_KEY)
    if not isinstance(raw, str) or not raw:
        return
    db.session.execute(
        sa.update(StaffSession).where(StaffSession.token_hash == _hash(raw), StaffSession.ended_at.is_(None))
        .values(ended_at=now(), ended_reason=reason).execution_options(synchronize_session=False)
    )


def end_all_for(user_id: int, reason: str) -> int:
    """End every open session of a user (password change, deactivation); how many were open."""
    result = db.session.execute(
        sa.update(StaffSession).where(StaffSession.user_id == user_id, StaffSession.ended_at.is_(None))
        .values(ended_at=now(), ended_reason=reason).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


def load_user(user_key: str) -> User | None:
    """Flask-Login's user loader: the user only while this cookie's session row is open (one statement)."""
    user_id, _, version = user_key.partition(":")
    raw = session.get(SESSION_ID_KEY)
    if not digits_only(user_id) or len(user_id) > 10 or not isinstance(raw, str) or not raw:
        return None
    oldest = now() - timedelta(hours=settings().session_max_hours)  # the absolute limit, on the server's side too
    user = db.session.execute(_user_of_session(), {"b_user": int(user_id), "b_hash": _hash(raw),
                                                   "b_oldest": oldest}).scalar_one_or_none()
    if user is None or not user.active or str(user.session_version) != version:
        return None
    return user


@functools.cache
def _user_of_session() -> sa.Select[tuple[User]]:
    """Built once per process with bind parameters: every staff request asks it first."""
    return (sa.select(User).join(StaffSession, StaffSession.user_id == User.id)
            .where(User.id == sa.bindparam("b_user", type_=sa.Integer),
                   StaffSession.token_hash == sa.bindparam("b_hash", type_=sa.String),
                   StaffSession.ended_at.is_(None),
                   StaffSession.created_at > sa.bindparam("b_oldest", type_=StaffSession.created_at.type)))


@dataclass(frozen=True)
class Pruned:
    expired: int  # open rows past the absolute limit, now ended
    deleted: int  # ended rows older than the keep period, removed

    def line(self) -> str:
        return f"staff sessions: {self.expired} expired, {self.deleted} deleted"


def prune(keep_days: int = KEEP_ENDED_DAYS) -> Pruned:
    """End the sessions no cookie can use any more and delete ended rows older than `keep_days`.

    Two set-based statements, whatever the table's size: an abandoned browser leaves an open row behind, and
    without this the table (and the user loader's index) only grows.
    """
    at = now()
    oldest = at - timedelta(hours=settings().session_max_hours)
    expired = db.session.execute(
        sa.update(StaffSession).where(StaffSession.ended_at.is_(None), StaffSession.created_at <= oldest)
        .values(ended_at=at, ended_reason="expired").execution_options(synchronize_session=False)
    ).rowcount
    deleted = db.session.execute(
        sa.delete(StaffSession).where(StaffSession.ended_at < at - timedelta(days=keep_days))
        .execution_options(synchronize_session=False)
    ).rowcount
    return Pruned(expired=int(expired or 0), deleted=int(deleted or 0))


def leave_cookie() -> None:
    """This answer sets no session cookie (the session is still read: who is asking, and may they).

    For what a page fetches after it is shown — a faxed page's image, Today's deferred production block. Every
    answer refreshes the cookie (the idle limit), and a cookie is the session as it stood when its request began:
    one such fetch still running when the person submitted a form and was sent on landed after the form's answer
    and overwrote its cookie, and the next page's message ("Accepted as RX…") was lost (the browser test of the
    fax intake failed so, now and then). Nor is loading an image something the person did, for the idle limit."""
    g._pharmacy_leave_cookie = True


def cookie_left() -> bool:
    return bool(g.get("_pharmacy_leave_cookie"))
