"""Settings from the environment, validated once at start-up so bad values fail in one clear line."""
from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_lib

from pharmacy.core.errors import ConfigError
from pharmacy.core.npi import npi_is_valid
from pharmacy.core.numbers import digits_only

ENVIRONMENTS = ("development", "production", "testing")
WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str | None
    password: str | None
    security: str  # "starttls", "tls" or "none"
    timeout: float = 10.0


@dataclass(frozen=True)
class TwilioSettings:
    """Twilio's Messages API (`TWILIO_*`): text messages leave the building only when these are set."""

    account_sid: str
    auth_token: str
    from_number: str | None  # E.164, or…
    messaging_service_sid: str | None  # …a Messaging Service (MG…) that picks the sender
    api_base: str | None = None  # another base URL than Twilio's (a proxy; the tests' loopback server)
    timeout: float = 10.0


@dataclass(frozen=True)
class Settings:
    env: str
    database_url: str
    secret_key: str
    smtp: SmtpSettings | None
    mail_from: str
    base_url: str
    pharmacy_name: str
    pharmacy_address: str
    pharmacy_phone: str
    pharmacy_email: str
    pharmacy_npi: str
    timezone: ZoneInfo
    business_weekdays: frozenset[int]
    holiday_country: str | None
    holiday_subdivision: str | None
    closed_dates: frozenset[date]
    reminder_hour: int
    reminder_offsets_days: tuple[int, ...]
    overdue_after_days: int
    renewal_notice_days: int
    safety_buffer_days: int
    default_shipping_days: int
    too_soon_percent: int
    rx_valid_days: int
    refill_link_days: int
    price_band_min_cents: int
    price_band_max_cents: int
    pdc_window_days: int
    pdc_threshold_percent: int
    ratelimit_storage_uri: str
    sqlite_busy_timeout_ms: int  # how long a SQLite write waits for the one write lock before "busy" (503)
    sqlite_wal_autocheckpoint: int  # WAL pages past which a committing connection copies the log back itself
    session_idle_minutes: int
    session_max_hours: int
    log_format: str
    outbox_max_attempts: int
    # Text messages and the patient portal (pharmacy/sms, pharmacy/portal).
    twilio: TwilioSettings | None = None
    sms_start_hour: int = 9
    sms_end_hour: int = 20
    portal_idle_minutes: int = 15
    portal_max_minutes: int = 60
    portal_code_minutes: int = 10
    autorefill_hour: int = 7
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def production(self) -> bool:
        return self.env == "production"


