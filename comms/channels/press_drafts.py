"""Press-release drafts: Markdown and HTML under out/press/, status draft, for the office to approve.

The front matter is written by the YAML emitter from values, never by string templating: an event id
holding a newline once turned a draft's status into `approved`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import yaml

from comms.channels.base import Channel, Message, SendResult
from comms.channels.outbox import _write_atomic, make_folder


class PressDraftChannel(Channel):
    def __init__(self, directory: str | Path) -> None:
        self.dir = make_folder(Path(directory) / "press")

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        results = []
        for m in messages:
            stem = m.to  # e.g. 2020-09-02-platform-switch-ab12cd34.en
            status = "draft - needs approval" if m.meta.get("approval") == "required" else "draft"
            meta = {
                "status": status,
                "campaign": m.campaign,
                "event": m.event_uid,
                "language": m.lang,
                "ledger_key": m.key,
            }
            front = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n\n"
            _write_atomic(self.dir / f"{stem}.md", front + m.body["md"])
            _write_atomic(
                self.dir / f"{stem}.html",
                m.body["html"].replace("<head>", f'<head>\n<meta name="status" content="{html.escape(status)}">', 1),
            )
            results.append(SendResult(m.key, provider_id=f"draft:{stem}"))
        return results
