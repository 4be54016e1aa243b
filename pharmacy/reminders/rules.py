"""Reminder rules (pure): which notices a fill gets, and when each goes out."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple, Protocol
from zoneinfo import ZoneInfo

from pharmacy.core.calendar import BusinessCalendar
from pharmacy.prescriptions.rules import RxStatus


class MessageKind(StrEnum):
    REMINDER_EARLY = "reminder_early"
    REMINDER_ORDER_BY = "reminder_order_by"
    REMINDER_OVERDUE = "reminder_overdue"
    RENEWAL_NEEDED = "renewal_needed"
    REQUEST_RECEIVED = "request_received"
    REQUEST_APPROVED = "request_approved"
    REQUEST_DECLINED = "request_declined"
    RENEWAL_IN_PROGRESS = "renewal_in_progress"
    ORDER_READY = "order_ready"
    ORDER_SHIPPED = "order_shipped"
    PRESCRIBER_RENEWAL = "prescriber_renewal"
    ONE_TIME_CODE = "one_time_code"  # the portal's sign-in code, or the code that verifies a mobile number
    AUTO_REFILL_REQUESTED = "auto_refill_requested"  # an automatic refill was asked for: with a one-click skip


class Channel(StrEnum):
    """How a message travels: each channel has its own outbox rows, claimed and retried alike."""

    EMAIL = "email"
    SMS = "sms"


class OutboxState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Why an email was not sent to a patient who takes text messages instead (the text goes in its place).
TEXTS_CHOSEN = "patient chose text messages"

#: The refill reminders of a fill (renewal notices and notices about requests and orders are not among them).
REFILL_REMINDERS = frozenset({MessageKind.REMINDER_EARLY, MessageKind.REMINDER_ORDER_BY, MessageKind.REMINDER_OVERDUE})


# ---------------------------------------------------------------------------------------
# Is a message still wanted when its time comes?
# ---------------------------------------------------------------------------------------


class WantedFacts(Protocol):
    """What delivery reads about a message's patient, prescription and fill just before sending it."""

    patient_found: bool
    email: str | None
    reminders_opt_in: bool | None
    rx_status: str | None
    newer_fill: bool  # a later fill of the prescription was dispensed
    open_order: bool  # a fill of the prescription is in progress
    open_request: bool  # a refill request is waiting
    superseded: bool  # a later refill reminder of the same fill, in the same channel, is already due (or went out)
    texts_only: bool  # the patient chose text messages only, and a verified number with consent takes them
    paused: bool  # the patient paused refill reminders until a date not yet past


def unwanted_reason(kind: MessageKind, *, order_id: int | None, to_address: str | None,
                    facts: WantedFacts) -> str | None:
    """Why the message must not go out (None: send it).

    Planning cancels messages when things change, but a change may slip past it (a direct data fix, a race with
    the claim): a reminder about a refill already requested, for a stopped prescription, or to a patient who
    opted out must never be sent. After an outage, of several reminders of one fill due at once only the latest
    goes: one email saying "order by today", not three in a row.
    """
    if kind == MessageKind.PRESCRIBER_RENEWAL:
        return None if to_address else "the prescriber has no email address"
    if not facts.patient_found:
        return "the patient record is gone"
    if not (facts.email or to_address):
        return "the patient has no email address"
    if kind == MessageKind.ONE_TIME_CODE:
        return None  # asked for a moment ago, to this very address
    if facts.texts_only:
        return TEXTS_CHOSEN
    if kind in REFILL_REMINDERS and facts.paused:
        return "reminders paused by the patient"
    if kind not in REFILL_REMINDERS and kind != MessageKind.RENEWAL_NEEDED:
        return None
    if facts.rx_status is None or RxStatus(facts.rx_status) != RxStatus.ACTIVE:
        return f"prescription {RxStatus(facts.rx_status).value if facts.rx_status else 'gone'}"
    if kind in REFILL_REMINDERS and not facts.reminders_opt_in:
        return "patient opted out"
    if order_id is not None and facts.newer_fill:
        return "a later fill was dispensed"
    if kind in REFILL_REMINDERS and order_id is not None and facts.superseded:
        return "superseded by a later reminder"
    if kind in REFILL_REMINDERS:
        if facts.open_order:
            return "refill ordered"
        if facts.open_request:
            return "refill requested"
    return None


