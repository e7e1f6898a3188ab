"""Every function of the package against the reference loader (``automated-interpretability``)
on the same files: every split, n in {None, 0, 1, 2, 5}, records equal as float32 (the wire's
type); where the reference asserts, the package raises."""

from __future__ import annotations

import math
import struct
from typing import Any, Optional

import pytest
from neuron_explainer.activations import activations as reference

import neuron_activations
from neuron_activations import ActivationRecordSliceParams, Client, errors

from .conftest import dataset_records

SPLITS = ["train", "calibration", "valid", "test"]
NS: list[Optional[int]] = [None, 0, 1, 2, 5]
NEURONS = sorted(dataset_records())


def f32(values: list[float]) -> list[bytes]:
    """Each value as the 4 bytes of its float32 (NaN included, by its bits)."""
    return [struct.pack("<f", value) for value in values]


def same_records(ours: list[Any], theirs: list[Any]) -> None:
    assert len(ours) == len(theirs)
    for mine, reference_record in zip(ours, theirs):
        assert mine.tokens == reference_record.tokens
        assert f32(mine.activations) == f32(reference_record.activations)
        assert mine.dfa_values == reference_record.dfa_values
        assert mine.dfa_target_index == reference_record.dfa_target_index


def same_value(ours: Optional[float], theirs: Optional[float]) -> None:
    if theirs is None:
        assert ours is None
    elif math.isnan(theirs):
        assert ours is not None and math.isnan(ours)
    else:
        assert ours == theirs


@pytest.fixture(scope="module")
def client(server: str) -> Client:
    return Client(server)


@pytest.mark.parametrize("layer,neuron", NEURONS)
def test_load_neuron_is_the_reference_record(
    client: Client, http_url: str, layer: int, neuron: int
) -> None:
    ours = client.load_neuron(layer, neuron)
    theirs = reference.load_neuron(layer, neuron, http_url)
    # The reference's own dataclasses, since neuron_explainer is installed.
    assert isinstance(ours, reference.NeuronRecord)
    assert ours.neuron_id == theirs.neuron_id
    same_records(ours.most_positive_activation_records, theirs.most_positive_activation_records)
    same_records(ours.random_sample, theirs.random_sample)
    if theirs.random_sample_by_quantile is None:
        assert ours.random_sample_by_quantile is None
    else:
        assert ours.random_sample_by_quantile is not None
        assert len(ours.random_sample_by_quantile) == len(theirs.random_sample_by_quantile)
        for mine, their_bucket in zip(ours.random_sample_by_quantile, theirs.random_sample_by_quantile):
            same_records(mine, their_bucket)
    if theirs.quantile_boundaries is None:
        assert ours.quantile_boundaries is None
    else:
        assert ours.quantile_boundaries is not None
        for mine_b, their_b in zip(ours.quantile_boundaries, theirs.quantile_boundaries, strict=True):
            same_value(mine_b, their_b)
    for moment in ["mean", "variance", "skewness", "kurtosis"]:
        same_value(getattr(ours, moment), getattr(theirs, moment))
    assert struct.pack("<f", ours.max_activation) == struct.pack("<f", theirs.max_activation)


@pytest.mark.parametrize("layer,neuron", NEURONS)
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("n", NS)
def test_every_split_is_the_reference_split(
    client: Client, http_url: str, layer: int, neuron: int, split: str, n: Optional[int]
) -> None:
    theirs_record = reference.load_neuron(layer, neuron, http_url)
    method = getattr(theirs_record, f"{split}_activation_records")
    try:
        theirs = method(reference.ActivationRecordSliceParams(n_examples_per_split=n))
    except AssertionError:
        # Where the seed asserts, the package raises, with the largest n that would do.
        with pytest.raises(errors.NotEnoughRecords) as raised:
            client.activation_records(layer, neuron, split, n)
        assert isinstance(raised.value, AssertionError)
        assert raised.value.reason == "NOT_ENOUGH_RECORDS"
        assert "max_n_examples_per_split" in raised.value.metadata
        with pytest.raises(AssertionError):
            getattr(client.load_neuron(layer, neuron), f"{split}_activation_records")(
                ActivationRecordSliceParams(n_examples_per_split=n)
            )
        return
    same_records(client.activation_records(layer, neuron, split, n), theirs)
    # The same records from the whole record's own split method.
    whole = client.load_neuron(layer, neuron)
    same_records(
        getattr(whole, f"{split}_activation_records")(
            ActivationRecordSliceParams(n_examples_per_split=n)
        ),
        theirs,
    )


