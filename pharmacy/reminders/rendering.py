"""Turning an outbox row into the email a patient (or prescriber) receives.

Rendered at send time, not when the row is written: the price, the dates and the signed refill
link are then current (a price change or a re-planned fill between planning and sending shows
up in the email). Templates live under `templates/emails/` (a base layout and one text + HTML
pair per kind). The subject comes from `rules.subject_line` and never names the drug; the
Message-ID is the row's deterministic one, so a resend after a crash can be recognised.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from email import headerregistry
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

import sqlalchemy as sa
from flask import current_app

from pharmacy.billing import pricing
from pharmacy.billing.rules import format_cents
from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import links
from pharmacy.core.clock import local_date
from pharmacy.core.context import business_calendar, now, settings, today
from pharmacy.core.errors import ValidationFailed
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescriber, Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills import rules as refill_rules
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest
from pharmacy.reminders import rules
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind
from pharmacy.supply import next_fill, reads


class _RememberedHeaders(headerregistry.HeaderRegistry):
    """The standard header registry, remembering what it parsed.

    Building an EmailMessage parses every header it is given (and the parts' Content-Type and
    Content-Transfer-Encoding, several times over): about 1.5 ms an email, more than rendering it.
    Most of those values are the same in every email (From, Reply-To, each kind's subject, the parts'
    headers), and header objects are immutable, so each distinct (name, value) is parsed once per
    process and the same object reused; the message on the wire is byte for byte what it was.
    """

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one registry for the process; bounded
    def __call__(self, name: str, value: str) -> headerregistry.BaseHeader:
        return super().__call__(name, value)

    @functools.lru_cache(maxsize=256)  # noqa: B019 - the header class of a name (built anew on every lookup)
    def __getitem__(self, name: str) -> type:
        return super().__getitem__(name)


# RFC 5322 allows 998 characters a line: with the default 78 a long header (List-Unsubscribe carries a
# signed token) would be folded into RFC 2047 encoded-words, which mail clients do not read as a URL.
_POLICY = email_policy.default.clone(max_line_length=998, header_factory=_RememberedHeaders())
# Patient messages carry a preferences link and the RFC 8058 one-click headers; the prescriber's does not.
PATIENT_KINDS = frozenset(k for k in MessageKind if k != MessageKind.PRESCRIBER_RENEWAL)
PREVIEW_TOKEN = "preview"  # noqa: S105 - a placeholder where a staff preview would show a patient link


class RenderError(Exception):
    """The message cannot be built (no recipient, its subject is gone); `reason` says why, without PHI."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RenderedEmail:
    """One email, ready to hand to a transport (and to store on the row for the dashboard).

    `kept_text`/`kept_html`: the copy stored on the row when it differs from what was sent (a sign-in code is
    masked there: the outbox page must never show a working code)."""

    kind: MessageKind
    subject: str
    text: str
    html: str
    to_address: str
    headers: dict[str, str] = field(default_factory=dict)
    kept_text: str | None = None
    kept_html: str | None = None


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


#: Template context that other features give their own kinds of message: kind → provider(row, preview) returning
#: (context, names of secret values). Registered at start-up (portal/views.init_app); a secret is masked in the
#: stored copy and in previews.
CONTEXT_PROVIDERS: dict[MessageKind, Callable[[Any, bool], tuple[dict[str, Any], frozenset[str]]]] = {}
MASK = "••••••"


def sender_address() -> str:
    """The envelope sender: the bare address of MAIL_FROM."""
    return parseaddr(settings().mail_from)[1] or settings().mail_from


def _pharmacy() -> dict[str, str]:
    cfg = settings()
    return {"name": cfg.pharmacy_name, "phone": cfg.pharmacy_phone, "address": cfg.pharmacy_address,
            "email": cfg.pharmacy_email, "npi": cfg.pharmacy_npi}


def _words(d: date | None) -> str | None:
    return refill_rules.long_date(d) if d is not None else None


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


def _doctor(rx: Any) -> str | None:
    """Prescriber.display_name, from the prescriber's columns read with the prescription."""
    if rx.prescriber_first is None:
        return None
    suffix = f", {rx.prescriber_credentials}" if rx.prescriber_credentials else ""
    return f"Dr. {rx.prescriber_first} {rx.prescriber_last}{suffix}"


# ---- what the emails of a batch need, read in a fixed number of statements ---------------------------------


