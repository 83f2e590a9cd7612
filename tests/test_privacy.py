"""Logs never print a full phone number, an e-mail address or a student's name."""

from __future__ import annotations

import json
import logging

import pytest

from comms.app import App
from comms.dev.demo import demo_events, sample_events
from comms.privacy import mask_email, mask_phone
from comms.worker import run


def test_masks() -> None:
    assert mask_phone("+13055550101") == "+1******0101"
    assert mask_email("maria.g01@example.org") == "m***@e***.org"


def test_pipeline_logs_hold_no_personal_data(app: App, caplog: pytest.LogCaptureFixture) -> None:
    hostile = json.loads(sample_events()[-1])
    hostile["data"]["student_id"] = "S9999"  # dead-lettered: its reason is logged
    app.bus.publish_many(app.env.topic, [(None, r) for r in demo_events()] + [(None, json.dumps(hostile).encode())])
    with caplog.at_level(logging.DEBUG):
        workers = app.workers()
        run(workers, until_idle=True)
        for w in workers:
            w.close()
    text = caplog.text
    assert "dead-lettered" in text  # the test saw real log lines
    roster = app.pipeline.roster
    for g in roster.guardians.values():
        for secret in (g.phone, g.email, g.first_name):
            assert not secret or secret not in text
    for s in roster.students.values():
        assert s.first_name not in text


def test_provider_sdks_log_no_numbers_addresses_or_keys(caplog: pytest.LogCaptureFixture) -> None:
    """twilio logs request URLs at INFO (a lookup's has the number); sendgrid's client logs payloads
    and headers at DEBUG. Neither reaches our logs, even at DEBUG."""
    from comms.channels.base import Message
    from comms.channels.sendgrid_email import SendGridEmailChannel
    from comms.channels.twilio_sms import TwilioSmsChannel
    from comms.dev.servers import FakeSendGrid, FakeTwilio

    sms = Message(
        key="k1", channel="sms", campaign="c", event_uid="e", lang="en", to="+17865550123", body={"txt": "hello"}
    )
    mail = Message(
        key="k2",
        channel="email",
        campaign="c",
        event_uid="e",
        lang="en",
        to="maria@example.org",
        body={"txt": "t", "html": "h"},
        subject="S",
    )
    with FakeTwilio() as tw, FakeSendGrid() as sg, caplog.at_level(logging.DEBUG):
        ch = TwilioSmsChannel("AC" + "1" * 32, "token", from_="+13055550000", api_url=tw.url, rate=0)
        ch.send([sms])
        ch.reconcile([sms])  # GET ...?To=+17865550123
        ch.close()
        em = SendGridEmailChannel("SG.secret-key", "news@dadeschools.net", api_url=sg.url)
        em.reconcile(em.prepare([mail]))
        em.send([mail])
    assert "reconciled" in caplog.text  # the test saw real log lines
    for secret in ("17865550123", "maria@example.org", "secret-key"):
        assert secret not in caplog.text
