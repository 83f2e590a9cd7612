"""Event buses, chosen by one URL (COMMS_BUS): `sqlite:///path/comms.db` or `kafka://host:9092[,host2:9092]`.

Backends are found through this explicit registry and imported only when used, so the embedded
default never imports kafka-python.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from comms.bus.base import DEAD_LETTER_SUFFIX, Bus, Consumer, Record
from comms.errors import ConfigError

BACKENDS: dict[str, str] = {
    "sqlite": "comms.bus.sqlite:SqliteBus",
    "kafka": "comms.bus.kafka:KafkaBus",
}


def open_bus(url: str) -> Bus:
    scheme = urlsplit(url).scheme
    target = BACKENDS.get(scheme)
    if target is None:
        raise ConfigError(
            f"COMMS_BUS={url!r}: unknown bus {scheme!r}; use one of " + ", ".join(f"{s}://..." for s in BACKENDS)
        )
    module, _, cls = target.partition(":")
    bus: Bus = getattr(importlib.import_module(module), cls).from_url(url)
    return bus


__all__ = ["BACKENDS", "DEAD_LETTER_SUFFIX", "Bus", "Consumer", "Record", "open_bus"]
