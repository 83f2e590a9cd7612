"""Local servers that speak Twilio's Messages and Calls APIs and SendGrid's v3 Mail Send, for tests and
benchmarks.

They bind 127.0.0.1 on a free port, record every accepted message, and inject faults on request:
a share of 429/500 answers (with Retry-After), slow answers, opted-out and invalid numbers.

`python -m comms.dev.servers [--light] [--latency S] [--fail-rate R]` runs both in their own process
(so a benchmark's servers do not share the pipeline's GIL), prints their URLs as one JSON line, and
answers `GET /__stats` with what each has accepted. `--light` keeps counts per recipient instead of
whole messages, for district-scale runs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import queue
import random
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import email_validator
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twilio.request_validator import RequestValidator

# Credentials for the local servers (they check only their shape) and the sender they expect.
ACCOUNT_SID, AUTH_TOKEN, MESSAGING_SERVICE_SID = "AC" + "1" * 32, "token", "MG" + "2" * 32
API_KEY, SENDER = "SG.local-key", "news@dadeschools.net"


def provider_env(twilio_url: str, sendgrid_url: str, sms_rate: str = "0") -> dict[str, str]:
    """The environment that points the app's SMS and e-mail channels at the local servers."""
    return {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_MESSAGING_SERVICE_SID": MESSAGING_SERVICE_SID,
        "COMMS_TWILIO_API_URL": twilio_url,
        "SENDGRID_API_KEY": API_KEY,
        "COMMS_EMAIL_FROM": SENDER,
        "COMMS_SENDGRID_API_URL": sendgrid_url,
        "COMMS_SMS_RATE": sms_rate,
    }


