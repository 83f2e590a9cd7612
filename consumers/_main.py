"""Shared entry point of the thin consumer modules."""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
import threading

log = logging.getLogger("consumers")


def main(name: str) -> None:
    stop = threading.Event()
    # SIGTERM (docker stop) finishes the batch in hand and commits it, then exits. Set before the
    # pipeline is imported (every channel's SDK: most of a second on a busy host), so a stop that
    # comes during start-up is a clean stop too, not death by the signal.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from comms.app import App
    from comms.errors import BusUnavailableError, CommsError
    from comms.worker import close_all, consumer_names, run

    if name not in consumer_names():
        sys.exit(f"unknown consumer {name!r}; known: {', '.join(consumer_names())}")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # we log bus trouble ourselves, once
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints every thread's stack: for a stuck consumer
    try:
        app = App.open()
    except CommsError as exc:  # the configuration, a file or the bus: one line saying which, no traceback
        log.error("%s: cannot start: %s", name, exc)
        sys.exit(1)
    try:
        workers = app.workers_when_ready([name], stop)
    except BusUnavailableError:  # stopped while waiting for the bus
        app.close()
        return
    failed = False
    try:
        run(workers, stop=stop)
    except KeyboardInterrupt:
        pass
    except CommsError as exc:  # a damaged, deleted or full file: stop, saying which and why
        log.error("%s: stopped: %s", name, exc)
        failed = True
    finally:
        close_all(*workers, app)
    if failed:
        sys.exit(1)
