"""What a log line may say about a person: never a full phone number, address or name."""

from __future__ import annotations

import logging
import re

#: Provider SDK loggers that print personal data or secrets: twilio logs every request's URL and
#: query (a message lookup's holds the phone number) at INFO, eight lines per SMS; sendgrid's
#: python_http_client logs payloads (every address) and headers (the API key) at DEBUG.
SDK_LOGGERS = ("twilio", "python_http_client")


def quiet_sdk_loggers() -> None:
    """Only the SDKs' warnings and errors reach our logs (called by the channels that use them)."""
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def mask_phone(phone: str | None) -> str:
    """+13055550101 -> +1*******0101"""
    if not phone:
        return "-"
    return phone[:2] + "*" * max(0, len(phone) - 6) + phone[-4:]


def mask_email(email: str | None) -> str:
    """maria.g01@example.org -> m***@e***.org"""
    if not email or "@" not in email:
        return "-"
    local, _, domain = email.partition("@")
    host, _, tld = domain.rpartition(".")
    return f"{local[:1]}***@{host[:1]}***.{tld}"


def mask(destination: str | None) -> str:
    return mask_email(destination) if destination and "@" in destination else mask_phone(destination)


_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d \t().-]{5,}\d")


def _mask_digits(m: re.Match[str]) -> str:
    text = m.group(0)
    digits = re.sub(r"\D", "", text)
    if len(digits) < 7:  # an error code or a count, not a number
        return text
    return ("+" if text.startswith("+") else "") + "*" * (len(digits) - 4) + digits[-4:]


def scrub(text: str) -> str:
    """A provider's text with every phone number and e-mail address in it masked, before it is kept
    in the ledger, shown by `comms report` or logged: Twilio's 21266 and SendGrid's 400 quote them."""
    return _PHONE.sub(_mask_digits, _EMAIL.sub(lambda m: mask_email(m.group(0)), text))
