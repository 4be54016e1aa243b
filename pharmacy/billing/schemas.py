"""Billing schemas: HTML forms (amounts typed as "45.00") and the JSON API (amounts in integer cents).

Precise on purpose — required fields, enums, ranges — so bad input is a 422 with a field message and
never reaches the database (ids are capped at PostgreSQL's integer range, text refuses NUL and lone
surrogates, which PostgreSQL would reject with a 500).
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from pharmacy.billing.pricing import MAX_ID, MAX_SHIPPING_CENTS
from pharmacy.billing.rules import MAX_AMOUNT_CENTS, AmountInvalid, PaymentKind, PaymentMethod, parse_money
from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core.schemas import BaseSchema, DecimalString, Flag, TrimmedString

ID = {"validate": validate.Range(min=1, max=MAX_ID)}  # forms and query strings send text: "12"
JSON_ID = {**ID, "strict": True}  # JSON bodies send numbers
METHODS = [m.value for m in PaymentMethod]
BANDS = ["below", "within", "above"]


class SafeText(TrimmedString):
    """Trimmed text that the database can store: no NUL, no lone surrogate halves."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("Contains a character that is not allowed.") from None
        return text


class Money(fields.Field):
    """An amount as a person types it ("45", "45.50", "$1,045.00") → integer cents, via rules.parse_money."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if not isinstance(value, str):
            raise ValidationError("Enter an amount, like 45.00.")
        try:
            return parse_money(value, field=attr or "amount")
        except AmountInvalid as exc:
            messages = [m for msgs in exc.fields.values() for m in msgs]
            raise ValidationError(messages or exc.message) from None

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        whole, rest = divmod(int(value), 100)
        return f"{whole}.{rest:02d}"


def _checkbox(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "y", "yes", "on", "true")


# ---------------------------------------------------------------------------------------------
# HTML forms
# ---------------------------------------------------------------------------------------------


class PriceForm(BaseSchema):
    formula_id = fields.Integer(required=True, **ID)
    quantity = DecimalString(required=True, places=3, min_value=Decimal("0.001"), max_value=Decimal(100_000))
    days_supply = fields.Integer(required=True, validate=validate.Range(min=1, max=366))
    price = Money(required=True)
    accept_out_of_band = fields.Function(deserialize=_checkbox, load_default=False)


class ShippingForm(BaseSchema):
    shipping_fee = Money(required=True)


class QuoteForm(BaseSchema):
    formula_id = fields.Integer(required=True, **ID)
    quantity = DecimalString(required=True, places=3, min_value=Decimal("0.001"), max_value=Decimal(100_000))
    delivery = fields.Enum(DeliveryMethod, by_value=True, load_default=DeliveryMethod.PICKUP)
    days_supply = fields.Integer(load_default=None, validate=validate.Range(min=1, max=366))


class PaymentForm(BaseSchema):
    amount = Money(required=True)
    method = fields.String(required=True, validate=validate.OneOf(METHODS, error="Choose cash, card, check or HSA/FSA."))
    order_id = fields.Integer(load_default=None, **ID)
    reference = SafeText(load_default=None, validate=validate.Length(max=60))
    note = SafeText(load_default=None, validate=validate.Length(max=200))


class ReportArgs(BaseSchema):
    months = fields.Integer(load_default=12, validate=validate.Range(min=1, max=36))
    window_days = fields.Integer(load_default=None, validate=validate.Range(min=7, max=730))


# ---------------------------------------------------------------------------------------------
# JSON API
# ---------------------------------------------------------------------------------------------


class BillingPriceListQuery(Schema):
    formula_id = fields.Integer(load_default=None, **ID)
    include_retired = Flag(load_default=False)


class BillingPriceEntryIn(Schema):
    formula_id = fields.Integer(required=True, **JSON_ID)
    quantity = DecimalString(required=True, places=3, min_value=Decimal("0.001"), max_value=Decimal(100_000),
                             metadata={"description": 'Capsules or mL, as a string: "30", "45.5".'})
    days_supply = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=366))
    price_cents = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=MAX_AMOUNT_CENTS))
    accept_out_of_band = Flag(load_default=False, metadata={
        "description": "Confirms a price whose monthly equivalent is outside the configured band."})


class BillingPriceEntryOut(Schema):
    id = fields.Integer()
    formula_id = fields.Integer()
    formula_code = fields.String()
    formula_name = fields.String()
    form = fields.String()
    product = fields.String()
    quantity = DecimalString()
    days_supply = fields.Integer()
    price_cents = fields.Integer()
    monthly_equivalent_cents = fields.Integer()
    band = fields.String(validate=validate.OneOf(BANDS))
    out_of_band = fields.Boolean()
    effective_at = fields.DateTime()
    retired_at = fields.DateTime(allow_none=True)


class BillingPriceListOut(Schema):
    entries = fields.List(fields.Nested(BillingPriceEntryOut), attribute="rows")
    shipping_cents = fields.Integer()
    band_min_cents = fields.Function(lambda p: p.band.min_cents, metadata={"type": "integer"})
    band_max_cents = fields.Function(lambda p: p.band.max_cents, metadata={"type": "integer"})


class BillingShippingFeeIn(Schema):
    amount_cents = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=MAX_SHIPPING_CENTS))


class BillingShippingFeeOut(Schema):
    amount_cents = fields.Integer()


class BillingQuoteQuery(Schema):
    formula_id = fields.Integer(required=True, **ID)
    quantity = DecimalString(required=True, places=3, min_value=Decimal("0.001"), max_value=Decimal(100_000))
    delivery = fields.Enum(DeliveryMethod, by_value=True, load_default=DeliveryMethod.PICKUP)
    days_supply = fields.Integer(load_default=None, validate=validate.Range(min=1, max=366))


class BillingQuoteOut(Schema):
    formula_id = fields.Function(lambda q: q.formula.id, metadata={"type": "integer"})
    formula_code = fields.Function(lambda q: q.formula.code, metadata={"type": "string"})
    product = fields.String()
    quantity = DecimalString()
    delivery = fields.Enum(DeliveryMethod, by_value=True)
    price_cents = fields.Integer()
    shipping_cents = fields.Integer()
    total_cents = fields.Integer()
    prorated = fields.Boolean()
    price_entry_id = fields.Integer(allow_none=True)
    days_supply = fields.Integer(allow_none=True)
    monthly_equivalent_cents = fields.Integer(allow_none=True)
    band = fields.String(allow_none=True, validate=validate.OneOf(BANDS))


class BillingPaymentIn(Schema):
    patient_id = fields.Integer(required=True, **JSON_ID)
    order_id = fields.Integer(load_default=None, allow_none=True, **JSON_ID)
    method = fields.Enum(PaymentMethod, by_value=True, required=True)
    amount_cents = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=MAX_AMOUNT_CENTS),
                                  metadata={"description": "Integer cents: 3333 is $33.33."})
    reference = SafeText(load_default=None, allow_none=True, validate=validate.Length(max=60))
    note = SafeText(load_default=None, allow_none=True, validate=validate.Length(max=200))


class BillingLedgerOut(Schema):
    charged_cents = fields.Integer()
    paid_cents = fields.Integer()
    refunded_cents = fields.Integer()
    net_paid_cents = fields.Integer()
    balance_cents = fields.Integer(metadata={"description": "Positive: the patient owes; negative: credit."})
    owed_cents = fields.Integer()
    credit_cents = fields.Integer()


class BillingPaymentOut(Schema):
    id = fields.Function(lambda r: r.payment.id, metadata={"type": "integer"})
    receipt_number = fields.String()
    patient_id = fields.Function(lambda r: r.payment.patient_id, metadata={"type": "integer"})
    order_id = fields.Function(lambda r: r.payment.order_id, allow_none=True, metadata={"type": "integer"})
    kind = fields.Function(lambda r: r.payment.kind.value,
                           metadata={"type": "string", "enum": [k.value for k in PaymentKind]})
    method = fields.Function(lambda r: r.payment.method.value, metadata={"type": "string", "enum": METHODS})
    amount_cents = fields.Function(lambda r: r.payment.amount_cents, metadata={"type": "integer"})
    received_at = fields.Function(lambda r: r.payment.received_at.isoformat(),
                                  metadata={"type": "string", "format": "date-time"})
    reference = fields.Function(lambda r: r.payment.reference, allow_none=True, metadata={"type": "string"})
    balance = fields.Nested(BillingLedgerOut)
    order_balance = fields.Nested(BillingLedgerOut, allow_none=True)


class BillingRegimenOut(Schema):
    prescription_id = fields.Integer()
    rx_number = fields.String()
    product = fields.String()
    quantity_text = fields.String()
    days_supply = fields.Integer()
    total_cents = fields.Integer(allow_none=True)
    monthly_equivalent_cents = fields.Integer(allow_none=True)
    note = fields.String(allow_none=True)


class BillingFillOut(Schema):
    order_id = fields.Integer()
    rx_number = fields.String()
    fill_number = fields.Integer()
    product = fields.String()
    quantity_text = fields.String()
    days_supply = fields.Integer()
    state = fields.String()
    fill_date = fields.Date(allow_none=True)
    price_cents = fields.Integer()
    shipping_cents = fields.Integer()
    total_cents = fields.Integer()
    charged = fields.Boolean()
    paid_cents = fields.Integer()
    refunded_cents = fields.Integer()
    balance_cents = fields.Integer()


class BillingPaymentLineOut(Schema):
    id = fields.Integer()
    kind = fields.String()
    method = fields.String()
    amount_cents = fields.Integer()
    received_at = fields.DateTime()
    received_on = fields.Date()
    order_id = fields.Integer(allow_none=True)
    receipt_number = fields.String()


class BillingCostsQuery(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=10_000))


class BillingPatientCostsOut(Schema):
    patient_id = fields.Function(lambda c: c.patient.id, metadata={"type": "integer"})
    year = fields.Integer()
    monthly_equivalent_cents = fields.Function(lambda c: c.summary.monthly_equivalent_cents, metadata={"type": "integer"})
    spent_this_year_cents = fields.Function(lambda c: c.summary.spent_this_year_cents, metadata={"type": "integer"})
    balance = fields.Nested(BillingLedgerOut, attribute="ledger")
    regimen = fields.List(fields.Nested(BillingRegimenOut))
    fills = fields.List(fields.Nested(BillingFillOut))
    payments = fields.List(fields.Nested(BillingPaymentLineOut))
    statement_years = fields.List(fields.Integer())
    page = fields.Integer()
    has_next = fields.Boolean()


class BillingMonthsQuery(Schema):
    months = fields.Integer(load_default=12, validate=validate.Range(min=1, max=36))


class BillingLimitQuery(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class BillingAdherenceQuery(Schema):
    window_days = fields.Integer(load_default=None, validate=validate.Range(min=7, max=730))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class BillingMonthRevenueOut(Schema):
    month = fields.String()
    label = fields.String()
    paid_cents = fields.Integer()
    refunded_cents = fields.Integer()
    net_cents = fields.Integer()


class BillingFormFillsOut(Schema):
    form = fields.String()
    label = fields.String()
    fills = fields.Integer()
    patients = fields.Integer()
    price_cents = fields.Integer()
    days_supply = fields.Integer()
    monthly_equivalent_cents = fields.Integer()


class BillingPatientMonthlyOut(Schema):
    patient_id = fields.Integer()
    name = fields.String()
    fills = fields.Integer()
    price_cents = fields.Integer()
    days_supply = fields.Integer()
    monthly_equivalent_cents = fields.Integer()


class BillingAverageCostOut(Schema):
    average_cents = fields.Integer()
    patients = fields.Integer()
    highest = fields.List(fields.Nested(BillingPatientMonthlyOut))


class BillingOutstandingRowOut(Schema):
    patient_id = fields.Integer()
    name = fields.String()
    phone = fields.String(allow_none=True)
    charged_cents = fields.Integer()
    net_paid_cents = fields.Integer()
    owed_cents = fields.Integer()


class BillingOutstandingOut(Schema):
    rows = fields.List(fields.Nested(BillingOutstandingRowOut))
    patients = fields.Integer()
    total_owed_cents = fields.Integer()


class BillingAdherenceRowOut(Schema):
    patient_id = fields.Integer()
    name = fields.String()
    phone = fields.String(allow_none=True)
    pdc = DecimalString(places=4)
    percent = fields.Integer()
    window_start = fields.Date()
    last_fill_on = fields.Date()
    last_days_supply = fields.Integer()
    last_product = fields.String()


class BillingAdherenceOut(Schema):
    window_days = fields.Integer()
    window_start = fields.Date()
    window_end = fields.Date()
    threshold_percent = fields.Integer()
    measured = fields.Integer()
    below_count = fields.Integer()
    distribution = fields.List(fields.Integer())
    rows = fields.List(fields.Nested(BillingAdherenceRowOut))
    show_names = fields.Boolean()
