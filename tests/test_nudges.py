"""#ShowUpMDCPS notices written as the attendance trials found effective: the child's own total, the
district's typical total where it gives one, the parent's part, and no threat; in every language, and
short enough that no family's text is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from comms.app import App
from comms.config import parse_settings
from comms.dev.demo import DEMO_NOW, sample_events
from comms.errors import ConfigError
from comms.events import parse_event
from comms.ledger import State
from tests.conftest import ROOT, UNGATED, fixture_env

TIERS = {"schoolwide": 5, "targeted": 6, "intensive": 11}
ROLE = {"en": "You make the difference.", "es": "Usted marca la diferencia.", "ht": "Se ou ki fè diferans lan."}
# what a notice must never say: the trials' letters avoided a punitive tone, and the seed threatens nobody
THREATS = ("truan", "court", "legal", "penalt", "fine ", "law", "tribunal", "multa", "ley ", "sanci", "lalwa", "amann")


def tier_event(student: str, school: str, tier: str) -> bytes:
    doc = json.loads(sample_events()[-1])
    doc["id"] = f"nudge-{student}-{tier}"
    doc["data"].update(
        student_id=student, school_id=school, tier=tier, absences=TIERS[tier], as_of="2020-11-19", learning_mode=None
    )
    return json.dumps({**doc, "data": {k: v for k, v in doc["data"].items() if v is not None}}).encode()


def send(tmp_path: Path, events: list[bytes], config: Path = UNGATED) -> tuple[App, dict[str, list[str]]]:
    """Deliver the events on SMS and e-mail (the dry-run outbox); each family text by channel."""
    app = App.open(fixture_env(tmp_path, COMMS_CONFIG=str(config)), clock=lambda: DEMO_NOW, environ={})
    for raw in events:
        for channel in ("sms", "email"):
            app.pipeline.handle(parse_event(raw), channel)
    texts = {
        ch: [p.read_text("utf-8") for p in sorted((tmp_path / "out" / "outbox" / ch).glob("show-up-*.txt"))]
        for ch in ("sms", "email")
    }
    return app, texts


def with_comparison(tmp_path: Path, comparison: dict) -> Path:
    doc = yaml.safe_load(UNGATED.read_text("utf-8"))
    doc["campaigns"]["show-up"]["comparison"] = comparison
    path = tmp_path / "campaigns.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    return path


def test_a_tier_text_to_a_child_whose_name_forces_ucs2_still_goes_in_every_tier(tmp_path: Path) -> None:
    """Sofía: the "í" makes the Spanish text UCS-2 (67 characters a segment). The text carries no tier
    label (the e-mail does), so it stays within district.sms_max_segments (3) and is sent."""
    app, texts = send(tmp_path, [tier_event("S1002", "5001", t) for t in TIERS])
    counts = {(ch, st): n for _, ch, _, st, n in app.pipeline.ledger.counts("show-up")}
    app.close()
    assert counts[("sms", State.SENT)] == 3 and ("sms", State.FAILED) not in counts
    assert all(len(t.split("\n\n", 1)[1].strip()) <= 201 for t in texts["sms"])  # 3 UCS-2 segments


@pytest.mark.parametrize(
    ("student", "school", "lang"), [("S1004", "7001", "en"), ("S1001", "6001", "es"), ("S1005", "5002", "ht")]
)
def test_the_notice_states_the_childs_total_the_parents_part_and_no_threat(
    tmp_path: Path, student: str, school: str, lang: str
) -> None:
    _, texts = send(tmp_path, [tier_event(student, school, "intensive")])
    for channel, items in texts.items():
        assert items, channel
        for text in items:
            assert f"Language: {lang}" in text and " 11 " in text, (channel, text)  # the child's own total
            assert ROLE[lang] in text, (channel, text)
            assert not [w for w in THREATS if w in text.lower()], (channel, text)
    # the e-mail keeps the seed's actions for the tier
    assert all("- " in t or "<li>" in t for t in texts["email"])


def test_the_typical_total_is_shown_where_the_district_gives_it(tmp_path: Path) -> None:
    """By grade, district-wide: Mateo (grade 7) is compared, Ava (grade 11: no figure) is not."""
    config = with_comparison(tmp_path, {"by": "grade", "as_of": "2020-11-19", "typical": {"07": 3, "08": 4}})
    _, texts = send(
        tmp_path, [tier_event("S1001", "6001", "targeted"), tier_event("S1004", "7001", "targeted")], config
    )
    mateo = [t for t in texts["email"] if "Mateo" in t]
    ava = [t for t in texts["email"] if "Ava" in t]
    assert mateo and ava
    line = "un estudiante típico de grado 7 en el Distrito tenía 3 ausencias al jueves, 19 de noviembre de 2020"
    assert all(line in t for t in mateo)
    assert not [t for t in ava if "typical" in t]
    assert not [t for t in texts["sms"] if "típico" in t or "typical" in t]  # the text stays short


def test_by_school_in_creole(tmp_path: Path) -> None:
    config = with_comparison(tmp_path, {"by": "school", "as_of": "2020-11-19", "typical": {"5002": 2}})
    _, texts = send(tmp_path, [tier_event("S1005", "5002", "schoolwide")], config)
    line = "yon elèv tipik nan Little River K-8 Center te gen 2 absans jiska jedi 19 novanm 2020"
    assert texts["email"] and all(line in t for t in texts["email"])


def test_a_comparison_is_refused_where_it_cannot_apply() -> None:
    text = (ROOT / "campaigns.yaml").read_text("utf-8")
    good = "\n    comparison: {by: grade, as_of: 2020-11-19, typical: {'07': 3}}"
    anchor = '    hashtag: "#ShowUpMDCPS"'
    assert parse_settings(text.replace(anchor, anchor + good)).campaigns["show-up"].comparison is not None
    with pytest.raises(ConfigError, match="typical: '13' is not a grade"):
        parse_settings(text.replace(anchor, anchor + good.replace("'07'", "'13'")))
    with pytest.raises(ConfigError, match="a number of absences from 0 to 366"):
        parse_settings(text.replace(anchor, anchor + good.replace(": 3}", ": 400}")))
    with pytest.raises(ConfigError, match="comparison: for a tier campaign"):
        meals = "    title: Free grab-and-go meals"
        parse_settings(text.replace(meals, meals + good.replace("\n    ", "\n    ", 1), 1))
