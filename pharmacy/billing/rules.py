"""Money rules (pure): integer cents, monthly equivalents, the price band, balances and PDC."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from pharmacy.core.errors import ValidationFailed
from pharmacy.supply import rules as supply_rules


class PaymentMethod(StrEnum):
    CASH = "cash"
    CARD = "card"
    CHECK = "check"
    HSA_FSA = "hsa_fsa"


class PaymentKind(StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"


# ---------------------------------------------------------------------------------------
# Errors and limits
# ---------------------------------------------------------------------------------------

# $100,000: far above any LDN bill, low enough to catch a mistyped amount.
MAX_AMOUNT_CENTS = 10_000_000


class AmountInvalid(ValidationFailed):
    """A money amount that cannot be accepted (not a number, negative, fractions of a cent …)."""


class RefundTooLarge(ValidationFailed):
    """A refund above what the patient has (net) paid."""


def _require_cents(value: int, name: str) -> None:
    # bool is an int subclass and a float is never money: both are programming errors.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be integer cents, got {type(value).__name__}.")


# ---------------------------------------------------------------------------------------
# Monthly equivalent and the price band
# ---------------------------------------------------------------------------------------


def div_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half-up, for numerator >= 0 and denominator > 0 (exact integers)."""
    return (2 * numerator + denominator) // (2 * denominator)


def monthly_equivalent_cents(price_cents: int, days_supply: int) -> int:
    """What a fill costs per 30 days, to the cent.

    # docs/domain.md "Money": the monthly-equivalent cost of a fill is price × 30 / days supply.
    Integer arithmetic, rounded half-up: $45.00 for 28 days → $48.214… → $48.21;
    $100.00 for 90 days → $33.333… → $33.33.
    """
    _require_cents(price_cents, "price_cents")
    if isinstance(days_supply, bool) or not isinstance(days_supply, int) or days_supply <= 0:
        message = "Days supply must be at least 1."
        raise AmountInvalid(message, fields={"days_supply": message})
    if price_cents < 0:
        raise AmountInvalid("A price cannot be negative.", fields={"price_cents": "A price cannot be negative."})
    return div_half_up(price_cents * 30, days_supply)


@dataclass(frozen=True)
class Band:
    """The expected monthly-equivalent range (inclusive), a setting: docs/domain.md quotes $45–$100."""

    min_cents: int
    max_cents: int

    def __post_init__(self) -> None:
        _require_cents(self.min_cents, "min_cents")
        _require_cents(self.max_cents, "max_cents")
        if not 0 <= self.min_cents <= self.max_cents:
            raise ValueError("A price band needs 0 <= min_cents <= max_cents.")


def band_status(monthly_cents: int, band: Band) -> str:
    """"below", "within" or "above" the band (both ends inclusive).

    # docs/domain.md "Money": a price outside the band is flagged for review, not silently
    accepted — and not refused either, since the band is a rule of thumb.
    """
    _require_cents(monthly_cents, "monthly_cents")
    if monthly_cents < band.min_cents:
        return "below"
    if monthly_cents > band.max_cents:
        return "above"
    return "within"


# ---------------------------------------------------------------------------------------
# Parsing and formatting
# ---------------------------------------------------------------------------------------

# Digits are ASCII only ("\d" would accept Arabic-Indic digits); commas, if any, must group
# thousands properly, so "1,0,45" is refused rather than guessed at.
_MONEY = re.compile(r"(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.(?P<frac>[0-9]+))?")


def parse_money(text: str, *, field: str = "amount") -> int:
    """Cents from what a person types: "$45", "45.5", "45.50", "1,045.00" → 4500, 4550, 4550, 104500.

    Refused (AmountInvalid, keyed on `field`): empty, not a number, negative, more than two
    decimals (a fraction of a cent is a typo, not a price), more than $100,000.
    """
    raw = (text or "").strip()
    if not raw:
        raise AmountInvalid("Enter an amount.", fields={field: "Enter an amount, like 45.00."})
    body = raw
    if body.startswith("-") or body.startswith("$-") or body.startswith("($"):
        raise AmountInvalid("An amount cannot be negative.", fields={field: "An amount cannot be negative."})
    if body.startswith("$"):
        body = body[1:].lstrip()
    match = _MONEY.fullmatch(body)
    if match is None:
        raise AmountInvalid(f"{raw!r} is not an amount.", fields={field: "Enter an amount, like 45.00."})
    frac = match.group("frac") or ""
    if len(frac) > 2:
        raise AmountInvalid(
            "An amount has at most two decimals.", fields={field: "Use at most two decimals (cents), like 45.50."}
        )
    cents = int(match.group("whole").replace(",", "")) * 100 + int(frac.ljust(2, "0"))
    if cents > MAX_AMOUNT_CENTS:
        limit = format_cents(MAX_AMOUNT_CENTS)
        raise AmountInvalid(f"An amount cannot be more than {limit}.", fields={field: f"Enter at most {limit}."})
    return cents


