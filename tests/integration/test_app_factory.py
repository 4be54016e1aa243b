"""The factory, configuration errors and the first page."""
from __future__ import annotations

import secrets
import subprocess
import sys

import pytest
from flask import Flask

from pharmacy import create_app
from pharmacy.core.errors import ConfigError
from tests.conftest import login


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("PHARMACY_TIMEZONE", "Mars/Olympus", "PHARMACY_TIMEZONE"),
        ("PHARMACY_NPI", "1234567890", "PHARMACY_NPI"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
        ("SMTP_URL", "http://mail", "SMTP_URL"),
        ("REMINDER_SEND_HOUR", "3", "REMINDER_SEND_HOUR"),
        ("PHARMACY_BUSINESS_DAYS", "mon,funday", "PHARMACY_BUSINESS_DAYS"),
        ("PRICE_BAND_MIN_CENTS", "abc", "PRICE_BAND_MIN_CENTS"),
    ],
)
def test_bad_setting_is_named(app_config: dict, key: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        create_app({**app_config, key: value})
    assert fragment in str(err.value)


@pytest.mark.parametrize(("key", "why"), [
    ("short", "shorter than 32 characters"),
    ("x" * 40, "too few different characters"),  # 40 characters of one letter: long, and no secret at all
    ("abcabcabcabcabcabcabcabcabcabcabcabcabc", "too few different characters"),
    ("changeme" * 5, "looks like a placeholder"),
])
def test_production_refuses_to_start_with_a_weak_secret(app_config: dict, key: str, why: str) -> None:
    with pytest.raises(ConfigError, match=f"SECRET_KEY is not strong enough for production \\({why}"):
        create_app({**app_config, "PHARMACY_ENV": "production", "SECRET_KEY": key})


def test_production_starts_with_a_random_secret_and_development_only_warns(app_config: dict) -> None:
    app = create_app({**app_config, "PHARMACY_ENV": "production", "SECRET_KEY": secrets.token_hex(32)})
    assert app.config["SESSION_COOKIE_SECURE"]
    assert create_app({**app_config, "PHARMACY_ENV": "development", "SECRET_KEY": "x" * 40}).config["SECRET_KEY"]


def test_secret_key_is_generated_once_into_instance(app_config: dict, tmp_path) -> None:
    config = {k: v for k, v in app_config.items() if k != "SECRET_KEY"}
    first = create_app(config).config["SECRET_KEY"]
    second = create_app(config).config["SECRET_KEY"]
    assert first == second and len(first) == 64
    key_file = tmp_path / "instance" / "secret_key"
    assert key_file.read_text() == first
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


def test_cli_reports_bad_configuration_in_one_line(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PHARMACY_TIMEZONE": "Nowhere/Land", "FLASK_APP": "pharmacy.entry",
           "PHARMACY_INSTANCE_PATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "flask", "users", "list"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "pharmacy: configuration error: "
        "PHARMACY_TIMEZONE='Nowhere/Land' is not a known time zone (e.g. America/Chicago)"
    )
    assert "Traceback" not in result.stderr


def test_home_requires_sign_in_then_shows_patients(client, staff) -> None:
    response = client.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    login(client, staff["pharmacist"])
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"


def test_the_openapi_document_is_written_on_first_read_and_whole(app_config: dict) -> None:
    """create_app registers the API's routes but leaves documenting them to the first read of the document (two
    thirds of start-up otherwise); that read documents every blueprint, once, whichever app was built last."""
    from pharmacy import create_app
    from pharmacy.extensions import api

    app = create_app(app_config)
    assert api._pending_docs, "documentation should wait for the first read"
    assert "/api/v1/orders" in {r.rule for r in app.url_map.iter_rules()}  # the routes are there already
    first = app.test_client().get("/api/v1/openapi.json").get_json()
    assert not api._pending_docs
    assert "/api/v1/orders" in first["paths"] and "/api/v1/production/plan" in first["paths"]
    assert {t["name"] for t in first["tags"]} >= {"orders-api", "inventory-api", "production-api"}
    again = app.test_client().get("/api/v1/openapi.json").get_json()
    assert again == first  # documented once, not twice


def test_url_builders_are_written_on_first_use_and_build_what_werkzeug_builds(app: Flask) -> None:
    """Every route builds the same URL (with its defaults and with unknown values as a query string) as werkzeug's
    own Rule would, though no builder is written until a URL is first built (pharmacy/core/routing.py)."""
    from werkzeug.routing import AnyConverter, IntegerConverter, Map, Rule

    from pharmacy.core.routing import LazyBuilderRule

    ours = [rule for rule in app.url_map.iter_rules() if isinstance(rule, LazyBuilderRule)]
    assert len(ours) > 150
    assert not any(rule.written_builders for rule in ours)
    plain = Map([Rule(r.rule, endpoint=r.endpoint, methods=r.methods, defaults=r.defaults)
                 for r in app.url_map.iter_rules()], converters=dict(app.url_map.converters))
    built_by_us = app.url_map.bind("pharmacy.test")
    built_by_werkzeug = plain.bind("pharmacy.test")
    for rule in ours:
        values = {name: _a_value(rule._converters[name], IntegerConverter, AnyConverter)
                  for name in rule.arguments if name not in (rule.defaults or {})}
        for extra in ({}, {"next": "/patients/7?x=1", "page": 2}):
            method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
            expected = built_by_werkzeug.build(rule.endpoint, {**values, **extra}, method=method)
            assert built_by_us.build(rule.endpoint, {**values, **extra}, method=method) == expected, rule.rule
        assert set(rule.written_builders) == {True}  # only the builder url_for asked for (unknown values appended)


def _a_value(converter: object, integer: type, any_of: type) -> object:
    if isinstance(converter, integer):
        return 7
    if isinstance(converter, any_of):
        return sorted(converter.items)[0]  # type: ignore[attr-defined]
    return "a b/é"


def test_url_for_each_builds_what_url_for_builds(app: Flask) -> None:
    """The list helper builds a page's URL once and sets each row's id in it: the same URLs as url_for, for ids of
    every length, with the page's other values, and never anything but the integer."""
    from flask import url_for

    from pharmacy.core.views import url_for_each

    with app.test_request_context("/"):
        order_url = url_for_each("compounding.order", "order_id")
        patient_url = url_for_each("patients.detail", "patient_id", _anchor="costs")
        for value in (1, 7, 42, 2147483646, 2147483647):
            assert order_url(value) == url_for("compounding.order", order_id=value)
            assert patient_url(value) == url_for("patients.detail", patient_id=value, _anchor="costs")
        assert order_url("12") == "/orders/12"
        with pytest.raises(ValueError):
            order_url("12/../../admin")
