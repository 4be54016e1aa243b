"""Signed patient links: a salt per purpose, scoped to one patient (and prescription), expiring by the
injected clock, and single-use where it matters (the nonce is recorded server-side when used).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app
from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy.exc import IntegrityError

from pharmacy.core.audit import keep_after_rollback
from pharmacy.core.context import now
from pharmacy.core.errors import LinkInvalid
from pharmacy.core.models import LinkAttempt, LinkUse
from pharmacy.extensions import db

REFILL = "refill"
PREFERENCES = "preferences"
MAX_DOB_ATTEMPTS = 5


@dataclass(frozen=True)
class LinkClaims:
    purpose: str
    patient_id: int
    prescription_id: int | None
    nonce: str


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    clock_now = now

    class ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock_now().timestamp())

    return URLSafeTimedSerializer(
        current_app.config["SECRET_KEY"], salt=f"ldn.link.{purpose}", signer=ClockSigner
    )


def make_token(purpose: str, patient_id: int, prescription_id: int | None = None) -> str:
    payload = {"p": patient_id, "rx": prescription_id, "n": secrets.token_urlsafe(12)}
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
    rx = data.get("rx")
    return LinkClaims(purpose=purpose, patient_id=data["p"], prescription_id=rx if isinstance(rx, int) else None,
                      nonce=data["n"])


def is_used(nonce: str) -> bool:
    return db.session.execute(sa.select(LinkUse.id).where(LinkUse.nonce == nonce)).first() is not None


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
    return int(db.session.execute(
        sa.select(sa.func.count()).select_from(LinkAttempt).where(LinkAttempt.nonce == nonce)
    ).scalar_one())


def record_failed_attempt(nonce: str) -> int:
    """Count a wrong date of birth; kept even though the refused request itself rolls back."""

    values = {"nonce": nonce, "at": now()}
    db.session.add(LinkAttempt(**values))
    db.session.flush()
    keep_after_rollback(LinkAttempt, values)
    return failed_attempts(nonce)
