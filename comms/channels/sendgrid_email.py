"""E-mail through SendGrid's v3 Mail Send API with the official `sendgrid` SDK.

Messages with the same content go out together: one /v3/mail/send request carries up to 1000
personalizations, one per guardian, each with custom_args naming its ledger key and campaign.

Each request gets an id (`custom_args.request`) before its messages are ledgered as `sending`. After
a crash, the rows left in `sending` are looked up by that id in the Email Activity API (one query per
request), once they are older than the feed's lag (`reconcile_after`): a request SendGrid accepted is
not sent again. Without the Email Activity add-on (HTTP 401/403 on /v3/messages) they are sent again,
with a warning: a second copy of an e-mail is a smaller harm than a lost one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import socket
import urllib.error
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from comms.addresses import email_key
from comms.channels.base import Channel, Message, Options, SendResult, configured, retry_after
from comms.clock import Clock, clock_from_env
from comms.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from comms.privacy import quiet_sdk_loggers, scrub
from comms.unsubscribe import make_token

log = logging.getLogger("comms.channels.sendgrid")
MAX_PERSONALIZATIONS = 1000


@dataclass(frozen=True)
class OneClick:
    """RFC 8058 one-click unsubscribe for bulk (non-emergency) e-mail: each message's own signed link."""

    url: str  # COMMS_PUBLIC_URL + /unsubscribe
    secret: str
    clock: Clock
    mailto: str | None = None

    def headers(self, m: Message) -> dict[str, str]:
        if m.priority == "emergency":  # an emergency reaches everyone, unsubscribed or not
            return {}
        link = f"<{self.url}?token={make_token(self.secret, m.to, self.clock().timestamp())}>"
        mailto = f", <mailto:{self.mailto}?subject=unsubscribe>" if self.mailto else ""
        return {"List-Unsubscribe": link + mailto, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def mail_payload(
    messages: Sequence[Message], *, sender: str, sender_name: str | None = None, one_click: OneClick | None = None
) -> dict[str, Any]:
    """The JSON body of one /v3/mail/send request for messages sharing their content (pinned by a test)."""
    first = messages[0]
    if len(messages) > MAX_PERSONALIZATIONS:
        raise ValueError(f"{len(messages)} personalizations: SendGrid takes {MAX_PERSONALIZATIONS} at most")
    payload: dict[str, Any] = {
        "personalizations": [
            {
                "to": [{"email": m.to}],
                "custom_args": {"ledger_key": m.key, "campaign": m.campaign},
                **({"headers": h} if one_click and (h := one_click.headers(m)) else {}),
            }
            for m in messages
        ],
        "from": {"email": sender, **({"name": sender_name} if sender_name else {})},
        "subject": first.subject,
        "content": [
            {"type": "text/plain", "value": first.body["txt"]},
            {"type": "text/html", "value": first.body["html"]},
        ],
        # SendGrid refuses a request whose categories repeat: a campaign named "district-comms" is one
        "categories": list(dict.fromkeys(["district-comms", first.campaign])),
        "custom_args": {"event": first.event_uid[:200], "language": first.lang},
    }
    if first.meta.get("request"):
        payload["custom_args"]["request"] = first.meta["request"]
    if first.meta.get("unsubscribe_group"):
        payload["asm"] = {"group_id": int(first.meta["unsubscribe_group"])}
    return payload


def _refused_personalizations(body: str) -> dict[int, str]:
    """{index: message} for the personalizations a 400's errors name (`personalizations.3.to.0.email`)."""
    try:
        errors = json.loads(body).get("errors") or []
    except (ValueError, AttributeError):
        return {}
    out = {}
    for e in errors if isinstance(errors, list) else []:
        m = re.match(r"personalizations\.(\d+)\.", str(e.get("field") or "")) if isinstance(e, dict) else None
        if m:
            out[int(m.group(1))] = scrub(str(e.get("message") or "invalid"))
    return out


def _same_content(m: Message) -> tuple[Any, ...]:
    return (m.campaign, m.event_uid, m.lang, m.subject, m.body["txt"], m.body["html"], m.meta.get("unsubscribe_group"))


def activity_query(request_id: str) -> dict[str, Any]:
    """Email Activity API query parameters: the messages of one request (pinned by a test)."""
    return {"limit": MAX_PERSONALIZATIONS, "query": f"unique_args['request']=\"{request_id}\""}


class EmailOptions(Options):
    unsubscribe_group: int | None = Field(default=None, ge=1)  # SendGrid ASM group


class SendGridEmailChannel(Channel):
    name = "email"
    consumer = "email"
    address = "email"
    consent = "email"
    consent_default = True  # school e-mail needs no opt-in
    parts = ("txt", "html")
    verify_line = True
    subject_part = "txt"
    daily_cap = True
    options = EmailOptions
    unit = "e-mail"
    credentials = ("SENDGRID_API_KEY", "COMMS_EMAIL_FROM")
    api_url_var = "COMMS_SENDGRID_API_URL"

    transient_errors = (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError)

    def __init__(
        self,
        api_key: str,
        sender: str,
        *,
        sender_name: str | None = None,
        api_url: str | None = None,
        timeout: float = 15.0,
        batch_size: int = MAX_PERSONALIZATIONS,
        reconcile_after: float = 120.0,
        one_click: OneClick | None = None,
    ) -> None:
        self.one_click = one_click
        quiet_sdk_loggers()
        self.client = SendGridAPIClient(api_key=api_key, host=(api_url or "https://api.sendgrid.com").rstrip("/"))
        self.client.client.timeout = timeout
        self.sender, self.sender_name = sender, sender_name
        self.batch_size = min(batch_size, MAX_PERSONALIZATIONS)
        # SendGrid documents no bound on the feed's lag; it is seconds to a few minutes in practice
        self.reconcile_after = reconcile_after
        self._activity = True  # False once the account turns out not to have the Email Activity API

    @classmethod
    def from_env(cls, environ: Mapping[str, str], out: Path) -> Channel:
        if not configured(environ, cls.credentials):
            return super().from_env(environ, out)
        return cls(
            api_key=environ["SENDGRID_API_KEY"],
            sender=environ["COMMS_EMAIL_FROM"],
            sender_name=environ.get("COMMS_EMAIL_FROM_NAME") or None,
            api_url=environ.get("COMMS_SENDGRID_API_URL") or None,
            reconcile_after=float(environ.get("COMMS_SENDGRID_RECONCILE_AFTER", "120")),
            one_click=OneClick(
                f"{public.rstrip('/')}/unsubscribe",
                environ["COMMS_UNSUBSCRIBE_SECRET"],
                clock_from_env(environ),
                environ.get("COMMS_UNSUBSCRIBE_MAILTO") or None,
            )
            if (public := environ.get("COMMS_PUBLIC_URL")) and environ.get("COMMS_UNSUBSCRIBE_SECRET")
            else None,
        )

    @classmethod
    def normalise(cls, address: str) -> str:
        return email_key(address)

    @classmethod
    def meta(cls, options: Options) -> dict[str, str]:
        meta = super().meta(options)
        if isinstance(options, EmailOptions) and options.unsubscribe_group:
            meta["unsubscribe_group"] = str(options.unsubscribe_group)
        return meta

    def _post(self, batch: Sequence[Message]) -> list[SendResult]:
        """One request; when SendGrid refuses it (400) for addresses it names, those messages fail and
        the rest go again without them: one bad address must not fail 999 families with it."""
        results: dict[str, SendResult] = {}
        todo = list(batch)
        while todo:
            sent, refused = self._post_once(todo)
            if sent is not None:
                results.update((r.key, r) for r in sent)
                break
            assert refused is not None
            error, bad = refused
            if not bad or len(bad) == len(todo):  # not about particular addresses: the request itself
                results.update((m.key, SendResult(m.key, error=error)) for m in todo)
                break
            for i in sorted(bad):
                m = todo[i]
                results[m.key] = SendResult(
                    m.key, error=PermanentDeliveryError(f"SendGrid refused the address: {bad[i]}", "400")
                )
            todo = [m for i, m in enumerate(todo) if i not in bad]
        return [results[m.key] for m in batch]

    def _post_once(
        self, batch: Sequence[Message]
    ) -> tuple[list[SendResult] | None, tuple[DeliveryError, dict[int, str]] | None]:
        """(results, None) when the request went through or failed as a whole for a reason that is not
        one address; (None, (error, {index: message})) for a 400 naming personalizations."""
        payload = mail_payload(batch, sender=self.sender, sender_name=self.sender_name, one_click=self.one_click)
        error: DeliveryError
        try:
            resp = self.client.client.mail.send.post(request_body=payload)
            msg_id = resp.headers.get("X-Message-Id") if resp.headers else None
            # without X-Message-Id the message is sent but has no provider id (not "None#0")
            return [
                SendResult(m.key, provider_id=f"{msg_id}#{i}" if msg_id else None) for i, m in enumerate(batch)
            ], None
        except http_errors.HTTPError as exc:
            status = exc.status_code
            if status == 429 or status >= 500:
                error = TransientDeliveryError(f"SendGrid HTTP {status}", str(status), retry_after(exc.headers))
            elif status in (401, 403):
                error = TransientDeliveryError(
                    f"SendGrid refused the API key (HTTP {status}): check SENDGRID_API_KEY", str(status), 60.0
                )
            else:
                body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body)
                error = PermanentDeliveryError(f"SendGrid HTTP {status}: {scrub(body[:300])}", str(status))
                if status == 400:
                    return None, (error, _refused_personalizations(body))
        except self.transient_errors as exc:
            error = TransientDeliveryError(f"SendGrid unreachable: {exc.__class__.__name__}")
        return [SendResult(m.key, error=error) for m in batch], None

    def _requests(self, messages: Sequence[Message]) -> list[list[Message]]:
        """Messages sharing content, in requests of at most batch_size; a stamped request id wins."""
        groups: dict[tuple[Any, ...], list[Message]] = {}
        for m in messages:
            groups.setdefault((m.meta.get("request"), *_same_content(m)), []).append(m)
        return [g[i : i + self.batch_size] for g in groups.values() for i in range(0, len(g), self.batch_size)]

    def prepare(self, messages: Sequence[Message]) -> list[Message]:
        stamped: dict[str, Message] = {}
        for batch in self._requests([m for m in messages if not m.meta.get("request")]):
            meta = {**batch[0].meta, "request": uuid.uuid4().hex}  # one request, one content, one meta
            for m in batch:
                stamped[m.key] = dataclasses.replace(m, meta=meta)
        return [stamped.get(m.key, m) for m in messages]

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        by_key: dict[str, SendResult] = {}
        for batch in self._requests(messages):
            for r in self._post(batch):
                by_key[r.key] = r
        return [by_key[m.key] for m in messages]

    def _accepted(self, request_id: str) -> dict[str, str] | None:
        """Recipient -> SendGrid msg_id for one request, or None when the account has no Email Activity API."""
        try:
            resp = self.client.client.messages.get(query_params=activity_query(request_id))
        except http_errors.HTTPError as exc:
            if exc.status_code in (401, 403):
                return None
            raise TransientDeliveryError(
                f"cannot check SendGrid for an earlier send: HTTP {exc.status_code}", str(exc.status_code)
            ) from exc
        except self.transient_errors as exc:
            raise TransientDeliveryError(f"cannot check SendGrid for an earlier send: {exc}") from exc
        return {m["to_email"].lower(): m["msg_id"] for m in json.loads(resp.body).get("messages", [])}

    def reconcile(self, messages: Sequence[Message]) -> list[SendResult | None]:
        """Rows a crash left in `sending`: found in the Email Activity API by their request id, or None."""
        found: dict[str, SendResult] = {}
        requests: dict[str, list[Message]] = {}
        for m in messages:
            if m.meta.get("request"):
                requests.setdefault(m.meta["request"], []).append(m)
        for rid, batch in requests.items():
            if not self._activity:
                break
            accepted = self._accepted(rid)
            if accepted is None:
                self._activity = False
                log.warning(
                    "SendGrid refused the Email Activity API (no add-on, or the key lacks its scope): "
                    "%d e-mail(s) interrupted by a crash are sent again and may arrive twice",
                    len(messages),
                )
                break
            for m in batch:
                if m.to.lower() in accepted:
                    found[m.key] = SendResult(m.key, provider_id=accepted[m.to.lower()])
        log.info("reconciled %d e-mail(s) with SendGrid: %d already sent", len(messages), len(found))
        return [found.get(m.key) for m in messages]
