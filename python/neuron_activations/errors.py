"""Errors: a gRPC status as an exception, with its code, message and decoded details.

Every call of a client raises an :class:`ActivationsError` subclass named after the code
(:class:`NotFound`, :class:`FailedPrecondition`, :class:`Unavailable`, ...), carrying the
server's ``google.rpc.ErrorInfo`` (``reason``, ``metadata``) and ``RetryInfo``
(``retry_delay``) when it sent them. A split that needs more records than the neuron has
(the seed's ``assert``) is :class:`NotEnoughRecords`, which is also an ``AssertionError``, as
the seed's failure was.
"""

from __future__ import annotations

from typing import Any, Optional

import grpc
from google.protobuf import any_pb2

from ._proto import error_details_pb2, status_pb2

__all__ = [
    "ActivationsError",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotEnoughRecords",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "from_rpc_error",
    "from_status",
]

_DETAILS_KEY = "grpc-status-details-bin"


class ActivationsError(Exception):
    """A call that failed: its gRPC ``code``, the server's ``message`` and the decoded details."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: Optional[grpc.StatusCode] = None,
        reason: Optional[str] = None,
        metadata: Optional[dict[str, str]] = None,
        retry_delay: Optional[float] = None,
        details: Optional[list[Any]] = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.reason = reason
        """``ErrorInfo.reason``, such as ``NOT_ENOUGH_RECORDS`` or ``DATASET_UNAVAILABLE``."""
        self.metadata: dict[str, str] = dict(metadata or {})
        """``ErrorInfo.metadata``: the dataset, the neuron, what was expected."""
        self.retry_delay = retry_delay
        """``RetryInfo.retry_delay`` in seconds: when the server says to try again."""
        self.details: list[Any] = list(details or [])
        """Every detail message decoded (ErrorInfo, RetryInfo, BadRequest, ...)."""

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason:
            text += f" [{self.reason}]"
        return text


class Cancelled(ActivationsError):
    code = grpc.StatusCode.CANCELLED


class Unknown(ActivationsError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(ActivationsError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(ActivationsError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(ActivationsError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ActivationsError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ActivationsError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ActivationsError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ActivationsError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class NotEnoughRecords(FailedPrecondition, AssertionError):
    """A split needs more records than the neuron has: where the seed's ``assert`` fails.
    ``metadata["max_n_examples_per_split"]`` is the largest ``n`` this neuron allows."""


class Aborted(ActivationsError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(ActivationsError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(ActivationsError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ActivationsError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(ActivationsError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(ActivationsError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(ActivationsError):
    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[ActivationsError]] = {
    cls.code: cls
    for cls in [
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    ]
}

_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

_DETAIL_MESSAGES: list[Any] = [
    error_details_pb2.ErrorInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.DebugInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
    error_details_pb2.RequestInfo,
]
_DETAIL_TYPES: dict[str, Any] = {m.DESCRIPTOR.full_name: m for m in _DETAIL_MESSAGES}


def _decode(detail: any_pb2.Any) -> Any:
    name = detail.type_url.rsplit("/", 1)[-1]
    message_type = _DETAIL_TYPES.get(name)
    if message_type is None:
        return detail
    message = message_type()
    detail.Unpack(message)
    return message


def from_status(
    code: grpc.StatusCode, message: str, details_bin: Optional[bytes] = None
) -> ActivationsError:
    """The exception for a status: its code, message, and details from the encoded
    ``google.rpc.Status`` of ``grpc-status-details-bin``, if any."""
    details: list[Any] = []
    if details_bin:
        try:
            status = status_pb2.Status.FromString(details_bin)
            details = [_decode(detail) for detail in status.details]
            message = status.message or message
        except Exception:  # noqa: BLE001 - details are a courtesy; a bad one hides nothing
            details = []
    return _build(code, message, details)


def from_proto_status(status: status_pb2.Status) -> ActivationsError:
    """The exception for a ``google.rpc.Status`` message (a bulk stream's per-neuron error)."""
    code = _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return _build(code, status.message, [_decode(detail) for detail in status.details])


def _build(code: grpc.StatusCode, message: str, details: list[Any]) -> ActivationsError:
    reason: Optional[str] = None
    metadata: dict[str, str] = {}
    retry_delay: Optional[float] = None
    for detail in details:
        if isinstance(detail, error_details_pb2.ErrorInfo):
            reason = detail.reason
            metadata = dict(detail.metadata)
        elif isinstance(detail, error_details_pb2.RetryInfo):
            retry_delay = detail.retry_delay.seconds + detail.retry_delay.nanos / 1e9
    cls = _BY_CODE.get(code, ActivationsError)
    if cls is FailedPrecondition and reason == "NOT_ENOUGH_RECORDS":
        cls = NotEnoughRecords
    return cls(
        message,
        code=code,
        reason=reason,
        metadata=metadata,
        retry_delay=retry_delay,
        details=details,
    )


def from_rpc_error(error: grpc.RpcError) -> ActivationsError:
    """The exception for a failed call of grpcio (sync or asyncio)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    details_bin: Optional[bytes] = None
    trailing: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for item in trailing or ():
        key, value = item[0], item[1]
        if key == _DETAILS_KEY and isinstance(value, bytes):
            details_bin = value
    return from_status(code, message or "", details_bin)
