"""`comms`: publish events, run the consumers, check the config, preview and report."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Column, Table

from comms.errors import CommsError, ConfigError, EventValidationError
from comms.events import load_json, parse_event

if TYPE_CHECKING:
    from comms.accounts import Accounts
    from comms.approvals import Approvals
    from comms.ledger import Ledger
    from comms.producers import Producers

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="District communications: events in, press drafts, SMS and e-mail out.",
)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error line must survive a pipe or grep intact


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=False)],
    )
    # kafka-python logs every failed reconnect; our own one line per attempt says it once
    logging.getLogger("kafka").setLevel(logging.WARNING if verbose else logging.CRITICAL)


def _fail(exc: CommsError) -> None:
    err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
    raise typer.Exit(1)


def _read_input(file: str) -> str:
    """The text of FILE (or stdin), UTF-8 as the contract says; ConfigError naming what is wrong."""
    where = "standard input" if file == "-" else file
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); events are UTF-8 JSON: "
            "save the file as UTF-8"
        ) from None


def _split(text: str, where: str) -> Iterator[tuple[str, bytes]]:
    """(where, raw) per event in a JSON document, a JSON array, or JSON Lines.

    JSON Lines when the first line is a JSON value on its own; otherwise one document, whose syntax
    error (a pretty-printed file with one mistake) is reported once, where it is."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ConfigError(f"{where}: no events (the input is empty)")
    try:
        doc = load_json(text)
    except EventValidationError as whole:
        try:
            load_json(lines[0][1])
        except EventValidationError:
            raise ConfigError(f"{where}: {whole}") from None
        doc = None  # the first line stands alone: JSON Lines
    if isinstance(doc, dict):
        yield "event", text.encode()
    elif isinstance(doc, list):
        for i, item in enumerate(doc):
            yield f"item {i}", json.dumps(item, ensure_ascii=False).encode()
    elif doc is not None:
        raise ConfigError(f"{where}: expected a JSON object, an array of them, or JSON Lines; got {type(doc).__name__}")
    else:
        for n, line in lines:
            yield f"line {n}", line.encode()


@app.command()
def publish(
    file: Annotated[str, typer.Argument(help="a JSON event, a JSON array, or JSON Lines; - for stdin")],
) -> None:
    """Validate events and publish them; nothing is published if any is invalid."""
    from comms.app import Env
    from comms.bus import open_bus

    good, bad = [], []
    try:
        for where, raw in _split(_read_input(file), "standard input" if file == "-" else file):
            try:
                good.append(parse_event(raw))
            except EventValidationError as exc:
                bad.append(f"{where}: {exc}")
    except ConfigError as exc:
        _fail(exc)
    if bad:
        for b in bad[:20]:
            err.print(f"[bold red]rejected[/] {b}", highlight=False)
        if len(bad) > 20:
            err.print(f"[bold red]rejected[/] and {len(bad) - 20} more", highlight=False)
        err.print(f"nothing published: {len(bad)} of {len(bad) + len(good)} event(s) invalid", highlight=False)
        raise typer.Exit(1)
    env = Env.from_environ()
    try:
        with open_bus(env.bus_url) as bus:
            bus.publish_many(env.topic, [(e.key, e.raw) for e in good])
    except CommsError as exc:
        _fail(exc)
    out.print(f"published {len(good)} event(s) to {env.topic}")


@app.command()
def run(
    until_idle: Annotated[bool, typer.Option("--until-idle", help="stop when no consumer has work")] = False,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="a consumer: press, sms, email, attendance... (repeatable)")
    ] = None,
    verbose: Annotated[bool, typer.Option("-v")] = False,
) -> None:
    """Run the consumers (press drafts, SMS, e-mail) until stopped, or until idle."""
    stop = threading.Event()
    # SIGTERM (docker stop, systemd) finishes the batch in hand and commits it, then exits; set before
    # the pipeline is imported, so a stop during start-up is a clean stop too
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from comms.app import App
    from comms.progress import for_console
    from comms.worker import close_all
    from comms.worker import run as run_workers

    _logging(verbose)
    try:
        a = App.open()
        workers = a.workers_when_ready(only, stop)
    except CommsError as exc:
        _fail(exc)
    failed: CommsError | None = None
    a.pipeline.progress = progress = for_console(err)  # bars on a terminal, a line every 5 s in logs
    try:
        run_workers(workers, until_idle=until_idle, stop=stop)
    except KeyboardInterrupt:
        pass
    except CommsError as exc:  # a damaged, deleted or full file, or the configuration: stop, say why
        failed = exc
    finally:
        progress.close()
        close_all(*workers, a)
    if failed is not None:
        _fail(failed)
    for w in workers:
        out.print(f"{w.group}: " + ", ".join(f"{k} {v}" for k, v in sorted(w.stats.items())) or "idle")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    verbose: Annotated[bool, typer.Option("-v")] = False,
) -> None:
    """Take the providers' webhooks (delivery receipts, replies, bounces) and one-click unsubscribes."""
    import uvicorn

    from comms.serve import create_app, service_from_env

    _logging(verbose)
    try:  # every setting and file read here, once, with one line saying what is wrong
        service = service_from_env()
    except CommsError as exc:
        _fail(exc)
    # uvicorn stops gracefully on SIGTERM, then raises the signal again for the handler it found: a
    # quiet one here, so `docker stop` ends with exit 0 once every acknowledged request is on the bus
    signal.signal(signal.SIGTERM, lambda *_: None)
    # no access log: a query string holds an unsubscribe token, which names an address
    uvicorn.run(create_app(service), host=host, port=port, access_log=False, log_level="warning")


