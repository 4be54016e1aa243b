"""Inventory and production settings: from the environment, checked when the features are registered (a bad value
stops start-up with one line, like every other setting)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from pharmacy.core.errors import ConfigError

KEY = "pharmacy.inventory"


@dataclass(frozen=True)
class StockSettings:
    expiry_warning_days: int  # lots expiring within this many days are shown on Today and /inventory
    bench_capacity: int  # preparations (fills) the bench can make in one business day
    plan_days: int  # business days the production plan looks ahead


def _int(env: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(key)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{key}={value} is outside {lo}..{hi}")
    return value


def load(env: Mapping[str, Any]) -> StockSettings:
    return StockSettings(
        expiry_warning_days=_int(env, "INVENTORY_EXPIRY_WARNING_DAYS", 60, 1, 365),
        bench_capacity=_int(env, "PRODUCTION_BENCH_CAPACITY", 40, 1, 100_000),
        plan_days=_int(env, "PRODUCTION_PLAN_DAYS", 14, 1, 30),
    )


def init_app(app: Flask) -> None:
    """Read and check the settings once per app (called when the inventory or production feature registers)."""
    if KEY not in app.extensions:
        app.extensions[KEY] = load(app.extensions.get("pharmacy.env", {}))


def stock_settings() -> StockSettings:
    app = current_app
    if KEY not in app.extensions:
        init_app(app)
    return app.extensions[KEY]
