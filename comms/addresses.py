"""Phone numbers and e-mail addresses in one form everywhere: the roster, the suppression list and
every lookup, so a STOP written `(305) 555-0102` stops the SMS to `+13055550102`.

- Phones: E.164 through `phonenumbers`. Letters are refused, not read as a keypad (`305-CALL-NOW`
  would become a real-looking number), and so is an extension (an SMS cannot dial one).
- E-mail: `email-validator` (syntax only, no DNS): one address, no spaces, no header text after a
  newline; the domain lower-cased. The whole address is lower-cased for matching, as providers do.
"""

from __future__ import annotations

import re

import email_validator
import phonenumbers

_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
_EXTENSION = re.compile(r"(?i)\s*(ext\.?|extension|x|#)\s*\d+\s*$")  # phonenumbers reports it, below
_LETTERS = re.compile(r"[^\W\d_]")


class AddressError(ValueError):
    """Not a usable address; the message says why."""


def phone(raw: str, region: str = "US", *, strict: bool = True) -> str:
    """E.164 form of a phone number, or AddressError. `strict=False` (for matching a STOP against the
    roster) accepts a number of a possible length that the numbering plan does not list as assigned."""
    text = raw.strip()
    if _E164.match(text):
        return text  # the common case, and the hot one (every lookup of a fan-out)
    if _LETTERS.search(_EXTENSION.sub("", text)):
        raise AddressError("has letters: a phone number is digits")
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise AddressError(f"is not a phone number ({exc})") from None
    if parsed.extension:
        raise AddressError("has an extension: a text message cannot reach one")
    if not (phonenumbers.is_valid_number(parsed) if strict else phonenumbers.is_possible_number(parsed)):
        raise AddressError("is not a valid number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def email(raw: str) -> str:
    """The normalised e-mail address (as stored in the roster), or AddressError."""
    try:
        return email_validator.validate_email(raw.strip(), check_deliverability=False).normalized
    except email_validator.EmailNotValidError as exc:
        raise AddressError(str(exc)) from None


def checked(kind: str, raw: str) -> str:
    """An address of a channel's kind (`Channel.address`: phone or email) in the form it is kept in,
    or AddressError; a phone number of a possible length passes (a STOP from any number counts)."""
    return phone(raw, strict=False) if kind == "phone" else email(raw).lower()


def phone_key(address: str) -> str:
    """The form a phone number is kept and looked up in on the suppression list."""
    try:
        return phone(address, strict=False)
    except AddressError:
        return address.strip()


def email_key(address: str) -> str:
    """The form an e-mail address is kept and looked up in on the suppression list."""
    return address.strip().lower()
