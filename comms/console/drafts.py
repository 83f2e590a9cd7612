"""Press drafts in the console: read, edit (each edit a revision with who and when), approve, and
export as DOCX in the district's release format or as HTML.

Revision 0 is the draft as the press consumer rendered it (its ledger row's content); an edit adds
the next. An approval is of one revision: an edit after it needs a new approval. The exports are
built from the Markdown by its parser (markdown-it-py), never by pasting text into markup: raw HTML
in a draft stays text in both.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from docx import Document
from docx.document import Document as DocxDocument
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.shared import Pt
from docx.text.paragraph import Paragraph
from markdown_it import MarkdownIt
from markdown_it.token import Token

from comms.approvals import Approvals, audit_line
from comms.channels import REGISTRY, channel_class
from comms.config import Settings
from comms.errors import AccessError, ApprovalError
from comms.ledger import Ledger, delivery_key

PRESS = next(name for name in REGISTRY if channel_class(name).audience == "press")
_MD = MarkdownIt("commonmark", {"html": False})  # raw HTML in a draft is shown as text, never markup


@dataclass(frozen=True, slots=True, kw_only=True)
class Revision:
    rev: int
    who: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Draft:
    key: str
    event_uid: str
    campaign: str
    lang: str
    name: str  # its file stem under out/press/
    md: str  # the latest revision
    rev: int
    revisions: tuple[Revision, ...]
    approved_by: tuple[str, ...]  # of the latest revision
    needs_approval: bool

    @property
    def status(self) -> str:
        if self.approved_by:
            return f"approved (revision {self.rev})"
        return "draft - needs approval" if self.needs_approval else "draft"


class Drafts:
    def __init__(self, ledger: Ledger, settings: Settings) -> None:
        self.ledger, self.settings = ledger, settings
        self.approvals = Approvals(ledger, settings)

    def keys(self) -> list[str]:
        """Every press draft's ledger key, newest event first (computed from the tallies: a draft's
        recipient is its language, so its key is known without reading the event's family rows)."""
        rows = self.ledger.query(
            "SELECT t.event_uid, t.campaign, t.lang FROM tallies t LEFT JOIN events e ON e.uid = t.event_uid "
            "WHERE t.channel=? AND t.n > 0 GROUP BY 1, 2, 3 ORDER BY max(e.created) DESC, 1, 2, 3",
            (PRESS,),
        )
        return [delivery_key(uid, cid, PRESS, f"press:{lang}") for uid, cid, lang in rows]

    def all(self) -> list[Draft]:
        return [d for k in self.keys() if (d := self.get(k)) is not None]

    def get(self, key: str) -> Draft | None:
        row = self.ledger.rows([key]).get(key)
        if row is None or not row.payload or row.payload.get("channel") != PRESS:
            return None
        p = row.payload
        revs = self.ledger.query("SELECT rev, md, who, at FROM draft_revisions WHERE ledger_key=? ORDER BY rev", (key,))
        md, rev = (str(revs[-1][1]), int(revs[-1][0])) if revs else (str(p["body"]["md"]), 0)
        approved = self.ledger.query(
            "SELECT who FROM draft_approvals WHERE ledger_key=? AND rev=? ORDER BY at", (key, rev)
        )
        camp = self.settings.campaigns.get(p["campaign"])
        options = camp.channels.get(PRESS) if camp else None
        return Draft(
            key=key,
            event_uid=p["event_uid"],
            campaign=p["campaign"],
            lang=p["lang"],
            name=p["to"],
            md=md,
            rev=rev,
            revisions=(Revision(rev=0, who="comms (rendered)", at=row.updated),)
            + tuple(Revision(rev=int(r), who=str(w), at=float(a)) for r, _, w, a in revs),
            approved_by=tuple(str(w) for (w,) in approved),
            needs_approval=bool(options and options.approval),
        )

    def edit(self, key: str, md: str, who: str) -> Draft:
        draft = self._existing(key)
        md = md.replace("\r\n", "\n")
        if md == draft.md:
            return draft
        if len(md) > 100_000:
            raise AccessError("a draft of more than 100,000 characters is not a press release")
        now = self.ledger.clock().timestamp()
        self.ledger.write(
            (
                "INSERT INTO draft_revisions(ledger_key, rev, md, who, at) VALUES (?, ?, ?, ?, ?)",
                [(key, draft.rev + 1, md, who, now)],
            ),
            audit_line(
                now, who, "edit draft", draft.event_uid, draft.campaign, f"{draft.name}: revision {draft.rev + 1}"
            ),
        )
        return self._existing(key)

    def approve(self, key: str, who: str) -> Draft:
        draft = self._existing(key)
        if who in draft.approved_by:
            raise ApprovalError(f"{who} has already approved revision {draft.rev} of {draft.name}")
        now = self.ledger.clock().timestamp()
        self.ledger.write(
            (
                "INSERT INTO draft_approvals(ledger_key, rev, who, at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(key, draft.rev, who, now)],
            ),
            audit_line(
                now, who, "approve draft", draft.event_uid, draft.campaign, f"{draft.name}: revision {draft.rev}"
            ),
        )
        return self._existing(key)

    def _existing(self, key: str) -> Draft:
        draft = self.get(key)
        if draft is None:
            raise ApprovalError(f"no press draft {key!r}")
        return draft

    # -- exports ----------------------------------------------------------------------------------------
    def body_html(self, draft: Draft) -> str:
        """The draft's body as HTML by the Markdown parser (raw HTML in it escaped, as text)."""
        return str(_MD.render(draft.md))

    def html(self, draft: Draft) -> str:
        """A whole HTML document: the status in the page itself, the body by the Markdown parser."""
        from html import escape

        return (
            f'<!doctype html>\n<html lang="{escape(draft.lang)}"><head><meta charset="utf-8">'
            f"<title>{escape(draft.name)}</title></head><body>\n"
            f'<p class="status"><strong>{escape(draft.status.upper())}</strong></p>\n'
            f"{self.body_html(draft)}</body></html>\n"
        )

    def docx(self, draft: Draft) -> bytes:
        """The release as the district sends it: banner, FOR IMMEDIATE RELEASE, date, headline,
        dateline and body, "# # #", then the office's address and phone (the seed releases' layout)."""
        d = self.settings.district
        doc = Document()
        doc.core_properties.title = draft.name
        doc.core_properties.comments = draft.status
        banner = doc.add_paragraph()
        banner.alignment = WD_ALIGN_PARAGRAPH.CENTER
        run = banner.add_run(f"{d.name}\n{d.office}")
        run.bold, run.font.size = True, Pt(18)
        if not draft.approved_by:
            doc.add_paragraph().add_run(draft.status.upper()).bold = True
        _blocks(doc, _MD.parse(draft.md))
        contact = doc.sections[0].footer.paragraphs[0]
        contact.text = f"{d.short_name} {d.office} | {d.address} | {d.phone}"
        buf = io.BytesIO()
        doc.save(buf)
        return buf.getvalue()


