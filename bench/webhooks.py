"""Signed Twilio status callbacks into `comms serve`, from a second process on loopback.

    .venv/bin/python bench/webhooks.py [--callbacks 30000] [--concurrency 64]

What runs: `comms serve` in its own process on the embedded SQLite bus; this process posts one signed
`delivered` callback per message (signatures computed before the clock starts, as Twilio's are not
this service's cost), `--concurrency` requests in flight, and measures each request's latency. Then
`comms run --until-idle --only feedback` applies them to a ledger that holds one `sent` row per
callback, and every row must end `delivered`: acknowledged means kept.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from twilio.request_validator import RequestValidator

from comms.dev.broker import free_port
from comms.dev.servers import AUTH_TOKEN, wait_until_up
from comms.ledger import Entry, Ledger, Mark, State

ROOT = Path(__file__).resolve().parent.parent


async def fire(requests: list[tuple[str, bytes, str]], concurrency: int) -> tuple[list[float], list[int]]:
    latencies: list[float] = []
    statuses: list[int] = []
    todo = iter(requests)
    async with aiohttp.ClientSession() as session:

        async def lane() -> None:
            for url, body, signature in todo:
                t = time.perf_counter()
                async with session.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature},
                ) as resp:
                    await resp.read()
                latencies.append(time.perf_counter() - t)
                statuses.append(resp.status)

        await asyncio.gather(*(lane() for _ in range(concurrency)))
    return latencies, statuses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--callbacks", type=int, default=30000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--profile", action="store_true", help="py-spy the service (pip install py-spy)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "COMMS_VAR": str(tmp / "var"),
        "COMMS_OUT": str(tmp / "out"),
        "COMMS_CONFIG": str(ROOT / "campaigns.yaml"),
        "COMMS_TEMPLATES": str(ROOT / "templates"),
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "COMMS_PUBLIC_URL": url,
    }
    keys = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(args.callbacks)]
    ledger = Ledger(tmp / "var" / "ledger.db")  # one `sent` row per callback, as a fan-out leaves them
    ledger.open(Entry(k, "e#1", "meals.schedule", "meal-schedule", "sms", f"G{i}", "en") for i, k in enumerate(keys))
    ledger.mark(Mark(k, State.SENDING) for k in keys)
    ledger.mark(Mark(k, State.SENT, f"SM{k}") for k in keys)
    ledger.close()
    validator = RequestValidator(AUTH_TOKEN)
    requests = []
    for k in keys:
        target = f"{url}/webhooks/twilio/status?ledger_key={k}"
        params = {"MessageSid": f"SM{k}", "MessageStatus": "delivered", "AccountSid": "AC" + "1" * 32}
        requests.append((target, urlencode(params).encode(), validator.compute_signature(target, params)))
    serve = subprocess.Popen(
        [sys.executable, "-m", "comms.cli", "serve", "--port", str(port)], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until_up(f"{url}/healthz")
        spy = (
            subprocess.Popen(["py-spy", "record", "-p", str(serve.pid), "-o", str(tmp / "serve.txt"), "-f", "raw"])
            if args.profile
            else None
        )
        t = time.perf_counter()
        latencies, statuses = asyncio.run(fire(requests, args.concurrency))
        took = time.perf_counter() - t
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:  # noqa: S310 - loopback
            metrics = resp.read().decode()
        if spy is not None:
            spy.send_signal(2)
            spy.wait()
            print(f"profile of comms serve: {tmp / 'serve.txt'}")
    finally:
        serve.terminate()
        serve.wait()
    writes = next(line.split()[-1] for line in metrics.splitlines() if line.startswith("comms_feedback_bus_writes "))
    latencies.sort()
    p = {q: latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))] * 1000 for q in (50, 99)}
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "comms.cli", "run", "--until-idle", "--only", "feedback"], cwd=ROOT,
        env={k: v for k, v in env.items() if k != "TWILIO_AUTH_TOKEN"}, capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode:
        sys.exit(f"the feedback consumer failed:\n{r.stderr[-3000:]}")
    applied = time.perf_counter() - t
    ledger = Ledger(tmp / "var" / "ledger.db")
    delivered = sum(r.messages for r in ledger.counts() if r.state == "delivered")
    ledger.close()
    print(f"{args.callbacks:,} callbacks, {args.concurrency} in flight; {platform.machine()}, {os.cpu_count()} cores")
    print(f"acknowledged: {statuses.count(204):,} of {len(statuses):,} (others: {sorted(set(statuses) - {204})})")
    print(
        f"rate: {len(statuses) / took:,.0f} verified callbacks/s ({took:.1f} s); p50 {p[50]:.1f} ms, p99 {p[99]:.1f} ms"
    )
    print(f"bus writes (group commits): {writes} for {len(statuses):,} callbacks")
    print(f"feedback consumer: applied in {applied:.1f} s ({args.callbacks / applied:,.0f}/s, start-up included)")
    print(f"ledger rows delivered: {delivered:,} of {args.callbacks:,}")
    if delivered != args.callbacks or statuses.count(204) != len(statuses):
        sys.exit("lost or refused callbacks")


if __name__ == "__main__":
    main()
