"""The synchronous :class:`Client`."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional, TypeVar, Union

import grpc

from . import errors
from ._common import (
    HEALTH_CHECK,
    assembled,
    ClientBase,
    NeuronSplits,
    Selection,
    Server,
    Tls,
    backoff,
    eject,
    health_request,
    is_retryable,
    is_server_failure,
    is_serving,
    log_resume,
    neuron_id_pb,
    resolve,
    selection_pb,
    slice_params,
    split_enum,
)
from ._proto import activations_pb2 as pb
from ._spread import PART_BUFFER, Books, Part, enumerated, fingerprint, resume_point
from .records import ActivationRecord, NeuronRecord, activation_record_from_pb, index, record_from_pb

__all__ = ["Client"]

T = TypeVar("T")


class Client(ClientBase):
    """A client of the activations server.

    ``address`` is one server (``host:port``, ``http://host:port``, ``https://host:port``),
    several (a list, or comma-separated), or one ``dns:///host:port`` name whose every address
    is a server. With several, each call about a neuron goes to the server that owns it by the
    Rust SDK's rendezvous hashing (``policy="affinity"``, the default) or to the next in turn
    (``policy="round_robin"``); a server whose connection fails is taken out until a health
    check passes, and the call is retried on the next one.

    ``dataset`` names the dataset (``None``: the server's default); ``tls`` is ``True`` (the
    system's CA roots) or a :class:`Tls`; ``token`` is sent as ``authorization: Bearer``;
    ``timeout`` bounds each call in seconds; ``retries`` is the number of attempts of a call that
    fails for a transient reason (``UNAVAILABLE``, a dropped connection); ``compression="gzip"``
    compresses both ways (off by default: on a fast network it costs more than it saves).

    >>> client = Client("127.0.0.1:50051", dataset="gpt2-xl")    # doctest: +SKIP
    >>> record = client.load_neuron(1, 1)                         # doctest: +SKIP
    """

    def _started(self) -> None:
        self._lock = threading.Lock()
        self._refresh(force=True)

    # --- the seed's API ---------------------------------------------------------------------

    def load_neuron(
        self, layer_index: Union[str, int], neuron_index: Union[str, int]
    ) -> NeuronRecord:
        """The whole record of a neuron (``GetNeuronRecord``), as the seed's ``load_neuron``."""
        key = (index(layer_index, "layer_index"), index(neuron_index, "neuron_index"))
        request = pb.GetNeuronRecordRequest(dataset=self.dataset, neuron_id=neuron_id_pb(key))
        message = self._unary(key, lambda stub: stub.GetNeuronRecord, request)
        return record_from_pb(message)

    def neuron_exists(
        self, layer_index: Union[str, int], neuron_index: Union[str, int]
    ) -> bool:
        """Whether the neuron's file exists: ``False`` for a missing neuron."""
        key = (index(layer_index, "layer_index"), index(neuron_index, "neuron_index"))
        request = pb.NeuronExistsRequest(dataset=self.dataset, neuron_id=neuron_id_pb(key))
        return bool(self._unary(key, lambda stub: stub.NeuronExists, request).exists)

    def get_sorted_layers(self) -> list[str]:
        """The dataset's layers in ascending numerical order, as strings (as the seed returns
        them)."""
        request = pb.ListLayersRequest(dataset=self.dataset)
        response = self._unary(None, lambda stub: stub.ListLayers, request)
        return [str(layer) for layer in response.layer_indices]

    def get_sorted_neuron_indices(self, layer_index: Union[str, int]) -> list[int]:
        """The layer's neuron indices, ascending, fetched page by page."""
        layer = index(layer_index, "layer_index")
        indices: list[int] = []
        token = ""
        while True:
            request = pb.ListNeuronsRequest(
                dataset=self.dataset, layer_index=layer, page_size=10_000, page_token=token
            )
            response = self._unary(None, lambda stub: stub.ListNeurons, request)
            indices.extend(response.neuron_indices)
            token = response.next_page_token
            if not token:
                return indices

    # --- splits -----------------------------------------------------------------------------

    def activation_records(
        self,
        layer_index: Union[str, int],
        neuron_index: Union[str, int],
        split: str,
        n_examples_per_split: Optional[int] = None,
    ) -> list[ActivationRecord]:
        """The records of one split (``"train"``, ``"calibration"``, ``"valid"`` or ``"test"``)
        without fetching the whole record: what ``load_neuron(...).valid_activation_records(
        ActivationRecordSliceParams(n))`` returns. Where the seed's ``assert`` fails, raises
        :class:`~neuron_activations.errors.NotEnoughRecords`."""
        key = (index(layer_index, "layer_index"), index(neuron_index, "neuron_index"))
        request = pb.StreamActivationRecordsRequest(
            dataset=self.dataset,
            neuron_id=neuron_id_pb(key),
            split=split_enum(split),
            slice_params=slice_params(n_examples_per_split),
        )

        def call(stub: Any) -> list[ActivationRecord]:
            # Collected whole inside the attempt: a stream that fails midway is retried from
            # the start, so no record is repeated or lost.
            stream = stub.StreamActivationRecords(
                request, timeout=self.timeout, metadata=self._metadata
            )
            return [activation_record_from_pb(item.record) for item in stream]

        return self._attempts(key, call)

    def neuron_splits(
        self,
        selection: Selection,
        splits: Sequence[str],
        n_examples_per_split: Optional[int] = None,
        *,
        cursor: str = "",
    ) -> Iterator[NeuronSplits]:
        """The requested splits of every neuron of ``selection`` (``StreamNeuronSplits``), one
        item per neuron in selection order; a neuron that cannot be served is an item with its
        ``error``. After ``UNAVAILABLE`` or a dropped connection the stream resumes after the
        last neuron delivered (per ``retries``, counted since that neuron): nothing is lost or
        repeated. ``cursor`` continues a stream stopped earlier."""
        request = pb.StreamNeuronSplitsRequest(
            dataset=self.dataset,
            selection=selection_pb(selection),
            splits=[split_enum(split) for split in splits],
            slice_params=slice_params(n_examples_per_split),
            cursor=cursor,
        )
        self._refresh()
        if self._pool.spreads:
            yield from self._spread(request)
            return
        failures = 0
        while True:
            server = self._pick(None)
            try:
                stream = server.stub.StreamNeuronSplits(
                    request, timeout=self.timeout, metadata=self._metadata
                )
                for neuron in assembled(stream):
                    failures = 0
                    request.cursor = neuron.cursor
                    yield neuron
                return
            except grpc.RpcError as rpc_error:
                error: errors.ActivationsError = errors.from_rpc_error(rpc_error)
            except errors.Unavailable as cut:
                error = cut
            failures += 1
            self._after_failure(server, error, failures, resuming=True)

    def _spread(self, request: pb.StreamNeuronSplitsRequest) -> Iterator[NeuronSplits]:
        """``neuron_splits`` over several servers: a thread per server's part, merged in order."""
        ids, first, fingerprint_ = self._expand(request)
        books = Books(ids, first, fingerprint_, self.dataset)
        stop = threading.Event()
        queues: dict[int, queue.Queue[tuple[str, Any]]] = {}

        def start(parts: list[tuple[int, Part]]) -> None:
            for part_id, part in parts:
                out: queue.Queue[tuple[str, Any]] = queue.Queue(PART_BUFFER)
                queues[part_id] = out
                thread = threading.Thread(
                    target=self._run_part,
                    args=(part.server, books.requests(request, part), out, stop),
                    daemon=True,
                )
                thread.start()

        try:
            with self._lock:
                servers = list(self._pool.servers)
            start(books.assign(list(range(len(ids))), servers))
            while not books.done:
                part_id = books.waiting_on()
                kind, payload = queues[part_id].get()
                if kind == "item":
                    yield books.deliver(part_id, payload)
                    continue
                error: errors.ActivationsError = payload or errors.Unavailable(
                    "a server's stream ended before its last neuron"
                )
                limit = books.failover_limit(self.retries, len(servers))
                if not is_server_failure(error) or books.failovers >= limit:
                    raise error
                server, rest = books.lose(part_id)
                del queues[part_id]
                self._eject(server)
                log_resume(error, 0.0, books.failovers, limit)
                with self._lock:
                    servers = list(self._pool.servers)
                start(books.assign(rest, servers))
        finally:
            stop.set()

    def _run_part(
        self,
        server: Server,
        requests: list[pb.StreamNeuronSplitsRequest],
        out: queue.Queue[tuple[str, Any]],
        stop: threading.Event,
    ) -> None:
        """Streams one server's part into ``out``; ends after its last neuron or an error."""

        def put(item: tuple[str, Any]) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        for request in requests:
            call = server.stub.StreamNeuronSplits(
                request, timeout=self.timeout, metadata=self._metadata
            )
            try:
                for neuron in assembled(call):
                    if not put(("item", neuron)):
                        call.cancel()
                        return
            except grpc.RpcError as rpc_error:
                put(("error", errors.from_rpc_error(rpc_error)))
                return
            except errors.Unavailable as cut:
                put(("error", cut))
                return
        put(("end", None))

    def _expand(self, request: pb.StreamNeuronSplitsRequest) -> tuple[list[tuple[int, int]], int, int]:
        """The neurons of ``request`` after its cursor, the position of the first, and the
        stream's fingerprint (for cursors)."""
        dataset = self.dataset or next(
            (d.name for d in self.datasets() if d.is_default), ""
        )
        fingerprint_ = fingerprint(dataset, request)
        ids = enumerated(request.selection)
        listed = ids is None
        if ids is None:
            block = request.selection.range
            ids = [
                (layer, neuron)
                for layer in map(int, self.get_sorted_layers())
                if block.layer_start <= layer < block.layer_end
                for neuron in self.get_sorted_neuron_indices(layer)
                if neuron >= block.neuron_start
            ]
        ids, first = resume_point(ids, listed, request.cursor, fingerprint_)
        return ids, first, fingerprint_

    # --- the rest ---------------------------------------------------------------------------

    def datasets(self) -> list[pb.DatasetInfo]:
        """The datasets the server serves (``ListDatasets``)."""
        return list(
            self._unary(None, lambda stub: stub.ListDatasets, pb.ListDatasetsRequest()).datasets
        )

    def servers(self) -> list[tuple[str, bool]]:
        """Each server's address and whether it takes calls now."""
        with self._lock:
            return [(server.address, server.available) for server in self._pool.servers]

    def close(self) -> None:
        """Closes the connections."""
        with self._lock:
            servers, self._pool.servers = self._pool.servers, []
        for server in servers:
            server.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- calls, retries and servers ---------------------------------------------------------

    def _unary(
        self, key: Optional[tuple[int, int]], method: Callable[[Any], Any], request: Any
    ) -> Any:
        return self._attempts(
            key,
            lambda stub: method(stub)(request, timeout=self.timeout, metadata=self._metadata),
        )

    def _attempts(self, key: Optional[tuple[int, int]], call: Callable[[Any], T]) -> T:
        failures = 0
        while True:
            server = self._pick(key)
            try:
                return call(server.stub)
            except grpc.RpcError as rpc_error:
                error = errors.from_rpc_error(rpc_error)
            failures += 1
            self._after_failure(server, error, failures)

    def _after_failure(
        self,
        server: Server,
        error: errors.ActivationsError,
        failures: int,
        resuming: bool = False,
    ) -> None:
        """Raises ``error`` when it is final (or the attempts are spent); else takes a failed
        server out and waits before the next attempt (saying so when a stream resumes)."""
        if not is_retryable(error) or failures >= self.retries:
            raise error
        if is_server_failure(error):
            self._eject(server)
        delay = backoff(failures, error)
        if resuming:
            log_resume(error, delay, failures, self.retries)
        time.sleep(delay)

    def _pick(self, key: Optional[tuple[int, int]]) -> Server:
        self._refresh()
        with self._lock:
            due = self._pool.checks_due()
        for server in due:
            serving = self._health_check(server)
            with self._lock:
                self._pool.checked(server, serving)
        with self._lock:
            return self._pool.choose(key)

    def _eject(self, server: Server) -> None:
        with self._lock:
            eject(server)
        self._refresh(force=True)

    def _health_check(self, server: Server) -> bool:
        check = server.channel.unary_unary(
            HEALTH_CHECK, request_serializer=health_request, response_deserializer=bytes
        )
        try:
            return is_serving(check(None, timeout=2.0))
        except grpc.RpcError:
            return False

    def _refresh(self, force: bool = False) -> None:
        """Opens the channels; resolves a DNS name again when due."""
        with self._lock:
            if not self._pool.refresh_due(force):
                return
            dns = self._pool.settings.dns
            had_servers = bool(self._pool.servers)
        addresses = None
        if dns is not None:
            try:
                addresses = resolve(dns.authority)
            except OSError as error:
                if had_servers:
                    return
                raise errors.Unavailable(
                    f"dns:///{dns.authority} cannot be resolved: {error}"
                ) from None
        with self._lock:
            gone = self._pool.apply(addresses)
        for server in gone:
            server.channel.close()
