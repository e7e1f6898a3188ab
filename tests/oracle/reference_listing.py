"""Lists a dataset with the reference Python loader, for the oracle test.

Usage: reference_listing.py DATASET_DIR LAYER/NEURON [LAYER/NEURON ...]

Prints one JSON object: {"layers": get_sorted_layers, "neurons": {layer:
get_sorted_neuron_indices}, "exists": {"LAYER/NEURON": neuron_exists}}. These functions read
the `neurons/` layout.
"""

import json
import sys

from neuron_explainer.activations.activations import (
    get_sorted_layers,
    get_sorted_neuron_indices,
    neuron_exists,
)


def main():
    root, probes = sys.argv[1], sys.argv[2:]
    layers = get_sorted_layers(root)
    out = {
        "layers": [int(layer) for layer in layers],
        "neurons": {layer: get_sorted_neuron_indices(root, layer) for layer in layers},
        "exists": {
            probe: neuron_exists(root, *probe.split("/")) for probe in probes
        },
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
