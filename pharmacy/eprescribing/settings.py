"""E-prescribing, FHIR and document settings: from the environment, checked when the feature is registered (a bad
value stops start-up with one line, like every other setting)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app

from pharmacy.core.errors import ConfigError
from pharmacy.core.numbers import digits_only

KEY = "pharmacy.eprescribing"


@dataclass(frozen=True)
class ErxSettings:
    intermediary_url: str | None  # where outbound SCRIPT messages are posted; unset: they wait in the outbox
    intermediary_token: str | None  # bearer token for those posts (a secret: environment only)
    pharmacy_ncpdp_id: str  # the pharmacy's NCPDP ID (seven digits): From on what it sends, To on what it receives
    max_attempts: int
    timeout_seconds: float
    document_max_bytes: int
    document_inbox: Path | None  # the watched folder a fax server writes to; unset: no folder import
    fhir_page_size: int


def _int(env: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{key}={value} is outside {lo}..{hi}")
    return value


def load(env: Mapping[str, Any], *, production: bool) -> ErxSettings:
    url = (env.get("NCPDP_INTERMEDIARY_URL") or "").strip() or None
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("NCPDP_INTERMEDIARY_URL must be an http(s):// URL")
        if production and parts.scheme != "https":
            raise ConfigError("NCPDP_INTERMEDIARY_URL must use https in production (messages carry patient data)")
    ncpdp_id = (env.get("NCPDP_PHARMACY_ID") or "1234567").strip()
    if not (digits_only(ncpdp_id) and len(ncpdp_id) == 7):
        raise ConfigError(f"NCPDP_PHARMACY_ID={ncpdp_id!r} must be the pharmacy's seven-digit NCPDP ID")
    inbox_raw = (env.get("DOCUMENT_INBOX_DIR") or "").strip()
    inbox = Path(inbox_raw) if inbox_raw else None
    if inbox is not None and inbox.exists() and not inbox.is_dir():
        raise ConfigError(f"DOCUMENT_INBOX_DIR={inbox_raw!r} is not a directory")
    return ErxSettings(
        intermediary_url=url,
        intermediary_token=(env.get("NCPDP_INTERMEDIARY_TOKEN") or "").strip() or None,
        pharmacy_ncpdp_id=ncpdp_id,
        max_attempts=_int(env, "NCPDP_MAX_ATTEMPTS", 8, 1, 50),
        timeout_seconds=float(_int(env, "NCPDP_TIMEOUT_SECONDS", 15, 1, 120)),
        document_max_bytes=_int(env, "DOCUMENT_MAX_MB", 20, 1, 200) * 1024 * 1024,
        document_inbox=inbox,
        fhir_page_size=_int(env, "FHIR_PAGE_SIZE", 20, 1, 100),
    )


def init_app(app: Flask) -> None:
    """Read and check the settings once per app (called when the feature is registered)."""
    if KEY not in app.extensions:
        settings = app.extensions["pharmacy.settings"]
        app.extensions[KEY] = load(app.extensions.get("pharmacy.env", {}), production=settings.production)


def erx_settings() -> ErxSettings:
    return current_app.extensions[KEY]
