"""Bundled junction profiles (phases, conflict table, stages, plans), loaded with ``load_junction(name)``."""
