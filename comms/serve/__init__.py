"""`comms serve`: the providers' webhooks and one-click unsubscribe, as an ASGI app (Starlette on uvicorn).

    POST /events                    CloudEvents from district systems that do not speak Kafka: binary
                                    (ce- headers), structured or batched; a bearer token per producer
    POST /webhooks/twilio/status    delivery receipts of SMS and calls (?ledger_key= names the row)
    POST /webhooks/twilio/inbound   texts families send: STOP/START/HELP in three languages, or words
    POST /webhooks/sendgrid/events  SendGrid's Event Webhook: delivered, bounce, dropped, spam reports...
    GET|POST /unsubscribe           RFC 8058 one-click unsubscribe (POST), and a page to confirm (GET)
    GET /healthz, GET /metrics      liveness; Prometheus counters of requests, refusals, bus writes, lag
    /login, /console/...            the communications office's console (comms/console): sessions and roles

A request is verified (Twilio's X-Twilio-Signature with the SDK's RequestValidator against the public
URL; SendGrid's ECDSA signature with the SDK's EventWebhook helper, with a timestamp tolerance against
replay), turned into CloudEvents, written to the feedback topic (group commit: comms/serve/publish.py)
and only then answered. The feedback consumer (comms/feedback.py) applies them to the ledger.
Refused requests (unsigned, forged, replayed, too large, malformed) get 403/413/400, a counter and a
log line that names the route and the reason, never a number, an address or a name.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sendgrid.helpers.eventwebhook import EventWebhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from comms.accounts import Accounts
from comms.app import Env
from comms.bus import Bus, open_bus
from comms.clock import Clock, clock_from_env
from comms.config import Settings, load_settings
from comms.console import ConsoleApp
from comms.console.sessions import Sessions, console_secret
from comms.errors import CommsError, EventValidationError
from comms.events import load_json, make_event, parse_event, validate_data
from comms.ledger import Ledger
from comms.producers import Producers
from comms.render import Renderer
from comms.replies import keyword
from comms.roster import Roster
from comms.serve.publish import GroupCommit, Item
from comms.unsubscribe import read_token
from comms.worker import FEEDBACK, group_name

log = logging.getLogger("comms.serve")
SOURCE = "comms-serve"
IGNORED_EMAIL_EVENTS = frozenset({"processed", "open", "click", "deferred"})


@dataclass(frozen=True)
class ServeSettings:
    public_url: str | None  # as the providers call it: a proxy in front changes host and scheme
    twilio_auth_token: str | None
    sendgrid_public_key: str | None  # the verification key SendGrid shows (base64 DER)
    unsubscribe_secret: str | None
    max_bytes: int = 1024 * 1024
    tolerance: float = 300.0  # seconds a SendGrid signature's timestamp may be off
    console_idle: float = 30 * 60  # seconds without a page view that end a console session

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ServeSettings:
        e = os.environ if environ is None else environ
        return cls(
            public_url=(e.get("COMMS_PUBLIC_URL") or "").rstrip("/") or None,
            twilio_auth_token=e.get("TWILIO_AUTH_TOKEN") or None,
            sendgrid_public_key=e.get("SENDGRID_WEBHOOK_PUBLIC_KEY") or None,
            unsubscribe_secret=e.get("COMMS_UNSUBSCRIBE_SECRET") or None,
            max_bytes=int(e.get("COMMS_WEBHOOK_MAX_BYTES", str(1024 * 1024))),
            tolerance=float(e.get("COMMS_SENDGRID_WEBHOOK_TOLERANCE", "300")),
            console_idle=60 * float(e.get("COMMS_CONSOLE_IDLE_MINUTES", "30")),
        )


class Refused(Exception):
    """A request that gets no further: its status and the reason counted and logged."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "comms_webhook_requests", "Webhook requests", ["route", "status"], registry=self.registry
        )
        self.refused = Counter("comms_webhook_refused", "Requests refused", ["route", "reason"], registry=self.registry)
        self.events = Counter("comms_feedback_events", "Events written to the feedback topic", registry=self.registry)
        self.lag = Gauge("comms_feedback_lag", "Feedback events not yet applied to the ledger", registry=self.registry)
        self.writes = Gauge("comms_feedback_bus_writes", "Bus writes (group commits)", registry=self.registry)


