"""A simulated OSDP badge reader (libosdp's peripheral-device mode) on a serial line.

The simulator itself arrives in the following commits.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until interrupted (not available yet)."""
    print("the OSDP reader simulator is not available yet", file=sys.stderr)
    return 1
