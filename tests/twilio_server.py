"""A loopback HTTP server that speaks Twilio's Messages API (the part we use) and signs its callbacks.

POST /2010-04-01/Accounts/{sid}/Messages.json (Basic auth) accepts a text (201 with a SID) or fails as told
(`fail_next(status, code)`); GET lists what it took (To, DateSent>); `status_callback(sid, status)` and
`inbound(url, from_, body)` POST to the app, signed with the auth token exactly as Twilio signs
(twilio.request_validator.RequestValidator.compute_signature).
"""
from __future__ import annotations

import base64
import itertools
import json
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from twilio.request_validator import RequestValidator

ACCOUNT = "AC" + "0" * 32
TOKEN = "loopback-auth-token-0123456789"
FROM = "+12175550000"


@dataclass
class Taken:
    sid: str
    to: str
    body: str
    status_callback: str | None
    at: datetime


@dataclass
class TwilioServer:
    messages: list[Taken] = field(default_factory=list)
    failures: list[tuple[int, int | None]] = field(default_factory=list)
    counter: Any = field(default_factory=lambda: itertools.count(1))

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _auth_ok(self) -> bool:
                expected = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
                return self.headers.get("Authorization") == expected

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                if not self._auth_ok():
                    return self._reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
                length = int(self.headers.get("Content-Length", 0))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if outer.failures:
                    status, code = outer.failures.pop(0)
                    return self._reply(status, {"code": code, "message": f"simulated {status}", "status": status})
                sid = f"SM{next(outer.counter):032d}"
                outer.messages.append(Taken(sid, form["To"], form["Body"], form.get("StatusCallback"),
                                            datetime.now(UTC)))
                return self._reply(201, {"sid": sid, "status": "queued", "to": form["To"], "body": form["Body"],
                                         "account_sid": ACCOUNT})

            def do_GET(self) -> None:
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                found = [m for m in outer.messages if m.to == query.get("To", m.to)]
                return self._reply(200, {"messages": [
                    {"sid": m.sid, "to": m.to, "body": m.body, "status": "sent", "account_sid": ACCOUNT}
                    for m in found], "next_page_uri": None, "page": 0, "page_size": 50})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, status: int, code: int | None = None, times: int = 1) -> None:
        self.failures.extend([(status, code)] * times)

    @staticmethod
    def sign(url: str, params: dict[str, str]) -> str:
        return RequestValidator(TOKEN).compute_signature(url, params)

    def post_signed(self, url: str, params: dict[str, str], *, signature: str | None = None) -> tuple[int, str]:
        data = urllib.parse.urlencode(params).encode()
        req = urllib.request.Request(url, data=data, method="POST")  # noqa: S310 - loopback http only
        req.add_header("X-Twilio-Signature", signature if signature is not None else self.sign(url, params))
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def status_callback(self, sid: str, status: str, error_code: int | None = None) -> tuple[int, str]:
        taken = next(m for m in self.messages if m.sid == sid)
        assert taken.status_callback
        params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": ACCOUNT, "To": taken.to}
        if error_code:
            params["ErrorCode"] = str(error_code)
        return self.post_signed(taken.status_callback, params)

    def inbound(self, url: str, from_: str, body: str, sid: str, *, signature: str | None = None) -> tuple[int, str]:
        params = {"MessageSid": sid, "From": from_, "To": FROM, "Body": body, "AccountSid": ACCOUNT}
        return self.post_signed(url, params, signature=signature)
