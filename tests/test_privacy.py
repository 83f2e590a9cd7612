"""Logs never print a full phone number, an e-mail address or a student's name."""

from __future__ import annotations

import json
import logging

import pytest

from comms.app import App
from comms.demo import demo_events, sample_events
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
