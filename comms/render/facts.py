"""The same facts in every rendering: what each text of an event must say, and what it may not.

One event becomes up to nine texts (press en/es, SMS and e-mail en/es/ht, voice). Each is checked
against the event, per channel and language and part (an e-mail's plain text as well as its HTML):

- every fact the event states (`EventData.facts`: dates, times, grades, platforms, links, counts,
  school names), written as that language writes it ("3 de septiembre de 2020", "4:00 p.m."); a brief
  channel (SMS, a call) only the facts marked brief;
- no fact the event does not hold: a date that is none of the event's (nor the draft's, nor a
  quote's), a link the event does not carry, a phone number that is not the district's;
- the district's glossary: the English of a term that has a translation never stands in another
  language's text; no English sentence outside the names nobody translates (language.py);
- incident mode: the verification line in every SMS and e-mail, and links only to the district's
  own domains over https, never through a shortener (`link_problem`).

`problems` returns one line per finding, naming the template file, the language and the fact.
`comms validate` runs it over the sample events; at send time a finding holds the event (FactError:
it is dead-lettered with that line), before any message of it goes out.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import re
from collections.abc import Callable, Mapping
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from babel import Locale

from comms.events import EventData, Fact
from comms.render import formatting as f
from comms.render.language import english_sentences

if TYPE_CHECKING:
    from comms.channels import Channel
    from comms.config import District, Links
    from comms.render.renderer import Rendered

URL = re.compile(r"""https?://[^\s<>"'()\[\]]+""")
PHONE = re.compile(r"\(\d{3}\)\s?\d{3}-\d{4}|\b\d{3}[-.]\d{3}[-.]\d{4}\b")


@functools.cache  # per language, once: Babel's locale data and the compiled pattern are the same every check
def _months(lang: str) -> tuple[str, ...]:
    if lang == "ht":
        return tuple(f.HT_MONTHS)
    names = Locale.parse(f.babel_locale(lang)).months["format"]["wide"]
    return tuple(str(names[i]) for i in range(1, 13))


@functools.cache
def _date_pattern(lang: str) -> re.Pattern[str]:
    months = "|".join(_months(lang))
    if lang == "en":
        return re.compile(rf"\b(?P<m>{months}) (?P<d>\d{{1,2}}), (?P<y>\d{{4}})\b")
    if lang == "es":
        return re.compile(rf"\b(?P<d>\d{{1,2}}) de (?P<m>{months}) de (?P<y>\d{{4}})\b", re.I)
    return re.compile(rf"\b(?P<d>\d{{1,2}}) (?P<m>{months}) (?P<y>\d{{4}})\b", re.I)


def dates_in(text: str, lang: str) -> list[dt.date]:
    """The full dates (day, month, year) `text` states, as `lang` writes them."""
    months = [m.lower() for m in _months(lang)]
    out = []
    for m in _date_pattern(lang).finditer(text):
        try:
            out.append(dt.date(int(m["y"]), months.index(m["m"].lower()) + 1, int(m["d"])))
        except ValueError:
            continue  # "31 de febrero": not a date, so not a date the event would hold either
    return out


_HIDDEN = frozenset({"style", "script", "title"})


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._hidden = 0  # inside <style>, <script> or <title>: not the text a reader reads in the body

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.chunks.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        if tag in {"p", "li", "br", "div", "h1", "h2", "footer", "header", "title"}:
            self.chunks.append("\n")
        self.chunks += [f" {v} " for k, v in attrs if k == "href" and v]  # a link's target is a fact too


def plain(part: str, text: str) -> str:
    """What a reader reads in a rendered part: HTML without its markup, Markdown without its escapes."""
    if part == "html":
        parser = _Text()
        parser.feed(text)
        parser.close()
        return "".join(parser.chunks)
    if part == "md":
        return re.sub(r"\\([\\`*_{}\[\]()#+\-.!|<>~])", r"\1", text)
    return html.unescape(text) if "&" in text else text


