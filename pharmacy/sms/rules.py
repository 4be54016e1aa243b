"""Text-message rules (pure): phone numbers, keywords, quiet hours, what a text may say, provider errors.

A text shows on a lock screen and is read by whoever holds the phone, so it never names the drug, the dose or
the illness: it says that something about "your refill" or "your order" needs a look, and where to look.
"""
from __future__ import annotations

import itertools
import re
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from pharmacy.core.errors import ValidationFailed


class Choice(StrEnum):
    """How a patient wants reminders and notices: the portal's question."""

    EMAIL = "email"
    SMS = "sms"
    BOTH = "both"


class Keyword(StrEnum):
    STOP = "STOP"
    START = "START"
    HELP = "HELP"
    REFILL = "REFILL"
    OTHER = "OTHER"


# The carriers' standard opt-out and opt-in words (CTIA; Twilio's Advanced Opt-Out honours the same list).
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
START_WORDS = frozenset({"START", "UNSTOP", "YES", "OPTIN"})
HELP_WORDS = frozenset({"HELP", "INFO"})
REFILL_WORDS = frozenset({"REFILL", "REFILLS", "RENEW", "ORDER"})
# A reply that uses one of these anywhere takes consent back (the FCC's 2024 TCPA revocation rule: "stop", "quit",
# "revoke", "opt out", "unsubscribe" in a reply revoke it), not only as its first word: "Please stop texting me",
# "Opt out". CANCEL and END count as the first word only — anywhere else they are about a refill or a date ("cancel
# my refill", "away until the end of the month"), and the pharmacy would lose a patient's texts over a sentence.
STOP_ANYWHERE = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "OPTOUT", "REVOKE", "QUIT"})

_DIGITS = re.compile(r"\D")


def normalise_phone(raw: str | None, *, default_country: str = "1") -> str | None:
    """A US/Canadian (NANP) number in E.164 ("+12175550101"), or another country's if it starts with "+"; None
    when it cannot be a mobile number. "(217) 555-0101", "217.555.0101", "1-217-555-0101" all give the same."""
    if raw is None:
        return None
    text = raw.strip()
    if not text:
        return None
    digits = _DIGITS.sub("", text)
    if text.startswith("+"):
        return f"+{digits}" if 8 <= len(digits) <= 15 else None
    if len(digits) == 11 and digits.startswith(default_country):
        digits = digits[1:]
    if len(digits) != 10 or digits[0] in "01" or digits[3] in "01":
        return None
    return f"+{default_country}{digits}"


def require_phone(raw: str | None, *, field: str = "phone") -> str:
    number = normalise_phone(raw)
    if number is None:
        raise ValidationFailed("Enter a mobile number, for example (217) 555-0101.",
                               fields={field: "Enter a 10-digit mobile number, for example (217) 555-0101."})
    return number


def masked(number: str | None) -> str:
    """"•••-•••-0101": enough for a patient to recognise their number on a page or in a log."""
    if not number:
        return ""
    return f"•••-•••-{number[-4:]}"


def keyword(body: str | None) -> Keyword:
    """What an incoming text asks for: its first word, any case, punctuation ignored ("Stop.", "refill please") —
    except that a request to stop counts wherever it is in the reply ("Please stop texting me", "Opt out")."""
    words = [w.upper() for w in re.findall(r"[A-Za-z]+", body or "")]
    if not words:
        return Keyword.OTHER
    first = words[0]
    opt_out = any(a == "OPT" and b == "OUT" for a, b in itertools.pairwise(words))
    if first in STOP_WORDS or opt_out or STOP_ANYWHERE.intersection(words):
        return Keyword.STOP
    if first in START_WORDS:
        return Keyword.START
    if first in HELP_WORDS:
        return Keyword.HELP
    if first in REFILL_WORDS:
        return Keyword.REFILL
    return Keyword.OTHER


# ---- quiet hours ------------------------------------------------------------------------------------------------


def in_send_hours(at: datetime, *, tz: ZoneInfo, start_hour: int, end_hour: int) -> bool:
    """True from start_hour:00 up to (not including) end_hour:00, pharmacy time."""
    local = at.astimezone(tz)
    return start_hour <= local.hour < end_hour


def next_send_time(at: datetime, *, tz: ZoneInfo, start_hour: int, end_hour: int) -> datetime:
    """`at` itself inside the sending hours; otherwise the next start_hour:00 (pharmacy time), in UTC.

    "Never at night": a notice written at 22:40 (a pharmacist approving late) goes out at 9:00 the next morning.
    Built from the local wall clock, so the hour is right across daylight-saving changes.
    """
    if in_send_hours(at, tz=tz, start_hour=start_hour, end_hour=end_hour):
        return at.astimezone(UTC)
    local = at.astimezone(tz)
    day: date = local.date() if local.hour < start_hour else local.date() + timedelta(days=1)
    return datetime.combine(day, time(start_hour), tzinfo=tz).astimezone(UTC)


# ---- what a text says --------------------------------------------------------------------------------------------

#: Kinds a patient may get as a text as well as by email (the prescriber's renewal request never is).
TEXT_KINDS = frozenset({
    "reminder_early", "reminder_order_by", "reminder_overdue", "renewal_needed", "request_received",
    "request_approved", "request_declined", "renewal_in_progress", "order_ready", "order_shipped",
    "auto_refill_requested",
})
#: Texts about the patient's own request or a code they asked for: not held back by a pause.
SIGN_OFF = "Reply STOP to stop texts, HELP for help."
MAX_LENGTH = 306  # two concatenated SMS segments: 153 GSM-7 characters each (the header takes the rest of 160)


