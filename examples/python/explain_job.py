#!/usr/bin/env python3
"""An explainer-style job over the activation service, in Python.

Reads the train and valid splits of a block of neurons in one `StreamNeuronSplits` call and
prints, per neuron, how many records each split holds and the top train excerpt with its max
activation, as an explainer would pick it. A neuron the server cannot serve is reported and
skipped; a stream that fails with UNAVAILABLE is resumed after the last neuron received.

    examples/python/generate.sh
    .venv/bin/python examples/python/explain_job.py --server 127.0.0.1:50051 --layers 0..2 -n 5
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

# The stubs that generate.sh writes (not committed).
sys.path.insert(0, str(Path(__file__).resolve().parent / "generated"))

from google.rpc import error_details_pb2, status_pb2  # noqa: E402
from neuron_explainer.activations.v1 import activations_pb2 as pb  # noqa: E402
from neuron_explainer.activations.v1 import activations_pb2_grpc as pb_grpc  # noqa: E402

SPLITS = (pb.SPLIT_TRAIN, pb.SPLIT_VALID)


@dataclass
class Neuron:
    """One neuron's records, reassembled from its messages, or why it cannot be served."""

    layer: int
    index: int
    records: dict[int, list[pb.ActivationRecord]] = field(default_factory=dict)
    error: status_pb2.Status | None = None


def neuron_splits(
    stub: pb_grpc.ActivationServiceStub,
    request: pb.StreamNeuronSplitsRequest,
    attempts: int,
) -> Iterator[Neuron]:
    """Yields each neuron of the selection once, resuming the stream after UNAVAILABLE."""
    for attempt in range(1, attempts + 1):
        current: Neuron | None = None
        try:
            for message in stub.StreamNeuronSplits(request):
                if current is None:
                    current = Neuron(message.neuron_id.layer_index, message.neuron_id.neuron_index)
                if message.HasField("error"):
                    current.error = message.error
                for split in message.splits:
                    current.records.setdefault(split.split, []).extend(
                        entry.record for entry in split.records
                    )
                if not message.continues:
                    yield current
                    current = None
                    request.cursor = message.cursor
            return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts:
                raise
            # A neuron cut off mid-way is read again in full: cursors only follow whole neurons.
            delay = retry_delay(error, default=0.2 * 2**attempt)
            print(
                f"stream failed ({error.code().name}: {error.details()}); resuming in "
                f"{delay:.1f}s (attempt {attempt + 1} of {attempts})",
                file=sys.stderr,
            )
            time.sleep(delay)


def rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """The `google.rpc.Status` a failed call carries in its trailers, if any."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def retry_delay(error: grpc.RpcError, default: float) -> float:
    """The server's `RetryInfo` delay (at most 10 s), else `default`."""
    status = rich_status(error)
    for detail in status.details if status else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return min(info.retry_delay.ToTimedelta().total_seconds(), 10.0)
    return default


def describe(status: status_pb2.Status) -> str:
    """`CODE_NAME: message [REASON]`, as the server's rich error model spells it."""
    code = next((c.name for c in grpc.StatusCode if c.value[0] == status.code), str(status.code))
    reasons = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reasons.append(info.reason)
    return f"{code}: {status.message}" + (f" [{', '.join(reasons)}]" if reasons else "")


def relu_max(record: pb.ActivationRecord) -> float:
    """max(relu(a)) over the record's tokens (NaN, a null activation, counts as 0)."""
    return max((a for a in record.activations if a > 0), default=0.0)


def report(neuron: Neuron) -> str:
    name = f"{neuron.layer}/{neuron.index}"
    if neuron.error is not None:
        return f"{name}: error {describe(neuron.error)}"
    train = neuron.records.get(pb.SPLIT_TRAIN, [])
    valid = neuron.records.get(pb.SPLIT_VALID, [])
    line = f"{name}: {len(train)} train, {len(valid)} valid records"
    if not train:
        return line + "; no train excerpt"
    top = max(train, key=relu_max)
    excerpt = "".join(top.tokens)
    if len(excerpt) > 80:
        excerpt = excerpt[:77] + "..."
    return f"{line}; top train excerpt (max activation {relu_max(top):.4f}): {excerpt!r}"


def parse_range(text: str) -> tuple[int, int]:
    """`A..B` (end exclusive) or `A` (just A)."""
    start, sep, end = text.partition("..")
    try:
        return (int(start), int(end)) if sep else (int(start), int(start) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A..B or A, got {text!r}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="HOST:PORT of the activation service")
    parser.add_argument("--dataset", default="", help="dataset name (default: the server's)")
    parser.add_argument("--layers", required=True, type=parse_range, help="layers A..B")
    parser.add_argument(
        "--neurons", type=parse_range, help="neurons C..D of each layer (default: all listed)"
    )
    parser.add_argument("-n", type=int, help="n_examples_per_split (default: as many as fit)")
    parser.add_argument("--attempts", type=int, default=5, help="stream attempts on UNAVAILABLE")
    args = parser.parse_args()

    selection = pb.NeuronRange(layer_start=args.layers[0], layer_end=args.layers[1])
    if args.neurons:
        selection.neuron_start, selection.neuron_end = args.neurons
    request = pb.StreamNeuronSplitsRequest(
        dataset=args.dataset,
        selection=pb.NeuronSelection(range=selection),
        splits=SPLITS,
        slice_params=pb.ActivationRecordSliceParams(n_examples_per_split=args.n),
    )
    served = failed = 0
    with grpc.insecure_channel(args.server) as channel:
        stub = pb_grpc.ActivationServiceStub(channel)
        try:
            for neuron in neuron_splits(stub, request, args.attempts):
                print(report(neuron), flush=True)
                failed += neuron.error is not None
                served += neuron.error is None
        except grpc.RpcError as error:
            status = rich_status(error)
            print(f"error: {describe(status) if status else error.details()}", file=sys.stderr)
            return 1
    print(f"{served} neurons served, {failed} failed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
