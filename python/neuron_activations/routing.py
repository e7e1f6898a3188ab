"""Which server a call about a neuron goes to, with several: rendezvous (highest-random-weight)
hashing, byte for byte the Rust SDK's rule, so Python and Rust clients send each neuron to the
same replica and share its cache.

The owner of neuron (``dataset``, ``layer``, ``neuron``) among ``servers`` is the server with the
largest weight, ties to the smallest address; the weight is the 8-byte unkeyed BLAKE2b digest of
``server + b"\\0" + dataset + b"\\0" + layer (4 bytes, big-endian) + neuron (4 bytes,
big-endian)``, read as a big-endian integer. ``server`` is ``host:port`` as dialed: the
address's authority lower-cased, or for a ``dns:///`` name each resolved ``ip:port`` (IPv6 in
brackets); ``dataset`` is the name the request carries (empty for the server's default).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["weight", "owner", "preference"]


def weight(server: str, dataset: str, layer: int, neuron: int) -> int:
    """The weight ``server`` gives neuron (``dataset``, ``layer``, ``neuron``)."""
    message = (
        server.encode()
        + b"\0"
        + dataset.encode()
        + b"\0"
        + layer.to_bytes(4, "big")
        + neuron.to_bytes(4, "big")
    )
    return int.from_bytes(hashlib.blake2b(message, digest_size=8).digest(), "big")


def owner(servers: Iterable[str], dataset: str, layer: int, neuron: int) -> str:
    """The server of ``servers`` (not empty) that owns the neuron."""
    return min(servers, key=lambda server: (-weight(server, dataset, layer, neuron), server))


def preference(servers: Iterable[str], dataset: str, layer: int, neuron: int) -> list[str]:
    """``servers`` in the neuron's order: its owner, then where it goes when the owner is out."""
    return sorted(servers, key=lambda server: (-weight(server, dataset, layer, neuron), server))
