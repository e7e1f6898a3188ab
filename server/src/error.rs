//! What can go wrong serving a request, and the one place that turns it into a gRPC status.
//!
//! Every failed call carries the rich error model: `google.rpc.ErrorInfo` with a stable reason
//! and the facts as metadata, plus the detail message its code calls for. The `match` in
//! [`From<ServiceError> for Status`] has no wildcard arm, so a new error must choose its code.

use std::{collections::HashMap, fmt, time::Duration};

use activations_proto::ErrorReason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use activations_format::{
    neuron::NeuronKey,
    splits::{NotEnoughRecords, Split},
};

use crate::{
    store::StoreError,
    upstream::{self, TonicRefusal},
};

/// The `ErrorInfo.domain` of every error this service sends.
pub const ERROR_DOMAIN: &str = "activations.neuron-explainer";

/// How long a client should wait before retrying a call that met unavailable storage.
const STORAGE_RETRY_DELAY: Duration = Duration::from_secs(1);

/// What a storage error was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Neuron(NeuronKey),
    Layer(u32),
    Layers,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Neuron(key) => key.fmt(f),
            Subject::Layer(layer) => write!(f, "layer {layer}"),
            Subject::Layers => f.write_str("the layer listing"),
        }
    }
}

/// A request that could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("unknown dataset {name:?}; this server serves: {}", known.join(", "))]
    UnknownDataset { name: String, known: Vec<String> },

    #[error(
        "dataset {name:?} is not available: {cause}; the server keeps trying to open it \
         (retry after {retry_after:?}, or read another dataset)"
    )]
    DatasetUnavailable {
        name: String,
        cause: String,
        retry_after: Duration,
    },

    #[error("invalid {field}: {description}")]
    InvalidArgument {
        field: &'static str,
        description: String,
    },

    #[error("dataset {dataset:?}, {neuron}: {detail}")]
    NotEnoughRecords {
        dataset: String,
        neuron: NeuronKey,
        detail: NotEnoughRecords,
    },

    #[error(
        "the server is running its limit of {limit} concurrent calls \
         (--max-concurrent-requests); retry after {retry_after:?}, or call another server"
    )]
    Overloaded { limit: usize, retry_after: Duration },

    #[error(
        "the request message is larger than this server's limit of {limit} bytes \
         (--max-request-bytes); send a smaller request, such as a shorter neuron list"
    )]
    RequestTooLarge { limit: usize },

    #[error(
        "{what} is {size} bytes, above this server's limit of {limit} bytes for a response \
         message (--max-response-bytes); read it in parts (StreamActivationRecords, \
         StreamNeuronSplits)"
    )]
    ResponseTooLarge {
        what: String,
        size: usize,
        limit: usize,
    },

    #[error("the call did not complete within its deadline of {timeout:?} (grpc-timeout)")]
    DeadlineExceeded { timeout: Duration },

    #[error(
        "the client read nothing of this response for {idle:?} (--stream-idle-timeout), so the \
         server ended it; read responses as they come, or resume a StreamNeuronSplits stream \
         from its last cursor"
    )]
    StreamIdle { idle: Duration },

    #[error(
        "the request is not a valid message of this method's type ({detail}); check that the \
         client was generated from this server's contract (grpcurl ADDR describe)"
    )]
    MalformedRequest { detail: String },

    #[error("{detail}; this server accepts requests compressed with gzip or zstd, or none")]
    UnsupportedCompression { detail: String },

    #[error(
        "no method {path} on this server; it serves {}, grpc.health.v1.Health and server \
         reflection (`grpcurl -plaintext ADDR list` lists them)",
        activations_proto::SERVICE_NAME
    )]
    UnknownMethod { path: String },

    #[error("the call failed in the server's gRPC layer: {detail}")]
    Transport { code: Code, detail: String },

    #[error("the server is shutting down and takes no new calls; retry on another server")]
    ShuttingDown,

    #[error(
        "the server is shutting down and its grace period of {grace:?} is over; resume on \
         another server (a StreamNeuronSplits stream from its last cursor)"
    )]
    ShutdownGraceOver { grace: Duration },

    #[error("dataset {dataset:?}, {subject}: {source}")]
    Store {
        dataset: String,
        subject: Subject,
        // Boxed: storage errors are large and every handler returns this type.
        #[source]
        source: Box<StoreError>,
    },

    #[error("{0}")]
    Unauthenticated(Refusal),
}

