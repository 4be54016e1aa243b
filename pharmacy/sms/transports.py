"""How a text leaves the building: Twilio's Messages API (`TWILIO_*`), or the embedded outbox-only default.

Like the email transports (reminders/transports.py): a failure is raised as `SmsError` carrying the HTTP status and
Twilio's error code, and `rules.classify` — not the transport — decides between retrying and giving up.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from pharmacy.config import TwilioSettings
from pharmacy.sms import rules

TWILIO_API = "https://api.twilio.com"


class SmsError(Exception):
    """A text that did not go (as far as we know). `connection`: nothing can go right now (server down, refused,
    our credentials refused), so the rest of the batch waits too. The detail never carries the text itself."""

    def __init__(self, detail: str, *, status: int | None = None, code: int | None = None,
                 connection: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code
        self.connection = connection

    @property
    def failure(self) -> rules.Failure:
        return rules.classify(self.status, self.code)

    def summary(self) -> str:
        head = f"{self.status}" if self.status is not None else "connection"
        code = f" (Twilio {self.code})" if self.code is not None else ""
        return f"{head}{code}: {self.detail}"[:400]


@dataclass(frozen=True)
class Accepted:
    """What the provider said when it took the text: its id, and where the message is."""

    provider_id: str
    status: str


class SmsTransport(Protocol):
    name: str
    local_only: bool

    def send(self, *, to: str, body: str, status_callback: str | None) -> Accepted: ...


class OutboxOnlySms:
    """The embedded default (no `TWILIO_*`): nothing leaves the machine; the outbox page shows every text."""

    name = "outbox-only"
    local_only = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, *, to: str, body: str, status_callback: str | None) -> Accepted:
        self.sent.append((to, body))
        return Accepted(provider_id=f"local-{uuid.uuid4().hex[:24]}", status="kept")


class _Rebased(TwilioHttpClient):
    """Twilio's own HTTP client with another base URL (a proxy, or the tests' loopback Messages API)."""

    def __init__(self, base: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.base = base

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if url.startswith(TWILIO_API):
            url = self.base + url[len(TWILIO_API):]
        return super().request(method, url, *args, **kwargs)


class TwilioSms:
    """Twilio's Messages API through the `twilio` library: one POST per text, no retries of its own."""

    name = "twilio"
    local_only = False

    def __init__(self, config: TwilioSettings) -> None:
        self.config = config
        http = _Rebased(config.api_base, config.timeout) if config.api_base else TwilioHttpClient(
            timeout=config.timeout)
        self.client = Client(config.account_sid, config.auth_token, http_client=http)

    def send(self, *, to: str, body: str, status_callback: str | None) -> Accepted:
        params: dict[str, Any] = {"to": to, "body": body}
        if self.config.messaging_service_sid:
            params["messaging_service_sid"] = self.config.messaging_service_sid
        else:
            params["from_"] = self.config.from_number
        if status_callback:
            params["status_callback"] = status_callback
        try:
            message = self.client.messages.create(**params)
        except TwilioRestException as exc:
            status = int(exc.status) if exc.status else None
            code = int(exc.code) if exc.code else None
            detail = " ".join(str(exc.msg or "refused").split())[:200]
            credentials = status in (401, 403)
            raise SmsError(detail, status=status, code=code, connection=credentials) from None
        except Exception as exc:  # requests' connection errors and timeouts, a reply that is not JSON
            raise SmsError(type(exc).__name__, connection=True) from None
        return Accepted(provider_id=str(message.sid), status=str(message.status or "queued"))

    def find_sent(self, *, to: str, body: str, since: Any) -> str | None:
        """The id of a text with these words Twilio already took for `to` since `since`, if any (after a crash
        between Twilio's answer and our record of it). Unreachable: None, and the text is sent again."""
        try:
            for message in self.client.messages.list(to=to, date_sent_after=since, limit=50):
                if message.body == body:
                    return str(message.sid)
        except Exception:  # noqa: S110 - a lookup that fails only means the text may go twice (at-least-once)
            pass
        return None


def from_settings(config: TwilioSettings | None) -> SmsTransport:
    return TwilioSms(config) if config is not None else OutboxOnlySms()
