"""The audit trail: one append-only row per read of a patient record, per write, per refusal.

Events ride in the same transaction as the change they describe, so a rolled-back change
leaves no event — except refusals and failed logins, which must survive the rollback of the
request that was refused (the unit of work re-adds them after rolling back).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import g, has_request_context, request

from pharmacy.core.actor import Actor
from pharmacy.core.context import now
from pharmacy.core.errors import Forbidden
from pharmacy.core.models import AuditEvent
from pharmacy.core.roles import Permission
from pharmacy.extensions import db

_KEEP = "_audit_keep_after_rollback"
_REDO = "_audit_redo_after_rollback"


def _ip() -> str | None:
    return request.remote_addr if has_request_context() else None


def record(
    actor: Actor,
    action: str,
    *,
    patient_id: int | None = None,
    entity: tuple[str, int | None] | None = None,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
    survive_rollback: bool = False,
) -> None:
    values = dict(
        at=now(),
        actor_user_id=actor.user_id,
        actor_kind=actor.kind,
        action=action,
        outcome=outcome,
        entity_type=entity[0] if entity else None,
        entity_id=entity[1] if entity else None,
        patient_id=patient_id if patient_id is not None else actor.patient_id,
        ip_address=_ip(),
        details=details,
    )
    db.session.add(AuditEvent(**values))
    if survive_rollback:
        keep_after_rollback(AuditEvent, values)


def keep_after_rollback(model: type, values: dict[str, Any]) -> None:
    """Rows (refusals, failed logins, wrong birth dates) that must be written even if the request rolls back."""
    if has_request_context():
        g.setdefault(_KEEP, []).append((model, values))


def kept_after_rollback() -> list[tuple[type, dict[str, Any]]]:
    return g.pop(_KEEP, []) if has_request_context() else []


def redo_after_rollback(step: Callable[[], object]) -> None:
    """A write (not a new row) to do again after the request rolls back, e.g. a counter raised in place."""
    if has_request_context():
        g.setdefault(_REDO, []).append(step)


def redone_after_rollback() -> list[Callable[[], object]]:
    return g.pop(_REDO, []) if has_request_context() else []


def require(actor: Actor, permission: Permission, *, patient_id: int | None = None, what: str = "") -> None:
    """Refuse (403) and record the refusal unless the actor's role grants the permission."""
    if actor.can(permission):
        return
    record(
        actor,
        f"denied.{permission.value}",
        patient_id=patient_id,
        outcome="denied",
        details={"what": what} if what else None,
        survive_rollback=True,
    )
    role = actor.role.value if actor.role else actor.kind
    raise Forbidden(f"Your role ({role}) may not {what or permission.value.replace('_', ' ')}.")