@dataclass(frozen=True)
class _Price:
    """A current price-list entry with the fields pricing.quote reads (plain values: they outlive a commit)."""

    id: int
    quantity: Decimal
    price_cents: int
    days_supply: int


class RunCache:
    """What stays the same for a whole delivery run: the formulas, the current price list, the shipping fee.

    Read once per run, on first use (a run lasts seconds; a price changed meanwhile shows from the next run
    on, exactly as a price changed between two runs always did).
    """

    def __init__(self) -> None:
        self.formulas: dict[int, Any] = {}
        self.prices: dict[int, list[_Price]] = {}
        self.lot_expiries: dict[int, list[date]] = {}  # the longest-dated usable lots, as the quote plans with
        self._shipping: int | None = None

    def load(self, formula_ids: set[int]) -> None:
        """Called by Batch.load, inside its reads: nothing is read later, while rendering (a read then would open a
        transaction on the session and leave it idle for the rest of the batch)."""
        self.shipping_fee_cents()
        missing = sorted(formula_ids - self.formulas.keys())
        if not missing:
            return
        for f in db.session.execute(
            sa.select(Formula.id, Formula.form, Formula.strength_mg, Formula.usp_category,
                      Formula.lead_time_business_days).where(Formula.id.in_(missing))
        ).all():
            self.formulas[f.id] = f
        for formula_id, entries in pricing.current_entries_for(missing).items():
            self.prices[formula_id] = [_Price(e.id, e.quantity, e.price_cents, e.days_supply) for e in entries]
        day = today()
        for formula_id in missing:
            self.lot_expiries[formula_id] = reads.projected_lot_expiries(formula_id, day)

    def shipping_fee_cents(self) -> int:
        if self._shipping is None:
            self._shipping = pricing.shipping_fee_cents()
        return self._shipping


def _in(column: Any, ids: set[int]) -> Any:
    return column.in_(sorted(ids))


