"""A real SMTP server on loopback (aiosmtpd) for the delivery and outbox tests: it keeps what it receives, can
refuse (4yz/5yz) or be slow on demand, and can be stopped and started on the same port (an outage). The `smtp`
fixture (tests/conftest.py) starts one per test."""
from __future__ import annotations

import asyncio
import email
import logging
import re
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


@dataclass
class Received:
    envelope_from: str
    envelope_to: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.raw, policy=policy.default)  # type: ignore[return-value]

    @property
    def message_id(self) -> str:
        """Read from the raw header (cheap: a load test receives thousands)."""
        found = _MESSAGE_ID.search(self.raw.split(b"\r\n\r\n", 1)[0])
        return found.group(1).decode() if found else ""


class Sink:
    """The aiosmtpd handler: keeps every message; can refuse (4yz/5yz) or be slow on demand."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.data_reply: str | None = None
        self.rcpt_replies: dict[str, str] = {}
        self.mail_reply: str | None = None
        self.delay = 0.0

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, mail_options: Any) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        with self.lock:  # counted once the whole message is in: from here on the receiver has it
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 2.0.0 Message accepted"

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def per_message_id(self) -> Counter[str]:
        with self.lock:
            return Counter(r.message_id for r in self.received)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpServer:
    """An aiosmtpd Controller that can be stopped and started again on the same port (an outage)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sink = Sink()
        self.smtputf8 = True  # aiosmtpd's Controller advertises SMTPUTF8 unless told not to
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?security=none&timeout=5"

    def start(self) -> None:
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO
        controller = Controller(self.sink, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=self.smtputf8)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
