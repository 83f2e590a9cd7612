"""The SQLite files the pipeline keeps (bus, ledger, attendance counts, roster): opened one way, and
their failures said in one line that names the file and the cause.

- `connect()` opens a file in WAL mode, shared by several processes.
- `SqliteFile.errors()` turns what SQLite raises into a StoreError in words (the disk is full, it is
  not a database, it is read-only) instead of sqlite3's text, or the misleading "cannot rollback -
  no transaction is active" that follows a COMMIT the disk refused.
- `SqliteFile.check()`, before each write, finds the file deleted or replaced under the running
  process. SQLite would go on writing into the deleted inode and everything after would vanish when
  the process exits, so the next start would send again what was sent. A deleted file is written
  back from the still-open connection (sqlite3's backup API), so nothing recorded is lost, and the
  process stops. A replaced file is left alone; what this process holds goes beside it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from comms.errors import CommsError, StoreError


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A file another command writes (the roster): read, never created or changed."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def connect(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    # Switching to WAL takes a lock that busy_timeout does not wait for: switch only once, when the
    # file is new, and let a second process that opens it meanwhile retry.
    for attempt in range(50):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError:
            if attempt == 49:
                raise
            time.sleep(0.1)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def cause(exc: BaseException) -> str:
    """What went wrong with a database file, in words an operator acts on."""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if "disk is full" in low or "disk i/o" in low and "full" in low:
        return "the disk is full"
    if "not a database" in low or "malformed" in low:
        return f"it is not a SQLite database, or it is damaged ({text})"
    if "readonly" in low or "read-only" in low:
        return "it is read-only"
    if "unable to open" in low:
        return f"it cannot be opened ({text})"
    return text


class SqliteFile:
    """One open database file and its identity on disk."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self.conn: sqlite3.Connection | None = None
        self._ident: tuple[int, int] | None = None

    def open(self, synchronous: str = "FULL") -> sqlite3.Connection:
        with self.errors("cannot open"):
            self.conn = connect(self.path, synchronous)
            st = os.stat(self.path)
        self._ident = (st.st_dev, st.st_ino)
        return self.conn

    @contextlib.contextmanager
    def errors(self, doing: str = "failed", busy: type[CommsError] = StoreError) -> Iterator[None]:
        """Map SQLite's and the OS's errors to StoreError; `busy` for a lock held past busy_timeout
        (the bus retries that; for the ledger it is as fatal as the rest)."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            kind = busy if "locked" in str(exc) or "busy" in str(exc) else StoreError
            raise kind(f"{self.what} {self.path}: {doing}: {cause(exc)}") from exc
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.what} {self.path}: {doing}: {cause(exc)}") from exc

    def check(self) -> None:
        """Raise StoreError if the file this process opened is no longer the one at its path."""
        if self._ident is None or self.conn is None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StoreError(
                f"{self.what} {self.path} was deleted while this process ran; {self._restore()}; stopping"
            ) from None
        if (st.st_dev, st.st_ino) != self._ident:
            aside = self.path.with_name(f"{self.path.name}.{os.getpid()}.recovered")
            self._backup_to(aside)
            raise StoreError(
                f"{self.what} {self.path} was replaced by another file while this process ran; what this "
                f"process recorded is in {aside}; stopping"
            )

    def _backup_to(self, target: Path) -> None:
        assert self.conn is not None
        dst = sqlite3.connect(str(target))
        try:
            self.conn.backup(dst)
        finally:
            dst.close()

    def _restore(self) -> str:
        """Write the deleted file back from the open connection, unless another process did first."""
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.restoring")
        try:
            self._backup_to(tmp)
            # the deleted database's -wal and -shm are stale now: SQLite must not apply them to the copy
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
            try:
                os.link(tmp, self.path)  # atomic: fails if another process restored it meanwhile
                return "it was written back from this process's open connection, with everything recorded"
            except FileExistsError:
                return "another process wrote it back"
        except (sqlite3.Error, OSError) as exc:
            return f"writing it back failed ({cause(exc)})"
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
