"""Create a fresh PostgreSQL database, run the given command with DATABASE_URL pointing at it, drop it.

Usage: PG_ADMIN_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres with_pg_database.py CMD...
"""
import os
import subprocess
import sys
import uuid

import sqlalchemy as sa

admin_url = sa.make_url(os.environ["PG_ADMIN_URL"])
name = f"ldn_test_{uuid.uuid4().hex[:10]}"
admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
with admin.connect() as conn:
    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
# The test database is thrown away afterwards: commits need not wait for the disk (a test suite commits a great
# deal — every request, every fixture), so the pass runs much faster on a loaded machine. Durability is untouched
# for anything else on the server (it is a per-connection setting).
test_url = admin_url.set(database=name).update_query_dict({"options": "-c synchronous_commit=off"})
env = dict(os.environ, DATABASE_URL=test_url.render_as_string(hide_password=False))
print(f"== PostgreSQL pass on database {name}", flush=True)
try:
    code = subprocess.call(sys.argv[1:], env=env)
finally:
    with admin.connect() as conn:
        # and any left by a test worker that did not get to drop its own (tests/conftest.py, one per xdist worker)
        leftovers = conn.execute(sa.text("SELECT datname FROM pg_database WHERE datname LIKE :prefix"),
                                 {"prefix": f"{name}\\_%"}).scalars().all()
        for db_name in [name, *leftovers]:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
    admin.dispose()
sys.exit(code)
