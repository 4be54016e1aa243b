"""Money (docs/domain.md "Money") and adherence (docs/domain.md "Adherence") rules: exact cents, balances, PDC."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pharmacy.billing.rules import (
    MAX_AMOUNT_CENTS,
    AmountInvalid,
    Band,
    Ledger,
    PaymentKind,
    PaymentMethod,
    RefundTooLarge,
    band_status,
    check_payment_amount,
    check_refund,
    format_cents,
    is_adherent,
    monthly_equivalent_cents,
    parse_money,
    pdc,
    pdc_percent,
    receipt_number,
)
from pharmacy.core.errors import ValidationFailed

cents = st.integers(min_value=0, max_value=MAX_AMOUNT_CENTS)


def test_enums_are_unchanged() -> None:
    assert [m.value for m in PaymentMethod] == ["cash", "card", "check", "hsa_fsa"]
    assert [k.value for k in PaymentKind] == ["payment", "refund"]


# -- monthly equivalent and the band -------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "days", "expected"),
    [
        (4500, 30, 4500),
        (4500, 28, 4821),  # 4821.43
        (10000, 90, 3333),  # 3333.33
        (13500, 90, 4500),
        (2000, 60, 1000),
        (1, 60, 1),  # 0.5 rounds half-up
        (3, 20, 5),  # 4.5 rounds half-up (banker's rounding would give 4)
        (7, 20, 11),  # 10.5 → 11
        (0, 30, 0),
        (6000, 14, 12857),  # 12857.14: a 14-day aqueous fill looks expensive per month
    ],
)
def test_monthly_equivalent(price: int, days: int, expected: int) -> None:
    assert monthly_equivalent_cents(price, days) == expected


@pytest.mark.parametrize(
    ("price", "days", "field"),
    [(4500, 0, "days_supply"), (4500, -30, "days_supply"), (-1, 30, "price_cents")],
)
def test_monthly_equivalent_refuses_bad_inputs(price: int, days: int, field: str) -> None:
    with pytest.raises(AmountInvalid) as info:
        monthly_equivalent_cents(price, days)
    assert list(info.value.fields) == [field]
    assert isinstance(info.value, ValidationFailed)


def test_monthly_equivalent_refuses_floats() -> None:
    with pytest.raises(TypeError):
        monthly_equivalent_cents(45.0, 30)  # type: ignore[arg-type]


@given(price=cents, days=st.integers(min_value=1, max_value=365))
def test_monthly_equivalent_matches_decimal_half_up(price: int, days: int) -> None:
    expected = (Decimal(price) * 30 / Decimal(days)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    assert monthly_equivalent_cents(price, days) == int(expected)


BAND = Band(min_cents=4500, max_cents=10000)


@pytest.mark.parametrize(
    ("monthly", "expected"),
    [(0, "below"), (4499, "below"), (4500, "within"), (7500, "within"), (10000, "within"), (10001, "above")],
)
def test_band_status(monthly: int, expected: str) -> None:
    assert band_status(monthly, BAND) == expected


def test_a_90_day_fill_can_fall_below_the_band() -> None:
    assert band_status(monthly_equivalent_cents(10000, 90), BAND) == "below"
    assert band_status(monthly_equivalent_cents(6000, 14), BAND) == "above"


@pytest.mark.parametrize(("low", "high"), [(10000, 4500), (-1, 100)])
def test_band_needs_an_ordered_range(low: int, high: int) -> None:
    with pytest.raises(ValueError):
        Band(min_cents=low, max_cents=high)


# -- parse and format -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$45", 4500),
        ("45.5", 4550),
        ("45.50", 4550),
        ("1,045.00", 104500),
        ("1,045", 104500),
        (" 45 ", 4500),
        ("$ 45.00", 4500),
        ("0", 0),
        ("0.05", 5),
        ("0.5", 50),
        ("100000", 10_000_000),
        ("$100,000.00", 10_000_000),
        ("007.10", 710),
    ],
)
def test_parse_money(text: str, expected: int) -> None:
    assert parse_money(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Enter an amount, like 45.00."),
        ("   ", "Enter an amount, like 45.00."),
        ("-5", "An amount cannot be negative."),
        ("$-5.00", "An amount cannot be negative."),
        ("45.505", "Use at most two decimals (cents), like 45.50."),
        ("45.001", "Use at most two decimals (cents), like 45.50."),
        ("abc", "Enter an amount, like 45.00."),
        ("45.", "Enter an amount, like 45.00."),
        (".5", "Enter an amount, like 45.00."),
        ("1,0,45", "Enter an amount, like 45.00."),
        ("45,00", "Enter an amount, like 45.00."),  # a decimal comma is ambiguous: refused, not guessed
        ("1e3", "Enter an amount, like 45.00."),
        ("\u0664\u0665", "Enter an amount, like 45.00."),  # Arabic-Indic digits
        ("45 USD", "Enter an amount, like 45.00."),
        ("100000.01", "Enter at most $100,000.00."),
        ("1,000,000", "Enter at most $100,000.00."),
    ],
)
def test_parse_money_refusals(text: str, message: str) -> None:
    with pytest.raises(AmountInvalid) as info:
        parse_money(text)
    assert info.value.fields == {"amount": [message]}


def test_parse_money_field_name_can_follow_the_form() -> None:
    with pytest.raises(AmountInvalid) as info:
        parse_money("nope", field="price")
    assert list(info.value.fields) == ["price"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (4500, "$45.00"),
        (-525, "-$5.25"),
        (104500, "$1,045.00"),
        (0, "$0.00"),
        (5, "$0.05"),
        (-5, "-$0.05"),
        (123456789, "$1,234,567.89"),
    ],
)
def test_format_cents(value: int, expected: str) -> None:
    assert format_cents(value) == expected


@pytest.mark.parametrize("bad", [45.0, Decimal("45"), True, "45"])
def test_format_cents_refuses_anything_but_int(bad: object) -> None:
    with pytest.raises(TypeError):
        format_cents(bad)  # type: ignore[arg-type]


@given(amount=cents)
def test_parse_inverts_format(amount: int) -> None:
    assert parse_money(format_cents(amount)) == amount


@given(dollars=st.integers(min_value=0, max_value=99_999), cents_part=st.integers(min_value=0, max_value=99))
def test_parse_plain_decimal(dollars: int, cents_part: int) -> None:
    assert parse_money(f"{dollars}.{cents_part:02d}") == dollars * 100 + cents_part


# -- balances ----------------------------------------------------------------------------------------


def test_ledger_owed() -> None:
    ledger = Ledger(charged_cents=10000, paid_cents=6000, refunded_cents=1000)
    assert ledger.net_paid_cents == 5000
    assert ledger.balance_cents == 5000
    assert ledger.owed_cents == 5000
    assert ledger.credit_cents == 0


def test_ledger_credit() -> None:
    ledger = Ledger(charged_cents=10000, paid_cents=12000, refunded_cents=0)
    assert (ledger.net_paid_cents, ledger.balance_cents, ledger.owed_cents, ledger.credit_cents) == (
        12000, -2000, 0, 2000,
    )


def test_ledger_settled() -> None:
    ledger = Ledger(charged_cents=4500, paid_cents=4500, refunded_cents=0)
    assert (ledger.balance_cents, ledger.owed_cents, ledger.credit_cents) == (0, 0, 0)


@pytest.mark.parametrize(("charged", "paid", "refunded"), [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 100, 101)])
def test_ledger_refuses_impossible_totals(charged: int, paid: int, refunded: int) -> None:
    with pytest.raises(ValueError):
        Ledger(charged_cents=charged, paid_cents=paid, refunded_cents=refunded)


@given(charged=cents, paid=cents, refund_share=st.integers(min_value=0, max_value=100))
def test_ledger_identities(charged: int, paid: int, refund_share: int) -> None:
    ledger = Ledger(charged_cents=charged, paid_cents=paid, refunded_cents=paid * refund_share // 100)
    assert ledger.owed_cents >= 0 and ledger.credit_cents >= 0
    assert ledger.owed_cents == 0 or ledger.credit_cents == 0
    assert ledger.owed_cents - ledger.credit_cents == ledger.balance_cents
    assert ledger.charged_cents - ledger.net_paid_cents == ledger.balance_cents


def test_refund_up_to_net_paid() -> None:
    ledger = Ledger(charged_cents=10000, paid_cents=6000, refunded_cents=1000)
    check_refund(5000, ledger)  # the whole net paid may go back
    with pytest.raises(RefundTooLarge) as info:
        check_refund(5001, ledger)
    assert info.value.fields == {"amount": ["A refund cannot be more than what was paid ($50.00)."]}
    assert info.value.message == "A refund cannot be more than what was paid ($50.00)."


@pytest.mark.parametrize("amount", [0, -100])
def test_refund_must_be_positive(amount: int) -> None:
    with pytest.raises(AmountInvalid) as info:
        check_refund(amount, Ledger(charged_cents=0, paid_cents=5000, refunded_cents=0))
    assert list(info.value.fields) == ["amount"]


def test_nothing_paid_nothing_to_refund() -> None:
    with pytest.raises(RefundTooLarge, match=r"\(\$0\.00\)"):
        check_refund(1, Ledger(charged_cents=4500, paid_cents=0, refunded_cents=0))


@pytest.mark.parametrize("amount", [1, 4500, MAX_AMOUNT_CENTS])
def test_payment_amount_ok(amount: int) -> None:
    check_payment_amount(amount)


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (0, "Enter an amount above $0.00."),
        (-1, "Enter an amount above $0.00."),
        (MAX_AMOUNT_CENTS + 1, "Enter at most $100,000.00."),
    ],
)
def test_payment_amount_refused(amount: int, message: str) -> None:
    with pytest.raises(AmountInvalid) as info:
        check_payment_amount(amount)
    assert info.value.fields == {"amount": [message]}


# -- PDC -------------------------------------------------------------------------------------------------

JAN1, JAN31 = date(2026, 1, 1), date(2026, 1, 31)


@pytest.mark.parametrize(
    ("fills", "start", "end", "expected"),
    [
        ([(JAN1, 30)], JAN1, date(2026, 1, 30), Decimal("1.0000")),
        ([(JAN1, 30)], JAN1, date(2026, 3, 1), Decimal("0.5000")),  # 30 of 60 days
        # Overlap shifts forward: the second fill covers 31 Jan – 1 Mar, not 10 Jan – 8 Feb.
        ([(JAN1, 30), (date(2026, 1, 10), 30)], JAN1, date(2026, 3, 31), Decimal("0.6667")),  # 60 / 90
        ([(JAN1, 30), (date(2026, 1, 10), 30)], JAN1, date(2026, 3, 1), Decimal("1.0000")),
        ([(date(2025, 12, 20), 30)], JAN1, JAN31, Decimal("0.5806")),  # supply carried in: 18 / 31
        ([(date(2026, 2, 5), 30)], JAN1, JAN31, Decimal("0.0000")),  # after the window
        ([(date(2025, 11, 1), 30)], JAN1, JAN31, Decimal("0.0000")),  # ran out before the window
        ([(JAN1, 10), (date(2026, 1, 21), 10)], JAN1, JAN31, Decimal("0.6452")),  # a gap: 20 / 31
        ([], JAN1, JAN31, Decimal("0.0000")),
        ([(JAN1, 1)], JAN1, date(2026, 2, 1), Decimal("0.0313")),  # 1/32 = 0.03125 → half-up
        ([(JAN1, 1)], JAN1, JAN1, Decimal("1.0000")),  # a one-day window
        # Shifted supply past the window end does not count.
        ([(JAN1, 31), (date(2026, 1, 30), 31)], JAN1, JAN31, Decimal("1.0000")),
        # Two fills on one day stack.
        ([(JAN1, 15), (JAN1, 15)], JAN1, JAN31, Decimal("0.9677")),  # 30 / 31
    ],
)
def test_pdc_examples(fills: list[tuple[date, int]], start: date, end: date, expected: Decimal) -> None:
    result = pdc(fills, start, end)
    assert result == expected
    assert result.as_tuple().exponent == -4


@pytest.mark.parametrize(
    ("fills", "start", "end", "expected"),
    [
        ([(date(2025, 12, 20), 30)], JAN1, JAN31, 58),  # 58.06
        ([(JAN1, 1)], JAN1, date(2026, 1, 8), 13),  # 12.5 → 13
        ([(JAN1, 20)], JAN1, date(2026, 1, 30), 67),  # 66.67
        ([(JAN1, 30)], JAN1, date(2026, 1, 30), 100),
        ([], JAN1, JAN31, 0),
    ],
)
def test_pdc_percent(fills: list[tuple[date, int]], start: date, end: date, expected: int) -> None:
    assert pdc_percent(fills, start, end) == expected


def test_pdc_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError):
        pdc([], JAN31, JAN1)
    with pytest.raises(ValueError):
        pdc([(JAN1, 0)], JAN1, JAN31)


@pytest.mark.parametrize(
    ("value", "threshold", "expected"),
    [
        (Decimal("0.8000"), 80, True),
        (Decimal("0.7999"), 80, False),
        (Decimal("1"), 80, True),
        (Decimal("0"), 80, False),
        (Decimal("0.7500"), 75, True),
        (Decimal("0.7499"), 75, False),
    ],
)
def test_is_adherent(value: Decimal, threshold: int, expected: bool) -> None:
    assert is_adherent(value, threshold) is expected


def test_is_adherent_refuses_a_percent() -> None:
    with pytest.raises(ValueError):
        is_adherent(Decimal("85"))


def covered_by_simulation(fills: list[tuple[date, int]], start: date, end: date) -> int:
    """An independent model: stock arrives on dispense days; each day with stock on hand is covered."""
    if not fills:
        return 0
    arrivals: dict[date, int] = {}
    for day, supply in fills:
        arrivals[day] = arrivals.get(day, 0) + supply
    stock, covered = 0, 0
    day = min(arrivals)
    while day <= end:
        stock += arrivals.get(day, 0)
        if stock > 0:
            stock -= 1
            if day >= start:
                covered += 1
        day += timedelta(days=1)
    return covered


fill = st.tuples(st.dates(min_value=date(2025, 10, 1), max_value=date(2026, 6, 30)), st.integers(1, 120))
fill_lists = st.lists(fill, max_size=8)
window_starts = st.dates(min_value=date(2025, 12, 1), max_value=date(2026, 3, 1))
window_lengths = st.integers(min_value=1, max_value=200)


@given(fills=fill_lists, start=window_starts, length=window_lengths)
def test_pdc_matches_a_day_by_day_simulation(fills: list[tuple[date, int]], start: date, length: int) -> None:
    end = start + timedelta(days=length - 1)
    covered = covered_by_simulation(fills, start, end)
    expected = (Decimal(covered) / Decimal(length)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    assert pdc(fills, start, end) == expected
    assert pdc_percent(fills, start, end) == int(
        (Decimal(covered * 100) / Decimal(length)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    )


@given(fills=fill_lists, start=window_starts, length=window_lengths)
def test_pdc_is_a_proportion(fills: list[tuple[date, int]], start: date, length: int) -> None:
    assert Decimal(0) <= pdc(fills, start, start + timedelta(days=length - 1)) <= Decimal(1)


@given(fills=fill_lists, extra=fill, start=window_starts, length=window_lengths)
def test_adding_a_fill_never_lowers_pdc(
    fills: list[tuple[date, int]], extra: tuple[date, int], start: date, length: int
) -> None:
    end = start + timedelta(days=length - 1)
    assert pdc([*fills, extra], start, end) >= pdc(fills, start, end)


@given(fills=fill_lists, start=window_starts, length=window_lengths, data=st.data())
def test_fill_order_is_irrelevant(
    fills: list[tuple[date, int]], start: date, length: int, data: st.DataObject
) -> None:
    end = start + timedelta(days=length - 1)
    shuffled = data.draw(st.permutations(fills))
    assert pdc(shuffled, start, end) == pdc(fills, start, end)


@given(start=window_starts, length=window_lengths, lead=st.integers(0, 30), extra=st.integers(0, 30))
def test_a_fill_covering_the_window_gives_one(start: date, length: int, lead: int, extra: int) -> None:
    end = start + timedelta(days=length - 1)
    assert pdc([(start - timedelta(days=lead), lead + length + extra)], start, end) == Decimal("1.0000")
    assert pdc_percent([(start - timedelta(days=lead), lead + length + extra)], start, end) == 100


# -- receipts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payment_id", "received", "expected"),
    [
        (123, date(2026, 11, 23), "R2026-000123"),
        (1, date(2027, 1, 1), "R2027-000001"),
        (1_234_567, date(2026, 12, 31), "R2026-1234567"),
    ],
)
def test_receipt_number(payment_id: int, received: date, expected: str) -> None:
    assert receipt_number(payment_id, received) == expected


@pytest.mark.parametrize("payment_id", [0, -5])
def test_receipt_number_needs_a_saved_payment(payment_id: int) -> None:
    with pytest.raises(ValueError):
        receipt_number(payment_id, date(2026, 11, 23))


def test_each_refund_is_taken_off_the_latest_payments_before_it_once() -> None:
    from pharmacy.billing.rules import refunds_by_payment

    # $30 then $25 paid, $25 refunded: the $25 payment gave it back; the $30 receipt stands.
    assert refunds_by_payment([(1, 3000), (2, 2500)], [(3, 2500)]) == {1: [], 2: [(3, 2500)]}
    # $40 refunded: $25 from the latest, $15 from the one before.
    assert refunds_by_payment([(1, 3000), (2, 2500)], [(3, 4000)]) == {1: [(3, 1500)], 2: [(3, 2500)]}
    # A refund only gives back payments recorded before it; a later payment is untouched.
    assert refunds_by_payment([(1, 3000), (4, 1000)], [(2, 500), (3, 500)]) == {1: [(2, 500), (3, 500)], 4: []}
    # The receipts' nets always add up to what was kept.
    pays, backs = [(1, 1000), (2, 700), (5, 300)], [(3, 900), (6, 600)]
    given = refunds_by_payment(pays, backs)
    nets = [cents - sum(c for _r, c in given[pid]) for pid, cents in pays]
    assert sum(nets) == 2000 - 1500 and min(nets) >= 0
