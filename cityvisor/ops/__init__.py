"""The operating half of the control room, beside the core: from alarm to closed intervention.

- :mod:`~cityvisor.ops.procedures`: operating procedures as files (TOML, Markdown);
- :mod:`~cityvisor.ops.incidents`: incidents grouping alarms, reports and actions;
- :mod:`~cityvisor.ops.crews`: crews, vehicles' positions (OsmAnd), dispatch;
- :mod:`~cityvisor.ops.reports`: citizen reports (Open311 GeoReport v2);
- :mod:`~cityvisor.ops.crisis`: the crisis cell, its timeline and report.

It uses the core's journal, zones, users, alarms and store, never hal/ or
web/ internals; the built-in plugin ``cityvisor.plugins.ops`` links it to
the hub and the web server. See docs/operations.md.
"""