@app.command()
def validate() -> None:
    """Check campaigns.yaml, that every template exists in every language, and that each renders."""
    from comms.app import Env
    from comms.checks import check_templates, warnings

    env = Env.from_environ()
    try:
        from comms.config import load_settings

        settings = load_settings(env.config)
        problems = check_templates(settings, env)
    except ConfigError as exc:
        _fail(exc)
    for w in warnings(settings, env.templates):
        err.print(f"[bold yellow]warning:[/] {w}", highlight=False)
    if problems:
        for p in problems:
            err.print(f"[bold red]error:[/] {p}", highlight=False)
        raise typer.Exit(1)
    out.print(f"{env.config}: OK ({len(settings.campaigns)} campaigns, templates complete and rendering)")


@app.command()
def preview(
    event_file: Annotated[Path, typer.Argument(help="a file holding one event")],
    channel: Annotated[str, typer.Option(help="press_release, sms or email")] = "sms",
    lang: Annotated[str, typer.Option(help="en, es or ht")] = "en",
) -> None:
    """Render an event for one channel and language, without sending anything."""
    from comms.app import Env
    from comms.checks import preview_event

    try:
        event = parse_event(event_file.read_bytes())
        for title, text in preview_event(Env.from_environ(), event, channel, lang):
            out.rule(title)
            out.print(text, markup=False, highlight=False)
    except CommsError as exc:
        _fail(exc)


@app.command()
def status() -> None:
    """Events per topic and consumer group, messages per campaign, channel, language and state."""
    from comms.app import Env
    from comms.bus import open_bus
    from comms.ledger import Ledger
    from comms.worker import consumer_names, group_name

    env = Env.from_environ()
    try:
        bus = open_bus(env.bus_url)
    except CommsError as exc:
        _fail(exc)
    t = Table("topic", "consumer group", "records", "committed", "lag", title=f"bus {env.bus_url}")
    with bus:
        topics = bus.topics() or [env.topic]
        for topic in topics:
            groups = [group_name(c) for c in consumer_names()] if not topic.endswith(".dlq") else ["-"]
            for g in groups:
                total, done = bus.lag(g, topic) if g != "-" else (bus.lag("-", topic)[0], 0)
                t.add_row(topic, g, str(total), str(done) if g != "-" else "-", str(total - done) if g != "-" else "-")
    out.print(t)
    ledger = Ledger(env.ledger_target)
    lt = Table("campaign", "channel", "language", "state", "messages", title=ledger.db.name)
    for row in ledger.counts():
        lt.add_row(*map(str, row))
    ledger.close()
    out.print(lt)