def _event(type_: str, data: dict[str, Any], id_: str, now: str) -> Item:
    """A CloudEvent whose data its type's model has validated (EventValidationError names the field).
    The envelope is ours, so it is not parsed back: the feedback consumer validates it as any."""
    return validate_data(type_, data).key, make_event(type_, data, id=id_, source=SOURCE, time=now)


class Service:
    def __init__(
        self, env: Env, settings: Settings, roster: Roster, bus: Bus, clock: Clock, serve: ServeSettings
    ) -> None:
        self.env, self.settings, self.bus, self.clock, self.serve = env, settings, bus, clock, serve
        self.counters = _Metrics()
        self.commit = GroupCommit(bus, env.feedback_topic)
        self.events_commit = GroupCommit(bus, env.topic)
        self.producers = Producers(env.ledger.with_name("producers.db"))
        self.renderer = Renderer(env.templates)
        self.languages = {g.phone: g.language for g in roster.guardians.values() if g.phone}
        self.twilio = RequestValidator(serve.twilio_auth_token) if serve.twilio_auth_token else None
        self.sendgrid = EventWebhook(serve.sendgrid_public_key) if serve.sendgrid_public_key else None
        self.ledger = Ledger(env.ledger_target, clock)
        self.accounts = Accounts(env.ledger.with_name("accounts.db"), clock)
        self.console = ConsoleApp(
            settings=settings,
            roster=roster,
            ledger=self.ledger,
            accounts=self.accounts,
            sessions=Sessions(console_secret(os.environ, env.ledger.parent), clock, idle=serve.console_idle),
            clock=clock,
            secure=(serve.public_url or "").startswith("https://"),
            templates=env.templates,
        )

    # -- the plumbing every route shares ----------------------------------------------------------------
    def route(self, name: str, fn: Callable[[Request, bytes], Awaitable[Response]]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            try:
                response = await fn(request, await self._body(request))
            except Refused as exc:
                self.counters.refused.labels(name, exc.reason).inc()
                log.warning("%s: refused (%s): %s", name, exc.status, exc.reason)
                response = PlainTextResponse(exc.reason, status_code=exc.status)
            except CommsError as exc:  # the bus: the provider retries later
                log.error("%s: not written to the bus: %s", name, exc)
                response = PlainTextResponse("try again later", status_code=503)
            self.counters.requests.labels(name, str(response.status_code)).inc()
            return response

        return endpoint

    async def _body(self, request: Request) -> bytes:
        """The body, up to the limit: a larger one is refused before it is read whole."""
        limit = self.serve.max_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise Refused(413, "body too large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise Refused(413, "body too large")
        return bytes(body)

    def _now(self) -> str:
        return self.clock().isoformat()

    def _twilio_form(self, request: Request, body: bytes) -> dict[str, str]:
        """The form of a request Twilio signed, or Refused."""
        if self.twilio is None or self.serve.public_url is None:
            raise Refused(403, "twilio webhooks not configured (TWILIO_AUTH_TOKEN, COMMS_PUBLIC_URL)")
        signature = request.headers.get("x-twilio-signature")
        if not signature:
            raise Refused(403, "unsigned")
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body)))
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "malformed form") from None
        query = f"?{request.url.query}" if request.url.query else ""
        if not self.twilio.validate(f"{self.serve.public_url}{request.url.path}{query}", form, signature):
            raise Refused(403, "bad signature")
        return form

    async def _publish(self, items: list[Item]) -> None:
        await self.commit.publish(items)
        self.counters.events.inc(len(items))

    # -- the routes -------------------------------------------------------------------------------------
    async def events(self, request: Request, body: bytes) -> Response:
        """CloudEvents over HTTP, validated as `comms publish` validates: all published, or none."""
        auth = request.headers.get("authorization", "")
        producer = self.producers.who(auth[7:].strip()) if auth[:7].lower() == "bearer " else None
        if producer is None:
            raise Refused(401, "no valid producer token")
        docs = _cloudevents(request.headers, body)
        good: list[Item] = []
        bad: list[str] = []
        for i, doc in enumerate(docs):
            try:
                e = parse_event(json.dumps(doc, ensure_ascii=False).encode())
                good.append((e.key, e.raw))
            except EventValidationError as exc:
                bad.append(f"event {i}: {exc}")
        if bad:
            self.counters.refused.labels("events", "invalid event").inc(len(bad))
            log.warning("events: %s sent %d invalid event(s) of %d: nothing published", producer, len(bad), len(docs))
            return JSONResponse({"published": 0, "errors": bad[:20]}, status_code=400)
        await self.events_commit.publish(good)
        log.info("events: %s published %d event(s)", producer, len(good))
        return JSONResponse({"published": len(good)}, status_code=202)

    async def twilio_status(self, request: Request, body: bytes) -> Response:
        form = self._twilio_form(request, body)
        call = "CallSid" in form
        sid, status = (
            (form.get("CallSid"), form.get("CallStatus"))
            if call
            else (form.get("MessageSid"), form.get("MessageStatus"))
        )
        data = {
            "channel": "voice" if call else "sms",
            "ledger_key": request.query_params.get("ledger_key", ""),
            "provider_id": sid,
            "status": status or "",
            **({"error_code": form["ErrorCode"]} if form.get("ErrorCode") else {}),
        }
        try:
            item = _event("provider.status", data, f"twilio.{sid}.{status}", self._now())
        except EventValidationError as exc:
            raise Refused(400, f"malformed: {exc.field or 'callback'}") from None
        await self._publish([item])
        return Response(status_code=204)

    async def twilio_inbound(self, request: Request, body: bytes) -> Response:
        form = self._twilio_form(request, body)
        data = {
            "channel": "sms",
            "from_number": form.get("From", ""),
            "body": form.get("Body", ""),
            "provider_id": form.get("MessageSid", ""),
            **({"opt_out_type": form["OptOutType"]} if form.get("OptOutType") else {}),
        }
        try:
            item = _event("reply.received", data, f"twilio.{data['provider_id']}", self._now())
        except EventValidationError as exc:
            raise Refused(400, f"malformed: {exc.field or 'message'}") from None
        await self._publish([item])
        reply = MessagingResponse()  # TwiML by its emitter: the family's words stay text
        if keyword(data["body"], form.get("OptOutType")) == "help":
            lang = self.languages.get(data["from_number"], self.settings.district.default_language)
            text = self.renderer.render("sms", "_help", lang, {"district": self.settings.district}).parts["txt"]
            reply.message(text.strip())
        return Response(str(reply), media_type="application/xml")

    async def sendgrid_events(self, request: Request, body: bytes) -> Response:
        if self.sendgrid is None:
            raise Refused(403, "sendgrid webhooks not configured (SENDGRID_WEBHOOK_PUBLIC_KEY)")
        signature = request.headers.get("x-twilio-email-event-webhook-signature")
        stamp = request.headers.get("x-twilio-email-event-webhook-timestamp")
        if not signature or not stamp:
            raise Refused(403, "unsigned")
        try:
            text = body.decode("utf-8")
            valid = self.sendgrid.verify_signature(text, signature, stamp)
        except (UnicodeDecodeError, ValueError, TypeError):  # not UTF-8, a signature that is not base64/DER
            valid = False
        if not valid:
            raise Refused(403, "bad signature")
        if not stamp.isdigit() or abs(self.clock().timestamp() - int(stamp)) > self.serve.tolerance:
            raise Refused(403, "replayed or stale timestamp")
        try:
            events = load_json(text)
        except EventValidationError:
            raise Refused(400, "malformed JSON") from None
        if not isinstance(events, list):
            raise Refused(400, "malformed: not a list of events")
        items, bad = [], 0
        now = self._now()
        for e in events:
            if isinstance(e, dict) and e.get("event") in IGNORED_EMAIL_EVENTS:
                continue  # opens and clicks change nothing here: not a million bus records for nothing
            try:
                items.append(_email_event(e, now))
            except (EventValidationError, TypeError, KeyError):
                bad += 1  # one odd event must not make SendGrid retry the others forever
        if bad:
            self.counters.refused.labels("sendgrid_events", "malformed event").inc(bad)
            log.warning("sendgrid_events: %d of %d event(s) malformed, left out", bad, len(events))
        await self._publish(items)
        return Response(status_code=204)

    async def unsubscribe(self, request: Request, body: bytes) -> Response:
        if self.serve.unsubscribe_secret is None:
            raise Refused(403, "unsubscribe not configured (COMMS_UNSUBSCRIBE_SECRET)")
        token = request.query_params.get("token", "")
        email = read_token(self.serve.unsubscribe_secret, token, self.clock().timestamp())
        if email is None:
            raise Refused(403, "bad or expired token")
        if request.method == "GET":  # a link checker or a preview must not unsubscribe anyone
            return HTMLResponse(
                '<!doctype html><title>Unsubscribe</title><form method=post action="/unsubscribe?token='
                f"{escape(token)}\"><p>Stop the district's e-mail to {escape(email)}? Emergency messages "
                "still reach you.</p><button name=List-Unsubscribe value=One-Click>Unsubscribe</button></form>"
            )
        event_id = "unsubscribe." + hashlib.sha256(token.encode()).hexdigest()[:32]
        data = {"event": "unsubscribe", "email": email, "event_id": event_id}
        await self._publish([_event("email.event", data, event_id, self._now())])
        return HTMLResponse("<!doctype html><title>Unsubscribed</title><p>You are unsubscribed.</p>")

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def metrics(self, request: Request) -> Response:
        total, done = await asyncio.to_thread(self.bus.lag, group_name(FEEDBACK), self.env.feedback_topic)
        self.counters.lag.set(total - done)
        self.counters.writes.set(self.commit.writes)
        return Response(generate_latest(self.counters.registry), media_type=CONTENT_TYPE_LATEST)


