"""``python -m cityvisor.core.config``: print the configuration reference (docs/configuration.md)."""

import sys

from .reference import reference

if __name__ == "__main__":
    sys.stdout.write(reference() + "\n")
