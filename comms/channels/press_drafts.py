"""Press-release drafts: Markdown and HTML under out/press/, status draft, for the office to approve.

The front matter is written by the YAML emitter from values, never by string templating: an event id
holding a newline once turned a draft's status into `approved`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from comms.channels.base import Channel, Message, SendResult
from comms.channels.outbox import _write_atomic, make_folder


class _FrontMatter(yaml.SafeDumper):
    """Every value on one line: a string with a line break is double-quoted with `\\n` escapes, so no
    value can end the front matter (a line `---`) or start a key of its own."""


_FrontMatter.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style='"' if any(c in value for c in "\n\r\x85\u2028\u2029") else None
    ),
)


def front_matter(meta: dict[str, str]) -> str:
    return "---\n" + yaml.dump(meta, Dumper=_FrontMatter, sort_keys=False, allow_unicode=True, width=10**6) + "---\n\n"


class PressDraftChannel(Channel):
    name = "press_release"
    consumer = "press"
    parts = ("md", "html")
    audience = "press"
    approval = True  # drafts are marked for the office's approval
    gated = False  # a draft is the office's to approve in the console, never sent by this pipeline
    unit = "draft"
    expires = False  # a late draft is still the record of what happened: written, marked late

    @classmethod
    def units(cls, parts: Mapping[str, str]) -> int:
        return 0  # nothing billed

    def __init__(self, directory: str | Path) -> None:
        self.dir = make_folder(Path(directory) / "press")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], out: Path) -> Channel:
        return cls(out)

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        results = []
        for m in messages:
            stem = m.to  # e.g. 2020-09-02-platform-switch-ab12cd34.en
            status = "draft - needs approval" if m.meta.get("approval") == "required" else "draft"
            meta = {
                "status": status,
                **({"late": m.meta["late"]} if m.meta.get("late") else {}),
                "campaign": m.campaign,
                "event": m.event_uid,
                "language": m.lang,
                "ledger_key": m.key,
            }
            front = front_matter(meta)
            _write_atomic(self.dir / f"{stem}.md", front + m.body["md"])
            page = m.body["html"].replace("<head>", f'<head>\n<meta name="status" content="{html.escape(status)}">', 1)
            if m.meta.get("late"):  # for the office, in its words: on the page, not only in the front matter
                page = page.replace(
                    "<body>", f'<body>\n<p class="late"><strong>LATE</strong>: {html.escape(m.meta["late"])}</p>', 1
                )
            _write_atomic(self.dir / f"{stem}.html", page)
            results.append(SendResult(m.key, provider_id=f"draft:{stem}"))
        return results
