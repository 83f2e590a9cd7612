"""Messages/s through the real SDKs into local servers of the Twilio and SendGrid APIs. On demand:

    .venv/bin/python bench/delivery.py [--families 3000]

Four figures, all in one run and against the same servers:
- channel: TwilioSmsChannel (16 requests in flight) and SendGridEmailChannel (1000 per request) alone;
- baseline: what a user would write instead, a loop of `client.messages.create` and one
  SendGrid send per guardian;
- pipeline: one district-wide meals.schedule event through bus, ledger, rendering and both
  channels, from publish to the last message.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from sendgrid import SendGridAPIClient
from twilio.rest import Client

from comms.app import App, Env
from comms.channels.base import Message
from comms.channels.sendgrid_email import SendGridEmailChannel, mail_payload
from comms.channels.twilio_sms import TwilioSmsChannel
from comms.dev.demo import demo_events, ungated
from comms.dev.servers import (
    ACCOUNT_SID,
    API_KEY,
    AUTH_TOKEN,
    MESSAGING_SERVICE_SID,
    SENDER,
    FakeSendGrid,
    FakeTwilio,
    provider_env,
)
from comms.roster import synthetic_roster
from comms.worker import run

SID, TOKEN, MG = ACCOUNT_SID, AUTH_TOKEN, MESSAGING_SERVICE_SID
ROOT = Path(__file__).resolve().parent.parent


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>9,.0f}/s ({n} in {seconds:.2f} s)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", type=int, default=3000)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds the SMS server waits, second pass")
    args = ap.parse_args()
    n = args.families
    print(f"{n} families; {platform.node()} {platform.machine()}, Python {platform.python_version()}")
    sms = [
        Message(
            key=f"k{i}",
            channel="sms",
            campaign="meal-schedule",
            event_uid="e",
            lang="en",
            to=f"+1786{i:07d}",
            body={"txt": "M-DCPS: free meals"},
        )
        for i in range(n)
    ]
    mails = [
        Message(
            key=f"k{i}",
            channel="email",
            campaign="meal-schedule",
            event_uid="e",
            lang="en",
            to=f"p{i}@example.org",
            body={"txt": "Free meals", "html": "<p>Free meals</p>"},
            subject="Free meals",
        )
        for i in range(n)
    ]
    with FakeTwilio() as tw, FakeSendGrid() as sg:
        ch = TwilioSmsChannel(SID, TOKEN, messaging_service_sid=MG, api_url=tw.url, rate=0, concurrency=16)
        t = time.perf_counter()
        assert all(r.ok for r in ch.send(sms))
        print("SMS   channel (16 in flight)     ", rate(n, time.perf_counter() - t))
        ch.close()
        client = Client(SID, TOKEN)
        client.api.base_url = tw.url
        t = time.perf_counter()
        for m in sms:
            client.messages.create(to=m.to, body=m.body["txt"], messaging_service_sid=MG)
        print("SMS   baseline loop              ", rate(n, time.perf_counter() - t))
        # A real provider is a round trip away: what the concurrency is for.
        tw.faults.slow_rate, tw.faults.slow_seconds = 1.0, args.latency
        k = min(n, 400)
        ch = TwilioSmsChannel(SID, TOKEN, messaging_service_sid=MG, api_url=tw.url, rate=0, concurrency=16)
        t = time.perf_counter()
        ch.send(sms[:k])
        print(f"SMS   channel, {args.latency * 1000:.0f} ms latency      ", rate(k, time.perf_counter() - t))
        ch.close()
        t = time.perf_counter()
        for m in sms[: k // 8]:
            client.messages.create(to=m.to, body=m.body["txt"], messaging_service_sid=MG)
        print(f"SMS   baseline, {args.latency * 1000:.0f} ms latency     ", rate(k // 8, time.perf_counter() - t))
        tw.faults.slow_rate = 0.0

        em = SendGridEmailChannel(API_KEY, SENDER, api_url=sg.url)
        t = time.perf_counter()
        assert all(r.ok for r in em.send(mails))
        print("email channel (1000 per request) ", rate(n, time.perf_counter() - t))
        plain = SendGridAPIClient(api_key=API_KEY, host=sg.url)
        t = time.perf_counter()
        for m in mails:
            plain.client.mail.send.post(request_body=mail_payload([m], sender=SENDER))
        print("email baseline, one per guardian ", rate(n, time.perf_counter() - t))

        with tempfile.TemporaryDirectory() as tmp:
            env = Env.from_environ(
                {
                    "COMMS_VAR": f"{tmp}/var",
                    "COMMS_OUT": f"{tmp}/out",
                    # approval: none, as bench/fanout.py: the send path, not the approval gate (bench/console.py)
                    "COMMS_CONFIG": str(ungated(ROOT / "campaigns.yaml", Path(tmp))),
                    "COMMS_TEMPLATES": str(ROOT / "templates"),
                    "COMMS_ROSTER": str(synthetic_roster(Path(tmp) / "roster.json", n)),
                }
            )
            noon = dt.datetime(2020, 9, 2, 12, 0, tzinfo=ZoneInfo("America/New_York"))  # the seed week: news not past
            app = App.open(env, clock=lambda: noon, environ=provider_env(tw.url, sg.url))
            before_sms, before_mail = len(tw.messages), len(sg.deliveries)
            t = time.perf_counter()
            app.bus.publish(env.topic, demo_events()[1])
            workers = app.workers(["sms", "email"])
            run(workers, until_idle=True)
            took = time.perf_counter() - t
            for w in workers:
                w.close()
            app.close()
            sent = len(tw.messages) - before_sms + len(sg.deliveries) - before_mail
            print(
                f"pipeline: one meals event -> {n} SMS + {n} e-mails: {took:.2f} s from publish to the last "
                f"message ({sent / took:,.0f} messages/s)"
            )


if __name__ == "__main__":
    main()
