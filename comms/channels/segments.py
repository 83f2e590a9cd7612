"""How many SMS segments a text costs: GSM-7 when every character is in the GSM 03.38 alphabet,
UCS-2 otherwise (one "í" or "ó" in Spanish is enough, and the message halves its room per segment).

The two tables below are the standard's (3GPP TS 23.038); no maintained Python package covers both
the alphabet and the segment arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")  # each costs an escape plus itself: two septets


@dataclass(frozen=True, slots=True)
class SmsSize:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int
    culprits: str  # the characters that forced UCS-2, if any

    def __str__(self) -> str:
        why = f"; UCS-2 because of {self.culprits!r}" if self.culprits else ""
        return f"{self.segments} segment(s), {self.encoding}, {self.units} units{why}"


def _segments(costs: list[int], single: int, per_segment: int) -> int:
    """Segments for characters of these unit costs. A character is never split between segments: a
    GSM-7 escape and its character, or a UTF-16 surrogate pair, that would straddle a boundary moves
    whole to the next segment (so 152 `a`, `€`, 152 `a` is 3 segments, as Twilio counts, not 2)."""
    if sum(costs) <= single:
        return 1 if costs else 0
    segments, used = 1, 0
    for c in costs:
        if used + c > per_segment:
            segments, used = segments + 1, 0
        used += c
    return segments


def sms_size(text: str) -> SmsSize:
    culprits = "".join(sorted({c for c in text if c not in GSM7_BASIC and c not in GSM7_EXTENDED}))
    if not culprits:
        costs = [2 if c in GSM7_EXTENDED else 1 for c in text]
        return SmsSize("GSM-7", sum(costs), max(1, _segments(costs, 160, 153)), "")
    costs = [len(c.encode("utf-16-le")) // 2 for c in text]
    return SmsSize("UCS-2", sum(costs), max(1, _segments(costs, 70, 67)), culprits)