def text_for(kind: str, *, pharmacy: str, phone: str, portal_url: str, order_by: str | None = None,
             code: str | None = None, minutes: int | None = None, skip_url: str | None = None,
             ready_on: str | None = None) -> str:
    """The words of one text. Only dates, the pharmacy's name and links: never a drug, a dose or a condition."""
    name = " ".join(pharmacy.split())
    if kind == "one_time_code":
        return (f"{name}: your code is {code}. It works once, for {minutes} minutes. "
                "We will never call to ask for it.")
    lines = {
        "reminder_early": f"time to order your next refill, by {order_by}." if order_by else
        "time to order your next refill.",
        "reminder_order_by": "today is the last day to order your refill so it is ready in time.",
        "reminder_overdue": "your refill has not been ordered yet. Order now so you do not run out.",
        "renewal_needed": "your prescription needs renewing soon. We can ask your prescriber for you.",
        "request_received": "we got your refill request" + (f"; expected ready {ready_on}." if ready_on else "."),
        "request_approved": "your refill request was approved and we are making it now.",
        "request_declined": "we could not fill your refill request. Please call us or see your account.",
        "renewal_in_progress": "we have asked your prescriber for a renewal and will let you know.",
        "order_ready": "your order is ready.",
        "order_shipped": "your order has shipped.",
        "auto_refill_requested": "we started your automatic refill." + (f" Not needed? Skip it: {skip_url}"
                                                                         if skip_url else ""),
    }
    body = lines.get(kind)
    if body is None:
        raise ValueError(f"no text for {kind!r}")
    action = ""
    if kind in ("reminder_early", "reminder_order_by", "reminder_overdue"):
        action = f" Reply REFILL to order, or visit {portal_url}"
    elif kind not in ("auto_refill_requested",):
        action = f" Details: {portal_url}"
    return _fit(name, body + action, phone)


SHORT_SIGN_OFF = "Reply STOP to stop texts."
NAME_LENGTH = 40


def _fit(name: str, message: str, phone: str) -> str:
    """The text in two segments when it can be: what gives way first is the pharmacy's name (shortened), then
    "Questions: phone", then HELP from the sign-off. A link and the STOP words are never cut — a cut link does not
    open, and every text must say how to stop them — so a text that still does not fit goes out longer (a third
    segment) rather than broken."""
    # Three dots, not "…": one character outside GSM-7 makes every segment of the text 70 characters, not 160.
    short_name = name if len(name) <= NAME_LENGTH else name[:NAME_LENGTH - 3].rstrip() + "..."
    tries = [(name, f" Questions: {phone}.", SIGN_OFF), (short_name, f" Questions: {phone}.", SIGN_OFF),
             (short_name, "", SIGN_OFF), (short_name, "", SHORT_SIGN_OFF)]
    for who, questions, sign_off in tries:
        text = " ".join(f"{who}: {message}{questions} {sign_off}".split())
        if len(text) <= MAX_LENGTH:
            return text
    return text


def help_reply(*, pharmacy: str, phone: str, portal_url: str) -> str:
    return (f"{' '.join(pharmacy.split())}: refill reminders and order updates. Reply REFILL to order your refill, "
            f"STOP to stop texts. Call {phone} or visit {portal_url}. Msg & data rates may apply.")


# ---- provider errors ---------------------------------------------------------------------------------------------

#: Twilio error codes that mean "this number will not take texts from us": retrying cannot help.
#: 21211 invalid To, 21408 region not enabled, 21610 the recipient replied STOP, 21612 unreachable route,
#: 21614 not a mobile number, 30003 unreachable handset, 30005 unknown number, 30006 landline, 30007 carrier filter.
PERMANENT_CODES = frozenset({21211, 21408, 21610, 21612, 21614, 30003, 30005, 30006, 30007})
OPTED_OUT_CODE = 21610


class Failure(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


def classify(status: int | None, code: int | None) -> Failure:
    """Retry or give up, from the HTTP status and Twilio's error code.

    No status (a connection that failed), 429 (rate limited) and 5xx are transient; a known number problem is
    permanent; other 4xx replies (a bad request we built) are permanent too — the same request would be refused
    again — except 401/403, which are our credentials, retried (and stopping the batch) until they are fixed.
    """
    if code is not None and code in PERMANENT_CODES:
        return Failure.PERMANENT
    if status is None or status == 429 or status >= 500 or status in (401, 403):
        return Failure.TRANSIENT
    if 400 <= status < 500:
        return Failure.PERMANENT
    return Failure.TRANSIENT


#: Status callback values in the order a message moves; a late "sent" never overwrites "delivered".
STATUS_RANK = {"accepted": 0, "scheduled": 0, "queued": 1, "sending": 2, "sent": 3, "delivered": 4,
               "undelivered": 5, "failed": 5, "canceled": 5, "read": 4}


def later_status(current: str | None, incoming: str) -> bool:
    """Should `incoming` replace `current`? Callbacks can arrive out of order."""
    return STATUS_RANK.get(incoming, -1) >= STATUS_RANK.get(current or "", -1)
