"""Quality, after OPC UA: good, uncertain or bad, with the reason."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import ClassVar

# --------------------------------------------------------------------------- quality


class QualityStatus(enum.IntEnum):
    """OPC UA's three quality classes, ordered from worst to best."""

    BAD = 0
    UNCERTAIN = 1
    GOOD = 2


@dataclass(frozen=True, slots=True)
class Quality:
    """How far a point's value can be trusted: good, uncertain(reason) or bad(reason).

    Reasons are short snake_case words an operator can read and a program can
    match: ``comm_failure``, ``not_connected``, ``device_failure``,
    ``out_of_service``, ``stale``, ``config_error``, ``sensor_failure``...

    >>> Quality.bad("comm_failure")
    Quality.bad('comm_failure')
    >>> Quality.good().is_good
    True
    """

    status: QualityStatus
    reason: str = ""

    GOOD: ClassVar[Quality]

    @classmethod
    def good(cls) -> Quality:
        """The one good quality (a shared instance: compare with ``is_good``)."""
        return cls.GOOD

    @classmethod
    def uncertain(cls, reason: str) -> Quality:
        """A value that is probably right but not verified (``stale``, ``last_known``...)."""
        return cls(QualityStatus.UNCERTAIN, reason)

    @classmethod
    def bad(cls, reason: str) -> Quality:
        """A value that must not be trusted, with the reason why."""
        return cls(QualityStatus.BAD, reason)

    @property
    def is_good(self) -> bool:
        """True for good quality."""
        return self.status is QualityStatus.GOOD

    @property
    def is_bad(self) -> bool:
        """True for bad quality."""
        return self.status is QualityStatus.BAD

    def __str__(self) -> str:
        name = self.status.name.lower()
        return f"{name}({self.reason})" if self.reason else name

    def __repr__(self) -> str:
        name = self.status.name.lower()
        return f"Quality.{name}({self.reason!r})" if self.reason else f"Quality.{name}()"

    def as_json(self) -> dict[str, str]:
        """``{"status": "bad", "reason": "comm_failure"}``, for the API."""
        return {"status": self.status.name.lower(), "reason": self.reason}

    @classmethod
    def parse(cls, text: str) -> Quality:
        """The inverse of ``str(quality)``: ``"bad(comm_failure)"`` -> ``Quality.bad(...)``."""
        match = re.fullmatch(r"(good|uncertain|bad)(?:\((.*)\))?", text.strip())
        if not match:
            raise ValueError(f"not a quality: {text!r}")
        status = QualityStatus[match.group(1).upper()]
        if status is QualityStatus.GOOD:
            return cls.GOOD
        return cls(status, match.group(2) or "")


Quality.GOOD = Quality(QualityStatus.GOOD)
