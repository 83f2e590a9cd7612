"""What a log line may say about a person: never a full phone number, address or name."""

from __future__ import annotations


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