/// Why a call was refused; the status message tells the caller what to send instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "this server requires a bearer token: send the metadata header \
         `authorization: Bearer <token>` (grpcurl: -H 'authorization: Bearer <token>'; \
         the activations CLI: --token-file FILE or ACTIVATIONS_TOKEN)"
    )]
    Missing,
    #[error(
        "the authorization header is not a bearer token: send it as \
         `authorization: Bearer <token>`, the word Bearer, one space, then the token"
    )]
    Malformed,
    #[error(
        "the bearer token in the authorization header is not accepted by this server: \
         check the token, or ask the server's operator for one"
    )]
    UnknownToken,
}

impl Refusal {
    /// The `ErrorInfo.reason` of the status.
    pub fn reason(self) -> ErrorReason {
        match self {
            Refusal::Missing => ErrorReason::MissingBearerToken,
            Refusal::Malformed => ErrorReason::MalformedAuthorization,
            Refusal::UnknownToken => ErrorReason::InvalidBearerToken,
        }
    }
}

impl ServiceError {
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        ServiceError::InvalidArgument {
            field,
            description: description.into(),
        }
    }

    pub fn store(dataset: &str, subject: Subject, source: StoreError) -> Self {
        ServiceError::Store {
            dataset: dataset.to_string(),
            subject,
            source: Box::new(source),
        }
    }

    /// The status code and `ErrorInfo.reason` of this error: the one table of them.
    pub fn code_and_reason(&self) -> (Code, ErrorReason) {
        match self {
            ServiceError::UnknownDataset { .. } => (Code::NotFound, ErrorReason::UnknownDataset),
            ServiceError::InvalidArgument { .. } => {
                (Code::InvalidArgument, ErrorReason::InvalidArgument)
            }
            ServiceError::NotEnoughRecords { .. } => {
                (Code::FailedPrecondition, ErrorReason::NotEnoughRecords)
            }
            ServiceError::Unauthenticated(refusal) => (Code::Unauthenticated, refusal.reason()),
            ServiceError::Overloaded { .. } => (Code::ResourceExhausted, ErrorReason::Overloaded),
            ServiceError::DatasetUnavailable { .. } => {
                (Code::Unavailable, ErrorReason::DatasetUnavailable)
            }
            ServiceError::RequestTooLarge { .. } => {
                (Code::ResourceExhausted, ErrorReason::RequestTooLarge)
            }
            ServiceError::ResponseTooLarge { .. } => {
                (Code::OutOfRange, ErrorReason::ResponseTooLarge)
            }
            ServiceError::DeadlineExceeded { .. } => {
                (Code::DeadlineExceeded, ErrorReason::DeadlineExceeded)
            }
            ServiceError::StreamIdle { .. } => (Code::Aborted, ErrorReason::StreamIdle),
            ServiceError::MalformedRequest { .. } => {
                (Code::InvalidArgument, ErrorReason::MalformedRequest)
            }
            ServiceError::UnsupportedCompression { .. } => {
                (Code::Unimplemented, ErrorReason::MalformedRequest)
            }
            ServiceError::UnknownMethod { .. } => (Code::Unimplemented, ErrorReason::UnknownMethod),
            ServiceError::Transport { code, .. } => (*code, ErrorReason::Internal),
            ServiceError::ShuttingDown | ServiceError::ShutdownGraceOver { .. } => {
                (Code::Unavailable, ErrorReason::ShuttingDown)
            }
            ServiceError::Store {
                subject, source, ..
            } => match source.as_ref() {
                StoreError::NotFound { .. } => match subject {
                    Subject::Neuron(_) => (Code::NotFound, ErrorReason::NeuronNotFound),
                    Subject::Layer(_) | Subject::Layers => {
                        (Code::NotFound, ErrorReason::LayerNotFound)
                    }
                },
                StoreError::Corrupt { .. } => (Code::DataLoss, ErrorReason::CorruptNeuronFile),
                StoreError::Unavailable { .. } => {
                    (Code::Unavailable, ErrorReason::StorageUnavailable)
                }
                StoreError::Denied { .. } => {
                    (Code::FailedPrecondition, ErrorReason::StorageAccessDenied)
                }
                StoreError::ListingUnavailable { .. } => {
                    (Code::FailedPrecondition, ErrorReason::DatasetShapeUnknown)
                }
                StoreError::Internal { .. } => (Code::Internal, ErrorReason::Internal),
                StoreError::Unreadable { .. } => {
                    (Code::FailedPrecondition, ErrorReason::UnreadableNeuronFile)
                }
                StoreError::Mismatch { .. } => (Code::DataLoss, ErrorReason::ChecksumMismatch),
            },
        }
    }

    /// The rich details beside the reason: what was asked for, the facts as `ErrorInfo`
    /// metadata, and the detail message the code calls for (retry info, violations, ...).
    fn details(&self, reason: ErrorReason) -> ErrorDetails {
        let mut details = ErrorDetails::new();
        let mut metadata = HashMap::new();
        match self {
            ServiceError::UnknownDataset { name, known } => {
                details.set_resource_info(
                    "dataset",
                    name,
                    "",
                    format!("known datasets: {}", known.join(", ")),
                );
                metadata.insert("dataset".to_string(), name.clone());
            }
            ServiceError::DatasetUnavailable {
                name,
                cause,
                retry_after,
            } => {
                details.set_retry_info(Some(*retry_after));
                details.set_resource_info("dataset", name, "", cause);
                metadata.insert("dataset".to_string(), name.clone());
            }
            ServiceError::InvalidArgument { field, description } => {
                details.add_bad_request_violation(*field, description);
            }
            ServiceError::NotEnoughRecords {
                dataset,
                neuron,
                detail,
            } => {
                details.add_precondition_failure_violation(
                    reason.as_str(),
                    format!("{dataset}/{}/{}", neuron.layer, neuron.neuron),
                    detail.to_string(),
                );
                metadata.extend(neuron_metadata(dataset, Subject::Neuron(*neuron)));
                metadata.extend([
                    ("split".to_string(), split_name(detail.split)),
                    ("source".to_string(), detail.source.field_name().to_string()),
                    ("n_examples_per_split".to_string(), detail.n.to_string()),
                    ("needed".to_string(), detail.needed.to_string()),
                    ("available".to_string(), detail.available.to_string()),
                    (
                        "max_n_examples_per_split".to_string(),
                        detail.largest.to_string(),
                    ),
                ]);
            }
            ServiceError::Unauthenticated(_) => {}
            ServiceError::Overloaded { limit, retry_after } => {
                details.set_retry_info(Some(*retry_after));
                details.add_quota_failure_violation(
                    "concurrent calls",
                    format!("at most {limit} calls run at once"),
                );
                metadata.insert("limit".to_string(), limit.to_string());
            }
            ServiceError::RequestTooLarge { limit } => {
                details.add_quota_failure_violation(
                    "request bytes",
                    format!("a request message is at most {limit} bytes"),
                );
                metadata.insert("limit".to_string(), limit.to_string());
            }
            ServiceError::ResponseTooLarge { size, limit, .. } => {
                details.add_quota_failure_violation(
                    "response bytes",
                    format!("a response message is at most {limit} bytes; this one is {size}"),
                );
                metadata.insert("limit".to_string(), limit.to_string());
                metadata.insert("size".to_string(), size.to_string());
            }
            ServiceError::DeadlineExceeded { timeout } => {
                metadata.insert("timeout".to_string(), format!("{timeout:?}"));
            }
            ServiceError::StreamIdle { idle } => {
                metadata.insert("idle_timeout".to_string(), format!("{idle:?}"));
            }
            ServiceError::UnknownMethod { path } => {
                metadata.insert("method".to_string(), path.clone());
            }
            ServiceError::MalformedRequest { .. }
            | ServiceError::UnsupportedCompression { .. }
            | ServiceError::Transport { .. } => {}
            ServiceError::ShuttingDown => {
                details.set_retry_info(Some(Duration::ZERO));
            }
            ServiceError::ShutdownGraceOver { grace } => {
                details.set_retry_info(Some(Duration::ZERO));
                metadata.insert("grace".to_string(), format!("{grace:?}"));
            }
            ServiceError::Store {
                dataset,
                subject,
                source,
            } => {
                metadata.extend(neuron_metadata(dataset, *subject));
                match source.as_ref() {
                    StoreError::NotFound { path } => {
                        let kind = match subject {
                            Subject::Neuron(_) => "neuron",
                            Subject::Layer(_) | Subject::Layers => "layer",
                        };
                        details.set_resource_info(
                            kind,
                            resource_name(dataset, *subject),
                            dataset,
                            format!("no file at {path}"),
                        );
                        metadata.insert("path".to_string(), path.clone());
                    }
                    StoreError::Corrupt { path, source } => {
                        metadata.insert("path".to_string(), path.clone());
                        metadata.insert("offset".to_string(), source.offset.to_string());
                    }
                    StoreError::Unavailable { path, .. } => {
                        metadata.insert("path".to_string(), path.clone());
                        details.set_retry_info(Some(STORAGE_RETRY_DELAY));
                    }
                    StoreError::Denied { path, .. } => {
                        details.add_precondition_failure_violation(
                            "STORAGE_ACCESS",
                            dataset,
                            "the storage refused this server's credentials; the server's \
                             operator must fix its storage settings",
                        );
                        metadata.insert("path".to_string(), path.clone());
                    }
                    StoreError::ListingUnavailable { location, .. } => {
                        details.add_precondition_failure_violation(
                            "DATASET_SHAPE",
                            dataset,
                            format!(
                                "declare the dataset's shape: start the server with \
                                 --dataset {dataset}=URI?layers=L&neurons=N, or put a \
                                 manifest.json at the dataset's root (`activations manifest \
                                 URI` builds one from a store that can be listed)"
                            ),
                        );
                        metadata.insert("location".to_string(), location.clone());
                    }
                    StoreError::Internal { path, .. } => {
                        metadata.insert("path".to_string(), path.clone());
                    }
                    StoreError::Mismatch { path, source } => {
                        metadata.insert("path".to_string(), path.clone());
                        metadata.insert("checksum".to_string(), source.header.to_string());
                    }
                    StoreError::Unreadable { path, reason } => {
                        details.add_precondition_failure_violation(
                            "NEURON_FILE",
                            resource_name(dataset, *subject),
                            format!(
                                "{reason}; the server's operator must replace it with the \
                                 neuron's file"
                            ),
                        );
                        metadata.insert("path".to_string(), path.clone());
                    }
                }
            }
        }
        details.set_error_info(reason.as_str(), ERROR_DOMAIN, metadata);
        details
    }
}