def test_bulk_splits_are_the_reference_splits(client: Client, http_url: str) -> None:
    present = [key for key in NEURONS]
    selection = [*present, (1, 2)]
    got = list(client.neuron_splits(selection, ["train", "valid"], 1))
    assert [(n.neuron_id.layer_index, n.neuron_id.neuron_index) for n in got] == selection
    for neuron in got[:-1]:
        key = (neuron.neuron_id.layer_index, neuron.neuron_id.neuron_index)
        theirs = reference.load_neuron(key[0], key[1], http_url)
        params = reference.ActivationRecordSliceParams(n_examples_per_split=1)
        if key == (0, 2):
            # No random records: valid cannot be cut; the neuron carries its error.
            assert isinstance(neuron.error, errors.NotEnoughRecords)
            continue
        assert neuron.error is None
        same_records(neuron.splits["train"], theirs.train_activation_records(params))
        same_records(neuron.splits["valid"], theirs.valid_activation_records(params))
        assert neuron.cursor
    assert isinstance(got[-1].error, errors.NotFound)


def test_listings_and_existence_match_the_reference(client: Client, dataset_dir: Any) -> None:
    path = str(dataset_dir)
    assert client.get_sorted_layers() == reference.get_sorted_layers(path)
    for layer in reference.get_sorted_layers(path):
        assert client.get_sorted_neuron_indices(layer) == reference.get_sorted_neuron_indices(
            path, layer
        )
    for layer, neuron in [*NEURONS, (1, 2), (7, 0)]:
        assert client.neuron_exists(layer, neuron) == reference.neuron_exists(path, layer, neuron)


def test_a_missing_neuron_is_not_found_with_its_details(client: Client) -> None:
    with pytest.raises(errors.NotFound) as raised:
        client.load_neuron(1, 2)
    error = raised.value
    assert error.code.name == "NOT_FOUND"
    assert "1/2.json" in error.message
    assert error.reason
    assert str(error).startswith("NOT_FOUND: ")
    with pytest.raises(ValueError, match="non-negative integer"):
        client.load_neuron(-1, 0)
    with pytest.raises(ValueError, match="split must be one of"):
        client.activation_records(1, 1, "validation")


