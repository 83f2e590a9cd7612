"""Twilio and SendGrid channels: payloads pinned, the official SDKs against local servers of their APIs."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import pytest

from comms.channels.base import Message
from comms.channels.segments import sms_size
from comms.channels.sendgrid_email import SendGridEmailChannel, activity_query, mail_payload
from comms.channels.twilio_sms import TwilioSmsChannel, sms_params
from comms.dev.servers import FakeSendGrid, FakeTwilio
from comms.errors import PermanentDeliveryError, TransientDeliveryError

SID, TOKEN, MG = "AC" + "1" * 32, "token", "MG" + "2" * 32


def sms(i: int, to: str | None = None, body: str = "M-DCPS: hello") -> Message:
    return Message(
        key=f"key{i}",
        channel="sms",
        campaign="meal-schedule",
        event_uid="src#id",
        lang="es",
        to=to or f"+1786{i:07d}",
        body={"txt": body + "\n"},
    )


def email(i: int, subject: str = "Comidas gratis") -> Message:
    return Message(
        key=f"key{i}",
        channel="email",
        campaign="meal-schedule",
        event_uid="src#id",
        lang="es",
        to=f"p{i}@example.org",
        body={"txt": "texto", "html": "<p>texto</p>"},
        subject=subject,
        meta={"unsubscribe_group": "42"},
    )


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as fake:
        yield fake


def test_sms_params_are_pinned() -> None:
    assert sms_params(sms(1), messaging_service_sid=MG, from_=None, status_callback="https://cb.example/sms") == {
        "to": "+17860000001",
        "body": "M-DCPS: hello",
        "messaging_service_sid": MG,
        "status_callback": "https://cb.example/sms?ledger_key=key1",
    }
    assert sms_params(sms(1), messaging_service_sid=None, from_="+13055550000", status_callback=None) == {
        "to": "+17860000001",
        "body": "M-DCPS: hello",
        "from_": "+13055550000",
    }


def test_mail_payload_is_pinned() -> None:
    p = mail_payload([email(1), email(2)], sender="news@dadeschools.net", sender_name="M-DCPS")
    assert p == {
        "personalizations": [
            {"to": [{"email": "p1@example.org"}], "custom_args": {"ledger_key": "key1", "campaign": "meal-schedule"}},
            {"to": [{"email": "p2@example.org"}], "custom_args": {"ledger_key": "key2", "campaign": "meal-schedule"}},
        ],
        "from": {"email": "news@dadeschools.net", "name": "M-DCPS"},
        "subject": "Comidas gratis",
        "content": [{"type": "text/plain", "value": "texto"}, {"type": "text/html", "value": "<p>texto</p>"}],
        "categories": ["district-comms", "meal-schedule"],
        "custom_args": {"event": "src#id", "language": "es"},
        "asm": {"group_id": 42},
    }
    with pytest.raises(ValueError, match="1000 at most"):
        mail_payload([email(i) for i in range(1001)], sender="x@example.org")
    stamped = dataclasses.replace(email(1), meta={"request": "r1"})
    assert mail_payload([stamped], sender="x@example.org")["custom_args"] == {
        "event": "src#id",
        "language": "es",
        "request": "r1",
    }


def test_activity_query_is_pinned() -> None:
    assert activity_query("ab12") == {"limit": 1000, "query": "unique_args['request']=\"ab12\""}


def test_twilio_one_result_per_message_with_typed_errors(twilio: FakeTwilio) -> None:
    twilio.opted_out.add("+17860000002")
    twilio.invalid.add("+17860000003")
    ch = TwilioSmsChannel(SID, TOKEN, messaging_service_sid=MG, api_url=twilio.url, rate=0)
    results = ch.send([sms(1), sms(2), sms(3), sms(4)])
    ch.close()
    assert [r.key for r in results] == ["key1", "key2", "key3", "key4"]
    assert results[0].provider_id.startswith("SM") and results[3].ok
    assert isinstance(results[1].error, PermanentDeliveryError) and results[1].error.code == "21610"
    assert isinstance(results[2].error, PermanentDeliveryError) and results[2].error.code == "21211"
    assert [m["body"] for m in twilio.messages] == ["M-DCPS: hello"] * 2
    assert {m["messaging_service_sid"] for m in twilio.messages} == {MG}


def test_twilio_429_is_transient_with_retry_after(twilio: FakeTwilio) -> None:
    twilio.faults.fail_rate = 1.0
    ch = TwilioSmsChannel(SID, TOKEN, from_="+13055550000", api_url=twilio.url, rate=0)
    errors = [r.error for r in ch.send([sms(i) for i in range(20)])]
    ch.close()
    assert all(isinstance(e, TransientDeliveryError) for e in errors)
    assert any(e.retry_after == 0.05 for e in errors) and any(e.code == "20500" for e in errors)


def test_twilio_wrong_url_or_account_delays_instead_of_failing(twilio: FakeTwilio) -> None:
    ch = TwilioSmsChannel(SID, TOKEN, from_="+13055550000", api_url=twilio.url + "/nowhere", rate=0)
    (r,) = ch.send([sms(1)])
    ch.close()
    assert isinstance(r.error, TransientDeliveryError) and "COMMS_TWILIO_API_URL" in str(r.error)


def test_twilio_reconcile_finds_an_earlier_send(twilio: FakeTwilio) -> None:
    ch = TwilioSmsChannel(SID, TOKEN, messaging_service_sid=MG, api_url=twilio.url, rate=0)
    (sent,) = ch.send([sms(1)])
    found = ch.reconcile([sms(1), sms(2), sms(1, body="another text")])
    ch.close()
    assert found[0] is not None and found[0].provider_id == sent.provider_id
    assert found[1] is None and found[2] is None


def test_twilio_reconcile_during_an_outage_is_transient(twilio: FakeTwilio) -> None:
    ch = TwilioSmsChannel(SID, TOKEN, messaging_service_sid=MG, api_url=twilio.url, rate=0)
    twilio.faults.fail_rate = 1.0
    with pytest.raises(TransientDeliveryError, match="earlier send"):
        ch.reconcile([sms(i) for i in range(40)])
    ch.close()


def test_twilio_rate_limit(twilio: FakeTwilio) -> None:
    import time

    ch = TwilioSmsChannel(SID, TOKEN, messaging_service_sid=MG, api_url=twilio.url, rate=50, concurrency=8)
    t = time.perf_counter()
    ch.send([sms(i) for i in range(26)])
    elapsed = time.perf_counter() - t
    ch.close()
    assert elapsed >= 0.48  # 26 messages at 50/s: the last may start 0.5 s after the first


def test_sendgrid_batches_by_content_and_caps_at_1000(sendgrid: FakeSendGrid) -> None:
    ch = SendGridEmailChannel("SG.key", "news@dadeschools.net", api_url=sendgrid.url)
    msgs = [email(i) for i in range(2300)] + [email(9000 + i, subject="Otro asunto") for i in range(3)]
    results = ch.send(msgs)
    assert [r.key for r in results] == [m.key for m in msgs] and all(r.ok for r in results)
    assert sorted(sendgrid.batches) == [3, 300, 1000, 1000]
    assert sendgrid.per_recipient().most_common(1)[0][1] == 1
    assert sendgrid.deliveries[0]["asm"] == {"group_id": 42}
    assert sendgrid.deliveries[0]["custom_args"] == {"ledger_key": "key0", "campaign": "meal-schedule"}


def test_sendgrid_prepare_stamps_one_request_id_per_request(sendgrid: FakeSendGrid) -> None:
    ch = SendGridEmailChannel("SG.key", "news@dadeschools.net", api_url=sendgrid.url, batch_size=100)
    msgs = ch.prepare([email(i) for i in range(250)] + [email(900, subject="Otro asunto")])
    ids = [m.meta["request"] for m in msgs]
    assert len(set(ids[:100])) == len(set(ids[100:200])) == len(set(ids[200:250])) == 1
    assert len(set(ids)) == 4 and msgs[0].meta["unsubscribe_group"] == "42"
    assert ch.prepare(msgs) == msgs  # stamped once: a retry keeps its request id
    ch.send(msgs)
    assert sorted(sendgrid.batches) == [1, 50, 100, 100]


def test_sendgrid_reconcile_finds_the_requests_it_accepted(sendgrid: FakeSendGrid) -> None:
    ch = SendGridEmailChannel("SG.key", "news@dadeschools.net", api_url=sendgrid.url, batch_size=10)
    msgs = ch.prepare([email(i) for i in range(30)])
    ch.send(msgs[:20])  # a crash after two requests of three
    found = ch.reconcile(msgs)
    assert all(f is not None and f.provider_id for f in found[:20]) and found[20:] == [None] * 10
    assert [f.key for f in found[:20] if f] == [m.key for m in msgs[:20]]


def test_sendgrid_reconcile_without_the_activity_addon_resends(
    sendgrid: FakeSendGrid, caplog: pytest.LogCaptureFixture
) -> None:
    sendgrid.activity = False
    ch = SendGridEmailChannel("SG.key", "news@dadeschools.net", api_url=sendgrid.url)
    msgs = ch.prepare([email(i) for i in range(3)])
    ch.send(msgs)
    with caplog.at_level(logging.WARNING):
        assert ch.reconcile(msgs) == [None] * 3
    assert "may arrive twice" in caplog.text


def test_sendgrid_reconcile_outage_is_transient(sendgrid: FakeSendGrid) -> None:
    ch = SendGridEmailChannel("SG.key", "news@dadeschools.net", api_url=sendgrid.url)
    msgs = ch.prepare([email(1)])
    sendgrid.faults.fail_rate = 1.0
    with pytest.raises(TransientDeliveryError, match="earlier send"):
        ch.reconcile(msgs)


def test_sendgrid_errors_are_typed(sendgrid: FakeSendGrid) -> None:
    sendgrid.faults.fail_rate = 1.0
    ch = SendGridEmailChannel("SG.key", "news@dadeschools.net", api_url=sendgrid.url)
    errs = {type(r.error) for r in ch.send([email(1)])}
    assert errs == {TransientDeliveryError}
    sendgrid.faults.fail_rate = 0.0
    bad = SendGridEmailChannel("SG.key", "", api_url=sendgrid.url)  # the server refuses an empty sender
    (r,) = bad.send([email(1)])
    assert isinstance(r.error, PermanentDeliveryError) and r.error.code == "400"


def test_sms_size() -> None:
    assert str(sms_size("a" * 160)) == "1 segment(s), GSM-7, 160 units"
    assert sms_size("a" * 161).segments == 2
    assert sms_size("€" * 80).units == 160  # extension characters cost two septets
    s = sms_size("Responda STOP para no recibir más mensajes.")
    assert s.encoding == "UCS-2" and s.culprits == "á"
    assert sms_size("Reponn STOP pou pa resevwa mesaj ankò.").encoding == "GSM-7"
