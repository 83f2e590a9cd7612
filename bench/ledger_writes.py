"""The ledger's write path alone: messages written three times each (`sending`, `sent`,
`delivered`), with and without the triggers that keep `tallies` (the console's counts).

    .venv/bin/python bench/ledger_writes.py [--messages 30000] [--runs 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from comms.channels.base import Message
from comms.ledger import Entry, Ledger, Mark, State, delivery_key, message_payload


def run(messages: int, triggers: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.db")
        if not triggers:
            ledger.conn.execute("DROP TRIGGER tally_insert")
            ledger.conn.execute("DROP TRIGGER tally_update")
        body = {"txt": "M-DCPS: free grab-and-go meals"}
        t = time.perf_counter()
        for c in range(0, messages, 5000):  # the pipeline's chunk
            keys = [(delivery_key("e", "c", "sms", f"G{i}"), f"G{i}") for i in range(c, min(messages, c + 5000))]
            ledger.open(Entry(k, "e", "t", "c", "sms", g, "en", g, "+1") for k, g in keys)
            sent = [
                Message(key=k, channel="sms", campaign="c", event_uid="e", lang="en", to="+1", body=body)
                for k, _ in keys
            ]
            ledger.mark_sending((m.key, message_payload(m), "2020-09-02") for m in sent)
            ledger.mark(Mark(m.key, State.SENT, "SM" + m.key) for m in sent)
            ledger.advance([Mark(m.key, State.DELIVERED) for m in sent])
        elapsed = time.perf_counter() - t
        ledger.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=30_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for _ in range(args.runs):  # alternated, so both see the same machine
        with_t, without = run(args.messages, True), run(args.messages, False)
        print(f"{args.messages:,} messages x 3 writes: with triggers {with_t:.2f} s, without {without:.2f} s")


if __name__ == "__main__":
    main()
