"""What Twilio's channels share: the official `twilio` SDK on its asyncio client, in one background
event loop, sending concurrently under a requests-per-second limit.

The SDK's async client (aiohttp) costs about a third of the CPU per call of the threaded `requests`
client (bench/README.md), which is what bounds the send rate on a 2-core host. 429 and 5xx are
transient (Retry-After honoured by the worker's pause); authentication failures are transient too: a
wrong token must delay messages until someone fixes it, never mark 300,000 of them failed. The
error codes that will not change by retrying are declared by each channel (`permanent_codes`).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from comms.addresses import phone_key
from comms.channels.base import Budget, Channel, Message, SendResult, retry_after
from comms.channels.ratelimit import RateLimiter, SharedRateLimiter
from comms.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from comms.privacy import quiet_sdk_loggers, scrub

T = TypeVar("T")
R = TypeVar("R")
TWILIO_VARS = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")

# The Retry-After of the last answer in this task: the SDK's exception does not carry headers.
_retry_after: contextvars.ContextVar[float | None] = contextvars.ContextVar("twilio_retry_after", default=None)


def classify(
    status: int, code: int | None, msg: str, retry_after: float | None, permanent: Mapping[int, str]
) -> DeliveryError:
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
    if code is not None and code in permanent:
        return PermanentDeliveryError(permanent[code], str(code))
    return PermanentDeliveryError(f"Twilio HTTP {status} code {code}: {msg}", str(code or status))


def status_callback(url: str | None, key: str) -> dict[str, str]:
    """The StatusCallback argument of a create call: Twilio's delivery reports name the ledger row
    they are about, so they are matched by key, never by content."""
    return {"status_callback": f"{url}?ledger_key={key}"} if url else {}


class _HttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # the SDK ships no type hints
    """The SDK's aiohttp client, with a total timeout per request and the Retry-After header noted."""

    def __init__(self, timeout: float) -> None:
        super().__init__(pool_connections=False)  # its own session has no timeout: ours does
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))

    async def request(self, *args: Any, **kwargs: Any) -> Response:
        response = await super().request(*args, **kwargs)
        _retry_after.set(retry_after(response.headers))
        return response


class TwilioChannel(Channel):
    """A channel on Twilio's REST API: one client on one event loop thread, `concurrency` requests
    in flight, at most `rate` per second."""

    address = "phone"
    credentials = TWILIO_VARS
    api_url_var = "COMMS_TWILIO_API_URL"
    transient_errors = (aiohttp.ClientError, asyncio.TimeoutError, TwilioException)
    #: Twilio error codes that will not change by retrying
    permanent_codes: ClassVar[Mapping[int, str]] = {}

    def __init__(
        self, account_sid: str, auth_token: str, *, api_url: str | None, rate: float, concurrency: int, timeout: float
    ) -> None:
        quiet_sdk_loggers()
        self.limiter = RateLimiter(rate)
        self.concurrency = max(1, concurrency)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"twilio-{self.name}", daemon=True)
        self._thread.start()
        self.client: Client = self._run(self._make_client(account_sid, auth_token, api_url, timeout))

    @classmethod
    def normalise(cls, address: str) -> str:
        return phone_key(address)

    def share_budget(self, take: Budget) -> None:
        rate = self.limiter.rate
        if rate > 0:  # one budget per channel (its sender): `rate` is the sender's, not each process's
            name = f"twilio:{self.name}"
            self.limiter = SharedRateLimiter(rate, lambda want: take(name, want, rate, max(1.0, rate / 10)))

    @staticmethod
    async def _make_client(sid: str, token: str, api_url: str | None, timeout: float) -> Client:
        # aiohttp sessions belong to the loop they are made on
        client = Client(sid, token, http_client=_HttpClient(timeout))
        if api_url:
            client.api.base_url = api_url.rstrip("/")
        return client

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _each(self, messages: Sequence[Message], fn: Callable[[Message], Awaitable[R]]) -> list[R]:
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

    async def _create(self, m: Message) -> str:
        """The provider call for one message: the new resource's sid."""
        raise NotImplementedError

    async def _send_one(self, m: Message) -> SendResult:
        await self.limiter.acquire()
        try:
            return SendResult(m.key, provider_id=await self._create(m))
        except TwilioRestException as exc:
            return SendResult(
                m.key, error=classify(exc.status, exc.code, exc.msg, _retry_after.get(), self.permanent_codes)
            )
        except self.transient_errors as exc:
            return SendResult(m.key, error=TransientDeliveryError(f"Twilio unreachable: {exc.__class__.__name__}"))

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        return self._run(self._each(messages, self._send_one)) if messages else []

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.client.http_client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
