"""Open data: what the city publishes of its equipment, for anyone to read.

Off unless the deployment says ``[opendata] enabled = true``. The
``opendata`` built-in plugin (:mod:`cityvisor.plugins.opendata`) is the only
link with the rest of the system: it adds the public ``/opendata/`` routes
to the web server, journals what is published, and runs the optional push
to an NGSI-LD context broker. ``cityvisor export`` writes the same files
from a deployment's config and store.

A family says how its devices become FIWARE Smart Data Models entities with
:class:`DataModel` declarations (hook ``cityvisor_opendata_models``)::

    from cityvisor.opendata import Attribute, DataModel

    @hookimpl
    def cityvisor_opendata_models():
        return [DataModel("flood.gauge", "WaterObserved", [Attribute("level", "height")])]
"""

from .models import Attribute, DataModel, MemberModel

__all__ = ["Attribute", "DataModel", "MemberModel"]
