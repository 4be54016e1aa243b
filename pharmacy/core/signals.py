"""Signals where one feature lets another take part in its use case without importing it (the listener is optional).

Like Indico's signals: the feature that owns the use case sends; a feature that wants to join connects a receiver
when the app is built. The arrow of the import then points from the listener to the owner, never back.
"""
from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent by refills.renewals.ask_prescriber with the RenewalRequest as sender and `prescription=` the Prescription,
#: `actor=` the Actor, just before the renewal request would go to the prescriber by email. A receiver that delivers
#: it another way (e-prescribing: an NCPDP RxRenewalRequest to a prescriber reachable electronically) returns True,
#: and then no email (with the patient's name and date of birth) is written.
renewal_to_send = _signals.signal("renewal-to-send")


def handled(results: list[tuple[object, object]]) -> bool:
    """Whether any receiver of a `send` says it took care of it (returned True)."""
    return any(result is True for _receiver, result in results)
