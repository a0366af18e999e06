"""``python -m cityvisor``: the same as the ``cityvisor`` command."""

from cityvisor.cli import main

raise SystemExit(main())
