"""The ledger's hot paths on a big ledger: a school year and more of district-wide announcements.

    .venv/bin/python bench/ledger_scale.py [--rows 20000000] [--keep]

It fills a SQLite ledger with `--rows` done messages (events of 850,000 messages each, as the
district-wide announcements of bench/fanout.py: SMS and e-mail, payloads that refer to a shared
text, the indexes and tally triggers of the real schema), then times what a fan-out does per chunk
of 5,000 families on it: `open` (read the chunk's rows), `mark_sending` (the write before the
provider call), `mark` (sent), `sent_today` (the daily cap's lookup), `advance` (receipts); and the
console's `counts`, and `prune` of one event's worth. The file is kept in bench/.cache/ with --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from comms.channels.base import Message
from comms.ledger import Entry, Ledger, Mark, State, delivery_key, message_payload

PER_EVENT = 850_000
CHUNK = 5_000


def fill(ledger: Ledger, rows: int) -> float:
    """Bulk insert of done messages, through the real schema (indexes and triggers)."""
    conn = ledger.conn
    content = json.dumps({"body": {"txt": "M-DCPS: free meals"}, "subject": None})
    conn.execute("INSERT OR IGNORE INTO contents VALUES ('c0', ?)", (content,))
    payload = json.dumps({"key": "", "channel": "sms", "body": None, "subject": None, "content": "c0"})
    t = time.perf_counter()
    batch = []
    day0 = 1_598_932_800.0  # 2020-09-01
    for i in range(rows):
        event, n = divmod(i, PER_EVENT)
        channel = "sms" if n % 2 else "email"
        g = f"G{n // 2:07d}"
        created = day0 + event * 7 * 86400
        batch.append(
            (
                f"{event:04d}{n:012d}", f"e{event}", "meals.schedule", f"campaign-{event % 3}", channel, g, g,
                ("en", "es", "ht")[n % 3], "delivered", "+1786" + f"{n:07d}"[-7:], payload, f"SM{i}",
                time.strftime("%Y-%m-%d", time.gmtime(created)), created, created,
            )
        )  # fmt: skip
        if len(batch) == 100_000:
            _insert(conn, batch)
            batch = []
    if batch:
        _insert(conn, batch)
    return time.perf_counter() - t


def _insert(conn, batch) -> None:  # noqa: ANN001
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO deliveries(key, event_uid, event_type, campaign, channel, recipient, guardian, lang, state,"
        " destination, payload, provider_id, sent_day, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        batch,
    )
    conn.execute("COMMIT")


def timed(fn) -> float:  # noqa: ANN001
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def chunk(ledger: Ledger, c: int) -> dict[str, float]:
    """One chunk of a new event's fan-out through the ledger: each path's milliseconds."""
    uid = f"new-{os.getpid()}-{c}"
    body = {"txt": "M-DCPS: grab-and-go meals"}
    keys = [
        (delivery_key(uid, "meal-schedule", "sms", f"G{n:07d}"), f"G{n:07d}") for n in range(c * CHUNK, (c + 1) * CHUNK)
    ]
    entries = [Entry(k, uid, "meals.schedule", "meal-schedule", "sms", g, "en", g, "+17860000000") for k, g in keys]
    msgs = [
        Message(key=k, channel="sms", campaign="meal-schedule", event_uid=uid, lang="en", to="+1", body=body)
        for k, _ in keys
    ]
    return {
        "open": timed(lambda: ledger.open(entries)),
        "mark_sending": timed(lambda: ledger.mark_sending((m.key, message_payload(m), "2021-06-01") for m in msgs)),
        "mark sent": timed(lambda: ledger.mark(Mark(m.key, State.SENT, "SM" + m.key) for m in msgs)),
        "sent_today": timed(lambda: ledger.sent_today("sms", [g for _, g in keys], "2021-06-01")),
        "advance": timed(lambda: ledger.advance([Mark(m.key, State.DELIVERED) for m in msgs])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--chunks", type=int, default=10, help="chunks of 5,000 timed per path")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    folder = Path(__file__).parent / ".cache" if args.keep else Path(tempfile.mkdtemp())
    folder.mkdir(exist_ok=True)
    path = folder / f"ledger-{args.rows}.db"
    fresh = not path.exists()
    ledger = Ledger(path)  # the system clock: a bench reads durations only
    if fresh:
        took = fill(ledger, args.rows)
        print(f"filled {args.rows:,} rows in {took:.0f} s ({args.rows / took:,.0f} rows/s)")
    size = sum(p.stat().st_size for p in folder.glob(path.name + "*")) / 2**30
    print(f"ledger {path}: {args.rows:,} rows, {size:.1f} GiB")
    times: dict[str, list[float]] = {k: [] for k in ("open", "mark_sending", "mark sent", "sent_today", "advance")}
    for c in range(args.chunks):
        for name, ms in chunk(ledger, c).items():
            times[name].append(ms)
    print(f"\nper chunk of {CHUNK:,} families ({args.chunks} chunks): median / max")
    print("| path | median | max | per message |\n|---|---:|---:|---:|")
    for name, ms in times.items():
        med = statistics.median(ms)
        print(f"| {name} | {med:.0f} ms | {max(ms):.0f} ms | {med * 1000 / CHUNK:.1f} µs |")
    print(f"| counts() (the tallies) | {timed(ledger.counts):.0f} ms | | |")
    first = ledger.conn.execute("SELECT min(created) FROM deliveries").fetchone()[0]
    print(
        f"| prune of the first event ({min(args.rows, PER_EVENT):,} rows) | "
        f"{timed(lambda: ledger.prune(first + 1)) / 1000:.1f} s | | |"
    )
    ledger.close()
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