@app.command()
def demo(
    students: Annotated[
        int,
        typer.Option("--students", help="generate a roster of N students (default: the small fixture, easy to read)"),
    ] = 0,
    verbose: Annotated[bool, typer.Option("-v")] = False,
) -> None:
    """Publish the seed press releases' events, run every consumer until idle, show what came out."""
    import dataclasses

    from comms.app import App, Env
    from comms.approvals import Approvals
    from comms.dev.demo import DEMO_NOW, attendance_stream, demo_events, phases
    from comms.worker import run as run_workers

    _logging(verbose)
    env = Env.from_environ()
    events_raw = demo_events()
    if students:
        from comms.dev.generate import generate_bundle
        from comms.oneroster import import_bundle
        from comms.roster import Roster

        var = Path(os.environ.get("COMMS_VAR", "var"))
        generate_bundle(var / "demo-oneroster", students)
        import_bundle(var / "demo-oneroster", var / "demo-roster.db")
        env = dataclasses.replace(env, roster=var / "demo-roster.db")
        picked = sorted(Roster.load(env.roster).students.values(), key=lambda s: s.id)[:4]
        events_raw = demo_events()[:2] + attendance_stream([(s.id, s.school_id) for s in picked])
        out.print(f"generated and imported a synthetic roster of {students:,} students: {env.roster}")
    try:
        # The demo replays 2020, each event at the time the district sent it (news expires: the platform
        # switch of September 2 is past by November). environ={}: never the real providers, even with
        # credentials in the shell: the families are fictional
        now = [DEMO_NOW]
        a = App.open(env, clock=lambda: now[0], environ={})
        events = [parse_event(raw) for raw in events_raw]
        workers = a.workers_when_ready()
        approvals = Approvals(a.pipeline.ledger, a.settings, a.env.templates)
        approved = 0
        for at, group in phases(events_raw):
            now[0] = at
            a.bus.publish_many(a.env.topic, [(e.key, e.raw) for e in map(parse_event, group)])
            run_workers(workers, until_idle=True)
            # The demo has no office to ask: it approves its own held mass sends as the accounts demo-1
            # and demo-2 (in the audit log as such), and says so. A district approves in the console.
            held = approvals.waiting()
            for uid in sorted({s.event_uid for s in held}):
                for n in range(1, 1 + max(s.required for s in held if s.event_uid == uid)):
                    approvals.approve(uid, f"demo-{n}")
            if held:
                approved += len(held)
                run_workers(workers, until_idle=True)
        if approved:
            out.print(
                f"approved {approved} held mass send(s) as the demo accounts demo-1 and demo-2 "
                "(campaigns.yaml asks approval: one or two; the audit log says who)",
                highlight=False,
            )
        for w in workers:
            w.close()
    except CommsError as exc:
        _fail(exc)
    t = Table(
        Column("campaign", no_wrap=True),
        "channel",
        "sent",
        "by language",
        "suppressed",
        "superseded",
        "expired",
        "in",
        title=f"comms demo: {len(events)} events from the 2020 seed press releases",
    )
    where = {
        name: "press/" if ch.spec.audience == "press" else f"outbox/{name}/" if ch.spec is not type(ch) else "provider"
        for name, ch in a.pipeline.channels.items()
    }
    summary: dict[tuple[str, str], dict[str, Counter[str]]] = {}
    for campaign, channel, lang, state, n in a.pipeline.ledger.counts():
        summary.setdefault((campaign, channel), {}).setdefault(state, Counter())[lang] += n
    for (campaign, channel), states in summary.items():
        sent = states.get("sent", Counter())
        by_lang = " ".join(f"{k}:{v}" for k, v in sorted(sent.items()))
        suppressed = sum(states.get("suppressed", Counter()).values())
        expired = sum(states.get("expired", Counter()).values())
        superseded = sum(states.get("superseded", Counter()).values())
        t.add_row(
            campaign, channel.replace("_release", ""), str(sum(sent.values())), by_lang, str(suppressed),
            str(superseded), str(expired), where[channel],
        )  # fmt: skip
    a.close()
    out.print(t)
    out.print(
        f"Drafts and messages are under {a.env.out}/ (folders in the last column). "
        "Suppressed: no consent or no contact; superseded: a higher tier the student crossed at the same "
        "time went instead; expired: its news was past before it could go; `comms report CAMPAIGN` says which."
    )


def _approvals() -> tuple[Approvals, Accounts, Ledger]:
    from comms.accounts import Accounts
    from comms.app import Env
    from comms.approvals import Approvals
    from comms.config import load_settings
    from comms.ledger import Ledger

    env = Env.from_environ()
    ledger = Ledger(env.ledger_target)
    return (
        Approvals(ledger, load_settings(env.config), env.templates),
        Accounts(env.ledger.with_name("accounts.db")),
        ledger,
    )


@app.command("approvals")
def approvals_list() -> None:
    """The mass sends awaiting approval: event, campaign, messages held, who approved so far."""
    from comms.approvals import ref

    try:
        approvals, accounts, ledger = _approvals()
        waiting = approvals.waiting()
    except CommsError as exc:
        _fail(exc)
    t = Table(
        Column("ref", no_wrap=True, min_width=12),
        Column("event", overflow="fold"),
        Column("campaign", no_wrap=True),
        "held",
        "approved by",
        "needs",
        title="awaiting approval",
    )
    for s in waiting:
        t.add_row(
            ref(s.event_uid), s.event_uid, s.campaign, str(s.awaiting), ", ".join(s.approvers) or "-", str(s.required)
        )
    ledger.close()
    accounts.close()
    out.print(t)


