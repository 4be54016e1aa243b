"""a receipt keeps the figures it was issued with

Revision ID: 0019
Revises: 0018

payments.fill_total_cents, fill_owed_cents, balance_cents: the fill's total, what was still owed on it and the
account's balance when the payment or refund was recorded. A receipt printed again later (for an HSA/FSA claim)
showed the balance as it stood at printing — a prepayment's "credit" became "nothing owed" once the fill was ready.
Older payments keep NULL and their receipts work the figures out from the rows, as before. Plain nullable columns:
SQLite adds and drops them in place.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('payments', sa.Column('fill_total_cents', sa.Integer(), nullable=True))
    op.add_column('payments', sa.Column('fill_owed_cents', sa.Integer(), nullable=True))
    op.add_column('payments', sa.Column('balance_cents', sa.Integer(), nullable=True))


def downgrade():
    op.drop_column('payments', 'balance_cents')
    op.drop_column('payments', 'fill_owed_cents')
    op.drop_column('payments', 'fill_total_cents')
