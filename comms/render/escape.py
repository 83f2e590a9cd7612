"""Event values as text in Markdown, as autoescaping makes them text in HTML.

A value rendered into a Markdown press draft must not become a link, an image, raw HTML, a heading
or emphasis, in CommonMark or in GitHub's dialect (whose autolinks turn a bare `https://...` or
`www.` into a link). Every character that can start such syntax is backslash-escaped; `(` `)` `.`
`,` `-` mid-line stay as typed so a draft reads naturally. Links in a draft come only from URL fields
(https, validated) or from the configuration, rendered by `md_value` as autolinks.
"""

from __future__ import annotations

import re

from markupsafe import Markup
from pydantic import AnyUrl

_INLINE = re.compile(r"([\\`*_\[\]<>{}|~&!$])")  # emphasis, code, links, images, HTML, entities, math
_LINE_START = re.compile(r"(?m)^([ \t]*)([#>+=-])")  # headings, quotes, lists, rules
_NUMBERED = re.compile(r"(?m)^([ \t]*\d{1,9})([.)])")
_AUTOLINK = re.compile(r"(?i)(?<=[a-z0-9])(:)(?=//)|(?<=\bwww)(\.)")  # GFM's extended autolinks


def md_escape(text: str) -> str:
    out = _INLINE.sub(r"\\\1", text)
    out = _NUMBERED.sub(r"\1\\\2", out)
    out = _LINE_START.sub(r"\1\\\2", out)
    return _AUTOLINK.sub(lambda m: "\\" + (m.group(1) or m.group(2)), out)


def md_value(value: object) -> object:
    """What a Markdown template outputs for a value: Markup passes, a URL field becomes an autolink
    (it was validated as https and its parser percent-encodes `<`, `>` and spaces), the rest is text."""
    if isinstance(value, Markup):
        return value
    if isinstance(value, AnyUrl):
        return Markup(f"<{value}>")
    if isinstance(value, str):
        return Markup(md_escape(value))
    return value
