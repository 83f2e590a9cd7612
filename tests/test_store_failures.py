"""The files the pipeline keeps, failing under it: overwritten with garbage, deleted while a consumer
runs, the disk full, the output folder read-only. Each is one clear line naming the file and the
cause, never a traceback, and nothing is delivered twice after the operator mends it.

The disk-full and read-only cases run the consumer in a mount namespace of its own (unshare(1), as
root, which CI is) over a small tmpfs or a read-only bind mount: the real errors, on this machine
only, gone when the process ends."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from comms.app import Env
from comms.bus import open_bus
from comms.dev.servers import FakeSendGrid, FakeTwilio
from comms.ledger import Ledger
from tests.conftest import MEALS, ROOT, SWITCH, env_vars, make_env, provider_env, reap, sigterm

NAMESPACES = os.geteuid() == 0 and shutil.which("unshare") is not None
needs_namespace = pytest.mark.skipif(not NAMESPACES, reason="needs root and unshare(1) for a mount namespace")


def _comms(env: Env, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, **env_vars(env), "COLUMNS": "200", **(extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "comms.cli", *args], env=e, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _publish(env: Env, *events: bytes) -> None:
    with open_bus(env.bus_url) as bus:
        bus.publish_many(env.topic, [(None, e) for e in events])


def _wait(cond: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _sms_consumer(proc_env: dict[str, str], log: Path) -> Callable[[], subprocess.Popen[bytes]]:
    """A function that starts `python -m consumers.sms`, appending to `log`."""

    def start() -> subprocess.Popen[bytes]:
        with open(log, "ab") as f:
            return subprocess.Popen(
                [sys.executable, "-m", "consumers.sms"], env=proc_env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT
            )

    return start


@pytest.mark.parametrize("which", ["ledger", "bus"])
def test_a_file_overwritten_with_garbage_is_one_clear_line(which: str, env: Env, tmp_path: Path) -> None:
    _publish(env, MEALS)
    path = env.ledger if which == "ledger" else Path(env.bus_url.removeprefix("sqlite:///"))
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"this is not a database\n" * 300)
    r = _comms(env, "run", "--until-idle")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert f"{which} {path}" in r.stderr and "not a SQLite database" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("which", ["ledger", "bus"])
def test_a_file_deleted_while_a_consumer_runs_is_written_back_and_nothing_goes_twice(
    which: str, tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    tw, sg = providers
    families = 30
    env = make_env(tmp_path, families, COMMS_BUS=f"sqlite:///{tmp_path / 'bus.db'}?lease=2")
    path = env.ledger if which == "ledger" else tmp_path / "bus.db"
    proc_env = {**os.environ, **env_vars(env), **provider_env(tw, sg)}
    _publish(env, MEALS)
    log = tmp_path / "sms.log"
    start = _sms_consumer(proc_env, log)
    proc = start()
    try:
        _wait(lambda: len(tw.per_recipient()) == families, 60, "the meal SMS")
        path.unlink()  # an operator's `rm`, or a clean-up script
        if which == "ledger":
            _publish(env, SWITCH)  # its first ledger write finds the file gone (the bus: the next lease renewal)
        assert proc.wait(timeout=60) == 1, log.read_text()
        text = log.read_text()
        assert "Traceback" not in text
        assert f"{which} {path} was deleted while this process ran" in text and "written back" in text, text
        if which == "bus":
            _publish(env, SWITCH)  # the written-back bus holds the meal event and the group's offsets
        ledger = Ledger(env.ledger)
        rows: Counter[str] = Counter()
        for cid, _, _, st, n in ledger.counts():
            rows[st] += n if cid == "meal-schedule" else 0
        ledger.close()
        # every meal SMS is in the ledger: `sent`, or `sending` if the deletion came between the
        # provider's answer and the ledger's mark (the restart then finds it at Twilio)
        assert rows.total() == families and {s for s, n in rows.items() if n} <= {"sent", "sending"}, rows
        proc = start()
        _wait(lambda: tw.per_recipient().total() == 2 * families, 60, "the platform SMS after the restart")
        time.sleep(0.3)  # anything sent twice would arrive now
        assert sigterm(proc) == 0
    finally:
        reap(proc)
    assert set(tw.per_recipient().values()) == {2}  # each family: the meal SMS and the platform SMS, once each


def _in_namespace(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a shell script as root in a private mount namespace (its mounts vanish with it)."""
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


