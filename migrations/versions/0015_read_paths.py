"""the adherence report's distribution, counted by the refresh; the cost windows' totals per report start; the open
screening alerts' index (issue 21)

Revision ID: 0015
Revises: 0014

adherence_summary: one row written by `refresh_adherence` with the snapshot's last batch; the report reads it while
it matches the snapshot and counts from the snapshot otherwise, so an empty table (as after this upgrade, until the
next nightly refresh) only means the report counts as before.
cost_window_totals: each report start's count of patients with a fill since and the sum of their monthly
equivalents, kept with the cost windows (filled here from them), so the Money page reads one row, not 100,000.
ix_screening_alerts_open: the current, unresolved alerts above a warning (a partial index), for Today's list.
The (state, time) indexes of orders, refill requests and renewals end with the id: the oldest-first lists order by
(time, id), and PostgreSQL could otherwise not read them in order where times tie (it sorted the whole state). The
refill requests' also holds the prescription: the refill queue orders the open requests by their prescription's
run-out date (patients out of medicine first), and joins them from the index without reading each request's row.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


# (table, index, columns before, columns now)
WITH_ID = [
    ('orders', 'ix_orders_state_created', ['state', 'created_at'], ['state', 'created_at', 'id']),
    ('refill_requests', 'ix_refill_requests_state_requested', ['state', 'requested_at'],
     ['state', 'requested_at', 'id', 'prescription_id']),
    ('renewal_requests', 'ix_renewal_requests_state', ['state', 'created_at'], ['state', 'created_at', 'id']),
]


def upgrade():
    for table, name, _before, now in WITH_ID:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(name)
            batch_op.create_index(name, now, unique=False)
    op.create_table('adherence_summary',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('computed_at', sa.DateTime(), nullable=False),
    sa.Column('window_end', sa.Date(), nullable=False),
    sa.Column('period_days', sa.Integer(), nullable=False),
    sa.Column('threshold_percent', sa.Integer(), nullable=False),
    sa.Column('below', sa.Integer(), nullable=False),
    sa.Column('bands', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adherence_summary'))
    )
    op.create_table('cost_window_totals',
    sa.Column('start_month', sa.Date(), nullable=False),
    sa.Column('patients', sa.Integer(), nullable=False),
    sa.Column('monthly_cents', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('start_month', name=op.f('pk_cost_window_totals'))
    )
    backfill_cost_window_totals(op.get_bind())
    with op.batch_alter_table('screening_alerts', schema=None) as batch_op:
        batch_op.create_index('ix_screening_alerts_open', ['created_at'], unique=False,
                              sqlite_where=sa.text('resolved_at IS NULL AND "current" = 1 AND severity != \'warning\''),
                              postgresql_where=sa.text('resolved_at IS NULL AND "current" AND severity != \'warning\''))
    # A dropped index takes its statistics with it, and SQLite without them can pick a plan seconds slower (the
    # refill queue's rows by id, seen at chain scale): count the rebuilt indexes again.
    for name in ("orders", "refill_requests", "renewal_requests", "screening_alerts", "cost_window_totals"):
        op.execute(f"ANALYZE {name}")


def backfill_cost_window_totals(conn):
    """Each start's count and sum, from the cost windows 0014 filled and the app has kept since."""
    conn.execute(sa.text("INSERT INTO cost_window_totals (start_month, patients, monthly_cents) "
                         "SELECT start_month, count(*), sum(monthly_cents) FROM cost_windows WHERE fills > 0 "
                         "GROUP BY start_month"))


def downgrade():
    for table, name, before, _now in WITH_ID:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(name)
            batch_op.create_index(name, before, unique=False)
    with op.batch_alter_table('screening_alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_screening_alerts_open')
    op.drop_table('adherence_summary')
    op.drop_table('cost_window_totals')
