"""The console at district scale: the send plan of a district-wide event, and the inbox, send plan and
delivery pages served from a ledger of the two seed events to every family.

    .venv/bin/python bench/console.py [--students 334000] [--requests 40]

What runs: the roster of bench/fanout.py (cached in bench/.cache/); the real campaigns.yaml, whose
two seed campaigns need approval; the local Twilio and SendGrid servers; `comms run --until-idle`
for the press, SMS and e-mail consumers in one process, which plans both events into the ledger as
`awaiting_approval`; `comms serve`, logged in as an approver over HTTP. Then:
1. the send plan of the district-wide meals event computed cold (one request, nothing cached);
2. each page requested `--requests` times: p50, p95 and max of the server's answer times;
3. both events approved (as two accounts), the consumers run again until they have sent it all, and
   the pages measured again over a ledger of sent messages.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from fanout import COMMS, NOON, ROOT, ledger_counts, roster  # noqa: E402

from comms.accounts import Accounts, Role  # noqa: E402
from comms.dev.broker import free_port  # noqa: E402
from comms.dev.demo import demo_events  # noqa: E402
from comms.dev.servers import provider_env, wait_until_up  # noqa: E402

PASSWORD = "bench password, long enough"
MEALS = "https://dadeschools.net/food-nutrition#meals-2020-09-01"  # event ids (source#id)
SWITCH = "https://dadeschools.net/it/learning-platforms#platform-switch-2020-09-03"


class Session:
    def __init__(self, base: str, name: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        page = self.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        self.post("/login", {"csrf": token, "name": name, "password": PASSWORD, "next": "/console"})

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=300) as r:
            return r.read().decode()

    def post(self, path: str, form: dict[str, str]) -> str:
        with self.opener.open(self.base + path, urllib.parse.urlencode(form).encode(), timeout=300) as r:
            return r.read().decode()

    def timed(self, path: str, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            self.get(path)
            out.append((time.perf_counter() - t) * 1000)
        return out


def row(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[max(0, round(0.95 * len(ms)) - 1)]
    return f"| {name} | {len(ms)} | {statistics.median(ms):.0f} ms | {p95:.0f} ms | {ms[-1]:.0f} ms |"


def pages(s: Session, n: int, label: str) -> None:
    event = "/console/event?uid=" + urllib.parse.quote(MEALS, safe="")
    print(f"\n{label}\n| page | requests | p50 | p95 | max |\n|---|---:|---:|---:|---:|")
    for name, path in (("inbox", "/console"), ("send plan (meals)", event), ("delivery", "/console/delivery")):
        print(row(name, s.timed(path, n)))
    print(row("live fragment (progress)", s.timed("/console/fragment/progress?uid=" + urllib.parse.quote(MEALS), n)))


def consume(env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(
        [*COMMS, "run", "--until-idle", "--only", "press", "--only", "sms", "--only", "email"],
        env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", type=int, default=334_000)
    ap.add_argument("--requests", type=int, default=40)
    args = ap.parse_args()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("COMMS_", "TWILIO_", "SENDGRID_"))}
    with tempfile.TemporaryDirectory() as tmp:
        db = roster(args.students, {**base_env, "COMMS_VAR": tmp})
        servers = subprocess.Popen(
            [sys.executable, "-m", "comms.dev.servers", "--light"], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        serve = None
        try:
            urls = json.loads(servers.stdout.readline())  # type: ignore[union-attr]
            env = {
                **base_env,
                "COMMS_VAR": f"{tmp}/var",
                "COMMS_OUT": f"{tmp}/out",
                "COMMS_ROSTER": str(db),
                "COMMS_CONFIG": str(ROOT / "campaigns.yaml"),
                "COMMS_TEMPLATES": str(ROOT / "templates"),
                "COMMS_TEST_NOW": NOON,
                **provider_env(urls["twilio"], urls["sendgrid"]),
            }
            Path(tmp, "var").mkdir()
            events = Path(tmp, "events.jsonl")
            events.write_bytes(b"\n".join(demo_events()[:2]) + b"\n")
            subprocess.run([*COMMS, "publish", str(events)], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            planned = consume(env)
            ledger = Path(tmp, "var", "ledger.db")
            counts = ledger_counts(ledger)
            held = sum(n for (_, s), n in counts.items() if s == "awaiting_approval")
            print(f"{args.students:,} students: both events planned, {held:,} messages awaiting approval")
            print(f"planning (press, SMS and e-mail consumers in one process): {planned:.1f} s")
            with Accounts(ledger.with_name("accounts.db")) as accounts:
                accounts.add("ana", Role.APPROVER, PASSWORD)
                accounts.add("ben", Role.APPROVER, PASSWORD)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            serve = subprocess.Popen([*COMMS, "serve", "--port", str(port)], env=env, cwd=ROOT)
            wait_until_up(f"{url}/healthz")
            ana = Session(url, "ana")
            t = time.perf_counter()
            ana.get("/console/event?uid=" + urllib.parse.quote(MEALS, safe=""))
            print(f"send plan of the district-wide meals event, cold: {time.perf_counter() - t:.2f} s")
            pages(ana, args.requests, "awaiting approval (the ledger holds the plan):")
            ben = Session(url, "ben")
            for uid in (MEALS, SWITCH):
                for s in (ana, ben):
                    page = s.get("/console/event?uid=" + urllib.parse.quote(uid, safe=""))
                    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
                    try:
                        s.post("/console/event/decide", {"csrf": token, "uid": uid, "verdict": "approve"})
                    except urllib.error.HTTPError as exc:  # platform-switch needs one: already decided
                        assert exc.code == 409, exc
            sent = consume(env)
            counts = ledger_counts(ledger)
            went = sum(n for (_, s), n in counts.items() if s == "sent")
            print(f"approved; the consumers sent {went:,} in {sent:.1f} s")
            t = time.perf_counter()
            ana.get("/console/event?uid=" + urllib.parse.quote(MEALS, safe=""))
            print(f"send plan after sending, cold: {time.perf_counter() - t:.2f} s")
            t = time.perf_counter()
            ana.get("/console/not-reached.csv?uid=" + urllib.parse.quote(MEALS, safe=""))
            print(f"not-reached CSV of the meals event (no receipts: every family): {time.perf_counter() - t:.2f} s")
            pages(ana, args.requests, "after sending:")
        finally:
            if serve is not None:
                serve.terminate()
                serve.wait()
            servers.terminate()
            servers.wait()


if __name__ == "__main__":
    main()
