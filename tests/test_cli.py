"""The `comms` command as a user runs it (subprocesses for the long-running ones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from comms.app import Env
from comms.bus import open_bus
from comms.cli import app
from comms.dev.demo import demo_events
from tests.conftest import ROOT, env_vars

runner = CliRunner()


def _comms(env: Env, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, **env_vars(env), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "comms.cli", *args], input=stdin, env=e, cwd=ROOT, capture_output=True, timeout=120
    )


def test_publish_rejects_invalid_up_front(environ: Env, tmp_path: Path) -> None:
    doc = json.loads(demo_events()[0])
    doc["data"]["grades"] = ["06", "13"]
    f = tmp_path / "events.jsonl"
    f.write_text(demo_events()[1].decode() + "\n" + json.dumps(doc) + "\n", "utf-8")
    result = runner.invoke(app, ["publish", str(f)])
    assert result.exit_code == 1
    assert "line 2: data.grades[1]" in result.output
    bus = open_bus(environ.bus_url)
    assert bus.topics() == []  # nothing published, not even the valid first line
    bus.close()


def test_publish_json_array_and_stdin(environ: Env, tmp_path: Path) -> None:
    arr = "[" + ",".join(r.decode() for r in demo_events()) + "]"
    result = runner.invoke(app, ["publish", "-"], input=arr)
    assert result.exit_code == 0, result.output
    assert f"published {len(demo_events())} event(s)" in result.output


def test_run_until_idle_twice_resumes(env: Env, tmp_path: Path) -> None:
    first, later = demo_events()[:2], demo_events()[2:]
    f1, f2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    f1.write_bytes(b"\n".join(first))
    f2.write_bytes(b"\n".join(later))
    assert _comms(env, "publish", str(f1)).returncode == 0
    r1 = _comms(env, "run", "--until-idle")
    assert r1.returncode == 0, r1.stderr.decode()
    assert "comms-sms: " in r1.stdout.decode() and "events 2" in r1.stdout.decode()
    assert _comms(env, "publish", str(f2)).returncode == 0
    r2 = _comms(env, "run", "--until-idle")
    out = r2.stdout.decode()
    # only the new events (and the #ShowUpMDCPS tier events the attendance consumer counted from them:
    # one batch, so each of the 4 students' highest tier, and 3 lower ones superseded by it)
    assert "events 2," not in out and "threshold_published 4, tiers_superseded 3" in out


def test_demo_status_and_preview(env: Env, tmp_path: Path) -> None:
    r = _comms(env, "demo")
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert "platform-switch" in out and "show-up" in out and "press/" in out and "outbox/sms/" in out
    s = _comms(env, "status").stdout.decode()
    assert "comms-press" in s and "sent" in s
    ev = tmp_path / "meals.json"
    ev.write_bytes(demo_events()[1])
    p = _comms(env, "preview", str(ev), "--channel", "sms", "--lang", "ht")
    assert p.returncode == 0 and "madi ak jedi" in p.stdout.decode()
    bad = tmp_path / "bad.json"
    bad.write_text("{}", "utf-8")
    p = _comms(env, "preview", str(bad))
    assert p.returncode == 1 and "specversion" in p.stderr.decode()


def test_unknown_bus_is_a_clear_error(env: Env, tmp_path: Path) -> None:
    f = tmp_path / "e.json"
    f.write_bytes(demo_events()[0])
    e = {**os.environ, **env_vars(env), "COMMS_BUS": "rabbit://localhost"}
    r = subprocess.run(
        [sys.executable, "-m", "comms.cli", "publish", str(f)], env=e, cwd=ROOT, capture_output=True, timeout=60
    )
    assert r.returncode == 1
    assert "unknown bus 'rabbit'" in r.stderr.decode() and "Traceback" not in r.stderr.decode()


def test_thin_consumer_process_handles_then_stops_on_sigterm(env: Env, tmp_path: Path) -> None:
    import signal
    import time

    f = tmp_path / "e.json"
    f.write_bytes(demo_events()[1])
    assert _comms(env, "publish", str(f)).returncode == 0
    e = {**os.environ, **env_vars(env)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumers.sms"], env=e, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(list((env.out / "outbox" / "sms").glob("*.txt"))) < 6:
            time.sleep(0.1)
        assert len(list((env.out / "outbox" / "sms").glob("*.txt"))) == 6
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bus = open_bus(env.bus_url)
    assert bus.lag("comms-sms", env.topic) == (1, 1)  # committed before it stopped
    bus.close()


def test_demo_never_uses_real_providers(env: Env) -> None:
    from comms.dev.servers import FakeSendGrid, FakeTwilio

    with FakeTwilio() as tw, FakeSendGrid() as sg:
        e = {
            **os.environ,
            **env_vars(env),
            "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
            "TWILIO_AUTH_TOKEN": "t",
            "TWILIO_FROM": "+13055550000",
            "COMMS_TWILIO_API_URL": tw.url,
            "SENDGRID_API_KEY": "SG.k",
            "COMMS_EMAIL_FROM": "news@example.org",
            "COMMS_SENDGRID_API_URL": sg.url,
        }
        r = subprocess.run(
            [sys.executable, "-m", "comms.cli", "demo"], env=e, cwd=ROOT, capture_output=True, timeout=120
        )
        assert r.returncode == 0, r.stderr.decode()
        assert tw.requests == 0 and sg.requests == 0
    # each event at its own time (comms.dev.demo.phases): meals 6, the switch 5, the grades it leaves
    # unchanged 4, #ShowUpMDCPS 4 (one per student: the highest tier each crossed; the lower ones superseded)
    assert len(list((env.out / "outbox" / "sms").glob("*.txt"))) == 19


def test_demo_on_a_generated_roster(env: Env, tmp_path: Path) -> None:
    e = {**os.environ, **env_vars(env), "COMMS_VAR": str(tmp_path / "var")}
    r = subprocess.run(
        [sys.executable, "-m", "comms.cli", "demo", "--students", "300"],
        env=e,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr.decode()
    assert "synthetic roster of 300 students" in r.stdout.decode()
    sms = list((env.out / "outbox" / "sms").glob("*.txt"))
    assert len(sms) > 150  # households of a generated district, not the 8 fixture families
    assert any(p.name.startswith("show-up-") for p in sms)  # tiers counted from the attendance stream
