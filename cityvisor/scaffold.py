"""``cityvisor new-plugin NAME``: write a ready plugin package to start an equipment family from.

::

    cityvisor new-plugin noise-meter [--dir DIR]

writes ``DIR`` (default ``./cityvisor-noise-meter``)::

    pyproject.toml          the package, with its ``cityvisor`` entry point
    README.md
    example.toml            a deployment with one device, pointing at the simulator
    src/cityvisor_noise_meter/__init__.py    the device type: a point, a command, an alarm, run()
    src/cityvisor_noise_meter/simulator.py   a simulator of the equipment: a real TCP server
    tests/conftest.py
    tests/test_cityvisor_noise_meter.py      conformance check, an alarm, a command

Its tests pass as written (``python -m pip install -e '.[test]' && python
-m pytest``). The templates are in ``cityvisor/templates/new-plugin/``;
the plugin guide (docs/plugin-guide.md) walks through the result.
"""

from __future__ import annotations

import argparse
import re
from importlib import resources
from pathlib import Path
from typing import Any

from . import __version__

__all__ = ["PluginNames", "register", "write_plugin"]

TEMPLATES = "templates/new-plugin"
FILES: dict[str, str] = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "gitignore.tmpl": ".gitignore",
    "example.toml.tmpl": "example.toml",
    "package_init.py.tmpl": "src/{module}/__init__.py",
    "simulator.py.tmpl": "src/{module}/simulator.py",
    "conftest.py.tmpl": "tests/conftest.py",
    "test_plugin.py.tmpl": "tests/test_{module}.py",
}
"""Template file -> where it goes in the new package."""

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")


class PluginNames:
    """Every name derived from the plugin's name (``noise-meter``)."""

    def __init__(self, name: str) -> None:
        name = name.strip().lower().removeprefix("cityvisor-")
        if not _NAME.match(name) or len(name) > 40:
            raise ValueError(
                f"a plugin name is lower-case words of letters and digits joined by '-' "
                f"(noise-meter), at most 40 characters; not {name!r}"
            )
        words = name.split("-")
        self.slug = name
        """``noise-meter``: device ids in the examples."""
        self.dist = f"cityvisor-{name}"
        """``cityvisor-noise-meter``: the distribution (what ``pip install`` names)."""
        self.module = "cityvisor_" + "_".join(words)
        """``cityvisor_noise_meter``: the import package."""
        self.family = "_".join(words)
        """``noise_meter``: the family, in point ids and the entry point's name."""
        self.class_name = "".join(word.capitalize() for word in words)
        """``NoiseMeter``: the device type's class."""
        self.type_name = f"{self.family}.sensor"
        """``noise_meter.sensor``: what deployments write in ``type``."""
        self.title = " ".join(words).capitalize()
        """``Noise meter``: for people."""

    def values(self) -> dict[str, str]:
        """The template placeholders and their values."""
        return {
            "slug": self.slug,
            "dist": self.dist,
            "module": self.module,
            "family": self.family,
            "class_name": self.class_name,
            "type_name": self.type_name,
            "title": self.title,
            "cityvisor_version": __version__,
        }


def write_plugin(name: str, directory: Path | None = None) -> list[Path]:
    """Write the package of a new plugin named ``name`` into ``directory``; return the files.

    :raises ValueError: a name that cannot make a package name.
    :raises FileExistsError: ``directory`` exists and is not empty.
    """
    names = PluginNames(name)
    target = Path(directory) if directory is not None else Path(names.dist)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and is not empty")
    values = names.values()
    templates = resources.files("cityvisor").joinpath(TEMPLATES)
    written = []
    for template, destination in FILES.items():
        text = templates.joinpath(template).read_text(encoding="utf-8")
        text = _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)
        path = target / destination.format(module=names.module)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def register(commands: Any, log_level: argparse.ArgumentParser) -> None:
    """Add the ``new-plugin`` subcommand to the ``cityvisor`` command."""
    new = commands.add_parser(
        "new-plugin",
        parents=[log_level],
        help="write a ready plugin package (device type, simulator, tests) to start from",
        description="Write a plugin package: pyproject with the cityvisor entry point, a "
        "device type with a point, a command and an alarm, a simulator of the equipment "
        "(a real TCP server) and passing tests. Then: cd DIR && python -m pip install -e "
        "'.[test]' && python -m pytest",
    )
    new.add_argument("name", help="the plugin's name, lower-case words joined by '-' (noise-meter)")
    new.add_argument(
        "--dir",
        default=None,
        metavar="DIR",
        help="where to write it (default: ./cityvisor-NAME); must not exist or be empty",
    )
    new.set_defaults(handler=_handle, default_log_level="warning")


def _handle(args: argparse.Namespace) -> int:
    from .cli import EXIT_OK, UsageError

    try:
        names = PluginNames(args.name)
        files = write_plugin(args.name, Path(args.dir) if args.dir else None)
    except (ValueError, FileExistsError) as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"cannot write: {error.strerror or error}") from None
    root = files[0].parent
    print(f"wrote {names.dist} in {root}/ ({len(files)} files): device type {names.type_name}")
    print("next:")
    print(f"  cd {root}")
    print("  python -m pip install -e '.[test]'")
    print("  python -m pytest")
    return EXIT_OK
