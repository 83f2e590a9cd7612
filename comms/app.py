"""Settings from the environment, and the wiring of bus, ledger, renderer and channels."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from comms.attendance import AttendanceCounter
from comms.bus import Bus, open_bus
from comms.channels import Channel, load_channel
from comms.clock import Clock, clock_from_env
from comms.config import Settings, load_settings
from comms.errors import BusUnavailableError, ConfigError
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
    test_now: str | None = None  # COMMS_TEST_NOW: a fixed clock for tests of quiet hours and caps

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
            test_now=e.get("COMMS_TEST_NOW") or None,
        )


TWILIO_VARS = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
SENDGRID_VARS = ("SENDGRID_API_KEY", "COMMS_EMAIL_FROM")


def _provider_configured(environ: Mapping[str, str], needed: tuple[str, ...], either: tuple[str, ...] = ()) -> bool:
    """True when every variable is set, False when none is; a partial set is a ConfigError naming the gap."""
    names = needed + either
    present = [n for n in names if environ.get(n)]
    if not present:
        return False
    missing = [n for n in needed if not environ.get(n)]
    if either and not any(environ.get(n) for n in either):
        missing.append(" or ".join(either))
    if missing:
        raise ConfigError(
            f"{', '.join(present)} set but {', '.join(missing)} missing: set all, or none for the dry-run outbox"
        )
    return True


def build_channels(env: Env, environ: Mapping[str, str] | None = None) -> dict[str, Channel]:
    """Real providers where their credentials are in the environment; the dry-run outbox otherwise."""
    e = os.environ if environ is None else environ
    channels = {"press_release": load_channel("press_drafts", directory=env.out)}
    if _provider_configured(e, TWILIO_VARS, ("TWILIO_MESSAGING_SERVICE_SID", "TWILIO_FROM")):
        channels["sms"] = load_channel(
            "twilio",
            account_sid=e["TWILIO_ACCOUNT_SID"],
            auth_token=e["TWILIO_AUTH_TOKEN"],
            messaging_service_sid=e.get("TWILIO_MESSAGING_SERVICE_SID") or None,
            from_=e.get("TWILIO_FROM") or None,
            api_url=e.get("COMMS_TWILIO_API_URL") or None,
            status_callback=e.get("COMMS_TWILIO_STATUS_CALLBACK") or None,
            rate=float(e.get("COMMS_SMS_RATE", "100")),
            concurrency=int(e.get("COMMS_SMS_CONCURRENCY", "16")),
        )
    else:
        channels["sms"] = load_channel("outbox", directory=env.out / "outbox", channel="sms")
    if _provider_configured(e, SENDGRID_VARS):
        channels["email"] = load_channel(
            "sendgrid",
            api_key=e["SENDGRID_API_KEY"],
            sender=e["COMMS_EMAIL_FROM"],
            sender_name=e.get("COMMS_EMAIL_FROM_NAME") or None,
            api_url=e.get("COMMS_SENDGRID_API_URL") or None,
            reconcile_after=float(e.get("COMMS_SENDGRID_RECONCILE_AFTER", "120")),
        )
    else:
        channels["email"] = load_channel("outbox", directory=env.out / "outbox", channel="email")
    return channels


def _refuse_real_providers(env: Env, environ: Mapping[str, str] | None) -> None:
    """A generated roster's phone numbers are random valid numbers: only a local server may get them."""
    e = os.environ if environ is None else environ
    for configured, url_var in ((TWILIO_VARS, "COMMS_TWILIO_API_URL"), (SENDGRID_VARS, "COMMS_SENDGRID_API_URL")):
        if all(e.get(v) for v in configured):
            host = urlsplit(e.get(url_var) or "https://api.example").hostname or ""
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise ConfigError(
                    f"roster {env.roster} is synthetic (comms roster generate): its numbers and "
                    f"addresses may be real people's; set {url_var} to a local server, or unset "
                    f"{configured[0]} for the dry-run outbox"
                )


@dataclass
class App:
    env: Env
    settings: Settings
    bus: Bus
    pipeline: Pipeline

    @classmethod
    def open(cls, env: Env | None = None, clock: Clock | None = None, environ: Mapping[str, str] | None = None) -> App:
        env = env or Env.from_environ()
        if clock is None:
            clock = clock_from_env({"COMMS_TEST_NOW": env.test_now} if env.test_now else {})
        settings = load_settings(env.config)
        roster = Roster.load(env.roster)
        channels = build_channels(env, environ)
        if roster.synthetic:
            _refuse_real_providers(env, environ)
        pipeline = Pipeline(
            settings,
            roster,
            Renderer(env.templates),
            Ledger(env.ledger, clock),
            channels,
            clock,
        )
        return cls(env, settings, open_bus(env.bus_url), pipeline)

    def workers(self, names: list[str] | None = None) -> list[Worker]:
        workers = []
        for n in names or list(CONSUMERS):
            consumer = self.bus.consumer(group_name(n), [self.env.topic])
            channel = CONSUMERS[n]
            if channel is None:  # attendance: counts absences, publishes threshold events
                handle = self.attendance.handle
                release = None
            else:
                handle = functools.partial(self.pipeline.handle, channel=channel)
                release = functools.partial(self.pipeline.release_due, channel) if channel != "press_release" else None
            workers.append(Worker(n, self.bus, consumer, handle, self.env.topic, release))
        return workers

    @functools.cached_property
    def attendance(self) -> AttendanceCounter:
        return AttendanceCounter(
            self.env.ledger.with_name("attendance.db"), self.settings, self.bus, self.env.topic, self.pipeline.check
        )

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
        if "attendance" in self.__dict__:
            self.attendance.close()
        self.pipeline.ledger.close()
        for ch in self.pipeline.channels.values():
            ch.close()
        self.bus.close()
