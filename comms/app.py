"""Settings from the environment, and the wiring of bus, ledger, renderer and channels."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from comms.bus import Bus, open_bus
from comms.channels import Channel, load_channel
from comms.config import Settings, load_settings
from comms.errors import BusUnavailableError
from comms.ledger import Ledger
from comms.pipeline import Pipeline
from comms.render import Renderer
from comms.roster import FIXTURE, Roster
from comms.worker import CONSUMERS, Worker, group_name

DEFAULT_TOPIC = "comms.events"
log = logging.getLogger("comms.app")


@dataclass(frozen=True)
class Env:
    """Every setting the pipeline reads from the environment, with its default."""

    bus_url: str
    config: Path
    templates: Path
    out: Path
    ledger: Path
    roster: Path
    topic: str

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Env:
        e = os.environ if environ is None else environ
        var = Path(e.get("COMMS_VAR", "var"))
        return cls(
            bus_url=e.get("COMMS_BUS", f"sqlite:///{var / 'bus.db'}"),
            config=Path(e.get("COMMS_CONFIG", "campaigns.yaml")),
            templates=Path(e.get("COMMS_TEMPLATES", "templates")),
            out=Path(e.get("COMMS_OUT", "out")),
            ledger=Path(e.get("COMMS_LEDGER", str(var / "ledger.db"))),
            roster=Path(e.get("COMMS_ROSTER", str(FIXTURE))),
            topic=e.get("COMMS_TOPIC", DEFAULT_TOPIC),
        )


def build_channels(env: Env) -> dict[str, Channel]:
    return {
        "press_release": load_channel("press_drafts", directory=env.out),
        "sms": load_channel("outbox", directory=env.out / "outbox", channel="sms"),
        "email": load_channel("outbox", directory=env.out / "outbox", channel="email"),
    }


@dataclass
class App:
    env: Env
    settings: Settings
    bus: Bus
    pipeline: Pipeline

    @classmethod
    def open(cls, env: Env | None = None) -> App:
        env = env or Env.from_environ()
        settings = load_settings(env.config)
        pipeline = Pipeline(
            settings, Roster.load(env.roster), Renderer(env.templates), Ledger(env.ledger), build_channels(env)
        )
        return cls(env, settings, open_bus(env.bus_url), pipeline)

    def workers(self, names: list[str] | None = None) -> list[Worker]:
        return [
            Worker(n, self.bus, self.bus.consumer(group_name(n), [self.env.topic]), self.pipeline, self.env.topic)
            for n in names or list(CONSUMERS)
        ]

    def workers_when_ready(
        self, names: list[str] | None = None, stop: threading.Event | None = None, max_wait: float = 30.0
    ) -> list[Worker]:
        """Workers, once the bus answers: one log line per attempt, backing off to `max_wait` seconds."""
        attempt = 0
        while True:
            try:
                return self.workers(names)
            except BusUnavailableError as exc:
                attempt += 1
                delay = min(max_wait, 2.0**attempt)
                log.warning("bus not ready (%s); attempt %d, retrying in %.0fs", exc, attempt, delay)
                if stop is not None and stop.wait(delay):
                    raise
                if stop is None:
                    time.sleep(delay)

    def close(self) -> None:
        self.pipeline.ledger.close()
        for ch in self.pipeline.channels.values():
            ch.close()
        self.bus.close()
