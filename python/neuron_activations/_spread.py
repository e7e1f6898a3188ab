"""A bulk stream over several servers, as the Rust SDK runs it: the selection's neurons cut by
owner (rendezvous hashing), one stream of neuron lists per server, merged back into selection
order; a server lost midway hands the neurons it has not delivered to their next owners. This
module keeps the books (no I/O); the clients run the streams, in threads or tasks.

Cursors are those of the whole request, byte for byte what the server issues (``c2``: a FNV-1a
fingerprint of the dataset, selection, splits and ``n``, and the position), so a stream resumes
on one server or several.
"""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from . import errors, routing
from ._common import NeuronSplits, Server
from ._proto import activations_pb2 as pb

#: Neurons per request of one part: well below the server's ``--bulk-max-listed``.
NEURONS_PER_REQUEST = 10_000
#: Neurons a part may hold ready before the merge takes them.
PART_BUFFER = 16


def _field(number: int, data: bytes) -> bytes:
    return bytes([number]) + len(data).to_bytes(8, "little") + data


def _fnv1a(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def fingerprint(dataset: str, request: pb.StreamNeuronSplitsRequest) -> int:
    """The ``c2`` fingerprint of the stream ``request`` asks for, in ``dataset`` (the name the
    server resolves, not the empty default)."""
    canonical = _field(1, dataset.encode())
    if request.HasField("selection"):
        canonical += _field(2, request.selection.SerializeToString(deterministic=True))
    canonical += _field(3, b"".join(int(s).to_bytes(4, "little", signed=True) for s in request.splits))
    if request.HasField("slice_params") and request.slice_params.HasField("n_examples_per_split"):
        canonical += _field(4, request.slice_params.n_examples_per_split.to_bytes(4, "little"))
    return _fnv1a(canonical)


def encode_cursor(fingerprint: int, position: int, layer: int, neuron: int) -> str:
    text = f"c2\n{fingerprint:016x}\n{position}\n{layer}\n{neuron}".encode()
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def decode_cursor(text: str, expected: int) -> tuple[int, int, int]:
    """``(position, layer, neuron)`` of a cursor of the stream whose fingerprint is
    ``expected``; :class:`~neuron_activations.errors.InvalidArgument` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        version, hashed, position, layer, neuron = raw.split("\n")
        if version != "c2":
            raise ValueError(version)
        values = int(hashed, 16), int(position), int(layer), int(neuron)
    except ValueError:
        raise errors.InvalidArgument(
            "cursor: is not a cursor issued by StreamNeuronSplits"
        ) from None
    if values[0] != expected:
        raise errors.InvalidArgument(
            "cursor: belongs to a different request: resume with the same dataset, selection, "
            "splits and slice_params as the stream that issued it"
        )
    return values[1], values[2], values[3]


@dataclass
class Part:
    """The neurons one server streams: their positions, ascending, not delivered yet."""

    server: Server
    positions: deque[int] = field(default_factory=deque)


class Books:
    """Who streams which neuron, what was delivered, and the cursors."""

    def __init__(
        self, ids: list[tuple[int, int]], first_position: int, fingerprint: int, dataset: str
    ) -> None:
        self.ids = ids
        self.first_position = first_position
        self.fingerprint = fingerprint
        self.dataset = dataset
        self.owner: list[int] = [-1] * len(ids)
        self.parts: dict[int, Part] = {}
        self.next = 0
        self.failovers = 0
        self._counter = 0

    @property
    def done(self) -> bool:
        return self.next == len(self.ids)

    def assign(self, positions: list[int], servers: list[Server]) -> list[tuple[int, Part]]:
        """Gives ``positions`` to their owners among ``servers`` (those that take calls, or all
        when none does): one new part per server, returned to be started."""
        candidates = [s for s in servers if s.available] or list(servers)
        by_address = {server.address: server for server in candidates}
        groups: dict[str, Part] = {}
        for position in positions:
            layer, neuron = self.ids[position]
            address = routing.owner(by_address, self.dataset, layer, neuron)
            groups.setdefault(address, Part(server=by_address[address])).positions.append(position)
        started = []
        for part in groups.values():
            self._counter += 1
            self.parts[self._counter] = part
            for position in part.positions:
                self.owner[position] = self._counter
            started.append((self._counter, part))
        return started

    def waiting_on(self) -> int:
        """The part whose next neuron is the next of the selection."""
        return self.owner[self.next]

    def deliver(self, part_id: int, neuron: NeuronSplits) -> NeuronSplits:
        part = self.parts[part_id]
        position = part.positions.popleft()
        if not part.positions:
            del self.parts[part_id]
        self.next = position + 1
        layer, index = self.ids[position]
        neuron.cursor = encode_cursor(self.fingerprint, self.first_position + position, layer, index)
        return neuron

    def lose(self, part_id: int) -> tuple[Server, list[int]]:
        """Takes part ``part_id`` away after its server failed: the server and the neurons it
        did not deliver."""
        part = self.parts.pop(part_id)
        self.failovers += 1
        return part.server, list(part.positions)

    def requests(
        self, template: pb.StreamNeuronSplitsRequest, part: Part
    ) -> list[pb.StreamNeuronSplitsRequest]:
        """The requests that stream ``part``: its neurons as lists of at most
        ``NEURONS_PER_REQUEST``."""
        positions = list(part.positions)
        requests = []
        for start in range(0, len(positions), NEURONS_PER_REQUEST):
            request = pb.StreamNeuronSplitsRequest()
            request.CopyFrom(template)
            request.cursor = ""
            request.selection.Clear()
            request.selection.neurons.neuron_ids.extend(
                pb.NeuronId(layer_index=self.ids[p][0], neuron_index=self.ids[p][1])
                for p in positions[start : start + NEURONS_PER_REQUEST]
            )
            requests.append(request)
        return requests

    def failover_limit(self, retries: int, servers: int) -> int:
        """Servers that may be lost before the stream gives up: each may fail once per attempt."""
        return max(1, retries) * max(1, servers)


def enumerated(selection: pb.NeuronSelection) -> Optional[list[tuple[int, int]]]:
    """The neurons a list or a block selects, in order; ``None`` for a range of listed neurons,
    which its listing gives."""
    if selection.HasField("neurons"):
        return [(i.layer_index, i.neuron_index) for i in selection.neurons.neuron_ids]
    block = selection.range
    if not block.HasField("neuron_end"):
        return None
    return [
        (layer, neuron)
        for layer in range(block.layer_start, block.layer_end)
        for neuron in range(block.neuron_start, block.neuron_end)
    ]


def resume_point(
    ids: list[tuple[int, int]], listed: bool, text: str, fingerprint: int
) -> tuple[list[tuple[int, int]], int]:
    """The neurons after a cursor and the position of the first, as the server resumes: a list
    or a block by position (the neuron there must be the cursor's), a listed range after the
    cursor's neuron."""
    if not text:
        return ids, 0
    position, layer, neuron = decode_cursor(text, fingerprint)
    if listed:
        return [key for key in ids if key > (layer, neuron)], position + 1
    if position >= len(ids) or ids[position] != (layer, neuron):
        raise errors.InvalidArgument(
            f"cursor: names {layer}/{neuron} at position {position}, which is not where this "
            "selection has it: resume with a cursor this stream issued, unchanged"
        )
    return ids[position + 1 :], position + 1
