"""The demo city's communes: their names, centres and streets."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ZONES", "Zone"]


@dataclass(frozen=True)
class Zone:
    """A commune of the demo city."""

    id: str
    name: str
    centre: tuple[float, float]
    streets: tuple[str, ...]


ZONES = (
    Zone(
        "dijon",
        "Dijon",
        (47.3220, 5.0415),
        (
            "rue de la Liberté",
            "place Darcy",
            "rue des Forges",
            "place François-Rude",
            "rue Vauban",
            "boulevard Carnot",
            "rue Monge",
            "quai Nicolas-Rolin",
        ),
    ),
    Zone(
        "chenove",
        "Chenôve",
        (47.2930, 5.0070),
        ("rue Jean-Moulin", "avenue Roland-Carraz", "rue de Longvic", "place Pierre-Meunier"),
    ),
    Zone(
        "talant",
        "Talant",
        (47.3370, 5.0060),
        ("rue Notre-Dame", "boulevard de Troyes", "rue du Belvédère", "avenue du Mail"),
    ),
)
