#!/usr/bin/env bash
# Every benchmark on SQLite and PostgreSQL, at 100,000 patients (≈1M fills). Generates the databases on first
# use (instance/bench/, or databases ldn_bench_* on PG_ADMIN_URL's server) and reuses them afterwards.
#   benchmarks/run_all.sh                 # both databases
#   benchmarks/run_all.sh sqlite          # one
#   PATIENTS=10000 benchmarks/run_all.sh  # a smaller run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PATIENTS="${PATIENTS:-100000}"
DBS=("${@:-sqlite postgres}")
for db in ${DBS[@]}; do
  if [ "$db" = postgres ] && ! $PY scripts/pg_available.py "${PG_ADMIN_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}"; then
    echo "PostgreSQL is not reachable: skipping the PostgreSQL runs"; continue
  fi
  echo "=== $db: generator ==="
  $PY benchmarks/common.py --db "$db" --patients "$PATIENTS"
  echo "=== $db: statements per request ==="
  $PY benchmarks/bench_queries.py --db "$db" --patients "$PATIENTS"
  echo "=== $db: reminders ==="
  $PY benchmarks/bench_reminders.py --db "$db" --patients "$PATIENTS"
  echo "=== $db: SMTP delivery ==="
  $PY benchmarks/bench_smtp.py --db "$db" --patients "$PATIENTS"
  echo "=== $db: money reports, one request ==="
  $PY benchmarks/bench_reports.py --db "$db" --patients "$PATIENTS"
  echo "=== $db: production plan ==="
  $PY benchmarks/bench_production.py --db "$db" --patients "$PATIENTS"
  echo "=== $db: pages under gunicorn ==="
  $PY benchmarks/bench_pages.py --db "$db" --patients "$PATIENTS"
done
echo "=== worker recycling (hello; SQLite, 100 patients) ==="
$PY benchmarks/bench_recycling.py
