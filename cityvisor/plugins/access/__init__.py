"""Access control: doors with an OSDP badge reader, a door contact and a strike relay.

The device type arrives in the following commits; the package exists so that
the ``cityvisor badges`` command (``cityvisor.plugins.access.cli``) has a home.
"""
