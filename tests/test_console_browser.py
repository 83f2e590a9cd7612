"""The console in a real browser: Debian's Chromium, driven by Playwright, against `comms serve` and the
consumers as their own processes, sending to the local Twilio and SendGrid servers, which call the
webhooks back. Every page is checked with axe-core (WCAG 2.1 A and AA) in the browser, and a
screenshot of each is kept under tests/artifacts/screenshots/ (README: "The console").

Chromium: COMMS_TEST_CHROMIUM, or /usr/bin/chromium (tests/setup.sh installs Debian's package).
axe-core: tests/.npm/node_modules/axe-core/axe.min.js (tests/setup.sh installs it from npm).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from comms.accounts import Accounts, Role
from comms.app import Env
from comms.bus import open_bus
from comms.dev.servers import FakeSendGrid, FakeTwilio
from comms.ledger import Ledger
from tests.conftest import MEALS, NOON, ROOT, env_vars, make_env, provider_env, reap, serving, sigterm

SHOTS = ROOT / "tests" / "artifacts" / "screenshots"
AXE = ROOT / "tests" / ".npm" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = os.environ.get("COMMS_TEST_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "a long enough password"
FAMILIES = 30
UNREACHABLE = 4
# The flags a headless Chromium needs on a machine without a network or a display (as root)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
# libfaketime (.ci/run) is for the project's processes; the browser and Playwright's driver run on
# the real clock
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: run tests/setup.sh (Debian's chromium package)"
    assert AXE.exists(), f"no axe-core at {AXE}: run tests/setup.sh (npm install axe-core)"
    saved = os.environ.pop("LD_PRELOAD", None)  # Playwright's driver inherits os.environ when it starts
    try:
        pw = sync_playwright().start()
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, env=CLEAN_ENV)
    finally:
        if saved is not None:
            os.environ["LD_PRELOAD"] = saved
    yield b
    b.close()
    pw.stop()


def accessible(page: Page, name: str) -> None:
    """No WCAG 2.1 A/AA violation axe-core finds on the page; its screenshot saved."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = page.evaluate(
        "() => axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
    )
    problems = [f"{v['id']}: {v['help']} ({[n['target'] for n in v['nodes']][:3]})" for v in result["violations"]]
    assert not problems, f"{name}: {problems}"


def login(page: Page, url: str, name: str) -> None:
    page.goto(f"{url}/console")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Account").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{url}/console")


def ledger_states(env: Env, campaign: str) -> Counter[tuple[str, str, str]]:
    ledger = Ledger(env.ledger)
    out = Counter({(r.channel, r.lang, r.state): r.messages for r in ledger.counts(campaign)})
    ledger.close()
    return out


def planned(env: Env) -> int:
    """Family messages ledgered so far (awaiting approval or held back), once the press drafts are."""
    s = ledger_states(env, "meal-schedule")
    return sum(n for (ch, _, _), n in s.items() if ch != "press_release") if s[("press_release", "en", "sent")] else 0


