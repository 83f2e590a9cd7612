"""Every error the pipeline raises on purpose, in one tree.

    CommsError
    ├── ConfigError               campaigns.yaml, settings or templates are wrong: fix the file, then restart
    ├── EventValidationError      an event breaks the contract: it goes to the dead-letter topic
    ├── RenderError               a template failed on a valid event: the event is dead-lettered
    │   └── FactError             a rendering leaves out a fact of the event, states one it does not
    │                             hold, or leaves English in another language: held, dead-lettered
    ├── BusError                  the bus itself failed
    │   └── BusUnavailableError   the broker or database cannot be reached: retry later
    ├── StoreError                a file the pipeline keeps (bus, ledger, roster, attendance) is damaged,
    │                             deleted, full or read-only: the consumer stops with one line naming it
    ├── IllegalTransition         a ledger write would move a message where ledger.TRANSITIONS does not
    │                             allow (a defect): nothing is written, the event is dead-lettered
    ├── ApprovalError             an approval that may not be given (the same person twice, no such
    │                             event, already decided): nothing is written, the reason is shown
    ├── AccessError               a console account or role that does not allow what was asked
    └── DeliveryError
        ├── TransientDeliveryError  try again later (429, 5xx, timeout): the offset is not committed
        └── PermanentDeliveryError  never retry (opted out, invalid number): recorded in the ledger

Channels declare which of their library's exceptions are transient (`transient_errors`, as kombu's
transports declare theirs) and map them, and everything else they raise, to one of these.
"""

from __future__ import annotations


class CommsError(Exception):
    """Base of every error district-comms raises on purpose."""


class ConfigError(CommsError):
    """The configuration is wrong. The message names the file, the key path and the line."""


class EventValidationError(CommsError):
    """An event breaks the contract. `reason` names the field; `field` is its dotted path, if one."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class RenderError(CommsError):
    """A template could not be rendered for a valid event."""


class FactError(RenderError):
    """A rendering does not say what its event says (comms/render/facts.py): nothing of the event is sent."""


class BusError(CommsError):
    """The event bus failed."""


class BusUnavailableError(BusError):
    """The bus cannot be reached (broker down, database locked for too long). Retry later."""


class StoreError(CommsError):
    """A database file failed in a way retrying cannot mend. The message names the file and the cause."""


class DeliveryError(CommsError):
    """Base for delivery failures; `code` is the provider's error code when there is one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientDeliveryError(DeliveryError):
    """Retry later: rate limited, provider 5xx, timeout."""

    def __init__(self, message: str, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Never retry: opted out, invalid address, rejected content."""


class IllegalTransition(CommsError):
    """A ledger write would move a message where ledger.TRANSITIONS does not allow: nothing is written."""


class ApprovalError(CommsError):
    """An approval or rejection that may not be recorded; the message says why."""


class AccessError(CommsError):
    """An account that does not exist, is disabled, or whose role does not allow the action."""
