from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from comms.app import App, Env
from comms.bus import Bus, open_bus
from comms.demo import demo_events

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(tmp_path: Path) -> Env:
    """A complete, isolated environment: bus, ledger and outputs under tmp_path; repo config/templates."""
    return Env.from_environ(
        {
            "COMMS_VAR": str(tmp_path / "var"),
            "COMMS_OUT": str(tmp_path / "out"),
            "COMMS_CONFIG": str(ROOT / "campaigns.yaml"),
            "COMMS_TEMPLATES": str(ROOT / "templates"),
        }
    )


@pytest.fixture
def environ(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    """The same environment exported, for the CLI and subprocesses."""
    for k, v in env_vars(env).items():
        monkeypatch.setenv(k, v)
    return env


def env_vars(env: Env) -> dict[str, str]:
    return {
        "COMMS_BUS": env.bus_url,
        "COMMS_OUT": str(env.out),
        "COMMS_LEDGER": str(env.ledger),
        "COMMS_CONFIG": str(env.config),
        "COMMS_TEMPLATES": str(env.templates),
        "COMMS_TOPIC": env.topic,
    }


@pytest.fixture
def app(env: Env) -> Iterator[App]:
    a = App.open(env)
    yield a
    a.close()


# Every bus backend runs the same contract suite.
BUS_BACKENDS = ["sqlite", pytest.param("kafka", marks=pytest.mark.kafka)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def noida_kafka(data_dir: Path, port: int | None = None) -> Iterator[str]:
    """A noida-db Kafka-protocol broker on 127.0.0.1 for the length of the block; yields host:port."""
    exe = shutil.which("noida-db", path=str(Path(sys.executable).parent)) or shutil.which("noida-db")
    assert exe, "noida-db is a test dependency: pip install -e '.[test]'"
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "noida.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                exe,
                "start",
                "--only",
                "kafka",
                "--kafka-port",
                str(port),
                "--host",
                "127.0.0.1",
                "--data-dir",
                str(data_dir / "data"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not _listening(port):
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "noida-db did not open its Kafka port in 30 s"
                time.sleep(0.1)
            yield f"127.0.0.1:{port}"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # its children may hold the port a moment longer; the next broker on this port needs it free
            deadline = time.monotonic() + 10
            while _listening(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def kafka_broker(tmp_path: Path) -> Iterator[str]:
    """host:port of a Kafka-protocol broker: COMMS_TEST_KAFKA if set, else noida-db on a free port."""
    if os.environ.get("COMMS_TEST_KAFKA"):
        yield os.environ["COMMS_TEST_KAFKA"]
        return
    with noida_kafka(tmp_path / "noida") as hostport:
        yield hostport


@pytest.fixture(params=BUS_BACKENDS)
def bus_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bus.db'}?lease=2"
    if request.param == "kafka":
        return f"kafka://{request.getfixturevalue('kafka_broker')}?partitions=3"
    raise AssertionError(request.param)


@pytest.fixture
def bus(bus_url: str) -> Iterator[Bus]:
    b = open_bus(bus_url)
    yield b
    b.close()


@pytest.fixture
def demo() -> list[bytes]:
    return demo_events()


def event_doc(raw: bytes) -> dict:
    return json.loads(raw)
