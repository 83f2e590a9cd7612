"""The district systems allowed to publish over HTTP (`POST /events` of `comms serve`): one bearer
token each (the SIS, food services, IT), stored as its SHA-256 only, so a copy of the file gives
no one a token. `comms producer add NAME` prints a new token once; `comms producer remove NAME`
revokes it at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

from comms.clock import Clock, system_clock
from comms.errors import ConfigError
from comms.store import SqliteFile

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS producers (
    name    TEXT PRIMARY KEY,
    token   TEXT NOT NULL UNIQUE,  -- sha256 of the token
    created REAL NOT NULL
) WITHOUT ROWID;
"""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Producers:
    def __init__(self, path: Path, clock: Clock = system_clock) -> None:
        self.file = SqliteFile(path, "producers")
        self.conn = self.file.open()
        self.clock = clock
        with self.file.errors("cannot set up its table"):
            self.conn.executescript(SCHEMA)

    def add(self, name: str) -> str:
        """A new token for `name` (replacing its old one); shown once, never stored."""
        if not NAME.match(name):
            raise ConfigError(f"producer name {name!r}: lower-case letters, digits, - and _ (e.g. sis, food-services)")
        token = secrets.token_urlsafe(32)
        with self.file.errors("cannot write"):
            self.conn.execute(
                "INSERT INTO producers(name, token, created) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET token=excluded.token, created=excluded.created",
                (name, _digest(token), self.clock().timestamp()),
            )
        return token

    def remove(self, name: str) -> bool:
        with self.file.errors("cannot write"):
            return self.conn.execute("DELETE FROM producers WHERE name=?", (name,)).rowcount > 0

    def names(self) -> list[str]:
        with self.file.errors("cannot read"):
            return [r[0] for r in self.conn.execute("SELECT name FROM producers ORDER BY name")]

    def who(self, token: str) -> str | None:
        """The producer a bearer token belongs to, or None."""
        digest = _digest(token)
        with self.file.errors("cannot read"):
            row = self.conn.execute("SELECT name, token FROM producers WHERE token=?", (digest,)).fetchone()
        # the lookup is by digest; compare_digest keeps the final check constant-time all the same
        return str(row[0]) if row and hmac.compare_digest(row[1], digest) else None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Producers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