# ---------------------------------------------------------------------------------------
# When a message goes out
# ---------------------------------------------------------------------------------------

# "Never at night": reminders go out during the day, local time at the pharmacy.
EARLIEST_SEND_HOUR = 8
LATEST_SEND_HOUR = 19


@dataclass(frozen=True)
class PlannedMessage:
    """One message a fill should produce, before it becomes an outbox row.

    `key` is the message's identity within its fill ("early_7", "early_3", "order_by",
    "overdue", "renewal"): several REMINDER_EARLY messages share a kind, so the outbox
    de-duplicates on (fill, key), and re-planning the same fill never sends twice.
    `local_day` is the pharmacy-local day the patient sees; `send_at` is the aware UTC instant.
    """

    kind: MessageKind
    local_day: date
    send_at: datetime
    key: str


def send_instant(day: date, hour: int, tz: ZoneInfo) -> datetime:
    """The UTC instant of `hour`:00 local time on `day`.

    Built from the local wall clock, never by adding hours to a UTC midnight, so 10:00 stays
    10:00 on the days clocks change (America/Chicago on 2026-03-08 is UTC−5, on 2026-11-01
    UTC−6). Hours are limited to 8–19 ("never at night"), which also keeps them clear of
    the night-time hours in which DST gaps and repeats happen.
    """
    if isinstance(hour, bool) or not isinstance(hour, int) or not EARLIEST_SEND_HOUR <= hour <= LATEST_SEND_HOUR:
        raise ValueError(f"A send hour must be between {EARLIEST_SEND_HOUR} and {LATEST_SEND_HOUR} (never at night).")
    return datetime(day.year, day.month, day.day, hour, tzinfo=tz).astimezone(UTC)


class _Candidate(NamedTuple):
    """A reminder before the one-per-day rule. `urgency` decides who stays when two share a day:
    overdue (3) > order-by (2) > early (1), and among early ones the smaller offset."""

    urgency: tuple[int, int]
    day: date
    kind: MessageKind
    key: str


def plan_refill_reminders(
    *,
    order_by: date,
    offsets_days: Sequence[int],
    overdue_after_days: int,
    hour: int,
    tz: ZoneInfo,
    today: date,
    calendar: BusinessCalendar | None = None,
) -> list[PlannedMessage]:
    """The refill reminders for one fill, sorted by send time.

    # docs/domain.md "Refill timing": patients are reminded a few days before the order-by date
    (e.g. 7 days before, 3 days before and on the day).

    * each positive offset → REMINDER_EARLY on order-by − offset (key "early_<offset>");
      with a `calendar`, one falling on a closed day moves back to the previous open day
      (more notice, and the pharmacy can answer the call it prompts) but never before today;
    * offset 0 → REMINDER_ORDER_BY on the order-by day (key "order_by");
    * REMINDER_OVERDUE on order-by + `overdue_after_days` (key "overdue").

    Days before `today` are dropped, but the patient must still hear: when every early
    reminder is past and the order-by day is not, an order-by reminder is kept even if the
    offsets did not ask for one; when the overdue day is past too, one overdue reminder is
    planned for today. A message planned for today whose hour has gone is simply due — the
    outbox sends due rows at once. Never two messages on one day: the most urgent stays.
    """
    offsets = _checked_offsets(offsets_days, overdue_after_days)
    candidates = _early_candidates(order_by, offsets, today, calendar)
    early_days = [order_by - timedelta(days=offset) for offset in offsets if offset]
    if order_by >= today and (0 in offsets or all(day < today for day in early_days)):
        candidates.append(_Candidate((2, 0), order_by, MessageKind.REMINDER_ORDER_BY, "order_by"))
    overdue_day = max(order_by + timedelta(days=overdue_after_days), today)
    candidates.append(_Candidate((3, 0), overdue_day, MessageKind.REMINDER_OVERDUE, "overdue"))
    messages = [
        PlannedMessage(kind=c.kind, local_day=c.day, send_at=send_instant(c.day, hour, tz), key=c.key)
        for c in _most_urgent_per_day(candidates)
    ]
    return sorted(messages, key=lambda m: m.send_at)


