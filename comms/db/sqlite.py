"""A SQLite file (comms/store.py opens it in WAL mode and watches it): the embedded default. A write
transaction is BEGIN IMMEDIATE, so writers on the file take turns and every transaction is exclusive."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from comms.db import Db, T, Tx
from comms.store import SqliteFile


class SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, args).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return self.conn.executemany(sql, rows).rowcount

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(sql, args)]


def statements(script: str) -> list[str]:
    """A script's statements, one each (a trigger's body holds `;` of its own); executescript would
    commit the transaction that makes the schema set-up atomic."""
    out, buf = [], ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                out.append(buf)
            buf = ""
    return out


class SqliteDb(Db):
    dialect = "sqlite"

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"{what} {path}")
        self.path = path
        self.file = SqliteFile(path, what)
        self.conn = self.file.open()
        self._tx = SqliteTx(self.conn)

    def read(self, sql: str, args: Sequence[Any] = (), doing: str = "cannot read") -> list[tuple[Any, ...]]:
        with self.lock, self.file.errors(doing):
            return self._tx.read(sql, args)

    def transact(self, work: Callable[[Tx], T], doing: str = "cannot write", exclusive: bool = False) -> T:
        with self.lock, self.file.errors(doing):
            self.file.check()
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                out = work(self._tx)
                self.conn.execute("COMMIT")
                return out
            except BaseException:
                # SQLite has already rolled back when a write failed for a full disk: ROLLBACK would
                # then fail with "no transaction is active" and hide the real error
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    def schema_version(self, tx: Tx, table: str) -> int | None:
        if not tx.read("SELECT 1 FROM sqlite_master WHERE name=?", (table,)):
            return None
        return int(tx.read("PRAGMA user_version")[0][0])

    def stamp(self, tx: Tx, table: str, version: int) -> None:
        tx.execute(f"PRAGMA user_version={int(version)}")

    def ddl(self, script: str) -> list[str]:
        return statements(script)

    def close(self) -> None:
        self.conn.close()
