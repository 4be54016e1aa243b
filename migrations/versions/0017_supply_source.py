"""a replacement not yet dispensed names the prescription whose supply it holds (reminders through a chain)

Revision ID: 0017
Revises: 0016

prescriptions.supply_source_id: for a replacement (renewal, dose change) not yet dispensed, the last prescription
of its chain that was dispensed. The reminder planner joined the replaced prescription's latest order, so when a
replacement was itself replaced before its first fill (C replaces B replaces A, B never filled), C joined nothing
and its patient got no refill reminders. Filled here along every chain of replacements not yet dispensed.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('prescriptions', sa.Column('supply_source_id', sa.Integer(), nullable=True))
    # One link at a time along each chain: the replaced prescription when it was dispensed, else its own source.
    op.execute("UPDATE prescriptions SET supply_source_id = replaces_id "
               "WHERE latest_fill_number IS NULL AND replaces_id IS NOT NULL")
    conn = op.get_bind()
    for _ in range(50):  # a chain longer than this is not a pharmacy's history
        moved = conn.execute(sa.text(
            "UPDATE prescriptions SET supply_source_id = (SELECT s.supply_source_id FROM prescriptions s "
            "WHERE s.id = prescriptions.supply_source_id) "
            "WHERE latest_fill_number IS NULL AND supply_source_id IN (SELECT s.id FROM prescriptions s "
            "WHERE s.latest_fill_number IS NULL AND s.supply_source_id IS NOT NULL)")).rowcount
        if not moved:
            break


def downgrade():
    # In place, no batch: a batch rebuild of prescriptions would cascade-delete what hangs off it on SQLite (0016).
    op.drop_column('prescriptions', 'supply_source_id')
