"""campaigns.yaml: the real file is valid; a broken one names the key path and the line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from comms.cli import app
from comms.config import load_settings, parse_settings
from comms.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
GOOD = (ROOT / "campaigns.yaml").read_text(encoding="utf-8")


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_real_file_is_valid() -> None:
    s = load_settings(ROOT / "campaigns.yaml")
    assert set(s.campaigns) == {"platform-switch", "platform-unchanged", "meal-schedule", "show-up"}
    tiers = s.campaigns["show-up"].tiers
    assert [t.min_absences for t in tiers] == [5, 6, 11]  # five, more than five, more than ten
    assert s.district.languages == ["en", "es", "ht"]


BROKEN = [
    # (old text, new text, expected key path, the line to point at holds this text)
    (
        "    event_type: meals.schedule",
        "    event_type: meals.menu",
        "campaigns.meal-schedule.event_type",
        "event_type: meals.menu",
    ),
    ("    priority: normal\n", "    priority: urgent\n", "campaigns.meal-schedule.priority", "priority: urgent"),
    ("        min_absences: 6 ", "        min_absences: 4 ", "campaigns.show-up.tiers", "    tiers:"),
    ("  timezone: America/New_York", "  timezone: Miami/Beach", "district.timezone", "timezone: Miami/Beach"),
    ("          ht: Entèvansyon entansif lekòl la ak kominote a\n", "", "campaigns.show-up.tiers[2].label", None),
    ('    hashtag: "#ShowUpMDCPS"', "    hashtag: ShowUp", "campaigns.show-up.hashtag", "hashtag: ShowUp"),
    ("  dateline: MIAMI", "  datelines: MIAMI", "district.datelines", "datelines: MIAMI"),
]


@pytest.mark.parametrize("old,new,path,line_text", BROKEN)
def test_broken_names_key_and_line(old: str, new: str, path: str, line_text: str | None) -> None:
    assert old in GOOD, old
    text = GOOD.replace(old, new, 1)
    with pytest.raises(ConfigError) as exc:
        parse_settings(text)
    msg = str(exc.value)
    assert path in msg
    if line_text:
        assert f"campaigns.yaml:{_line_of(text, line_text)}: {path}" in msg


def test_unknown_key_names_its_line() -> None:
    text = GOOD.replace("      sms: {template: platform_switch}", "      sms: {templat: platform_switch}", 1)
    with pytest.raises(ConfigError) as exc:
        parse_settings(text)
    line = _line_of(text, "templat: platform_switch}")
    assert f"campaigns.yaml:{line}: campaigns.platform-switch.channels.sms.templat: unknown key" in str(exc.value)


def test_invalid_yaml_names_line() -> None:
    with pytest.raises(ConfigError, match=r"campaigns.yaml:3: invalid YAML"):
        parse_settings("district:\n  name: x\n  bad: a: b\n")


def test_validate_cli_on_broken_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "campaigns.yaml"
    broken.write_text(GOOD.replace("    event_type: meals.schedule", "    event_typ: meals.schedule"), "utf-8")
    monkeypatch.setenv("COMMS_CONFIG", str(broken))
    monkeypatch.setenv("COMMS_TEMPLATES", str(ROOT / "templates"))
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 1
    line = _line_of(broken.read_text("utf-8"), "event_typ: meals.schedule")
    assert f"campaigns.yaml:{line}: campaigns.meal-schedule.event_typ: unknown key" in result.output


def test_validate_cli_names_missing_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "campaigns.yaml"
    cfg.write_text(GOOD.replace("sms: {template: meals_schedule}", "sms: {template: meals_menu}"), "utf-8")
    monkeypatch.setenv("COMMS_CONFIG", str(cfg))
    monkeypatch.setenv("COMMS_TEMPLATES", str(ROOT / "templates"))
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 1
    assert "sms/meals_menu.ht.txt.j2 does not exist" in result.output


def test_validate_cli_ok_on_real_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMS_CONFIG", str(ROOT / "campaigns.yaml"))
    monkeypatch.setenv("COMMS_TEMPLATES", str(ROOT / "templates"))
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 0, result.output
