"""How an email leaves the building: SMTP (`SMTP_URL`), or the embedded outbox-only default.

A transport is used for one batch (`with transport:`): SMTP opens one connection lazily on the
first message, reuses it for the batch, reconnects once if the server dropped it between
messages, and closes it at the end. Every failure is raised as `TransportError` carrying the
SMTP reply code (or none, for a connection problem), so `rules.classify_smtp_error` — not the
transport — decides between retrying and giving up.
"""
from __future__ import annotations

import contextlib
import smtplib
import ssl
from email.message import EmailMessage
from types import TracebackType
from typing import Protocol

from pharmacy.config import SmtpSettings
from pharmacy.reminders import rules


class TransportError(Exception):
    """A send that did not happen (as far as we know).

    `code` is the SMTP reply code when the server answered (4yz transient, 5yz permanent);
    None when the failure was the connection (refused, timed out, dropped). `connection` is
    True when the whole connection is unusable, so the rest of the batch cannot go out either.
    The message text is the server's reply or the exception's type — never the email itself.
    """

    def __init__(self, detail: str, *, code: int | None = None, connection: bool = False,
                 exc_name: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.connection = connection
        self.exc_name = exc_name

    @property
    def failure(self) -> str:
        return rules.classify_smtp_error(self.code, self.exc_name)

    def summary(self) -> str:
        """One line for `last_error` and the attempt log: "550 mailbox unavailable" / "connection: TimeoutError"."""
        head = str(self.code) if self.code is not None else "connection"
        return f"{head}: {self.detail}"[:400]


class Transport(Protocol):
    """What delivery needs from a transport."""

    name: str
    #: True when "sent" means "kept in the outbox for the dashboard", not handed to a mail server.
    local_only: bool

    def __enter__(self) -> Transport: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def send(self, message: EmailMessage, *, sender: str, recipients: list[str]) -> None: ...


class OutboxOnlyTransport:
    """The embedded default (no `SMTP_URL`): nothing leaves the machine.

    Delivery still renders each message and stores the subject and both bodies on the row, so
    the dashboard's outbox shows every email exactly as the patient would have received it.
    """

    name = "outbox-only"
    local_only = True

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    def __enter__(self) -> OutboxOnlyTransport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.sent.clear()  # only this batch's messages are kept in memory

    def send(self, message: EmailMessage, *, sender: str, recipients: list[str]) -> None:
        if not recipients:
            raise TransportError("no recipient", code=None)
        self.sent.append(message)


def _reply_text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())[:300]


class SmtpTransport:
    """SMTP with STARTTLS, implicit TLS or (loopback/test) no TLS; one connection per batch."""

    name = "smtp"
    local_only = False

    def __init__(self, config: SmtpSettings, *, local_hostname: str | None = None) -> None:
        self.config = config
        self.local_hostname = local_hostname
        self._conn: smtplib.SMTP | None = None

    # -- the batch's connection ---------------------------------------------------------------

    def __enter__(self) -> SmtpTransport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _open(self) -> smtplib.SMTP:
        cfg = self.config
        conn: smtplib.SMTP | None = None
        try:
            if cfg.security == "tls":
                conn = smtplib.SMTP_SSL(cfg.host, cfg.port, local_hostname=self.local_hostname, timeout=cfg.timeout,
                                        context=ssl.create_default_context())
            else:
                conn = smtplib.SMTP(cfg.host, cfg.port, local_hostname=self.local_hostname, timeout=cfg.timeout)
            conn.ehlo()
            if cfg.security == "starttls":
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            if cfg.username:
                conn.login(cfg.username, cfg.password or "")
        except smtplib.SMTPResponseException as exc:
            # A refusal while connecting (greeting, EHLO, STARTTLS, AUTH) is about the connection or the
            # configuration, never about one message: the batch is retried later, whatever the code.
            _quietly_close(conn)
            raise TransportError(_reply_text(exc.smtp_error) or type(exc).__name__, code=None, connection=True,
                                 exc_name=type(exc).__name__) from None
        except (OSError, smtplib.SMTPException) as exc:
            _quietly_close(conn)
            raise TransportError(type(exc).__name__, connection=True, exc_name=type(exc).__name__) from None
        return conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            _quietly_close(conn)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        _quietly_close(conn)

    # -- one message --------------------------------------------------------------------------

    def send(self, message: EmailMessage, *, sender: str, recipients: list[str]) -> None:
        """Hand one message to the server; raise TransportError with the reply code if it is refused."""
        for attempt in (1, 2):
            if self._conn is None or getattr(self._conn, "sock", None) is None:
                self._conn = self._open()
            try:
                self._conn.send_message(message, from_addr=sender, to_addrs=recipients)
                return
            except smtplib.SMTPServerDisconnected as exc:
                # The server closed an idle connection between two messages: reconnect once.
                self._drop()
                if attempt == 2:
                    raise TransportError(type(exc).__name__, connection=True, exc_name=type(exc).__name__) from None
            except smtplib.SMTPNotSupportedError as exc:
                # Raised by send_message before any command is sent: an internationalized address (zoë@…, which the
                # patient form accepts) and a server without SMTPUTF8. About this message only: the connection is
                # untouched and the rest of the batch must still go out (and not be charged an attempt).
                # Permanent at once, as RFC 6531 has a server answer it (553 5.6.7): retrying cannot help, and the
                # pharmacist sees it among the failed emails and can ask the patient for another address.
                raise TransportError("5.6.7 the mail server does not take internationalized addresses (SMTPUTF8)",
                                     code=553, exc_name=type(exc).__name__) from None
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = next(iter(exc.recipients.values()), (None, b""))
                raise TransportError(_reply_text(reply) or "recipient refused", code=code,
                                     exc_name=type(exc).__name__) from None
            except smtplib.SMTPSenderRefused as exc:
                # MAIL FROM refused. The envelope sender is the same in every email, so (like a refusal while
                # connecting) this is the configuration — sender not allowed, authentication required — never one
                # message: the batch is retried later, whatever the code. Only a size refusal is this message's.
                if exc.smtp_code == 552:
                    raise TransportError(_reply_text(exc.smtp_error) or type(exc).__name__, code=exc.smtp_code,
                                         exc_name=type(exc).__name__) from None
                raise TransportError(f"sender refused: {exc.smtp_code} {_reply_text(exc.smtp_error)}".strip(),
                                     code=None, connection=True, exc_name=type(exc).__name__) from None
            except smtplib.SMTPResponseException as exc:  # data refused, other replies
                if exc.smtp_code == 421:  # the server is closing the connection
                    self._drop()
                raise TransportError(_reply_text(exc.smtp_error) or type(exc).__name__, code=exc.smtp_code,
                                     exc_name=type(exc).__name__) from None
            except (OSError, smtplib.SMTPException) as exc:  # timeouts, resets, protocol errors
                self._drop()
                raise TransportError(type(exc).__name__, connection=True, exc_name=type(exc).__name__) from None


def _quietly_close(conn: smtplib.SMTP | None) -> None:
    if conn is None:
        return
    with contextlib.suppress(OSError, smtplib.SMTPException):
        conn.close()


def from_settings(smtp: SmtpSettings | None) -> Transport:
    """SMTP when `SMTP_URL` is set, else the outbox-only default."""
    return SmtpTransport(smtp) if smtp is not None else OutboxOnlyTransport()
