"""The communications office's console, served by `comms serve` beside the webhooks.

    GET  /login, POST /login, POST /logout
    GET  /console                       inbox: events that produced work, newest first, live
    GET  /console/event?uid=            the send plan and every rendering; approve / reject (POST)
    GET  /console/drafts, /console/draft?key=
                                        press drafts: read, edit (editor), approve (approver),
                                        export .docx and .html
    GET  /console/delivery              per campaign and language, live while a fan-out runs
    GET  /console/not-reached?uid=      families with nothing delivered, by school; .csv export
    GET  /console/replies, /console/audit, /console/users (admin)

Every page, export and fragment needs a session (comms/console/sessions.py) and a role
(comms/accounts.py): without one a page answers 303 to /login and an export or a fragment 401.
Every form carries the session's CSRF token. Pages are rendered by Jinja2 with autoescaping, so
whatever an event, the roster or a family's reply holds is shown as text; the Content-Security-
Policy allows only the console's own script and styles.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from comms.accounts import Account, Accounts, Role
from comms.approvals import Approvals, ref
from comms.clock import Clock
from comms.config import Settings
from comms.console import plan as plans
from comms.console.drafts import PRESS, Drafts
from comms.console.reach import csv_text, not_reached
from comms.console.sessions import COOKIE, Session, Sessions, Throttle
from comms.errors import AccessError, ApprovalError
from comms.ledger import Ledger, State
from comms.roster import Roster

log = logging.getLogger("comms.console")
STATIC = Path(__file__).parent / "static"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Ctx:
    account: Account
    session: Session
    form: dict[str, str]


Handler = Callable[[Request, Ctx], Awaitable[Response]]


class ConsoleApp:
    def __init__(
        self,
        *,
        settings: Settings,
        roster: Roster,
        ledger: Ledger,
        accounts: Accounts,
        sessions: Sessions,
        clock: Clock,
        secure: bool,
        templates: Path | None = None,
    ) -> None:
        self.settings, self.roster, self.ledger, self.accounts = settings, roster, ledger, accounts
        self.sessions, self.clock, self.secure = sessions, clock, secure
        self.approvals = Approvals(ledger, settings, templates)
        self.drafts = Drafts(ledger, settings)
        # five wrong passwords per account, thirty per client address (many people share an office's
        # address, or a proxy's), in fifteen minutes
        self.by_name, self.by_client = Throttle(clock, limit=5), Throttle(clock, limit=30)
        self.plans: dict[str, tuple[Any, list[plans.CampaignPlan]]] = {}  # uid -> (tallies then, plan)
        self.jinja = Environment(
            loader=PackageLoader("comms.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.jinja.filters["when"] = self._when
        self.jinja.filters["money"] = _money
        self.jinja.filters["duration"] = _duration
        self.jinja.filters["ref"] = ref
        self.jinja.globals["quote"] = lambda v: quote(str(v), safe="")

    # -- plumbing ---------------------------------------------------------------------------------------
    def _when(self, ts: float | None) -> str:
        if not ts:
            return "-"
        return dt.datetime.fromtimestamp(ts, self.settings.district.tz).strftime("%Y-%m-%d %H:%M")

    def render(self, template: str, ctx: Ctx | None, status: int = 200, **values: Any) -> HTMLResponse:
        html = self.jinja.get_template(template).render(
            account=ctx.account if ctx else None,
            csrf=ctx.session.csrf if ctx else values.pop("csrf", ""),
            district=self.settings.district,
            **values,
        )
        return HTMLResponse(html, status_code=status)

    def page(self, role: Role, handler: Handler, *, export: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """A route that needs a session and `role`; POSTs need the session's CSRF token too. An export
        or a live fragment (export=True) answers 401 without a session instead of the login redirect,
        and does not count as activity for the idle timeout."""

        async def endpoint(request: Request) -> Response:
            session = self.sessions.load(request.cookies.get(COOKIE))
            account = await run_in_threadpool(self.accounts.get, session.user) if session and session.user else None
            if session is None or account is None or not account.active:
                if export:
                    response: Response = PlainTextResponse("login required", status_code=401)
                else:
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    response = RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
                return _secured(response)
            if not account.may(role):
                return _secured(PlainTextResponse(f"your role ({account.role.label}) may not do this", 403))
            form: dict[str, str] = {}
            try:
                if request.method == "POST":
                    form = await _form(request)
                    if not session.csrf_ok(form.get("csrf")):
                        log.warning("console: refused a POST to %s: bad CSRF token", request.url.path)
                        return _secured(PlainTextResponse("bad or missing CSRF token: reload the page", 403))
                response = await handler(request, Ctx(account, session, form))
            except (AccessError, ApprovalError) as exc:
                response = PlainTextResponse(str(exc), status_code=409)
            if not export and "set-cookie" not in response.headers:  # a page view: the idle timeout starts again
                self._set_cookie(response, self.sessions.touch(session))
            return _secured(response)

        return endpoint

    def _set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self.sessions.dump(session),
            httponly=True,
            samesite="strict",
            secure=self.secure,
            path="/",
            max_age=int(self.sessions.lifetime),
        )

    # -- login ------------------------------------------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        session = self.sessions.load(request.cookies.get(COOKIE)) or self.sessions.new(None)
        response = self.render("login.html", None, csrf=session.csrf, next=_next(request), error=None)
        self._set_cookie(response, session)
        return _secured(response)

    async def login(self, request: Request) -> Response:
        session = self.sessions.load(request.cookies.get(COOKIE))
        try:
            form = await _form(request)
        except AccessError as exc:
            return _secured(PlainTextResponse(str(exc), status_code=413))
        if session is None or not session.csrf_ok(form.get("csrf")):
            return _secured(PlainTextResponse("bad or missing CSRF token: reload the login page", 403))
        name, password = form.get("name", "").strip().lower(), form.get("password", "")
        client = request.client.host if request.client else "unknown"
        if wait := max(self.by_name.wait(name), self.by_client.wait(client)):
            log.warning("console: login throttled for an account after repeated failures")
            response = self.render(
                "login.html", None, 429, csrf=session.csrf, next=form.get("next", ""),
                error=f"Too many failed attempts: try again in {int(wait // 60) + 1} minutes.",
            )  # fmt: skip
            return _secured(response)
        account = await run_in_threadpool(self.accounts.verify, name, password)
        if account is None:
            self.by_name.failed(name)
            self.by_client.failed(client)
            response = self.render(
                "login.html", None, 401, csrf=session.csrf, next=form.get("next", ""),
                error="Wrong name or password.",
            )  # fmt: skip
            return _secured(response)
        self.by_name.succeeded(name)
        target = form.get("next", "")
        redirect = RedirectResponse(target if _local(target) else "/console", status_code=303)
        self._set_cookie(redirect, self.sessions.new(account.name))  # a new CSRF token with the new session
        return _secured(redirect)

    async def logout(self, request: Request, ctx: Ctx) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- pages ------------------------------------------------------------------------------------------
    def _inbox(self) -> list[dict[str, Any]]:
        events = self.ledger.query(
            "SELECT uid, created FROM events WHERE uid IN (SELECT event_uid FROM tallies WHERE n > 0) "
            "ORDER BY created DESC LIMIT 100"
        )
        tallies = self.ledger.tallies([str(u) for u, _ in events])
        by_event: dict[str, list[tuple[str, str, str, str, str, int]]] = defaultdict(list)
        for row in tallies:
            by_event[row[0]].append(row)
        out = []
        for uid, created in events:
            rows = by_event[uid]
            campaigns = sorted({r[1] for r in rows})
            statuses = [self.approvals.status(uid, c) for c in campaigns]
            s = plans.summary(rows)
            out.append(
                {
                    "uid": uid,
                    "created": created,
                    "campaigns": campaigns,
                    "priority": ", ".join(
                        sorted({self.settings.campaigns[c].priority for c in campaigns if c in self.settings.campaigns})
                    ),
                    "state": _event_state(statuses, s),
                    **s,
                }
            )
        return out

    async def inbox(self, request: Request, ctx: Ctx) -> Response:
        return self.render("inbox.html", ctx, events=await run_in_threadpool(self._inbox))

    async def inbox_rows(self, request: Request, ctx: Ctx) -> Response:
        return self.render("_inbox_rows.html", ctx, events=await run_in_threadpool(self._inbox))

    def plan_of(self, uid: str) -> list[plans.CampaignPlan]:
        """The event's plan, computed again only when its tallies (or approvals) changed."""
        stamp = (self.ledger.tallies([uid]), [self.approvals.status(uid, c) for c in self.approvals.gated(uid)])
        cached = self.plans.get(uid)
        if cached is None or cached[0] != stamp:
            self.plans[uid] = (stamp, plans.plan(self.ledger, self.settings, uid, self.clock()))
            if len(self.plans) > 64:
                self.plans.pop(next(iter(self.plans)))
        return self.plans[uid][1]

    async def event(self, request: Request, ctx: Ctx) -> Response:
        uid = request.query_params.get("uid", "")
        campaigns = await run_in_threadpool(self.plan_of, uid)
        if not campaigns:
            return PlainTextResponse("no such event in the ledger", status_code=404)
        stale = {c.campaign: self.approvals.stale(c.campaign) for c in campaigns}
        return self.render("event.html", ctx, uid=uid, campaigns=campaigns, role=Role, stale=stale)

    async def event_progress(self, request: Request, ctx: Ctx) -> Response:
        uid = request.query_params.get("uid", "")
        rows = await run_in_threadpool(self.ledger.tallies, [uid])
        return self.render(
            "_progress.html", ctx, s=plans.summary(rows), rows=_pivot(rows, ("campaign", "channel", "lang"))
        )

    async def decide(self, request: Request, ctx: Ctx) -> Response:
        uid = ctx.form.get("uid", "")
        if ctx.form.get("verdict") == "reject":
            reason = ctx.form.get("reason", "")
            await run_in_threadpool(self.approvals.reject, uid, ctx.account.name, reason)
        else:
            await run_in_threadpool(self.approvals.approve, uid, ctx.account.name)
        return RedirectResponse(f"/console/event?uid={quote(uid, safe='')}", status_code=303)

    async def drafts_page(self, request: Request, ctx: Ctx) -> Response:
        return self.render("drafts.html", ctx, drafts=await run_in_threadpool(self.drafts.all))

    async def draft(self, request: Request, ctx: Ctx) -> Response:
        d = await run_in_threadpool(self.drafts.get, request.query_params.get("key", ""))
        if d is None:
            return PlainTextResponse("no such draft", status_code=404)
        return self.render("draft.html", ctx, d=d, preview_body=Markup(self.drafts.body_html(d)), role=Role)

    async def draft_edit(self, request: Request, ctx: Ctx) -> Response:
        key = ctx.form.get("key", "")
        await run_in_threadpool(self.drafts.edit, key, ctx.form.get("md", ""), ctx.account.name)
        return RedirectResponse(f"/console/draft?key={quote(key, safe='')}", status_code=303)

    async def draft_approve(self, request: Request, ctx: Ctx) -> Response:
        key = ctx.form.get("key", "")
        await run_in_threadpool(self.drafts.approve, key, ctx.account.name)
        return RedirectResponse(f"/console/draft?key={quote(key, safe='')}", status_code=303)

    async def draft_export(self, request: Request, ctx: Ctx) -> Response:
        d = await run_in_threadpool(self.drafts.get, request.query_params.get("key", ""))
        if d is None:
            return PlainTextResponse("no such draft", status_code=404)
        if request.url.path.endswith(".docx"):
            body = await run_in_threadpool(self.drafts.docx, d)
            media = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            return Response(body, media_type=media, headers=_attachment(f"{d.name}.docx"))
        return Response(self.drafts.html(d), media_type="text/html", headers=_attachment(f"{d.name}.html"))

    def _delivery(self) -> list[dict[str, Any]]:
        # a press draft is not a message to a family
        return _pivot([r for r in self.ledger.tallies() if r[2] != PRESS], ("campaign", "lang"), total="messages")

    async def delivery(self, request: Request, ctx: Ctx) -> Response:
        return self.render("delivery.html", ctx, rows=await run_in_threadpool(self._delivery), columns=COLUMNS)

    async def delivery_rows(self, request: Request, ctx: Ctx) -> Response:
        rows = await run_in_threadpool(self._delivery)
        return self.render("_delivery_rows.html", ctx, rows=rows, columns=COLUMNS)

    async def optouts(self, request: Request, ctx: Ctx) -> Response:
        cid = request.query_params.get("campaign", "")
        rows = await run_in_threadpool(self.ledger.opted_out_since, cid)
        return self.render("optouts.html", ctx, campaign=cid, rows=rows)

    def _not_reached(self, uid: str) -> dict[str, Any]:
        campaigns = sorted({r[1] for r in self.ledger.tallies([uid])})
        families = [f for c in campaigns for f in not_reached(self.ledger, self.roster, c, uid)]
        seen: dict[str, Any] = {}
        for f in families:  # a family in two campaigns of the event once
            seen.setdefault(f.guardian, f)
        by_school: dict[str, int] = defaultdict(int)
        for f in seen.values():
            for s in f.schools or ("(no school)",):
                by_school[s] += 1
        return {"families": list(seen.values()), "by_school": sorted(by_school.items()), "campaigns": campaigns}

    async def not_reached_page(self, request: Request, ctx: Ctx) -> Response:
        uid = request.query_params.get("uid", "")
        data = await run_in_threadpool(self._not_reached, uid)
        return self.render("not_reached.html", ctx, uid=uid, shown=data["families"][:500], **data)

    async def not_reached_csv(self, request: Request, ctx: Ctx) -> Response:
        uid = request.query_params.get("uid", "")
        data = await run_in_threadpool(self._not_reached, uid)
        return Response(
            csv_text(data["families"]),
            media_type="text/csv; charset=utf-8",
            headers=_attachment(f"not-reached-{ref(uid)}.csv"),
        )

    async def replies(self, request: Request, ctx: Ctx) -> Response:
        rows = await run_in_threadpool(self.ledger.replies, 200)
        by_phone = {g.phone: g for g in self.roster.guardians.values() if g.phone}
        shown = [(ch, addr, by_phone.get(addr), body, at) for ch, addr, body, at in rows]
        return self.render("replies.html", ctx, rows=shown)

    async def audit(self, request: Request, ctx: Ctx) -> Response:
        return self.render("audit.html", ctx, lines=await run_in_threadpool(self.approvals.audit, 500))

    async def users(self, request: Request, ctx: Ctx) -> Response:
        error = None
        if request.method == "POST":
            try:
                name, role = ctx.form.get("name", "").strip().lower(), ctx.form.get("role", "viewer")
                if ctx.form.get("action") == "disable":
                    if name == ctx.account.name:
                        raise AccessError("you cannot disable your own account")
                    await run_in_threadpool(self.accounts.set_active, name, False)
                    detail = f"disabled {name}"
                else:
                    await run_in_threadpool(self.accounts.add, name, Role.named(role), ctx.form.get("password", ""))
                    detail = f"{name} as {role}"
                await run_in_threadpool(self.approvals.log, ctx.account.name, "account", None, None, detail)
            except AccessError as exc:
                error = str(exc)
        accounts = await run_in_threadpool(self.accounts.all)
        return self.render("users.html", ctx, accounts=accounts, roles=list(Role), error=error)

    def routes(self) -> list[Route | Mount]:
        V, E, A, X = Role.VIEWER, Role.EDITOR, Role.APPROVER, Role.ADMIN
        p = self.page
        return [
            Route("/", lambda r: RedirectResponse("/console", status_code=303)),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", p(V, self.logout), methods=["POST"]),
            Route("/console", p(V, self.inbox)),
            Route("/console/fragment/inbox", p(V, self.inbox_rows, export=True)),
            Route("/console/event", p(V, self.event)),
            Route("/console/fragment/progress", p(V, self.event_progress, export=True)),
            Route("/console/event/decide", p(A, self.decide), methods=["POST"]),
            Route("/console/drafts", p(V, self.drafts_page)),
            Route("/console/draft", p(V, self.draft)),
            Route("/console/draft/edit", p(E, self.draft_edit), methods=["POST"]),
            Route("/console/draft/approve", p(A, self.draft_approve), methods=["POST"]),
            Route("/console/draft.docx", p(V, self.draft_export, export=True)),
            Route("/console/draft.html", p(V, self.draft_export, export=True)),
            Route("/console/delivery", p(V, self.delivery)),
            Route("/console/fragment/delivery", p(V, self.delivery_rows, export=True)),
            Route("/console/optouts", p(V, self.optouts)),
            Route("/console/not-reached", p(V, self.not_reached_page)),
            Route("/console/not-reached.csv", p(V, self.not_reached_csv, export=True)),
            Route("/console/replies", p(V, self.replies)),
            Route("/console/audit", p(V, self.audit)),
            Route("/console/users", p(X, self.users), methods=["GET", "POST"]),
            Mount("/console/static", StaticFiles(directory=STATIC), name="static"),
        ]


