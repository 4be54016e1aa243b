"""Price list (with history), payments (every amount is integer cents) and the adherence snapshot."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from pharmacy.billing.rules import PaymentKind, PaymentMethod
from pharmacy.compounding.models import Order
from pharmacy.core.db import Milli, UTCDateTime, enum_column
from pharmacy.extensions import db
from pharmacy.prescriptions.rules import Form


class PriceEntry(db.Model):
    """A price for a formula and quantity from a moment on; retired rather than rewritten."""

    __tablename__ = "price_list"
    __table_args__ = (
        sa.CheckConstraint("price_cents >= 0", name="price_nonnegative"),
        sa.CheckConstraint("quantity_milli > 0", name="quantity_positive"),
        sa.Index("ix_price_list_formula_current", "formula_id", "retired_at"),
        # One current price per formula and quantity, whatever two admins do at the same moment.
        sa.Index("uq_price_list_current", "formula_id", "quantity_milli", unique=True,
                 sqlite_where=sa.text("retired_at IS NULL"), postgresql_where=sa.text("retired_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    formula_id: Mapped[int] = mapped_column(sa.ForeignKey("formulas.id"))
    quantity: Mapped[Decimal] = mapped_column("quantity_milli", Milli())
    days_supply: Mapped[int] = mapped_column()  # the supply this quantity makes at the usual dose
    price_cents: Mapped[int] = mapped_column()
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))


class Fee(db.Model):
    """Flat fees such as shipping, with the same retire-don't-rewrite history."""

    __tablename__ = "fees"
    __table_args__ = (sa.CheckConstraint("amount_cents >= 0", name="amount_nonnegative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(32), index=True)  # "shipping"
    amount_cents: Mapped[int] = mapped_column()
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Payment(db.Model):
    __tablename__ = "payments"
    __table_args__ = (
        sa.CheckConstraint("amount_cents > 0", name="amount_positive"),
        # A patient's payments (cost page, statements, ledger, outstanding balances): covering, read index-only.
        sa.Index("ix_payments_patient_received", "patient_id", "received_at", "kind", "amount_cents"),
        # Revenue by month: a range of received_at summed by kind, read index-only.
        sa.Index("ix_payments_received", "received_at", "kind", "amount_cents"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"))
    order_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orders.id"), index=True)
    kind: Mapped[PaymentKind] = mapped_column(enum_column(PaymentKind), default=PaymentKind.PAYMENT)
    method: Mapped[PaymentMethod] = mapped_column(enum_column(PaymentMethod))
    amount_cents: Mapped[int] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reference: Mapped[str | None] = mapped_column(sa.String(60))
    note: Mapped[str | None] = mapped_column(sa.String(200))
    recorded_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    # The receipt's money as it stood when the money changed hands, so a receipt printed again later (for a claim)
    # says what it said the day it was issued: the fill's total (0 when the fill was cancelled or returned: not
    # charged), what was still owed on it after this payment, and the account's balance (negative: credit).
    # NULL for payments recorded before migration 0019: their receipts work them out from the rows.
    fill_total_cents: Mapped[int | None] = mapped_column()
    fill_owed_cents: Mapped[int | None] = mapped_column()
    balance_cents: Mapped[int | None] = mapped_column()


class AdherenceSnapshot(db.Model):
    """Each measured patient's PDC as of the last refresh (`flask reports refresh-adherence`, nightly job).

    Computing PDC means walking every fill of the window for every patient with an active prescription:
    seconds at chain scale, far too slow for a page view or the dashboard. The refresh writes one row per
    measured patient; the adherence page and the dashboard's call list read these rows. Exact: the PDC is
    covered_days / days_in_window (the rules' own arithmetic, rules.pdc), pdc_milli the same rounded to
    thousandths for ordering and the index; `period_days` is the report's window the refresh used.
    """

    __tablename__ = "adherence_snapshots"
    __table_args__ = (
        sa.CheckConstraint("covered_days >= 0 AND covered_days <= days_in_window", name="covered_within_window"),
        sa.CheckConstraint("pdc_milli >= 0 AND pdc_milli <= 1000", name="pdc_milli_range"),
        # The call list: lowest first, a range scan up to the threshold.
        sa.Index("ix_adherence_snapshots_pdc", "pdc_milli", "patient_id"),
    )

    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"), primary_key=True,
                                            autoincrement=False)
    pdc_milli: Mapped[int] = mapped_column()
    percent: Mapped[int] = mapped_column()  # rules.pdc_percent: half-up from the exact fraction
    covered_days: Mapped[int] = mapped_column()
    days_in_window: Mapped[int] = mapped_column()
    window_start: Mapped[date] = mapped_column()  # the patient's: the report's start or their first fill, if later
    window_end: Mapped[date] = mapped_column()
    period_days: Mapped[int] = mapped_column()  # the report's window (PDC_WINDOW_DAYS at refresh time)
    last_fill_on: Mapped[date] = mapped_column()
    last_days_supply: Mapped[int] = mapped_column()
    last_formula_id: Mapped[int] = mapped_column(sa.ForeignKey("formulas.id"))
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AdherenceSummary(db.Model):
    """The adherence report's distribution (patients per 10-point band, those under the threshold), counted once
    by the refresh that wrote the snapshot, in the same commit as its last batch.

    Counting it on every view read the whole snapshot index (≈ 10 ms at 100,000 patients, on a page opened all
    day) for figures that change only when the snapshot is refreshed. The report uses this row only while it
    matches the snapshot — the same refresh time at both ends of the patient ids, the threshold in force — and
    counts from the snapshot otherwise (during a refresh, or after the threshold setting changed).
    """

    __tablename__ = "adherence_summary"

    id: Mapped[int] = mapped_column(primary_key=True)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    window_end: Mapped[date] = mapped_column()
    period_days: Mapped[int] = mapped_column()
    threshold_percent: Mapped[int] = mapped_column()
    below: Mapped[int] = mapped_column()
    bands: Mapped[list[int]] = mapped_column(sa.JSON)  # patients per band: 0–9 %, 10–19 % … 90–100 %


# Reporting indexes on the orders table, declared beside the reports that read them (an Index on another model's
# columns attaches to that table: it is part of the one metadata, so the migrations and the drift check see it
# like any other). Covering, so each report reads index entries only, never the (wide) order rows:
#  * by state and dispense day: fills by form and the average monthly cost of a period;
#  * by patient: the adherence refresh (one patient range at a time) and outstanding balances (every charged
#    fill's amount, grouped by patient in index order).
_orders = Order.__table__
sa.Index("ix_orders_report_day", _orders.c.state, _orders.c.dispensed_on, _orders.c.prescription_id,
         _orders.c.patient_id, _orders.c.price_cents, _orders.c.days_supply)
sa.Index("ix_orders_report_patient", _orders.c.patient_id, _orders.c.state, _orders.c.dispensed_on,
         _orders.c.days_supply, _orders.c.prescription_id, _orders.c.price_cents, _orders.c.shipping_cents,
         _orders.c.supply_starts_on)


# ---------------------------------------------------------------------------------------------
# Running totals (billing/totals.py writes them in the same flush as the orders and payments they sum; `flask
# reports verify` / `rebuild-totals` check and recompute them). Derived rows, so no foreign keys: the rebuild and
# the bulk loads replace them wholesale without paying for per-row checks.
# ---------------------------------------------------------------------------------------------


class PatientBalance(db.Model):
    """A patient's charges (orders once charged, billing.services.charged_clause), payments and refunds, all time.

    owed_cents is kept with the others (charged − paid + refunded) so that "who owes most" is a range of one
    partial index, read from the top with a LIMIT, however many patients there are.
    """

    __tablename__ = "patient_balances"
    __table_args__ = (
        sa.CheckConstraint("owed_cents = charged_cents - paid_cents + refunded_cents", name="owed_is_the_difference"),
        sa.Index("ix_patient_balances_owing", "owed_cents", "patient_id",
                 sqlite_where=sa.text("owed_cents > 0"), postgresql_where=sa.text("owed_cents > 0")),
    )

    patient_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    charged_cents: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    paid_cents: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    refunded_cents: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    owed_cents: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class RevenueMonth(db.Model):
    """Payments and refunds received in one month at the pharmacy (`month`: its first day, local time)."""

    __tablename__ = "revenue_months"

    month: Mapped[date] = mapped_column(primary_key=True)
    paid_cents: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    refunded_cents: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class FillMonth(db.Model):
    """Dispensed fills of one form in one month (of dispensed_on): count, prices (medicine only) and days supplied;
    `patients_last`: the patients whose latest fill of this form is in this month — so the patients with a fill in
    "this month or later" are a sum over the period's months, never a distinct count over fills."""

    __tablename__ = "fill_months"

    month: Mapped[date] = mapped_column(primary_key=True)
    form: Mapped[Form] = mapped_column(enum_column(Form), primary_key=True)
    fills: Mapped[int] = mapped_column(default=0)
    price_cents: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    days_supply: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    patients_last: Mapped[int] = mapped_column(default=0)


class PatientLastFill(db.Model):
    """The month of a patient's latest dispensed fill of a form (what FillMonth.patients_last counts)."""

    __tablename__ = "patient_last_fills"

    patient_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    form: Mapped[Form] = mapped_column(enum_column(Form), primary_key=True)
    last_month: Mapped[date | None] = mapped_column()


class CostWindow(db.Model):
    """A patient's dispensed fills from `start_month` on (to today): count, prices, days and their monthly
    equivalent (rules.monthly_equivalent_cents of the sums) — one row per patient for each of the last
    rules.MAX_REPORT_MONTHS month starts a report may begin at.

    The average monthly cost is a mean of per-patient ratios over the report's period, which no per-month sum can
    give; keyed by the period's start, the report is one index range (count and sum) and its highest rows an index
    read with a LIMIT. A dispensing adds to the rows of every start up to its month.
    """

    __tablename__ = "cost_windows"
    __table_args__ = (
        sa.Index("ix_cost_windows_monthly", "start_month", "monthly_cents", "patient_id"),
    )

    start_month: Mapped[date] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    fills: Mapped[int] = mapped_column(default=0)
    price_cents: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    days_supply: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    monthly_cents: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class CostWindowTotal(db.Model):
    """The cost windows of one report start, counted and summed: how many patients had a fill since `start_month`
    and the sum of their monthly equivalents — the average monthly cost's numerator and denominator.

    Kept with the windows (totals._windows moves both in the same statement group, the windows' rows locked), so the
    Money page reads one row instead of counting ~100,000 windows on every view.
    """

    __tablename__ = "cost_window_totals"

    start_month: Mapped[date] = mapped_column(primary_key=True)
    patients: Mapped[int] = mapped_column(default=0)
    monthly_cents: Mapped[int] = mapped_column(sa.BigInteger, default=0)