def _decide(event: str, who: str, reason: str | None) -> None:
    from comms.accounts import Role

    try:
        approvals, accounts, ledger = _approvals()
        with accounts, contextlib.closing(ledger):
            accounts.require(who, Role.APPROVER)
            uid = approvals.resolve(event)
            done = approvals.approve(uid, who) if reason is None else approvals.reject(uid, who, reason)
    except CommsError as exc:
        _fail(exc)
    for s in done:
        out.print(f"{s.campaign}: {s.state} ({len(s.approvers)} of {s.required} approvals)", highlight=False)


@app.command()
def approve(
    event: Annotated[str, typer.Argument(help="the event id, or its ref from `comms approvals`")],
    who: Annotated[str, typer.Option("--as", help="your console account (approver or admin)")],
) -> None:
    """Approve an event's held mass sends as WHO (for scripts: the console does the same)."""
    _decide(event, who, None)


@app.command()
def reject(
    event: Annotated[str, typer.Argument(help="the event id, or its ref from `comms approvals`")],
    who: Annotated[str, typer.Option("--as", help="your console account (approver or admin)")],
    reason: Annotated[str, typer.Option("--reason", help="why, for the audit log")] = "",
) -> None:
    """Reject an event's held mass sends: they are cancelled and never sent."""
    _decide(event, who, reason or "rejected from the command line")


user_app = typer.Typer(help="The console's accounts: viewer, editor, approver, admin.")
app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="the account name, e.g. jdoe")],
    role: Annotated[str, typer.Option("--role", help="viewer, editor, approver or admin")] = "viewer",
) -> None:
    """Create an account, or give an existing one a new role and password. The password is asked
    twice, or read from COMMS_USER_PASSWORD (for scripts)."""
    from comms.accounts import Accounts, Role
    from comms.app import Env

    password = os.environ.get("COMMS_USER_PASSWORD") or typer.prompt(
        "password", hide_input=True, confirmation_prompt=True
    )
    try:
        with Accounts(Env.from_environ().ledger.with_name("accounts.db")) as accounts:
            account = accounts.add(name, Role.named(role), password)
    except CommsError as exc:
        _fail(exc)
    out.print(f"account {account.name}: {account.role.label}", highlight=False)


@user_app.command("list")
def user_list() -> None:
    """Every account with its role."""
    from comms.accounts import Accounts
    from comms.app import Env

    with Accounts(Env.from_environ().ledger.with_name("accounts.db")) as accounts:
        for a in accounts.all():
            out.print(f"{a.name}\t{a.role.label}\t{'active' if a.active else 'disabled'}", highlight=False)


@user_app.command("disable")
def user_disable(name: Annotated[str, typer.Argument()]) -> None:
    """Disable an account at once: its sessions stop working on their next request."""
    from comms.accounts import Accounts
    from comms.app import Env

    try:
        with Accounts(Env.from_environ().ledger.with_name("accounts.db")) as accounts:
            accounts.set_active(name, False)
    except CommsError as exc:
        _fail(exc)
    out.print(f"account {name}: disabled", highlight=False)


producer_app = typer.Typer(help="The district systems that may publish over HTTP (POST /events of comms serve).")
app.add_typer(producer_app, name="producer")


def _producers() -> Producers:
    from comms.app import Env
    from comms.producers import Producers

    return Producers(Env.from_environ().ledger.with_name("producers.db"))


@producer_app.command("add")
def producer_add(name: Annotated[str, typer.Argument(help="the system, e.g. sis, food-services, it")]) -> None:
    """Make a bearer token for NAME (a new one replaces the old); it is shown this once."""
    try:
        with _producers() as p:
            token = p.add(name)
    except CommsError as exc:
        _fail(exc)
    out.print(f"producer {name}: Authorization: Bearer {token}", highlight=False, soft_wrap=True)
    out.print("Store it in that system's secrets now: only its hash is kept here.")


@producer_app.command("remove")
def producer_remove(name: Annotated[str, typer.Argument()]) -> None:
    """Revoke NAME's token at once."""
    try:
        with _producers() as p:
            removed = p.remove(name)
    except CommsError as exc:
        _fail(exc)
    if not removed:
        _fail(ConfigError(f"no producer {name!r}"))
    out.print(f"producer {name}: token revoked")


@producer_app.command("list")
def producer_list() -> None:
    """The producers that have a token."""
    try:
        with _producers() as p:
            names = p.names()
    except CommsError as exc:
        _fail(exc)
    for n in names:
        out.print(n)


roster_app = typer.Typer(help="The roster: schools, students, guardians, from OneRoster 1.1 CSV.")
app.add_typer(roster_app, name="roster")


