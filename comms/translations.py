"""Who reviewed each translated template, and from which English text.

Each non-English template file opens with one Jinja comment (families never see it):

    {# translation: source=sms/platform_switch.en.txt.j2 sha256=1f2e3d4c5b6a reviewed_by="Ana Pérez" on=2026-11-26 #}

`sha256` is the start of the hash of the English file when the translation was reviewed. When the
English changes, the hash no longer matches and the translation is `stale`: `comms validate` says
which languages need review, and a campaign that needs approval cannot be approved while one of its
templates is stale (the console shows why). `comms translations` lists the state of every file;
`comms translations review FILE --by NAME` records a review.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from comms.channels import channel_class
from comms.errors import ConfigError
from comms.render import template_paths

if TYPE_CHECKING:
    from comms.config import Settings

HEADER = re.compile(
    r"^\{# translation: source=(?P<source>\S+) sha256=(?P<sha>[0-9a-f]{12}) "
    r'reviewed_by="(?P<by>[^"\n]{1,120})" on=(?P<on>\d{4}-\d{2}-\d{2}) #\}\n'
)
_LANG_FILE = re.compile(r"^(?P<stem>.+)\.(?P<lang>[a-z]{2})\.(?P<part>[a-z]+)\.j2$")


class Review(StrEnum):
    REVIEWED = "reviewed"  # reviewed against the English as it is now
    STALE = "stale"  # the English changed since the review
    UNREVIEWED = "unreviewed"  # no review recorded


@dataclass(frozen=True, slots=True, kw_only=True)
class Translation:
    file: str  # relative to templates/
    lang: str
    source: str  # the English file it translates
    state: Review
    reviewed_by: str | None = None
    on: str | None = None


def source_of(name: str) -> tuple[str, str] | None:
    """(English file, language) of a template file name, or None when it has no language."""
    if m := re.fullmatch(r"_lang/([a-z]{2})\.j2", name):
        return "_lang/en.j2", m[1]
    path = Path(name)
    if m := _LANG_FILE.match(path.name):
        return (path.parent / f"{m['stem']}.en.{m['part']}.j2").as_posix(), m["lang"]
    return None


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def state(templates: Path, name: str) -> Translation | None:
    """The review state of one translated file (None: an English or language-neutral file)."""
    found = source_of(name)
    if found is None or found[1] == "en":
        return None
    source, lang = found
    text = (templates / name).read_text("utf-8")
    m = HEADER.match(text)
    if m is None:
        return Translation(file=name, lang=lang, source=source, state=Review.UNREVIEWED)
    src = templates / source
    current = digest(src) if src.is_file() else None
    return Translation(
        file=name,
        lang=lang,
        source=source,
        state=Review.REVIEWED if m["sha"] == current and m["source"] == source else Review.STALE,
        reviewed_by=m["by"],
        on=m["on"],
    )


def all_states(templates: Path) -> list[Translation]:
    out = []
    for path in sorted(templates.rglob("*.j2")):
        if (t := state(templates, path.relative_to(templates).as_posix())) is not None:
            out.append(t)
    return out


def stale_of(templates: Path, names: list[str]) -> dict[str, list[str]]:
    """{English file: [languages whose translation of it is stale]} among `names` and the
    vocabulary files they import (_lang/*.j2)."""
    out: dict[str, list[str]] = {}
    for name in names:
        t = state(templates, name) if (templates / name).is_file() else None
        if t is not None and t.state is Review.STALE:
            out.setdefault(t.source, []).append(t.lang)
    return out


def review(templates: Path, name: str, by: str, on: dt.date) -> Translation:
    """Record that `by` reviewed the translation `name` against its English file as it is now."""
    by = " ".join(by.split())
    if not by or '"' in by or len(by) > 120:
        raise ConfigError("--by: a reviewer's name, 1 to 120 characters, without double quotes")
    found = source_of(name)
    path = templates / name
    if found is None or found[1] == "en" or not path.is_file():
        raise ConfigError(f"{name}: not a translated template under {templates}")
    source = templates / found[0]
    if not source.is_file():
        raise ConfigError(f"{name}: its English file {found[0]} does not exist")
    text = HEADER.sub("", path.read_text("utf-8"), count=1)
    header = f'{{# translation: source={found[0]} sha256={digest(source)} reviewed_by="{by}" on={on.isoformat()} #}}\n'
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + text, "utf-8")
    tmp.replace(path)
    result = state(templates, name)
    assert result is not None
    return result


def campaign_templates(settings: Settings, cid: str) -> list[str]:
    """Every template file a campaign renders, with the vocabulary files of its languages."""
    c = settings.campaigns[cid]
    names: list[str] = []
    for channel, options in c.channels.items():
        for lang in channel_class(channel).languages(settings.district, options):
            names += template_paths(channel, options.template, lang).values()
            names.append(f"_lang/{lang}.j2")
    return list(dict.fromkeys(names))


def stale_translations(settings: Settings, templates: Path, cid: str) -> str | None:
    """ "es, ht need review (email/platform_switch.en.html.j2 changed)", or None when all are current."""
    stale = stale_of(templates, campaign_templates(settings, cid))
    if not stale:
        return None
    langs = sorted({lang for ls in stale.values() for lang in ls})
    return f"{', '.join(langs)} need review ({', '.join(sorted(stale))} changed since the translation was reviewed)"
