"""Turning an outbox row into the email a patient (or prescriber) receives.

Rendered at send time, not when the row is written: the price, the dates and the signed refill
link are then current (a price change or a re-planned fill between planning and sending shows
up in the email). Templates live under `templates/emails/` (a base layout and one text + HTML
pair per kind). The subject comes from `rules.subject_line` and never names the drug; the
Message-ID is the row's deterministic one, so a resend after a crash can be recognised.
"""
from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from datetime import date
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

import sqlalchemy as sa
from flask import render_template

from pharmacy.billing.rules import format_cents
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import links
from pharmacy.core.context import business_calendar, now, settings
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills import rules as refill_rules
from pharmacy.refills.models import RefillRequest
from pharmacy.reminders import rules
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind

# RFC 5322 allows 998 characters a line: with the default 78 a long header (List-Unsubscribe carries a
# signed token) would be folded into RFC 2047 encoded-words, which mail clients do not read as a URL.
_POLICY = email_policy.default.clone(max_line_length=998)
# Patient messages carry a preferences link and the RFC 8058 one-click headers; the prescriber's does not.
PATIENT_KINDS = frozenset(k for k in MessageKind if k != MessageKind.PRESCRIBER_RENEWAL)
REFILL_REMINDERS = frozenset({MessageKind.REMINDER_EARLY, MessageKind.REMINDER_ORDER_BY,
                              MessageKind.REMINDER_OVERDUE})
PREVIEW_TOKEN = "preview"  # noqa: S105 - a placeholder where a staff preview would show a patient link


class RenderError(Exception):
    """The message cannot be built (no recipient, its subject is gone); `reason` says why, without PHI."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RenderedEmail:
    """One email, ready to hand to a transport (and to store on the row for the dashboard)."""

    kind: MessageKind
    subject: str
    text: str
    html: str
    to_address: str
    headers: dict[str, str] = field(default_factory=dict)

    def to_message(self, *, message_id: str) -> EmailMessage:
        cfg = settings()
        msg = EmailMessage(policy=_POLICY)
        msg["Subject"] = self.subject
        msg["From"] = cfg.mail_from
        msg["To"] = self.to_address
        msg["Reply-To"] = cfg.pharmacy_email
        msg["Date"] = format_datetime(now())
        msg["Message-ID"] = message_id
        msg["Auto-Submitted"] = "auto-generated"
        for name, value in self.headers.items():
            msg[name] = value
        msg.set_content(self.text)
        msg.add_alternative(self.html, subtype="html")
        return msg


def sender_address() -> str:
    """The envelope sender: the bare address of MAIL_FROM."""
    return parseaddr(settings().mail_from)[1] or settings().mail_from


def _pharmacy() -> dict[str, str]:
    cfg = settings()
    return {"name": cfg.pharmacy_name, "phone": cfg.pharmacy_phone, "address": cfg.pharmacy_address,
            "email": cfg.pharmacy_email, "npi": cfg.pharmacy_npi}


def _words(d: date | None) -> str | None:
    return refill_rules.long_date(d) if d is not None else None


def _fill_timeline(order_id: int | None) -> refill_rules.RefillTimeline | None:
    """Run-out and order-by of the fill a reminder is about, computed now (same inputs as planning)."""
    if order_id is None:
        return None
    from pharmacy.reminders import planning

    row = db.session.execute(planning.facts_query().where(Order.id == order_id)).first()
    if row is None:
        return None
    f = planning.FillFacts(*row)
    shipping = f.shipping_days if f.delivery_method == DeliveryMethod.SHIP else 0
    return refill_rules.timeline(
        f.dispensed_on, f.days_supply, shipping_days=shipping, buffer_days=settings().safety_buffer_days,
        lead_time_business_days=f.lead_time, calendar=business_calendar(),
    )


def _patient_links(patient_id: int, prescription_id: int | None, preview: bool) -> dict[str, str | None]:
    base = settings().base_url
    prefs = PREVIEW_TOKEN if preview else links.make_token(links.PREFERENCES, patient_id)
    refill = None
    if prescription_id is not None:
        refill_token = PREVIEW_TOKEN if preview else links.make_token(links.REFILL, patient_id, prescription_id)
        refill = f"{base}/r/{refill_token}"
    return {
        "refill_url": refill,
        "preferences_url": f"{base}/preferences/{prefs}",
        "unsubscribe_url": f"{base}/preferences/{prefs}/unsubscribe",
    }


def _rx_context(rx: Prescription, delivery: DeliveryMethod | None = None) -> dict[str, Any]:
    from pharmacy.refills import services as refills

    s = refills.summary(rx, delivery=delivery)
    return {
        "product": s.product,
        "price": format_cents(s.price_cents) if s.price_cents else None,
        "shipping": format_cents(s.shipping_cents) if s.shipping_cents else None,
        "total": format_cents(s.total_cents) if s.total_cents else None,
        "ships": s.delivery == DeliveryMethod.SHIP,
        "ready_on": _words(s.ready_on),
        "arrives_on": _words(s.arrives_on),
        "run_out": _words(s.run_out),
        "refills_left": s.refills_left,
        "expiry_date": _words(rx.expiry_date),
        "expires_before_run_out": s.run_out is not None and rx.expiry_date < s.run_out,
        "next_step": s.next_step,
        "prescriber_name": rx.prescriber.display_name if rx.prescriber else None,
    }


def _patient_context(row: OutboxMessage, patient: Patient, rx: Prescription | None,
                     preview: bool) -> dict[str, Any]:
    ctx: dict[str, Any] = {"first_name": patient.first_name}
    ctx.update(_patient_links(patient.id, rx.id if rx else None, preview))
    request = db.session.get(RefillRequest, row.refill_request_id) if row.refill_request_id else None
    order = db.session.get(Order, row.order_id) if row.order_id else None
    if rx is not None:
        delivery = request.delivery_method if request is not None else None
        ctx.update(_rx_context(rx, delivery))
    if row.kind in REFILL_REMINDERS or row.kind == MessageKind.RENEWAL_NEEDED:
        line = _fill_timeline(row.order_id)
        if line is not None:
            ctx["run_out"] = _words(line.run_out)
            ctx["order_by"] = _words(line.order_by)
        if row.kind in REFILL_REMINDERS and not ctx.get("order_by"):
            raise RenderError("the fill this reminder is about is no longer dispensed")
    if request is not None:
        ctx["decline_reason"] = request.decline_reason
    if order is not None and order.state != OrderState.CANCELLED:
        ctx["order_total"] = format_cents(order.total_cents)
        ctx["carrier"] = order.carrier
        ctx["tracking_number"] = order.tracking_number
        # For a shipped fill, dispensed_on is the expected delivery day (the supply starts on arrival).
        ctx["arrives_on"] = _words(order.dispensed_on) if order.state == OrderState.DISPENSED else ctx.get(
            "arrives_on")
    if row.kind == MessageKind.REQUEST_DECLINED and not ctx.get("decline_reason"):
        ctx["decline_reason"] = "Please call us so we can explain."
    return ctx


def _prescriber_context(row: OutboxMessage, rx: Prescription) -> dict[str, Any]:
    patient = rx.patient
    formula = rx.formula
    last = db.session.execute(
        sa.select(Order).where(Order.prescription_id == rx.id, Order.state == OrderState.DISPENSED)
        .order_by(Order.fill_number.desc()).limit(1)
    ).scalar_one_or_none()
    return {
        "prescriber_name": rx.prescriber.display_name,
        "patient_name": patient.full_name,
        "date_of_birth": _words(patient.date_of_birth),
        "product": rx_rules.product_name(formula.form, formula.strength_mg),
        "dose": rx_rules.format_mg(rx.dose_mg),
        "directions": rx.directions,
        "quantity": rx_rules.quantity_text(formula.form, rx.quantity),
        "days_supply": rx.days_supply,
        "last_fill": _words(last.dispensed_on) if last is not None else None,
        "refills_authorized": rx.refills_authorized or 0,
        "rx_number": rx.rx_number,
        "written_date": _words(rx.written_date),
        "expiry_date": _words(rx.expiry_date),
        "indication": f"{rx.indication} ({rx.indication_code})",
    }


_BLANK_LINES = re.compile(r"\n{3,}")


def _tidy_text(text: str) -> str:
    """Template whitespace out of the plain-text part: no trailing spaces, at most one blank line."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)) + "\n"