def _cloudevents(headers: Mapping[str, str], body: bytes) -> list[Any]:
    """The events of a request in any of the CloudEvents HTTP binding's three modes, or Refused."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
        if content_type == "application/cloudevents+json":  # structured: the whole event in the body
            return [load_json(text)]
        if content_type == "application/cloudevents-batch+json":  # batched: a JSON array of them
            docs = load_json(text)
            if not isinstance(docs, list):
                raise Refused(400, "malformed: a batch must be a JSON array")
            return docs
        if "ce-specversion" in headers:  # binary: attributes in ce- headers, the data in the body
            doc: dict[str, Any] = {k[3:]: v for k, v in headers.items() if k.lower().startswith("ce-")}
            doc["datacontenttype"] = content_type or "application/json"
            doc["data"] = load_json(text)
            return [doc]
    except UnicodeDecodeError:
        raise Refused(400, "malformed: not UTF-8") from None
    except EventValidationError:
        raise Refused(400, "malformed JSON") from None
    raise Refused(415, "not a CloudEvent (binary, structured or batched JSON)")


def _email_event(e: Any, now: str) -> Item:
    """One element of SendGrid's events array as an `email.event` (custom_args come at the top level)."""
    data = {
        "event": e["event"],
        "email": e["email"],
        "event_id": e["sg_event_id"],
        **({"ledger_key": e["ledger_key"]} if e.get("ledger_key") else {}),
        **({"reason": str(e["reason"])[:500]} if e.get("reason") else {}),
        **({"asm_group_id": e["asm_group_id"]} if e.get("asm_group_id") is not None else {}),
    }
    return _event("email.event", data, f"sendgrid.{e['sg_event_id']}", now)


