"""Checks the service, read through the generated Python gRPC client, against the reference loader.

Usage: python_client.py --server HOST:PORT --data DIR --layers A..B [--neurons C..D]
                        [--n none,0,5,...] [--dataset NAME]

DIR is the dataset the server serves, in the flat layout `load_neuron` reads. The selection is a
`NeuronRange`: layers A..B and, with --neurons, neurons C..D of each (every one read, a missing
file included); without it, every neuron file of each layer. For each n (`none` for
n_examples_per_split=None), one `StreamNeuronSplits` call reads all four splits (in a different
order for each n) and another the train split alone; multi-part neurons (`continues`) are
reassembled and the framing checked (neuron order, split order, cursors). Each neuron is
compared with what `load_neuron` and the `*_activation_records` methods compute from DIR: the
records token for token, activations as float32 bit for bit (a null activation is NaN, and NaN
equals NaN), the dfa fields, and each record's source and index in it. Where the reference
raises AssertionError for a requested split, the neuron must carry FAILED_PRECONDITION
(NOT_ENOUGH_RECORDS); where it finds no file, NOT_FOUND (NEURON_NOT_FOUND). The first stream is
also resumed from a cursor mid-way, which must deliver exactly the neurons after it.

The stubs are the Python package's generated code (python/neuron_activations/_proto).

Prints one JSON object: {"neurons", "streams", "neurons_compared", "records_compared",
"errors_compared", "multi_part_neurons", "resumed_neurons", "mismatches", "first_mismatches"};
exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The package's generated code, importable beside the reference loader.
sys.path.insert(0, str(ROOT / "python"))

import grpc  # noqa: E402
from google.protobuf import descriptor_pool  # noqa: E402
from google.protobuf.message_factory import GetMessageClass  # noqa: E402
from neuron_explainer.activations.activations import (  # noqa: E402
    ActivationRecord,
    ActivationRecordSliceParams,
    NeuronRecord,
    load_neuron,
)
from neuron_activations._proto import activations_pb2 as pb  # noqa: E402
from neuron_activations._proto import activations_pb2_grpc as pb_grpc  # noqa: E402
from neuron_activations._proto import error_details_pb2, status_pb2  # noqa: E402

METHODS = {
    pb.SPLIT_TRAIN: "train_activation_records",
    pb.SPLIT_CALIBRATION: "calibration_activation_records",
    pb.SPLIT_VALID: "valid_activation_records",
    pb.SPLIT_TEST: "test_activation_records",
}
ERROR_DOMAIN = "activations.neuron-explainer"

Key = tuple[int, int]


@dataclass
class Received:
    """One neuron as the stream delivered it, reassembled from its messages."""

    key: Key
    splits: list[pb.SplitRecords] = field(default_factory=list)
    error: status_pb2.Status | None = None
    parts: int = 0
    cursor: str = ""


class Checker:
    """Reads streams and compares them with the reference; zips are lenient on purpose: a
    length difference is reported as a mismatch (checked alongside), not raised."""

    def __init__(self, stub: pb_grpc.ActivationServiceStub) -> None:
        self.stub = stub
        self.counts = dict.fromkeys(
            [
                "streams",
                "neurons_compared",
                "records_compared",
                "errors_compared",
                "multi_part_neurons",
                "resumed_neurons",
            ],
            0,
        )
        self.mismatches: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.mismatches.append(what)
        return ok

    def read(self, request: pb.StreamNeuronSplitsRequest, context: str) -> list[Received]:
        """Reads one stream, reassembling the neurons and checking the framing."""
        self.counts["streams"] += 1
        neurons: list[Received] = []
        current: Received | None = None
        for message in self.stub.StreamNeuronSplits(request, timeout=300):
            key = (message.neuron_id.layer_index, message.neuron_id.neuron_index)
            where = f"{context} {key[0]}/{key[1]}"
            if current is None:
                current = Received(key)
                current.splits = [pb.SplitRecords(split=s.split) for s in message.splits]
            self.check(current.key == key, f"{where}: a part of neuron {current.key}")
            current.parts += 1
            if message.HasField("error"):
                alone = current.parts == 1 and not message.splits and not message.continues
                self.check(alone, f"{where}: an error with records or other parts")
                current.error = message.error
            else:
                order = [s.split for s in message.splits]
                self.check(order == list(request.splits), f"{where}: splits {order}")
                for whole, part in zip(current.splits, message.splits, strict=False):
                    whole.records.extend(part.records)
            if message.continues:
                self.check(not message.cursor, f"{where}: a cursor inside a neuron")
                continue
            self.check(bool(message.cursor), f"{where}: no cursor on a neuron's last message")
            current.cursor = message.cursor
            self.counts["multi_part_neurons"] += current.parts > 1
            neurons.append(current)
            current = None
        self.check(current is None, f"{context}: the stream ended inside a neuron")
        return neurons

    def compare(
        self,
        got: Received,
        reference: NeuronRecord | None,
        params: ActivationRecordSliceParams,
        splits: list[int],
        context: str,
    ) -> None:
        self.counts["neurons_compared"] += 1
        if reference is None:
            self.expect_error(got, grpc.StatusCode.NOT_FOUND, "NEURON_NOT_FOUND", context)
            return
        try:
            want = [getattr(reference, METHODS[split])(params) for split in splits]
        except AssertionError:
            code = grpc.StatusCode.FAILED_PRECONDITION
            self.expect_error(got, code, "NOT_ENOUGH_RECORDS", context)
            return
        if not self.check(got.error is None, f"{context}: error {got.error} where Python serves"):
            return
        # Slicing keeps the objects, so each expected record's place in its source is known.
        place = {
            id(r): (pb.RECORD_SOURCE_TOP_ACTIVATING, i)
            for i, r in enumerate(reference.most_positive_activation_records)
        }
        place.update(
            {id(r): (pb.RECORD_SOURCE_RANDOM, i) for i, r in enumerate(reference.random_sample)}
        )
        for split, got_split, want_records in zip(splits, got.splits, want, strict=False):
            where = f"{context} {pb.Split.Name(split)}"
            self.check(got_split.split == split, f"{where}: carries split {got_split.split}")
            counts = (len(got_split.records), len(want_records))
            self.check(counts[0] == counts[1], f"{where}: {counts[0]} records, Python {counts[1]}")
            pairs = zip(got_split.records, want_records, strict=False)
            for i, (entry, record) in enumerate(pairs):
                self.counts["records_compared"] += 1
                self.compare_record(entry, record, place[id(record)], f"{where} record {i}")

    def compare_record(
        self,
        entry: pb.SplitActivationRecord,
        want: ActivationRecord,
        place: tuple[int, int],
        where: str,
    ) -> None:
        got = entry.record
        got_place = (entry.source, entry.source_index)
        self.check(got_place == place, f"{where}: from {got_place}, Python {place}")
        self.check(list(got.tokens) == want.tokens, f"{where}: tokens differ")
        self.check(len(got.activations) == len(want.activations), f"{where}: activation count")
        for j, (a, b) in enumerate(zip(got.activations, want.activations, strict=False)):
            self.check(same_float32(a, b), f"{where} token {j}: activation {a!r}, Python {b!r}")
        self.check(list(got.dfa_values) == (want.dfa_values or []), f"{where}: dfa_values")
        target = got.dfa_target_index if got.HasField("dfa_target_index") else None
        self.check(target == want.dfa_target_index, f"{where}: dfa_target_index")

    def expect_error(
        self, got: Received, code: grpc.StatusCode, reason: str, context: str
    ) -> None:
        self.counts["errors_compared"] += 1
        error = got.error
        if not self.check(error is not None, f"{context}: served where Python fails"):
            return
        ok = error.code == code.value[0]
        self.check(ok, f"{context}: code {error.code} ({error.message}), want {code.name}")
        info = error_details_pb2.ErrorInfo()
        found = any(detail.Unpack(info) for detail in error.details)
        ok = found and info.domain == ERROR_DOMAIN and info.reason == reason
        self.check(ok, f"{context}: ErrorInfo {info if found else None}, want reason {reason}")
        detail = (
            error_details_pb2.ResourceInfo()
            if code == grpc.StatusCode.NOT_FOUND
            else error_details_pb2.PreconditionFailure()
        )
        found = any(d.Unpack(detail) for d in error.details)
        self.check(found, f"{context}: no {detail.DESCRIPTOR.name} detail")


def same_float32(got: float, want: float | None) -> bool:
    """The received float is Python's value rounded to float32, bit for bit; NaN equals NaN."""
    want = math.nan if want is None else want
    if math.isnan(got) or math.isnan(want):
        return math.isnan(got) and math.isnan(want)
    return struct.pack("<f", got) == struct.pack("<f", want)


