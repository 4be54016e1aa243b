"""refill requests carry their prescription's run-out date while open, for the refill queue's order (issue 21)

Revision ID: 0016
Revises: 0015

refill_requests.run_out_date: the open request's copy of prescriptions.latest_run_out_date, kept in step by the
supply's one writer (pharmacy/supply/services.py) and set when a request is made or carried over to a replacement.
The queue orders its open requests (patients out of medicine first, then the oldest) by it, along
ix_refill_requests_state_run_out, instead of looking up each request's prescription. Filled here for every request
from its prescription (a decided request's copy is only what the date was; nothing reads it).
ix_refill_requests_decided gains the id: the page's latest decisions (decided_at DESC, id DESC) are read from its
end with no sort, though many are decided in the same second.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('refill_requests', sa.Column('run_out_date', sa.Date(), nullable=True))
    op.execute("UPDATE refill_requests SET run_out_date = (SELECT p.latest_run_out_date FROM prescriptions p "
               "WHERE p.id = refill_requests.prescription_id)")
    op.create_index('ix_refill_requests_state_run_out', 'refill_requests',
                    ['state', 'run_out_date', 'requested_at', 'id'], unique=False)
    op.drop_index('ix_refill_requests_decided', table_name='refill_requests')
    op.create_index('ix_refill_requests_decided', 'refill_requests', ['decided_at', 'id'], unique=False)
    op.execute("ANALYZE refill_requests")


def downgrade():
    # No batch here: on SQLite a batch drop_column rebuilds the table, and with foreign keys on, dropping the old
    # table deletes its rows first — the outbox's messages about those requests with them (ON DELETE CASCADE).
    # SQLite 3.35+ drops a column in place once no index names it.
    op.drop_index('ix_refill_requests_decided', table_name='refill_requests')
    op.create_index('ix_refill_requests_decided', 'refill_requests', ['decided_at'], unique=False)
    op.drop_index('ix_refill_requests_state_run_out', table_name='refill_requests')
    op.drop_column('refill_requests', 'run_out_date')
