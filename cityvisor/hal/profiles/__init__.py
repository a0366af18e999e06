"""Bundled Modbus device profiles (TOML register maps), loaded with ``load_profile(name)``."""
