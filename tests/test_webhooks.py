"""`comms serve`: the providers' webhooks, verified, written to the bus, applied by the feedback consumer.

The service runs as its own process (`comms serve`) on 127.0.0.1; the local Twilio and SendGrid
servers call it as the providers do, signed as they sign (Twilio: HMAC-SHA1 of the URL and the sorted
params; SendGrid: ECDSA P-256 over the timestamp and the body).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from comms.app import App, Env
from comms.bus import open_bus
from comms.dev.servers import FakeSendGrid, FakeTwilio, post, twilio_post
from comms.events import make_event
from comms.feedback import Feedback
from comms.ledger import Ledger, State
from comms.unsubscribe import make_token
from comms.worker import run
from tests.conftest import MEALS, NOON, SWITCH, Clock, copies, provider_env, serving

SECRET = "unsubscribe-secret-for-tests"


class Service:
    def __init__(self, url: str, proc: subprocess.Popen[str], log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:  # noqa: S310 - loopback
            text = resp.read().decode()
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if not line.startswith("#")
        }


@pytest.fixture
def service(env: Env, providers: tuple[FakeTwilio, FakeSendGrid], tmp_path: Path) -> Iterator[Service]:
    _, sg = providers
    log = tmp_path / "serve.log"
    with serving(
        env,
        log,
        TWILIO_AUTH_TOKEN="token",
        COMMS_PUBLIC_URL="{url}",
        SENDGRID_WEBHOOK_PUBLIC_KEY=sg.public_key,
        COMMS_UNSUBSCRIBE_SECRET=SECRET,
        COMMS_WEBHOOK_MAX_BYTES="8192",
    ) as (url, proc):
        yield Service(url, proc, log)


def feedback(env: Env) -> Counter[str]:
    """Run the feedback consumer until it has applied everything on the feedback topic."""
    app = App.open(env, clock=Clock(NOON), environ={})
    workers = app.workers(["feedback"])
    run(workers, until_idle=True)
    for w in workers:
        w.close()
    app.close()
    return workers[0].stats


def deliver(env: Env, providers: tuple[FakeTwilio, FakeSendGrid], events: list[bytes], **extra: str) -> None:
    app = App.open(env, clock=Clock(NOON), environ={**provider_env(*providers), **extra})
    app.bus.publish_many(env.topic, [(None, e) for e in events])
    workers = app.workers(["sms", "email"])
    run(workers, until_idle=True)
    for w in workers:
        w.close()
    app.close()


def states(env: Env, campaign: str, channel: str) -> Counter[str]:
    ledger = Ledger(env.ledger)
    out: Counter[str] = Counter()
    for r in ledger.counts(campaign):
        if r.channel == channel:
            out[r.state] += r.messages
    ledger.close()
    return out


def feedback_records(env: Env) -> int:
    with open_bus(env.bus_url) as bus:
        return bus.lag("-", env.feedback_topic)[0]


def test_unsigned_forged_replayed_oversized_and_malformed_requests_are_refused_and_counted(
    env: Env, service: Service, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    _, sg = providers
    status = f"{service.url}/webhooks/twilio/status?ledger_key={'a' * 32}"
    params = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+13055550102"}
    form = b"MessageSid=SM1&MessageStatus=delivered&To=%2B13055550102"
    assert post(status, form, {"Content-Type": "application/x-www-form-urlencoded"})[0] == 403  # unsigned
    assert twilio_post(status, params, token="another-token")[0] == 403  # forged
    assert twilio_post(status.replace("a" * 32, "b" * 32), {**params})[0] == 204  # the real thing
    # signed for another URL: the signature covers the ledger key too
    assert twilio_post(status, {**params, "MessageStatus": "sent"})[0] == 204
    signed_other = twilio_post(f"{service.url}/webhooks/twilio/status", params)
    assert signed_other[0] == 400  # signed, but names no ledger row: malformed
    assert twilio_post(status, {**params, "Body": "x" * 9000})[0] == 413
    events = json.dumps([{"email": "a@example.org", "event": "delivered", "sg_event_id": "e1"}])
    now = int(NOON.timestamp())
    sendgrid = f"{service.url}/webhooks/sendgrid/events"
    assert post(sendgrid, events.encode(), {"Content-Type": "application/json"})[0] == 403  # unsigned
    assert FakeSendGrid().signed_post(sendgrid, events, now)[0] == 403  # another key
    assert sg.signed_post(sendgrid, events, now - 3600)[0] == 403  # replayed an hour later
    assert sg.signed_post(sendgrid, "{not json", now)[0] == 400
    assert sg.signed_post(sendgrid, events, now)[0] == 204
    m = service.metrics()
    refused = {k: v for k, v in m.items() if k.startswith("comms_webhook_refused_total")}
    assert refused == {
        'comms_webhook_refused_total{reason="unsigned",route="twilio_status"}': 1.0,
        'comms_webhook_refused_total{reason="bad signature",route="twilio_status"}': 1.0,
        'comms_webhook_refused_total{reason="malformed: data.ledger_key",route="twilio_status"}': 1.0,
        'comms_webhook_refused_total{reason="body too large",route="twilio_status"}': 1.0,
        'comms_webhook_refused_total{reason="unsigned",route="sendgrid_events"}': 1.0,
        'comms_webhook_refused_total{reason="bad signature",route="sendgrid_events"}': 1.0,
        'comms_webhook_refused_total{reason="replayed or stale timestamp",route="sendgrid_events"}': 1.0,
        'comms_webhook_refused_total{reason="malformed JSON",route="sendgrid_events"}': 1.0,
    }
    assert feedback_records(env) == 3  # only the three accepted callbacks reached the bus
    log = service.log.read_text()
    assert "refused" in log and "5550102" not in log and "a@example.org" not in log  # no number, no address


def test_delivery_receipts_twice_and_out_of_order_end_in_delivered(
    tmp_path: Path, env: Env, service: Service, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    tw, sg = providers
    deliver(env, providers, [SWITCH], COMMS_TWILIO_STATUS_CALLBACK=f"{service.url}/webhooks/twilio/status")
    sent = states(env, "platform-switch", "sms")
    assert sent == {"sent": 5, "suppressed": 2}
    n = len(tw.messages)  # the switch's 5, and the platform-unchanged notices to the Pre-K-5 families
    assert n == 5 + states(env, "platform-unchanged", "sms")["sent"]
    answers = tw.report(("sent", "delivered")) + tw.report(("delivered", "sent"))  # Twilio retries, late `sent`
    assert {a for a, _ in answers} == {204} and len(answers) == n * 4
    stats = feedback(env)
    assert stats["moved"] == n and stats["reports"] == n * 4
    assert states(env, "platform-switch", "sms") == {"delivered": 5, "suppressed": 2}
    tw.report(("undelivered",), error_code="30003")  # a delivered message is not taken back
    feedback(env)
    assert states(env, "platform-switch", "sms") == {"delivered": 5, "suppressed": 2}
    # SendGrid: delivered for all; a bounce suppresses the address for the next e-mail
    assert sg.report(f"{service.url}/webhooks/sendgrid/events", "delivered", int(NOON.timestamp()))[0] == 204
    feedback(env)
    assert states(env, "platform-switch", "email")[State.DELIVERED] == 5


def test_stop_in_each_language_stops_the_next_sms_and_help_answers_in_the_familys_language(
    env: Env, service: Service, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    tw, _ = providers
    inbound = f"{service.url}/webhooks/twilio/inbound"
    # James (en), María (es), Marie (ht) of the fixture roster
    for number, word in (("+13055550102", "STOP"), ("+13055550101", "Para"), ("+13055550103", "kanpe")):
        assert tw.text(inbound, number, word)[0] == 200
    status, twiml = tw.text(inbound, "+13055550101", "AYUDA")
    assert status == 200 and "mensajes a las familias" in twiml and "(305) 995-1000" in twiml
    assert "Responda STOP" in tw.text(inbound, "+13055550103", "èd")[1].replace("Reponn", "Responda")
    assert tw.text(inbound, "+13055550106", "Is school open tomorrow?")[0] == 200
    stats = feedback(env)
    assert stats["reply_stop"] == 3 and stats["reply_help"] == 2 and stats["reply_words"] == 1
    deliver(env, providers, [MEALS])
    texted = {m["to"] for m in tw.messages}
    assert not {"+13055550102", "+13055550101", "+13055550103"} & texted and "+13055550106" in texted
    ledger = Ledger(env.ledger)
    why = {d.detail: d.messages for d in ledger.details("meal-schedule") if d.channel == "sms"}
    assert why["opted_out: opted_out: replied STOP"] == 3
    assert [r[2] for r in ledger.replies()] == ["Is school open tomorrow?"]  # kept for the office
    ledger.close()


def test_start_lifts_a_stop(env: Env, service: Service, providers: tuple[FakeTwilio, FakeSendGrid]) -> None:
    tw, _ = providers
    inbound = f"{service.url}/webhooks/twilio/inbound"
    tw.text(inbound, "+13055550102", "STOP")
    feedback(env)
    tw.text(inbound, "+13055550102", "START")
    feedback(env)
    deliver(env, providers, [MEALS])
    assert "+13055550102" in {m["to"] for m in tw.messages}


def test_one_click_unsubscribe_stops_bulk_email_but_not_an_emergency(
    env: Env, service: Service, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    _, sg = providers
    one_click = {"COMMS_PUBLIC_URL": service.url, "COMMS_UNSUBSCRIBE_SECRET": SECRET}
    deliver(env, providers, [MEALS], **one_click)
    headers = {d["to"]: d["headers"] for d in sg.deliveries}
    link = headers["james.g02@example.org"]["List-Unsubscribe"]
    assert headers["james.g02@example.org"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = link.strip("<>")
    forged = url[: url.index("token=") + 6] + make_token("not-the-secret", "james.g02@example.org", NOON.timestamp())
    one_click_body = b"List-Unsubscribe=One-Click"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert post(forged, one_click_body, form)[0] == 403
    assert urllib.request.urlopen(url, timeout=5).status == 200  # noqa: S310 - GET only asks
    feedback(env)
    assert feedback_records(env) == 0  # a GET (a link scanner) changed nothing
    assert post(url, one_click_body, form)[0] == 200
    feedback(env)
    sg.deliveries.clear()
    meals_again = MEALS.replace(b'"meals-2020-09-01"', b'"meals-2020-09-01-b"')
    deliver(env, providers, [meals_again, SWITCH], **one_click)
    to = Counter(d["to"] for d in sg.deliveries)
    assert to["james.g02@example.org"] == 1  # the emergency platform switch only
    assert all(not d["headers"] for d in sg.deliveries if d["custom_args"]["campaign"] == "platform-switch")


def test_kill_9_under_callback_load_loses_nothing_it_acknowledged(env: Env, service: Service) -> None:
    import hashlib
    import signal
    import threading

    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(lane: int) -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            key = hashlib.sha256(f"{lane}/{i}".encode()).hexdigest()[:32]
            url = f"{service.url}/webhooks/twilio/status?ledger_key={key}"
            try:
                status, _ = twilio_post(url, {"MessageSid": f"SM{key}", "MessageStatus": "delivered"})
            except OSError:
                return  # the service is gone
            if status == 204:
                with lock:
                    acknowledged.append(key)

    lanes = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for t in lanes:
        t.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 300:
        assert time.monotonic() < deadline, service.log.read_text()
        time.sleep(0.01)
    service.proc.send_signal(signal.SIGKILL)  # mid-load: requests in flight, a group commit perhaps too
    service.proc.wait()
    stop.set()
    for t in lanes:
        t.join(timeout=30)
    with open_bus(env.bus_url) as bus, bus.consumer("inspect", [env.feedback_topic]) as c:
        on_bus = set()
        while batch := c.poll(max_records=1000, timeout=0.5):
            on_bus |= {json.loads(r.value)["data"]["ledger_key"] for r in batch}
    assert len(acknowledged) >= 300 and set(acknowledged) <= on_bus


def test_producers_publish_cloudevents_over_http_in_all_three_modes(env: Env, service: Service) -> None:
    from cloudevents.v1.conversion import to_binary, to_structured
    from cloudevents.v1.http import CloudEvent

    from comms.producers import Producers

    producers = Producers(env.ledger.with_name("producers.db"))
    token = producers.add("food-services")
    doc = json.loads(MEALS)
    attributes = {k: v for k, v in doc.items() if k != "data"}

    def sdk_event(id_: str) -> CloudEvent:
        return CloudEvent({**attributes, "id": id_}, doc["data"])

    auth = {"Authorization": f"Bearer {token}"}
    url = f"{service.url}/events"
    headers, body = to_binary(sdk_event("binary-1"))
    assert post(url, body, {**headers, **auth})[0] == 202
    headers, body = to_structured(sdk_event("structured-1"))
    assert post(url, body, {**headers, **auth})[0] == 202
    batch = json.dumps([{**doc, "id": "batch-1"}, {**doc, "id": "batch-2"}]).encode()
    assert post(url, batch, {"Content-Type": "application/cloudevents-batch+json", **auth})[0] == 202
    # one invalid event in a batch: nothing of it is published, and the answer says which and why
    bad = json.dumps([{**doc, "id": "batch-3"}, {**doc, "id": "batch-4", "type": "meals.nope"}]).encode()
    status, answer = post(url, bad, {"Content-Type": "application/cloudevents-batch+json", **auth})
    assert status == 400 and "event 1: type: unknown event type 'meals.nope'" in answer
    assert post(url, batch, {"Content-Type": "application/cloudevents-batch+json"})[0] == 401  # no token
    assert (
        post(url, batch, {"Content-Type": "application/cloudevents-batch+json", "Authorization": "Bearer x"})[0] == 401
    )
    producers.remove("food-services")  # revoked at once
    assert post(url, batch, {"Content-Type": "application/cloudevents-batch+json", **auth})[0] == 401
    producers.close()
    with open_bus(env.bus_url) as bus, bus.consumer("inspect", [env.topic]) as c:
        ids = [json.loads(r.value)["id"] for r in c.poll(max_records=100, timeout=0.5)]
    assert ids == ["binary-1", "structured-1", "batch-1", "batch-2"]


def test_report_counts_who_opted_out_after_a_campaigns_message(
    env: Env, service: Service, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    tw, _ = providers
    deliver(env, providers, [SWITCH])
    tw.text(f"{service.url}/webhooks/twilio/inbound", "+13055550102", "STOP")  # James, who got the text
    feedback(env)
    ledger = Ledger(env.ledger)
    assert ledger.opted_out_since("platform-switch") == [("sms", "en", 1)]
    ledger.close()


def test_a_crash_interrupted_message_whose_receipt_came_is_neither_reconciled_nor_resent(
    env: Env, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    from comms.events import parse_event

    tw, _ = providers
    deliver(env, providers, [SWITCH])
    ledger = Ledger(env.ledger)
    # as a crash leaves them: Twilio accepted the messages, the ledger still says `sending`
    ledger.conn.execute(
        "UPDATE deliveries SET state='sending' WHERE channel='sms' AND state='sent' AND campaign='platform-switch'"
    )
    keys = [k for (k,) in ledger.conn.execute("SELECT key FROM deliveries WHERE channel='sms' AND state='sending'")]
    ledger.close()
    receipts = [
        parse_event(
            make_event(
                "provider.status",
                {"channel": "sms", "ledger_key": k, "provider_id": f"SM{i}", "status": "delivered"},
                id=f"r{i}", source="comms-serve", time=NOON.isoformat(),
            )
        )
        for i, k in enumerate(keys)
    ]  # fmt: skip
    app = App.open(env, clock=Clock(NOON), environ={})
    assert Feedback(app.pipeline.ledger).handle_many(receipts)["moved"] == len(keys) == 5
    app.close()
    requests_before = tw.requests
    deliver(env, providers, copies(SWITCH, 1, same_id=True))  # the event redelivered after the crash
    assert tw.requests == requests_before  # no lookup in Twilio's records, no second text
    assert states(env, "platform-switch", "sms") == {"delivered": 5, "suppressed": 2}
