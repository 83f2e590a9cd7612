"""Input is data in every output: press-draft front matter and Markdown, templates that try to change
the running process or never end, configuration files that are not what they seem, provider texts
that quote a phone number."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cmarkgfm
import pytest
import yaml

from comms.app import App, Env
from comms.channels import Message
from comms.channels.press_drafts import PressDraftChannel
from comms.channels.segments import sms_size
from comms.checks import check_templates, render_one
from comms.config import load_settings, parse_settings
from comms.errors import ConfigError, RenderError
from comms.events import parse_event
from comms.render import Renderer
from tests.conftest import ROOT


def _switch_doc() -> dict:
    from comms.dev.demo import demo_events

    return json.loads(demo_events()[0])


# -- press drafts ------------------------------------------------------------------------------------
def test_front_matter_is_written_by_the_yaml_emitter(tmp_path: Path) -> None:
    """Even a value that got past validation cannot add a key: the draft stays a draft."""
    ch = PressDraftChannel(tmp_path)
    hostile = "district#x\nstatus: approved\napproved_by: someone\n---\n# Approved"
    m = Message(
        key="k1",
        channel="press_release",
        campaign="platform-switch",
        event_uid=hostile,
        lang="en",
        to="2020-09-02-x.en",
        body={"md": "body\n", "html": ""},
    )
    ch.send([m])
    text = (tmp_path / "press" / "2020-09-02-x.en.md").read_text("utf-8")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["status"] == "draft" and "approved_by" not in front and front["event"] == hostile
    assert text.count("\n---\n") == 1  # the front matter ends once, where it should


MARKDOWN_ATTACKS = {
    "reason_detail": "[click here](javascript:alert(1)) ![tracker](https://evil.example/t.png) "
    "<javascript:alert(2)> <img src=x onerror=alert(3)> https://evil.example/login www.evil.example"
    "\n# APPROVED\n- by the Superintendent\n1. item\n> quote",
}


def test_event_text_in_a_markdown_draft_renders_as_text_in_githubs_renderer(app: App) -> None:
    doc = _switch_doc()
    doc["data"]["instructions_url"] = "https://www.dadeschools.net/teams"
    for field, value in MARKDOWN_ATTACKS.items():
        doc["data"][field] = value
    event = parse_event(json.dumps(doc))
    md = render_one(app.pipeline, "platform-switch", event, "press_release", "en")[0].parts["md"]
    html = cmarkgfm.github_flavored_markdown_to_html(md, options=cmarkgfm.cmark.Options.CMARK_OPT_UNSAFE)
    links = [a for a in html.split("<a ")[1:]]
    # the only link is the instructions URL, an https field, as an autolink
    assert len(links) == 1 and links[0].startswith('href="https://www.dadeschools.net/teams"'), html
    assert "<img" not in html and "javascript:" not in html.split("<p>")[0]
    assert (
        "<h1>APPROVED" not in html and "<li>by the Superintendent" not in html and "<blockquote>\n<p>quote" not in html
    )
    assert "[click here](javascript:alert(1))" in html  # shown as typed
    assert "&lt;img src=x onerror=alert(3)&gt;" in html


# -- templates ---------------------------------------------------------------------------------------
def _templates_with(tmp_path: Path, name: str, text: str) -> Path:
    import shutil

    d = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", d)
    (d / name).write_text(text, "utf-8")
    return d


def test_a_template_cannot_change_the_running_process(tmp_path: Path) -> None:
    d = _templates_with(
        tmp_path, "sms/meals_schedule.en.txt.j2", "{{ district.languages.clear() or '' }}{{ event.days.pop() }}x\n"
    )
    settings = load_settings(ROOT / "campaigns.yaml")
    env = Env.from_environ({"COMMS_TEMPLATES": str(d), "COMMS_CONFIG": str(ROOT / "campaigns.yaml")})
    problems = check_templates(settings, env)
    assert any("meal-schedule.channels.sms (en)" in p and "SecurityError" in p for p in problems), problems
    assert settings.district.languages == ["en", "es", "ht"]  # untouched


def test_a_template_that_never_ends_is_stopped(tmp_path: Path) -> None:
    d = _templates_with(
        tmp_path,
        "sms/meals_schedule.en.txt.j2",
        "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}\n",
    )
    r = Renderer(d, time_limit=0.5)
    started = time.monotonic()
    with pytest.raises(RenderError, match=r"rendering took more than 0.5s"):
        r.render("sms", "meals_schedule", "en", {"event": {}, "district": {}})
    assert time.monotonic() - started < 5


def test_a_template_cannot_build_a_huge_value_in_one_step(tmp_path: Path) -> None:
    d = _templates_with(tmp_path, "sms/meals_schedule.en.txt.j2", "{{ 'x' * 10**9 }}\n")
    with pytest.raises(RenderError, match="SecurityError"):
        Renderer(d).render("sms", "meals_schedule", "en", {})


def test_template_errors_name_the_file_and_line(tmp_path: Path) -> None:
    d = _templates_with(tmp_path, "sms/meals_schedule.en.txt.j2", "line one\n{% if %}\n")
    with pytest.raises(RenderError, match=r"sms/meals_schedule.en.txt.j2:2: syntax error"):
        Renderer(d).render("sms", "meals_schedule", "en", {})
    d = _templates_with(tmp_path / "b", "_lang/en.j2", "{% set a = 1 %}\n{% import 'no/such.j2' as x %}\n")
    with pytest.raises(RenderError, match=r"_lang/en.j2:2: asks for template 'no/such.j2', which is missing"):
        Renderer(d).render("sms", "meals_schedule", "en", {})


# -- campaigns.yaml ----------------------------------------------------------------------------------
def _config(tmp_path: Path, data: bytes) -> Path:
    p = tmp_path / "campaigns.yaml"
    p.write_bytes(data)
    return p


def test_config_files_that_are_not_text_or_too_deep_are_one_clear_error(tmp_path: Path) -> None:
    real = (ROOT / "campaigns.yaml").read_bytes()
    cases = {
        real.replace(b"name: Miami-Dade", b"name: Mi\x00ami-Dade", 1): "invalid YAML: character '\\x00' is not allowed",
        real.replace(b"Miami-Dade", b"Miami-Dad\xe9", 1): "not UTF-8 (byte 0xe9); save the file as UTF-8",
        b"a: " + b"[" * 50_000 + b"]" * 50_000: "nested too deeply",
    }
    for data, expected in cases.items():
        with pytest.raises(ConfigError) as exc:
            load_settings(_config(tmp_path, data))
        assert expected in str(exc.value), str(exc.value)


def test_duplicate_keys_name_both_lines(tmp_path: Path) -> None:
    text = (ROOT / "campaigns.yaml").read_text("utf-8")
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines, 1) if line == "  meal-schedule:")
    dup = text.replace("\n  show-up:\n", "\n  meal-schedule:\n", 1)
    second = next(i for i, line in enumerate(dup.splitlines(), 1) if line == "  meal-schedule:" and i != first)
    with pytest.raises(ConfigError, match=rf"key 'meal-schedule' repeats the one on line {first}") as exc:
        parse_settings(dup, "campaigns.yaml")
    assert str(exc.value).startswith(f"campaigns.yaml:{second}:")
    with pytest.raises(ConfigError, match=r"key 'timezone' repeats the one on line"):
        parse_settings(text.replace("  timezone:", "  timezone: America/Chicago\n  timezone:", 1))


# -- privacy ------------------------------------------------------------------------------------------
def test_provider_texts_that_quote_a_number_are_scrubbed_before_they_are_kept(
    tmp_path: Path,
    providers,
    caplog: pytest.LogCaptureFixture,  # noqa: ANN001
) -> None:
    from comms.privacy import scrub
    from tests.conftest import MEALS, NOON, Clock, make_env, provider_env

    tw, sg = providers
    env = make_env(tmp_path, 3)
    # an error Twilio's text quotes the number in (21266), and one it is not in our table of codes for
    tw.rejections["+17860000001"] = (21266, "'To' and 'From' number cannot be the same: +17860000001")
    app = App.open(env, clock=Clock(NOON), environ=provider_env(tw, sg))
    with caplog.at_level(logging.INFO):
        app.pipeline.handle(parse_event(MEALS), "sms")
    details = app.pipeline.ledger.details("meal-schedule")
    app.close()
    failed = [d for _, st, d, _ in details if st == "failed"]
    assert failed and "0001" in failed[0] and "+17860000001" not in failed[0]
    assert "+17860000001" not in caplog.text
    assert scrub("Does not contain a valid address: maria.g01@example.org") == (
        "Does not contain a valid address: m***@e***.org"
    )
    assert scrub("error 21266, 3 items") == "error 21266, 3 items"  # codes and counts stay


# -- SMS segments ---------------------------------------------------------------------------------------
def test_a_character_is_never_split_between_segments() -> None:
    assert sms_size("a" * 152 + "€" + "a" * 152).segments == 3  # GSM-7 escape at the 153rd septet
    assert sms_size("a" * 153 + "a" * 153).segments == 2
    assert sms_size("á" * 66 + "😀" + "á" * 67).segments == 3  # a surrogate pair at the 67th unit
    assert sms_size("á" * 67 * 2).segments == 2