@dataclass
class Faults:
    fail_rate: float = 0.0  # share of requests answered 429 or 500
    slow_rate: float = 0.0  # share answered after `slow_seconds`
    slow_seconds: float = 0.5
    seed: int = 7
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client killed mid-request (the crash tests do it on purpose) is not a server error
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeProvider:
    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1") -> None:
        self.faults = Faults()
        self.lock = threading.Lock()
        self.requests = 0
        self.errors_sent = 0
        self.light = False  # keep only counts per recipient (district-scale benchmarks)
        self.reporter: queue.Queue[tuple[str, str, Any]] | None = None  # --report-to: callbacks to send
        self.accepted: Counter[str] = Counter()  # recipient -> messages accepted
        self.copies: Counter[str] = Counter()  # message (recipient and content) -> times accepted
        self.first_at = self.last_at = 0.0  # wall clock of the first and the last accepted message
        self.host = host  # 127.0.0.1, or an address on a link the tests made to hosts in network namespaces
        self.httpd = _Server((host, 0), handler)
        self.httpd.provider = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.httpd.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def fault(self) -> int | None:
        """An injected status to answer with, if this request draws one."""
        with self.lock:
            self.requests += 1
            f = self.faults
            delay = f.slow_seconds if f.slow_rate and f.rng.random() < f.slow_rate else 0.0
            status = (429 if f.rng.random() < 0.5 else 500) if f.fail_rate and f.rng.random() < f.fail_rate else None
            if status:
                self.errors_sent += 1
        if delay:
            time.sleep(delay)
        return status

    def record(self, messages: list[tuple[str, str]]) -> None:
        """Count accepted (recipient, content id) pairs; the caller holds `lock`."""
        self.accepted.update(to for to, _ in messages)
        self.copies.update(f"{to}\x1f{what}" for to, what in messages)
        self.last_at = time.time()
        self.first_at = self.first_at or self.last_at

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "accepted": self.accepted.total(),
                "recipients": len(self.accepted),
                "duplicates": sum(n - 1 for n in self.copies.values() if n > 1),
                "requests": self.requests,
                "errors_sent": self.errors_sent,
                "first_at": self.first_at,
                "last_at": self.last_at,
            }

    def per_recipient(self) -> Counter[str]:
        with self.lock:
            return Counter(self.accepted)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: without this, Nagle plus the client's delayed ACK
    # add ~40 ms to every request, a latency no real provider has on loopback
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:  # quiet: the tests read the records, not a log
        pass

    @property
    def provider(self) -> Any:
        return self.server.provider  # type: ignore[attr-defined]

    def _reply(self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _stats(self) -> bool:
        if self.path != "/__stats":
            return False
        self._reply(200, self.provider.stats())
        return True

    def _injected(self) -> bool:
        status = self.provider.fault()
        if status:
            self._reply(
                status,
                {"code": 20429 if status == 429 else 20500, "message": "injected fault", "status": status},
                {"Retry-After": "0.05"} if status == 429 else None,
            )
            return True
        return False


class _TwilioHandler(_Handler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self._body()
        parts = urlsplit(self.path).path.split("/")
        if len(parts) != 5 or parts[4] not in ("Messages.json", "Calls.json"):
            return self._reply(404, {"code": 20404, "message": "not found", "status": 404})
        if self._injected():
            return None
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if parts[4] == "Calls.json":
            return self._call(parts[3], form)
        p: FakeTwilio = self.provider
        to = form.get("To", "")
        if to in p.opted_out:
            return self._reply(
                400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}
            )
        if to in p.rejections:  # an error Twilio answers with for this number, as configured by a test
            code, message = p.rejections[to]
            return self._reply(400, {"code": code, "message": message, "status": 400})
        if not to.startswith("+") or to in p.invalid:
            return self._reply(400, {"code": 21211, "message": f"The 'To' number {to} is not valid", "status": 400})
        if not (form.get("MessagingServiceSid") or form.get("From")):
            return self._reply(400, {"code": 21603, "message": "A 'From' phone number is required", "status": 400})
        sid = "SM" + uuid.uuid4().hex
        msg = {
            "sid": sid,
            "account_sid": parts[3],
            "to": to,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": form.get("Body", ""),
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "status_callback": form.get("StatusCallback"),
            "date_created": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
            "uri": f"/2010-04-01/Accounts/{parts[3]}/Messages/{sid}.json",
        }
        with p.lock:
            p.record([(to, form.get("Body", ""))])
            if not p.light:
                p.messages.append(msg)
                p.by_to[to].append(msg)
        if p.reporter is not None and msg["status_callback"]:
            p.reporter.put(("twilio", msg["status_callback"], {"MessageSid": sid, "MessageStatus": "delivered"}))
        return self._reply(201, msg)

    def _call(self, account: str, form: dict[str, str]) -> None:
        """POST /2010-04-01/Accounts/{sid}/Calls.json: To, From, Twiml or Url, StatusCallback."""
        p: FakeTwilio = self.provider
        to = form.get("To", "")
        if not to.startswith("+") or to in p.invalid:
            return self._reply(400, {"code": 21211, "message": f"The 'To' number {to} is not valid", "status": 400})
        if not form.get("From"):
            return self._reply(400, {"code": 21213, "message": "A 'From' phone number is required", "status": 400})
        if not (form.get("Twiml") or form.get("Url")):
            return self._reply(400, {"code": 21205, "message": "Url or Twiml is required", "status": 400})
        sid = "CA" + uuid.uuid4().hex
        call = {
            "sid": sid,
            "account_sid": account,
            "to": to,
            "from": form["From"],
            "twiml": form.get("Twiml"),
            "url": form.get("Url"),
            "machine_detection": form.get("MachineDetection"),
            "status_callback": form.get("StatusCallback"),
            "status": "queued",
            "direction": "outbound-api",
            "uri": f"/2010-04-01/Accounts/{account}/Calls/{sid}.json",
        }
        with p.lock:
            p.record([(to, form.get("Twiml") or form.get("Url") or "")])
            if not p.light:
                p.calls.append(call)
        return self._reply(201, call)

    def do_GET(self) -> None:  # noqa: N802
        if self._stats() or self._injected():
            return
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        p: FakeTwilio = self.provider
        with p.lock:
            found = list(p.by_to.get(q["To"], ())) if "To" in q else list(p.messages)
        size = int(q.get("PageSize", 50))
        return self._reply(
            200,
            {
                "messages": found[:size],
                "page": 0,
                "page_size": size,
                "first_page_uri": u.path,
                "next_page_uri": None,
                "previous_page_uri": None,
                "uri": self.path,
            },
        )


def wait_until_up(url: str, timeout: float = 30.0) -> None:
    """Poll a service's health URL until it answers (benchmarks start `comms serve` this way)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - a URL the caller gives
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer in {timeout:.0f} s") from None
            time.sleep(0.1)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """POST as a provider's webhook client does: (status, body), an HTTP error included."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - a URL the test gives
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def twilio_post(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> tuple[int, str]:
    """POST a form to a webhook signed as Twilio signs it: HMAC-SHA1 of the URL and the sorted params."""
    signature = RequestValidator(token).compute_signature(url, params)
    body = urllib.parse.urlencode(params).encode()
    return post(url, body, {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})


class FakeTwilio(FakeProvider):
    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(_TwilioHandler, host)
        self.messages: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.by_to: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.opted_out: set[str] = set()
        self.invalid: set[str] = set()
        self.rejections: dict[str, tuple[int, str]] = {}  # number -> (Twilio error code, message)

    def report(
        self, statuses: tuple[str, ...] = ("sent", "delivered"), *, error_code: str | None = None
    ) -> list[tuple[int, str]]:
        """Call each accepted message's and call's StatusCallback with `statuses`, in that order (pass
        them reversed for out of order, repeated for Twilio's retries); the answers."""
        answers = []
        with self.lock:
            sent = [("MessageSid", "MessageStatus", m) for m in self.messages] + [
                ("CallSid", "CallStatus", c) for c in self.calls
            ]
        for sid_field, status_field, m in sent:
            if not m.get("status_callback"):
                continue
            for status in statuses:
                params = {sid_field: m["sid"], status_field: status, "AccountSid": m["account_sid"], "To": m["to"]}
                if error_code:
                    params["ErrorCode"] = error_code
                answers.append(twilio_post(m["status_callback"], params))
        return answers

    def text(self, url: str, from_: str, body: str, opt_out_type: str | None = None) -> tuple[int, str]:
        """A family's text to the district's number, as Twilio posts it to the inbound webhook."""
        params = {"MessageSid": "SM" + uuid.uuid4().hex, "From": from_, "To": "+13055550000", "Body": body}
        if opt_out_type:
            params["OptOutType"] = opt_out_type
        return twilio_post(url, params)


class _SendGridHandler(_Handler):
    def do_GET(self) -> None:  # noqa: N802
        if self._stats():
            return None
        u = urlsplit(self.path)
        if u.path != "/v3/messages":
            return self._reply(404, {"errors": [{"message": "not found"}]})
        p: FakeSendGrid = self.provider
        if not p.activity:  # an account without the Email Activity add-on
            return self._reply(403, {"errors": [{"field": None, "message": "access forbidden"}]})
        if self._injected():
            return None
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        # the one query the pipeline makes: the messages of one request, by its custom arg
        m = re.fullmatch(r"unique_args\['(\w+)'\]=\"([^\"]*)\"", q.get("query", ""))
        if not m or m.group(1) != "request":
            return self._reply(400, {"errors": [{"field": "query", "message": "unsupported query"}]})
        with p.lock:
            found = list(p.by_request.get(m.group(2), ()))
        limit = int(q.get("limit", 10))
        return self._reply(
            200,
            {
                "messages": [
                    {"msg_id": mid, "to_email": to, "status": "processing", "opens_count": 0, "clicks_count": 0}
                    for to, mid in found[:limit]
                ]
            },
        )

    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        if urlsplit(self.path).path != "/v3/mail/send":
            return self._reply(404, {"errors": [{"message": "not found"}]})
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            return self._reply(401, {"errors": [{"message": "authorization required"}]})
        if self._injected():
            return None
        doc = json.loads(body)
        pers = doc.get("personalizations", [])
        p: FakeSendGrid = self.provider
        if not 1 <= len(pers) <= 1000:
            return self._reply(400, {"errors": [{"field": "personalizations", "message": "must have 1 to 1000 items"}]})
        if not doc.get("from", {}).get("email") or not doc.get("subject") or not doc.get("content"):
            return self._reply(400, {"errors": [{"message": "from, subject and content are required"}]})
        # as SendGrid: one invalid address refuses the whole request, naming each bad personalization
        bad = [
            {"message": "Does not contain a valid address.", "field": f"personalizations.{i}.to.0.email"}
            for i, per in enumerate(pers)
            if not _valid_address(per.get("to", [{}])[0].get("email", ""))
        ]
        if bad:
            return self._reply(400, {"errors": bad})
        categories = doc.get("categories") or []
        if len(set(categories)) != len(categories):
            return self._reply(400, {"errors": [{"message": "The categories must be unique.", "field": "categories"}]})
        msg_id = uuid.uuid4().hex[:22]
        with p.lock:
            p.batches.append(len(pers))
            # a personalization's ledger_key names the message; without one, the subject stands in
            p.record(
                [(per["to"][0]["email"], per.get("custom_args", {}).get("ledger_key", doc["subject"])) for per in pers]
            )
            rid = doc.get("custom_args", {}).get("request")
            if rid and not p.light:
                p.by_request[rid].extend((per["to"][0]["email"], f"{msg_id}.{i}") for i, per in enumerate(pers))
            for per in pers if not p.light else ():
                p.deliveries.append(
                    {
                        "to": per["to"][0]["email"],
                        "custom_args": per.get("custom_args", {}),
                        "subject": doc["subject"],
                        "content": doc["content"],
                        "categories": doc.get("categories", []),
                        "asm": doc.get("asm"),
                        "headers": per.get("headers", {}),
                        "x_message_id": msg_id,
                    }
                )
        if p.reporter is not None and p.events_url:
            events = [
                {"email": per["to"][0]["email"], "event": "delivered", "sg_event_id": uuid.uuid4().hex,
                 "timestamp": int(time.time()), **per.get("custom_args", {})}
                for per in pers
            ]  # fmt: skip
            p.reporter.put(("sendgrid", p.events_url, events))
        self.send_response(202)
        if not p.omit_message_id:
            self.send_header("X-Message-Id", msg_id)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None


def _valid_address(address: str) -> bool:
    try:
        email_validator.validate_email(address, check_deliverability=False)
    except email_validator.EmailNotValidError:
        return False
    return True


class FakeSendGrid(FakeProvider):
    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(_SendGridHandler, host)
        self.batches: list[int] = []
        self.deliveries: list[dict[str, Any]] = []
        self.by_request: dict[str, list[tuple[str, str]]] = defaultdict(list)  # for the Email Activity API
        self.activity = True  # False: answer /v3/messages 403, as for an account without the add-on
        self.omit_message_id = False  # True: a 202 without X-Message-Id, which SendGrid does not promise
        self.signing_key = ec.generate_private_key(ec.SECP256R1())  # the Event Webhook's, per server
        self.events_url: str | None = None  # where the Event Webhook posts (--report-to)

    @property
    def public_key(self) -> str:
        """The verification key as SendGrid's settings page shows it: base64 of the DER public key."""
        der = self.signing_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    def signed_post(self, url: str, payload: str, timestamp: int) -> tuple[int, str]:
        """POST as the signed Event Webhook does: ECDSA P-256 over the timestamp and the body."""
        signature = self.signing_key.sign((str(timestamp) + payload).encode(), ec.ECDSA(hashes.SHA256()))
        headers = {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": str(timestamp),
        }
        return post(url, payload.encode(), headers)

    def report(self, url: str, event: str, timestamp: int, **extra: Any) -> tuple[int, str]:
        """One Event Webhook batch: `event` for every accepted e-mail, custom_args at the top level."""
        with self.lock:
            events = [
                {
                    "email": d["to"],
                    "event": event,
                    "sg_event_id": uuid.uuid4().hex,
                    "sg_message_id": d["x_message_id"],
                    "timestamp": timestamp,
                    **d["custom_args"],
                    **extra,
                }
                for d in self.deliveries
            ]
        return self.signed_post(url, json.dumps(events), timestamp)


def report_back(tw: FakeTwilio, sg: FakeSendGrid, lanes: int = 8) -> queue.Queue[tuple[str, str, Any]]:
    """Threads that call the service back as the providers do: Twilio a `delivered` status callback per
    message, SendGrid one signed Event Webhook batch per request. Benchmarks only (--report-to)."""
    q: queue.Queue[tuple[str, str, Any]] = queue.Queue()

    def lane() -> None:
        while True:
            kind, url, payload = q.get()
            for _ in range(20):  # as the providers do: retry until the service takes it
                try:
                    status = (
                        twilio_post(url, payload)[0]
                        if kind == "twilio"
                        else sg.signed_post(url, json.dumps(payload), int(time.time()))[0]
                    )
                except OSError:
                    status = 0
                if status < 300 and status:
                    break
                time.sleep(0.2)

    for _ in range(lanes):
        threading.Thread(target=lane, daemon=True).start()
    tw.reporter = sg.reporter = q
    return q


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m comms.dev.servers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--light", action="store_true", help="count per recipient instead of keeping messages")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds every answer waits (a real round trip)")
    ap.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered 429 or 500")
    ap.add_argument("--report-to", help="comms serve's URL: call it back with delivery receipts and events")
    args = ap.parse_args(argv)
    with FakeTwilio() as tw, FakeSendGrid() as sg:
        for p in (tw, sg):
            p.light = args.light
            p.faults.fail_rate = args.fail_rate
            p.faults.slow_rate, p.faults.slow_seconds = (1.0, args.latency) if args.latency else (0.0, 0.0)
        if args.report_to:
            sg.events_url = f"{args.report_to.rstrip('/')}/webhooks/sendgrid/events"
            report_back(tw, sg)
        print(json.dumps({"twilio": tw.url, "sendgrid": sg.url, "sendgrid_key": sg.public_key}), flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
