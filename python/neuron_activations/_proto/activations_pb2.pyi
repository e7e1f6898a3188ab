from . import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Split(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPLIT_UNSPECIFIED: _ClassVar[Split]
    SPLIT_TRAIN: _ClassVar[Split]
    SPLIT_CALIBRATION: _ClassVar[Split]
    SPLIT_VALID: _ClassVar[Split]
    SPLIT_TEST: _ClassVar[Split]

class RecordSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECORD_SOURCE_UNSPECIFIED: _ClassVar[RecordSource]
    RECORD_SOURCE_TOP_ACTIVATING: _ClassVar[RecordSource]
    RECORD_SOURCE_RANDOM: _ClassVar[RecordSource]

class Layout(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LAYOUT_UNSPECIFIED: _ClassVar[Layout]
    LAYOUT_FLAT: _ClassVar[Layout]
    LAYOUT_NEURONS: _ClassVar[Layout]
SPLIT_UNSPECIFIED: Split
SPLIT_TRAIN: Split
SPLIT_CALIBRATION: Split
SPLIT_VALID: Split
SPLIT_TEST: Split
RECORD_SOURCE_UNSPECIFIED: RecordSource
RECORD_SOURCE_TOP_ACTIVATING: RecordSource
RECORD_SOURCE_RANDOM: RecordSource
LAYOUT_UNSPECIFIED: Layout
LAYOUT_FLAT: Layout
LAYOUT_NEURONS: Layout

class NeuronId(_message.Message):
    __slots__ = ("layer_index", "neuron_index")
    LAYER_INDEX_FIELD_NUMBER: _ClassVar[int]
    NEURON_INDEX_FIELD_NUMBER: _ClassVar[int]
    layer_index: int
    neuron_index: int
    def __init__(self, layer_index: _Optional[int] = ..., neuron_index: _Optional[int] = ...) -> None: ...

class ActivationRecord(_message.Message):
    __slots__ = ("tokens", "activations", "dfa_values", "dfa_target_index")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    DFA_VALUES_FIELD_NUMBER: _ClassVar[int]
    DFA_TARGET_INDEX_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    activations: _containers.RepeatedScalarFieldContainer[float]
    dfa_values: _containers.RepeatedScalarFieldContainer[int]
    dfa_target_index: int
    def __init__(self, tokens: _Optional[_Iterable[str]] = ..., activations: _Optional[_Iterable[float]] = ..., dfa_values: _Optional[_Iterable[int]] = ..., dfa_target_index: _Optional[int] = ...) -> None: ...

class ActivationRecordSliceParams(_message.Message):
    __slots__ = ("n_examples_per_split",)
    N_EXAMPLES_PER_SPLIT_FIELD_NUMBER: _ClassVar[int]
    n_examples_per_split: int
    def __init__(self, n_examples_per_split: _Optional[int] = ...) -> None: ...

class ActivationRecordList(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[ActivationRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[ActivationRecord, _Mapping]]] = ...) -> None: ...

class RandomSampleByQuantile(_message.Message):
    __slots__ = ("quantiles",)
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    quantiles: _containers.RepeatedCompositeFieldContainer[ActivationRecordList]
    def __init__(self, quantiles: _Optional[_Iterable[_Union[ActivationRecordList, _Mapping]]] = ...) -> None: ...

class NullableDouble(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: float
    def __init__(self, value: _Optional[float] = ...) -> None: ...

class QuantileBoundaries(_message.Message):
    __slots__ = ("boundaries",)
    BOUNDARIES_FIELD_NUMBER: _ClassVar[int]
    boundaries: _containers.RepeatedCompositeFieldContainer[NullableDouble]
    def __init__(self, boundaries: _Optional[_Iterable[_Union[NullableDouble, _Mapping]]] = ...) -> None: ...

class NeuronRecord(_message.Message):
    __slots__ = ("neuron_id", "random_sample", "random_sample_by_quantile", "quantile_boundaries", "mean", "variance", "skewness", "kurtosis", "most_positive_activation_records")
    NEURON_ID_FIELD_NUMBER: _ClassVar[int]
    RANDOM_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    RANDOM_SAMPLE_BY_QUANTILE_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_BOUNDARIES_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_FIELD_NUMBER: _ClassVar[int]
    SKEWNESS_FIELD_NUMBER: _ClassVar[int]
    KURTOSIS_FIELD_NUMBER: _ClassVar[int]
    MOST_POSITIVE_ACTIVATION_RECORDS_FIELD_NUMBER: _ClassVar[int]
    neuron_id: NeuronId
    random_sample: _containers.RepeatedCompositeFieldContainer[ActivationRecord]
    random_sample_by_quantile: RandomSampleByQuantile
    quantile_boundaries: QuantileBoundaries
    mean: float
    variance: float
    skewness: float
    kurtosis: float
    most_positive_activation_records: _containers.RepeatedCompositeFieldContainer[ActivationRecord]
    def __init__(self, neuron_id: _Optional[_Union[NeuronId, _Mapping]] = ..., random_sample: _Optional[_Iterable[_Union[ActivationRecord, _Mapping]]] = ..., random_sample_by_quantile: _Optional[_Union[RandomSampleByQuantile, _Mapping]] = ..., quantile_boundaries: _Optional[_Union[QuantileBoundaries, _Mapping]] = ..., mean: _Optional[float] = ..., variance: _Optional[float] = ..., skewness: _Optional[float] = ..., kurtosis: _Optional[float] = ..., most_positive_activation_records: _Optional[_Iterable[_Union[ActivationRecord, _Mapping]]] = ...) -> None: ...

class GetNeuronRecordRequest(_message.Message):
    __slots__ = ("dataset", "neuron_id")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    NEURON_ID_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    neuron_id: NeuronId
    def __init__(self, dataset: _Optional[str] = ..., neuron_id: _Optional[_Union[NeuronId, _Mapping]] = ...) -> None: ...

class StreamActivationRecordsRequest(_message.Message):
    __slots__ = ("dataset", "neuron_id", "split", "slice_params")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    NEURON_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    SLICE_PARAMS_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    neuron_id: NeuronId
    split: Split
    slice_params: ActivationRecordSliceParams
    def __init__(self, dataset: _Optional[str] = ..., neuron_id: _Optional[_Union[NeuronId, _Mapping]] = ..., split: _Optional[_Union[Split, str]] = ..., slice_params: _Optional[_Union[ActivationRecordSliceParams, _Mapping]] = ...) -> None: ...

class SplitActivationRecord(_message.Message):
    __slots__ = ("record", "source", "source_index")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_INDEX_FIELD_NUMBER: _ClassVar[int]
    record: ActivationRecord
    source: RecordSource
    source_index: int
    def __init__(self, record: _Optional[_Union[ActivationRecord, _Mapping]] = ..., source: _Optional[_Union[RecordSource, str]] = ..., source_index: _Optional[int] = ...) -> None: ...

class GetNeuronSummaryRequest(_message.Message):
    __slots__ = ("dataset", "neuron_id")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    NEURON_ID_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    neuron_id: NeuronId
    def __init__(self, dataset: _Optional[str] = ..., neuron_id: _Optional[_Union[NeuronId, _Mapping]] = ...) -> None: ...

class NeuronSummary(_message.Message):
    __slots__ = ("neuron_id", "mean", "variance", "skewness", "kurtosis", "quantile_boundaries", "max_activation", "most_positive_activation_record_count", "random_sample_count", "random_sample_by_quantile_counts", "token_count")
    NEURON_ID_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_FIELD_NUMBER: _ClassVar[int]
    SKEWNESS_FIELD_NUMBER: _ClassVar[int]
    KURTOSIS_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_BOUNDARIES_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    MOST_POSITIVE_ACTIVATION_RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    RANDOM_SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    RANDOM_SAMPLE_BY_QUANTILE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    neuron_id: NeuronId
    mean: float
    variance: float
    skewness: float
    kurtosis: float
    quantile_boundaries: QuantileBoundaries
    max_activation: float
    most_positive_activation_record_count: int
    random_sample_count: int
    random_sample_by_quantile_counts: _containers.RepeatedScalarFieldContainer[int]
    token_count: int
    def __init__(self, neuron_id: _Optional[_Union[NeuronId, _Mapping]] = ..., mean: _Optional[float] = ..., variance: _Optional[float] = ..., skewness: _Optional[float] = ..., kurtosis: _Optional[float] = ..., quantile_boundaries: _Optional[_Union[QuantileBoundaries, _Mapping]] = ..., max_activation: _Optional[float] = ..., most_positive_activation_record_count: _Optional[int] = ..., random_sample_count: _Optional[int] = ..., random_sample_by_quantile_counts: _Optional[_Iterable[int]] = ..., token_count: _Optional[int] = ...) -> None: ...

class NeuronExistsRequest(_message.Message):
    __slots__ = ("dataset", "neuron_id")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    NEURON_ID_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    neuron_id: NeuronId
    def __init__(self, dataset: _Optional[str] = ..., neuron_id: _Optional[_Union[NeuronId, _Mapping]] = ...) -> None: ...

class NeuronExistsResponse(_message.Message):
    __slots__ = ("exists",)
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    def __init__(self, exists: _Optional[bool] = ...) -> None: ...

class ListLayersRequest(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    def __init__(self, dataset: _Optional[str] = ...) -> None: ...

class ListLayersResponse(_message.Message):
    __slots__ = ("layer_indices",)
    LAYER_INDICES_FIELD_NUMBER: _ClassVar[int]
    layer_indices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, layer_indices: _Optional[_Iterable[int]] = ...) -> None: ...

class ListNeuronsRequest(_message.Message):
    __slots__ = ("dataset", "layer_index", "page_size", "page_token")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    LAYER_INDEX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    layer_index: int
    page_size: int
    page_token: str
    def __init__(self, dataset: _Optional[str] = ..., layer_index: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListNeuronsResponse(_message.Message):
    __slots__ = ("neuron_indices", "next_page_token")
    NEURON_INDICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    neuron_indices: _containers.RepeatedScalarFieldContainer[int]
    next_page_token: str
    def __init__(self, neuron_indices: _Optional[_Iterable[int]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("name", "uri", "layout", "is_default", "unavailable")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    layout: Layout
    is_default: bool
    unavailable: str
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ..., layout: _Optional[_Union[Layout, str]] = ..., is_default: _Optional[bool] = ..., unavailable: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInfo]
    def __init__(self, datasets: _Optional[_Iterable[_Union[DatasetInfo, _Mapping]]] = ...) -> None: ...

class NeuronSelection(_message.Message):
    __slots__ = ("neurons", "range")
    NEURONS_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    neurons: NeuronIdList
    range: NeuronRange
    def __init__(self, neurons: _Optional[_Union[NeuronIdList, _Mapping]] = ..., range: _Optional[_Union[NeuronRange, _Mapping]] = ...) -> None: ...

class NeuronIdList(_message.Message):
    __slots__ = ("neuron_ids",)
    NEURON_IDS_FIELD_NUMBER: _ClassVar[int]
    neuron_ids: _containers.RepeatedCompositeFieldContainer[NeuronId]
    def __init__(self, neuron_ids: _Optional[_Iterable[_Union[NeuronId, _Mapping]]] = ...) -> None: ...

class NeuronRange(_message.Message):
    __slots__ = ("layer_start", "layer_end", "neuron_start", "neuron_end")
    LAYER_START_FIELD_NUMBER: _ClassVar[int]
    LAYER_END_FIELD_NUMBER: _ClassVar[int]
    NEURON_START_FIELD_NUMBER: _ClassVar[int]
    NEURON_END_FIELD_NUMBER: _ClassVar[int]
    layer_start: int
    layer_end: int
    neuron_start: int
    neuron_end: int
    def __init__(self, layer_start: _Optional[int] = ..., layer_end: _Optional[int] = ..., neuron_start: _Optional[int] = ..., neuron_end: _Optional[int] = ...) -> None: ...

class StreamNeuronSplitsRequest(_message.Message):
    __slots__ = ("dataset", "selection", "splits", "slice_params", "cursor")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    SLICE_PARAMS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    selection: NeuronSelection
    splits: _containers.RepeatedScalarFieldContainer[Split]
    slice_params: ActivationRecordSliceParams
    cursor: str
    def __init__(self, dataset: _Optional[str] = ..., selection: _Optional[_Union[NeuronSelection, _Mapping]] = ..., splits: _Optional[_Iterable[_Union[Split, str]]] = ..., slice_params: _Optional[_Union[ActivationRecordSliceParams, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class NeuronSplits(_message.Message):
    __slots__ = ("neuron_id", "splits", "error", "continues", "cursor")
    NEURON_ID_FIELD_NUMBER: _ClassVar[int]
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CONTINUES_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    neuron_id: NeuronId
    splits: _containers.RepeatedCompositeFieldContainer[SplitRecords]
    error: _status_pb2.Status
    continues: bool
    cursor: str
    def __init__(self, neuron_id: _Optional[_Union[NeuronId, _Mapping]] = ..., splits: _Optional[_Iterable[_Union[SplitRecords, _Mapping]]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., continues: _Optional[bool] = ..., cursor: _Optional[str] = ...) -> None: ...

class SplitRecords(_message.Message):
    __slots__ = ("split", "records")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    split: Split
    records: _containers.RepeatedCompositeFieldContainer[SplitActivationRecord]
    def __init__(self, split: _Optional[_Union[Split, str]] = ..., records: _Optional[_Iterable[_Union[SplitActivationRecord, _Mapping]]] = ...) -> None: ...
