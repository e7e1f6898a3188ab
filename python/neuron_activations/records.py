"""The records a client returns: neuron-explainer's own dataclasses when it is installed, so
that ``isinstance`` checks, ``max_activation`` and the split methods of existing code keep
working, and otherwise dataclasses of this package with the same fields and methods.

``None``, NaN and empty stay distinct as in the seed: a moment absent from the file is ``None``,
a NaN moment is NaN, an absent ``random_sample_by_quantile`` is ``None`` and an empty one ``[]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union

from ._proto import activations_pb2 as pb

__all__ = [
    "ActivationRecord",
    "ActivationRecordSliceParams",
    "NeuronId",
    "NeuronRecord",
    "USING_NEURON_EXPLAINER",
    "get_slices_for_splits",
    "record_from_pb",
    "activation_record_from_pb",
]


def get_slices_for_splits(
    splits: list[str], num_activation_records_per_split: int
) -> dict[str, slice]:
    """Equal-sized interleaved slices, one per split, as the seed cuts them:
    ``slice(i, n * len(splits), len(splits))`` for the split at index ``i``."""
    stride = len(splits)
    end = num_activation_records_per_split * stride
    return {split: slice(index, end, stride) for index, split in enumerate(splits)}


@dataclass
class _ActivationRecord:
    """Collated lists of tokens and their activations for a single neuron."""

    tokens: list[str]
    """Tokens in the text sequence, represented as strings."""
    activations: list[float]
    """Raw activation values for the neuron on each token in the text sequence."""
    dfa_values: Optional[list[int]] = None
    dfa_target_index: Optional[int] = None


@dataclass
class _NeuronId:
    """Identifier for a neuron in an artificial neural network."""

    layer_index: int
    """The index of layer the neuron is in. The first layer used during inference has index 0."""
    neuron_index: int
    """The neuron's index within in its layer. Indices start from 0 in each layer."""


@dataclass
class _ActivationRecordSliceParams:
    """How to select splits (train, valid, etc.) of activation records."""

    n_examples_per_split: Optional[int]
    """The number of examples to include in each split."""


_TOP_SPLITS = ["train", "calibration", "valid", "test"]
_RANDOM_SPLITS = ["calibration", "valid", "test"]


@dataclass
class _NeuronRecord:
    """Neuron-indexed activation data, including summary stats and notable activation records."""

    neuron_id: _NeuronId
    random_sample: list[_ActivationRecord] = field(default_factory=list)
    random_sample_by_quantile: Optional[list[list[_ActivationRecord]]] = None
    quantile_boundaries: Optional[list[Optional[float]]] = None
    mean: Optional[float] = math.nan
    variance: Optional[float] = math.nan
    skewness: Optional[float] = math.nan
    kurtosis: Optional[float] = math.nan
    most_positive_activation_records: list[_ActivationRecord] = field(default_factory=list)

    @property
    def max_activation(self) -> float:
        """The maximum activation value over all top-activating activation records."""
        return max(max(ar.activations) for ar in self.most_positive_activation_records)

    def _slices(
        self, params: _ActivationRecordSliceParams, splits: list[str], available: int
    ) -> dict[str, slice]:
        n = params.n_examples_per_split
        if n is None:
            n = available // len(splits)
        assert available >= n * len(splits)
        return get_slices_for_splits(splits, n)

    def _top(self, params: _ActivationRecordSliceParams, split: str) -> list[_ActivationRecord]:
        records = self.most_positive_activation_records
        return records[self._slices(params, _TOP_SPLITS, len(records))[split]]

    def _random(
        self, params: _ActivationRecordSliceParams, split: str
    ) -> list[_ActivationRecord]:
        records = self.random_sample
        return records[self._slices(params, _RANDOM_SPLITS, len(records))[split]]

    def train_activation_records(
        self, activation_record_slice_params: _ActivationRecordSliceParams
    ) -> list[_ActivationRecord]:
        """Train split: top-activating records only."""
        return self._top(activation_record_slice_params, "train")

    def calibration_activation_records(
        self, activation_record_slice_params: _ActivationRecordSliceParams
    ) -> list[_ActivationRecord]:
        """Calibration split: top-activating then random records."""
        return self._top(activation_record_slice_params, "calibration") + self._random(
            activation_record_slice_params, "calibration"
        )

    def valid_activation_records(
        self, activation_record_slice_params: _ActivationRecordSliceParams
    ) -> list[_ActivationRecord]:
        """Validation split: top-activating then random records."""
        return self._top(activation_record_slice_params, "valid") + self._random(
            activation_record_slice_params, "valid"
        )

    def test_activation_records(
        self, activation_record_slice_params: _ActivationRecordSliceParams
    ) -> list[_ActivationRecord]:
        """Test split: top-activating then random records."""
        return self._top(activation_record_slice_params, "test") + self._random(
            activation_record_slice_params, "test"
        )