def _inline(par: Paragraph, token: Token) -> None:
    """A Markdown inline token's text as runs: bold and italic kept, links as their text and address."""
    bold = italic = False
    href: str | None = None
    for child in token.children or ():
        if child.type in ("strong_open", "strong_close"):
            bold = child.type == "strong_open"
        elif child.type in ("em_open", "em_close"):
            italic = child.type == "em_open"
        elif child.type in ("text", "code_inline"):
            run = par.add_run(child.content)
            run.bold, run.italic = bold or None, italic or None
        elif child.type in ("softbreak", "hardbreak"):
            par.add_run().add_break()
        elif child.type == "link_open":
            href = str(child.attrGet("href") or "")
            start = len(par.text)
        elif child.type == "link_close" and href:
            if par.text[start:] != href:  # [label](address): the address after its label, on paper too
                par.add_run(f" ({href})")
            href = None


def _blocks(doc: DocxDocument, tokens: list[Token]) -> None:
    """Headings, paragraphs, bullet items and quotes in the document's own styles."""
    style, quote = None, False
    for i, t in enumerate(tokens):
        if t.type == "heading_open":
            style = "Title" if t.tag == "h1" else "Heading 2"
        elif t.type == "bullet_list_open":
            style = "List Bullet"
        elif t.type == "bullet_list_close":
            style = None
        elif t.type == "blockquote_open":
            quote = True
        elif t.type == "blockquote_close":
            quote = False
        elif t.type == "inline":
            par = doc.add_paragraph(style=style if style else ("Quote" if quote else None))
            _inline(par, t)
            text = par.text.strip()
            if text in ("# # #", "FOR IMMEDIATE RELEASE"):
                if text == "# # #":
                    par.alignment = WD_ALIGN_PARAGRAPH.CENTER
                for run in par.runs:
                    run.bold = True
            if tokens[i - 1].type == "paragraph_open" and style == "Title":
                style = None
        elif t.type == "heading_close":
            style = None if style in ("Title", "Heading 2") else style
