"""What a family's text back means: a keyword, or words for the office to read.

Honoured keywords, matched on the whole text (trimmed, any case, accents ignored), as carriers and
Twilio read them, plus the words Spanish- and Haitian Creole-speaking families would send:

    stop    STOP STOPALL UNSUBSCRIBE CANCEL END QUIT    (Twilio's standard list)
            PARA ALTO BAJA CANCELAR                     (Spanish)
            KANPE SISPANN ANILE                         (Haitian Creole: "stop", "cancel")
    start   START UNSTOP YES                            (Twilio's; a START only lifts a STOP)
            COMENZAR                                    (Spanish)  KÒMANSE (Haitian Creole)
    help    HELP INFO  AYUDA (Spanish)  ÈD (Haitian Creole)

"SI" and "WI" (yes) are not START words: a family answering another question must not be
resubscribed by it. Twilio's `OptOutType` (Advanced Opt-Out) wins when it is set.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

Keyword = Literal["stop", "start", "help"]

KEYWORDS: dict[str, Keyword] = {
    **dict.fromkeys(
        ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "PARA", "ALTO", "BAJA", "CANCELAR"), "stop"
    ),
    **dict.fromkeys(("KANPE", "SISPANN", "ANILE"), "stop"),
    **dict.fromkeys(("START", "UNSTOP", "YES", "COMENZAR", "KOMANSE"), "start"),
    **dict.fromkeys(("HELP", "INFO", "AYUDA", "ED"), "help"),
}


def _plain(text: str) -> str:
    """Upper case without accents or punctuation around: "Kòmanse." -> "KOMANSE"."""
    decomposed = unicodedata.normalize("NFKD", text.strip().upper())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip(" .!¡?¿'\"")


def keyword(body: str, opt_out_type: str | None = None) -> Keyword | None:
    """The keyword a reply is, or None: then it is words for the office."""
    if opt_out_type in ("STOP", "START", "HELP"):
        kw: Keyword = "stop" if opt_out_type == "STOP" else "start" if opt_out_type == "START" else "help"
        return kw
    return KEYWORDS.get(_plain(body))
