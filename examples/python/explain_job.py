#!/usr/bin/env python3
"""An explainer-style job over the activation service, in Python, with the package
`neuron_activations` (python/ in this repository).

Reads the train and valid splits of a block of neurons in one bulk stream and prints, per
neuron, how many records each split holds and the top train excerpt with its max activation, as
an explainer would pick it. A neuron the server cannot serve is reported and skipped; a stream
that fails with UNAVAILABLE is resumed by the package after the last neuron received.

    pip install ./python          # or run from the repository: it finds python/ by itself
    python examples/python/explain_job.py --server 127.0.0.1:50051 --layers 0..2 -n 5
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

try:
    import neuron_activations
except ImportError:  # not installed: the package in this repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
    import neuron_activations

from neuron_activations import ActivationRecord, Client, NeuronSplits, Range, errors


def relu_max(record: ActivationRecord) -> float:
    """max(relu(a)) over the record's tokens (NaN, a null activation, counts as 0)."""
    return max((a for a in record.activations if a > 0), default=0.0)


def report(neuron: NeuronSplits) -> str:
    name = f"{neuron.neuron_id.layer_index}/{neuron.neuron_id.neuron_index}"
    if neuron.error is not None:
        # CODE: message [REASON]
        return f"{name}: error {neuron.error}"
    train = neuron.splits.get("train", [])
    valid = neuron.splits.get("valid", [])
    line = f"{name}: {len(train)} train, {len(valid)} valid records"
    if not train:
        return line + "; no train excerpt"
    top = max(train, key=relu_max)
    excerpt = "".join(top.tokens)
    if len(excerpt) > 80:
        excerpt = excerpt[:77] + "..."
    return f"{line}; top train excerpt (max activation {relu_max(top):.4f}): {excerpt!r}"


def parse_range(text: str) -> range:
    """`A..B` (end exclusive) or `A` (just A)."""
    start, sep, end = text.partition("..")
    try:
        return range(int(start), int(end)) if sep else range(int(start), int(start) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A..B or A, got {text!r}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--server", required=True, help="HOST:PORT of the activation service")
    parser.add_argument("--dataset", default=None, help="dataset name (default: the server's)")
    parser.add_argument("--layers", required=True, type=parse_range, help="layers A..B")
    parser.add_argument(
        "--neurons", type=parse_range, help="neurons C..D of each layer (default: all listed)"
    )
    parser.add_argument("-n", type=int, help="n_examples_per_split (default: as many as fit)")
    parser.add_argument("--attempts", type=int, default=5, help="stream attempts on UNAVAILABLE")
    args = parser.parse_args()
    # The package says on its logger when a stream fails and resumes.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    client = Client(args.server, dataset=args.dataset, retries=args.attempts)
    selection = Range(layers=args.layers, neurons=args.neurons)
    served = failed = 0
    try:
        for neuron in client.neuron_splits(selection, ["train", "valid"], args.n):
            print(report(neuron), flush=True)
            failed += neuron.error is not None
            served += neuron.error is None
    except errors.ActivationsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"{served} neurons served, {failed} failed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
