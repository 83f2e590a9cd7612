"""Shared entry point of the thin consumer modules."""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading

from comms.app import App
from comms.errors import BusUnavailableError
from comms.worker import run


def main(name: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # we log bus trouble ourselves, once
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints every thread's stack: for a stuck consumer
    stop = threading.Event()
    # SIGTERM (docker stop) finishes the batch in hand and commits it, then exits
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    app = App.open()
    try:
        workers = app.workers_when_ready([name], stop)
    except BusUnavailableError:  # stopped while waiting for the bus
        app.close()
        return
    try:
        run(workers, stop=stop)
    except KeyboardInterrupt:
        pass
    finally:
        for w in workers:
            w.close()
        app.close()
