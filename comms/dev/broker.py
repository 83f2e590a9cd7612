"""A Kafka-protocol broker for development, tests and benchmarks: noida-db on 127.0.0.1.

Not used in production: there, COMMS_BUS points at a real Kafka.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def noida_kafka(data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """A noida-db Kafka-protocol broker on `host` (127.0.0.1, or an address on a link the tests
    made) for the length of the block; yields host:port."""
    exe = shutil.which("noida-db", path=str(Path(sys.executable).parent)) or shutil.which("noida-db")
    if not exe:
        raise RuntimeError("noida-db is a test dependency: pip install -e '.[test]'")
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
                host,
                "--data-dir",
                str(data_dir / "data"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not _listening(port, host):
                if proc.poll() is not None:
                    raise RuntimeError(f"noida-db exited: {log_path.read_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError("noida-db did not open its Kafka port in 30 s")
                time.sleep(0.1)
            yield f"{host}:{port}"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # its children may hold the port a moment longer; the next broker on this port needs it free
            deadline = time.monotonic() + 10
            while _listening(port, host) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0
