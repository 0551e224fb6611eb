"""Transports: one small interface to observe, write, read and remove files on a target."""

from __future__ import annotations

from provisioner.manifest.model import Target
from provisioner.transports.base import Transport
from provisioner.transports.local import LocalTransport


def open_transport(target: Target) -> Transport:
    """The transport that reaches `target`."""
    if target.transport == "local":
        return LocalTransport(target)
    from provisioner.errors import TransportError

    raise TransportError(f"{target.name}: the ssh transport is not part of this release yet")