def _checked_offsets(offsets_days: Sequence[int], overdue_after_days: int) -> set[int]:
    if isinstance(overdue_after_days, bool) or not isinstance(overdue_after_days, int) or overdue_after_days < 1:
        raise ValueError("Overdue reminders go out at least 1 day after the order-by date.")
    offsets = set()
    for offset in offsets_days:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError("Reminder offsets are whole days before the order-by date (0 or more).")
        offsets.add(offset)
    return offsets


def _early_candidates(order_by: date, offsets: set[int], today: date,
                      calendar: BusinessCalendar | None) -> list[_Candidate]:
    """The early reminders not yet past; one on a closed day moves back to the previous open day (not before today)."""
    candidates: list[_Candidate] = []
    for offset in sorted(offsets, reverse=True):
        day = order_by - timedelta(days=offset)
        if offset == 0 or day < today:
            continue
        if calendar is not None:
            day = max(calendar.previous_open_day(day), today)
        candidates.append(_Candidate((1, -offset), day, MessageKind.REMINDER_EARLY, f"early_{offset}"))
    return candidates


def _most_urgent_per_day(candidates: list[_Candidate]) -> list[_Candidate]:
    """Never two messages on one day: the most urgent stays."""
    by_day: dict[date, _Candidate] = {}
    for candidate in candidates:
        kept = by_day.get(candidate.day)
        if kept is None or candidate.urgency > kept.urgency:
            by_day[candidate.day] = candidate
    return list(by_day.values())


def plan_renewal_notice(
    *,
    run_out: date,
    expiry_date: date,
    can_fill_again: bool,
    notice_days: int,
    hour: int,
    tz: ZoneInfo,
    today: date,
) -> PlannedMessage | None:
    """A RENEWAL_NEEDED notice (key "renewal") when the next fill will need the prescriber.

    # docs/domain.md "Refill timing": with no refills left the pharmacy asks the prescriber for a
    renewal early enough (weeks, not days) and tells the patient.

    Needed when nothing is left to dispense after the supply on hand (`can_fill_again` false: every
    authorized day dispensed — the rest of a partial fill still counts as left), or when the prescription
    expires before the run-out date (a fill may happen on the expiry date, not after). The notice
    goes out `notice_days` before run-out — or today if that day has passed and the supply
    has not yet run out. Once run-out is past, None: the overdue reminder and the refill
    page's eligibility answer take over.
    """
    if isinstance(notice_days, bool) or not isinstance(notice_days, int) or notice_days < 0:
        raise ValueError("Renewal notice days must be a whole number, 0 or more.")
    if can_fill_again and expiry_date >= run_out:
        return None
    if run_out < today:
        return None
    day = max(run_out - timedelta(days=notice_days), today)
    return PlannedMessage(
        kind=MessageKind.RENEWAL_NEEDED, local_day=day, send_at=send_instant(day, hour, tz), key="renewal"
    )


# ---------------------------------------------------------------------------------------
# Delivery: retries, failures, identities
# ---------------------------------------------------------------------------------------


