"""How a command attempt ends: its outcome, each refusal as an error, and the message for each."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..declarations import (
    Interlock,
    text,
)
from ..points import PointValue

if TYPE_CHECKING:  # a refused attempt carries its result: the type is only needed for hints
    from .records import CommandResult


# --------------------------------------------------------------------------- outcomes, errors


class CommandOutcome(enum.StrEnum):
    """How a command attempt ended (or where it waits)."""

    SUCCEEDED = "succeeded"
    """The handler returned in time and the feedback point reached its target."""
    FAILED = "failed"
    """The handler raised: the equipment refused or the link failed."""
    TIMED_OUT = "timed_out"
    """The handler did not return within the command's ``timeout``."""
    FEEDBACK_TIMEOUT = "feedback_timeout"
    """The handler returned but the feedback point did not reach its target in time."""
    PENDING_CONFIRMATION = "pending_confirmation"
    """Selected: the same user must confirm (operate) within ``confirm_within`` seconds."""
    PENDING_APPROVAL = "pending_approval"
    """Waiting for a second person's approval within ``approve_within`` seconds."""
    REFUSED = "refused"
    """Not run: invalid, not permitted, interlocked, offline, busy..."""
    LAPSED = "lapsed"
    """A selection or an approval request expired before it was confirmed or approved."""
    REJECTED = "rejected"
    """The second person rejected the command."""
    CANCELLED = "cancelled"
    """Withdrawn by its author, or interrupted (the caller went away, the hub stopped)."""

    @property
    def pending(self) -> bool:
        """True while the command waits for a confirmation or an approval."""
        return self in (CommandOutcome.PENDING_CONFIRMATION, CommandOutcome.PENDING_APPROVAL)


class CommandError(Exception):
    """Why a command (or a confirmation, approval...) was refused; a user-caused error.

    ``status`` is the HTTP status the API answers with; ``code`` a stable word
    for programs; ``text`` the message in French and English (``str(error)``
    is the English one). Once the refusal is journaled, ``result`` holds its
    :class:`CommandResult` (with the journaled attempt's id).
    """

    status: int = 400
    code: str = "refused"

    def __init__(self, message: str, fr: str | None = None, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.text: dict[str, str] = {"fr": fr or message, "en": message}
        self.result: CommandResult | None = None

    @property
    def message(self) -> str:
        """The English message."""
        return self.text["en"]

    def journal_data(self) -> dict[str, Any]:
        """Details of the refusal for the journal (beyond code and text)."""
        return {}

    def as_json(self) -> dict[str, Any]:
        """The error as the API returns it."""
        body: dict[str, Any] = {
            "error": self.code,
            "status": self.status,
            "message": self.message,
            "text": dict(self.text),
            **self.journal_data(),
        }
        if self.result is not None:
            body["id"] = self.result.id
        return body


class UnknownDeviceError(CommandError):
    """No device has this id (or no device matches a group order)."""

    status = 404
    code = "unknown_device"


class UnknownCommandError(CommandError):
    """The device has no command of this name."""

    status = 404
    code = "unknown_command"


class InvalidArgumentsError(CommandError):
    """The arguments (or the member) are wrong; ``problems`` lists every one of them."""

    status = 422
    code = "invalid_arguments"

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        joined = "; ".join(self.problems)
        super().__init__(f"invalid arguments: {joined}", f"arguments invalides : {joined}")

    def journal_data(self) -> dict[str, Any]:
        """The list of problems."""
        return {"problems": self.problems}


class NotPermittedError(CommandError):
    """The user's role is too low, the zone is not theirs, or they approve their own command."""

    status = 403
    code = "not_permitted"


class InterlockedError(CommandError):
    """An interlock does not hold: the command would be unsafe now."""

    status = 409
    code = "interlocked"

    def __init__(self, lock: Interlock, point_id: str, value: PointValue | None) -> None:
        self.interlock = lock
        self.point_id = point_id
        self.value = value
        shown = "unknown" if value is None else repr(value.value)
        if value is not None and not value.quality.is_good:
            shown += f" ({value.quality})"
        reason = text(lock.reason) or {"fr": "verrouillage", "en": "interlock"}
        en = reason.get("en") or next(iter(reason.values()))
        fr = reason.get("fr") or en
        super().__init__(
            f"interlocked: {en} ({point_id} = {shown})", f"verrouillé : {fr} ({point_id} = {shown})"
        )
        self.reason = {"fr": fr, "en": en}

    def journal_data(self) -> dict[str, Any]:
        """The interlock's point, its value and quality."""
        return {
            "interlock": {
                "point": self.point_id,
                "value": None if self.value is None else self.value.value,
                "quality": None if self.value is None else str(self.value.quality),
                "reason": self.reason,
            }
        }


class ConfirmationError(CommandError):
    """Unknown or mismatched select token (409), expired one (410), or not the selecting user."""

    status = 409
    code = "confirmation"


class ApprovalError(CommandError):
    """Unknown approval request (404) or expired one (410)."""

    status = 404
    code = "approval"


class DeviceOfflineError(CommandError):
    """The device's ``online`` point is not True: nobody would carry the command out."""

    status = 503
    code = "device_offline"


class DeviceBusyError(CommandError):
    """Too many commands already queued for this device."""

    status = 503
    code = "device_busy"


class JournalUnavailableError(CommandError):
    """The journal could not record the order: it is not sent (nothing runs unaudited)."""

    status = 503
    code = "journal_unavailable"


class TooManyPendingError(CommandError):
    """Too many selections or approval requests are open; finish or cancel some first."""

    status = 503
    code = "too_many_pending"


_MESSAGES: dict[CommandOutcome, tuple[str, str]] = {
    CommandOutcome.SUCCEEDED: ("Commande exécutée", "Command executed"),
    CommandOutcome.FAILED: ("Échec de la commande", "Command failed"),
    CommandOutcome.TIMED_OUT: ("L'équipement n'a pas répondu à temps", "No answer in time"),
    CommandOutcome.FEEDBACK_TIMEOUT: (
        "Retour d'état non atteint à temps",
        "Feedback not reached in time",
    ),
    CommandOutcome.PENDING_CONFIRMATION: ("Confirmation attendue", "Waiting for confirmation"),
    CommandOutcome.PENDING_APPROVAL: (
        "En attente de validation par une seconde personne",
        "Waiting for a second person's approval",
    ),
    CommandOutcome.REFUSED: ("Commande refusée", "Command refused"),
    CommandOutcome.LAPSED: ("Délai dépassé, commande abandonnée", "Expired, command dropped"),
    CommandOutcome.REJECTED: ("Commande rejetée", "Command rejected"),
    CommandOutcome.CANCELLED: ("Commande annulée", "Command cancelled"),
}


def _message(outcome: CommandOutcome, detail: str = "") -> dict[str, str]:
    fr, en = _MESSAGES[outcome]
    if detail:
        return {"fr": f"{fr} : {detail}", "en": f"{en}: {detail}"}
    return {"fr": fr, "en": en}
