"""SMS through Twilio's Messages API with the official `twilio` SDK, on its asyncio client.

Sends concurrently under a messages-per-second limit. The SDK's async client (aiohttp) runs on one
event loop in a background thread: a district-wide fan-out is hundreds of thousands of small
requests, and the async client costs about a third of the CPU per call of the threaded `requests`
client (bench/README.md), which is what bounds the SMS rate on a 2-core host.

429 and 5xx are transient (Retry-After honoured by the worker's pause); 21610 (the recipient replied
STOP), invalid or unreachable numbers are permanent. Authentication failures are transient too: a
wrong token must delay messages until someone fixes it, never mark 300,000 of them failed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from comms.channels.base import Channel, Message, SendResult, retry_after
from comms.channels.ratelimit import RateLimiter
from comms.errors import PermanentDeliveryError, TransientDeliveryError
from comms.privacy import quiet_sdk_loggers, scrub

log = logging.getLogger("comms.channels.twilio")
T = TypeVar("T")

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

# The Retry-After of the last answer in this task: the SDK's exception does not carry headers.
_retry_after: contextvars.ContextVar[float | None] = contextvars.ContextVar("twilio_retry_after", default=None)


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
    msg = scrub(msg or "")  # Twilio's texts quote the number (21211, 21266): never kept or logged whole
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


class _HttpClient(AsyncTwilioHttpClient):
    """The SDK's aiohttp client, with a total timeout per request and the Retry-After header noted."""

    def __init__(self, timeout: float) -> None:
        super().__init__(pool_connections=False)  # its own session has no timeout: ours does
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))

    async def request(self, *args: Any, **kwargs: Any) -> Response:
        response = await super().request(*args, **kwargs)
        _retry_after.set(retry_after(response.headers))
        return response


class TwilioSmsChannel(Channel):
    transient_errors = (aiohttp.ClientError, asyncio.TimeoutError, TwilioException)

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
        quiet_sdk_loggers()
        self.sender = {"messaging_service_sid": messaging_service_sid, "from_": from_}
        self.status_callback = status_callback
        self.limiter = RateLimiter(rate)
        self.concurrency = max(1, concurrency)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="twilio", daemon=True)
        self._thread.start()
        self.client: Client = self._run(self._make_client(account_sid, auth_token, api_url, timeout))

    @staticmethod
    async def _make_client(sid: str, token: str, api_url: str | None, timeout: float) -> Client:
        # aiohttp sessions belong to the loop they are made on
        client = Client(sid, token, http_client=_HttpClient(timeout))
        if api_url:
            client.api.base_url = api_url.rstrip("/")
        return client

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _each(self, messages: Sequence[Message], fn: Any) -> list[Any]:
        """fn(m) for every message, `concurrency` at a time, results in order."""
        results: list[Any] = [None] * len(messages)
        todo: Iterator[int] = iter(range(len(messages)))

        async def lane() -> None:
            for i in todo:  # the lanes share one iterator: each index is taken once
                results[i] = await fn(messages[i])

        # a TaskGroup, not gather: an error cancels the other lanes instead of leaving them sending
        # after send() has already failed; the caller gets the error itself, not a group
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(self.concurrency, len(messages))):
                    tg.create_task(lane())
        except ExceptionGroup as group:
            raise group.exceptions[0] from None
        return results

    async def _send_one(self, m: Message) -> SendResult:
        await self.limiter.acquire()
        try:
            msg = await self.client.messages.create_async(
                **sms_params(m, status_callback=self.status_callback, **self.sender)
            )
            return SendResult(m.key, provider_id=msg.sid)
        except TwilioRestException as exc:
            err = classify(exc.status, exc.code, exc.msg, _retry_after.get())
            return SendResult(m.key, error=err)  # type: ignore[arg-type]
        except self.transient_errors as exc:
            return SendResult(m.key, error=TransientDeliveryError(f"Twilio unreachable: {exc.__class__.__name__}"))

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        return self._run(self._each(messages, self._send_one)) if messages else []

    async def _find(self, m: Message) -> SendResult | None:
        body = m.body["txt"].strip()
        try:
            for sent in await self.client.messages.list_async(to=m.to, limit=200):
                if (sent.body or "").strip() == body:
                    return SendResult(m.key, provider_id=sent.sid)
        except (TwilioRestException, *self.transient_errors) as exc:
            raise TransientDeliveryError(f"cannot check Twilio for an earlier send: {exc}") from exc
        return None

    def reconcile(self, messages: Sequence[Message]) -> list[SendResult | None]:
        """For rows a crash left in `sending`: the earlier send if Twilio has it (same number, same body)."""
        found = self._run(self._each(messages, self._find)) if messages else []
        log.info("reconciled %d SMS with Twilio: %d already sent", len(messages), sum(f is not None for f in found))
        return found

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.client.http_client.close())  # type: ignore[attr-defined]
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