def test_module_functions_use_the_environment_and_take_dataset_path(
    web_server: str, http_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTIVATIONS_SERVER", web_server)
    monkeypatch.delenv("ACTIVATIONS_DATASET", raising=False)
    monkeypatch.setattr(neuron_activations, "_clients", {})
    # The seed's signatures; dataset_path names the dataset by the URI the server lists.
    ours = neuron_activations.load_neuron(1, 1, http_url)
    theirs = reference.load_neuron(1, 1, http_url)
    same_records(ours.most_positive_activation_records, theirs.most_positive_activation_records)
    assert neuron_activations.load_neuron("1", "1") == ours
    assert neuron_activations.neuron_exists("web", 1, 1)
    assert not neuron_activations.neuron_exists(http_url, 1, 2)
    assert neuron_activations.get_sorted_layers(None) == ["0", "1"]
    with pytest.raises(errors.NotFound, match="is not a dataset of the server"):
        neuron_activations.load_neuron(1, 1, "https://example.com/other")


OWN_DATACLASSES = r"""
import json, sys
sys.modules["neuron_explainer"] = None  # as if the reference loader were not installed
import neuron_activations as na
assert not na.USING_NEURON_EXPLAINER
client = na.Client(sys.argv[1])
out = {}
for layer, neuron in json.loads(sys.argv[2]):
    record = client.load_neuron(layer, neuron)
    assert type(record).__module__ == "neuron_activations.records", type(record)
    for split in ["train", "calibration", "valid", "test"]:
        for n in [None, 0, 1, 2, 5]:
            method = getattr(record, split + "_activation_records")
            try:
                records = method(na.ActivationRecordSliceParams(n_examples_per_split=n))
                value = [[r.tokens, r.activations] for r in records]
            except AssertionError:
                value = "assert"
            out[f"{layer}/{neuron}/{split}/{n}"] = value
    out[f"{layer}/{neuron}/moments"] = repr([record.mean, record.variance, record.kurtosis])
print(json.dumps(out))
"""


def test_without_neuron_explainer_the_package_s_own_dataclasses_split_as_the_seed(
    server: str, http_url: str
) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-c", OWN_DATACLASSES, server, json.dumps(NEURONS)],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 0, done.stderr
    ours = json.loads(done.stdout)
    for layer, neuron in NEURONS:
        theirs = reference.load_neuron(layer, neuron, http_url)
        assert ours[f"{layer}/{neuron}/moments"] == repr(
            [theirs.mean, theirs.variance, theirs.kurtosis]
        )
        for split in SPLITS:
            for n in NS:
                got = ours[f"{layer}/{neuron}/{split}/{n}"]
                method = getattr(theirs, f"{split}_activation_records")
                try:
                    expected = method(reference.ActivationRecordSliceParams(n_examples_per_split=n))
                except AssertionError:
                    assert got == "assert", (layer, neuron, split, n)
                    continue
                assert [tokens for tokens, _ in got] == [r.tokens for r in expected]
                assert [f32(values) for _, values in got] == [f32(r.activations) for r in expected]


def test_load_neuron_async_uses_the_environment(
    web_server: str, http_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    monkeypatch.setenv("ACTIVATIONS_SERVER", web_server)
    monkeypatch.setattr(neuron_activations, "_clients", {})
    monkeypatch.setattr(neuron_activations, "_async_clients", {})

    async def main() -> list[Any]:
        return list(
            await asyncio.gather(
                neuron_activations.load_neuron_async(1, 1),
                neuron_activations.load_neuron_async("1", "3", http_url),
            )
        )

    first, second = asyncio.run(main())
    theirs = reference.load_neuron(1, 1, http_url)
    same_records(first.random_sample, theirs.random_sample)
    assert second.neuron_id.neuron_index == 3


def test_load_neuron_async_works_in_one_event_loop_after_another(
    web_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script that calls asyncio.run once per batch gets a working client in each loop, and
    the clients of loops that have ended are let go rather than kept for the process's life."""
    import asyncio

    monkeypatch.setenv("ACTIVATIONS_SERVER", web_server)
    monkeypatch.setattr(neuron_activations, "_clients", {})
    monkeypatch.setattr(neuron_activations, "_async_clients", {})
    indices = []
    for _ in range(6):
        record = asyncio.run(neuron_activations.load_neuron_async(1, 1))
        indices.append(record.neuron_id.neuron_index)
    assert indices == [1] * 6
    # The last loop's client is the only one left.
    assert len(neuron_activations._async_clients) == 1


def test_a_token_is_sent_and_a_missing_one_is_unauthenticated(dataset_dir: Any) -> None:
    from .conftest import ServerProcess

    process = ServerProcess(
        ["--dataset", f"local={dataset_dir}", "--layout", "flat", "--auth-tokens", "s3cret-token"]
    )
    try:
        assert process.address is not None
        with Client(process.address, token="s3cret-token") as client:
            assert client.neuron_exists(1, 1)
        with Client(process.address) as client:
            with pytest.raises(errors.Unauthenticated) as raised:
                client.load_neuron(1, 1)
            assert "token" in raised.value.message.lower()
        with pytest.raises(ValueError, match="visible ASCII"):
            Client(process.address, token="two words")
    finally:
        process.close()