/// The status of an error: its code, its message, and the rich details with the reason.
/// Logging is the observing layer's (see `telemetry`), which sees every failed call.
impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        let (code, reason) = error.code_and_reason();
        let details = error.details(reason);
        Status::with_error_details(code, error.to_string(), details)
    }
}

/// `status` as the client should get it: a status tonic made itself, without the `ErrorInfo`
/// every error of this service carries, becomes the service's error for it (a malformed
/// request is `INVALID_ARGUMENT`, not tonic's `INTERNAL`; an unknown method names what the
/// server serves). `path` is the call's; the limits are the server's, in bytes.
pub fn explain(
    status: Status,
    path: &str,
    max_request_bytes: usize,
    max_response_bytes: usize,
) -> Status {
    if status.code() == Code::Ok || !status.details().is_empty() {
        return status;
    }
    let error = match upstream::tonic_refusal(&status) {
        Some(TonicRefusal::RequestTooLarge) => ServiceError::RequestTooLarge {
            limit: max_request_bytes,
        },
        Some(TonicRefusal::ResponseTooLarge { size }) => ServiceError::ResponseTooLarge {
            what: "a message of this response".to_string(),
            size,
            limit: max_response_bytes,
        },
        Some(TonicRefusal::Malformed) => ServiceError::MalformedRequest {
            detail: excerpt_plain(status.message()),
        },
        Some(TonicRefusal::UnsupportedCompression) => ServiceError::UnsupportedCompression {
            detail: excerpt_plain(status.message()),
        },
        Some(TonicRefusal::UnknownMethod) => ServiceError::UnknownMethod {
            path: excerpt(path),
        },
        None => ServiceError::Transport {
            code: status.code(),
            detail: excerpt_plain(status.message()),
        },
    };
    let mut explained = Status::from(error);
    // The encodings the server accepts, which tonic tells a client whose compression it
    // refused.
    if let Some(accepted) = status.metadata().get("grpc-accept-encoding") {
        explained
            .metadata_mut()
            .insert("grpc-accept-encoding", accepted.clone());
    }
    explained
}