def _roster_db() -> Path:
    from comms.app import Env

    env = Env.from_environ()
    return env.roster if str(env.roster).endswith(".db") else Path(os.environ.get("COMMS_VAR", "var")) / "roster.db"


@roster_app.command("import")
def roster_import(
    directory: Annotated[Path, typer.Argument(help="folder of a OneRoster 1.1 CSV bundle")],
    allow_shrink: Annotated[
        bool, typer.Option("--allow-shrink", help="accept a bundle that removes more than --max-shrink of the families")
    ] = False,
    max_shrink: Annotated[float, typer.Option("--max-shrink", min=0.0, max=1.0, help="share of families")] = 0.2,
) -> None:
    """Import (or re-import) a bundle; bad rows are reported with file, line and reason, and skipped.

    A bundle that fails a structural check changes nothing and exits 1."""
    from comms.oneroster import import_bundle
    from comms.progress import for_console

    db = _roster_db()
    progress = for_console(err)
    try:
        report = import_bundle(directory, db, allow_shrink=allow_shrink, max_shrink=max_shrink, progress=progress)
    except CommsError as exc:
        _fail(exc)
    finally:
        progress.close()
    for w in report.warnings:
        err.print(f"[bold yellow]warning:[/] {directory / w.file}: {w.reason}", highlight=False)
    if report.fatal:
        for p in report.fatal:
            where = p.file if p.file == str(directory) else str(directory / p.file)
            err.print(f"[bold red]error:[/] {where}{f':{p.line}' if p.line else ''}: {p.reason}", highlight=False)
        err.print(f"nothing imported: the roster {db} is unchanged", highlight=False)
        raise typer.Exit(1)
    for p in report.problems:
        err.print(f"[yellow]row skipped or fixed:[/] {directory / p.file}:{p.line}: {p.reason}", highlight=False)
    t = Table("table", "rows", "added", "updated", "removed", title=f"roster {db}")
    for table, n in report.counts.items():
        c = report.changes[table]
        t.add_row(table, str(n), str(c["added"]), str(c["updated"]), str(c["removed"]))
    out.print(t)
    out.print(f"{len(report.problems)} problem(s). Use it with COMMS_ROSTER={db}")


@roster_app.command("generate")
def roster_generate(
    students: Annotated[int, typer.Option("--students", help="how many students (Miami-Dade: 334000)")] = 3000,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the bundle")] = Path("var/oneroster"),
    seed: Annotated[int, typer.Option(help="same seed, same bundle")] = 2020,
) -> None:
    """Write a synthetic OneRoster 1.1 bundle (marked synthetic: local providers only)."""
    from comms.dev.generate import generate_bundle
    from comms.progress import for_console

    progress = for_console(err)
    try:
        counts = generate_bundle(out_dir, students, seed, progress)
    finally:
        progress.close()
    out.print(f"wrote {out_dir}: " + ", ".join(f"{v:,} {k}" for k, v in counts.items()))


@roster_app.command("stats")
def roster_stats() -> None:
    """Students, guardians, languages and consent in the roster."""
    from comms.app import Env
    from comms.channels import channel_classes
    from comms.roster import Roster

    try:
        r = Roster.load(Env.from_environ().roster)
    except CommsError as exc:
        _fail(exc)
    g = list(r.guardians.values())
    kids = Counter(gid for s in r.students.values() for gid in s.guardians)
    t = Table("what", "count", title="roster")
    for label, n in [
        ("schools", len(r.schools)),
        ("students", len(r.students)),
        ("guardians", len(g)),
        *[(f"guardians reading {lang}", sum(1 for x in g if x.language == lang)) for lang in ("en", "es", "ht")],
        *[
            (
                f"with {c.name} consent and an address",
                sum(1 for x in g if c.consent in x.consents and x.address(c.address) and not x.no_contact),
            )
            for c in channel_classes()
            if c.consent
        ],
        ("no contact", sum(1 for x in g if x.no_contact)),
        ("guardians of more than one student", sum(1 for n in kids.values() if n > 1)),
    ]:
        t.add_row(label, f"{n:,}")
    out.print(t)


suppress_app = typer.Typer(help="The suppression list: opt-outs (STOP), unsubscribes, bounces.")
app.add_typer(suppress_app, name="suppress")


