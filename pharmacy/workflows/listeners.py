"""Where one feature listens to another's announcements (core/signals.py): connected once, at app creation."""
from __future__ import annotations

from typing import Any

from pharmacy.billing import totals
from pharmacy.core import signals
from pharmacy.refills import renewals


def _open_renewal_tasks(_sender: Any, *, wanted: dict[int, tuple[int, int]]) -> int:
    """Reminder planning found prescriptions that will need the prescriber: the pharmacist gets a task for each."""
    return renewals.ensure_renewal_tasks(wanted)


def connect() -> None:
    signals.renewals_needed.connect(_open_renewal_tasks, weak=False)
    # The money reports' running totals follow every order and payment written through the session (billing/totals.py).
    totals.install()