def selection_keys(data: Path, layers: range, neurons: range | None) -> list[Key]:
    """The neurons a `NeuronRange` of these layers and neurons selects, in order."""
    if neurons is not None:
        return [(layer, neuron) for layer in layers for neuron in neurons]
    keys = []
    for layer in layers:
        folder = data / str(layer)
        stems = [p.stem for p in folder.glob("*.json") if p.stem.isdigit()]
        keys += [(layer, neuron) for neuron in sorted(map(int, stems))]
    return keys


def load_reference(data: Path, key: Key) -> NeuronRecord | None:
    """`load_neuron`, or None where it finds no file."""
    try:
        return load_neuron(key[0], key[1], dataset_path=f"file://{data.resolve()}")
    except urllib.error.URLError as error:
        if isinstance(error.reason, FileNotFoundError):
            return None
        raise


def serialized(neuron: Received) -> bytes:
    """The neuron's records or error as bytes, maps in key order (also in the error's details)."""
    if neuron.error is None:
        return b"".join(s.SerializeToString(deterministic=True) for s in neuron.splits)
    error = status_pb2.Status()
    error.CopyFrom(neuron.error)
    for detail in error.details:
        name = detail.type_url.rpartition("/")[2]
        message = GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(name))()
        detail.Unpack(message)
        detail.value = message.SerializeToString(deterministic=True)
    return error.SerializeToString(deterministic=True)


