"""What a log line may say about a person: never a full phone number, address or name."""

from __future__ import annotations

import logging

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
