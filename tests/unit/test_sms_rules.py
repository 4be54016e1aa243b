"""The words of a text: never a drug or a condition, two segments when they fit, and never a cut link or a text
without the words that stop them (sms/rules.text_for)."""
from __future__ import annotations

import pytest

from pharmacy.sms import rules

LONG_NAME = "Riverside Compounding Pharmacy and Integrative Wellness Center of Greater Springfield"
LONG_URL = "https://portal.riverside-compounding-pharmacy-and-wellness.example/my/refills"
SKIP = ("https://portal.riverside-compounding-pharmacy.example/a/skip/"  # a signed token: long
        "eyJwIjoxMjM0NSwibiI6Ijc4OSIsImsiOiJhdXRvIn0.Zx8f-3kQm1Yb7c2LwHqv9sTn4R0uPzAe")


@pytest.mark.parametrize("kind", ["reminder_early", "reminder_order_by", "reminder_overdue", "renewal_needed",
                                  "request_received", "request_approved", "request_declined", "order_ready",
                                  "order_shipped", "auto_refill_requested"])
def test_a_long_name_and_long_links_never_cut_the_link_or_the_stop_words(kind: str) -> None:
    text = rules.text_for(kind, pharmacy=LONG_NAME, phone="(217) 555-0100", portal_url=LONG_URL,
                          order_by="Dec 16", skip_url=SKIP, ready_on="Dec 18")
    # Every text ends saying how to stop them, whole (it was once cut to "Reply STOP to").
    assert text.endswith(("Reply STOP to stop texts, HELP for help.", "Reply STOP to stop texts.")), text
    if kind == "auto_refill_requested":
        assert SKIP in text
    else:
        assert LONG_URL in text
    assert len(text) <= rules.MAX_LENGTH or text.endswith("Reply STOP to stop texts.")


def test_a_short_text_keeps_everything() -> None:
    text = rules.text_for("reminder_early", pharmacy="Riverside Pharmacy", phone="(217) 555-0100",
                          portal_url="https://rx.example/my", order_by="Dec 16")
    assert text == ("Riverside Pharmacy: time to order your next refill, by Dec 16. Reply REFILL to order, or visit "
                    "https://rx.example/my Questions: (217) 555-0100. Reply STOP to stop texts, HELP for help.")


@pytest.mark.parametrize(("body", "expected"), [
    ("STOP", rules.Keyword.STOP), ("stop.", rules.Keyword.STOP), ("Opt out", rules.Keyword.STOP),
    ("opt-out please", rules.Keyword.STOP), ("Please stop texting me", rules.Keyword.STOP),
    ("I want to unsubscribe", rules.Keyword.STOP), ("Cancel", rules.Keyword.STOP), ("end", rules.Keyword.STOP),
    ("refill please", rules.Keyword.REFILL), ("Refill, but stop the texts", rules.Keyword.STOP),
    ("please cancel my refill", rules.Keyword.OTHER), ("away until the end of the month", rules.Keyword.OTHER),
    ("optimal outcome", rules.Keyword.OTHER), ("START", rules.Keyword.START), ("help", rules.Keyword.HELP),
    ("", rules.Keyword.OTHER),
])
def test_a_request_to_stop_counts_wherever_it_is_in_the_reply(body: str, expected: rules.Keyword) -> None:
    """STOP, QUIT, REVOKE, UNSUBSCRIBE and "opt out" anywhere revoke consent (the FCC's 2024 TCPA rule); CANCEL and
    END only as the first word (elsewhere they are about a refill or a date)."""
    assert rules.keyword(body) == expected