#: the delivery page's columns: the ledger's states in the words of the office
_COLUMN = {
    State.SENT: "sent",
    State.SENDING: "sending",
    State.DELIVERED: "delivered",
    State.FAILED: "failed",
    State.UNDELIVERED: "failed",
    State.BOUNCED: "bounced",
    State.DROPPED: "bounced",
    State.SPAM_REPORT: "spam report",
    State.SUPPRESSED: "held back",
    State.DEFERRED: "waiting (quiet hours, daily cap)",
    State.PENDING: "retrying",
    State.AWAITING_APPROVAL: "awaiting approval",
    State.CANCELLED: "cancelled",
    State.EXPIRED: "expired (news past)",
    State.HELD_OUT: "held out (control group)",
    State.SUPERSEDED: "superseded (a higher tier went)",
}
COLUMNS = ["messages", *dict.fromkeys(_COLUMN.values())]


_FIELDS = {"campaign": 1, "channel": 2, "lang": 3}  # a tallies row: (event, campaign, channel, lang, state, n)


def _pivot(
    rows: list[tuple[str, str, str, str, str, int]], by: tuple[str, ...], total: str | None = None
) -> list[dict[str, Any]]:
    """Tallies rows as one dict per `by` group: its fields, and messages per column in the office's
    words (and all of them under `total`)."""
    table: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        cells = table[tuple(str(row[_FIELDS[f]]) for f in by)]
        cells[_COLUMN.get(State(row[4]), row[4])] += row[5]
        if total:
            cells[total] += row[5]
    return [{**dict(zip(by, group, strict=True)), **cells} for group, cells in sorted(table.items())]


def _event_state(statuses: list[Any], s: dict[str, Any]) -> str:
    if any(st.verdict is None and st.awaiting for st in statuses):
        return "awaiting approval"
    if statuses and all(st.verdict == "rejected" for st in statuses):
        return "cancelled"
    return "done" if s["done"] >= s["total"] else "sending"


def _money(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"  # a cent's fraction still shows


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _attachment(name: str) -> dict[str, str]:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    return {"Content-Disposition": f'attachment; filename="{safe}"'}


def _local(target: str) -> bool:
    """Only a path on this console after login, never another site (`//evil.example` is one)."""
    return target.startswith("/console") and not target.startswith("//") and "\\" not in target


def _next(request: Request) -> str:
    target = request.query_params.get("next", "")
    return target if _local(target) else ""


async def _form(request: Request, limit: int = 512 * 1024) -> dict[str, str]:
    """An urlencoded form (every console form is one), up to `limit` bytes; a field given twice
    keeps its first value."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise AccessError("form too large")
    out: dict[str, str] = {}
    for k, v in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        out.setdefault(k, v)
    return out


def _secured(response: Response) -> Response:
    for k, v in HEADERS.items():
        response.headers.setdefault(k, v)
    return response


__all__ = ["ConsoleApp"]
