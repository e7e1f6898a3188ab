"""The asyncio :class:`AsyncClient` (grpc.aio): the methods of :class:`~neuron_activations.Client`
as coroutines, and bulk streams as async iterators."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Optional, TypeVar, Union

import grpc
import grpc.aio

from . import errors
from ._common import (
    HEALTH_CHECK,
    assembled_async,
    ClientBase,
    NeuronSplits,
    Selection,
    Server,
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

__all__ = ["AsyncClient"]

T = TypeVar("T")

class AsyncClient(ClientBase):
    """:class:`~neuron_activations.Client` for asyncio: the same settings and routing, its
    calls as coroutines. Use it within one event loop, and ``await client.close()`` (or
    ``async with``) when done.

    >>> async def main():                                          # doctest: +SKIP
    ...     async with AsyncClient("127.0.0.1:50051") as client:
    ...         record = await client.load_neuron(1, 1)
    """

    _channels = grpc.aio

    async def load_neuron(
        self, layer_index: Union[str, int], neuron_index: Union[str, int]
    ) -> NeuronRecord:
        """The whole record of a neuron (``GetNeuronRecord``)."""
        key = (index(layer_index, "layer_index"), index(neuron_index, "neuron_index"))
        request = pb.GetNeuronRecordRequest(dataset=self.dataset, neuron_id=neuron_id_pb(key))
        return record_from_pb(await self._unary(key, lambda s: s.GetNeuronRecord, request))

    async def neuron_exists(
        self, layer_index: Union[str, int], neuron_index: Union[str, int]
    ) -> bool:
        """Whether the neuron's file exists: ``False`` for a missing neuron."""
        key = (index(layer_index, "layer_index"), index(neuron_index, "neuron_index"))
        request = pb.NeuronExistsRequest(dataset=self.dataset, neuron_id=neuron_id_pb(key))
        return bool((await self._unary(key, lambda s: s.NeuronExists, request)).exists)

    async def get_sorted_layers(self) -> list[str]:
        """The dataset's layers in ascending numerical order, as strings."""
        request = pb.ListLayersRequest(dataset=self.dataset)
        response = await self._unary(None, lambda s: s.ListLayers, request)
        return [str(layer) for layer in response.layer_indices]

    async def get_sorted_neuron_indices(self, layer_index: Union[str, int]) -> list[int]:
        """The layer's neuron indices, ascending."""
        layer = index(layer_index, "layer_index")
        indices: list[int] = []
        token = ""
        while True:
            request = pb.ListNeuronsRequest(
                dataset=self.dataset, layer_index=layer, page_size=10_000, page_token=token
            )
            response = await self._unary(None, lambda s: s.ListNeurons, request)
            indices.extend(response.neuron_indices)
            token = response.next_page_token
            if not token:
                return indices

    async def activation_records(
        self,
        layer_index: Union[str, int],
        neuron_index: Union[str, int],
        split: str,
        n_examples_per_split: Optional[int] = None,
    ) -> list[ActivationRecord]:
        """The records of one split, without fetching the whole record."""
        key = (index(layer_index, "layer_index"), index(neuron_index, "neuron_index"))
        request = pb.StreamActivationRecordsRequest(
            dataset=self.dataset,
            neuron_id=neuron_id_pb(key),
            split=split_enum(split),
            slice_params=slice_params(n_examples_per_split),
        )

        async def call(stub: Any) -> list[ActivationRecord]:
            stream = stub.StreamActivationRecords(
                request, timeout=self.timeout, metadata=self._metadata
            )
            return [activation_record_from_pb(item.record) async for item in stream]

        return await self._attempts(key, call)

    async def neuron_splits(
        self,
        selection: Selection,
        splits: Sequence[str],
        n_examples_per_split: Optional[int] = None,
        *,
        cursor: str = "",
    ) -> AsyncIterator[NeuronSplits]:
        """The requested splits of every neuron of ``selection``, one item per neuron in
        selection order, resumed after the last neuron delivered after a transient failure."""
        request = pb.StreamNeuronSplitsRequest(
            dataset=self.dataset,
            selection=selection_pb(selection),
            splits=[split_enum(split) for split in splits],
            slice_params=slice_params(n_examples_per_split),
            cursor=cursor,
        )
        await self._refresh()
        if self._pool.spreads:
            async for item in self._spread(request):
                yield item
            return
        failures = 0
        while True:
            server = await self._pick(None)
            try:
                stream = server.stub.StreamNeuronSplits(
                    request, timeout=self.timeout, metadata=self._metadata
                )
                async for neuron in assembled_async(stream):
                    failures = 0
                    request.cursor = neuron.cursor
                    yield neuron
                return
            except grpc.RpcError as rpc_error:
                error: errors.ActivationsError = errors.from_rpc_error(rpc_error)
            except errors.Unavailable as cut:
                error = cut
            failures += 1
            await self._after_failure(server, error, failures, resuming=True)

    async def _spread(self, request: pb.StreamNeuronSplitsRequest) -> AsyncIterator[NeuronSplits]:
        """``neuron_splits`` over several servers: a task per server's part, merged in order."""
        ids, first, fingerprint_ = await self._expand(request)
        books = Books(ids, first, fingerprint_, self.dataset)
        queues: dict[int, asyncio.Queue[tuple[str, Any]]] = {}
        tasks: list[asyncio.Task[None]] = []

        def start(parts: list[tuple[int, Part]]) -> None:
            for part_id, part in parts:
                out: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(PART_BUFFER)
                queues[part_id] = out
                tasks.append(
                    asyncio.create_task(
                        self._run_part(part.server, books.requests(request, part), out)
                    )
                )

        try:
            servers = list(self._pool.servers)
            start(books.assign(list(range(len(ids))), servers))
            while not books.done:
                part_id = books.waiting_on()
                kind, payload = await queues[part_id].get()
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
                eject(server)
                log_resume(error, 0.0, books.failovers, limit)
                servers = list(self._pool.servers)
                start(books.assign(rest, servers))
        finally:
            for task in tasks:
                task.cancel()

    async def _run_part(
        self,
        server: Server,
        requests: list[pb.StreamNeuronSplitsRequest],
        out: asyncio.Queue[tuple[str, Any]],
    ) -> None:
        """Streams one server's part into ``out``; ends after its last neuron or an error."""
        for request in requests:
            try:
                call = server.stub.StreamNeuronSplits(
                    request, timeout=self.timeout, metadata=self._metadata
                )
                async for neuron in assembled_async(call):
                    await out.put(("item", neuron))
            except grpc.RpcError as rpc_error:
                await out.put(("error", errors.from_rpc_error(rpc_error)))
                return
            except errors.Unavailable as cut:
                await out.put(("error", cut))
                return
        await out.put(("end", None))

    async def _expand(
        self, request: pb.StreamNeuronSplitsRequest
    ) -> tuple[list[tuple[int, int]], int, int]:
        """The neurons of ``request`` after its cursor, the position of the first, and the
        stream's fingerprint (for cursors)."""
        dataset = self.dataset or next(
            (d.name for d in await self.datasets() if d.is_default), ""
        )
        fingerprint_ = fingerprint(dataset, request)
        ids = enumerated(request.selection)
        listed = ids is None
        if ids is None:
            block = request.selection.range
            ids = []
            for layer in map(int, await self.get_sorted_layers()):
                if block.layer_start <= layer < block.layer_end:
                    neurons = await self.get_sorted_neuron_indices(layer)
                    ids += [(layer, n) for n in neurons if n >= block.neuron_start]
        ids, first = resume_point(ids, listed, request.cursor, fingerprint_)
        return ids, first, fingerprint_

    async def datasets(self) -> list[pb.DatasetInfo]:
        """The datasets the server serves."""
        response = await self._unary(None, lambda s: s.ListDatasets, pb.ListDatasetsRequest())
        return list(response.datasets)

    async def close(self) -> None:
        """Closes the connections."""
        servers, self._pool.servers = self._pool.servers, []
        for server in servers:
            await server.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _unary(
        self, key: Optional[tuple[int, int]], method: Callable[[Any], Any], request: Any
    ) -> Any:
        async def call(stub: Any) -> Any:
            return await method(stub)(request, timeout=self.timeout, metadata=self._metadata)

        return await self._attempts(key, call)

    async def _attempts(
        self, key: Optional[tuple[int, int]], call: Callable[[Any], Awaitable[T]]
    ) -> T:
        failures = 0
        while True:
            server = await self._pick(key)
            try:
                return await call(server.stub)
            except grpc.RpcError as rpc_error:
                error = errors.from_rpc_error(rpc_error)
            failures += 1
            await self._after_failure(server, error, failures)

    async def _after_failure(
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
            eject(server)
            await self._refresh(force=True)
        delay = backoff(failures, error)
        if resuming:
            log_resume(error, delay, failures, self.retries)
        await asyncio.sleep(delay)

    async def _pick(self, key: Optional[tuple[int, int]]) -> Server:
        await self._refresh()
        for server in self._pool.checks_due():
            self._pool.checked(server, await self._health_check(server))
        return self._pool.choose(key)

    async def _health_check(self, server: Server) -> bool:
        check = server.channel.unary_unary(
            HEALTH_CHECK, request_serializer=health_request, response_deserializer=bytes
        )
        try:
            return is_serving(await check(None, timeout=2.0))
        except grpc.RpcError:
            return False

    async def _refresh(self, force: bool = False) -> None:
        """Opens the channels; resolves a DNS name again when due."""
        if not self._pool.refresh_due(force):
            return
        dns = self._pool.settings.dns
        addresses = None
        if dns is not None:
            try:
                addresses = await asyncio.to_thread(resolve, dns.authority)
            except OSError as error:
                if self._pool.servers:
                    return
                raise errors.Unavailable(
                    f"dns:///{dns.authority} cannot be resolved: {error}"
                ) from None
        for server in self._pool.apply(addresses):
            await server.channel.close()