def render(row: OutboxMessage, *, preview: bool = False) -> RenderedEmail:
    """Build the email for an outbox row from the current data.

    `preview=True` (the dashboard) puts a placeholder where the patient's signed links go, so a
    staff page never carries a working patient link. Raises RenderError when it cannot be sent.
    """
    kind = MessageKind(row.kind)
    cfg = settings()
    rx = db.session.get(Prescription, row.prescription_id) if row.prescription_id else None
    ctx: dict[str, Any] = {"pharmacy": _pharmacy(), "kind": kind.value, "subject": rules.subject_line(
        cfg.pharmacy_name, kind)}
    headers: dict[str, str] = {}
    if kind == MessageKind.PRESCRIBER_RENEWAL:
        if rx is None:
            raise RenderError("the prescription is gone")
        to_address = row.to_address or (rx.prescriber.email if rx.prescriber else None)
        ctx.update(_prescriber_context(row, rx))
    else:
        patient = db.session.get(Patient, row.patient_id) if row.patient_id else None
        if patient is None:
            raise RenderError("the patient is gone")
        to_address = row.to_address or patient.email
        ctx.update(_patient_context(row, patient, rx, preview))
        headers["List-Unsubscribe"] = f"<{ctx['unsubscribe_url']}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if not to_address or "@" not in to_address:
        raise RenderError("no email address")
    text = render_template(f"emails/{kind.value}.txt", **ctx)
    html = render_template(f"emails/{kind.value}.html", **ctx)
    return RenderedEmail(kind=kind, subject=ctx["subject"], text=_tidy_text(text), html=html,
                         to_address=to_address.strip(), headers=headers)


_STYLE = re.compile(r"<style[^>]*>(.*?)</style>", re.DOTALL | re.IGNORECASE)


def style_hashes(html: str) -> list[str]:
    """CSP source expressions ('sha256-…') for the <style> blocks of an email we rendered.

    The dashboard shows an email inside `<iframe sandbox srcdoc>`, which inherits the page's
    Content-Security-Policy: allowing exactly these hashes lets the email's own stylesheet
    apply without opening the page to any other inline style (or any script).
    """
    out = []
    for block in _STYLE.findall(html):
        digest = base64.b64encode(hashlib.sha256(block.encode("utf-8")).digest()).decode("ascii")
        out.append(f"'sha256-{digest}'")
    return out
