"""Reminder rules (pure): which notices a fill gets, and when each goes out."""
from __future__ import annotations

from enum import StrEnum


class MessageKind(StrEnum):
    REMINDER_EARLY = "reminder_early"
    REMINDER_ORDER_BY = "reminder_order_by"
    REMINDER_OVERDUE = "reminder_overdue"
    RENEWAL_NEEDED = "renewal_needed"
    REQUEST_RECEIVED = "request_received"
    REQUEST_APPROVED = "request_approved"
    REQUEST_DECLINED = "request_declined"
    RENEWAL_IN_PROGRESS = "renewal_in_progress"
    ORDER_READY = "order_ready"
    ORDER_SHIPPED = "order_shipped"
    PRESCRIBER_RENEWAL = "prescriber_renewal"


class OutboxState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"
