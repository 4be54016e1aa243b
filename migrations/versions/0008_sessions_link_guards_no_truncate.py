"""health data held tight: server-side staff sessions, atomic link attempt counters, no TRUNCATE of the audit trail

Revision ID: 0008
Revises: 0007

- staff_sessions: one row per signed-in browser (the cookie holds a random id, the row its SHA-256); sign-out, a
  password change and a deactivation end the row, and a cookie whose row has ended is refused. Sessions opened
  before this revision carry no id, so everyone signs in once more after the upgrade.
- link_guards: one counter per signed link, raised by one atomic upsert, replaces link_attempts (a row per wrong
  answer, counted and then inserted: concurrent guesses raced past the limit). The counts carry over.
- PostgreSQL: a statement-level BEFORE TRUNCATE trigger on audit_events (the row triggers of 0002 do not fire on
  TRUNCATE). SQLite has no TRUNCATE.
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TRUNCATE_TRIGGER = ("CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
                    "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()")
DROP_TRUNCATE_TRIGGER = "DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events"


def upgrade():
    op.create_table(
        "staff_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("ended_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_staff_sessions_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_staff_sessions_token_hash")),
    )
    op.create_index(op.f("ix_staff_sessions_user_id"), "staff_sessions", ["user_id"], unique=False)

    op.create_table(
        "link_guards",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_link_guards")),
    )
    op.execute("INSERT INTO link_guards (nonce, failed_attempts, last_failed_at) "
               "SELECT nonce, count(*), max(at) FROM link_attempts GROUP BY nonce")
    op.drop_index("ix_link_attempts_nonce", table_name="link_attempts")
    op.drop_table("link_attempts")

    if op.get_bind().dialect.name == "postgresql":
        op.execute(TRUNCATE_TRIGGER)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP_TRUNCATE_TRIGGER)
    op.create_table(
        "link_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link_attempts")),
    )
    op.create_index("ix_link_attempts_nonce", "link_attempts", ["nonce"], unique=False)
    # One row per counted attempt, as before (the exact times of all but the last are not kept).
    op.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) "
        "INSERT INTO link_attempts (nonce, at) SELECT g.nonce, coalesce(g.last_failed_at, CURRENT_TIMESTAMP) "
        "FROM link_guards g JOIN n ON n.i <= g.failed_attempts"
    )
    op.drop_table("link_guards")
    op.drop_index(op.f("ix_staff_sessions_user_id"), table_name="staff_sessions")
    op.drop_table("staff_sessions")
