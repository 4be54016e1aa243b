"""Exit 0 when the PostgreSQL server named by the URL answers, 1 otherwise (used by `make test`)."""
import sys

import sqlalchemy as sa

try:
    engine = sa.create_engine(sys.argv[1], connect_args={"connect_timeout": 3})
    with engine.connect() as conn:
        conn.execute(sa.text("select 1"))
except Exception:
    sys.exit(1)
sys.exit(0)
