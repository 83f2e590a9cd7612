"""The families an event did not reach: no message delivered on any channel, by school, with why,
for school staff to phone; and the CSV they take away, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass

from comms.ledger import Ledger, State
from comms.roster import Roster

#: a cell starting so is a formula to Excel and LibreOffice (OWASP "CSV injection")
_FORMULA = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


@dataclass(frozen=True, slots=True, kw_only=True)
class Family:
    guardian: str
    name: str
    language: str
    phone: str
    email: str
    schools: tuple[str, ...]
    why: str  # per channel: its state and reason


def not_reached(ledger: Ledger, roster: Roster, campaign: str, event_uid: str) -> list[Family]:
    states: dict[str, list[str]] = defaultdict(list)
    reached: set[str] = set()
    for channel, guardian, _, state, detail in ledger.event_rows(campaign, event_uid):
        if guardian is None:
            continue  # a press draft
        if state == State.DELIVERED:
            reached.add(guardian)
        states[guardian].append(f"{channel}: {state}" + (f" ({detail})" if detail else ""))
    schools = _schools(roster)
    out = []
    for gid, why in states.items():
        if gid in reached:
            continue
        g = roster.guardians.get(gid)
        out.append(
            Family(
                guardian=gid,
                name=g.first_name if g else "",
                language=g.language if g else "",
                phone=(g.phone or "") if g else "",
                email=(g.email or "") if g else "",
                schools=tuple(sorted(roster.schools[s].name if s in roster.schools else s for s in schools[gid])),
                why="; ".join(sorted(why)),
            )
        )
    return sorted(out, key=lambda f: (f.schools, f.name, f.guardian))


def _schools(roster: Roster) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for s in roster.students.values():
        for g in s.guardians:
            out[g].add(s.school_id)
    return out


def safe_cell(value: str) -> str:
    """A value a spreadsheet shows as text: one that would start a formula gets a leading quote."""
    return "'" + value if value.startswith(_FORMULA) else value


def csv_text(families: list[Family]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["school", "guardian id", "name", "language", "phone", "e-mail", "why not reached"])
    for f in families:
        w.writerow(
            safe_cell(v) for v in ("; ".join(f.schools), f.guardian, f.name, f.language, f.phone, f.email, f.why)
        )
    return buf.getvalue()