@suppress_app.command("import")
def suppress_import(
    file: Annotated[Path, typer.Argument(help="CSV with columns channel (sms, email...), address, reason")],
) -> None:
    """Add opt-outs to the suppression list; later messages to them are suppressed, never sent.

    Numbers are stored in E.164 and addresses in lower case, whatever the file's spelling, so
    `(305) 555-0102` stops the SMS to +13055550102. UTF-8 (with or without Excel's BOM) or Latin-1."""
    import csv

    from comms import addresses
    from comms.app import Env
    from comms.channels import channel_classes
    from comms.ledger import Ledger

    try:
        data = file.read_bytes()
    except OSError as exc:
        _fail(ConfigError(f"{file}: cannot read: {exc.strerror or exc}"))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")  # Excel's "CSV" on Windows; every byte maps
        err.print(f"[bold yellow]warning:[/] {file}: not UTF-8, read as Windows-1252 (Latin-1)", highlight=False)
    rows: list[tuple[str, str, str, str]] = []
    bad: list[str] = []
    odd: list[str] = []
    kinds = {c.name: c.address for c in channel_classes() if c.address}  # channels that have addresses
    names = " or ".join([", ".join(list(kinds)[:-1]), list(kinds)[-1]] if len(kinds) > 1 else list(kinds))
    try:
        for n, row in enumerate(csv.DictReader(text.splitlines()), start=2):
            channel, address = (row.get("channel") or "").strip(), (row.get("address") or "").strip()
            kind = kinds.get(channel)
            if kind is None or not address:
                bad.append(f"{file}:{n}: skipped: channel must be {names} and address must be set")
                continue
            try:
                address = addresses.checked(kind, address)
            except addresses.AddressError as exc:
                odd.append(f"{file}:{n}: {channel} address {exc}; kept as written")
            rows.append((channel, address, (row.get("reason") or "opted_out").strip(), f"csv:{file.name}"))
    except csv.Error as exc:
        _fail(ConfigError(f"{file}: not a readable CSV file: {exc}"))
    for b in bad:
        err.print(f"[bold red]rejected[/] {b}", highlight=False)
    for o in odd:
        err.print(f"[bold yellow]check[/] {o}", highlight=False)
    try:
        ledger = Ledger(Env.from_environ().ledger_target)
        added = ledger.suppress(rows)
        ledger.close()
    except CommsError as exc:
        _fail(exc)
    out.print(
        f"{added} added to the suppression list ({len(rows) - added} already there, {len(bad)} skipped, "
        f"{len(odd)} kept as written)"
    )
    if bad or odd:
        raise typer.Exit(1)


@app.command()
def report(
    campaign: Annotated[str, typer.Argument(help="a campaign id from campaigns.yaml")],
    replies: Annotated[
        bool, typer.Option("--replies", help="also the texts families sent that are not keywords")
    ] = False,
) -> None:
    """Messages of one campaign per channel, language and state (sent, delivered, undelivered, bounced...),
    and why any were held back or not delivered."""
    from comms.app import Env
    from comms.ledger import Ledger

    ledger = Ledger(Env.from_environ().ledger_target)
    t = Table("channel", "language", "state", "messages", title=f"campaign {campaign}")
    for _, channel, lang, state, n in ledger.counts(campaign):
        t.add_row(channel, lang, state, str(n))
    why = Table("channel", "state", "why", "messages", title="held back, failed, expired or not delivered")
    for channel, state, detail, n in ledger.details(campaign):
        why.add_row(channel, state, detail, str(n))
    since = Table("channel", "language", "families", title="opted out since their message (STOP, unsubscribe...)")
    for channel, lang, n in ledger.opted_out_since(campaign):
        since.add_row(channel, lang, str(n))
    texts = ledger.replies() if replies else []
    arms = Counter(ledger.arms(campaign).values())
    ledger.close()
    out.print(t)
    out.print(why)
    out.print(since)
    if arms:  # the campaign's randomized hold-out (campaigns.yaml `holdout`)
        out.print(
            f"hold-out: {arms['control']:,} student(s) in the control group (sent nothing), "
            f"{arms['treated']:,} treated",
            highlight=False,
        )
    if replies:
        from comms.privacy import mask

        rt = Table("channel", "from", "text", title="replies that are not keywords (newest first)")
        for channel, address, body, _ in texts:
            rt.add_row(channel, mask(address), body)
        out.print(rt)


