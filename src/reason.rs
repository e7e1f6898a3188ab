//! [`ErrorReason`]: why the service refused or failed a call, as the `google.rpc.ErrorInfo.reason`
//! of its status names it. The names are part of the contract: clients match on them, so a
//! reason is added, never renamed.

use std::{fmt, str::FromStr};

/// The `ErrorInfo.reason` of every error the service sends (its domain is
/// `activations.neuron-explainer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorReason {
    /// The request names a dataset the server does not serve (`NOT_FOUND`).
    UnknownDataset,
    /// A request field is missing or out of range (`INVALID_ARGUMENT`).
    InvalidArgument,
    /// A split asks for more records than the neuron has (`FAILED_PRECONDITION`).
    NotEnoughRecords,
    /// No bearer token on a server that requires one (`UNAUTHENTICATED`).
    MissingBearerToken,
    /// An `authorization` header that is not `Bearer <token>` (`UNAUTHENTICATED`).
    MalformedAuthorization,
    /// A bearer token the server does not accept (`UNAUTHENTICATED`).
    InvalidBearerToken,
    /// The server is running its limit of concurrent calls (`RESOURCE_EXHAUSTED`, retry).
    Overloaded,
    /// The request message is above the server's size limit (`RESOURCE_EXHAUSTED`).
    RequestTooLarge,
    /// The response message would be above the server's size limit (`OUT_OF_RANGE`).
    ResponseTooLarge,
    /// The call's deadline passed (`DEADLINE_EXCEEDED`).
    DeadlineExceeded,
    /// The server is draining for shutdown (`UNAVAILABLE`, retry on another server).
    ShuttingDown,
    /// No file for the neuron (`NOT_FOUND`).
    NeuronNotFound,
    /// No such layer (`NOT_FOUND`).
    LayerNotFound,
    /// The neuron's file is not a neuron record (`DATA_LOSS`).
    CorruptNeuronFile,
    /// What lies at the neuron's path is not a file to read (a FIFO, a directory, a device) or
    /// is above the server's size limit (`FAILED_PRECONDITION`).
    UnreadableNeuronFile,
    /// The storage could not be read, after the server's own retries (`UNAVAILABLE`, retry).
    StorageUnavailable,
    /// The storage refused the server's credentials (`FAILED_PRECONDITION`).
    StorageAccessDenied,
    /// The store cannot be listed and the dataset declares no shape (`FAILED_PRECONDITION`).
    DatasetShapeUnknown,
    /// A fault of the server itself (`INTERNAL`).
    Internal,
    /// The client read nothing of a response for longer than the server's idle bound, which
    /// ended it (`ABORTED`; resume a `StreamNeuronSplits` stream from its last cursor).
    StreamIdle,
    /// The request is not a valid message of the method's type: bytes that do not decode, or
    /// a compression the server does not accept (`INVALID_ARGUMENT`, `UNIMPLEMENTED`).
    MalformedRequest,
    /// The call names a method this server does not have (`UNIMPLEMENTED`).
    UnknownMethod,
    /// The dataset's store could not be opened yet; the server keeps trying (`UNAVAILABLE`,
    /// retry after its `RetryInfo`).
    DatasetUnavailable,
    /// The body the store returned did not match the checksum the store gave for it, read twice
    /// (`DATA_LOSS`; never served or cached).
    ChecksumMismatch,
}

impl ErrorReason {
    /// Every reason, in the order above.
    pub const ALL: [ErrorReason; 24] = [
        ErrorReason::UnknownDataset,
        ErrorReason::InvalidArgument,
        ErrorReason::NotEnoughRecords,
        ErrorReason::MissingBearerToken,
        ErrorReason::MalformedAuthorization,
        ErrorReason::InvalidBearerToken,
        ErrorReason::Overloaded,
        ErrorReason::RequestTooLarge,
        ErrorReason::ResponseTooLarge,
        ErrorReason::DeadlineExceeded,
        ErrorReason::ShuttingDown,
        ErrorReason::NeuronNotFound,
        ErrorReason::LayerNotFound,
        ErrorReason::CorruptNeuronFile,
        ErrorReason::UnreadableNeuronFile,
        ErrorReason::StorageUnavailable,
        ErrorReason::StorageAccessDenied,
        ErrorReason::DatasetShapeUnknown,
        ErrorReason::Internal,
        ErrorReason::StreamIdle,
        ErrorReason::MalformedRequest,
        ErrorReason::UnknownMethod,
        ErrorReason::DatasetUnavailable,
        ErrorReason::ChecksumMismatch,
    ];

