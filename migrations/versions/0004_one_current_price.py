"""one current price per formula and quantity (partial unique index)

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    # Data step first: if two current entries exist for the same formula and quantity, keep the newest.
    op.execute(
        "UPDATE price_list SET retired_at = effective_at WHERE retired_at IS NULL AND id NOT IN ("
        " SELECT MAX(id) FROM price_list WHERE retired_at IS NULL GROUP BY formula_id, quantity_milli)"
    )
    with op.batch_alter_table("price_list", schema=None) as batch_op:
        batch_op.create_index(
            "uq_price_list_current", ["formula_id", "quantity_milli"], unique=True,
            sqlite_where=sa.text("retired_at IS NULL"), postgresql_where=sa.text("retired_at IS NULL"),
        )


def downgrade():
    with op.batch_alter_table("price_list", schema=None) as batch_op:
        batch_op.drop_index("uq_price_list_current")
