"""What the synchronous and the asyncio clients share: settings, requests, selections, the
reassembly of bulk streams, retries and the choice of a server."""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import grpc

from . import errors, routing
from ._proto import activations_pb2 as pb
from ._proto.activations_pb2_grpc import ActivationServiceStub
from .records import ActivationRecord, NeuronId, activation_record_from_pb, index

SPLIT_NAMES = ("train", "calibration", "valid", "test")
_SPLIT_BY_NAME: dict[str, pb.Split] = {
    "train": pb.SPLIT_TRAIN,
    "calibration": pb.SPLIT_CALIBRATION,
    "valid": pb.SPLIT_VALID,
    "test": pb.SPLIT_TEST,
}
_NAME_BY_SPLIT: dict[int, str] = {int(value): name for name, value in _SPLIT_BY_NAME.items()}

#: The largest response a client accepts (a public neuron record is about 230 KB of JSON).
MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024 * 1024
#: The first wait before a retry, doubled each time up to ``MAX_BACKOFF``.
INITIAL_BACKOFF = 0.1
MAX_BACKOFF = 2.0
#: How long an ejected server waits before a health check may take it back.
READMIT_AFTER = 0.1
MAX_READMIT_AFTER = 5.0
#: How often a ``dns:///`` name is resolved again.
RESOLVE_INTERVAL = 30.0


def split_enum(split: str) -> pb.Split:
    """The wire value of a split named as the seed names it."""
    try:
        return _SPLIT_BY_NAME[split]
    except KeyError:
        raise ValueError(
            f"split must be one of {', '.join(SPLIT_NAMES)}, not {split!r}"
        ) from None


def split_name(value: int) -> str:
    return _NAME_BY_SPLIT.get(value, str(value))


@dataclass(frozen=True)
class Tls:
    """TLS settings: the CA certificates to trust (PEM; the system's roots when ``None``), a
    client certificate and key for mutual TLS, and the name to check the server's certificate
    against (by default the host of the address)."""

    root_certificates: Optional[bytes] = None
    certificate_chain: Optional[bytes] = None
    private_key: Optional[bytes] = None
    server_name: Optional[str] = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


@dataclass(frozen=True)
class Range:
    """Layers ``layers`` and, in each, neurons ``neurons`` (``None``: every neuron the dataset
    lists in the layer, layers that do not exist skipped)."""

    layers: range
    neurons: Optional[range] = None


NeuronKey = Union[NeuronId, tuple[int, int]]
Selection = Union[Range, Sequence[NeuronKey]]


def _key(neuron: NeuronKey) -> tuple[int, int]:
    if isinstance(neuron, tuple):
        return index(neuron[0], "layer_index"), index(neuron[1], "neuron_index")
    return index(neuron.layer_index, "layer_index"), index(neuron.neuron_index, "neuron_index")


def selection_pb(selection: Selection) -> pb.NeuronSelection:
    if isinstance(selection, Range):
        for r in [selection.layers, selection.neurons]:
            if r is not None and r.step != 1:
                raise ValueError(f"a Range takes ranges of step 1, not {r}")
        wire = pb.NeuronRange(
            layer_start=selection.layers.start,
            layer_end=selection.layers.stop,
            neuron_start=selection.neurons.start if selection.neurons is not None else 0,
        )
        if selection.neurons is not None:
            wire.neuron_end = selection.neurons.stop
        return pb.NeuronSelection(range=wire)
    ids = [pb.NeuronId(layer_index=layer, neuron_index=neuron) for layer, neuron in map(_key, selection)]
    return pb.NeuronSelection(neurons=pb.NeuronIdList(neuron_ids=ids))


