"""Dates, times and lists in each family's language.

Babel (CLDR) does the work. CLDR's Haitian Creole (`ht`) carries no names of its own and falls back
to French ("jeudi 3 septembre"), which a Creole reader would find foreign, so day and month names for
`ht` come from the table below, in the spelling of the Haitian Creole orthography (Pressoir, 1979).
Any other missing locale falls back to English.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time
from babel.lists import format_list

# Regional locales: US Spanish writes "p.m." as Miami families read it.
BABEL_LOCALE = {"en": "en_US", "es": "es_US", "ht": "ht_HT"}

HT_DAYS = ("lendi", "madi", "mèkredi", "jedi", "vandredi", "samdi", "dimanch")
HT_MONTHS = (
    "janvye",
    "fevriye",
    "mas",
    "avril",
    "me",
    "jen",
    "jiyè",
    "out",
    "septanm",
    "oktòb",
    "novanm",
    "desanm",
)
WEEKDAY_INDEX = {
    d: i for i, d in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
}


def _plain(text: str) -> str:
    # CLDR puts narrow/no-break spaces in dates and times; one of them turns a GSM-7 SMS into UCS-2,
    # halving the characters per segment.
    return text.replace("\u202f", " ").replace("\u00a0", " ")


def babel_locale(lang: str) -> str:
    loc = BABEL_LOCALE.get(lang, lang)
    try:
        Locale.parse(loc)
    except (UnknownLocaleError, ValueError):
        return "en_US"
    return loc


def day_name(index: int, lang: str) -> str:
    if lang == "ht":
        return HT_DAYS[index]
    return str(Locale.parse(babel_locale(lang)).days["format"]["wide"][index])


def fmt_date(d: dt.date, lang: str, with_weekday: bool = True) -> str:
    """ "Thursday, September 3, 2020" / "jueves, 3 de septiembre de 2020" / "jedi 3 septanm 2020"."""
    if lang == "ht":
        text = f"{d.day} {HT_MONTHS[d.month - 1]} {d.year}"
        return f"{HT_DAYS[d.weekday()]} {text}" if with_weekday else text
    return _plain(format_date(d, "full" if with_weekday else "long", locale=babel_locale(lang)))


def fmt_time(t: dt.time, lang: str) -> str:
    """ "4 p.m." in English (AP style, as the district writes), the locale's short time otherwise."""
    if lang == "en":
        hour = t.hour % 12 or 12
        suffix = "a.m." if t.hour < 12 else "p.m."
        if t == dt.time(12, 0):
            return "noon"
        return f"{hour} {suffix}" if t.minute == 0 else f"{hour}:{t.minute:02d} {suffix}"
    if lang == "ht":  # as Creole notices in Miami write it: "4:00 p.m."
        return f"{t.hour % 12 or 12}:{t.minute:02d} {'a.m.' if t.hour < 12 else 'p.m.'}"
    return _plain(format_time(t, "short", locale=babel_locale(lang)))


def fmt_list(items: Iterable[str], lang: str) -> str:
    items = [str(i) for i in items]
    if lang == "ht":
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " ak " + items[-1]
    return _plain(format_list(items, locale=babel_locale(lang)))


def fmt_days(days: Sequence[str], lang: str) -> str:
    """["tuesday", "thursday"] -> "Tuesdays and Thursdays" / "martes y jueves" / "madi ak jedi"."""
    names = [day_name(WEEKDAY_INDEX[d], lang) for d in sorted(days, key=WEEKDAY_INDEX.__getitem__)]
    if lang == "en":
        names = [n + "s" for n in names]
    return fmt_list(names, lang)


_GRADE_LABEL = {"PK": "Pre-K", "KG": "K"}


def grade_span(grades: Sequence[str]) -> str:
    """["06", ..., "12"] -> "6-12"; ["PK", ..., "05"] -> "Pre-K-5"; gaps are listed: "3, 5"."""
    order = ["PK", "KG", *(f"{n:02d}" for n in range(1, 13))]
    idx = sorted({order.index(g) for g in grades})
    label = [_GRADE_LABEL.get(order[i], str(int(order[i])) if order[i].isdigit() else order[i]) for i in idx]
    if len(idx) > 1 and idx == list(range(idx[0], idx[-1] + 1)):
        return f"{label[0]}-{label[-1]}"
    return ", ".join(label)
