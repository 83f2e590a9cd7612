"""Press-release drafts: Markdown and HTML under out/press/, status draft, for the office to approve."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from comms.channels.base import Channel, Message, SendResult
from comms.channels.outbox import _write_atomic


class PressDraftChannel(Channel):
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory) / "press"
        self.dir.mkdir(parents=True, exist_ok=True)

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        results = []
        for m in messages:
            stem = m.to  # e.g. 2020-09-02-platform-switch-ab12cd34.en
            status = "draft - needs approval" if m.meta.get("approval") == "required" else "draft"
            front = (
                f"---\nstatus: {status}\ncampaign: {m.campaign}\nevent: {m.event_uid}\n"
                f"language: {m.lang}\nledger_key: {m.key}\n---\n\n"
            )
            _write_atomic(self.dir / f"{stem}.md", front + m.body["md"])
            _write_atomic(
                self.dir / f"{stem}.html",
                m.body["html"].replace("<head>", f'<head>\n<meta name="status" content="{status}">', 1),
            )
            results.append(SendResult(m.key, provider_id=f"draft:{stem}"))
        return results
