"""Fixtures: a dataset of real and edited public neuron files, served two ways: by a real
``activations-server`` (the package's side) and by a plain HTTP server (the reference loader's
side, which reads files over HTTP as it reads the public data)."""

from __future__ import annotations

import copy
import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "fixtures" / "gpt2-xl" / "collated-activations" / "1" / "1.json"
if not REAL.exists():
    REAL = ROOT / "data" / "gpt2-xl-sample" / "collated-activations" / "1" / "1.json"


def real_record() -> dict[str, Any]:
    return json.loads(REAL.read_text())


def edited(layer: int, neuron: int, **changes: Any) -> dict[str, Any]:
    """The real record, renamed to (layer, neuron), with some fields changed."""
    record = copy.deepcopy(real_record())
    record["neuron_id"] = {"dataclass_name": "NeuronId", "layer_index": layer, "neuron_index": neuron}
    for name, value in changes.items():
        record[name] = value(record[name]) if callable(value) else value
    return record


def dataset_records() -> dict[tuple[int, int], dict[str, Any]]:
    """Layer 0: records too short for some splits (where the seed asserts) and missing moments;
    layer 1: the real file at 1/1 and a copy at 1/3 (1/2 is missing)."""
    return {
        (0, 0): edited(
            0,
            0,
            most_positive_activation_records=lambda r: r[:10],
            random_sample=lambda r: r[:6],
        ),
        (0, 1): edited(0, 1, random_sample=lambda r: r[:3], mean=None, kurtosis=None),
        (0, 2): edited(0, 2, random_sample=[], quantile_boundaries=None, random_sample_by_quantile=None),
        (1, 1): real_record(),
        (1, 3): edited(1, 3),
    }


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files, in the flat layout (LAYER/NEURON.json, as load_neuron reads them) and again
    under neurons/ (as the seed's listing functions read them)."""
    root = tmp_path_factory.mktemp("dataset")
    for (layer, neuron), record in dataset_records().items():
        for base in (root, root / "neurons"):
            path = base / str(layer) / f"{neuron}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            if (layer, neuron) == (1, 1):
                shutil.copyfile(REAL, path)
            else:
                path.write_text(json.dumps(record))
    return root


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="session")
def http_url(dataset_dir: Path) -> Iterator[str]:
    """The dataset over plain HTTP, for the reference loader."""
    handler = functools.partial(_QuietHandler, directory=str(dataset_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def server_binary() -> Path:
    given = os.environ.get("ACTIVATIONS_SERVER_BIN")
    binary = Path(given) if given else ROOT / "target" / "debug" / "activations-server"
    if not binary.exists():
        pytest.fail(
            f"{binary} does not exist: build it with `cargo build -p activations-server` "
            "or set ACTIVATIONS_SERVER_BIN"
        )
    return binary


class ServerProcess:
    """A real activations-server, started on 127.0.0.x:0, stopped on close."""

    def __init__(self, args: list[str], host: str = "127.0.0.1") -> None:
        self.process = subprocess.Popen(
            [str(server_binary()), "--listen", f"{host}:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        self.address: Optional[str] = None
        self.metrics_address: Optional[str] = None
        for line in self.process.stdout:
            if line.startswith("{") and '"event":"ready"' in line:
                ready = json.loads(line)
                self.address = ready["address"]
                self.metrics_address = ready.get("metrics_address")
                break
        if self.address is None:
            raise RuntimeError("activations-server exited before it was ready")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture(scope="session")
def server(dataset_dir: Path) -> Iterator[str]:
    """The address of a real server of the dataset, as dataset `local` (the default)."""
    process = ServerProcess(["--dataset", f"local={dataset_dir}", "--layout", "flat"])
    assert process.address is not None
    yield process.address
    process.close()


@pytest.fixture(scope="session")
def web_server(http_url: str) -> Iterator[str]:
    """A real server reading the same files over HTTP, as dataset `web`, so the dataset's URI is
    the one the reference loader reads."""
    shape = "?layers=2&neurons=4&layout=flat"
    process = ServerProcess(["--dataset", f"web={http_url}{shape}"])
    assert process.address is not None
    yield process.address
    process.close()
