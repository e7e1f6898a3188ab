"""The Python package against the reference loader, in one run, on the same files.

Usage: python_package.py DATASET_DIR [--server-bin PATH] [--neurons N] [--threads T] [-n N]

DATASET_DIR is a flat-layout dataset (`LAYER/NEURON.json`, with the `manifest.json` that
`activations-datagen` writes, which the server reads from the web server). A plain HTTP server (`python -m http.server`, a process of its
own) serves it; the reference loader (`neuron_explainer.activations.activations.load_neuron`)
reads it from there, and so does a release `activations-server` (its web backend), so both read
the same files over the same local web server.

Each reader does what a drop-in job does per neuron: `load_neuron(layer, neuron)` then the four
`*_activation_records` methods with `ActivationRecordSliceParams(n)`, over the first N neurons,
one thread and a pool of T; the package also as a job written for it would, four
`Client.activation_records` calls (the splits alone, without the whole record). The package runs against a server without cache (cold: every neuron
read from the web server and parsed by the server) and against a server whose cache holds them
(cached). Then `Client.neuron_splits` (one bulk stream, the four splits) gives bulk neurons/s
from Python. Last, where the Python side's time goes per neuron: the call (gRPC receive and
protobuf decode, in grpcio's C core and upb) against building the dataclasses
(`record_from_pb`), timed apart on cached neurons.

Prints a markdown table and, last, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from neuron_explainer.activations import activations as reference  # noqa: E402

import neuron_activations  # noqa: E402
from neuron_activations import Client, Range  # noqa: E402
from neuron_activations._proto import activations_pb2 as pb  # noqa: E402
from neuron_activations.records import record_from_pb  # noqa: E402

SPLITS = ("train", "calibration", "valid", "test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def http_server(directory: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield url
    finally:
        process.kill()
        process.wait()


@contextmanager
def activations_server(binary: Path, uri: str, cache_bytes: int) -> Iterator[str]:
    process = subprocess.Popen(
        [str(binary), "--listen", "127.0.0.1:0", "--dataset", f"bench={uri}",
         "--cache-bytes", str(cache_bytes), "--log", "warn"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    address = None
    for line in process.stdout:
        if '"event":"ready"' in line:
            address = json.loads(line)["address"]
            break
    if address is None:
        raise RuntimeError(f"{binary} did not start")
    try:
        yield str(address)
    finally:
        process.kill()
        process.wait()


def neuron_ids(directory: Path, count: int) -> list[tuple[int, int]]:
    manifest = json.loads((directory / "manifest.json").read_text())
    ids = [
        (entry["layer"], neuron)
        for entry in manifest["layers"]
        for neuron in range(entry["neuron_count"])
    ]
    return ids[:count]


def timed(ids: list[tuple[int, int]], threads: int, read: Callable[[int, int], int]) -> dict[str, float]:
    """Neurons a second reading `ids` with `read` (which returns the records it got)."""
    start = time.perf_counter()
    if threads <= 1:
        records = sum(read(layer, neuron) for layer, neuron in ids)
    else:
        with ThreadPoolExecutor(threads) as pool:
            records = sum(pool.map(lambda key: read(*key), ids))
    seconds = time.perf_counter() - start
    return {"neurons_per_s": len(ids) / seconds, "seconds": seconds, "records": records}


def splits_of(record: Any, n: int) -> int:
    params = reference.ActivationRecordSliceParams(n_examples_per_split=n)
    return sum(len(getattr(record, f"{split}_activation_records")(params)) for split in SPLITS)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("--server-bin", type=Path, default=ROOT / "target/release/activations-server")
    parser.add_argument("--neurons", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("-n", type=int, default=5)
    args = parser.parse_args()
    ids = neuron_ids(args.dataset_dir, args.neurons)
    results: dict[str, Any] = {"neurons": len(ids), "threads": args.threads, "n": args.n}
    rows: list[tuple[str, float, float]] = []

    with http_server(args.dataset_dir) as url:
        def read_reference(layer: int, neuron: int) -> int:
            return splits_of(reference.load_neuron(layer, neuron, url), args.n)

        for threads in (1, args.threads):
            results[f"reference_{threads}"] = timed(ids, threads, read_reference)

        for name, cache in (("cold", 0), ("cached", 1 << 30)):
            with activations_server(args.server_bin, url, cache) as address:
                client = Client(address, dataset="bench")

                def read_package(layer: int, neuron: int, client: Client = client) -> int:
                    return splits_of(client.load_neuron(layer, neuron), args.n)

                def read_splits(layer: int, neuron: int, client: Client = client) -> int:
                    return sum(
                        len(client.activation_records(layer, neuron, split, args.n))
                        for split in SPLITS
                    )

                if name == "cached":
                    timed(ids, args.threads, read_package)  # fills the cache
                for threads in (1, args.threads):
                    results[f"{name}_{threads}"] = timed(ids, threads, read_package)
                    results[f"{name}_splits_{threads}"] = timed(ids, threads, read_splits)

                if name == "cached":
                    layers = sorted({layer for layer, _ in ids})
                    last_layer_neurons = max(neuron for layer, neuron in ids if layer == layers[-1])
                    if len(layers) == 1:
                        selection: Any = Range(range(layers[0], layers[0] + 1), range(0, last_layer_neurons + 1))
                    else:
                        selection = list(ids)
                    start = time.perf_counter()
                    got = sum(
                        1 for neuron in client.neuron_splits(selection, list(SPLITS), args.n)
                        if neuron.error is None
                    )
                    seconds = time.perf_counter() - start
                    results["bulk"] = {"neurons_per_s": got / seconds, "seconds": seconds}

                    # Where the time goes: the call alone, then building the dataclasses.
                    stub = client._pool.servers[0].stub  # noqa: SLF001 - measuring the layers
                    messages = []
                    start = time.perf_counter()
                    for layer, neuron in ids:
                        request = pb.GetNeuronRecordRequest(
                            dataset="bench", neuron_id=pb.NeuronId(layer_index=layer, neuron_index=neuron)
                        )
                        messages.append(stub.GetNeuronRecord(request))
                    call = (time.perf_counter() - start) / len(ids)
                    start = time.perf_counter()
                    for message in messages:
                        record_from_pb(message)
                    build = (time.perf_counter() - start) / len(ids)
                    results["per_neuron_ms"] = {"call_and_decode": call * 1e3, "dataclasses": build * 1e3}
                client.close()

    for label, key in [
        ("reference loader", "reference"),
        ("package, server without cache", "cold"),
        ("package, server cache holding them", "cached"),
        ("package, 4 x activation_records, no cache", "cold_splits"),
        ("package, 4 x activation_records, cached", "cached_splits"),
    ]:
        one = results[f"{key}_1"]["neurons_per_s"]
        pool = results[f"{key}_{args.threads}"]["neurons_per_s"]
        rows.append((label, one, pool))
    ref_one, ref_pool = rows[0][1], rows[0][2]
    print(f"{len(ids)} neurons, load_neuron + 4 splits (n={args.n}), "
          f"{'with' if neuron_activations.USING_NEURON_EXPLAINER else 'without'} neuron_explainer's dataclasses\n")
    print(f"| reader | 1 thread, neurons/s | {args.threads} threads, neurons/s | vs reference, 1 thread | vs reference, {args.threads} threads |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, one, pool in rows:
        print(f"| {label} | {one:.1f} | {pool:.1f} | {one / ref_one:.1f}x | {pool / ref_pool:.1f}x |")
    bulk = results["bulk"]["neurons_per_s"]
    print(f"| package, one bulk stream (cached) | {bulk:.1f} | | {bulk / ref_one:.1f}x | {bulk / ref_pool:.1f}x |")
    per = results["per_neuron_ms"]
    print(f"\nPer neuron on the Python side (cached): call and protobuf decode {per['call_and_decode']:.2f} ms, "
          f"building the dataclasses {per['dataclasses']:.2f} ms")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
