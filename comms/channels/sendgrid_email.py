"""E-mail through SendGrid's v3 Mail Send API with the official `sendgrid` SDK.

Messages with the same content go out together: one /v3/mail/send request carries up to 1000
personalizations, one per guardian, each with custom_args naming its ledger key and campaign.

After a crash, a row left in `sending` is sent again: SendGrid has no per-message lookup without the
paid Email Activity API, and a second copy of an e-mail is a smaller harm than a lost one.
"""

from __future__ import annotations

import socket
import urllib.error
from collections.abc import Sequence
from typing import Any

from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from comms.channels.base import Channel, Message, SendResult
from comms.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError

MAX_PERSONALIZATIONS = 1000


def mail_payload(messages: Sequence[Message], *, sender: str, sender_name: str | None = None) -> dict[str, Any]:
    """The JSON body of one /v3/mail/send request for messages sharing their content (pinned by a test)."""
    first = messages[0]
    if len(messages) > MAX_PERSONALIZATIONS:
        raise ValueError(f"{len(messages)} personalizations: SendGrid takes {MAX_PERSONALIZATIONS} at most")
    payload: dict[str, Any] = {
        "personalizations": [
            {"to": [{"email": m.to}], "custom_args": {"ledger_key": m.key, "campaign": m.campaign}} for m in messages
        ],
        "from": {"email": sender, **({"name": sender_name} if sender_name else {})},
        "subject": first.subject,
        "content": [
            {"type": "text/plain", "value": first.body["txt"]},
            {"type": "text/html", "value": first.body["html"]},
        ],
        "categories": ["district-comms", first.campaign],
        "custom_args": {"event": first.event_uid[:200], "language": first.lang},
    }
    if first.meta.get("unsubscribe_group"):
        payload["asm"] = {"group_id": int(first.meta["unsubscribe_group"])}
    return payload


def _same_content(m: Message) -> tuple[Any, ...]:
    return (m.campaign, m.event_uid, m.lang, m.subject, m.body["txt"], m.body["html"], m.meta.get("unsubscribe_group"))


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After") if headers else None
        return float(value) if value else None
    except (TypeError, ValueError):
        return None


class SendGridEmailChannel(Channel):
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
    ) -> None:
        self.client = SendGridAPIClient(api_key=api_key, host=(api_url or "https://api.sendgrid.com").rstrip("/"))
        self.client.client.timeout = timeout
        self.sender, self.sender_name = sender, sender_name
        self.batch_size = min(batch_size, MAX_PERSONALIZATIONS)

    def _post(self, batch: Sequence[Message]) -> list[SendResult]:
        payload = mail_payload(batch, sender=self.sender, sender_name=self.sender_name)
        error: DeliveryError
        try:
            resp = self.client.client.mail.send.post(request_body=payload)
            msg_id = resp.headers.get("X-Message-Id") if resp.headers else None
            return [SendResult(m.key, provider_id=f"{msg_id}#{i}") for i, m in enumerate(batch)]
        except http_errors.HTTPError as exc:
            status = exc.status_code
            if status == 429 or status >= 500:
                error = TransientDeliveryError(f"SendGrid HTTP {status}", str(status), _retry_after(exc.headers))
            elif status in (401, 403):
                error = TransientDeliveryError(
                    f"SendGrid refused the API key (HTTP {status}): check SENDGRID_API_KEY", str(status), 60.0
                )
            else:
                body = exc.body.decode("utf-8", "replace")[:300] if isinstance(exc.body, bytes) else str(exc.body)
                error = PermanentDeliveryError(f"SendGrid HTTP {status}: {body}", str(status))
        except self.transient_errors as exc:
            error = TransientDeliveryError(f"SendGrid unreachable: {exc.__class__.__name__}")
        return [SendResult(m.key, error=error) for m in batch]

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        groups: dict[tuple[Any, ...], list[Message]] = {}
        for m in messages:
            groups.setdefault(_same_content(m), []).append(m)
        by_key: dict[str, SendResult] = {}
        for group in groups.values():
            for i in range(0, len(group), self.batch_size):
                for r in self._post(group[i : i + self.batch_size]):
                    by_key[r.key] = r
        return [by_key[m.key] for m in messages]
