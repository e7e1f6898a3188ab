"""A small explainer-style job written against neuron_explainer's activations module: it loads
neurons, cuts their splits, takes max_activation and formats the train records with the
explainer's normalization. test_dropin.py runs it as written and with only its import switched
to neuron_activations."""

import sys

from neuron_explainer.activations.activation_records import (
    calculate_max_activation,
    format_activation_records,
    normalize_activations,
)
from neuron_explainer.activations.activations import ActivationRecordSliceParams, load_neuron  # SWITCH


def main(dataset_path: str) -> None:
    params = ActivationRecordSliceParams(n_examples_per_split=2)
    for layer, neuron in [(1, 1), (0, 0), (1, 3)]:
        record = load_neuron(layer, neuron, dataset_path)
        train = record.train_activation_records(params)
        valid = record.valid_activation_records(params)
        max_activation = calculate_max_activation(train)
        print(f"neuron {layer}/{neuron}: max {record.max_activation:.6g}, train max {max_activation:.6g}")
        print(format_activation_records(train, max_activation, omit_zeros=True))
        for activation_record in valid:
            print(normalize_activations(activation_record.activations, max_activation))
        print(f"moments {record.mean!r:.8} {record.variance!r:.8} {record.kurtosis!r:.8}")


if __name__ == "__main__":
    main(sys.argv[1])