def shard(selection: Selection, index: int, count: int) -> Selection:
    """Part ``index`` (from 0) of ``count`` of ``selection``, for ``count`` workers that each take
    one (a Kubernetes Indexed Job's ``JOB_COMPLETION_INDEX``): the Rust SDK's rule, contiguous
    blocks, disjoint, together the whole selection, the same on every run. A list is cut into
    ``selection[index * len // count : (index + 1) * len // count]``; a range with ``neurons``
    keeps its layers and takes that block of the neuron range in each. A range of every listed
    neuron (``neurons=None``) cannot be cut without its listing: list it first."""
    if count <= 0 or not 0 <= index < count:
        raise ValueError(
            f"shard {index}/{count} does not exist: the index counts from 0 and is below the "
            f"count (0/{count} to {count - 1}/{count})"
        )
    if isinstance(selection, Range):
        if selection.neurons is None:
            raise ValueError(
                "a range of every listed neuron cannot be cut without its listing: give the "
                "neuron range, or list the neurons and shard the list"
            )
        neurons = selection.neurons
        length = max(0, neurons.stop - neurons.start)
        start = neurons.start + length * index // count
        stop = neurons.start + length * (index + 1) // count
        return Range(layers=selection.layers, neurons=range(start, stop))
    items = list(selection)
    return items[len(items) * index // count : len(items) * (index + 1) // count]


@dataclass
class NeuronSplits:
    """One neuron of a bulk stream: the records of each requested split (by name, in the Python
    order), or why the neuron cannot be served (``error``; the stream goes on)."""

    neuron_id: NeuronId
    splits: dict[str, list[ActivationRecord]] = field(default_factory=dict)
    error: Optional[errors.ActivationsError] = None
    cursor: str = ""
    """Pass it as ``cursor`` to continue after this neuron (same dataset, selection, splits, n)."""


class Assembler:
    """Puts neurons back together from the messages of ``StreamNeuronSplits``."""

    def __init__(self) -> None:
        self._partial: Optional[tuple[tuple[int, int], list[pb.SplitRecords]]] = None

    def discard(self) -> None:
        self._partial = None

    @property
    def in_progress(self) -> bool:
        return self._partial is not None

    def push(self, message: pb.NeuronSplits) -> Optional[NeuronSplits]:
        key = (message.neuron_id.layer_index, message.neuron_id.neuron_index)
        neuron_id = NeuronId(layer_index=key[0], neuron_index=key[1])
        if message.HasField("error"):
            self._partial = None
            return NeuronSplits(
                neuron_id=neuron_id,
                error=errors.from_proto_status(message.error),
                cursor=message.cursor,
            )
        splits = list(message.splits)
        if self._partial is not None:
            partial_key, gathered = self._partial
            if partial_key != key:
                raise errors.Internal(
                    "malformed response: the parts of two neurons are mixed in a bulk stream"
                )
            for whole, part in zip(gathered, splits):
                whole.records.extend(part.records)
            splits = gathered
        if message.continues:
            self._partial = (key, splits)
            return None
        self._partial = None
        return NeuronSplits(
            neuron_id=neuron_id,
            splits={
                split_name(s.split): [activation_record_from_pb(e.record) for e in s.records]
                for s in splits
            },
            cursor=message.cursor,
        )


def assembled(messages: Iterable[pb.NeuronSplits]) -> Iterator[NeuronSplits]:
    """The complete neurons of a ``StreamNeuronSplits`` stream's messages; ``Unavailable`` if
    the stream ends in the middle of a neuron (its parts so far are dropped, read again)."""
    assembler = Assembler()
    for message in messages:
        neuron = assembler.push(message)
        if neuron is not None:
            yield neuron
    if assembler.in_progress:
        raise errors.Unavailable("the stream ended in the middle of a neuron")


async def assembled_async(messages: AsyncIterable[pb.NeuronSplits]) -> AsyncIterator[NeuronSplits]:
    """:func:`assembled` for a grpc.aio stream."""
    assembler = Assembler()
    async for message in messages:
        neuron = assembler.push(message)
        if neuron is not None:
            yield neuron
    if assembler.in_progress:
        raise errors.Unavailable("the stream ended in the middle of a neuron")


def is_retryable(error: errors.ActivationsError) -> bool:
    """Worth another attempt: ``UNAVAILABLE``, or ``RESOURCE_EXHAUSTED`` with a ``RetryInfo``."""
    if isinstance(error, errors.Unavailable):
        return True
    return isinstance(error, errors.ResourceExhausted) and error.retry_delay is not None


def is_server_failure(error: errors.ActivationsError) -> bool:
    """The server itself is out (refused, reset, draining), not one of its datasets, which is out
    on every server alike."""
    return isinstance(error, errors.Unavailable) and error.reason != "DATASET_UNAVAILABLE"


def backoff(failures: int, error: errors.ActivationsError) -> float:
    """The wait before retry ``failures`` (1 for the first): full jitter up to
    ``min(MAX_BACKOFF, INITIAL_BACKOFF * 2**(failures - 1))``, at least the server's
    ``RetryInfo`` delay."""
    ceiling = min(MAX_BACKOFF, INITIAL_BACKOFF * 2 ** (failures - 1))
    return max(random.uniform(0, ceiling), error.retry_delay or 0.0)


logger = logging.getLogger("neuron_activations")


def log_resume(error: errors.ActivationsError, delay: float, failures: int, retries: int) -> None:
    """Says that a bulk stream failed and resumes, on the package's logger (WARNING)."""
    logger.warning(
        "stream failed (%s); resuming after the last neuron received in %.1fs (attempt %d of %d)",
        error,
        delay,
        failures + 1,
        retries,
    )


def health_request(_: Any) -> bytes:
    """``grpc.health.v1.HealthCheckRequest`` for the whole server: the empty message."""
    return b""


def is_serving(response: bytes) -> bool:
    """Whether a ``HealthCheckResponse`` says SERVING (field 1, varint 1)."""
    return response == b"\x08\x01"


@dataclass
class Server:
    """One server of a client: its address (as hashed), whether it takes calls, and its stub."""

    address: str
    channel: Any
    stub: Any
    available: bool = True
    check_after: float = 0.0
    check_delay: float = READMIT_AFTER


@dataclass(frozen=True)
class Target:
    """One address as given: ``host:port`` with its scheme, or a DNS name to resolve."""

    authority: str
    tls: bool
    dns: bool = False


def parse_addresses(address: Union[str, Sequence[str]], tls: bool) -> list[Target]:
    """The servers named by ``address``: one or several (a list, or comma-separated), each
    ``host:port``, ``http://host:port`` or ``https://host:port``; or one ``dns:///host:port``."""
    items = [address] if isinstance(address, str) else list(address)
    parts = [part.strip() for item in items for part in item.split(",") if part.strip()]
    if not parts:
        raise ValueError("no server address: give one, such as 127.0.0.1:50051")
    targets = []
    for part in parts:
        if part.startswith("dns:"):
            if len(parts) > 1:
                raise ValueError(
                    f"{part}: a dns:/// target names every server: give it alone, not with "
                    "other addresses"
                )
            if not part.startswith("dns:///"):
                raise ValueError(
                    f"{part}: a DNS target is written dns:///host:port (choosing the DNS server "
                    "is not supported)"
                )
            name = part[len("dns:///") :]
            _host_port(name, part)
            targets.append(Target(authority=name, tls=tls, dns=True))
            continue
        scheme, _, rest = part.rpartition("://")
        if scheme not in ("", "http", "https"):
            raise ValueError(f"{part}: the scheme must be http:// or https://")
        if scheme == "http" and tls:
            raise ValueError(f"TLS settings were given but {part} is plain text: use https://")
        _host_port(rest, part)
        targets.append(Target(authority=rest.lower(), tls=tls or scheme == "https"))
    return targets


def _host_port(authority: str, given: str) -> tuple[str, int]:
    host, sep, port = authority.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(
            f"{given}: the address needs a host and a port, such as 127.0.0.1:50051"
        )
    return host.strip("[]"), int(port)


def resolve(name: str) -> list[str]:
    """The ``ip:port`` addresses of a DNS target's ``host:port`` (IPv6 in brackets)."""
    host, port = _host_port(name, f"dns:///{name}")
    seen: list[str] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = str(sockaddr[0])
        address = f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"
        if address not in seen:
            seen.append(address)
    return seen


def choose(
    servers: Sequence[Server],
    dataset: str,
    key: Optional[tuple[int, int]],
    turn: int,
    affinity: bool,
) -> Server:
    """The server for a call about neuron ``key`` (``None``: about no neuron): its owner among
    the servers that take calls (all of them when none does) with ``affinity``, else the next
    in turn."""
    candidates = [server for server in servers if server.available] or list(servers)
    if affinity and key is not None:
        address = routing.owner([s.address for s in candidates], dataset, key[0], key[1])
        return next(server for server in candidates if server.address == address)
    return candidates[turn % len(candidates)]


def due_for_check(server: Server, now: Optional[float] = None) -> bool:
    return not server.available and (now or time.monotonic()) >= server.check_after


def eject(server: Server) -> None:
    if server.available:
        server.available = False
        server.check_delay = READMIT_AFTER
    else:
        server.check_delay = min(server.check_delay * 2, MAX_READMIT_AFTER)
    server.check_after = time.monotonic() + server.check_delay



@dataclass(frozen=True)
class Settings:
    """A client's settings, checked."""

    dataset: str
    timeout: Optional[float]
    retries: int
    affinity: bool
    tls: Optional[Tls]
    metadata: tuple[tuple[str, str], ...]
    targets: list[Target]
    compression: Optional[str] = None

    @classmethod
    def parse(
        cls,
        address: Union[str, Sequence[str]],
        *,
        dataset: Optional[str],
        tls: Union[bool, Tls, None],
        token: Optional[str],
        timeout: Optional[float],
        retries: int,
        policy: str,
        compression: Optional[str] = None,
    ) -> Settings:
        if compression not in (None, "gzip"):
            raise ValueError(f"compression must be None or 'gzip', not {compression!r}")
        if policy not in ("affinity", "round_robin"):
            raise ValueError(f"policy must be 'affinity' or 'round_robin', not {policy!r}")
        metadata: tuple[tuple[str, str], ...] = ()
        if token is not None:
            token = token.strip()
            if not token or not token.isascii() or not token.isprintable() or " " in token:
                raise ValueError("the token must be visible ASCII characters, without spaces")
            metadata = (("authorization", f"Bearer {token}"),)
        settings_tls = Tls() if tls is True else (tls or None)
        return cls(
            dataset=dataset or "",
            timeout=timeout,
            retries=max(1, retries),
            affinity=policy == "affinity",
            tls=settings_tls,
            metadata=metadata,
            targets=parse_addresses(address, settings_tls is not None),
            compression=compression,
        )

    @property
    def dns(self) -> Optional[Target]:
        return next((target for target in self.targets if target.dns), None)


class Servers:
    """The servers of a client and the choice of one per call; ``channels`` is ``grpc`` or
    ``grpc.aio``. Resolving names and health checks are the client's (blocking or not)."""

    def __init__(self, settings: Settings, channels: Any) -> None:
        self.settings = settings
        self._channels = channels
        self.servers: list[Server] = []
        self._resolved_at = 0.0
        self._turn = 0

    def refresh_due(self, force: bool = False) -> bool:
        """Whether to open the channels or resolve the DNS name now (every 30 s, and after a
        failure at most once a second); if so, the clock starts again."""
        now = time.monotonic()
        if self.servers and self.settings.dns is None:
            return False
        since = now - self._resolved_at
        if self.servers and (since < 1.0 or (not force and since < RESOLVE_INTERVAL)):
            return False
        self._resolved_at = now
        return True

    def apply(self, addresses: Optional[list[str]]) -> list[Server]:
        """Takes the addresses a DNS name resolved to (``None`` for fixed servers): servers still
        there keep their channel and state. Returns the servers gone, to close."""
        dns = self.settings.dns
        wanted: list[tuple[str, bool, Optional[str]]]
        if dns is not None:
            host = dns.authority.rpartition(":")[0].strip("[]")
            wanted = [(address, dns.tls, host) for address in addresses or []]
        else:
            wanted = [(t.authority, t.tls, None) for t in self.settings.targets]
        known = {server.address: server for server in self.servers}
        servers = [known.get(a) or self._open(a, tls, name) for a, tls, name in wanted]
        for address, _, _ in wanted:
            known.pop(address, None)
        self.servers = sorted(servers, key=lambda server: server.address)
        return list(known.values())

    def choose(self, key: Optional[tuple[int, int]]) -> Server:
        if not self.servers:
            raise errors.Unavailable(
                f"{self.settings.targets[0].authority} resolves to no address"
            )
        self._turn += 1
        return choose(self.servers, self.settings.dataset, key, self._turn, self.settings.affinity)

    @property
    def spreads(self) -> bool:
        """Whether bulk streams are cut by owner: several servers (or a DNS name) and affinity."""
        several = len(self.servers) > 1 or self.settings.dns is not None
        return several and self.settings.affinity

    def checks_due(self) -> list[Server]:
        """The servers out whose next health check is due."""
        now = time.monotonic()
        return [server for server in self.servers if due_for_check(server, now)]

    @staticmethod
    def checked(server: Server, serving: bool) -> None:
        if serving:
            server.available = True
        else:
            eject(server)

    def _open(self, address: str, tls: bool, dns_host: Optional[str]) -> Server:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
        ]
        if self.settings.compression is None:
            # grpcio offers gzip and deflate by default, and the server then compresses every
            # response: a whole record took 9.4 ms instead of 3.2 on loopback. Identity only,
            # unless compression was asked for (worth it over slow links only).
            options.append(("grpc.compression_enabled_algorithms_bitset", 1))
        else:
            options.append(("grpc.default_compression_algorithm", grpc.Compression.Gzip))
        settings = self.settings.tls or Tls()
        name = settings.server_name or dns_host
        if tls and name:
            # Dialed at an address, checked against the name.
            options.append(("grpc.ssl_target_name_override", name))
        if tls:
            channel = self._channels.secure_channel(
                address, settings.credentials(), options=options
            )
        else:
            channel = self._channels.insecure_channel(address, options=options)
        stub = ActivationServiceStub(channel)  # type: ignore[no-untyped-call]
        return Server(address=address, channel=channel, stub=stub)


HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def slice_params(n: Optional[int]) -> pb.ActivationRecordSliceParams:
    params = pb.ActivationRecordSliceParams()
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n_examples_per_split must be None or a non-negative int, not {n!r}")
        params.n_examples_per_split = n
    return params


def neuron_id_pb(key: tuple[int, int]) -> pb.NeuronId:
    return pb.NeuronId(layer_index=key[0], neuron_index=key[1])


class ClientBase:
    """The settings both clients take, checked, and their servers (``grpc`` or ``grpc.aio``
    channels)."""

    _channels: Any = grpc

    def __init__(
        self,
        address: Union[str, Sequence[str]],
        *,
        dataset: Optional[str] = None,
        tls: Union[bool, Tls, None] = None,
        token: Optional[str] = None,
        timeout: Optional[float] = None,
        retries: int = 3,
        policy: str = "affinity",
        compression: Optional[str] = None,
    ) -> None:
        settings = Settings.parse(
            address,
            dataset=dataset,
            tls=tls,
            token=token,
            timeout=timeout,
            retries=retries,
            policy=policy,
            compression=compression,
        )
        self.dataset = settings.dataset
        """The dataset every request names; empty for the server's default."""
        self.timeout = settings.timeout
        self.retries = settings.retries
        self._metadata = settings.metadata
        self._pool = Servers(settings, self._channels)
        self._started()

    def _started(self) -> None:
        """What a client does once its settings are checked (the synchronous one connects)."""
