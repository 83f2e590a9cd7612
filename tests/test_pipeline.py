"""End to end on the embedded bus: audiences, consent, once per family, dead letters, restart."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from comms.app import App, Env
from comms.bus import DEAD_LETTER_SUFFIX
from comms.dev.demo import demo_events, sample_events
from comms.events import parse_event
from comms.worker import run


def _publish(app: App, raws: list[bytes]) -> None:
    app.bus.publish_many(app.env.topic, [(None, r) for r in raws])


def _run(app: App) -> list:
    workers = app.workers()
    run(workers, until_idle=True)
    for w in workers:
        w.close()
    return workers


def _outbox(env: Env, channel: str) -> list[str]:
    return sorted(p.read_text("utf-8") for p in (env.out / "outbox" / channel).glob("*.txt"))


def _to(texts: list[str]) -> Counter[str]:
    return Counter(line[4:] for t in texts for line in t.splitlines() if line.startswith("To: "))


def test_demo_reaches_each_family_once_in_its_language(app: App, env: Env) -> None:
    _publish(app, demo_events())
    _run(app)
    sms, email = _outbox(env, "sms"), _outbox(env, "email")
    # meals: G01 has three children and gets one message; G05 has no SMS consent; G07 is no-contact
    meals_sms = [t for t in sms if "Campaign: meal-schedule" in t]
    assert _to(meals_sms) == Counter(
        {
            "+13055550101": 1,
            "+13055550102": 1,
            "+13055550103": 1,
            "+13055550104": 1,
            "+13055550106": 1,
            "+13055550108": 1,
        }
    )
    assert all("+13055550107" not in t and "+13055550105" not in t for t in sms)
    assert all("luis.g07@example.org" not in t for t in email)
    maria = next(t for t in meals_sms if "+13055550101" in t)
    assert "Language: es" in maria and "martes y jueves" in maria
    marie = next(t for t in meals_sms if "+13055550103" in t)
    assert "Language: ht" in marie and "madi ak jedi" in marie
    # platform switch to grades 6-12 only: Noah's (KG) guardian G06 gets nothing
    switch_sms = [t for t in sms if "Campaign: platform-switch" in t]
    assert "+13055550106" not in _to(switch_sms)
    # each family appears once per channel and campaign
    assert max(_to(switch_sms).values()) == 1
    press = sorted(p.name for p in (env.out / "press").iterdir())
    assert len(press) == 8 and any(n.endswith(".es.md") for n in press)
    md = next((env.out / "press").glob("*platform-switch*.en.md")).read_text("utf-8")
    assert md.startswith("---\nstatus: draft")


def test_malformed_events_are_dead_lettered_and_the_rest_delivered(app: App, env: Env) -> None:
    good = demo_events()
    bad = [
        b"{truncated",
        json.dumps(
            {
                "specversion": "1.0",
                "id": "1",
                "source": "s",
                "type": "meals.schedule",
                "time": "2020-09-01T12:00:00Z",
                "data": {"meals": ["lunch"]},
            }
        ).encode(),
    ]
    unknown_student = json.loads(sample_events()[-1])
    unknown_student["id"], unknown_student["data"]["student_id"] = "ghost", "S9999"
    _publish(app, [bad[0], good[0], bad[1], *good[1:], json.dumps(unknown_student).encode()])
    workers = [w for w in _run(app) if w.topic == env.topic]  # the feedback consumer reads its own topic
    # attendance handles only attendance.recorded: the unknown student's threshold event is not its business
    seen = len(good) + 7  # with the 7 #ShowUpMDCPS tier events the attendance consumer counted
    assert [w.stats["events"] for w in workers] == [seen] * (len(workers) - 1) + [seen + 1]  # attendance: last
    with app.bus.consumer("inspect", [env.topic + DEAD_LETTER_SUFFIX]) as c:
        dead = c.poll(max_records=100, timeout=0.5)
    # every consumer group dead-letters independently, each with the reason
    assert len(dead) == (len(workers) - 1) * 3 + 2  # each channel consumer: the 3 bad records; attendance: 2
    reasons = {d.headers["reason"] for d in dead}
    assert any(r.startswith("invalid JSON") for r in reasons)
    assert any("data.days: field required" in r for r in reasons)
    assert any("data.student_id: unknown student 'S9999'" in r for r in reasons)
    assert {d.value for d in dead} == {bad[0], bad[1], json.dumps(unknown_student).encode()}
    assert app.bus.lag("comms-sms", env.topic)[0] == app.bus.lag("comms-sms", env.topic)[1]  # all committed


def test_restart_does_not_reprocess(env: Env) -> None:
    a = App.open(env)
    _publish(a, demo_events()[:2])
    first = _run(a)
    a.close()
    before = {p: p.stat().st_mtime_ns for p in env.out.rglob("*.txt")}

    b = App.open(env)
    _publish(b, demo_events()[2:])
    second = _run(b)
    sent_again = b.pipeline.ledger.counts()
    b.close()
    first = [w for w in first if w.topic == env.topic]  # the feedback consumer reads its own topic
    assert [w.stats["events"] for w in first] == [2] * len(first)
    later = len(demo_events()) - 2 + 7  # the attendance records, and the 7 tier events counted from them
    second = [w for w in second if w.topic == env.topic]
    assert [w.stats["events"] for w in second] == [later] * len(second)  # only the new ones
    assert all(p.stat().st_mtime_ns == m for p, m in before.items())  # nothing rewritten
    press_rows = 2 * 2  # two events with a press release, in en and es
    assert sum(n for *_, state, n in sent_again if state == "sent") == len(list(env.out.rglob("*.txt"))) + press_rows


def test_redelivered_event_is_not_sent_twice(app: App, env: Env) -> None:
    raw = demo_events()[1]
    _publish(app, [raw, raw])  # a producer retry: same CloudEvent id twice
    workers = _run(app)
    sms = next(w for w in workers if w.name == "sms")
    assert sms.stats["sent"] == 6 and sms.stats["already_done"] == 8  # second copy: 6 sent + 2 suppressed
    assert len(_outbox(env, "sms")) == 6


def test_unknown_tier_is_dead_lettered(app: App, env: Env) -> None:
    doc = json.loads(sample_events()[-1])
    doc["data"]["tier"] = "platinum"
    _publish(app, [json.dumps(doc).encode()])
    _run(app)
    with app.bus.consumer("inspect", [env.topic + DEAD_LETTER_SUFFIX]) as c:
        dead = c.poll(timeout=0.5)
    assert "data.tier: unknown tier 'platinum'" in dead[0].headers["reason"]


def test_event_key_is_used_on_publish(app: App) -> None:
    raw = sample_events()[-1]
    e = parse_event(raw)
    app.bus.publish(app.env.topic, e.raw, key=e.key)
    with app.bus.consumer("k", [app.env.topic]) as c:
        (rec,) = c.poll(timeout=0.5)
    assert rec.key.startswith("student:")


def test_outputs_land_under_the_configured_folder(app: App, env: Env) -> None:
    _publish(app, demo_events()[:1])
    _run(app)
    assert Path(env.out, "press").is_dir() and Path(env.out, "outbox", "sms").is_dir()
