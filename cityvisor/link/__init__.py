"""Edge and central hubs over MQTT Sparkplug B (the Eclipse Tahu specification, v3.0).

``codec`` turns points and commands into Sparkplug B payloads and back,
``edge`` publishes a hub's devices as an edge node, ``central`` is the host
application that gathers them, ``buffer`` keeps an edge's changes on disk
while the broker is away, ``settings`` is ``[plugins.link]``. The built-in
plugin ``link`` runs the role a deployment chooses. See docs/link.md.
"""

from __future__ import annotations

from .settings import LinkSettings

__all__ = ["LinkSettings"]
