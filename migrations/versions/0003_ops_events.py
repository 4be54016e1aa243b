"""the operations log (ops_events), backfilled with when the pharmacy's history starts

Revision ID: 0003
Revises: 0002

Schema: a small table where backups and upgrades are recorded (read by `flask doctor`, /metrics
and the README's backup alert). Data: the first data migration — it backfills a
"history.start" event dated at the earliest moment the existing rows show (the first staff
account, audit event or patient), and records this upgrade itself. Plain SQL and Core only, no
app imports, so it runs the same on SQLite (batch mode) and PostgreSQL years from now.
"""
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ops_events = sa.table(
    "ops_events",
    sa.column("at", sa.DateTime()),
    sa.column("kind", sa.String(32)),
    sa.column("outcome", sa.String(16)),
    sa.column("details", sa.JSON()),
)


def upgrade():
    op.create_table(
        "ops_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ops_events")),
    )
    with op.batch_alter_table("ops_events", schema=None) as batch_op:
        batch_op.create_index("ix_ops_events_kind_at", ["kind", "at"], unique=False)

    # Data step 1 (backfill): the earliest instant the existing data shows. Copied in SQL, value for
    # value, so the stored format of the source column is kept exactly on both databases.
    op.execute(
        "INSERT INTO ops_events (at, kind, outcome, details) "
        "SELECT first_at, 'history.start', 'ok', NULL FROM ("
        "  SELECT MIN(t) AS first_at FROM ("
        "    SELECT MIN(created_at) AS t FROM users"
        "    UNION ALL SELECT MIN(at) FROM audit_events"
        "    UNION ALL SELECT MIN(created_at) FROM patients"
        "  ) AS candidates"
        ") AS earliest WHERE first_at IS NOT NULL"
    )
    # Data step 2: this upgrade, in UTC like every instant in the schema.
    op.bulk_insert(ops_events, [{
        "at": datetime.now(UTC).replace(tzinfo=None),
        "kind": "schema.upgrade",
        "outcome": "ok",
        "details": {"revision": revision, "from": down_revision},
    }])


def downgrade():
    with op.batch_alter_table("ops_events", schema=None) as batch_op:
        batch_op.drop_index("ix_ops_events_kind_at")
    op.drop_table("ops_events")
