"""Times the reference Python loader the way a Python job uses it, for comparison with the service.

Usage: python_reference.py DATASET_DIR [--neurons N] [--threads T] [-n N_EXAMPLES]
                           [--base-url URL]

For each of the first N neurons of DATASET_DIR (flat layout, `LAYER/NEURON.json`, in numeric
order) it calls `neuron_explainer.activations.activations.load_neuron(layer, neuron,
dataset_path=URL)` and then the four `*_activation_records` methods with
`ActivationRecordSliceParams(n_examples_per_split=n)`, as an explainer/simulator job does.

`load_neuron` fetches `"/".join([dataset_path, layer, f"{neuron}.json"])` with
`urllib.request.urlopen` and decodes the bytes with `neuron_explainer.fast_dataclasses.loads`,
so it reads plain `http://` as it reads the public HTTPS container. Unless `--base-url` is
given, the script serves DATASET_DIR itself with `python -m http.server` on a free port of
127.0.0.1 (a separate process, so the server does not share the loader's interpreter lock).

With `--threads T` (T > 1) the neurons are loaded by a `ThreadPoolExecutor` of T threads, else
one after the other. The last line printed is one JSON object:
{"neurons": N, "threads": T, "n_examples_per_split": n, "seconds": s, "neurons_per_s": x,
 "mb_per_s": y, "records": r}; `mb_per_s` counts the neuron files' bytes (10^6 bytes per MB).
"""

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from neuron_explainer.activations.activations import (
    ActivationRecordSliceParams,
    load_neuron,
)

SPLITS = ("train", "calibration", "valid", "test")


def numeric_entries(directory, suffix):
    """Numbers named by the entries `{number}{suffix}` of `directory`, sorted numerically, as the
    module lists layers (directories, no suffix) and neurons (`.json` files)."""
    stems = (
        p.name.removesuffix(suffix)
        for p in directory.iterdir()
        if p.name.endswith(suffix) and p.is_dir() == (suffix == "")
    )
    return sorted(int(s) for s in stems if s.isascii() and s.isdigit())


def neurons_of(root, limit):
    """The first `limit` (layer, neuron) pairs of a flat-layout dataset, with their file sizes."""
    found = []
    for layer in numeric_entries(root, ""):
        for neuron in numeric_entries(root / str(layer), ".json"):
            found.append((layer, neuron, (root / str(layer) / f"{neuron}.json").stat().st_size))
            if len(found) == limit:
                return found
    return found


@contextmanager
def http_server(directory):
    """Serves `directory` with Python's stock web server on a free port; yields its base URL."""
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
         "--directory", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # one log line per request
        text=True,
    )
    try:
        # "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        banner = server.stdout.readline()
        if " port " not in banner:
            raise RuntimeError(f"http.server did not start: {banner!r}")
        port = int(banner.split(" port ")[1].split()[0])
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


def load_and_split(base_url, layer, neuron, params):
    """What a job does per neuron: load it, then cut the four splits. Returns the record count."""
    record = load_neuron(layer, neuron, dataset_path=base_url)
    return sum(len(getattr(record, f"{split}_activation_records")(params)) for split in SPLITS)


def run(base_url, neurons, threads, params):
    """Loads and splits every neuron; returns (seconds, total records)."""
    start = time.perf_counter()
    if threads > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            counts = list(pool.map(lambda n: load_and_split(base_url, n[0], n[1], params), neurons))
    else:
        counts = [load_and_split(base_url, layer, neuron, params) for layer, neuron, _ in neurons]
    return time.perf_counter() - start, sum(counts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset_dir", type=Path, help="flat-layout dataset: LAYER/NEURON.json")
    parser.add_argument("--neurons", type=int, default=100, help="how many neurons (default 100)")
    parser.add_argument("--threads", type=int, default=1, help="thread pool size (1: sequential)")
    parser.add_argument("-n", type=int, default=5, help="n_examples_per_split (default 5)")
    parser.add_argument("--base-url", help="read from this URL instead of serving dataset_dir")
    args = parser.parse_args()

    neurons = neurons_of(args.dataset_dir, args.neurons)
    if not neurons:
        parser.error(f"no LAYER/NEURON.json files under {args.dataset_dir}")
    params = ActivationRecordSliceParams(n_examples_per_split=args.n)

    if args.base_url:
        seconds, records = run(args.base_url.rstrip("/"), neurons, args.threads, params)
    else:
        with http_server(args.dataset_dir) as base_url:
            seconds, records = run(base_url, neurons, args.threads, params)

    total_bytes = sum(size for _, _, size in neurons)
    print(json.dumps({
        "neurons": len(neurons),
        "threads": args.threads,
        "n_examples_per_split": args.n,
        "seconds": round(seconds, 3),
        "neurons_per_s": round(len(neurons) / seconds, 2),
        "mb_per_s": round(total_bytes / seconds / 1e6, 2),
        "records": records,
    }))


if __name__ == "__main__":
    main()
