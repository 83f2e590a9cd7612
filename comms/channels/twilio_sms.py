"""SMS through Twilio's Messages API with the official `twilio` SDK.

Sends concurrently (a thread pool, one SDK client per thread) under a messages-per-second limit.
429 and 5xx are transient (Retry-After honoured by the worker's pause); 21610 (the recipient replied
STOP), invalid or unreachable numbers are permanent. Authentication failures are transient too: a
wrong token must delay messages until someone fixes it, never mark 300,000 of them failed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from comms.channels.base import Channel, Message, SendResult
from comms.channels.ratelimit import RateLimiter
from comms.errors import PermanentDeliveryError, TransientDeliveryError
from comms.privacy import mask_phone

log = logging.getLogger("comms.channels.twilio")

#: Twilio error codes that will not change by retrying
PERMANENT_CODES = {
    21610: "recipient opted out (replied STOP)",
    21211: "invalid 'To' phone number",
    21214: "'To' number cannot be reached",
    21408: "permission to send to this region is not enabled",
    21612: "cannot route to this number",
    21614: "'To' number is not a mobile number",
    30003: "unreachable destination handset",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
}
OPTED_OUT = 21610


def sms_params(
    m: Message, *, messaging_service_sid: str | None, from_: str | None, status_callback: str | None
) -> dict[str, Any]:
    """The arguments of one `client.messages.create` call (pinned by a test)."""
    params: dict[str, Any] = {"to": m.to, "body": m.body["txt"].strip()}
    if messaging_service_sid:
        params["messaging_service_sid"] = messaging_service_sid
    else:
        params["from_"] = from_
    if status_callback:
        params["status_callback"] = f"{status_callback}?ledger_key={m.key}"
    return params


def classify(status: int, code: int | None, msg: str, retry_after: float | None) -> Exception:
    if status == 429 or status >= 500:
        return TransientDeliveryError(f"Twilio HTTP {status}: {msg}", str(code or status), retry_after)
    if status in (401, 403, 404):
        # wrong account, token or API URL: a configuration fault to fix, not a reason to drop the messages
        return TransientDeliveryError(
            f"Twilio refused the request (HTTP {status}): check TWILIO_ACCOUNT_SID, "
            "TWILIO_AUTH_TOKEN and COMMS_TWILIO_API_URL",
            str(code or status),
            60.0,
        )
    if code in PERMANENT_CODES:
        return PermanentDeliveryError(PERMANENT_CODES[code], str(code))
    return PermanentDeliveryError(f"Twilio HTTP {status} code {code}: {msg}", str(code or status))


class TwilioSmsChannel(Channel):
    transient_errors = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, TwilioException)

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        messaging_service_sid: str | None = None,
        from_: str | None = None,
        api_url: str | None = None,
        status_callback: str | None = None,
        rate: float = 100.0,
        concurrency: int = 16,
        timeout: float = 10.0,
    ) -> None:
        if not (messaging_service_sid or from_):
            raise ValueError("set TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM")
        self.account_sid, self.auth_token = account_sid, auth_token
        self.sender = {"messaging_service_sid": messaging_service_sid, "from_": from_}
        self.api_url, self.status_callback, self.timeout = api_url, status_callback, timeout
        self.limiter = RateLimiter(rate)
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="twilio")
        self._local = threading.local()

    def _client(self) -> Client:
        c = getattr(self._local, "client", None)
        if c is None:
            # a `requests` response hook: the SDK's exception does not carry the Retry-After header
            http = TwilioHttpClient(timeout=self.timeout, request_hooks={"response": [self._note_retry_after]})
            c = Client(self.account_sid, self.auth_token, http_client=http)
            if self.api_url:
                c.api.base_url = self.api_url.rstrip("/")
            self._local.client = c
        return c

    def _note_retry_after(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        value = response.headers.get("Retry-After")
        try:
            self._local.retry_after = float(value) if value else None
        except ValueError:
            self._local.retry_after = None

    def _send_one(self, m: Message) -> SendResult:
        self.limiter.acquire()
        client = self._client()
        try:
            msg = client.messages.create(**sms_params(m, status_callback=self.status_callback, **self.sender))
            return SendResult(m.key, provider_id=msg.sid)
        except TwilioRestException as exc:
            err = classify(exc.status, exc.code, exc.msg, getattr(self._local, "retry_after", None))
            return SendResult(m.key, error=err)  # type: ignore[arg-type]
        except self.transient_errors as exc:
            return SendResult(m.key, error=TransientDeliveryError(f"Twilio unreachable: {exc.__class__.__name__}"))

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        return list(self.pool.map(self._send_one, messages))

    def _find(self, m: Message) -> SendResult | None:
        body = m.body["txt"].strip()
        try:
            for sent in self._client().messages.list(to=m.to, limit=200):
                if (sent.body or "").strip() == body:
                    return SendResult(m.key, provider_id=sent.sid)
        except (TwilioRestException, *self.transient_errors) as exc:
            raise TransientDeliveryError(f"cannot check Twilio for an earlier send: {exc}") from exc
        return None

    def reconcile(self, messages: Sequence[Message]) -> list[SendResult | None]:
        """For rows a crash left in `sending`: the earlier send if Twilio has it (same number, same body)."""
        found = list(self.pool.map(self._find, messages))
        for m, f in zip(messages, found, strict=True):
            log.info("reconciled %s with Twilio: %s", mask_phone(m.to), "already sent" if f else "not sent, resending")
        return found

    def close(self) -> None:
        self.pool.shutdown(wait=True)
