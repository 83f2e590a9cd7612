"""A corpus of malformed and hostile events: each is dead-lettered with a reason or renders safely,
the pipeline keeps running, and the valid events around them are all delivered."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

from comms.app import App, Env
from comms.bus import DEAD_LETTER_SUFFIX
from comms.dev.demo import demo_events, sample_events
from comms.worker import run
from tests.conftest import NOON, ROOT, UNGATED, Clock, mutated

SWITCH, MEALS, THRESHOLD = (json.loads(e) for e in sample_events())


_ids = itertools.count()


def _with(doc: dict, path: str, value: object) -> bytes:
    return mutated(doc, path, value, new_id=f"{doc['id']}-corpus{next(_ids)}")  # deterministic and distinct


HUGE = "x" * 300_000

MALFORMED: list[bytes] = [
    b"",
    b" ",
    b"{",
    b'{"specversion": "1.0"',
    b"null",
    b"42",
    b'"a string"',
    b"[]",
    b"\xff\xfe\x00",
    b"\x00\x01\x02",
    HUGE.encode(),
    b'{"a": ' * 5000,
    json.dumps({**SWITCH, "data": HUGE[:1000]}).encode(),
    _with(SWITCH, "type", "platform.switched"),
    _with(SWITCH, "type", ""),
    _with(SWITCH, "specversion", "0.3"),
    _with(SWITCH, "id", ""),
    _with(SWITCH, "source", ""),
    _with(SWITCH, "time", "yesterday"),
    _with(SWITCH, "time", "2020-09-02T22:00:00"),
    _with(SWITCH, "datacontenttype", "text/xml"),
    _with(SWITCH, "data", None),
    _with(SWITCH, "data", []),
    _with(SWITCH, "data.grades", "06"),
    _with(SWITCH, "data.grades", ["13"]),
    _with(SWITCH, "data.grades", []),
    _with(SWITCH, "data.grades", [6]),
    _with(SWITCH, "data.effective_date", "2020-02-30"),
    _with(SWITCH, "data.effective_date", "9999-01-01"),
    _with(SWITCH, "data.effective_date", 20200903),
    _with(SWITCH, "data.to_platform", ""),
    _with(SWITCH, "data.to_platform", "x" * 121),
    _with(SWITCH, "data.to_platform", "Teams\x00"),
    _with(SWITCH, "data.to_platform", "Teams\x1b[31m"),
    _with(SWITCH, "data.reason", "because"),
    _with(SWITCH, "data.instructions_url", "javascript:alert(1)"),
    _with(SWITCH, "data.schools", ["no such"]),
    _with(SWITCH, "data.schools", ["9999"]),
    _with(SWITCH, "data.extra", {"a": 1}),
    _with(MEALS, "data.days", ["funday"]),
    _with(MEALS, "data.days", ["tuesday", "tuesday"]),
    _with(MEALS, "data.start_time", "4pm"),
    _with(MEALS, "data.end_time", "15:00"),
    _with(MEALS, "data.sites", "some"),
    _with(MEALS, "data.sites", ["8888"]),
    _with(MEALS, "data.effective_until", "2020-08-01"),
    _with(MEALS, "data.meals", ["brunch"]),
    _with(MEALS, "data.eligibility", "everyone"),
    _with(THRESHOLD, "data.student_id", "S9999"),
    _with(THRESHOLD, "data.school_id", "7001"),
    _with(THRESHOLD, "data.tier", "platinum"),
    _with(THRESHOLD, "data.absences", 2),
    _with(THRESHOLD, "data.absences", -5),
    _with(THRESHOLD, "data.absences", 10**9),
    _with(THRESHOLD, "data.school_year", "2020/2021"),
    _with(THRESHOLD, "data.as_of", "1899-12-31"),
    _with(THRESHOLD, "data", {}),
]

# Valid but hostile: they must render as text, never as template code or markup.
HOSTILE: list[bytes] = [
    _with(SWITCH, "data.to_platform", "{{ 7*7 }}"),
    _with(SWITCH, "data.to_platform", "{% for x in range(9) %}x{% endfor %}"),
    _with(SWITCH, "data.to_platform", "<script>alert(1)</script>"),
    _with(SWITCH, "data.from_platform", "{{ ''.__class__.__mro__ }}"),
    _with(SWITCH, "data.reason_detail", "<img src=x onerror=alert(1)> & \"quotes\" 'single'"),
]
# Valid, but the characters force UCS-2 and the SMS over district.sms_max_segments: held on the SMS
# channel (dead-lettered with the reason, in no language sent), delivered as e-mail and press drafts.
TOO_LONG_FOR_SMS: list[bytes] = [
    _with(SWITCH, "data.to_platform", "Teams 🎓📚 and emoji"),
    _with(SWITCH, "data.to_platform", "מיקרוסופט טימס \u202eRTL"),
]


def test_corpus_is_dead_lettered_or_rendered_safely(tmp_path: Path) -> None:
    assert len(MALFORMED) + len(HOSTILE) + len(TOO_LONG_FOR_SMS) >= 50
    env = Env.from_environ(
        {
            "COMMS_VAR": str(tmp_path / "var"),
            "COMMS_OUT": str(tmp_path / "out"),
            "COMMS_CONFIG": str(UNGATED),
            "COMMS_TEMPLATES": str(ROOT / "templates"),
        }
    )
    app = App.open(env, clock=Clock(NOON), environ={})  # the seed week: the switch's news is not past yet
    valid = demo_events()[:2]
    stream = []
    for i, bad in enumerate(MALFORMED + HOSTILE + TOO_LONG_FOR_SMS):
        stream.append(bad)
        if i % 10 == 0:
            stream.append(valid[(i // 10) % 2])  # valid events among the bad ones (repeats are deduplicated)
    app.bus.publish_many(env.topic, [(None, e) for e in stream])
    workers = app.workers(["press", "sms", "email"])
    run(workers, until_idle=True)
    for w in workers:
        w.close()
    with app.bus.consumer("inspect", [env.topic + DEAD_LETTER_SUFFIX]) as c:
        dead = c.poll(max_records=10_000, timeout=0.5)
    counts = app.pipeline.ledger.counts()
    capped = Counter()
    for ch, _, why, n in app.pipeline.ledger.details("platform-switch"):
        capped[ch] += n if "daily_cap" in why else 0
    app.close()
    per_group = {g: [d for d in dead if d.headers["consumer_group"] == g] for g in ("comms-press", "comms-sms")}
    held = {"comms-press": [], "comms-sms": TOO_LONG_FOR_SMS}
    for group, items in per_group.items():
        assert len(items) == len(MALFORMED) + len(held[group]), group  # every malformed event, once per group
        assert {d.value for d in items} == set(MALFORMED + held[group])
        assert all(d.headers["reason"] for d in items)
    too_long = [d.headers["reason"] for d in per_group["comms-sms"] if d.value in TOO_LONG_FOR_SMS]
    assert all("UCS-2" in r and "more than district.sms_max_segments (3)" in r for r in too_long), too_long
    # the five e-mail families, each time: sent, or held by the daily cap (10 a day for emergencies; a
    # family with a child in Pre-K-5 and one in 6-12 also gets the platform-unchanged notice of each)
    sent_email = sum(n for cid, ch, _, st, n in counts if cid == "platform-switch" and ch == "email" and st == "sent")
    assert sent_email + capped["email"] == 5 * (1 + len(HOSTILE) + len(TOO_LONG_FOR_SMS))
    # the valid events and the hostile-but-valid ones were all delivered
    sent_switch = sum(n for cid, ch, _, st, n in counts if cid == "platform-switch" and ch == "sms" and st == "sent")
    assert sent_switch + capped["sms"] == 5 * (1 + len(HOSTILE))  # the five SMS families, each distinct switch
    out = tmp_path / "out"
    texts = "\n".join(p.read_text("utf-8") for p in out.rglob("*") if p.is_file())
    assert "use {{ 7*7 }} for live classes" in texts and "use 49 for" not in texts  # the SMS sentence
    assert "{% for x in range(9) %}" in texts and "xxxxxxxxx" not in texts
    html = "\n".join(p.read_text("utf-8") for p in out.rglob("*.html"))
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "<img src=x" not in html
    assert "__mro__" in texts  # printed as typed, never evaluated
