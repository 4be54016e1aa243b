"""Portal rules (pure): one-time codes, sign-in limits, session lifetimes, and the patient's calendar dates."""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from pharmacy.core.numbers import digits_only

CODE_DIGITS = 6
#: Wrong codes (or a right code with the wrong date of birth) before a code stops working: like a refill link.
MAX_ATTEMPTS = 5
#: Codes one address may be sent in an hour: a patient who lost two codes can still sign in, nobody can flood them.
MAX_CODES_PER_HOUR = 5
#: Failed sign-ins for one address in a day after which it is locked for LOCK_HOURS (the pharmacy can still help).
MAX_FAILURES_PER_DAY = 15
LOCK_HOURS = 1


class Purpose(StrEnum):
    SIGN_IN = "sign_in"
    VERIFY_NUMBER = "verify_number"


def token_hash(token: str) -> str:
    """Tokens (sessions, challenges, calendar feeds) are stored as SHA-256: a copied database opens nothing."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def contact_hash(secret: str, contact: str) -> str:
    """A keyed hash of an email address or phone number: counts attempts per address without storing it."""
    return hmac.new(secret.encode(), f"contact:{contact.strip().lower()}".encode(), hashlib.sha256).hexdigest()


def code_for(secret: str, challenge_id: int, salt: str) -> str:
    """The six digits of a challenge: an HMAC of its id and salt under SECRET_KEY, never stored.

    Rendered into the message when it is sent, recomputed when the patient types it: the database alone (a backup,
    a copy) holds no working code.
    """
    digest = hmac.new(secret.encode(), f"code:{challenge_id}:{salt}".encode(), hashlib.sha256).digest()
    return str(int.from_bytes(digest[:8], "big") % 10**CODE_DIGITS).zfill(CODE_DIGITS)


def code_matches(expected: str, typed: str) -> bool:
    """Spaces and dashes people type ("123 456") are ignored; the comparison takes the same time either way."""
    cleaned = "".join(ch for ch in typed if digits_only(ch))
    return hmac.compare_digest(expected.encode(), cleaned.encode())


@dataclass(frozen=True)
class ChallengeState:
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    failed_attempts: int


def challenge_problem(c: ChallengeState, at: datetime) -> str | None:
    """Why a code can no longer be tried (None: it can): used, expired or locked by wrong tries."""
    if c.used_at is not None:
        return "used"
    if c.failed_attempts >= MAX_ATTEMPTS:
        return "locked"
    if at >= c.expires_at:
        return "expired"
    return None


def session_problem(created_at: datetime, last_seen_at: datetime, at: datetime, *, idle_minutes: int,
                    max_minutes: int) -> str | None:
    """Why a portal session is over (None: it goes on): idle too long, or past its absolute lifetime."""
    if at - last_seen_at > timedelta(minutes=idle_minutes):
        return "idle"
    if at - created_at > timedelta(minutes=max_minutes):
        return "expired"
    return None


# ---- the calendar ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalendarEntry:
    """One all-day event: `key` makes its UID stable, so a subscribed calendar updates instead of duplicating."""

    key: str
    day: date
    title: str
    description: str


def calendar_entries(*, rx_key: str, product: str | None, steps: list[tuple[date, str]], order_by: date | None,
                     run_out: date | None, ready_on: date | None, portal_url: str,
                     show_drug_name: bool) -> list[CalendarEntry]:
    """The patient's dates: each titration step's start, the order-by date and the expected run-out.

    Without the patient's consent the titles name no drug and no dose (a calendar is often shared or shown on a
    lock screen): "Dose change" and "Order your refill". With it: "LDN 3 mg a day starts".
    """
    what = f"{product} " if show_drug_name and product else ""
    out: list[CalendarEntry] = []
    for index, (day, dose) in enumerate(steps, start=1):
        title = f"{what}{dose} a day starts" if show_drug_name else "Dose change starts"
        body = (f"From today take {dose} a day, as on your dated chart." if show_drug_name
                else "Your daily dose changes today: see your dated chart or your pharmacy account.")
        out.append(CalendarEntry(f"{rx_key}-step-{index}-{day.isoformat()}", day, title, f"{body} {portal_url}"))
    if order_by is not None:
        title = f"Order your {what}refill" if show_drug_name else "Order your refill"
        out.append(CalendarEntry(f"{rx_key}-order-by-{order_by.isoformat()}", order_by, title,
                                 f"Last day to ask for your next refill so it is ready in time. {portal_url}"))
    if ready_on is not None:
        title = f"{what}Refill ready" if show_drug_name else "Refill ready"
        out.append(CalendarEntry(f"{rx_key}-ready-{ready_on.isoformat()}", ready_on, title,
                                 f"Your refill should be ready (or shipped) today. {portal_url}"))
    if run_out is not None:
        title = f"{what}Supply runs out" if show_drug_name else "Medicine runs out"
        out.append(CalendarEntry(f"{rx_key}-run-out-{run_out.isoformat()}", run_out, title,
                                 f"Your current supply is expected to run out today. {portal_url}"))
    return out
