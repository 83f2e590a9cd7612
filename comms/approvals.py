"""The human gate on mass sends, and the audit log.

A campaign with `approval: one` or `two` in campaigns.yaml has its family messages rendered and
ledgered as `awaiting_approval` (comms/pipeline). Here approvers say yes or no to an event's campaign:

    one   the first approver's yes decides
    two   two different people's yes decide; the same person twice is refused
    any   one approver's no decides at once: the messages are `cancelled`, never sent

A decision is written once (`decisions`, one row per event and campaign) in the same transaction as
the yes that made it, so two approvers at the same moment cannot both be "the first" and leave it
undecided; the channel consumers' release loops send or cancel what it decided. Every approval,
rejection and press-draft edit goes to the audit log, which the ledger's triggers keep append-only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from comms.config import Settings
from comms.errors import ApprovalError
from comms.ledger import Ledger
from comms.translations import stale_translations

REQUIRED = {"none": 0, "one": 1, "two": 2}


def ref(event_uid: str) -> str:
    """A short, stable name for an event id (ids are often URLs): what `comms approvals` lists."""
    return hashlib.sha256(event_uid.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    event_uid: str
    campaign: str
    required: int
    approvers: tuple[str, ...]
    verdict: str | None  # approved, rejected, or None while awaiting
    awaiting: int  # messages held

    @property
    def state(self) -> str:
        return self.verdict or ("awaiting approval" if self.required else "no approval needed")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditLine:
    at: float
    who: str
    action: str
    event_uid: str | None
    campaign: str | None
    detail: str | None


class Approvals:
    def __init__(self, ledger: Ledger, settings: Settings, templates: Path | None = None) -> None:
        self.ledger, self.settings = ledger, settings
        self.templates = templates  # where the translations' review records are (None: not checked)

    def stale(self, campaign: str) -> str | None:
        """Why the campaign cannot be approved yet: a translation older than its English, if so."""
        if self.templates is None or campaign not in self.settings.campaigns:
            return None
        return stale_translations(self.settings, self.templates, campaign)

    # -- reading ----------------------------------------------------------------------------------------
    def gated(self, event_uid: str) -> list[str]:
        """The campaigns of the event whose family messages wait for (or waited for) approval."""
        rows = self.ledger.query("SELECT DISTINCT campaign FROM tallies WHERE event_uid=?", (event_uid,))
        return sorted(
            c for (c,) in rows if (camp := self.settings.campaigns.get(c)) is not None and camp.approval != "none"
        )

    def status(self, event_uid: str, campaign: str) -> Status:
        camp = self.settings.campaigns.get(campaign)
        who = self.ledger.query(
            "SELECT who FROM approvals WHERE event_uid=? AND campaign=? AND verdict='approved' ORDER BY at",
            (event_uid, campaign),
        )
        held = self.ledger.query(
            "SELECT coalesce(sum(n), 0) FROM tallies WHERE event_uid=? AND campaign=? AND state='awaiting_approval'",
            (event_uid, campaign),
        )
        return Status(
            event_uid=event_uid,
            campaign=campaign,
            required=REQUIRED[camp.approval] if camp else 0,
            approvers=tuple(w for (w,) in who),
            verdict=self.ledger.verdict(event_uid, campaign),
            awaiting=int(held[0][0]),
        )

    def waiting(self) -> list[Status]:
        """Every event's campaign with messages awaiting a decision."""
        rows = self.ledger.query(
            "SELECT DISTINCT t.event_uid, t.campaign FROM tallies t LEFT JOIN decisions d "
            "ON d.event_uid = t.event_uid AND d.campaign = t.campaign "
            "WHERE t.state='awaiting_approval' AND t.n > 0 AND d.verdict IS NULL"
        )
        return [self.status(uid, cid) for uid, cid in rows]

    def resolve(self, event: str) -> str:
        """An event id from the id itself or its short ref (`comms approvals` lists both)."""
        uids = [str(u) for (u,) in self.ledger.query("SELECT DISTINCT event_uid FROM tallies")]
        if event in uids:
            return event
        found = [u for u in uids if ref(u) == event]
        if not found:
            raise ApprovalError(f"no event {event!r} in the ledger (comms approvals lists those awaiting)")
        return found[0]

    def audit(self, limit: int = 200) -> list[AuditLine]:
        rows = self.ledger.query(
            "SELECT at, who, action, event_uid, campaign, detail FROM audit ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [AuditLine(at=a, who=w, action=x, event_uid=e, campaign=c, detail=d) for a, w, x, e, c, d in rows]

    # -- deciding ---------------------------------------------------------------------------------------
    def approve(self, event_uid: str, who: str) -> list[Status]:
        """`who` says yes to each of the event's campaigns still awaiting; returns their new status."""
        todo = self._undecided(event_uid, who, "approve")
        now = self.ledger.clock().timestamp()
        for s in todo:
            if why := self.stale(s.campaign):
                raise ApprovalError(f"{s.campaign} cannot be approved: {why} (comms translations)")
            if who in s.approvers:
                raise ApprovalError(
                    f"{who} has already approved {s.campaign}: its second approval must come from another person"
                )
        statements: list[tuple[str, list[tuple[object, ...]]]] = []
        for s in todo:
            statements += [
                (
                    "INSERT INTO approvals(event_uid, campaign, who, verdict, at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    [(event_uid, s.campaign, who, "approved", now)],
                ),
                (  # decided by this yes if it is the last one needed, in the same transaction
                    "INSERT INTO decisions(event_uid, campaign, verdict, at) SELECT ?, ?, 'approved', ? "
                    "WHERE (SELECT count(*) FROM approvals WHERE event_uid=? AND campaign=? "
                    "AND verdict='approved') >= ? ON CONFLICT DO NOTHING",
                    [(event_uid, s.campaign, now, event_uid, s.campaign, s.required)],
                ),
                audit_line(now, who, "approve", event_uid, s.campaign, f"{len(s.approvers) + 1} of {s.required}"),
            ]
        self.ledger.write(*statements)
        return [self.status(event_uid, s.campaign) for s in todo]

    def reject(self, event_uid: str, who: str, reason: str) -> list[Status]:
        """`who` says no: each campaign still awaiting is decided `rejected` and its messages cancelled."""
        reason = " ".join(reason.split())[:500] or "no reason given"
        todo = self._undecided(event_uid, who, "reject")
        now = self.ledger.clock().timestamp()
        statements: list[tuple[str, list[tuple[object, ...]]]] = []
        for s in todo:
            statements += [
                (
                    "INSERT INTO approvals(event_uid, campaign, who, verdict, at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    [(event_uid, s.campaign, who, "rejected", now)],
                ),
                (
                    "INSERT INTO decisions(event_uid, campaign, verdict, at) VALUES (?, ?, 'rejected', ?) "
                    "ON CONFLICT DO NOTHING",
                    [(event_uid, s.campaign, now)],
                ),
                (  # at once; rows a consumer is still ledgering are cancelled by its release loop
                    "UPDATE deliveries SET state='cancelled', detail=?, updated=? WHERE campaign=? AND event_uid=? "
                    "AND state='awaiting_approval'",
                    [(f"rejected by {who}: {reason}", now, s.campaign, event_uid)],
                ),
                audit_line(now, who, "reject", event_uid, s.campaign, reason),
            ]
        self.ledger.write(*statements)
        return [self.status(event_uid, s.campaign) for s in todo]

    def _undecided(self, event_uid: str, who: str, verb: str) -> list[Status]:
        gated = self.gated(event_uid)
        if not gated:
            raise ApprovalError(f"no message of event {event_uid!r} needs approval")
        statuses = [self.status(event_uid, c) for c in gated]
        todo = [s for s in statuses if s.verdict is None]
        if not todo:
            done = ", ".join(f"{s.campaign}: {s.verdict}" for s in statuses)
            raise ApprovalError(f"cannot {verb}: already decided ({done})")
        return todo

    def log(self, who: str, action: str, event_uid: str | None, campaign: str | None, detail: str) -> None:
        now = self.ledger.clock().timestamp()
        self.ledger.write(audit_line(now, who, action, event_uid, campaign, detail))


def audit_line(
    now: float, who: str, action: str, event_uid: str | None, campaign: str | None, detail: str
) -> tuple[str, list[tuple[object, ...]]]:
    return (
        "INSERT INTO audit(at, who, action, event_uid, campaign, detail) VALUES (?, ?, ?, ?, ?, ?)",
        [(now, who, action, event_uid, campaign, detail)],
    )
