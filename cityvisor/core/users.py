"""Who acts: users, their role and the zones they may act in.

The role ladder is ``viewer < operator < supervisor < admin``; a user with a
role may do everything the roles below it may. Zones limit where: a user of
the zone ``dijon`` may command Dijon's equipment and not Chenôve's. The zone
``*`` means every zone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["SYSTEM", "Role", "User"]


class Role(enum.IntEnum):
    """A user's role; a higher role includes every right of the lower ones."""

    VIEWER = 1
    OPERATOR = 2
    SUPERVISOR = 3
    ADMIN = 4

    @classmethod
    def parse(cls, name: str | Role) -> Role:
        """``"operator"`` -> ``Role.OPERATOR``; raise ValueError naming the choices."""
        if isinstance(name, Role):
            return name
        try:
            return cls[name.upper()]
        except KeyError:
            choices = ", ".join(r.name.lower() for r in cls)
            raise ValueError(f"unknown role {name!r} (expected one of: {choices})") from None

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class User:
    """An authenticated person (or the system itself) acting on the city.

    ``zones`` is the set of zone ids the user may act in; ``"*"`` means all.
    """

    name: str
    role: Role = Role.VIEWER
    zones: frozenset[str] = field(default_factory=lambda: frozenset({"*"}))

    def has_role(self, role: Role) -> bool:
        """True if the user's role is ``role`` or above."""
        return self.role >= role

    def in_zone(self, zone: str) -> bool:
        """True if the user may act in ``zone``."""
        return "*" in self.zones or zone in self.zones

    def may(self, role: Role, zone: str) -> bool:
        """True if the user has ``role`` (or above) in ``zone``."""
        return self.has_role(role) and self.in_zone(zone)


SYSTEM = User("system", Role.ADMIN)
"""The user behind automatic actions (schedules, rules), so they are journaled too."""
