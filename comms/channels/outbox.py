"""Dry-run delivery: every SMS or e-mail becomes a file a person can read under out/outbox/.

The file name is the ledger key, so a redelivered event rewrites the same file, never a second one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from comms.channels.base import Channel, Message, SendResult
from comms.errors import ConfigError, StoreError


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and a rename. A folder that cannot be written (read-only, full) is
    a StoreError naming the file: the consumer stops with that one line, and after the folder is
    mended the restart writes the same files again (their names are ledger keys), never twice."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise StoreError(f"output folder: cannot write {path}: {exc.strerror or exc}") from None


def make_folder(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {path}: {exc.strerror or exc} (COMMS_OUT)") from None
    return path


MEDIA_TYPES = {"html": "text/html"}


def outbox_text(m: Message) -> str:
    head = [
        f"Channel: {m.channel}",
        f"Campaign: {m.campaign}",
        f"Event: {m.event_uid}",
        f"Language: {m.lang}",
        f"Priority: {m.priority}",
        f"To: {m.to}",
    ]
    head += [f"{k.title()}: {v}" for k, v in sorted(m.meta.items())]
    if m.subject:
        head.append(f"Subject: {m.subject}")
    first, *others = m.body.items()
    out = "\n".join(head) + "\n\n" + first[1]
    for part, text in others:
        out += f"\n----- {MEDIA_TYPES.get(part, part)} -----\n" + text
    return out


class OutboxChannel(Channel):
    """Stands in for a channel's provider (`spec`) when its credentials are not set."""

    name = "outbox"
    parts = ("txt",)

    def __init__(self, directory: str | Path, spec: type[Channel]) -> None:
        self._spec = spec
        self.dir = make_folder(Path(directory) / spec.name)

    @property
    def spec(self) -> type[Channel]:
        return self._spec

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        results = []
        for m in messages:
            path = self.dir / f"{m.campaign}-{m.lang}-{m.key[:12]}.txt"
            _write_atomic(path, outbox_text(m))
            results.append(SendResult(m.key, provider_id=f"outbox:{path.name}"))
        return results