def format_cents(cents: int) -> str:
    """"$45.00", "-$5.25", "$1,045.00": how every page, receipt and email shows money."""
    _require_cents(cents, "cents")
    sign = "-" if cents < 0 else ""
    dollars, rest = divmod(abs(cents), 100)
    return f"{sign}${dollars:,}.{rest:02d}"


# ---------------------------------------------------------------------------------------
# Balances
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    """A patient's (or an order's) money in three totals, all integer cents.

    # docs/domain.md "Money": amounts are exact. Refunds are recorded apart from payments (a
    receipt must show what was paid), so the balance is derived, never stored.
    """

    charged_cents: int
    paid_cents: int
    refunded_cents: int

    def __post_init__(self) -> None:
        for name in ("charged_cents", "paid_cents", "refunded_cents"):
            _require_cents(getattr(self, name), name)
            if getattr(self, name) < 0:
                raise ValueError(f"{name} cannot be negative.")
        if self.refunded_cents > self.paid_cents:
            raise ValueError("More was refunded than paid: the ledger is inconsistent.")

    @property
    def net_paid_cents(self) -> int:
        """Paid minus refunded: what the pharmacy actually keeps."""
        return self.paid_cents - self.refunded_cents

    @property
    def balance_cents(self) -> int:
        """Charged minus net paid: positive means the patient owes, negative means credit."""
        return self.charged_cents - self.net_paid_cents

    @property
    def owed_cents(self) -> int:
        """What the patient still owes (0 when settled or in credit)."""
        return max(0, self.balance_cents)

    @property
    def credit_cents(self) -> int:
        """What the patient overpaid (0 unless paid more than charged)."""
        return max(0, -self.balance_cents)


def check_payment_amount(amount_cents: int) -> None:
    """A payment is more than $0.00 and at most $100,000.00."""
    _require_cents(amount_cents, "amount_cents")
    if amount_cents <= 0:
        raise AmountInvalid("A payment must be more than $0.00.", fields={"amount": "Enter an amount above $0.00."})
    if amount_cents > MAX_AMOUNT_CENTS:
        limit = format_cents(MAX_AMOUNT_CENTS)
        raise AmountInvalid(f"A payment cannot be more than {limit}.", fields={"amount": f"Enter at most {limit}."})


def check_refund(amount_cents: int, ledger: Ledger) -> None:
    """A refund is more than $0.00 and never more than what was paid, net of earlier refunds."""
    _require_cents(amount_cents, "amount_cents")
    if amount_cents <= 0:
        raise AmountInvalid("A refund must be more than $0.00.", fields={"amount": "Enter an amount above $0.00."})
    if amount_cents > ledger.net_paid_cents:
        message = f"A refund cannot be more than what was paid ({format_cents(ledger.net_paid_cents)})."
        raise RefundTooLarge(message, fields={"amount": message})


# ---------------------------------------------------------------------------------------
# Adherence: proportion of days covered
# ---------------------------------------------------------------------------------------

_FOUR_PLACES = Decimal("0.0001")


def covered_days(fills: Sequence[tuple[date, int]], window_start: date, window_end: date) -> tuple[int, int]:
    """(days covered, days in window) — the supply model's spans (overlaps shifted forward, never double-counted)."""
    if window_end < window_start:
        raise ValueError("The PDC window ends before it starts.")
    for _start, days_supply in fills:
        if isinstance(days_supply, bool) or not isinstance(days_supply, int) or days_supply <= 0:
            raise ValueError("Every fill needs a days supply of at least 1.")
    spans = supply_rules.covered_spans([supply_rules.Dispensing(starts_on=d, days=n) for d, n in fills])
    window_days = (window_end - window_start).days + 1
    return supply_rules.days_covered_between(spans, window_start, window_end), window_days


