"""Delivery providers, found through an explicit registry and imported only when used."""

from __future__ import annotations

import importlib
from typing import Any

from comms.channels.base import Channel, Message, SendResult
from comms.errors import ConfigError

PROVIDERS: dict[str, str] = {
    "outbox": "comms.channels.outbox:OutboxChannel",
    "press_drafts": "comms.channels.press_drafts:PressDraftChannel",
    "twilio": "comms.channels.twilio_sms:TwilioSmsChannel",
    "sendgrid": "comms.channels.sendgrid_email:SendGridEmailChannel",
}


def load_channel(provider: str, **kwargs: Any) -> Channel:
    target = PROVIDERS.get(provider)
    if target is None:
        raise ConfigError(f"unknown delivery provider {provider!r}; known: {', '.join(sorted(PROVIDERS))}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = ["PROVIDERS", "Channel", "Message", "SendResult", "load_channel"]
