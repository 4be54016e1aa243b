"""each prescription's latest dispensed fill (number and run-out date), for the dashboard's "running out" list;
open orders by state and delivery method, for its tiles

Revision ID: 0006
Revises: 0005

Found by the chain-scale benchmark (benchmarks/README.md): finding the patients about to run out searched every
fill of the last five weeks for those no later fill had replaced (a third of a second at 100,000 patients).
Kept on the prescription when a fill is dispensed, the list is a range of ix_prescriptions_status_run_out.
The upgrade fills both columns from the orders already dispensed.
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMN and CREATE INDEX: no table rebuild (on SQLite a batch rebuild of prescriptions would drop a
    # table other tables point at).
    op.add_column("prescriptions", sa.Column("latest_fill_number", sa.Integer(), nullable=True))
    op.add_column("prescriptions", sa.Column("latest_run_out_date", sa.Date(), nullable=True))
    op.create_index("ix_prescriptions_status_run_out", "prescriptions", ["status", "latest_run_out_date", "id"],
                    unique=False)
    # The dashboard's tiles count open orders by state and delivery method: read from this index alone.
    op.create_index("ix_orders_state_delivery", "orders", ["state", "delivery_method"], unique=False)
    op.execute(
        "UPDATE prescriptions SET latest_fill_number = (SELECT max(o.fill_number) FROM orders o "
        "WHERE o.prescription_id = prescriptions.id AND o.state = 'dispensed')"
    )
    op.execute(
        "UPDATE prescriptions SET latest_run_out_date = (SELECT o.run_out_date FROM orders o "
        "WHERE o.prescription_id = prescriptions.id AND o.fill_number = prescriptions.latest_fill_number) "
        "WHERE latest_fill_number IS NOT NULL"
    )


def downgrade():
    op.drop_index("ix_orders_state_delivery", table_name="orders")
    op.drop_index("ix_prescriptions_status_run_out", table_name="prescriptions")
    # ALTER TABLE … DROP COLUMN (SQLite 3.35+), not a batch rebuild, for the same reason as above.
    op.drop_column("prescriptions", "latest_run_out_date")
    op.drop_column("prescriptions", "latest_fill_number")
