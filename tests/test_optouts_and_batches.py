"""A STOP honoured however the number was written; one bad address never fails the 999 families
sharing its SendGrid request; SendGrid's small print (unique categories, a 202 without an id)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from comms.app import App
from comms.channels import Message
from comms.channels.sendgrid_email import SendGridEmailChannel, mail_payload
from comms.cli import app as cli
from comms.dev.servers import API_KEY, SENDER, FakeSendGrid, FakeTwilio
from comms.events import parse_event
from comms.ledger import Ledger
from tests.conftest import MEALS, NOON, Clock, make_env, provider_env
from tests.rosters import write_roster


def _import(csv_path: Path, ledger: Path) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["suppress", "import", str(csv_path)], env={"COMMS_LEDGER": str(ledger)})
    return r.exit_code, r.output


def test_a_stop_written_any_way_stops_the_sms(tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]) -> None:
    tw, sg = providers
    env = make_env(tmp_path, 6)  # phones +17860000000 .. +17860000005
    csv = tmp_path / "stops.csv"
    # Excel's "CSV UTF-8" starts with a BOM; numbers as people write them
    csv.write_bytes(
        "\ufeffchannel,address,reason\nsms,(786) 000-0001,STOP\nsms,+1 786 000 0002,STOP\n"
        "sms,786.000.0003,STOP\nemail,  PARENT4@Example.ORG ,unsubscribed\n".encode()
    )
    code, output = _import(csv, env.ledger)
    assert code == 0 and "4 added" in output, output
    latin1 = tmp_path / "more.csv"
    latin1.write_bytes("channel,address,reason\nsms,7860000004,parent said \xabstop\xbb\n".encode("latin-1"))
    code, output = _import(latin1, env.ledger)
    assert code == 0 and "read as Windows-1252" in output and "1 added" in output, output
    app = App.open(env, clock=Clock(NOON), environ=provider_env(tw, sg))
    app.pipeline.handle(parse_event(MEALS), "sms")
    app.pipeline.handle(parse_event(MEALS), "email")
    app.close()
    assert sorted(tw.per_recipient()) == ["+17860000000", "+17860000005"]
    assert "parent4@example.org" not in sg.per_recipient() and len(sg.per_recipient()) == 5


def test_a_missing_suppression_file_is_one_clear_line(tmp_path: Path) -> None:
    code, output = _import(tmp_path / "nope.csv", tmp_path / "ledger.db")
    assert code == 1 and "nope.csv: cannot read: No such file or directory" in output and "Traceback" not in output


def test_a_version_3_ledger_has_its_suppressions_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM suppressions")
    conn.executemany(
        "INSERT INTO suppressions VALUES (?, ?, 'opted_out', 'csv:old.csv', 0)",
        [("sms", "(305) 555-0102"), ("sms", "+1 305 555 0103"), ("email", "Maria@Example.org"), ("sms", "n/a")],
    )
    conn.execute("DROP TABLE events")
    conn.execute("ALTER TABLE deliveries DROP COLUMN claim")  # as version 3 was
    conn.execute("PRAGMA user_version=3")
    conn.commit()
    conn.close()
    ledger = Ledger(path)
    found = ledger.suppressed("sms", ["+13055550102", "+13055550103", "+13055550104"])
    assert set(found) == {"+13055550102", "+13055550103"}
    assert set(ledger.suppressed("email", ["maria@example.org"])) == {"maria@example.org"}
    ledger.close()


# -- SendGrid -------------------------------------------------------------------------------------------
def test_one_bad_address_fails_alone_and_the_rest_of_its_request_is_sent(
    tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    tw, sg = providers
    roster = tmp_path / "hostile-roster.json"
    write_roster(roster, 300)
    doc = json.loads(roster.read_text("utf-8"))
    doc["guardians"][7]["email"] = "parent7@example.org\nBcc: everyone@example.org"  # got past an old import
    doc["guardians"][150]["email"] = "two words@example.org"
    roster.write_text(json.dumps(doc), "utf-8")
    env = make_env(tmp_path, 300, COMMS_ROSTER=str(roster))
    app = App.open(env, clock=Clock(NOON), environ=provider_env(tw, sg))
    out = app.pipeline.handle(parse_event(MEALS), "email")
    details = app.pipeline.ledger.details("meal-schedule")
    app.close()
    assert out["sent"] == 298 and out["failed"] == 2
    assert len(sg.per_recipient()) == 298
    assert [(st, n) for _, st, _, n in details] == [("failed", 2)]
    assert "Does not contain a valid address" in details[0][2]


def _message(campaign: str) -> Message:
    return Message(
        key="k1",
        channel="email",
        campaign=campaign,
        event_uid="e#1",
        lang="en",
        to="a@example.org",
        body={"txt": "t", "html": "<p>t</p>"},
        subject="S",
    )


def test_categories_never_repeat_and_a_202_without_a_message_id_records_none(
    providers: tuple[FakeTwilio, FakeSendGrid],
) -> None:
    _, sg = providers
    assert mail_payload([_message("district-comms")], sender=SENDER)["categories"] == ["district-comms"]
    ch = SendGridEmailChannel(API_KEY, SENDER, api_url=sg.url)
    assert ch.send([_message("district-comms")])[0].ok  # the local server refuses repeated categories
    sg.omit_message_id = True
    result = ch.send([_message("meal-schedule")])[0]
    assert result.ok and result.provider_id is None
