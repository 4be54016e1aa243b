"""Migrations build the schema from empty, go down and up again, and agree with the models (no drift)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from pharmacy import create_app


def _diff(app) -> list:
    from pharmacy.extensions import db

    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, db.metadata)


def test_upgrade_downgrade_upgrade_without_drift(empty_db: str, app_config: dict) -> None:
    app = create_app({**app_config, "DATABASE_URL": empty_db})
    from pharmacy.extensions import db

    with app.app_context():
        upgrade()
        assert _diff(app) == []
        downgrade(revision="base")
        tables = sa.inspect(db.engine).get_table_names()
        assert set(tables) <= {"alembic_version"}
        upgrade()
        assert _diff(app) == []
        # The append-only guard exists after migrating, as it does after create_all.
        with db.engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO audit_events (at, actor_kind, action, outcome) "
                "VALUES (CURRENT_TIMESTAMP, 'system', 't', 'ok')"
            ))
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE audit_events SET action = 'x'"))
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM audit_events"))
        if db.engine.dialect.name == "postgresql":  # 0008: TRUNCATE fires no row trigger, so it has its own
            with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE audit_events"))
            with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE users, audit_events CASCADE"))
        with db.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM audit_events")).scalar_one() == 1
        db.engine.dispose()
