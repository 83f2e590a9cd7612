"""The channels, found through one registry: name -> the class that declares it (comms/channels/base.py).

A new channel is a module here with one class, and one line below. Everything else (campaigns.yaml
validation, the roster's consent, the consumers, the demo's table, `comms validate`) iterates this.
"""

from __future__ import annotations

import functools
import importlib

from comms.channels.base import Channel, Message, Options, SendResult
from comms.errors import ConfigError

REGISTRY: dict[str, str] = {
    "press_release": "comms.channels.press_drafts:PressDraftChannel",
    "sms": "comms.channels.twilio_sms:TwilioSmsChannel",
    "email": "comms.channels.sendgrid_email:SendGridEmailChannel",
    "voice": "comms.channels.twilio_voice:TwilioVoiceChannel",
}


@functools.cache
def channel_class(name: str) -> type[Channel]:
    target = REGISTRY.get(name)
    if target is None:
        raise ConfigError(f"unknown channel {name!r}; known: {', '.join(REGISTRY)}")
    module, _, cls_name = target.partition(":")
    cls: type[Channel] = getattr(importlib.import_module(module), cls_name)
    if cls.name != name:
        raise ConfigError(f"{target} declares channel {cls.name!r}, registered as {name!r}")
    return cls


def channel_classes() -> list[type[Channel]]:
    """Every channel, in registry order."""
    return [channel_class(n) for n in REGISTRY]


__all__ = ["REGISTRY", "Channel", "Message", "Options", "SendResult", "channel_class", "channel_classes"]