@app.command()
def effect(
    campaign: Annotated[str, typer.Argument(help="a campaign id from campaigns.yaml, with a `holdout`")],
    days: Annotated[
        int, typer.Option("--days", min=1, max=180, help="school days followed after each student's message day")
    ] = 20,
    min_arm: Annotated[
        int, typer.Option("--min-arm", min=2, help="fewer students than this in an arm: too small to tell")
    ] = 30,
) -> None:
    """Whether the campaign's messages change attendance: absences per school day of its hold-out's
    treated and control students over the school days after their message day (or the day it would
    have gone), the difference with its 95% interval, overall, by tier and by language."""
    from comms.app import Env
    from comms.config import load_settings
    from comms.effect import Z95, measure
    from comms.effect import report as estimates
    from comms.ledger import Ledger
    from comms.roster import Roster

    env = Env.from_environ()
    try:
        settings = load_settings(env.config)
        if campaign not in settings.campaigns:
            raise ConfigError(f"no campaign {campaign!r} in {env.config} (it has: {', '.join(settings.campaigns)})")
        ledger = Ledger(env.ledger_target)
        try:
            assigned = ledger.assignments(campaign)
        finally:
            ledger.close()
        if not assigned:
            holdout = settings.campaigns[campaign].holdout
            why = "no student has been assigned yet" if holdout else "it has no `holdout` in campaigns.yaml"
            raise ConfigError(f"campaign {campaign!r} has nothing to measure: {why}")
        followed, short = measure(assigned, Roster.load(env.roster), env.ledger.with_name("attendance.db"), days)
    except CommsError as exc:
        _fail(exc)
    arms = Counter(arm for _, arm, *_ in assigned)

    def rate(x: float | None) -> str:
        return "" if x is None else f"{x:.3f}"

    t = Table(
        "group",
        Column("treated", justify="right"),
        Column("control", justify="right"),
        Column("absences/day treated", justify="right"),
        Column("control", justify="right"),
        Column("difference (95% CI)", justify="right"),
        "what it says",
        title=f"{campaign}: absences per school day over the {days} school days after the message day",
    )
    for e in estimates(followed, min_arm):
        ci = "" if e.difference is None else f"{e.difference:+.3f} ({e.low:+.3f} to {e.high:+.3f})"
        t.add_row(e.group, str(e.n_treated), str(e.n_control), rate(e.treated), rate(e.control), ci, e.verdict)
    out.print(
        f"hold-out: {arms['treated']:,} treated, {arms['control']:,} control; {len(followed):,} followed "
        f"for {days} school days, {short:,} not yet (fewer school days recorded since their day)",
        highlight=False,
    )
    out.print(t)
    out.print(
        f"difference = mean(treated) - mean(control), by arm as randomized; 95% CI = difference +/- {Z95:.2f} "
        "x sqrt(s_t^2/n_t + s_c^2/n_c); below 0: fewer absences with the messages",
        highlight=False,
    )


attendance_app = typer.Typer(help="Attendance streams (development: synthetic data).")
app.add_typer(attendance_app, name="attendance")


@attendance_app.command("generate")
def attendance_generate(
    start: Annotated[str, typer.Option("--from", help="the first school day, YYYY-MM-DD")],
    days: Annotated[int, typer.Option("--days", min=1, max=200, help="school days (weekdays) from --from on")] = 20,
    school_year: Annotated[str, typer.Option("--school-year")] = "2020-2021",
    mean: Annotated[float, typer.Option("--mean", min=0.01, max=0.9, help="average chance of missing a day")] = 0.2,
    effect_size: Annotated[
        float, typer.Option("--effect", min=0.0, max=1.0, help="treated students miss this share fewer days")
    ] = 0.0,
    campaign: Annotated[str, typer.Option("--campaign", help="whose hold-out says who is treated")] = "show-up",
    students: Annotated[int, typer.Option("--students", min=1, help="the roster's first N students")] = 1000,
    seed: Annotated[int, typer.Option(help="same seed, same stream")] = 2020,
    out_file: Annotated[Path, typer.Option("--out", help="JSON lines, for `comms publish`")] = Path(
        "var/attendance.jsonl"
    ),
) -> None:
    """Write a synthetic attendance stream with a known effect (comms/dev/trial.py): to check that
    `comms effect` recovers it. The treated are the campaign's hold-out `treated` students, from the
    day after their message day."""
    import datetime as dt

    from comms.app import Env
    from comms.dev.demo import school_days
    from comms.dev.trial import attendance_stream
    from comms.ledger import Ledger
    from comms.roster import Roster

    env = Env.from_environ()
    try:
        first = dt.date.fromisoformat(start)
    except ValueError:
        _fail(ConfigError(f"--from {start!r}: a date YYYY-MM-DD is expected"))
    try:
        roster = Roster.load(env.roster)
        treated: dict[str, dt.date] = {}
        if effect_size:
            ledger = Ledger(env.ledger_target)
            try:
                assigned = ledger.assignments(campaign)
            finally:
                ledger.close()
            treated = {s: dt.date.fromisoformat(since) for s, arm, _, since in assigned if arm == "treated" and since}
    except CommsError as exc:
        _fail(exc)
    chosen = {sid: roster.students[sid].school_id for sid in sorted(roster.students)[:students]}
    stream = attendance_stream(
        chosen,
        school_days(first, days),
        school_year=school_year,
        seed=seed,
        mean=mean,
        effect=effect_size,
        treated=treated,
    )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out_file.open("wb") as f:
        for raw in stream:
            f.write(raw + b"\n")
            n += 1
    out.print(f"wrote {out_file}: {n:,} attendance records, {len(chosen):,} students, {len(treated):,} treated")


