"""Entry points for `flask` (FLASK_APP=pharmacy.entry) and the `pharmacy` console script.

A configuration error ends the process with one clear line instead of a traceback.
"""
from __future__ import annotations

import sys

from flask import Flask
from flask.cli import FlaskGroup

from pharmacy import create_app as factory
from pharmacy.core.errors import ConfigError


def create_app() -> Flask:

    try:
        return factory()
    except ConfigError as exc:
        sys.stderr.write(f"pharmacy: configuration error: {exc}\n")
        raise SystemExit(2) from None


def main() -> None:
    FlaskGroup(create_app=create_app)()
