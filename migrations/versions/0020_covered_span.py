"""a prescription keeps where its latest covered span starts, so days in transit after a gap are not days held

Revision ID: 0020
Revises: 0019

prescriptions.latest_covered_from: the first day of the covered span that ends at latest_run_out_date (NULL when it
carries on from supply held as far back as matters); prescriptions.prior_run_out_date: the last day covered before
that span. A shipped refill after a gap counted its days from the parcel's arrival but the pages counted "days on
hand" back to today, so a patient out of medicine with a parcel on its way showed a full month in hand. Filled here
by walking each prescription's dispensed orders in the order the patient received them (as supply/rules.py does),
prescriptions in id order so a replacement follows what it carried. Plain nullable columns: SQLite adds and drops
them in place.
"""
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

_BATCH = 5000

_rx = sa.table('prescriptions', sa.column('id', sa.Integer), sa.column('replaces_id', sa.Integer),
               sa.column('latest_run_out_date', sa.Date), sa.column('latest_covered_from', sa.Date),
               sa.column('prior_run_out_date', sa.Date))
_orders = sa.table('orders', sa.column('prescription_id', sa.Integer), sa.column('state', sa.String),
                   sa.column('supply_starts_on', sa.Date), sa.column('dispensed_on', sa.Date),
                   sa.column('days_supply', sa.Integer))


def _walk(fills, held):
    """(covered_from, prior_run_out) after `fills` [(starts_on, days)] follow `held` (run_out, covered_from, prior):
    the supply model's rule, written out here so this migration keeps meaning what it meant."""
    run_out, covered_from, prior = held
    if run_out is not None and covered_from is not None:
        # The held span joins the walk as a dispensing: a fill received before it (its parcel still travelling) is
        # taken first.
        fills = [*fills, (covered_from, (run_out - covered_from).days + 1)]
        run_out, covered_from, prior = prior, None, None
    for starts_on, days in sorted(fills):
        first = starts_on if run_out is None else max(starts_on, run_out + timedelta(days=1))
        if run_out is None or first > run_out + timedelta(days=1):
            covered_from, prior = first, run_out
        run_out = first + timedelta(days=days - 1)
    return covered_from, prior


def upgrade():
    op.add_column('prescriptions', sa.Column('latest_covered_from', sa.Date(), nullable=True))
    op.add_column('prescriptions', sa.Column('prior_run_out_date', sa.Date(), nullable=True))
    bind = op.get_bind()
    fills = {}
    starts = sa.func.coalesce(_orders.c.supply_starts_on, _orders.c.dispensed_on)
    for rx_id, starts_on, days in bind.execute(
            sa.select(_orders.c.prescription_id, starts, _orders.c.days_supply)
            .where(_orders.c.state == 'dispensed', starts.is_not(None), _orders.c.days_supply > 0)):
        fills.setdefault(rx_id, []).append((starts_on, days))
    held = {}
    updates = []
    for rx_id, replaces_id, run_out in bind.execute(
            sa.select(_rx.c.id, _rx.c.replaces_id, _rx.c.latest_run_out_date).order_by(_rx.c.id)):
        carried = held.get(replaces_id, (None, None, None)) if replaces_id is not None else (None, None, None)
        covered_from, prior = _walk(fills.pop(rx_id, []), carried)
        held[rx_id] = (run_out, covered_from, prior)
        if covered_from is not None or prior is not None:
            updates.append({'b_id': rx_id, 'b_from': covered_from, 'b_prior': prior})
        if len(updates) >= _BATCH:
            _write(bind, updates)
            updates = []
    if updates:
        _write(bind, updates)


def _write(bind, updates):
    bind.execute(sa.update(_rx).where(_rx.c.id == sa.bindparam('b_id'))
                 .values(latest_covered_from=sa.bindparam('b_from'), prior_run_out_date=sa.bindparam('b_prior')),
                 updates)


def downgrade():
    op.drop_column('prescriptions', 'prior_run_out_date')
    op.drop_column('prescriptions', 'latest_covered_from')
