"""Voice calls, the channel added after the refactor as its first user: Twilio's Voice API through the
official SDK, at a local server that speaks `POST /2010-04-01/Accounts/{sid}/Calls.json`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

from comms.app import App, Env
from comms.channels import Message
from comms.channels.twilio_voice import TwilioVoiceChannel, call_params
from comms.dev.servers import FakeSendGrid, FakeTwilio
from comms.roster import FIXTURE
from comms.worker import run
from tests.conftest import MIAMI, NOON, SWITCH, UNGATED, Clock, provider_env

CALLER_ID = "+13055550000"


def voice_env(env: Env, tmp_path: Path, *, priority: str | None = None, audio: dict[str, str] | None = None) -> Env:
    """The repo's campaigns with changes for the test, and the fixture roster with voice consent for all."""
    config = yaml.safe_load(UNGATED.read_text("utf-8"))
    switch = config["campaigns"]["platform-switch"]
    if priority:
        switch["priority"] = priority
    if audio:
        switch["channels"]["voice"]["audio"] = audio
    (tmp_path / "campaigns.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), "utf-8")
    roster = json.loads(FIXTURE.read_text("utf-8"))
    for g in roster["guardians"]:
        g["voice_consent"] = True
    (tmp_path / "roster.json").write_text(json.dumps(roster), "utf-8")
    return dataclasses.replace(env, config=tmp_path / "campaigns.yaml", roster=tmp_path / "roster.json")


def call(env: Env, tw: FakeTwilio, sg: FakeSendGrid, clock: Clock, events: list[bytes]) -> App:
    app = App.open(env, clock=clock, environ={**provider_env(tw, sg), "COMMS_VOICE_FROM": CALLER_ID})
    app.bus.publish_many(env.topic, [(None, e) for e in events])
    workers = app.workers(["voice"])
    run(workers, until_idle=True)
    for w in workers:
        w.close()
    return app


def spoken(twiml: str) -> list[tuple[str, dict[str, str], str]]:
    return [(el.tag, el.attrib, el.text or "") for el in ET.fromstring(twiml)]


def test_calls_read_the_message_in_the_familys_language_and_creole_without_a_recording_is_held(
    env: Env, tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    tw, sg = providers
    app = call(voice_env(env, tmp_path), tw, sg, Clock(NOON), [SWITCH])
    details = {
        (d.state, d.detail): d.messages for d in app.pipeline.ledger.details("platform-switch") if d.channel == "voice"
    }
    app.close()
    by_to = {c["to"]: c for c in tw.calls}
    # grades 6-12: G01 and G05 read Spanish, G02 English; G07 asked for no contact
    assert set(by_to) == {"+13055550101", "+13055550102", "+13055550105"}
    (tag, attrib, text), *_ = spoken(by_to["+13055550102"]["twiml"])
    assert tag == "Say" and attrib == {"language": "en-US"} and "Microsoft Teams" in text and "September 3" in text
    (tag, attrib, text), *_ = spoken(by_to["+13055550101"]["twiml"])
    assert tag == "Say" and attrib == {"language": "es-US"} and "a partir del" in text.lower()
    assert all(c["from"] == CALLER_ID and c["machine_detection"] is None for c in tw.calls)  # AMD off by default
    # three Creole-speaking guardians: no voice at Twilio, no recording configured
    assert details[("suppressed", "no_voice: Twilio has no text-to-speech voice for 'ht' and "
                    "channels.voice.audio.ht is not set")] == 3  # fmt: skip
    assert details[("suppressed", "no_contact")] == 1


def test_creole_plays_the_campaigns_recording(
    env: Env, tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    tw, sg = providers
    recording = "https://dadeschools.example/audio/platform-switch.ht.mp3"
    call(voice_env(env, tmp_path, audio={"ht": recording}), tw, sg, Clock(NOON), [SWITCH]).close()
    plays = [spoken(c["twiml"]) for c in tw.calls if c["to"] in ("+13055550103", "+13055550104", "+13055550108")]
    assert plays == [[("Play", {}, recording)]] * 3


def test_no_call_in_quiet_hours_unless_emergency_then_released_in_the_morning(
    env: Env, tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    tw, sg = providers
    venv = voice_env(env, tmp_path, priority="normal")
    night = Clock(dt.datetime(2020, 9, 2, 3, 0, tzinfo=MIAMI))
    app = call(venv, tw, sg, night, [SWITCH])
    app.close()
    assert tw.calls == []
    night.now = dt.datetime(2020, 9, 2, 8, 1, tzinfo=MIAMI)
    app = call(venv, tw, sg, night, [])
    app.close()
    assert len(tw.calls) == 3


def test_an_emergency_calls_in_quiet_hours(
    env: Env, tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    tw, sg = providers
    night = Clock(dt.datetime(2020, 9, 2, 3, 0, tzinfo=MIAMI))
    call(voice_env(env, tmp_path, priority="emergency"), tw, sg, night, [SWITCH]).close()
    assert len(tw.calls) == 3


def test_call_params_write_twiml_with_its_emitter() -> None:
    hostile = "Teams</Say><Dial>+18005550199</Dial><Say>"
    m = Message(key="k", channel="voice", campaign="c", event_uid="e", lang="en", to="+13055550102",
                body={"txt": hostile}, meta={"machine_detection": "on"})  # fmt: skip
    params: dict[str, Any] = call_params(m, from_=CALLER_ID, status_callback="https://comms.example/cb")
    assert spoken(params["twiml"]) == [("Say", {"language": "en-US"}, hostile)]  # text, not verbs
    assert params["machine_detection"] == "Enable"
    assert params["status_callback"] == "https://comms.example/cb?ledger_key=k"
    assert TwilioVoiceChannel.held("ht", TwilioVoiceChannel.options(template="x")) is not None
    assert TwilioVoiceChannel.held("es", TwilioVoiceChannel.options(template="x")) is None