def service_from_env() -> Service:
    """The service as the environment configures it; CommsError names a setting or file that is wrong."""
    env = Env.from_environ()
    return Service(
        env,
        load_settings(env.config),
        Roster.load(env.roster),
        open_bus(env.bus_url),
        clock_from_env(os.environ),
        ServeSettings.from_environ(),
    )


def create_app(service: Service) -> Starlette:
    routes = [
        Route("/events", service.route("events", service.events), methods=["POST"]),
        Route("/webhooks/twilio/status", service.route("twilio_status", service.twilio_status), methods=["POST"]),
        Route("/webhooks/twilio/inbound", service.route("twilio_inbound", service.twilio_inbound), methods=["POST"]),
        Route("/webhooks/sendgrid/events", service.route("sendgrid_events", service.sendgrid_events), methods=["POST"]),
        Route("/unsubscribe", service.route("unsubscribe", service.unsubscribe), methods=["GET", "POST"]),
        Route("/healthz", service.healthz),
        Route("/metrics", service.metrics),
        *service.console.routes(),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.commit.start()
        service.events_commit.start()
        yield
        await service.commit.stop()
        await service.events_commit.stop()
        service.bus.close()
        service.producers.close()
        service.ledger.close()
        service.accounts.close()

    return Starlette(routes=routes, lifespan=lifespan)
