"""Where the project's own files are: the repository root (templates, static files, migrations beside the package)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
