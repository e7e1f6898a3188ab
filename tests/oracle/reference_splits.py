"""Computes splits with the reference Python loader, for the oracle test.

Usage: reference_splits.py DATASET_DIR N[,N...] LAYER/NEURON [LAYER/NEURON ...]

Each neuron is loaded with `neuron_explainer.activations.activations.load_neuron` from
`file://DATASET_DIR` (the flat layout it reads) and cut with the `*_activation_records`
methods for every split and every n (`none` for n_examples_per_split=None). Prints one JSON
object: {"LAYER/NEURON": {"max_activation": bits | "error", "n=N": {"SPLIT": [records] |
{"error": "AssertionError"}}}}. Floats are printed as IEEE bit patterns so NaN compares
exactly, as float32 bits: what the service's `float` fields carry.
"""

import json
import struct
import sys

from neuron_explainer.activations.activations import (
    ActivationRecordSliceParams,
    load_neuron,
)

SPLITS = ("train", "calibration", "valid", "test")


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", float("nan") if x is None else x))[0]


def records(rs):
    return [
        {"tokens": r.tokens, "activations": [f32_bits(a) for a in r.activations]}
        for r in rs
    ]


def main():
    root, ns, neurons = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
    out = {}
    for name in neurons:
        layer, neuron = name.split("/")
        record = load_neuron(layer, neuron, dataset_path="file://" + root)
        result = {}
        try:
            result["max_activation"] = f32_bits(record.max_activation)
        except ValueError:
            result["max_activation"] = "error"
        for n in ns:
            params = ActivationRecordSliceParams(
                n_examples_per_split=None if n == "none" else int(n)
            )
            by_split = {}
            for split in SPLITS:
                method = getattr(record, f"{split}_activation_records")
                try:
                    by_split[split] = records(method(params))
                except AssertionError:
                    by_split[split] = {"error": "AssertionError"}
            result[f"n={n}"] = by_split
        out[name] = result
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
