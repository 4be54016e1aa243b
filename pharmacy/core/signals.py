"""Events one feature announces and another may act on, where the listener is optional for the sender.

Reminder planning says "this prescription will need a renewal"; the renewals feature (if present) opens the
pharmacist's task. Receivers are connected in one place, pharmacy/workflows/listeners.py, at app creation.
"""
from __future__ import annotations

from blinker import Namespace

_events = Namespace()

#: sender: None; keyword `wanted`: {prescription id: (prescriber id, patient id)} — prescriptions whose supply
#: will end with nothing left to fill (or that expire first): the prescriber should be asked for a renewal.
renewals_needed = _events.signal("renewals-needed")
