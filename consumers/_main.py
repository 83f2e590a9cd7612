"""Shared entry point of the thin consumer modules."""

from __future__ import annotations

import logging
import signal
import threading

from comms.app import App
from comms.worker import run


def main(name: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    # SIGTERM (docker stop) finishes the batch in hand and commits it, then exits
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    app = App.open()
    workers = app.workers([name])
    try:
        run(workers, stop=stop)
    except KeyboardInterrupt:
        pass
    finally:
        for w in workers:
            w.close()
        app.close()