if TYPE_CHECKING:
    ActivationRecord = _ActivationRecord
    NeuronId = _NeuronId
    NeuronRecord = _NeuronRecord
    ActivationRecordSliceParams = _ActivationRecordSliceParams
    USING_NEURON_EXPLAINER: bool
else:
    try:
        from neuron_explainer.activations.activations import (
            ActivationRecord,
            ActivationRecordSliceParams,
            NeuronId,
            NeuronRecord,
        )

        USING_NEURON_EXPLAINER = True
    except ImportError:
        ActivationRecord = _ActivationRecord
        NeuronId = _NeuronId
        NeuronRecord = _NeuronRecord
        ActivationRecordSliceParams = _ActivationRecordSliceParams
        USING_NEURON_EXPLAINER = False

# Renamed for the users of this module: the classes print and pickle under their seed names.
for _cls, _name in [
    (_ActivationRecord, "ActivationRecord"),
    (_NeuronId, "NeuronId"),
    (_NeuronRecord, "NeuronRecord"),
    (_ActivationRecordSliceParams, "ActivationRecordSliceParams"),
]:
    _cls.__name__ = _name
    _cls.__qualname__ = _name


def activation_record_from_pb(message: pb.ActivationRecord) -> ActivationRecord:
    """The dataclass of one record of the wire."""
    return ActivationRecord(
        tokens=list(message.tokens),
        activations=list(message.activations),
        dfa_values=list(message.dfa_values) if message.dfa_values else None,
        dfa_target_index=(
            message.dfa_target_index if message.HasField("dfa_target_index") else None
        ),
    )


def _records(messages: Any) -> list[ActivationRecord]:
    return [activation_record_from_pb(m) for m in messages]


def _optional(message: pb.NeuronRecord, name: str) -> Optional[float]:
    value: Optional[float] = getattr(message, name) if message.HasField(name) else None
    return value


def record_from_pb(message: pb.NeuronRecord) -> NeuronRecord:
    """The dataclass of a whole neuron record of the wire."""
    by_quantile: Optional[list[list[ActivationRecord]]] = None
    if message.HasField("random_sample_by_quantile"):
        by_quantile = [
            _records(q.records) for q in message.random_sample_by_quantile.quantiles
        ]
    boundaries: Optional[list[Optional[float]]] = None
    if message.HasField("quantile_boundaries"):
        boundaries = [
            b.value if b.HasField("value") else None
            for b in message.quantile_boundaries.boundaries
        ]
    return NeuronRecord(
        neuron_id=NeuronId(
            layer_index=message.neuron_id.layer_index,
            neuron_index=message.neuron_id.neuron_index,
        ),
        random_sample=_records(message.random_sample),
        random_sample_by_quantile=by_quantile,
        quantile_boundaries=boundaries,
        mean=_optional(message, "mean"),
        variance=_optional(message, "variance"),
        skewness=_optional(message, "skewness"),
        kurtosis=_optional(message, "kurtosis"),
        most_positive_activation_records=_records(message.most_positive_activation_records),
    )


def index(value: Union[str, int], what: str) -> int:
    """A layer or neuron index given as the seed takes it: an int, or a string of digits."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an int or a string of digits, not {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise ValueError(f"{what} must be a non-negative integer, such as 0 or 12, not {value!r}")
    if number < 0:
        raise ValueError(f"{what} must be a non-negative integer (indices count from 0), not {number}")
    if number >= 1 << 32:
        raise ValueError(f"{what} must be below 2**32, not {number}")
    return number
