"""indexes found by the chain-scale benchmarks, and the adherence snapshot table

Revision ID: 0005
Revises: 0004

Indexes (issue 9, benchmarks/README.md): the outbox by prescription (cancelling a prescription's pending
reminders scanned the whole outbox) and by (state, id) (the outbox page, state by state); refill requests
by decision time (the queue page's "recently decided" list sorted every decided request); two covering
indexes on orders — by state and dispense day (fills by form, average monthly cost) and by patient (the
adherence refresh, outstanding balances) — and covering versions of both payment indexes (revenue by
month, balances), so the money reports read index entries only.
Table: adherence_snapshots, one row per measured patient, written by `flask reports refresh-adherence`
and the scheduler's nightly job. Schema only; the snapshot is empty until the first refresh.
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_prescription", ["prescription_id"], unique=False)
        batch_op.create_index("ix_outbox_state_id", ["state", "id"], unique=False)
    with op.batch_alter_table("refill_requests", schema=None) as batch_op:
        batch_op.create_index("ix_refill_requests_decided", ["decided_at"], unique=False)
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(
            "ix_orders_report_day",
            ["state", "dispensed_on", "prescription_id", "patient_id", "price_cents", "days_supply"], unique=False,
        )
        batch_op.create_index(
            "ix_orders_report_patient",
            ["patient_id", "state", "dispensed_on", "days_supply", "prescription_id", "price_cents", "shipping_cents"],
            unique=False,
        )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        # Both payment indexes become covering (read index-only by the revenue and balance reports).
        batch_op.drop_index("ix_payments_received")
        batch_op.create_index("ix_payments_received", ["received_at", "kind", "amount_cents"], unique=False)
        batch_op.drop_index("ix_payments_patient_received")
        batch_op.create_index("ix_payments_patient_received", ["patient_id", "received_at", "kind", "amount_cents"],
                              unique=False)

    op.create_table(
        "adherence_snapshots",
        sa.Column("patient_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("pdc_milli", sa.Integer(), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("covered_days", sa.Integer(), nullable=False),
        sa.Column("days_in_window", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.Date(), nullable=False),
        sa.Column("window_end", sa.Date(), nullable=False),
        sa.Column("period_days", sa.Integer(), nullable=False),
        sa.Column("last_fill_on", sa.Date(), nullable=False),
        sa.Column("last_days_supply", sa.Integer(), nullable=False),
        sa.Column("last_formula_id", sa.Integer(), nullable=False),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("covered_days >= 0 AND covered_days <= days_in_window",
                           name=op.f("ck_adherence_snapshots_covered_within_window")),
        sa.CheckConstraint("pdc_milli >= 0 AND pdc_milli <= 1000", name=op.f("ck_adherence_snapshots_pdc_milli_range")),
        sa.ForeignKeyConstraint(["last_formula_id"], ["formulas.id"],
                                name=op.f("fk_adherence_snapshots_last_formula_id_formulas")),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_adherence_snapshots_patient_id_patients"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_adherence_snapshots")),
    )
    with op.batch_alter_table("adherence_snapshots", schema=None) as batch_op:
        batch_op.create_index("ix_adherence_snapshots_pdc", ["pdc_milli", "patient_id"], unique=False)


def downgrade():
    with op.batch_alter_table("adherence_snapshots", schema=None) as batch_op:
        batch_op.drop_index("ix_adherence_snapshots_pdc")
    op.drop_table("adherence_snapshots")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_patient_received")
        batch_op.create_index("ix_payments_patient_received", ["patient_id", "received_at"], unique=False)
        batch_op.drop_index("ix_payments_received")
        batch_op.create_index("ix_payments_received", ["received_at"], unique=False)
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_report_patient")
        batch_op.drop_index("ix_orders_report_day")
    with op.batch_alter_table("refill_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_refill_requests_decided")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_state_id")
        batch_op.drop_index("ix_outbox_prescription")