def _int(env: Mapping[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{key}={value} is outside {lo}..{hi}")
    return value


def parse_smtp_url(url: str) -> SmtpSettings:
    """smtp://user:pass@host:587 (STARTTLS), smtps://…:465 (TLS), smtp://host:25?security=none."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError(f"SMTP_URL must look like smtp://user:password@host:587 (got scheme {parts.scheme!r})")
    query = parse_qs(parts.query)
    security = "tls" if parts.scheme == "smtps" else query.get("security", ["starttls"])[0]
    if security not in ("starttls", "tls", "none"):
        raise ConfigError(f"SMTP_URL security={security!r} must be starttls, tls or none")
    try:
        port = parts.port or (465 if security == "tls" else 587)
    except ValueError:
        raise ConfigError("SMTP_URL has a port that is not a number") from None
    timeout = float(query.get("timeout", ["10"])[0])
    return SmtpSettings(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        security=security,
        timeout=timeout,
    )


WEAK_SECRETS = {"secret", "changeme", "change-me", "password", "dev", "development", "test", "example", "pharmacy"}


def secret_key_problem(key: str) -> str | None:
    """Why a SECRET_KEY is not good enough to sign sessions and patient links, or None. Production refuses to
    start with such a key; `flask doctor` says the same thing about any environment."""
    if len(key) < 32:
        return "shorter than 32 characters"
    lowered = key.lower()
    if any(word in lowered for word in WEAK_SECRETS) and len(set(key)) < 20:
        return "looks like a placeholder"
    if len(set(key)) < 10:
        return "too few different characters to be random"
    return None


def parse_twilio(env: Mapping[str, str]) -> TwilioSettings | None:
    """All of TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and a sender (TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID),
    or none of them (texts stay in the outbox, shown on the dashboard)."""
    sid = env.get("TWILIO_ACCOUNT_SID", "").strip()
    token = env.get("TWILIO_AUTH_TOKEN", "").strip()
    from_number = env.get("TWILIO_FROM_NUMBER", "").strip() or None
    service = env.get("TWILIO_MESSAGING_SERVICE_SID", "").strip() or None
    if not (sid or token or from_number or service):
        return None
    if not sid.startswith("AC") or len(sid) != 34:
        raise ConfigError("TWILIO_ACCOUNT_SID must be the 34-character account SID starting with AC")
    if len(token) < 16:
        raise ConfigError("TWILIO_AUTH_TOKEN must be set with TWILIO_ACCOUNT_SID (the account's auth token)")
    if from_number is None and service is None:
        raise ConfigError("set TWILIO_FROM_NUMBER (+15551234567) or TWILIO_MESSAGING_SERVICE_SID (MG…) for texts")
    if from_number is not None and not (from_number.startswith("+") and digits_only(from_number[1:])
                                        and 8 <= len(from_number) <= 16):
        raise ConfigError(f"TWILIO_FROM_NUMBER={from_number!r} must be an E.164 number like +15551234567")
    if service is not None and not service.startswith("MG"):
        raise ConfigError("TWILIO_MESSAGING_SERVICE_SID must start with MG")
    base = env.get("TWILIO_API_BASE", "").strip().rstrip("/") or None
    if base is not None and not base.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ConfigError("TWILIO_API_BASE must be an https:// URL (plain http only on loopback)")
    return TwilioSettings(account_sid=sid, auth_token=token, from_number=from_number, messaging_service_sid=service,
                          api_base=base)


def _sms_hours(env: Mapping[str, str]) -> tuple[int, int]:
    """SMS_SEND_HOURS="9-20": texts go out from 9:00 to 20:00 pharmacy time, never at night."""
    raw = env.get("SMS_SEND_HOURS", "9-20").strip()
    start, _, end = raw.partition("-")
    try:
        first, last = int(start), int(end)
    except ValueError:
        raise ConfigError(f"SMS_SEND_HOURS={raw!r} must look like 9-20 (local hours)") from None
    if not 7 <= first < last <= 21:
        raise ConfigError(f"SMS_SEND_HOURS={raw!r} must lie within 7-21 (never at night)")
    return first, last


def _secret_key(env: Mapping[str, str], instance_path: Path, app_env: str) -> str:
    key = env.get("SECRET_KEY")
    if key:
        problem = secret_key_problem(key) if app_env == "production" else None
        if problem:
            raise ConfigError(f"SECRET_KEY is not strong enough for production ({problem}); generate one with "
                              "python -c 'import secrets; print(secrets.token_hex(32))'")
        return key
    if app_env == "production":
        raise ConfigError(
            "SECRET_KEY must be set in production (e.g. python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    # Development and tests: generate once into instance/ (git-ignored), so sessions survive restarts.
    path = instance_path / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def _app_env(env: Mapping[str, str]) -> str:
    app_env = env.get("PHARMACY_ENV", "development")
    if app_env not in ENVIRONMENTS:
        raise ConfigError(f"PHARMACY_ENV={app_env!r} must be one of {', '.join(ENVIRONMENTS)}")
    return app_env


def _database_url(env: Mapping[str, str], instance_path: Path) -> str:
    """SQLite by default; postgres:// and postgresql:// URLs are driven by psycopg 3."""
    database_url = env.get("DATABASE_URL") or f"sqlite:///{instance_path / 'pharmacy.db'}"
    if database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgres://") :]
    elif database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]
    if not database_url.startswith(("sqlite:", "postgresql+psycopg:")):
        raise ConfigError("DATABASE_URL must be a sqlite:/// path or a postgresql:// URL")
    return database_url


def _timezone(env: Mapping[str, str]) -> ZoneInfo:
    tz_name = env.get("PHARMACY_TIMEZONE", "America/Chicago")
    try:
        return ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"PHARMACY_TIMEZONE={tz_name!r} is not a known time zone (e.g. America/Chicago)") from None


