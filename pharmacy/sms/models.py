"""How a patient wants to hear from the pharmacy (email, text or both; a pause), their verified mobile number and
its consent, the consent history, and the texts patients send us."""
from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from pharmacy.core.db import UTCDateTime
from pharmacy.extensions import db


class ContactPreference(db.Model):
    """One row per patient who chose anything (no row: email only, as before the portal existed)."""

    __tablename__ = "contact_preferences"

    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(sa.String(8), default="email")  # email, sms, both (sms.rules.Choice)
    paused_until: Mapped[date | None] = mapped_column()  # refill reminders paused through this day (pharmacy time)
    # E.164 ("+12175550101"); texts go only to a number the patient proved is theirs (a code sent to it).
    sms_number: Mapped[str | None] = mapped_column(sa.String(16), index=True)
    sms_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Consent to text messages: given in the portal (with the number's code) or by START; STOP takes it back at once.
    sms_consent: Mapped[bool] = mapped_column(default=False)
    sms_consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sms_consent_source: Mapped[str | None] = mapped_column(sa.String(24))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    @property
    def texts_ready(self) -> bool:
        """A text may go: a verified number and consent that has not been taken back."""
        return bool(self.sms_number and self.sms_verified_at and self.sms_consent)

    @property
    def texts_stopped(self) -> bool:
        """A verified number whose consent was taken back (STOP, or "Stop text messages"): the choice of texts is
        kept for START, and the email goes meanwhile."""
        return bool(self.sms_number and self.sms_verified_at and not self.sms_consent)


def takes_texts(patient_id: sa.ColumnElement[int]) -> sa.ColumnElement[bool]:
    """SQL: the patient chose texts (only, or with email) and has a verified number with consent — someone
    reminders can reach without an email address (reminders/planning.py plans for them too)."""
    cp = ContactPreference
    return sa.exists().where(cp.patient_id == patient_id, cp.channel.in_(("sms", "both")), cp.sms_consent.is_(True),
                             cp.sms_number.is_not(None), cp.sms_verified_at.is_not(None))


class SmsConsentEvent(db.Model):
    """Every change of consent to texts, with when and how (TCPA-style records): never updated, never deleted."""

    __tablename__ = "sms_consent_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("patients.id", ondelete="SET NULL"), index=True)
    phone: Mapped[str] = mapped_column(sa.String(16), index=True)
    action: Mapped[str] = mapped_column(sa.String(16))  # opt_in, opt_out, help
    source: Mapped[str] = mapped_column(sa.String(24))  # portal, sms_keyword, carrier, staff
    detail: Mapped[str | None] = mapped_column(sa.String(120))  # the keyword, the provider's message id
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class InboundText(db.Model):
    """A text a patient (or anyone) sent us, once per provider message id: a webhook retried is answered again,
    never acted on twice."""

    __tablename__ = "sms_inbound"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    phone: Mapped[str] = mapped_column(sa.String(16))
    patient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("patients.id", ondelete="SET NULL"), index=True)
    keyword: Mapped[str] = mapped_column(sa.String(16))  # STOP, START, HELP, REFILL, OTHER
    outcome: Mapped[str] = mapped_column(sa.String(40))
    reply: Mapped[str | None] = mapped_column(sa.String(320))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
