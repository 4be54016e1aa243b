"""The migration scripts on disk: where they are and their heads (read by /readyz, `flask doctor` and the stamp of
a database built by create_all). No Flask here, so the models may use it."""
from __future__ import annotations

import functools

from alembic.script import ScriptDirectory

from pharmacy.paths import ROOT


def migrations_directory() -> str:
    return str(ROOT / "migrations")


@functools.lru_cache(maxsize=4)
def _script_directory(path: str) -> ScriptDirectory:
    # The scripts on disk only change with a deploy, which restarts the process: read them once.
    return ScriptDirectory(path)


def script_directory() -> ScriptDirectory:
    return _script_directory(migrations_directory())