def wait_for(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_from_an_event_awaiting_approval_to_delivered_in_the_browser(
    tmp_path: Path, browser: Browser, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    tw, sg = providers
    env = make_env(tmp_path, FAMILIES, COMMS_CONFIG=str(ROOT / "campaigns.yaml"))
    doc = json.loads(env.roster.read_text("utf-8"))
    for g in doc["guardians"][:UNREACHABLE]:  # no texts, no e-mail address: no channel reaches them
        g["sms_consent"], g["email"] = False, None
    env.roster.write_text(json.dumps(doc), "utf-8")
    with Accounts(env.ledger.with_name("accounts.db")) as accounts:
        accounts.add("ana", Role.APPROVER, PASSWORD)
        accounts.add("ben", Role.ADMIN, PASSWORD)
        accounts.add("vera", Role.VIEWER, PASSWORD)
    with open_bus(env.bus_url) as bus:
        bus.publish_many(env.topic, [(None, MEALS)])  # meal-schedule: approval two
    webhooks = {"TWILIO_AUTH_TOKEN": "token", "COMMS_PUBLIC_URL": "{url}", "SENDGRID_WEBHOOK_PUBLIC_KEY": sg.public_key}
    with serving(env, tmp_path / "serve.log", **webhooks) as (url, _):
        sg.events_url = f"{url}/webhooks/sendgrid/events"
        log = tmp_path / "consumers.log"
        consumers_env = {
            **os.environ, **env_vars(env), **provider_env(tw, sg),
            "COMMS_TWILIO_STATUS_CALLBACK": f"{url}/webhooks/twilio/status",
        }  # fmt: skip
        with open(log, "w") as out:
            consumers = subprocess.Popen(
                [sys.executable, "-m", "comms.cli", "run", "--only", "press", "--only", "sms", "--only", "email",
                 "--only", "feedback"],
                env=consumers_env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        try:
            wait_for("the plan", lambda: planned(env) == FAMILIES * 2)
            flow(browser, url, env, tw, sg, tmp_path)
            assert consumers.poll() is None, log.read_text()
            assert sigterm(consumers) == 0, log.read_text()
        finally:
            reap(consumers)


def flow(browser: Browser, url: str, env: Env, tw: FakeTwilio, sg: FakeSendGrid, tmp_path: Path) -> None:
    ctx = browser.new_context(bypass_csp=True, accept_downloads=True)  # bypass_csp: to add axe-core's script
    page = ctx.new_page()
    page.goto(f"{url}/login")
    accessible(page, "login")
    login(page, url, "ana")
    row = page.get_by_role("row").filter(has_text="meals-2020-09-01")
    expect(row).to_contain_text("awaiting approval")
    accessible(page, "inbox")

    # the send plan's numbers are the ledger's
    row.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Send plan")).to_be_visible()
    event_url = page.url
    held = ledger_states(env, "meal-schedule")
    for channel in ("sms", "email"):
        for lang in ("en", "es", "ht"):
            cell = page.locator(f"tr[data-channel='{channel}'][data-lang='{lang}'] td.planned")
            expect(cell).to_have_text(str(held[(channel, lang, "awaiting_approval")]))
    expect(page.locator("article.rendering[lang='ht']").first).to_be_visible()
    expect(page.locator("article.rendering[lang='es']").first).to_contain_text("Comidas")
    accessible(page, "send-plan")
    page.get_by_role("button", name="Approve sending").click()
    expect(page.locator("p.approval")).to_contain_text("approved by ana")
    expect(page.get_by_role("button", name="Approve sending")).to_be_visible()  # one of two
    page.get_by_role("button", name="Approve sending").click()
    assert "another person" in page.content()  # the same person cannot be both approvers
    assert not sum(tw.per_recipient().values()) and not sum(sg.per_recipient().values())

    # a viewer sees the plan but no button
    viewer = browser.new_context().new_page()
    login(viewer, url, "vera")
    viewer.goto(event_url)
    expect(viewer.locator("p.approval")).to_contain_text("approved by ana")
    expect(viewer.get_by_role("button", name="Approve sending")).to_have_count(0)
    viewer.context.close()

    # the second approver; the progress fills in as the consumers send
    page.goto(f"{url}/console")
    page.get_by_role("button", name="Log out").click()
    login(page, url, "ben")
    page.get_by_role("row").filter(has_text="meals-2020-09-01").get_by_role("link").click()
    page.get_by_role("button", name="Approve sending").click()
    expect(page.locator("p.approval").first).to_contain_text("approved by ana, ben")
    total = sum(held.values())
    expect(page.locator("[data-done]")).to_have_attribute("data-done", str(total), timeout=60_000)
    sent = sum(tw.per_recipient().values()) + sum(sg.per_recipient().values())
    assert sent == sum(n for k, n in held.items() if k[2] == "awaiting_approval")
    accessible(page, "send-plan-done")

    # the providers report delivery; the delivery page shows it live
    page.goto(f"{url}/console/delivery")
    tw.report(("sent", "delivered"))
    sg.report(f"{url}/webhooks/sendgrid/events", "delivered", int(NOON.timestamp()))  # serve's clock
    delivered = sum(tw.per_recipient().values()) + sum(sg.per_recipient().values())
    cells = page.locator("tr[data-campaign='meal-schedule'] td[data-col='delivered']")
    wait_for("the receipts", lambda: sum(int(c.replace(",", "")) for c in cells.all_inner_texts()) == delivered)
    accessible(page, "delivery")

    # not reached: the families with no message delivered, as a CSV for school staff
    page.goto(f"{url}/console")
    page.get_by_role("row").filter(has_text="meals-2020-09-01").get_by_role("link").click()
    page.get_by_role("link", name="Families not reached").click()
    accessible(page, "not-reached")
    with page.expect_download() as dl:
        page.get_by_role("link", name=re.compile("Download the list")).click()
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text("utf-8"))))
    assert sorted(r["guardian id"] for r in rows) == [f"H{i:06d}" for i in range(UNREACHABLE)]
    assert all("sms: suppressed (no_consent)" in r["why not reached"] for r in rows)

    # a press draft: edited, approved, exported as DOCX
    page.goto(f"{url}/console/drafts")
    accessible(page, "drafts")
    page.get_by_role("link", name=re.compile(r"meal-schedule-.*\.es")).click()
    text = page.get_by_label(re.compile("Draft text")).input_value()
    assert "Comidas" in text or "comidas" in text
    page.get_by_label(re.compile("Draft text")).fill(text.replace("MIAMI —", "MIAMI — (revisado)"))
    page.get_by_role("button", name=re.compile("Save as revision 1")).click()
    expect(page.get_by_text("revision 1: ben")).to_be_visible()
    page.get_by_role("button", name="Approve revision 1").click()
    expect(page.locator("strong.status")).to_have_text("approved (revision 1)")
    accessible(page, "draft")
    with page.expect_download() as dl:
        page.get_by_role("link", name="Download DOCX").click()
    document = docx.Document(dl.value.path())
    paragraphs = [p.text for p in document.paragraphs]
    assert paragraphs[0] == "Miami-Dade County Public Schools\nOffice of Communications"
    assert any(p.startswith("MIAMI — (revisado)") for p in paragraphs)  # the dateline, as edited
    assert "# # #" in paragraphs
    for name in ("replies", "audit", "users"):
        page.goto(f"{url}/console/{name}")
        accessible(page, name)
    expect(page.get_by_role("table").first).to_contain_text("ana")
    ctx.close()