def link_problem(url: str, links: Links | None, incident: bool) -> str | None:
    """Why a link may not reach a family, if so: in incident mode (or always, for a shortener) only
    https, to a district domain on `links.allow` or below it."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if links is not None and any(host == s or host.endswith("." + s) for s in links.shorteners):
        return f"{url}: a link shortener hides where a link goes"
    if not incident:
        return None
    if parts.scheme != "https":
        return f"{url}: incident mode allows https links only"
    if links is None or not any(host == d or host.endswith("." + d) for d in links.allow):
        allowed = ", ".join(links.allow) if links else "none"
        return f"{url}: not a district domain (district.links.allow: {allowed})"
    return None


def fact_text(fact: Fact, lang: str, school_name: Callable[[str], str | None], spoken: bool = False) -> str | None:
    """How `lang` writes the fact (None: a school the roster does not name); `spoken`: as a call
    says it (a link as its host and path)."""
    v = fact.value
    if fact.kind == "url" and spoken:
        parts = urlsplit(str(v))
        return (parts.hostname or "") + (parts.path if parts.path != "/" else "")
    if fact.kind == "date":
        return f.fmt_date(v, lang, with_weekday=False)
    if fact.kind == "time":
        return f.fmt_time(v, lang)
    if fact.kind == "grades":
        return f.grade_span(v)
    if fact.kind == "school":
        return school_name(v)
    return str(v)


def names_of(district: District, lang: str, data: EventData, context: Mapping[str, Any]) -> list[str]:
    """What a language check must not take for English: names nobody translates, the glossary's
    approved terms, the district's address and handles, and the names in the event and the roster."""
    out = [*district.names, district.address, district.phone, district.dateline]
    out += [
        h for handles in (district.social.twitter, district.social.instagram, district.social.facebook) for h in handles
    ]
    out += [texts[lang] for texts in district.glossary.values() if lang in texts]
    out += [str(getattr(data, n)) for n in data.names if getattr(data, n, None)]
    out += list(context.get("scope_schools") or ())
    for s in context.get("students") or ():
        out += [s["first_name"], s["school"]]
    if context.get("guardian"):
        out.append(context["guardian"]["first_name"])
    return out


def problems(
    *,
    rendered: Rendered,
    files: Mapping[str, str],
    spec: type[Channel],
    lang: str,
    data: EventData,
    context: Mapping[str, Any],
    district: District,
    school_name: Callable[[str], str | None],
) -> list[str]:
    """Each way one rendering breaks the event's facts, one line each (empty: it may be sent)."""
    out: list[str] = []
    incident, website_down = bool(context.get("incident")), bool(context.get("website_down"))
    select = str(context.get("select") or "scope")
    stated = data.facts(select)
    facts = [x for x in stated if x.brief or not spec.brief]
    # every date the event holds may be stated (a field a type does not list among its facts too)
    allowed_dates = {v for v in data.model_dump().values() if isinstance(v, dt.date)}
    if isinstance(context.get("issued"), dt.date):
        allowed_dates.add(context["issued"])
    typical = context.get("typical")
    if typical:  # the district's figure to compare with: its date may be stated, and long texts give it
        allowed_dates.add(typical["as_of"])
        if not spec.brief:
            facts.append(Fact(name="comparison.typical", kind="number", value=typical["absences"]))
    quote = (context.get("campaign") or {}).get("quote")
    if quote:
        allowed_dates.add(quote["said"])
        if isinstance(context.get("issued"), dt.date) and quote["said"] > context["issued"]:
            out.append(f"{lang}: the quote of {quote['by']} is dated {quote['said']}, after the draft's date")
    event_urls = {str(x.value) for x in stated if x.kind == "url"}
    glossary = {term: {str(k): v for k, v in texts.items()} for term, texts in district.glossary.items()}
    for part, name in files.items():
        text = plain(part, rendered.parts.get(part, ""))
        where = f"{name} ({lang})"
        for fact in facts:
            if fact.kind == "url" and website_down:
                continue  # with the site down, texts give the phone line instead (checked below)
            expected = fact_text(fact, lang, school_name, spec.spoken)
            if expected and expected not in text:
                out.append(f"{where}: leaves out {fact.name} ({expected})")
        if website_down and event_urls and district.phone not in text:
            out.append(f"{where}: the website is down and it gives no phone line ({district.phone})")
        for d in dates_in(text, lang):
            if d not in allowed_dates:
                out.append(f"{where}: states a date the event does not hold ({f.fmt_date(d, lang, False)})")
        for url in {u.rstrip(".,;:") for u in URL.findall(text)}:
            if website_down:
                out.append(f"{where}: links to {url} while the website is down")
            elif url not in event_urls:
                out.append(f"{where}: links to {url}, which the event does not hold")
            elif why := link_problem(url, district.links, incident):
                out.append(f"{where}: {why}")
        for number in set(PHONE.findall(text)):
            if number != district.phone:
                out.append(f"{where}: states a phone number that is not the district's ({number})")
        if incident and spec.verify_line and "verify" in glossary and glossary["verify"][lang] not in text:
            out.append(f"{where}: incident mode: leaves out the verification line")
        if lang != "en":
            for term, texts in glossary.items():
                english, own = texts.get("en", ""), texts.get(lang, "")
                if english and english != own and english not in own and english in text:
                    out.append(f"{where}: says {english!r} in English (glossary.{term}.{lang}: {own!r})")
            for sentence in english_sentences(text, names_of(district, lang, data, context)):
                out.append(f"{where}: English left in the text: {sentence!r}")
    return out
