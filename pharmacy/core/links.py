"""Signed patient links: a salt per purpose, scoped to one patient (and prescription), expiring by the
injected clock, and single-use where it matters (the nonce is recorded server-side when used).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from flask import current_app
from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.audit import redo_after_rollback
from pharmacy.core.context import now
from pharmacy.core.db import UTCDateTime
from pharmacy.core.errors import LinkInvalid, ValidationFailed
from pharmacy.core.models import LinkGuard, LinkUse
from pharmacy.core.uow import autonomous
from pharmacy.extensions import db

REFILL = "refill"
PREFERENCES = "preferences"
RENEWAL = "renewal"  # a prescriber's link to a renewal request (pharmacy/prescriber_links)
RENEWAL_LINK_DAYS = 30
RENEWAL_PATH = "/renewal-request/"
MAX_DOB_ATTEMPTS = 5


@dataclass(frozen=True)
class LinkClaims:
    purpose: str
    patient_id: int
    prescription_id: int | None
    nonce: str
    ref: int | None = None  # what else the link is about (an auto-refill skip link: the refill request it announced)


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    clock_now = now

    class ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock_now().timestamp())

    return URLSafeTimedSerializer(
        current_app.config["SECRET_KEY"], salt=f"ldn.link.{purpose}", signer=ClockSigner
    )


def make_token(purpose: str, patient_id: int, prescription_id: int | None = None, *, ref: int | None = None) -> str:
    payload: dict[str, object] = {"p": patient_id, "rx": prescription_id, "n": secrets.token_urlsafe(12)}
    if ref is not None:
        payload["r"] = ref
    return _serializer(purpose).dumps(payload)


def read_token(purpose: str, token: str, *, max_age_days: int) -> LinkClaims:
    """The claims of a valid token, or LinkInvalid with reason "expired" or "invalid"."""
    try:
        data = _serializer(purpose).loads(token, max_age=max_age_days * 86400)
    except SignatureExpired:
        raise LinkInvalid("This link has expired.", reason="expired") from None
    except BadData:  # a bad signature, a mangled payload, a token cut short by a mail client
        raise LinkInvalid("This link is not valid.", reason="invalid") from None
    if not isinstance(data, dict) or not isinstance(data.get("p"), int) or not isinstance(data.get("n"), str):
        raise LinkInvalid("This link is not valid.", reason="invalid")
    rx, ref = data.get("rx"), data.get("r")
    return LinkClaims(purpose=purpose, patient_id=data["p"], prescription_id=rx if isinstance(rx, int) else None,
                      nonce=data["n"], ref=ref if isinstance(ref, int) and not isinstance(ref, bool) else None)


# Read on every open of a link, built once (a statement's construction costs more than SQLite's answer).
_USED = sa.select(LinkUse.id).where(LinkUse.nonce == sa.bindparam("b_nonce", type_=sa.String))
_FAILED = sa.select(LinkGuard.failed_attempts).where(LinkGuard.nonce == sa.bindparam("b_nonce", type_=sa.String))


def is_used(nonce: str) -> bool:
    return db.session.execute(_USED, {"b_nonce": nonce}).first() is not None


def mark_used(claims: LinkClaims) -> bool:
    """Record the use; False when it was already used (the unique nonce decides, even under a race)."""

    try:
        with db.session.begin_nested():
            db.session.add(LinkUse(nonce=claims.nonce, purpose=claims.purpose, patient_id=claims.patient_id,
                                   used_at=now()))
            db.session.flush()
    except IntegrityError:
        return False
    return True


def failed_attempts(nonce: str) -> int:
    """Wrong answers counted so far on this link (0 for a link never answered wrongly)."""
    value = db.session.execute(_FAILED, {"b_nonce": nonce}).scalar()
    return int(value or 0)


def is_locked(nonce: str) -> bool:
    return failed_attempts(nonce) >= MAX_DOB_ATTEMPTS


def count_answer(nonce: str, *, correct: bool) -> int | None:
    """Let one answer on a link through the gate, atomically: the wrong answers counted after it, or None when
    the link was already locked (the answer is then not looked at, right or wrong).

    One upsert both checks and counts (`… ON CONFLICT (nonce) DO UPDATE SET failed_attempts = failed_attempts + 1
    WHERE failed_attempts < limit RETURNING failed_attempts`): concurrent answers on one link wait for each other's
    row lock (PostgreSQL) or for the write lock (SQLite), so never more than the limit are checked — counting first
    and inserting after let ten concurrent guesses through a limit of five. A right answer goes through the same
    gate (adding nothing), so it cannot slip in beside the guesses either.

    The count is written in a transaction of its own (`uow.autonomous`), committed at once, because the refused
    request itself rolls back. Only when this session already holds SQLite's single write lock (a caller that wrote
    first: no request does) is it counted in the session's own transaction — nothing can interleave while that lock
    is held — and counted again after a rollback (`audit.redo_after_rollback`).
    """
    increment = 0 if correct else 1
    at = now()
    if _holds_sqlite_write_lock():
        attempts = _count(db.session.connection(), nonce, increment, at)
        if increment and attempts is not None:
            redo_after_rollback(lambda: _count(db.session.connection(), nonce, increment, at))
        return attempts
    with autonomous() as conn:
        return _count(conn, nonce, increment, at)


@dataclass(frozen=True)
class Question:
    """What a link asks before it shows anything (a patient's date of birth, a prescriber's NPI), in words."""

    answers: str  # "dates of birth", "NPIs": for "Too many wrong … were entered on this link."
    failed_action: str  # the audit event of a wrong answer
    field: str  # the form field a wrong answer is shown at
    wrong: str  # the page's message
    wrong_field: str  # the field's message, before "You have N tries left on this link."


def check_answer(claims: LinkClaims, question: Question, *, correct: bool, actor: Actor) -> None:
    """Count the answer at the link's gate (count_answer) and refuse a wrong one, saying how many tries are left;
    a locked link is refused whatever the answer. Each wrong answer is audited even though the request rolls back."""
    attempts = count_answer(claims.nonce, correct=correct)
    locked = f"Too many wrong {question.answers} were entered on this link."
    if attempts is None:
        raise LinkInvalid(locked, reason="locked")
    if correct:
        return
    audit.record(actor, question.failed_action, outcome="denied", survive_rollback=True, details={"attempt": attempts})
    left = MAX_DOB_ATTEMPTS - attempts
    if left <= 0:
        raise LinkInvalid(locked, reason="locked")
    tries = "1 try" if left == 1 else f"{left} tries"
    raise ValidationFailed(question.wrong, fields={question.field: f"{question.wrong_field} You have {tries} left on this link."})


def _count(conn: sa.Connection, nonce: str, increment: int, at: datetime) -> int | None:
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    t = LinkGuard.__table__
    stmt = insert(t).values(nonce=nonce, failed_attempts=increment, last_failed_at=at if increment else None)
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.nonce],
        set_={"failed_attempts": t.c.failed_attempts + increment,
              "last_failed_at": sa.literal(at, UTCDateTime()) if increment else t.c.last_failed_at},
        where=t.c.failed_attempts < MAX_DOB_ATTEMPTS,
    ).returning(t.c.failed_attempts)
    value = conn.execute(stmt).scalar()
    return None if value is None else int(value)


def _holds_sqlite_write_lock() -> bool:
    if db.engine.dialect.name != "sqlite":
        return False
    driver = db.session.connection().connection.driver_connection
    return bool(getattr(driver, "in_transaction", False))
