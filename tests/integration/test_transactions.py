"""A nested write (savepoint) is part of the request's transaction: rolled back with it, on every database."""
from __future__ import annotations

import sqlalchemy as sa

from pharmacy.core.models import LinkUse
from pharmacy.extensions import db
from pharmacy.reminders import outbox
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind
from tests import factories


def test_savepoint_as_first_write_rolls_back_with_the_transaction(app_ctx, staff) -> None:
    w = factories.world(staff)
    db.session.commit()
    # The savepoint is the transaction's first write (the case pysqlite gets wrong by default).
    row = outbox.enqueue(MessageKind.REQUEST_RECEIVED, dedupe_key="t:1", patient_id=w["patient"].id)
    assert row is not None
    db.session.rollback()
    assert db.session.execute(sa.select(sa.func.count()).select_from(OutboxMessage)).scalar_one() == 0


def test_link_use_recorded_in_a_savepoint_is_undone_by_a_rollback(app_ctx, staff) -> None:
    from pharmacy.core import links

    w = factories.world(staff)
    db.session.commit()
    claims = links.LinkClaims(purpose=links.REFILL, patient_id=w["patient"].id, prescription_id=w["rx"].id,
                              nonce="n-1")
    assert links.mark_used(claims) is True
    assert links.mark_used(claims) is False  # the unique nonce decides
    db.session.rollback()
    assert db.session.execute(sa.select(sa.func.count()).select_from(LinkUse)).scalar_one() == 0
