"""rules.unwanted_reason: whether a message is still wanted when its time comes, from the facts delivery reads."""
from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from pharmacy.reminders.rules import REFILL_REMINDERS, MessageKind, unwanted_reason


@dataclass(frozen=True)
class Facts:
    patient_found: bool = True
    email: str | None = "margaret@example.com"
    reminders_opt_in: bool | None = True
    rx_status: str | None = "active"
    newer_fill: bool = False
    open_order: bool = False
    open_request: bool = False
    superseded: bool = False
    texts_only: bool = False
    paused: bool = False


OK = Facts()


@pytest.mark.parametrize("kind", sorted(MessageKind))
def test_with_nothing_changed_every_message_goes(kind: MessageKind) -> None:
    assert unwanted_reason(kind, order_id=7, to_address="dr@clinic.example", facts=OK) is None


@pytest.mark.parametrize(("change", "reason"), [
    ({"patient_found": False}, "the patient record is gone"),
    ({"email": None}, "the patient has no email address"),
    ({"rx_status": "on_hold"}, "prescription on_hold"),
    ({"rx_status": None}, "prescription gone"),
    ({"reminders_opt_in": False}, "patient opted out"),
    ({"newer_fill": True}, "a later fill was dispensed"),
    ({"superseded": True}, "superseded by a later reminder"),
    ({"open_order": True}, "refill ordered"),
    ({"open_request": True}, "refill requested"),
])
def test_a_refill_reminder_is_stopped_by_each_change(change: dict, reason: str) -> None:
    for kind in REFILL_REMINDERS:
        assert unwanted_reason(kind, order_id=7, to_address=None, facts=replace(OK, **change)) == reason


def test_an_address_on_the_message_stands_in_for_a_missing_one_on_the_patient() -> None:
    facts = replace(OK, email=None)
    assert unwanted_reason(MessageKind.REMINDER_EARLY, order_id=7, to_address="old@example.com", facts=facts) is None


def test_opting_out_or_a_later_reminder_does_not_stop_a_renewal_notice_or_a_notice_about_an_order() -> None:
    quiet = replace(OK, reminders_opt_in=False, superseded=True, open_order=True, open_request=True)
    assert unwanted_reason(MessageKind.RENEWAL_NEEDED, order_id=7, to_address=None, facts=quiet) is None
    assert unwanted_reason(MessageKind.ORDER_READY, order_id=7, to_address=None, facts=quiet) is None
    # A stopped prescription does stop the renewal notice.
    stopped = replace(OK, rx_status="discontinued")
    assert unwanted_reason(MessageKind.RENEWAL_NEEDED, order_id=None, to_address=None, facts=stopped) == \
        "prescription discontinued"


def test_a_reminder_without_a_fill_is_never_superseded() -> None:
    facts = replace(OK, superseded=True)
    assert unwanted_reason(MessageKind.REMINDER_ORDER_BY, order_id=None, to_address=None, facts=facts) is None


def test_the_prescriber_renewal_needs_only_an_address() -> None:
    gone = replace(OK, patient_found=False, rx_status=None)
    assert unwanted_reason(MessageKind.PRESCRIBER_RENEWAL, order_id=None, to_address="dr@clinic.example",
                           facts=gone) is None
    assert unwanted_reason(MessageKind.PRESCRIBER_RENEWAL, order_id=None, to_address=None, facts=gone) == \
        "the prescriber has no email address"


def test_a_patient_who_takes_texts_only_gets_no_email_but_the_code_they_asked_for() -> None:
    texts = replace(OK, texts_only=True)
    for kind in MessageKind:
        reason = unwanted_reason(kind, order_id=7, to_address="dr@clinic.example", facts=texts)
        if kind in (MessageKind.ONE_TIME_CODE, MessageKind.PRESCRIBER_RENEWAL):
            assert reason is None
        else:
            assert reason == "patient chose text messages"


def test_a_pause_holds_refill_reminders_only() -> None:
    paused = replace(OK, paused=True)
    for kind in MessageKind:
        reason = unwanted_reason(kind, order_id=7, to_address="dr@clinic.example", facts=paused)
        assert reason == ("reminders paused by the patient" if kind in REFILL_REMINDERS else None)