def pdc(fills: Sequence[tuple[date, int]], window_start: date, window_end: date) -> Decimal:
    """Proportion of days covered over [window_start, window_end] (both inclusive), 4 places.

    # docs/domain.md "Adherence": the share of days with supply on hand; overlapping fills shift
    forward, not double-count. Each fill (the day the patient has it, days_supply) covers days_supply days
    from that day — or from the day after the earlier supply ends, when it arrives
    early (an early refill is stock, not extra coverage). Supply from before the window
    carries into it; days outside the window do not count.
    """
    covered, total = covered_days(fills, window_start, window_end)
    return (Decimal(covered) / Decimal(total)).quantize(_FOUR_PLACES, rounding=ROUND_HALF_UP)


def pdc_percent(fills: Sequence[tuple[date, int]], window_start: date, window_end: date) -> int:
    """PDC as a whole percent, rounded half-up from the exact fraction (not from the 4-place value)."""
    covered, total = covered_days(fills, window_start, window_end)
    return div_half_up(covered * 100, total)


def is_adherent(pdc: Decimal, threshold_percent: int = 80) -> bool:
    """PDC ≥ the threshold (80% is the usual line; below it a pharmacist's call is worth it).

    Takes the Decimal fraction from `pdc`, not a percent: a value above 1 is refused so
    passing 85 instead of 0.85 fails loudly instead of marking everyone adherent.
    """
    if not Decimal(0) <= pdc <= Decimal(1):
        raise ValueError("PDC is a fraction between 0 and 1.")
    return pdc * 100 >= threshold_percent


def fill_total_for_receipt(total_cents: int, *, cancelled: bool) -> int:
    """What a receipt gives as the fill's total: a cancelled fill (returned ones too) is never charged, so nothing
    is owed on it — what was paid on it is credit (docs/domain.md "Money")."""
    return 0 if cancelled else total_cents


def refunds_by_payment(payments: Sequence[tuple[int, int]],
                       refunds: Sequence[tuple[int, int]]) -> dict[int, list[tuple[int, int]]]:
    """Which payment each refund gave back, as (refund id, cents) per payment id — ids in the order recorded.

    A refund on a fill (or on the account) is taken off the payments recorded before it, the latest first, never
    more than each payment still holds: so every receipt's "net paid" is its own, and they add up to what the
    pharmacy kept — one refund is never taken off two receipts (a patient filing them for an HSA/FSA claim)."""
    left = dict(payments)
    out: dict[int, list[tuple[int, int]]] = {pid: [] for pid, _ in payments}
    for refund_id, cents in sorted(refunds):
        for pid in sorted((p for p in left if p < refund_id), reverse=True):
            take = min(left[pid], cents)
            if take > 0:
                out[pid].append((refund_id, take))
                left[pid] -= take
                cents -= take
            if cents == 0:
                break
    return out


def receipt_number(payment_id: int, received_on: date) -> str:
    """"R2026-000123": the year makes it readable on a claim form, the id keeps it unique."""
    if isinstance(payment_id, bool) or not isinstance(payment_id, int) or payment_id <= 0:
        raise ValueError("A receipt number needs a saved payment's id.")
    return f"R{received_on.year}-{payment_id:06d}"


# ---------------------------------------------------------------------------------------------
# Months, for the money reports and their running totals (billing/totals.py)
# ---------------------------------------------------------------------------------------------

# The longest period a money report covers; the average-cost totals keep a row per patient for each start this
# far back.
MAX_REPORT_MONTHS = 36


def month_of(day: date) -> date:
    """The month a day belongs to, as its first day."""
    return day.replace(day=1)


def add_months(month: date, count: int) -> date:
    """The first day of the month `count` months after (or before, if negative) `month`'s."""
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def window_starts(fill_month: date) -> list[date]:
    """The report starts whose period holds a fill of `fill_month`: the fill's month and the months before it, as far
    back as the longest report reaches (MAX_REPORT_MONTHS months ending with the fill's)."""
    return [add_months(fill_month, -i) for i in range(MAX_REPORT_MONTHS - 1, -1, -1)]
