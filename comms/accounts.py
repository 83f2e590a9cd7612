"""The console's accounts: a name, a role and an argon2 hash of the password (argon2-cffi), in
accounts.db next to the ledger. `comms user add NAME --role admin` makes the first one.

Roles, each allowed what the ones before it are:

    viewer     reads every page and export
    editor     edits press drafts
    approver   approves and rejects mass sends and press drafts
    admin      manages accounts

A district's single sign-on would replace `verify()` (README: "Single sign-on"); roles stay here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from comms.clock import Clock, system_clock
from comms.errors import AccessError
from comms.store import SqliteFile

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MIN_PASSWORD = 12
SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name    TEXT PRIMARY KEY,
    role    TEXT NOT NULL,
    hash    TEXT NOT NULL,
    active  INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL
) WITHOUT ROWID;
"""


class Role(IntEnum):
    VIEWER = 1
    EDITOR = 2
    APPROVER = 3
    ADMIN = 4

    @classmethod
    def named(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise AccessError(f"unknown role {name!r} (roles: {', '.join(r.label for r in cls)})") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    name: str
    role: Role
    active: bool

    def may(self, role: Role) -> bool:
        return self.active and self.role >= role


class Accounts:
    def __init__(self, path: Path, clock: Clock = system_clock) -> None:
        self.file = SqliteFile(path, "accounts")
        self.conn = self.file.open()
        self.clock = clock
        self.hasher = PasswordHasher()
        # a hash to verify against when the name is unknown, so a wrong name takes as long as a wrong password
        self._decoy = self.hasher.hash("not a password of anyone's")
        with self.file.errors("cannot set up its table"):
            self.conn.executescript(SCHEMA)

    def add(self, name: str, role: Role, password: str) -> Account:
        """A new account, or a new role and password for an existing one."""
        if not NAME.match(name):
            raise AccessError(f"account name {name!r}: lower-case letters, digits, '.', '-' and '_'")
        if len(password) < MIN_PASSWORD:
            raise AccessError(f"a password needs at least {MIN_PASSWORD} characters")
        with self.file.errors("cannot write"):
            self.conn.execute(
                "INSERT INTO accounts(name, role, hash, active, created) VALUES (?, ?, ?, 1, ?) ON CONFLICT(name) "
                "DO UPDATE SET role=excluded.role, hash=excluded.hash, active=1",
                (name, role.label, self.hasher.hash(password), self.clock().timestamp()),
            )
        return Account(name=name, role=role, active=True)

    def set_active(self, name: str, active: bool) -> None:
        with self.file.errors("cannot write"):
            if not self.conn.execute("UPDATE accounts SET active=? WHERE name=?", (int(active), name)).rowcount:
                raise AccessError(f"no account {name!r}")

    def get(self, name: str) -> Account | None:
        with self.file.errors("cannot read"):
            row = self.conn.execute("SELECT role, active FROM accounts WHERE name=?", (name,)).fetchone()
        return Account(name=name, role=Role.named(row[0]), active=bool(row[1])) if row else None

    def all(self) -> list[Account]:
        with self.file.errors("cannot read"):
            rows = self.conn.execute("SELECT name, role, active FROM accounts ORDER BY name").fetchall()
        return [Account(name=n, role=Role.named(r), active=bool(a)) for n, r, a in rows]

    def verify(self, name: str, password: str) -> Account | None:
        """The account if the password is its own and it is active; None otherwise (never says which)."""
        with self.file.errors("cannot read"):
            row = self.conn.execute("SELECT hash FROM accounts WHERE name=?", (name,)).fetchone()
        try:
            self.hasher.verify(row[0] if row else self._decoy, password)
        except (VerificationError, InvalidHashError):
            return None
        account = self.get(name) if row else None
        if account is None or not account.active:
            return None
        if self.hasher.check_needs_rehash(row[0]):
            with self.file.errors("cannot write"):
                self.conn.execute("UPDATE accounts SET hash=? WHERE name=?", (self.hasher.hash(password), name))
        return account

    def require(self, name: str, role: Role) -> Account:
        """The active account `name` with at least `role`, or AccessError (the CLI's `--as`)."""
        account = self.get(name)
        if account is None or not account.active:
            raise AccessError(f"no active account {name!r} (comms user add {name} --role {role.label})")
        if not account.may(role):
            raise AccessError(f"{name} is a {account.role.label}: this needs the {role.label} role")
        return account

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
