#!/usr/bin/env bash
# Regenerate migrations/versions/0001_initial.py from the models (only while no release has shipped it).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
mkdir -p "$tmp/aside"
find migrations/versions -name '*.py' ! -name '0001_initial.py' -exec mv {} "$tmp/aside/" \;
rm -f migrations/versions/0001_initial.py
DATABASE_URL="sqlite:///$tmp/empty.db" PHARMACY_ENV=testing FLASK_APP=pharmacy.entry \
  .venv/bin/flask db migrate --rev-id 0001 -m initial >/dev/null
mv migrations/versions/0001_initial.py "$tmp/gen.py"
.venv/bin/python - "$tmp/gen.py" <<'PY'
import re, sys, pathlib
src = pathlib.Path(sys.argv[1]).read_text()
src = re.sub(r"Create Date: .*\n", "", src)
pathlib.Path("migrations/versions/0001_initial.py").write_text(src)
PY
mv "$tmp"/aside/*.py migrations/versions/ 2>/dev/null || true
rm -rf "$tmp"
echo "migrations/versions/0001_initial.py regenerated"