class Batch:
    """The rows of a batch and everything their emails show, read together (about ten statements per batch,
    whatever its size; the formulas, prices and shipping fee once per run), as plain values.

    `render(row_id)` then builds each email from memory. The figures are exactly what the per-prescription
    pages show (refills.services.summary: the next fill's quantity and price as approving would order it,
    the ready and arrival days, the run-out of the latest fill); tests/integration/test_delivery_smtp.py
    compares the two on every kind of prescription. Whether a message is still *wanted* is not decided
    here: delivery checks that against the current rows just before each send.
    """

    def __init__(self, cache: RunCache) -> None:
        self.cache = cache
        self.rows: dict[int, Any] = {}
        self.orders: dict[int, Any] = {}
        self.prescriptions: dict[int, Any] = {}
        self.patients: dict[int, Any] = {}
        self.requests: dict[int, Any] = {}
        self.in_progress: set[int] = set()
        self.open_requests: dict[int, Any] = {}
        self.latest: dict[int, Any] = {}

    @classmethod
    def load(cls, ids: list[int], cache: RunCache | None = None) -> Batch:
        batch = cls(cache or RunCache())
        if not ids:
            return batch
        m = OutboxMessage
        batch.rows = {r.id: r for r in db.session.execute(
            sa.select(m.id, m.kind, m.patient_id, m.prescription_id, m.order_id, m.refill_request_id, m.renewal_id,
                      m.to_address, m.message_id, m.dedupe_key).where(_in(m.id, set(ids)))
        ).all()}
        order_ids = {r.order_id for r in batch.rows.values() if r.order_id is not None}
        if order_ids:
            batch.orders = {o.id: o for o in db.session.execute(
                sa.select(Order.id, Order.prescription_id, Order.patient_id, Order.state, Order.dispensed_on,
                          Order.supply_starts_on, Order.days_supply, Order.delivery_method, Order.price_cents,
                          Order.shipping_cents, Order.carrier, Order.tracking_number).where(_in(Order.id, order_ids))
            ).all()}
        rx_ids = {r.prescription_id for r in batch.rows.values() if r.prescription_id is not None}
        rx_ids |= {o.prescription_id for o in batch.orders.values()}
        if rx_ids:
            p = Prescriber
            batch.prescriptions = {rx.id: rx for rx in db.session.execute(
                sa.select(Prescription.id, Prescription.patient_id, Prescription.formula_id, Prescription.status,
                          Prescription.dose_mg, Prescription.titration, Prescription.quantity,
                          Prescription.days_supply, Prescription.refills_authorized, Prescription.written_date,
                          Prescription.expiry_date, Prescription.directions, Prescription.indication,
                          Prescription.indication_code, Prescription.rx_number, Prescription.days_dispensed,
                          Prescription.latest_run_out_date, Prescription.latest_days_supply,
                          Prescription.latest_covered_from, Prescription.prior_run_out_date,
                          p.first_name.label("prescriber_first"), p.last_name.label("prescriber_last"),
                          p.credentials.label("prescriber_credentials"), p.email.label("prescriber_email"))
                .outerjoin(p, p.id == Prescription.prescriber_id).where(_in(Prescription.id, rx_ids))
            ).all()}
        patient_ids = {r.patient_id for r in batch.rows.values() if r.patient_id is not None}
        patient_ids |= {o.patient_id for o in batch.orders.values()}
        patient_ids |= {rx.patient_id for rx in batch.prescriptions.values()}
        if patient_ids:
            batch.patients = {pt.id: pt for pt in db.session.execute(
                sa.select(Patient.id, Patient.first_name, Patient.last_name, Patient.email, Patient.date_of_birth,
                          Patient.delivery_preference, Patient.shipping_days).where(_in(Patient.id, patient_ids))
            ).all()}
        request_ids = {r.refill_request_id for r in batch.rows.values() if r.refill_request_id is not None}
        if request_ids:
            batch.requests = {q.id: q for q in db.session.execute(
                sa.select(RefillRequest.id, RefillRequest.delivery_method, RefillRequest.decline_reason)
                .where(_in(RefillRequest.id, request_ids))
            ).all()}
        batch.cache.load({rx.formula_id for rx in batch.prescriptions.values()})
        if batch.prescriptions:
            batch._load_rx_history(set(batch.prescriptions))
        return batch

    def _load_rx_history(self, rx_ids: set[int]) -> None:
        """What refills.summary reads per prescription beyond its cached supply, for all of them at once."""
        self.in_progress = reads.open_orders_of(rx_ids)
        asked = reads.open_requests_of(rx_ids)
        if asked:
            self.open_requests = {q.prescription_id: q for q in db.session.execute(
                sa.select(RefillRequest.prescription_id, RefillRequest.delivery_method, RefillRequest.requested_at)
                .where(_in(RefillRequest.prescription_id, asked), RefillRequest.state.in_(OPEN_REQUEST_STATES))
            ).all()}
        dispensed = {rx.id for rx in self.prescriptions.values() if rx.days_dispensed}
        if dispensed:
            self.latest = {o.prescription_id: o for o in db.session.execute(
                sa.select(Order.prescription_id, Order.dispensed_on, Order.run_out_date)
                .join(Prescription, sa.and_(Prescription.id == Order.prescription_id,
                                            Prescription.latest_fill_number == Order.fill_number))
                .where(_in(Order.prescription_id, dispensed))
            ).all()}

    # -- one email -----------------------------------------------------------------------------------

    def render(self, row_id: int, *, preview: bool = False) -> RenderedEmail:
        """The email of one row of the batch; RenderError when it cannot be sent."""
        row = self.rows.get(row_id)
        if row is None:
            raise RenderError("the message is gone")
        kind = MessageKind(row.kind)
        ctx = self.context(row_id, preview=preview)
        to_address = ctx.pop("_to")
        headers: dict[str, str] = {}
        if kind != MessageKind.PRESCRIBER_RENEWAL:
            headers["List-Unsubscribe"] = f"<{ctx['unsubscribe_url']}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if not to_address or "@" not in to_address:
            raise RenderError("no email address")
        env = current_app.jinja_env
        text = env.get_template(f"emails/{kind.value}.txt").render(**ctx)
        html = env.get_template(f"emails/{kind.value}.html").render(**ctx)
        kept_text = kept_html = None
        secrets = ctx.pop("_secrets", frozenset())
        if secrets:
            masked = {**ctx, **dict.fromkeys(secrets, MASK)}
            kept_text = _tidy_text(env.get_template(f"emails/{kind.value}.txt").render(**masked))
            kept_html = env.get_template(f"emails/{kind.value}.html").render(**masked)
        return RenderedEmail(kind=kind, subject=ctx["subject"], text=_tidy_text(text), html=html,
                             to_address=to_address.strip(), headers=headers, kept_text=kept_text, kept_html=kept_html)

    def context(self, row_id: int, *, preview: bool = False) -> dict[str, Any]:
        """The template context of one row (with its recipient under "_to")."""
        row = self.rows[row_id]
        kind = MessageKind(row.kind)
        cfg = settings()
        rx = self.prescriptions.get(row.prescription_id) if row.prescription_id else None
        ctx: dict[str, Any] = {"pharmacy": _pharmacy(), "kind": kind.value,
                               "subject": rules.subject_line(cfg.pharmacy_name, kind)}
        if kind == MessageKind.PRESCRIBER_RENEWAL:
            if rx is None:
                raise RenderError("the prescription is gone")
            ctx["_to"] = row.to_address or rx.prescriber_email
            ctx.update(self._prescriber_context(row, rx, preview))
        else:
            patient = self.patients.get(row.patient_id) if row.patient_id else None
            if patient is None:
                raise RenderError("the patient is gone")
            ctx["_to"] = row.to_address or patient.email
            ctx.update(self._patient_context(row, kind, patient, rx, preview))
        provider = CONTEXT_PROVIDERS.get(kind)
        if provider is not None:
            extra, secrets = provider(row, preview)
            ctx.update(extra)
            ctx["_secrets"] = secrets
        return ctx

    def _patient_context(self, row: Any, kind: MessageKind, patient: Any, rx: Any, preview: bool) -> dict[str, Any]:
        ctx: dict[str, Any] = {"first_name": patient.first_name}
        ctx.update(_patient_links(patient.id, rx.id if rx is not None else None, preview))
        request = self.requests.get(row.refill_request_id) if row.refill_request_id else None
        order = self.orders.get(row.order_id) if row.order_id else None
        if rx is not None:
            ctx.update(self._rx_context(rx, request.delivery_method if request is not None else None))
        if kind in rules.REFILL_REMINDERS or kind == MessageKind.RENEWAL_NEEDED:
            line = self._fill_timeline(row.order_id, row.prescription_id)
            if line is not None:
                ctx["run_out"] = _words(line.run_out)
                ctx["order_by"] = _words(line.order_by)
            if kind in rules.REFILL_REMINDERS and not ctx.get("order_by"):
                raise RenderError("the fill this reminder is about is no longer dispensed")
        if request is not None:
            ctx["decline_reason"] = request.decline_reason
        if order is not None and order.state != OrderState.CANCELLED:
            ctx["order_total"] = format_cents(order.price_cents + order.shipping_cents)
            ctx["carrier"] = order.carrier
            ctx["tracking_number"] = order.tracking_number
            # For a shipped fill the supply starts on the expected delivery day.
            ctx["arrives_on"] = _words(order.supply_starts_on) if order.state == OrderState.DISPENSED else ctx.get(
                "arrives_on")
        if kind == MessageKind.REQUEST_DECLINED and not ctx.get("decline_reason"):
            ctx["decline_reason"] = "Please call us so we can explain."
        return ctx

    def _rx_context(self, rx: Any, delivery: DeliveryMethod | None) -> dict[str, Any]:
        """What refills.services.summary(rx, delivery=…) says about the next fill, from the batch's rows: the same
        supply model (the prescription's cached columns) and the same plan (supply/next_fill.plan_from)."""
        patient = self.patients[rx.patient_id]
        formula = self.cache.formulas[rx.formula_id]
        current = reads.supply_of(rx)
        open_req = self.open_requests.get(rx.id)
        delivery = delivery or refill_rules.next_fill_delivery(
            open_req.delivery_method if open_req is not None else None, patient.delivery_preference)
        day = today()
        start_day = day if open_req is None else local_date(open_req.requested_at, settings().timezone)
        ships = delivery == DeliveryMethod.SHIP
        price = 0
        try:
            plan = next_fill.plan_from(formula, dose_mg=rx.dose_mg, titration=rx.titration, current=current,
                                       shipping_days=patient.shipping_days if ships else 0, day=day,
                                       lot_expiries=self.cache.lot_expiries.get(formula.id, []))
            price = pricing.quote(formula.id, plan.quantity, DeliveryMethod.PICKUP,
                                  entries=self.cache.prices.get(formula.id, [])).price_cents  # type: ignore[arg-type]
        except ValidationFailed:
            pass
        shipping = self.cache.shipping_fee_cents() if ships else 0
        ready, arrives = refill_rules.promised_dates(
            refill_rules.ready_date(start_day, lead_time_business_days=formula.lead_time_business_days,
                                    calendar=business_calendar()),
            current.earliest_next_start, shipping_days=patient.shipping_days if ships else 0,
            calendar=business_calendar())
        steps = rx_rules.parse_titration(rx.titration)
        next_step = None
        if steps and current.days_dispensed:
            ahead = rx_rules.remaining_steps(steps, current.days_dispensed)
            dose = ahead[0].dose_mg if ahead else rx.dose_mg
            next_step = f"Next fill continues at {rx_rules.format_mg(dose)} a day" + (
                f", then {rx_rules.format_mg(rx.dose_mg)}" if ahead and dose != rx.dose_mg else "")
        return {
            "product": rx_rules.product_name(formula.form, formula.strength_mg),
            "price": format_cents(price) if price else None,
            "shipping": format_cents(shipping) if shipping else None,
            "total": format_cents(price + shipping) if price + shipping else None,
            "ships": ships,
            "ready_on": _words(ready),
            "arrives_on": _words(arrives),
            "run_out": _words(current.run_out),
            "refills_left": current.refills_left,
            "fill_progress": current.progress_text() if current.partial else None,
            "expiry_date": _words(rx.expiry_date),
            "expires_before_run_out": current.expires_before_run_out(),
            "next_step": next_step,
            "prescriber_name": _doctor(rx),
        }

    def _fill_timeline(self, order_id: int | None, rx_id: int | None = None) -> refill_rules.RefillTimeline | None:
        """Run-out and order-by of the supply a reminder is about, computed now (the facts planning uses):
        None unless its order is dispensed and the prescription is active. The prescription is the message's: a
        replacement not yet dispensed holds (and is reminded from) the supply of its predecessor's latest order."""
        order = self.orders.get(order_id) if order_id is not None else None
        if order is None or order.state != OrderState.DISPENSED:
            return None
        rx = self.prescriptions.get(rx_id if rx_id is not None else order.prescription_id)
        patient = self.patients.get(order.patient_id)
        if rx is None or rx.status != RxStatus.ACTIVE or patient is None or rx.latest_run_out_date is None:
            return None
        formula = self.cache.formulas[rx.formula_id]
        # How the next fill will travel (the waiting request's method, else the patient's preference): the order-by
        # date planning timed the reminder by, and the one the portal shows — not the delivered fill's method.
        waiting = self.open_requests.get(rx.id)
        method = refill_rules.next_fill_delivery(waiting.delivery_method if waiting is not None else None,
                                                 patient.delivery_preference)
        return refill_rules.timeline(
            rx.latest_run_out_date, shipping_days=refill_rules.shipping_days_for(method, patient.shipping_days),
            buffer_days=settings().safety_buffer_days,
            lead_time_business_days=formula.lead_time_business_days, calendar=business_calendar(),
        )

    def _prescriber_context(self, row: Any, rx: Any, preview: bool) -> dict[str, Any]:
        """The least that lets the prescriber act: a reference and a link to a page that asks for their NPI before
        it shows the request (pharmacy/prescriber_links). Email is not a channel for the patient's name, birth
        date, medicine or diagnosis; the page (or the faxed printable copy) carries them."""
        token = PREVIEW_TOKEN if preview else links.make_token(links.RENEWAL, rx.patient_id, rx.id)
        return {
            "prescriber_name": _doctor(rx),
            "reference": f"renewal {row.renewal_id}",
            "renewal_url": f"{settings().base_url}{links.RENEWAL_PATH}{token}",
            "link_days": links.RENEWAL_LINK_DAYS,
        }


_BLANK_LINES = re.compile(r"\n{3,}")


def _tidy_text(text: str) -> str:
    """Template whitespace out of the plain-text part: no trailing spaces, at most one blank line."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)) + "\n"


def render(row: OutboxMessage, *, preview: bool = False) -> RenderedEmail:
    """Build the email for one outbox row from the current data (a batch of one).

    `preview=True` (the dashboard) puts a placeholder where the patient's signed links go, so a
    staff page never carries a working patient link. Raises RenderError when it cannot be sent.
    """
    return Batch.load([row.id]).render(row.id, preview=preview)


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