def span(text: str) -> range:
    start, _, end = text.partition("..")
    return range(int(start), int(end))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="HOST:PORT")
    parser.add_argument("--data", required=True, type=Path, help="the dataset directory")
    parser.add_argument("--layers", required=True, type=span, help="A..B")
    parser.add_argument("--neurons", type=span, help="C..D (default: every file)")
    parser.add_argument("--n", default="none,0,1,2,5,13", help="n_examples_per_split values")
    parser.add_argument("--dataset", default="")
    args = parser.parse_args()

    keys = selection_keys(args.data, args.layers, args.neurons)
    references = {key: load_reference(args.data, key) for key in keys}
    neuron_range = pb.NeuronRange(layer_start=args.layers.start, layer_end=args.layers.stop)
    if args.neurons is not None:
        neuron_range.neuron_start, neuron_range.neuron_end = args.neurons.start, args.neurons.stop
    all_splits = list(METHODS)
    with grpc.insecure_channel(args.server) as channel:
        checker = Checker(pb_grpc.ActivationServiceStub(channel))
        for i, n_text in enumerate(args.n.split(",")):
            params = ActivationRecordSliceParams(
                n_examples_per_split=None if n_text == "none" else int(n_text)
            )
            rotated = all_splits[i % 4 :] + all_splits[: i % 4]
            for splits in (rotated[::-1] if i % 2 else rotated, [pb.SPLIT_TRAIN]):
                context = f"n={n_text} splits={[pb.Split.Name(s) for s in splits]}"
                request = pb.StreamNeuronSplitsRequest(
                    dataset=args.dataset,
                    selection=pb.NeuronSelection(range=neuron_range),
                    splits=splits,
                    slice_params=pb.ActivationRecordSliceParams(
                        n_examples_per_split=params.n_examples_per_split
                    ),
                )
                received = checker.read(request, context)
                got_keys = [neuron.key for neuron in received]
                if not checker.check(got_keys == keys, f"{context}: neurons {got_keys}"):
                    continue
                for neuron in received:
                    name = f"{context} {neuron.key[0]}/{neuron.key[1]}"
                    checker.compare(neuron, references[neuron.key], params, splits, name)
                if checker.counts["streams"] == 1 and len(received) >= 2:
                    k = len(received) // 2
                    request.cursor = received[k].cursor
                    resumed = checker.read(request, f"{context} resumed")
                    checker.counts["resumed_neurons"] += len(resumed)
                    checker.check(
                        [(r.key, serialized(r)) for r in resumed]
                        == [(r.key, serialized(r)) for r in received[k + 1 :]],
                        f"{context}: resumed after {received[k].key}, not the rest of the stream",
                    )
    summary = {
        "neurons": len(keys),
        **checker.counts,
        "mismatches": len(checker.mismatches),
        "first_mismatches": checker.mismatches[:20],
    }
    print(json.dumps(summary, indent=1))
    return 1 if checker.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
