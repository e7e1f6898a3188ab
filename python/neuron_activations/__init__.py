"""``neuron_explainer.activations.activations``, served: the seed's API over the activations
server, so an existing job switches by changing one import::

    # from neuron_explainer.activations.activations import ActivationRecordSliceParams, load_neuron
    from neuron_activations import ActivationRecordSliceParams, load_neuron

The module-level functions use a default :class:`Client` of ``ACTIVATIONS_SERVER`` (default
``127.0.0.1:50051``) and ``ACTIVATIONS_DATASET`` (default: the server's default dataset), with
the seed's signatures; ``dataset_path`` selects a dataset by name, or by URI as the server lists
it. When ``neuron_explainer`` is installed the records are its own dataclasses.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Optional, TypeVar, Union

from . import errors, routing
from ._common import NeuronSplits, Range, Selection, Tls, shard
from .aio import AsyncClient
from .client import Client
from .records import (
    USING_NEURON_EXPLAINER,
    ActivationRecord,
    ActivationRecordSliceParams,
    NeuronId,
    NeuronRecord,
    get_slices_for_splits,
)

__all__ = [
    "ActivationRecord",
    "ActivationRecordSliceParams",
    "AsyncClient",
    "Client",
    "NeuronId",
    "NeuronRecord",
    "NeuronSplits",
    "Range",
    "Selection",
    "Tls",
    "USING_NEURON_EXPLAINER",
    "errors",
    "get_slices_for_splits",
    "get_sorted_layers",
    "get_sorted_neuron_indices",
    "load_neuron",
    "load_neuron_async",
    "neuron_exists",
    "routing",
    "shard",
]

T = TypeVar("T", Client, AsyncClient)

#: The server of the module-level functions when ``ACTIVATIONS_SERVER`` is not set.
DEFAULT_SERVER = "127.0.0.1:50051"

_lock = threading.Lock()
#: The clients of the module-level functions, by dataset (``None``: ``ACTIVATIONS_DATASET``).
_clients: dict[Optional[str], Client] = {}
#: Their asyncio twins, by event loop and dataset (a grpc.aio channel serves the loop it was
#: made in only); those of loops that have closed are let go on the next call.
_async_clients: dict[tuple[asyncio.AbstractEventLoop, Optional[str]], AsyncClient] = {}


def _from_environment(cls: type[T], dataset: Optional[str]) -> T:
    """A client of ``ACTIVATIONS_SERVER`` with ``ACTIVATIONS_TOKEN``, reading ``dataset`` (by
    default ``ACTIVATIONS_DATASET``, else the server's default)."""
    return cls(
        os.environ.get("ACTIVATIONS_SERVER", DEFAULT_SERVER),
        dataset=dataset or os.environ.get("ACTIVATIONS_DATASET") or None,
        token=os.environ.get("ACTIVATIONS_TOKEN") or None,
    )


def default_client(dataset: Optional[str] = None) -> Client:
    """The client of the module-level functions (for ``dataset``, else the environment's),
    made on first use from the environment."""
    with _lock:
        client = _clients.get(dataset)
        if client is None:
            client = _clients[dataset] = _from_environment(Client, dataset)
        return client


def _with_dataset(dataset_path: Optional[str]) -> Client:
    if dataset_path is None:
        return default_client()
    return default_client(_dataset_name(default_client(), dataset_path))


def _normalized(uri: str) -> str:
    uri = uri.rstrip("/")
    for prefix, replacement in [
        ("az://openaipublic/", "https://openaipublic.blob.core.windows.net/"),
    ]:
        if uri.startswith(prefix):
            uri = replacement + uri[len(prefix) :]
    return uri


def _dataset_name(client: Client, dataset_path: str) -> str:
    """The dataset ``dataset_path`` names: a dataset's name, or its URI as the server lists it
    (``az://openaipublic/...`` and its ``https://`` form are the same)."""
    datasets = client.datasets()
    for dataset in datasets:
        if dataset.name == dataset_path:
            return str(dataset.name)
    wanted = _normalized(dataset_path)
    for dataset in datasets:
        if _normalized(dataset.uri.split("?", 1)[0]) == wanted:
            return str(dataset.name)
    served = ", ".join(f"{d.name} ({d.uri})" for d in datasets) or "none"
    raise errors.NotFound(
        f"dataset_path {dataset_path!r} is not a dataset of the server: it serves {served}; "
        "pass one of their names or URIs, or leave dataset_path out for the default "
        "(ACTIVATIONS_DATASET, else the server's default)"
    )


def load_neuron(
    layer_index: Union[str, int],
    neuron_index: Union[str, int],
    dataset_path: Optional[str] = None,
) -> NeuronRecord:
    """Load the NeuronRecord for the specified neuron."""
    return _with_dataset(dataset_path).load_neuron(layer_index, neuron_index)


async def load_neuron_async(
    layer_index: Union[str, int],
    neuron_index: Union[str, int],
    dataset_path: Optional[str] = None,
) -> NeuronRecord:
    """Async version of load_neuron: an :class:`AsyncClient` per event loop."""
    dataset = None
    if dataset_path is not None:
        dataset = await asyncio.to_thread(_dataset_name, default_client(), dataset_path)
    key = (asyncio.get_running_loop(), dataset)
    client = _async_clients.get(key)
    if client is None:
        # A script that calls asyncio.run once per batch would otherwise keep a client (and
        # its channel) for every loop it ever ran; a closed loop's channel cannot be closed
        # from here, only dropped.
        # (A snapshot of the keys: loops in other threads may add theirs meanwhile.)
        for ended in list(_async_clients):
            if ended[0].is_closed():
                _async_clients.pop(ended, None)
        client = _async_clients[key] = _from_environment(AsyncClient, dataset)
    return await client.load_neuron(layer_index, neuron_index)


def neuron_exists(
    dataset_path: Optional[str], layer_index: Union[str, int], neuron_index: Union[str, int]
) -> bool:
    """Return whether the specified neuron exists."""
    return _with_dataset(dataset_path).neuron_exists(layer_index, neuron_index)


def get_sorted_neuron_indices(
    dataset_path: Optional[str], layer_index: Union[str, int]
) -> list[int]:
    """Returns the indices of all neurons in this layer, in ascending order."""
    return _with_dataset(dataset_path).get_sorted_neuron_indices(layer_index)


def get_sorted_layers(dataset_path: Optional[str]) -> list[str]:
    """Return the indices of all layers in this dataset, in ascending numerical order, as
    strings."""
    return _with_dataset(dataset_path).get_sorted_layers()