def next_attempt_at(attempts: int, now: datetime, *, base_seconds: int = 60, cap_seconds: int = 3600) -> datetime:
    """When to try again after `attempts` failed attempts: base × 2^(attempts−1), capped.

    60 s, 120 s, 240 s … up to `cap_seconds`: a mail server that is down for a minute is
    retried quickly, one down for hours is not hammered. Deterministic (no jitter) so the
    schedule is testable; several schedulers never collide because rows are claimed with
    SKIP LOCKED, not because of timing. 0 failed attempts → due now.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("next_attempt_at needs an aware datetime.")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
        raise ValueError("Attempts must be a whole number, 0 or more.")
    if base_seconds <= 0 or cap_seconds < base_seconds:
        raise ValueError("Backoff needs 0 < base_seconds <= cap_seconds.")
    if attempts == 0:
        return now.astimezone(UTC)
    # Cap the exponent before computing, so 10,000 attempts cannot build a huge integer.
    exponent = min(attempts - 1, cap_seconds.bit_length())
    delay = min(cap_seconds, base_seconds * 2**exponent)
    return now.astimezone(UTC) + timedelta(seconds=delay)


class SmtpFailure(StrEnum):
    """How a failed send is handled: retried later, or given up at once."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


def classify_smtp_error(code: int | None, exc_name: str | None = None) -> str:
    """"transient" (retry) or "permanent" (give up and tell the pharmacist).

    RFC 5321: 4yz replies are transient, 5yz permanent. Without a reply code the failure
    is the connection (refused, timed out, dropped — ConnectionRefusedError, TimeoutError,
    socket.timeout, SMTPServerDisconnected, OSError …): transient. Anything unknown is
    transient too, because retrying a few times costs little while giving up early loses
    a reminder; `should_give_up` bounds the retries. `exc_name` is accepted for the log
    and for callers that have no code; it never overrides a reply code.
    """
    if code is not None and 500 <= code <= 599:
        return SmtpFailure.PERMANENT
    return SmtpFailure.TRANSIENT


def should_give_up(attempts: int, max_attempts: int) -> bool:
    """True once `attempts` sends have failed and the limit is reached."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1.")
    return attempts >= max_attempts


def message_id(outbox_id: int, dedupe_key: str, domain: str) -> str:
    """A stable RFC 5322 Message-ID: "<ldn.{outbox_id}.{sha256(dedupe_key)[:16]}@{domain}>".

    Deterministic, so a retry after a crash mid-send carries the same Message-ID and mail
    systems can drop the duplicate; the dedupe key is hashed so it never leaks (it may name
    a fill or a patient id) into headers.
    """
    if not domain or any(ch in domain for ch in "<>@ \t\r\n"):
        raise ValueError(f"{domain!r} is not a mail domain.")
    digest = hashlib.sha256(dedupe_key.encode("utf-8")).hexdigest()[:16]
    return f"<ldn.{outbox_id}.{digest}@{domain}>"


_SUBJECT_PHRASES: dict[MessageKind, str] = {
    MessageKind.REMINDER_EARLY: "refill reminder",
    MessageKind.REMINDER_ORDER_BY: "refill reminder",
    MessageKind.REMINDER_OVERDUE: "refill reminder",
    MessageKind.REQUEST_RECEIVED: "your refill request",
    MessageKind.REQUEST_APPROVED: "your refill request",
    MessageKind.REQUEST_DECLINED: "your refill request",
    MessageKind.RENEWAL_NEEDED: "prescription renewal",
    MessageKind.RENEWAL_IN_PROGRESS: "prescription renewal",
    MessageKind.ORDER_READY: "your order is ready",
    MessageKind.ORDER_SHIPPED: "your order has shipped",
    MessageKind.PRESCRIBER_RENEWAL: "renewal request",
    MessageKind.ONE_TIME_CODE: "your sign-in code",
    MessageKind.AUTO_REFILL_REQUESTED: "your automatic refill",
}


def subject_line(pharmacy_name: str, kind: MessageKind) -> str:
    """"<pharmacy>: <neutral phrase>" — never the drug, the dose or the diagnosis.

    A subject line shows on lock screens and shared inboxes, so it carries nothing a
    stranger could read a condition from; the body (behind the mail client) names the drug
    and the dates. Line breaks in the name are collapsed so it cannot inject a header.
    """
    name = " ".join(pharmacy_name.split())
    if not name:
        raise ValueError("A subject line needs the pharmacy's name.")
    return f"{name}: {_SUBJECT_PHRASES[MessageKind(kind)]}"
