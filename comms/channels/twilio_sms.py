"""SMS through Twilio's Messages API (comms/channels/twilio_api.py: the client they share).

21610 (the recipient replied STOP), invalid or unreachable numbers are permanent. An SMS over
district.sms_max_segments is refused before it is sent (`refuse`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twilio.base.exceptions import TwilioRestException

from comms.channels.base import Channel, Message, SendResult, configured
from comms.channels.segments import sms_size
from comms.channels.twilio_api import TWILIO_VARS, TwilioChannel
from comms.channels.twilio_api import status_callback as twilio_callback
from comms.errors import TransientDeliveryError

if TYPE_CHECKING:
    from comms.config import District
    from comms.render import Rendered

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
    return {**params, **twilio_callback(status_callback, m.key)}


class TwilioSmsChannel(TwilioChannel):
    name = "sms"
    consumer = "sms"
    consent = "sms"
    parts = ("txt",)
    brief = True
    verify_line = True
    quiet_hours = True
    daily_cap = True
    unit = "segment"
    permanent_codes = PERMANENT_CODES
    opted_out_codes = frozenset({str(OPTED_OUT)})

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
        self.sender = {"messaging_service_sid": messaging_service_sid, "from_": from_}
        self.status_callback = status_callback
        super().__init__(account_sid, auth_token, api_url=api_url, rate=rate, concurrency=concurrency, timeout=timeout)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], out: Path) -> Channel:
        if not configured(environ, TWILIO_VARS, ("TWILIO_MESSAGING_SERVICE_SID", "TWILIO_FROM")):
            return super().from_env(environ, out)
        return cls(
            account_sid=environ["TWILIO_ACCOUNT_SID"],
            auth_token=environ["TWILIO_AUTH_TOKEN"],
            messaging_service_sid=environ.get("TWILIO_MESSAGING_SERVICE_SID") or None,
            from_=environ.get("TWILIO_FROM") or None,
            api_url=environ.get("COMMS_TWILIO_API_URL") or None,
            status_callback=environ.get("COMMS_TWILIO_STATUS_CALLBACK") or None,
            rate=float(environ.get("COMMS_SMS_RATE", "100")),
            concurrency=int(environ.get("COMMS_SMS_CONCURRENCY", "16")),
        )

    @classmethod
    def refuse(cls, rendered: Rendered, district: District) -> str | None:
        """An SMS over district.sms_max_segments is never sent: a mass text over it holds the whole
        event, a personal one fails for that family with the reason in the ledger."""
        size = sms_size(rendered.parts["txt"].strip())
        limit = district.sms_max_segments
        return f"sms_too_long: {size}, more than district.sms_max_segments ({limit})" if size.segments > limit else None

    @classmethod
    def units(cls, parts: Mapping[str, str]) -> int:
        return sms_size(parts["txt"].strip()).segments

    @classmethod
    def size(cls, text: str) -> str | None:
        return f"{len(text.strip())} characters, {sms_size(text.strip())}"

    async def _create(self, m: Message) -> str:
        msg = await self.client.messages.create_async(
            **sms_params(m, status_callback=self.status_callback, **self.sender)
        )
        return str(msg.sid)

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


__all__ = ["OPTED_OUT", "PERMANENT_CODES", "TwilioSmsChannel", "sms_params"]
