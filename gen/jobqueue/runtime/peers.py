"""Who is calling, as the server sees the connection: the client's address, for limits kept per address."""

from __future__ import annotations


def client_address(peer: str) -> str:
    """The address of a gRPC peer: ``ipv4:10.0.0.1:5678`` -> ``10.0.0.1``, ``ipv6:[::1]:5678`` -> ``::1``."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer  # unix sockets and the like: one name for all their callers