    /// The name on the wire, such as `NEURON_NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::UnknownDataset => "UNKNOWN_DATASET",
            ErrorReason::InvalidArgument => "INVALID_ARGUMENT",
            ErrorReason::NotEnoughRecords => "NOT_ENOUGH_RECORDS",
            ErrorReason::MissingBearerToken => "MISSING_BEARER_TOKEN",
            ErrorReason::MalformedAuthorization => "MALFORMED_AUTHORIZATION",
            ErrorReason::InvalidBearerToken => "INVALID_BEARER_TOKEN",
            ErrorReason::Overloaded => "OVERLOADED",
            ErrorReason::RequestTooLarge => "REQUEST_TOO_LARGE",
            ErrorReason::ResponseTooLarge => "RESPONSE_TOO_LARGE",
            ErrorReason::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorReason::ShuttingDown => "SHUTTING_DOWN",
            ErrorReason::NeuronNotFound => "NEURON_NOT_FOUND",
            ErrorReason::LayerNotFound => "LAYER_NOT_FOUND",
            ErrorReason::CorruptNeuronFile => "CORRUPT_NEURON_FILE",
            ErrorReason::UnreadableNeuronFile => "UNREADABLE_NEURON_FILE",
            ErrorReason::StorageUnavailable => "STORAGE_UNAVAILABLE",
            ErrorReason::StorageAccessDenied => "STORAGE_ACCESS_DENIED",
            ErrorReason::DatasetShapeUnknown => "DATASET_SHAPE_UNKNOWN",
            ErrorReason::Internal => "INTERNAL",
            ErrorReason::StreamIdle => "STREAM_IDLE",
            ErrorReason::MalformedRequest => "MALFORMED_REQUEST",
            ErrorReason::UnknownMethod => "UNKNOWN_METHOD",
            ErrorReason::DatasetUnavailable => "DATASET_UNAVAILABLE",
            ErrorReason::ChecksumMismatch => "CHECKSUM_MISMATCH",
        }
    }

    /// Whether the server's operator, rather than the caller, must act: faults of the storage,
    /// of the data or of the server. The caller's own mistakes, and the refusals that tell it
    /// to come back, are routine.
    pub fn concerns_the_operator(self) -> bool {
        matches!(
            self,
            ErrorReason::CorruptNeuronFile
                | ErrorReason::UnreadableNeuronFile
                | ErrorReason::StorageUnavailable
                | ErrorReason::DatasetUnavailable
                | ErrorReason::ChecksumMismatch
                | ErrorReason::StorageAccessDenied
                | ErrorReason::Internal
        )
    }
}

impl fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason name this version does not know (a newer server's, or another service's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownReason(pub String);

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown error reason {:?}", self.0)
    }
}

impl std::error::Error for UnknownReason {}

impl FromStr for ErrorReason {
    type Err = UnknownReason;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ErrorReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == name)
            .ok_or_else(|| UnknownReason(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_name_and_names_are_distinct() {
        let mut names = std::collections::HashSet::new();
        for reason in ErrorReason::ALL {
            assert_eq!(reason.as_str().parse(), Ok(reason));
            assert!(names.insert(reason.as_str()), "{reason} twice");
            assert!(
                reason
                    .as_str()
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{reason}"
            );
        }
        assert_eq!(
            "NO_SUCH_REASON".parse::<ErrorReason>(),
            Err(UnknownReason("NO_SUCH_REASON".to_string()))
        );
    }
}
