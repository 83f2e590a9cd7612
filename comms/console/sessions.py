"""Console sessions in signed cookies, CSRF tokens and the login throttle: pure of the web framework,
each with an injected clock.

A session is the account name, a CSRF token and two times, signed with the console's secret
(itsdangerous), never stored server-side: a restart keeps people logged in, and rotating the secret
logs everyone out. It ends after `idle` seconds without a page view (the live refresh of a page does
not count) and `lifetime` seconds after login, whichever comes first. The account and its role are
read on every request, so a disabled account stops at its next click.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

from itsdangerous import BadSignature, URLSafeSerializer

from comms.clock import Clock

COOKIE = "comms_session"


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    user: str | None  # None: before login (the login form's CSRF token lives here)
    csrf: str
    issued: float
    seen: float

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf)


class Sessions:
    def __init__(self, secret: bytes, clock: Clock, idle: float = 30 * 60, lifetime: float = 12 * 3600) -> None:
        self.signer = URLSafeSerializer(secret, salt="comms-console-session")
        self.clock, self.idle, self.lifetime = clock, idle, lifetime

    def new(self, user: str | None) -> Session:
        now = self.clock().timestamp()
        return Session(user=user, csrf=secrets.token_urlsafe(24), issued=now, seen=now)

    def load(self, cookie: str | None) -> Session | None:
        """The cookie's session if its signature is good and it has not timed out."""
        if not cookie:
            return None
        try:
            data = self.signer.loads(cookie)
            s = Session(user=data["u"], csrf=str(data["c"]), issued=float(data["i"]), seen=float(data["s"]))
        except (BadSignature, KeyError, TypeError, ValueError):
            return None
        now = self.clock().timestamp()
        if now - s.seen > self.idle or now - s.issued > self.lifetime or s.seen > now + 60:
            return None
        return s

    def touch(self, s: Session) -> Session:
        return replace(s, seen=self.clock().timestamp())

    def dump(self, s: Session) -> str:
        return str(self.signer.dumps({"u": s.user, "c": s.csrf, "i": s.issued, "s": s.seen}))


class Throttle:
    """At most `limit` failed logins per key (an account name, a client address) in `window` seconds:
    guessing a password takes years, and a locked-out person waits minutes, not forever."""

    def __init__(self, clock: Clock, limit: int = 5, window: float = 15 * 60) -> None:
        self.clock, self.limit, self.window = clock, limit, window
        self.failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        now = self.clock().timestamp()
        times = self.failures.setdefault(key, deque())
        while times and now - times[0] > self.window:
            times.popleft()
        return times

    def wait(self, *keys: str) -> float:
        """Seconds until another attempt is allowed for these keys (0: now)."""
        now = self.clock().timestamp()
        waits = [self.window - (now - t[0]) for k in keys if len(t := self._recent(k)) >= self.limit]
        return max(waits, default=0.0)

    def failed(self, *keys: str) -> None:
        for k in keys:
            self._recent(k).append(self.clock().timestamp())

    def succeeded(self, key: str) -> None:
        self.failures.pop(key, None)


def console_secret(environ: dict[str, str] | os._Environ[str], beside: Path) -> bytes:
    """COMMS_CONSOLE_SECRET, or a random one made once and kept (mode 0600) beside the ledger: a new
    install works at once, and a cluster of `comms serve` processes sets the variable to share it."""
    if value := environ.get("COMMS_CONSOLE_SECRET"):
        return value.encode()
    path = beside / "console.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it a moment ago: use that one
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key