ledger_app = typer.Typer(help="The delivery ledger's upkeep.")
app.add_typer(ledger_app, name="ledger")


@ledger_app.command("prune")
def ledger_prune(
    before: Annotated[
        str | None, typer.Option("--before", help="YYYY-MM-DD (district time); default: campaigns.yaml retention")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count, change nothing")] = False,
) -> None:
    """Forget the texts and addresses of messages done before the retention cutoff (the school year
    they were sent in and `district.retention.keep_days` more); counts and reasons stay."""
    import datetime as dt

    from comms.app import Env
    from comms.clock import clock_from_env
    from comms.config import load_settings
    from comms.ledger import Ledger
    from comms.pipeline.policies import retention_cutoff

    env = Env.from_environ()
    try:
        settings = load_settings(env.config)
        tz = settings.district.tz
        now = clock_from_env(os.environ)().astimezone(tz)
        if before:
            try:
                cutoff = dt.datetime.combine(dt.date.fromisoformat(before), dt.time(), tzinfo=tz)
            except ValueError:
                raise ConfigError(f"--before {before!r}: not a date (YYYY-MM-DD)") from None
            if cutoff > now:
                raise ConfigError(f"--before {before}: in the future; nothing done may be pruned yet")
        else:
            r = settings.district.retention
            cutoff = retention_cutoff(now, r.school_year_ends, r.keep_days)
        ledger = Ledger(env.ledger_target)
        with contextlib.closing(ledger):
            done = ledger.prune(cutoff.timestamp(), dry_run=dry_run)
    except CommsError as exc:
        _fail(exc)
    verb = "would forget" if dry_run else "forgot"
    out.print(
        f"messages before {cutoff:%Y-%m-%d %H:%M %Z}: {verb} the text and address of {done['messages']:,}, "
        f"{done['replies']:,} replies, {done['contents']:,} stored texts; counts and reasons stay",
        highlight=False,
    )


@app.command()
def schema(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the JSON Schema files")] = Path("comms/schemas"),
) -> None:
    """Write the JSON Schema of the envelope and of each event type's data."""
    from comms.schemas import write_schemas

    for path in write_schemas(out_dir):
        out.print(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    app()


translations_app = typer.Typer(
    help="Who reviewed each translated template, and whether its English changed since.",
    invoke_without_command=True,
)
app.add_typer(translations_app, name="translations")


@translations_app.callback()
def translations_list(ctx: typer.Context) -> None:
    """Every translated template: its language, the English it comes from, reviewed or stale."""
    if ctx.invoked_subcommand is not None:
        return
    from comms.app import Env
    from comms.translations import Review, all_states

    env = Env.from_environ()
    table = Table("file", "lang", "state", "reviewed by", "on", "translates")
    states = all_states(env.templates)
    for t in states:
        colour = {Review.REVIEWED: "green", Review.STALE: "red", Review.UNREVIEWED: "yellow"}[t.state]
        table.add_row(t.file, t.lang, f"[{colour}]{t.state}[/]", t.reviewed_by or "", t.on or "", t.source)
    out.print(table)
    counts = Counter(t.state.value for t in states)
    out.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no translated templates")
    if counts.get(Review.STALE.value):
        raise typer.Exit(1)


@translations_app.command("review")
def translations_review(
    file: Annotated[str, typer.Argument(help="a translated template, relative to templates/")],
    by: Annotated[str, typer.Option("--by", help="who read it against the English")],
) -> None:
    """Record that FILE was reviewed against its English template as it is now."""
    from comms.app import Env
    from comms.clock import clock_from_env
    from comms.config import load_settings
    from comms.translations import review

    env = Env.from_environ()
    try:
        tz = load_settings(env.config).district.tz
        t = review(
            env.templates, file.removeprefix("templates/"), by, clock_from_env(os.environ)().astimezone(tz).date()
        )
    except CommsError as exc:
        _fail(exc)
    out.print(f"{t.file}: {t.state} by {t.reviewed_by} on {t.on} (translates {t.source})")
