"""the patient portal (sign-in codes, sessions, calendar feeds), text messages (contact preferences, consent,
inbound texts, a channel per outbox row), auto-refill (enrolments and cycles), patient-reported side effects

Revision ID: 0010
Revises: 0008

Two CHECK constraints gain values: the outbox's message kinds (one_time_code, auto_refill_requested) and the refill
requests' sources (portal, sms, auto). On PostgreSQL the constraint is replaced. On SQLite a constraint cannot be
altered and rebuilding either table would cascade-delete the rows that point at it (delivery attempts, outbox
rows), so the table's stored definition is edited in place: SQLite's documented procedure for changes that do not
touch the stored rows (PRAGMA writable_schema, then a new schema_version), and widening a CHECK is such a change.
"""
import re

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None

MESSAGE_KINDS = ["reminder_early", "reminder_order_by", "reminder_overdue", "renewal_needed", "request_received",
                 "request_approved", "request_declined", "renewal_in_progress", "order_ready", "order_shipped",
                 "prescriber_renewal"]
NEW_KINDS = ["one_time_code", "auto_refill_requested"]
SOURCES = ["link", "api", "staff"]
NEW_SOURCES = ["portal", "sms", "auto"]


def _allow(table, name, column, values):
    """Make CHECK constraint `name` on `table` read `column IN (values)`."""
    listed = ", ".join(f"'{v}'" for v in values)
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.drop_constraint(op.f(name), table, type_="check")
        op.create_check_constraint(op.f(name), table, f"{column} IN ({listed})")
        return
    sql = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).scalar()
    pattern = re.compile(rf"CONSTRAINT {name} CHECK \({column} IN \([^)]*\)\)")
    if not pattern.search(sql):
        raise RuntimeError(f"{table}: CHECK constraint {name} not found as expected")
    new_sql = pattern.sub(f"CONSTRAINT {name} CHECK ({column} IN ({listed}))", sql)
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.exec_driver_sql("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", (new_sql, table))
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    check = bind.exec_driver_sql("PRAGMA quick_check").scalar()
    if check != "ok":
        raise RuntimeError(f"SQLite quick_check after widening {name}: {check}")


