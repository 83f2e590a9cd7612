"""The console over HTTP, as any client sees it (the browser tests are in test_console_browser.py):
nothing answers without a session, roles and CSRF tokens are enforced, logins are throttled, what
families and events hold is shown as text, and the CSV export opens safely in a spreadsheet."""

from __future__ import annotations

import csv
import datetime as dt
import http.cookiejar
import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docx
import pytest

from comms.accounts import Accounts, Role
from comms.app import App, Env
from comms.console.reach import safe_cell
from comms.console.sessions import Sessions, Throttle
from comms.dev.servers import FakeSendGrid, FakeTwilio
from comms.ledger import Ledger
from comms.worker import run
from tests.conftest import MEALS, NOON, ROOT, SWITCH, Clock, make_env, provider_env, serving

PASSWORD = "a long enough password"
HOSTILE = {
    "H000000": "<script>alert('x')</script>",
    "H000001": '=HYPERLINK("http://evil.example","click")',
    "H000002": "@SUM(A1:A9)",
    "H000003": "Wòdlò Séjour-Pétion",  # Haitian Creole and Spanish accents, shown as they are
}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Client:
    """A client with its own cookie jar, that never follows redirects (the tests look at them)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def request(self, path: str, form: dict[str, str] | None = None) -> Answer:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, method="POST" if form is not None else "GET")
        try:
            with self.opener.open(req, timeout=30) as resp:
                return Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())

    def csrf(self, path: str = "/console") -> str:
        page = self.request(path)
        m = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert m, page.text[:500]
        return m.group(1)

    def login(self, name: str, password: str = PASSWORD) -> Answer:
        token = self.csrf("/login")
        return self.request("/login", {"csrf": token, "name": name, "password": password, "next": "/console"})


@dataclass
class Site:
    url: str
    env: Env
    uid: str  # the meal-schedule event, awaiting two approvals
    draft: str  # a press draft's ledger key

    def client(self, name: str | None = None) -> Client:
        c = Client(self.url)
        if name:
            assert c.login(name).status == 303
        return c


def hostile_env(tmp_path: Path) -> Env:
    env = make_env(tmp_path, 9, COMMS_CONFIG=str(ROOT / "campaigns.yaml"))
    doc = json.loads(env.roster.read_text("utf-8"))
    for g in doc["guardians"]:
        g["first_name"] = HOSTILE.get(g["id"], g["first_name"])
    env.roster.write_text(json.dumps(doc, ensure_ascii=False), "utf-8")
    return env


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("console")
    env = hostile_env(tmp)
    with FakeTwilio() as tw, FakeSendGrid() as sg:
        app = App.open(env, clock=Clock(NOON), environ=provider_env(tw, sg))
        app.bus.publish_many(env.topic, [(None, MEALS), (None, SWITCH)])
        workers = app.workers(["press", "sms", "email"])
        run(workers, until_idle=True)
        for w in workers:
            w.close()
        app.close()
    ledger = Ledger(env.ledger)
    (draft,) = ledger.conn.execute("SELECT key FROM deliveries WHERE channel='press_release' AND lang='es' LIMIT 1")
    ledger.conn.execute(
        "INSERT INTO replies VALUES ('SM1', 'sms', '+17860000001', '=cmd|'' /C calc''!A0 <b>hola</b>', ?)",
        (NOON.timestamp(),),
    )
    ledger.close()
    with Accounts(env.ledger.with_name("accounts.db")) as accounts:
        for name, role in (
            ("ana", Role.ADMIN),
            ("ben", Role.APPROVER),
            ("ed", Role.EDITOR),
            ("vera", Role.VIEWER),
            ("tina", Role.VIEWER),
        ):
            accounts.add(name, role, PASSWORD)
    with serving(env, tmp / "serve.log") as (url, _):
        yield Site(url, env, "https://dadeschools.net/food-nutrition#meals-2020-09-01", draft[0])


PAGES = [
    "/console",
    "/console/event?uid=x",
    "/console/drafts",
    "/console/draft?key=x",
    "/console/delivery",
    "/console/optouts?campaign=x",
    "/console/not-reached?uid=x",
    "/console/replies",
    "/console/audit",
    "/console/users",
]
EXPORTS = [
    "/console/draft.docx?key=x",
    "/console/draft.html?key=x",
    "/console/not-reached.csv?uid=x",
    "/console/fragment/inbox",
    "/console/fragment/delivery",
    "/console/fragment/progress?uid=x",
]
POSTS = ["/console/event/decide", "/console/draft/edit", "/console/draft/approve", "/console/users", "/logout"]


def test_nothing_answers_without_a_session(site: Site) -> None:
    anonymous = site.client()
    for path in PAGES:
        a = anonymous.request(path)
        assert a.status == 303 and a.headers["location"] == "/login?next=" + urllib.parse.quote(path, safe=""), path
    for path in EXPORTS:
        assert anonymous.request(path).status == 401, path
    for path in POSTS:
        assert anonymous.request(path, {"csrf": "x", "uid": site.uid, "verdict": "approve"}).status in (303, 401)
    forged = Client(site.url)
    forged.jar.set_cookie(_cookie("comms_session", "eyJ1IjoiYW5hIn0.forged"))
    assert forged.request("/console").status == 303
    assert site.client().request("/healthz").status == 200  # liveness and the webhooks keep their own rules


def test_roles_csrf_and_two_different_approvers(site: Site) -> None:
    vera, ben, ana = site.client("vera"), site.client("ben"), site.client("ana")
    token = vera.csrf()
    refused = vera.request("/console/event/decide", {"csrf": token, "uid": site.uid, "verdict": "approve"})
    assert refused.status == 403 and "viewer" in refused.text
    assert vera.request("/console/users").status == 403  # accounts are the admin's
    forged = ben.request("/console/event/decide", {"csrf": "forged", "uid": site.uid, "verdict": "approve"})
    assert forged.status == 403 and "CSRF" in forged.text
    stolen = ben.request("/console/event/decide", {"csrf": token, "uid": site.uid, "verdict": "approve"})
    assert stolen.status == 403  # another session's token is no token
    path = "/console/event?uid=" + urllib.parse.quote(site.uid, safe="")
    first = ben.request("/console/event/decide", {"csrf": ben.csrf(path), "uid": site.uid, "verdict": "approve"})
    assert first.status == 303
    again = ben.request("/console/event/decide", {"csrf": ben.csrf(path), "uid": site.uid, "verdict": "approve"})
    assert again.status == 409 and "another person" in again.text
    page = ana.request(path).text
    assert "approved by ben" in page and "awaiting approval" in page
    audit = ana.request("/console/audit").text
    assert "ben" in audit and "1 of 2" in audit


def test_logins_are_throttled_and_errors_say_nothing_of_which_part_was_wrong(site: Site) -> None:
    c = site.client()
    wrong = c.login("tina", "not the password")
    assert wrong.status == 401 and "Wrong name or password" in wrong.text
    assert c.login("nobody", "not the password").text.count("Wrong name or password") == 1
    for _ in range(4):
        c.login("tina", "still not it")
    throttled = c.login("tina")  # the right password, too late
    assert throttled.status == 429 and "Too many failed attempts" in throttled.text


def test_what_events_rosters_and_replies_hold_is_text_and_the_csv_is_safe(site: Site) -> None:
    ana = site.client("ana")
    uid = urllib.parse.quote(site.uid, safe="")
    page = ana.request(f"/console/not-reached?uid={uid}")
    assert page.status == 200
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text and "<script>alert" not in page.text
    assert "Wòdlò Séjour-Pétion" in page.text
    exported = ana.request(f"/console/not-reached.csv?uid={uid}")
    assert exported.status == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    names = {r["name"] for r in rows}
    assert "'" + HOSTILE["H000001"] in names and "'" + HOSTILE["H000002"] in names  # formulas neutralised
    assert HOSTILE["H000000"] in names  # text, not a formula: as it is
    assert all(not r[k].startswith(("=", "+", "-", "@")) for r in rows for k in r)
    replies = ana.request("/console/replies").text
    assert "&lt;b&gt;hola&lt;/b&gt;" in replies and "<b>hola" not in replies
    headers = ana.request("/console").headers
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    assert [safe_cell(v) for v in ("=1+1", "+1", "-1", "@x", "plain", "\t=x")] == [
        "'=1+1", "'+1", "'-1", "'@x", "plain", "'\t=x",
    ]  # fmt: skip


def test_a_press_draft_is_edited_approved_and_exported(site: Site) -> None:
    ed, ben = site.client("ed"), site.client("ben")
    path = f"/console/draft?key={site.draft}"
    md = (
        "**M-DCPS Oficina de Comunicaciones**\n\nFOR IMMEDIATE RELEASE\n\n# Titular\n\n"
        "MIAMI — Texto <img src=x>.\n\n\\# \\# \\#\n"
    )
    assert ed.request("/console/draft/approve", {"csrf": ed.csrf(path), "key": site.draft}).status == 403
    assert ed.request("/console/draft/edit", {"csrf": ed.csrf(path), "key": site.draft, "md": md}).status == 303
    page = ben.request(path).text
    assert "revision 1: ed" in page and "&lt;img src=x&gt;" in page and "<img src=x>" not in page
    assert ben.request("/console/draft/approve", {"csrf": ben.csrf(path), "key": site.draft}).status == 303
    assert "approved (revision 1)" in ben.request(path).text
    exported = ben.request(f"/console/draft.docx?key={site.draft}")
    assert exported.status == 200 and "attachment" in exported.headers["content-disposition"]
    document = docx.Document(io.BytesIO(exported.body))
    texts = [p.text for p in document.paragraphs]
    assert texts[0] == "Miami-Dade County Public Schools\nOffice of Communications"  # the banner
    assert "FOR IMMEDIATE RELEASE" in texts and "# # #" in texts and "MIAMI — Texto <img src=x>." in texts
    assert "(305) 995-1000" in document.sections[0].footer.paragraphs[0].text
    html = ben.request(f"/console/draft.html?key={site.draft}").text
    assert "APPROVED (REVISION 1)" in html and "&lt;img src=x&gt;" in html


def test_sessions_end_when_idle_or_old_and_the_throttle_forgets() -> None:
    clock = Clock(NOON)
    sessions = Sessions(b"secret", clock, idle=600, lifetime=3600)
    s = sessions.new("ana")
    cookie = sessions.dump(s)
    clock.now += dt.timedelta(seconds=599)
    assert sessions.load(cookie) is not None
    cookie = sessions.dump(sessions.touch(s))  # a page view
    clock.now += dt.timedelta(seconds=599)
    assert sessions.load(cookie) is not None
    clock.now += dt.timedelta(seconds=2)
    assert sessions.load(cookie) is None  # idle for more than 10 minutes
    s = sessions.new("ana")
    for _ in range(8):
        clock.now += dt.timedelta(seconds=500)
        s = sessions.touch(s)
    assert sessions.load(sessions.dump(s)) is None  # never idle, but logged in more than an hour ago
    assert Sessions(b"another secret", clock).load(sessions.dump(sessions.new("ana"))) is None
    throttle = Throttle(clock, limit=2, window=60)
    throttle.failed("name:ana")
    throttle.failed("name:ana")
    assert throttle.wait("name:ana", "client:1") == 60
    clock.now += dt.timedelta(seconds=61)
    assert throttle.wait("name:ana") == 0


def _cookie(name: str, value: str) -> http.cookiejar.Cookie:
    return http.cookiejar.Cookie(
        0, name, value, None, False, "127.0.0.1", False, False, "/", True, False, None, False, None, None, {}
    )


def test_a_stale_translation_blocks_approval_and_the_console_says_why(tmp_path: Path) -> None:
    import shutil

    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    en = templates / "sms/meals_schedule.en.txt.j2"
    en.write_text(en.read_text("utf-8").replace("Free grab-and-go", "Free grab-and-go school"), "utf-8")
    env = make_env(tmp_path, 6, COMMS_CONFIG=str(ROOT / "campaigns.yaml"), COMMS_TEMPLATES=str(templates))
    app = App.open(env, clock=Clock(NOON), environ={})
    app.bus.publish_many(env.topic, [(None, MEALS)])
    workers = app.workers(["sms"])
    run(workers, until_idle=True)
    for w in workers:
        w.close()
    app.close()
    with Accounts(env.ledger.with_name("accounts.db")) as accounts:
        accounts.add("ben", Role.APPROVER, PASSWORD)
    uid = "https://dadeschools.net/food-nutrition#meals-2020-09-01"
    with serving(env, tmp_path / "serve.log") as (url, _):
        ben = Site(url, env, uid, "").client("ben")
        path = "/console/event?uid=" + urllib.parse.quote(uid, safe="")
        page = ben.request(path).text
        assert "Cannot be approved yet:" in page and "es, ht need review" in page
        assert 'class="approve"' not in page  # no button that could only fail
        token = ben.csrf("/console")
        tried = ben.request("/console/event/decide", {"csrf": token, "uid": uid, "verdict": "approve"})
        assert tried.status == 409 and "meal-schedule cannot be approved: es, ht need review" in tried.text