@needs_namespace
def test_a_full_disk_is_one_clear_line_and_the_restart_sends_nothing_twice(
    tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    """The disk fills mid-fan-out (another program's file takes the last byte): the consumer stops
    with one line; after space is freed, the restart reconciles what was in flight with the provider
    and sends the rest: every family gets its SMS once."""
    tw, sg = providers
    tw.faults.slow_rate, tw.faults.slow_seconds = 1.0, 0.05  # a fan-out that lasts a few seconds
    families = 600
    small, kept, go = tmp_path / "small", tmp_path / "kept", tmp_path / "fill-the-disk-now"
    small.mkdir()
    env = make_env(tmp_path, families, COMMS_LEDGER=str(small / "ledger.db"))
    _publish(env, MEALS)
    proc_env = {**os.environ, **env_vars(env), **provider_env(tw, sg), "COLUMNS": "200"}
    script = (
        f"mount -t tmpfs -o size=8m tmpfs {small}\n"
        f"{sys.executable} -m comms.cli run --until-idle --only sms 2>{tmp_path / 'err.txt'} & pid=$!\n"
        f"while [ ! -e {go} ]; do sleep 0.02; done\n"
        f"dd if=/dev/zero of={small}/filler bs=4k 2>/dev/null || true\n"  # fill it to the last byte
        "rc=0; wait $pid || rc=$?\n"
        f"rm {small}/filler; mkdir -p {kept} && cp {small}/ledger.db* {kept}/\n"  # what it held, for the restart
        "exit $rc"
    )
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec", script],
        env=proc_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait(lambda: tw.per_recipient().total() >= 50 or proc.poll() is not None, 60, "the first SMS")
        go.touch()
        output, _ = proc.communicate(timeout=120)
    finally:
        reap(proc)
    err = (tmp_path / "err.txt").read_text()
    assert proc.returncode == 1, output + err
    assert "Traceback" not in err and "cannot rollback" not in err
    assert f"ledger {small / 'ledger.db'}:" in err and "the disk is full" in err, err
    assert tw.per_recipient().total() >= 50
    # the operator frees space (here: the ledger moves to a disk with room) and starts again
    for f in kept.iterdir():
        shutil.move(f, small / f.name)
    tw.faults.slow_rate = 0.0
    r = _comms(env, "run", "--until-idle", "--only", "sms", extra=provider_env(tw, sg))
    assert r.returncode == 0, r.stderr
    assert "reconciled" in r.stdout  # what was in flight when the disk filled was looked up, not resent
    per = tw.per_recipient()
    assert len(per) == families and set(per.values()) == {1}  # everyone once, no one twice


@needs_namespace
def test_a_read_only_output_folder_is_one_clear_line_then_each_draft_is_written_once(env: Env) -> None:
    _publish(env, SWITCH, MEALS)
    out = env.out
    for folder in ("press", "outbox/sms", "outbox/email", "outbox/voice"):  # as a first run left them
        (out / folder).mkdir(parents=True)
    proc_env = {**os.environ, **env_vars(env), "COLUMNS": "200"}
    r = _in_namespace(
        f"mount --bind {out} {out} && mount -o remount,bind,ro {out}\n"
        f"exec {sys.executable} -m comms.cli run --until-idle --only press",
        proc_env,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert f"output folder: cannot write {out / 'press'}" in r.stderr and "Read-only file system" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = _comms(env, "run", "--until-idle", "--only", "press")  # the folder is writable again
    assert r.returncode == 0, r.stderr
    drafts = sorted(p.name for p in (out / "press").glob("*.md"))
    assert len(drafts) == 4 and len(set(drafts)) == 4  # two events x en/es, each written once
    assert not list((out / "press").glob("*.tmp"))