def upgrade():
    op.create_table('calendar_feeds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('show_drug_name', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.Column('last_fetched_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_calendar_feeds_patient_id_patients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_calendar_feeds')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_calendar_feeds_token_hash'))
    )
    with op.batch_alter_table('calendar_feeds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_calendar_feeds_patient_id'), ['patient_id'], unique=False)

    op.create_table('contact_preferences',
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('paused_until', sa.Date(), nullable=True),
    sa.Column('sms_number', sa.String(length=16), nullable=True),
    sa.Column('sms_verified_at', sa.DateTime(), nullable=True),
    sa.Column('sms_consent', sa.Boolean(), nullable=False),
    sa.Column('sms_consent_at', sa.DateTime(), nullable=True),
    sa.Column('sms_consent_source', sa.String(length=24), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_contact_preferences_patient_id_patients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('patient_id', name=op.f('pk_contact_preferences'))
    )
    with op.batch_alter_table('contact_preferences', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contact_preferences_sms_number'), ['sms_number'], unique=False)

    op.create_table('portal_challenges',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('contact_hash', sa.String(length=64), nullable=False),
    sa.Column('candidates', sa.JSON(), nullable=False),
    sa.Column('phone', sa.String(length=16), nullable=True),
    sa.Column('salt', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.Column('patient_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_portal_challenges_patient_id_patients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_portal_challenges')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_portal_challenges_token_hash'))
    )
    with op.batch_alter_table('portal_challenges', schema=None) as batch_op:
        batch_op.create_index('ix_portal_challenges_contact_created', ['contact_hash', 'created_at'], unique=False)

    op.create_table('portal_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(), nullable=False),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.Column('end_reason', sa.String(length=24), nullable=True),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_portal_sessions_patient_id_patients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_portal_sessions')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_portal_sessions_token_hash'))
    )
    with op.batch_alter_table('portal_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_portal_sessions_patient_id'), ['patient_id'], unique=False)

    op.create_table('sms_consent_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=True),
    sa.Column('phone', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=24), nullable=False),
    sa.Column('detail', sa.String(length=120), nullable=True),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_sms_consent_events_patient_id_patients'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sms_consent_events'))
    )
    with op.batch_alter_table('sms_consent_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sms_consent_events_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sms_consent_events_phone'), ['phone'], unique=False)

    op.create_table('sms_inbound',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('provider_id', sa.String(length=64), nullable=False),
    sa.Column('phone', sa.String(length=16), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=True),
    sa.Column('keyword', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.String(length=40), nullable=False),
    sa.Column('reply', sa.String(length=320), nullable=True),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_sms_inbound_patient_id_patients'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sms_inbound')),
    sa.UniqueConstraint('provider_id', name=op.f('uq_sms_inbound_provider_id'))
    )
    with op.batch_alter_table('sms_inbound', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sms_inbound_patient_id'), ['patient_id'], unique=False)

    op.create_table('autorefill_enrolments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prescription_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('enrolled_at', sa.DateTime(), nullable=False),
    sa.Column('enrolled_by_id', sa.Integer(), nullable=True),
    sa.Column('consent', sa.String(length=200), nullable=False),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.Column('end_reason', sa.String(length=120), nullable=True),
    sa.ForeignKeyConstraint(['enrolled_by_id'], ['users.id'], name=op.f('fk_autorefill_enrolments_enrolled_by_id_users')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_autorefill_enrolments_patient_id_patients'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['prescription_id'], ['prescriptions.id'], name=op.f('fk_autorefill_enrolments_prescription_id_prescriptions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_autorefill_enrolments'))
    )
    with op.batch_alter_table('autorefill_enrolments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_autorefill_enrolments_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_autorefill_enrolments_prescription_id'), ['prescription_id'], unique=False)
        batch_op.create_index('uq_autorefill_enrolments_live', ['prescription_id'], unique=True, sqlite_where=sa.text('ended_at IS NULL'), postgresql_where=sa.text('ended_at IS NULL'))

    op.create_table('autorefill_cycles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('enrolment_id', sa.Integer(), nullable=False),
    sa.Column('fill_order_id', sa.Integer(), nullable=False),
    sa.Column('order_by', sa.Date(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('refill_request_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('skipped_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['enrolment_id'], ['autorefill_enrolments.id'], name=op.f('fk_autorefill_cycles_enrolment_id_autorefill_enrolments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['fill_order_id'], ['orders.id'], name=op.f('fk_autorefill_cycles_fill_order_id_orders'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['refill_request_id'], ['refill_requests.id'], name=op.f('fk_autorefill_cycles_refill_request_id_refill_requests'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_autorefill_cycles')),
    sa.UniqueConstraint('enrolment_id', 'fill_order_id', name=op.f('uq_autorefill_cycles_enrolment_id_fill_order_id'))
    )
    with op.batch_alter_table('autorefill_cycles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_autorefill_cycles_fill_order_id'), ['fill_order_id'], unique=False)

    # Plain ADD COLUMN and CREATE INDEX, never a batch rebuild: on SQLite rebuilding outbox would cascade-delete its
    # delivery attempts (see 0006).
    op.add_column("outbox", sa.Column("channel", sa.String(length=8), server_default="email", nullable=False))
    op.add_column("outbox", sa.Column("provider_id", sa.String(length=64), nullable=True))
    op.add_column("outbox", sa.Column("provider_status", sa.String(length=24), nullable=True))
    op.create_index("ix_outbox_due_at", "outbox", ["due_at"], unique=False)
    op.create_index("ix_outbox_provider_id", "outbox", ["provider_id"], unique=False)
    op.create_index("ix_patients_email", "patients", ["email"], unique=False)
    op.add_column("side_effects", sa.Column("source", sa.String(length=16), server_default="staff", nullable=False))
    op.add_column("side_effects", sa.Column("reviewed_at", sa.DateTime(), nullable=True))
    op.add_column("side_effects", sa.Column("reviewed_by_id", sa.Integer(), nullable=True))
    op.create_index("ix_side_effects_source_reviewed", "side_effects", ["source", "reviewed_at"], unique=False)
    _allow("outbox", "ck_outbox_messagekind", "kind", MESSAGE_KINDS + NEW_KINDS)
    _allow("refill_requests", "ck_refill_requests_requestsource", "source", SOURCES + NEW_SOURCES)


def downgrade():
    # Rows only this revision allows go first: texts, codes and automatic refills' notices; new request sources
    # read as "link" (a patient asking for themselves).
    op.execute("DELETE FROM outbox WHERE channel = 'sms' OR kind IN ('one_time_code', 'auto_refill_requested')")
    op.execute("UPDATE refill_requests SET source = 'link' WHERE source IN ('portal', 'sms', 'auto')")
    _allow("refill_requests", "ck_refill_requests_requestsource", "source", SOURCES)
    _allow("outbox", "ck_outbox_messagekind", "kind", MESSAGE_KINDS)
    op.drop_index("ix_side_effects_source_reviewed", table_name="side_effects")
    op.drop_column("side_effects", "reviewed_by_id")
    op.drop_column("side_effects", "reviewed_at")
    op.drop_column("side_effects", "source")
    op.drop_index("ix_patients_email", table_name="patients")
    op.drop_index("ix_outbox_provider_id", table_name="outbox")
    op.drop_index("ix_outbox_due_at", table_name="outbox")
    op.drop_column("outbox", "provider_status")
    op.drop_column("outbox", "provider_id")
    op.drop_column("outbox", "channel")

    with op.batch_alter_table('autorefill_cycles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_autorefill_cycles_fill_order_id'))

    op.drop_table('autorefill_cycles')
    with op.batch_alter_table('autorefill_enrolments', schema=None) as batch_op:
        batch_op.drop_index('uq_autorefill_enrolments_live', sqlite_where=sa.text('ended_at IS NULL'), postgresql_where=sa.text('ended_at IS NULL'))
        batch_op.drop_index(batch_op.f('ix_autorefill_enrolments_prescription_id'))
        batch_op.drop_index(batch_op.f('ix_autorefill_enrolments_patient_id'))

    op.drop_table('autorefill_enrolments')
    with op.batch_alter_table('sms_inbound', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sms_inbound_patient_id'))

    op.drop_table('sms_inbound')
    with op.batch_alter_table('sms_consent_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sms_consent_events_phone'))
        batch_op.drop_index(batch_op.f('ix_sms_consent_events_patient_id'))

    op.drop_table('sms_consent_events')
    with op.batch_alter_table('portal_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_portal_sessions_patient_id'))

    op.drop_table('portal_sessions')
    with op.batch_alter_table('portal_challenges', schema=None) as batch_op:
        batch_op.drop_index('ix_portal_challenges_contact_created')

    op.drop_table('portal_challenges')
    with op.batch_alter_table('contact_preferences', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contact_preferences_sms_number'))

    op.drop_table('contact_preferences')
    with op.batch_alter_table('calendar_feeds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_calendar_feeds_patient_id'))

    op.drop_table('calendar_feeds')
