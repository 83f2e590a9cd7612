"""One-click unsubscribe (RFC 8058) tokens: who unsubscribes, until when the link works, signed.

A token is `<payload>.<signature>`, both base64url: the payload is the JSON of the address and an
expiry (Unix seconds), the signature HMAC-SHA256 of the payload with COMMS_UNSUBSCRIBE_SECRET. A
forged, altered or expired token is refused and changes nothing. Unsubscribing stops the district's
bulk e-mail to that address; emergency messages still reach it (README: "Closing the loop").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

VALID_FOR = 60 * 24 * 3600  # seconds: a link in a two-month-old e-mail still works


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: str, email: str, now: float, valid_for: float = VALID_FOR) -> str:
    payload = _b64(json.dumps({"e": email, "x": int(now + valid_for)}, separators=(",", ":")).encode())
    return f"{payload}.{_b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())}"


def read_token(secret: str, token: str, now: float) -> str | None:
    """The address a valid, unexpired token names; None for anything else."""
    payload, _, signature = token.partition(".")
    try:
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        doc = json.loads(_unb64(payload))
    except (ValueError, TypeError):  # not base64, not JSON, not ASCII
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("e"), str) or not isinstance(doc.get("x"), int):
        return None
    return doc["e"] if now <= doc["x"] else None
