"""The database the ledger lives in, one module per engine (as comms/bus/ has one per bus):

- `sqlite.SqliteDb`: a file on this machine, the embedded default (`COMMS_LEDGER=var/ledger.db`);
- `postgres.PostgresDb`: a PostgreSQL server shared by consumers on many hosts
  (`COMMS_LEDGER=postgresql://user@host:5432/comms`).

Callers write one SQL for both: `?` placeholders, `INSERT ... ON CONFLICT`, `INDEXED BY` hints
(dropped where the engine has none), and schema text with SQLite's types (REAL, WITHOUT ROWID,
INTEGER PRIMARY KEY); each engine's `translate()` makes them its own. What differs beyond that
(triggers, JSON functions) the caller states per `dialect`.

A write is a function of a transaction, `db.transact(work)`: the engine may run it again from the
start (PostgreSQL after a deadlock, or after the server came back from a restart), so `work` only
touches the database and values it computes itself.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")


class Tx(abc.ABC):
    """One open transaction."""

    @abc.abstractmethod
    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the rows it changed."""

    @abc.abstractmethod
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement per row; the rows changed in all."""

    @abc.abstractmethod
    def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query in this transaction; its rows."""


class Db(abc.ABC):
    dialect: ClassVar[str]

    def __init__(self, name: str) -> None:
        self.name = name  # what error lines name: the file, or the URL without its password
        self.lock = threading.Lock()  # one connection per Db, used by one thread at a time

    @abc.abstractmethod
    def read(self, sql: str, args: Sequence[Any] = (), doing: str = "cannot read") -> list[tuple[Any, ...]]:
        """A query outside any transaction of ours."""

    @abc.abstractmethod
    def transact(self, work: Callable[[Tx], T], doing: str = "cannot write", exclusive: bool = False) -> T:
        """Run `work` in one transaction and commit it. `exclusive`: no other exclusive transaction
        on this database runs meanwhile (schema set-up, approvals: a read then a write on it)."""

    @abc.abstractmethod
    def schema_version(self, tx: Tx, table: str) -> int | None:
        """The stamped version of the schema, None when `table` does not exist yet."""

    @abc.abstractmethod
    def stamp(self, tx: Tx, table: str, version: int) -> None: ...

    @abc.abstractmethod
    def ddl(self, script: str) -> list[str]:
        """The statements of a schema script, in this engine's terms."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """One statement in its own transaction."""
        return self.transact(lambda tx: tx.execute(sql, args))


def is_url(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_db(target: str | Path, what: str) -> Db:
    """A postgresql:// URL, or the path of a SQLite file."""
    if is_url(target):
        from comms.db.postgres import PostgresDb

        return PostgresDb(str(target), what)
    from comms.db.sqlite import SqliteDb

    return SqliteDb(Path(target), what)


__all__ = ["Db", "Tx", "is_url", "open_db"]