def _business_weekdays(env: Mapping[str, str]) -> frozenset[int]:
    days_raw = env.get("PHARMACY_BUSINESS_DAYS", "mon,tue,wed,thu,fri")
    try:
        weekdays = frozenset(WEEKDAYS[d.strip().lower()[:3]] for d in days_raw.split(",") if d.strip())
    except KeyError:
        raise ConfigError(f"PHARMACY_BUSINESS_DAYS={days_raw!r} must list days like mon,tue,wed,thu,fri") from None
    if not weekdays:
        raise ConfigError("PHARMACY_BUSINESS_DAYS names no day")
    return weekdays


def _holiday_calendar(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """PHARMACY_HOLIDAYS="US-MN" → ("US", "MN"); "none" → no public holidays (closed dates still apply)."""
    holidays_raw = env.get("PHARMACY_HOLIDAYS", "US")
    if not holidays_raw or holidays_raw.lower() == "none":
        return None, None
    country, _, subdivision = holidays_raw.partition("-")
    if country not in holidays_lib.list_supported_countries():
        raise ConfigError(f"PHARMACY_HOLIDAYS={holidays_raw!r}: unknown country code (e.g. US or US-MN)")
    return country, subdivision or None


def _closed_dates(env: Mapping[str, str]) -> frozenset[date]:
    closed: set[date] = set()
    for item in filter(None, (s.strip() for s in env.get("PHARMACY_CLOSED_DATES", "").split(","))):
        try:
            closed.add(date.fromisoformat(item))
        except ValueError:
            raise ConfigError(f"PHARMACY_CLOSED_DATES has {item!r}, not a YYYY-MM-DD date") from None
    return frozenset(closed)


def _pharmacy_npi(env: Mapping[str, str]) -> str:
    npi = env.get("PHARMACY_NPI", "1234567893")
    if not npi_is_valid(npi):
        raise ConfigError(f"PHARMACY_NPI={npi!r} is not a valid 10-digit NPI (check digit)")
    return npi


def _reminder_offsets(env: Mapping[str, str]) -> tuple[int, ...]:
    """Most distant first, duplicates dropped: "3,7,0,7" is (7, 3, 0)."""
    offsets_raw = env.get("REMINDER_OFFSETS_DAYS", "7,3,0")
    try:
        offsets = tuple(sorted({int(x) for x in offsets_raw.split(",") if x.strip()}, reverse=True))
    except ValueError:
        raise ConfigError(f"REMINDER_OFFSETS_DAYS={offsets_raw!r} must be whole days like 7,3,0") from None
    if not offsets or any(o < 0 or o > 60 for o in offsets):
        raise ConfigError("REMINDER_OFFSETS_DAYS must list days between 0 and 60")
    return offsets


def _price_band(env: Mapping[str, str]) -> tuple[int, int]:
    band_min = _int(env, "PRICE_BAND_MIN_CENTS", 4500, 0, 10_000_000)
    band_max = _int(env, "PRICE_BAND_MAX_CENTS", 10000, 0, 10_000_000)
    if band_min > band_max:
        raise ConfigError("PRICE_BAND_MIN_CENTS is above PRICE_BAND_MAX_CENTS")
    return band_min, band_max


def _log_format(env: Mapping[str, str], app_env: str) -> str:
    log_format = env.get("LOG_FORMAT", "json" if app_env == "production" else "plain")
    if log_format not in ("json", "plain"):
        raise ConfigError(f"LOG_FORMAT={log_format!r} must be json or plain")
    return log_format


def load_settings(env: Mapping[str, str], instance_path: Path) -> Settings:
    """Read and check every setting; raise ConfigError naming the first bad one."""
    app_env = _app_env(env)
    database_url = _database_url(env, instance_path)
    tz = _timezone(env)
    weekdays = _business_weekdays(env)
    country, subdivision = _holiday_calendar(env)
    closed = _closed_dates(env)
    npi = _pharmacy_npi(env)
    offsets = _reminder_offsets(env)
    smtp_url = env.get("SMTP_URL")
    smtp = parse_smtp_url(smtp_url) if smtp_url else None
    band_min, band_max = _price_band(env)
    log_format = _log_format(env, app_env)
    sms_start, sms_end = _sms_hours(env)

    return Settings(
        env=app_env,
        database_url=database_url,
        secret_key=_secret_key(env, instance_path, app_env),
        smtp=smtp,
        mail_from=env.get("MAIL_FROM", "Riverside Compounding Pharmacy <refills@pharmacy.example>"),
        base_url=env.get("BASE_URL", "http://127.0.0.1:5000").rstrip("/"),
        pharmacy_name=env.get("PHARMACY_NAME", "Riverside Compounding Pharmacy"),
        pharmacy_address=env.get("PHARMACY_ADDRESS", "100 River Street, Springfield, IL 62701"),
        pharmacy_phone=env.get("PHARMACY_PHONE", "(217) 555-0100"),
        pharmacy_email=env.get("PHARMACY_EMAIL", "refills@pharmacy.example"),
        pharmacy_npi=npi,
        timezone=tz,
        business_weekdays=weekdays,
        holiday_country=country,
        holiday_subdivision=subdivision,
        closed_dates=closed,
        reminder_hour=_int(env, "REMINDER_SEND_HOUR", 10, 8, 19),
        reminder_offsets_days=offsets,
        overdue_after_days=_int(env, "REMINDER_OVERDUE_AFTER_DAYS", 2, 1, 30),
        renewal_notice_days=_int(env, "RENEWAL_NOTICE_DAYS", 21, 7, 90),
        safety_buffer_days=_int(env, "SAFETY_BUFFER_DAYS", 2, 0, 14),
        default_shipping_days=_int(env, "DEFAULT_SHIPPING_DAYS", 2, 0, 14),
        too_soon_percent=_int(env, "TOO_SOON_PERCENT", 80, 50, 100),
        rx_valid_days=_int(env, "RX_VALID_DAYS", 365, 1, 730),
        refill_link_days=_int(env, "REFILL_LINK_DAYS", 21, 1, 90),
        price_band_min_cents=band_min,
        price_band_max_cents=band_max,
        pdc_window_days=_int(env, "PDC_WINDOW_DAYS", 180, 30, 730),
        pdc_threshold_percent=_int(env, "PDC_THRESHOLD_PERCENT", 80, 1, 100),
        ratelimit_storage_uri=env.get("RATELIMIT_STORAGE_URI") or env.get("REDIS_URL") or "memory://",
        sqlite_busy_timeout_ms=_int(env, "SQLITE_BUSY_TIMEOUT_MS", 15000, 100, 120000),
        sqlite_wal_autocheckpoint=_int(env, "SQLITE_WAL_AUTOCHECKPOINT", 10000, 100, 1_000_000),
        session_idle_minutes=_int(env, "SESSION_IDLE_MINUTES", 30, 1, 24 * 60),
        session_max_hours=_int(env, "SESSION_MAX_HOURS", 12, 1, 24 * 7),
        log_format=log_format,
        outbox_max_attempts=_int(env, "OUTBOX_MAX_ATTEMPTS", 8, 1, 50),
        twilio=parse_twilio(env),
        sms_start_hour=sms_start,
        sms_end_hour=sms_end,
        portal_idle_minutes=_int(env, "PORTAL_IDLE_MINUTES", 15, 5, 60),
        portal_max_minutes=_int(env, "PORTAL_MAX_MINUTES", 60, 15, 240),
        portal_code_minutes=_int(env, "PORTAL_CODE_MINUTES", 10, 3, 30),
        autorefill_hour=_int(env, "AUTOREFILL_HOUR", 7, 6, 18),
    )
