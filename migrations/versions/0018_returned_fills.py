"""a dispensed fill can be returned (lost in the post, damaged, dispensed in error)

Revision ID: 0018
Revises: 0017

orders.returned_at, returned_by_id, return_reason: a fill taken back after dispensing is cancelled, so it stops
counting as the patient's supply, as a refill used and as a charge; these say when, by whom and why. Plain columns
(no foreign key, no CHECK) so SQLite adds and drops them in place, without rebuilding orders.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('orders', sa.Column('returned_at', sa.DateTime(), nullable=True))
    op.add_column('orders', sa.Column('returned_by_id', sa.Integer(), nullable=True))
    op.add_column('orders', sa.Column('return_reason', sa.String(length=32), nullable=True))


def downgrade():
    op.drop_column('orders', 'return_reason')
    op.drop_column('orders', 'returned_by_id')
    op.drop_column('orders', 'returned_at')