/// A message of a dependency's, cut like [`excerpt`] (after 200 characters) but unquoted; it
/// may quote the request.
fn excerpt_plain(text: &str) -> String {
    match cut(text, 200) {
        None => text.to_string(),
        Some(shown) => format!("{shown}... ({} bytes)", text.len()),
    }
}

/// The first `shown` characters of `text`, if it has more.
fn cut(text: &str, shown: usize) -> Option<&str> {
    text.char_indices().nth(shown).map(|(end, _)| &text[..end])
}

/// `text` as an error message or a log line may quote what a request sent: quoted, and cut to
/// its first 40 characters with its length when longer, so that no request can make an
/// answer or a log line large.
pub fn excerpt(text: &str) -> String {
    match cut(text, 40) {
        None => format!("{text:?}"),
        Some(shown) => format!("{shown:?}... ({} bytes)", text.len()),
    }
}

fn split_name(split: Split) -> String {
    split.name().to_string()
}

fn resource_name(dataset: &str, subject: Subject) -> String {
    match subject {
        Subject::Neuron(key) => format!("{dataset}/{}/{}", key.layer, key.neuron),
        Subject::Layer(layer) => format!("{dataset}/{layer}"),
        Subject::Layers => dataset.to_string(),
    }
}

fn neuron_metadata(dataset: &str, subject: Subject) -> Vec<(String, String)> {
    let mut metadata = vec![("dataset".to_string(), dataset.to_string())];
    match subject {
        Subject::Neuron(key) => {
            metadata.push(("layer_index".to_string(), key.layer.to_string()));
            metadata.push(("neuron_index".to_string(), key.neuron.to_string()));
        }
        Subject::Layer(layer) => metadata.push(("layer_index".to_string(), layer.to_string())),
        Subject::Layers => {}
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;
    use activations_format::splits::Source;

    #[test]
    fn too_few_records_is_failed_precondition_naming_neuron_split_and_counts() {
        let error = ServiceError::NotEnoughRecords {
            dataset: "xl".into(),
            neuron: NeuronKey::new(4, 9),
            detail: NotEnoughRecords {
                split: Split::Valid,
                source: Source::Random,
                n: 20,
                needed: 60,
                available: 50,
                largest: 12,
            },
        };
        let status = Status::from(error);
        assert_eq!(status.code(), Code::FailedPrecondition);
        for fact in [
            "\"xl\"",
            "layer 4 neuron 9",
            "valid",
            "=20",
            "60",
            "50",
            "up to 12",
        ] {
            assert!(
                status.message().contains(fact),
                "{fact} missing: {}",
                status.message()
            );
        }
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "NOT_ENOUGH_RECORDS");
        assert_eq!(info.metadata["available"], "50");
        let violation = &details
            .precondition_failure()
            .expect("PreconditionFailure")
            .violations[0];
        assert_eq!(violation.subject, "xl/4/9");
    }

    #[test]
    fn missing_neuron_is_not_found_with_resource_info() {
        let error = ServiceError::store(
            "xl",
            Subject::Neuron(NeuronKey::new(1, 2)),
            StoreError::NotFound {
                path: "1/2.json".into(),
            },
        );
        let status = Status::from(error);
        assert_eq!(status.code(), Code::NotFound);
        assert!(
            status.message().contains("1/2.json"),
            "{}",
            status.message()
        );
        let details = status.get_error_details();
        assert_eq!(details.resource_info().unwrap().resource_name, "xl/1/2");
        assert_eq!(details.error_info().unwrap().reason, "NEURON_NOT_FOUND");
    }

    #[test]
    fn unavailable_storage_tells_the_client_when_to_retry() {
        let error = ServiceError::store(
            "xl",
            Subject::Layers,
            StoreError::Unavailable {
                path: "".into(),
                source: std::sync::Arc::new(std::io::Error::from(
                    std::io::ErrorKind::ConnectionReset,
                )),
            },
        );
        let status = Status::from(error);
        assert_eq!(status.code(), Code::Unavailable);
        let details = status.get_error_details();
        assert!(details.retry_info().unwrap().retry_delay.is_some());
    }

    #[test]
    fn unlistable_storage_without_a_shape_says_how_to_declare_one() {
        let error = ServiceError::store(
            "xl",
            Subject::Layers,
            StoreError::ListingUnavailable {
                location: "https://example.org/data".into(),
                reason: "a plain web server cannot list".into(),
            },
        );
        let status = Status::from(error);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().contains("https://example.org/data"),
            "{}",
            status.message()
        );
        let details = status.get_error_details();
        let violation = &details.precondition_failure().unwrap().violations[0];
        assert_eq!(violation.r#type, "DATASET_SHAPE");
        assert!(
            violation.description.contains("?layers="),
            "{}",
            violation.description
        );
        assert!(
            violation.description.contains("manifest.json"),
            "{}",
            violation.description
        );
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status = Status::from(ServiceError::invalid("split", "must be set"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "split"
        );
    }
}
