"""Voice calls through Twilio's Voice API: the message is read to the family by text-to-speech in
their language (TwiML `<Say>`), or, for a language Twilio has no voice for (Haitian Creole), a
recording the district made for the campaign is played (`<Play>`, `channels.voice.audio.ht`);
without one the family is held back with that reason, which `comms report` shows.

Calls follow the SMS rules: consent (`metadata.voiceConsent` in the roster), quiet hours (never
21:00-08:00 unless emergency), the daily cap. Answering-machine detection is off unless a campaign
turns it on. A call a crash interrupted cannot be found again by its content (a call keeps no
text), so it is made again: a second call is the smaller harm than a family not called.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twilio.twiml.voice_response import VoiceResponse

from comms.channels.base import Channel, Message, Options, configured
from comms.channels.twilio_api import TWILIO_VARS, TwilioChannel
from comms.channels.twilio_api import status_callback as twilio_callback
from comms.events.models import HttpsUrl, Lang

#: Twilio's text-to-speech voices by family language; Haitian Creole has none
VOICES = {"en": "en-US", "es": "es-US"}
PERMANENT_CODES = {
    21210: "'From' number is not a verified caller id",
    21211: "invalid 'To' phone number",
    21214: "'To' number cannot be reached",
    21215: "calls to this region are not enabled",
    21216: "'To' number is blocked",
    21217: "'To' number is not a valid phone number",
}


class VoiceOptions(Options):
    audio: dict[Lang, HttpsUrl] = {}  # a recording per language without a text-to-speech voice
    machine_detection: bool = False


def call_params(m: Message, *, from_: str, status_callback: str | None) -> dict[str, Any]:
    """The arguments of one `client.calls.create` call: TwiML written by the SDK's emitter, never by
    string templating, so an event's text cannot become a TwiML verb."""
    response = VoiceResponse()
    if m.lang in VOICES:
        response.say(m.body["txt"].strip(), language=VOICES[m.lang])
    else:
        response.play(m.meta[f"audio.{m.lang}"])
    params: dict[str, Any] = {"to": m.to, "from_": from_, "twiml": str(response)}
    if m.meta.get("machine_detection"):
        params["machine_detection"] = "Enable"
    return {**params, **twilio_callback(status_callback, m.key)}


class TwilioVoiceChannel(TwilioChannel):
    name = "voice"
    consumer = "voice"
    consent = "voice"
    parts = ("txt",)
    brief = True
    spoken = True
    quiet_hours = True
    daily_cap = True
    options = VoiceOptions
    unit = "call"
    permanent_codes = PERMANENT_CODES

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        from_: str,
        api_url: str | None = None,
        status_callback: str | None = None,
        rate: float = 1.0,
        concurrency: int = 4,
        timeout: float = 10.0,
    ) -> None:
        self.from_, self.status_callback = from_, status_callback
        super().__init__(account_sid, auth_token, api_url=api_url, rate=rate, concurrency=concurrency, timeout=timeout)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], out: Path) -> Channel:
        # Voice needs its own caller id: SMS through Twilio does not turn calls on by itself
        if not environ.get("COMMS_VOICE_FROM") or not configured(environ, (*TWILIO_VARS, "COMMS_VOICE_FROM")):
            return super().from_env(environ, out)
        return cls(
            environ["TWILIO_ACCOUNT_SID"],
            environ["TWILIO_AUTH_TOKEN"],
            from_=environ["COMMS_VOICE_FROM"],
            api_url=environ.get("COMMS_TWILIO_API_URL") or None,
            status_callback=environ.get("COMMS_TWILIO_STATUS_CALLBACK") or None,
            rate=float(environ.get("COMMS_VOICE_RATE", "1")),  # Twilio's default: 1 call per second
        )

    @classmethod
    def held(cls, lang: str, options: Options) -> str | None:
        audio = options.audio if isinstance(options, VoiceOptions) else {}
        if lang in VOICES or lang in audio:
            return None
        return f"no_voice: Twilio has no text-to-speech voice for {lang!r} and channels.voice.audio.{lang} is not set"

    @classmethod
    def meta(cls, options: Options) -> dict[str, str]:
        meta = super().meta(options)
        if isinstance(options, VoiceOptions):
            meta.update({f"audio.{lang}": str(url) for lang, url in options.audio.items()})
            if options.machine_detection:
                meta["machine_detection"] = "on"
        return meta

    async def _create(self, m: Message) -> str:
        call = await self.client.calls.create_async(
            **call_params(m, from_=self.from_, status_callback=self.status_callback)
        )
        return str(call.sid)
