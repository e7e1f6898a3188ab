"""Computes the explainer's max activation and normalized activations in Python, for the SDK test.

Usage: reference_explain.py DATASET_DIR LAYER/NEURON CASES_JSON

Loads the neuron with `neuron_explainer.activations.activations.load_neuron` from
`file://DATASET_DIR` and, for each split (n_examples_per_split=None), runs
`neuron_explainer.activations.activation_records.calculate_max_activation` over the split's
records and `normalize_activations` on each record, with that maximum (as the explainer
formats its prompts) and with the record's own maximum (as the simulator does). CASES_JSON is
a JSON list of [activations, max_activation] pairs (NaN literals allowed) to normalize as well,
and to take the maximum of as one record.

Prints one JSON object: {"splits": {"SPLIT": {"max": bits, "records": [{"max": bits,
"by_split_max": [int], "by_own_max": [int]}]}}, "cases": [{"normalized": [int] | "error",
"max": bits | "error"}]}. Maxima are float32 bit patterns: what the service's `float` fields
carry (the maximum of decimals is exactly representable as the float of that decimal).
"""

import json
import struct
import sys

from neuron_explainer.activations.activation_records import (
    calculate_max_activation,
    normalize_activations,
)
from neuron_explainer.activations.activations import (
    ActivationRecord,
    ActivationRecordSliceParams,
    load_neuron,
)

SPLITS = ("train", "calibration", "valid", "test")


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def main():
    root, name, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    layer, neuron = name.split("/")
    record = load_neuron(layer, neuron, dataset_path="file://" + root)
    params = ActivationRecordSliceParams(n_examples_per_split=None)
    splits = {}
    for split in SPLITS:
        records = getattr(record, f"{split}_activation_records")(params)
        split_max = calculate_max_activation(records)
        splits[split] = {
            "max": f32_bits(split_max),
            "records": [
                {
                    "max": f32_bits(calculate_max_activation([r])),
                    "by_split_max": normalize_activations(r.activations, split_max),
                    "by_own_max": normalize_activations(
                        r.activations, calculate_max_activation([r])
                    ),
                }
                for r in records
            ],
        }
    out_cases = []
    for activations, max_activation in cases:
        case = {}
        try:
            case["normalized"] = normalize_activations(activations, max_activation)
        except (ValueError, OverflowError):
            case["normalized"] = "error"
        try:
            one = ActivationRecord(tokens=[""] * len(activations), activations=activations)
            case["max"] = f32_bits(calculate_max_activation([one]))
        except ValueError:
            case["max"] = "error"
        out_cases.append(case)
    json.dump({"splits": splits, "cases": out_cases}, sys.stdout)


if __name__ == "__main__":
    main()
