"""asyncio; a bulk stream resumed after its connection is cut in the middle; several replicas
routed by the Rust SDK's rendezvous hashing."""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from neuron_explainer.activations import activations as reference

from neuron_activations import AsyncClient, Client, Range, errors, routing, shard

from .conftest import ServerProcess, dataset_records
from .test_oracle import NEURONS, same_records


class CuttingProxy:
    """Forwards TCP connections to a server; ``cut()`` closes every connection at once, as a
    network failure or a restarted load balancer would."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            with self._lock:
                self._sockets += [client, server]
            for source, sink in [(client, server), (server, client)]:
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._listener.close()
        self.cut()


def test_a_bulk_stream_cut_in_the_middle_resumes_after_its_last_neuron(server: str) -> None:
    proxy = CuttingProxy(server)
    try:
        client = Client(proxy.address, retries=5)
        # The real neuron 60 times: enough messages for the cut to fall in the middle.
        selection = [(1, 1)] * 30 + [(1, 3)] * 30
        got = []
        for neuron in client.neuron_splits(selection, ["train", "test"], 5):
            got.append(neuron)
            if len(got) == 20:
                proxy.cut()
        assert [(n.neuron_id.layer_index, n.neuron_id.neuron_index) for n in got] == selection
        assert all(n.error is None for n in got)
        # Each cursor continues after its neuron, as the resumed stream did.
        rest = list(client.neuron_splits(selection, ["train", "test"], 5, cursor=got[44].cursor))
        assert len(rest) == 15
        first = got[0].splits["train"]
        assert all(n.splits["train"] == first for n in got[:30])
    finally:
        proxy.close()


def test_a_bulk_stream_gives_up_after_its_retries(dataset_dir: Path) -> None:
    process = ServerProcess(["--dataset", f"local={dataset_dir}", "--layout", "flat"])
    assert process.address is not None
    client = Client(process.address, retries=2)
    # More than the connection holds in flight, so most is still to come when the server goes.
    stream = client.neuron_splits([(1, 1)] * 20000, ["valid"], 1)
    assert next(stream).error is None
    process.close()
    with pytest.raises(errors.Unavailable):
        list(stream)


def test_the_asyncio_client_reads_what_the_reference_reads(server: str, http_url: str) -> None:
    async def main() -> None:
        async with AsyncClient(server) as client:
            records = await asyncio.gather(
                *(client.load_neuron(layer, neuron) for layer, neuron in NEURONS)
            )
            for (layer, neuron), ours in zip(NEURONS, records):
                theirs = reference.load_neuron(layer, neuron, http_url)
                same_records(
                    ours.most_positive_activation_records,
                    theirs.most_positive_activation_records,
                )
            valid = await client.activation_records(1, 1, "valid", 5)
            params = reference.ActivationRecordSliceParams(n_examples_per_split=5)
            same_records(valid, reference.load_neuron(1, 1, http_url).valid_activation_records(params))
            assert await client.get_sorted_layers() == ["0", "1"]
            assert await client.get_sorted_neuron_indices(0) == [0, 1, 2]
            assert await client.neuron_exists(1, 1)
            assert not await client.neuron_exists(1, 2)
            with pytest.raises(errors.NotFound):
                await client.load_neuron(1, 2)
            with pytest.raises(errors.NotEnoughRecords):
                await client.activation_records(0, 1, "valid", 5)
            streamed = [
                n async for n in client.neuron_splits(Range(range(0, 2), None), ["train"], 1)
            ]
            assert [(n.neuron_id.layer_index, n.neuron_id.neuron_index) for n in streamed] == [
                *NEURONS
            ]

    asyncio.run(main())


@pytest.fixture(scope="module")
def replicas(dataset_dir: Path) -> Iterator[list[ServerProcess]]:
    started = [
        ServerProcess(
            ["--dataset", f"local={dataset_dir}", "--layout", "flat", "--metrics-listen", f"127.0.0.{host}:0"],
            host=f"127.0.0.{host}",
        )
        for host in (2, 3, 4)
    ]
    yield started
    for process in started:
        process.close()


def storage_reads(metrics_address: str) -> int:
    text = urllib.request.urlopen(f"http://{metrics_address}/metrics").read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("activations_storage_reads_total") and 'operation="read"' in line
    )


def test_several_replicas_serve_each_neuron_from_its_owner(
    replicas: list[ServerProcess], dataset_dir: Path
) -> None:
    addresses = [process.address for process in replicas]
    assert all(addresses)
    client = Client([a for a in addresses if a])
    assert sorted(a for a, _ in client.servers()) == sorted(a for a in addresses if a)
    for _ in range(3):
        for layer, neuron in NEURONS:
            client.load_neuron(layer, neuron)
            client.activation_records(layer, neuron, "train", 1)
    # Each neuron was read from storage once, by its owner, however often it was asked for.
    owners = {
        key: routing.owner([a for a in addresses if a], "", key[0], key[1]) for key in NEURONS
    }
    for process in replicas:
        assert process.metrics_address is not None
        owned = sum(1 for owner in owners.values() if owner == process.address)
        assert storage_reads(process.metrics_address) == owned, process.address
    # A replica that dies: its neurons go to their next owner, the calls succeed.
    victim = owners[NEURONS[0]]
    victim_process = next(p for p in replicas if p.address == victim)
    victim_process.close()
    for layer, neuron in NEURONS:
        assert client.load_neuron(layer, neuron).neuron_id.layer_index == layer
    assert (victim, False) in client.servers()


def test_shards_are_disjoint_and_complete() -> None:
    everything = [(layer, neuron) for layer in range(3) for neuron in range(10)]
    parts = [shard(everything, index, 4) for index in range(4)]
    assert sum(parts, []) == everything
    assert [len(p) for p in parts] == [7, 8, 7, 8]
    block = Range(layers=range(0, 48), neurons=range(0, 6400))
    assert shard(block, 1, 4) == Range(layers=range(0, 48), neurons=range(1600, 3200))
    with pytest.raises(ValueError, match="0/4 to 3/4"):
        shard(everything, 4, 4)
    with pytest.raises(ValueError, match="listed neuron"):
        shard(Range(layers=range(0, 2)), 0, 2)


def test_the_dataset_has_the_neurons_the_tests_expect() -> None:
    assert sorted(dataset_records()) == NEURONS


def test_a_bulk_stream_over_three_replicas_is_cut_by_owner_and_survives_one_dying(
    dataset_dir: Path, server: str
) -> None:
    started = [
        ServerProcess(
            ["--dataset", f"local={dataset_dir}", "--layout", "flat"], host=f"127.0.0.{host}"
        )
        for host in (5, 6, 7)
    ]
    try:
        addresses = [p.address for p in started if p.address]
        client = Client(addresses, retries=3)
        # The two real neurons many times over, every split as large as it can be: far more
        # than a connection holds in flight, so each server is mid-stream when one dies.
        selection = [(1, 1), (1, 3)] * 300
        splits = ["train", "calibration", "valid", "test"]
        victim = next(p for p in started if p.address == routing.owner(addresses, "", 1, 1))
        got = []
        for neuron in client.neuron_splits(selection, splits):
            assert neuron.error is None
            got.append((neuron.neuron_id.layer_index, neuron.neuron_id.neuron_index, neuron.cursor))
            if len(got) == 100:
                victim.close()
        assert [(layer, neuron) for layer, neuron, _ in got] == selection
        assert (victim.address, False) in client.servers()
        # The cursors are the whole request's, as one server issues them: resuming on one.
        one = Client(server)
        rest = list(one.neuron_splits(selection, splits, cursor=got[499][2]))
        assert [(n.neuron_id.layer_index, n.neuron_id.neuron_index) for n in rest] == selection[500:]
        # And one server's cursor resumes the stream on the replicas.
        first = next(iter(one.neuron_splits(selection, splits)))
        rest = list(client.neuron_splits(selection, splits, cursor=first.cursor))
        assert len(rest) == len(selection) - 1
    finally:
        for process in started:
            process.close()


def test_the_asyncio_client_cuts_a_bulk_stream_by_owner_too(dataset_dir: Path) -> None:
    started = [
        ServerProcess(
            ["--dataset", f"local={dataset_dir}", "--layout", "flat"], host=f"127.0.0.{host}"
        )
        for host in (8, 9)
    ]

    async def main() -> None:
        addresses = [p.address for p in started if p.address]
        async with AsyncClient(addresses) as client:
            selection = Range(range(0, 2), None)
            got = [n async for n in client.neuron_splits(selection, ["train"], 1)]
            assert [(n.neuron_id.layer_index, n.neuron_id.neuron_index) for n in got] == NEURONS
            # Resumed from the second neuron's cursor: the rest, in order.
            rest = [
                n async for n in client.neuron_splits(selection, ["train"], 1, cursor=got[1].cursor)
            ]
            assert [n.neuron_id for n in rest] == [n.neuron_id for n in got[2:]]

    try:
        asyncio.run(main())
    finally:
        for process in started:
            process.close()
