//! The SDK's error type: what went wrong, by category, with the server's rich error details.

use activations_proto::ErrorReason;
use std::fmt;

use activations_proto::code_name;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// A `Result` whose error is the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a call of the SDK can fail with.
///
/// The `Display` of every variant is one readable line that includes the underlying causes,
/// so `eprintln!("error: {err}")` explains the failure without walking
/// [`source`](std::error::Error::source).
///
/// # Examples
///
/// ```no_run
/// use activations_client::{ActivationsClient, Error, neuron_id};
/// use tonic::Code;
///
/// # async fn example() -> activations_client::Result<()> {
/// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
/// match client.get_neuron_record(neuron_id(1, 99_999)).await {
///     Ok(record) => println!("{} top records", record.most_positive_activation_records.len()),
///     Err(Error::Status(status)) if status.code() == Code::NotFound => {
///         println!("no such neuron: {}", status.message());
///     }
///     Err(err) => return Err(err),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server address is not a valid URI.
    #[error("invalid server URL {url:?}: {}", Chain(.source))]
    InvalidEndpoint {
        /// The address as given (after adding a missing `http://`).
        url: String,
        /// Why it was rejected.
        source: tonic::transport::Error,
    },
    /// The server address ends in `:` without a port.
    #[error(
        "the server address {url} has no port after its ':': write it with the port, such as \
         {}50051",
        url
    )]
    MissingPort {
        /// The address as given (after adding a missing `http://`).
        url: String,
    },
    /// The server could not be reached when connecting.
    #[error("cannot connect to {url}: {}{}", Chain(.source), LikelyCause(.source))]
    Connect {
        /// The address connected to.
        url: String,
        /// Why the connection failed.
        source: tonic::transport::Error,
    },
    /// The call reached the transport layer and ended with a non-OK gRPC status, sent by the
    /// server or raised locally by tonic (for example UNAVAILABLE when the connection drops).
    #[error(transparent)]
    Status(Box<StatusError>),
    /// The server answered with a message that breaks the contract: a required field missing,
    /// or the parts of a neuron in a bulk stream that do not fit together.
    #[error("malformed response from the server: {what}")]
    MalformedResponse {
        /// What was wrong.
        what: &'static str,
    },
    /// A `dns:` target that cannot be used, or given with other addresses.
    #[error("invalid server target {target:?}: {reason}")]
    InvalidTarget {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A [`ClientBuilder`](crate::ClientBuilder) was asked to connect without any endpoint.
    #[error("no server to connect to: add one with ClientBuilder::endpoint")]
    NoEndpoint,
    /// The [TLS settings](crate::Tls) cannot be used: a CA certificate, client certificate or
    /// key that is not valid PEM.
    #[error("invalid TLS settings: {reason}")]
    Tls {
        /// What is wrong with them.
        reason: String,
    },
    /// TLS settings were given, but an endpoint is `http://`, which would send everything,
    /// the bearer token included, in plain text.
    #[error("TLS settings were given but {url} is plain text: use https://")]
    PlaintextWithTls {
        /// The endpoint.
        url: String,
    },
    /// The [bearer token](crate::ClientBuilder::bearer_token) cannot be sent in a header.
    #[error(
        "the bearer token cannot be sent in a header: it must be visible ASCII characters, \
         without spaces"
    )]
    InvalidToken,
}

impl Error {
    /// The gRPC status of a [`Error::Status`] error; `None` for the other variants.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, neuron_id};
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// if let Err(err) = client.neuron_summary(neuron_id(1, 1)).await {
    ///     let reason = err.status().and_then(|status| status.reason());
    ///     println!("failed ({reason:?}): {err}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn status(&self) -> Option<&StatusError> {
        match self {
            Error::Status(status) => Some(status),
            Error::InvalidEndpoint { .. }
            | Error::Connect { .. }
            | Error::MissingPort { .. }
            | Error::InvalidTarget { .. }
            | Error::MalformedResponse { .. }
            | Error::NoEndpoint
            | Error::Tls { .. }
            | Error::PlaintextWithTls { .. }
            | Error::InvalidToken => None,
        }
    }

    /// The gRPC status code of a [`Error::Status`] error; `None` for the other variants.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, neuron_id};
    /// use tonic::Code;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let missing = client.load_neuron(1, 99_999).await.err().and_then(|err| err.code());
    /// assert_eq!(missing, Some(Code::NotFound));
    /// # Ok(())
    /// # }
    /// ```
    pub fn code(&self) -> Option<Code> {
        self.status().map(StatusError::code)
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Status(Box::new(StatusError::from(status)))
    }
}

/// A non-OK gRPC status together with its decoded rich error details.
///
/// The service attaches `google.rpc.ErrorInfo` to every error (its `reason` is stable and
/// meant for programs), plus `ResourceInfo` for NOT_FOUND, `BadRequest` for INVALID_ARGUMENT,
/// `PreconditionFailure` for FAILED_PRECONDITION and `RetryInfo` for UNAVAILABLE.
///
/// `Display` prints the canonical code name, the message and those details on one line:
///
/// ```text
/// NOT_FOUND: neuron 1:99999 not found (reason NEURON_NOT_FOUND; resource neuron "1/99999")
/// ```
///
/// # Examples
///
/// ```
/// use activations_client::StatusError;
/// use std::collections::HashMap;
/// use tonic::Code;
/// use tonic_types::{ErrorDetails, StatusExt};
///
/// let mut details = ErrorDetails::with_error_info("NEURON_NOT_FOUND", "example.domain", HashMap::new());
/// details.set_resource_info("neuron", "1/99999", "", "");
/// let status = tonic::Status::with_error_details(Code::NotFound, "no such neuron", details);
///
/// let error = StatusError::from(status);
/// assert_eq!(error.code(), Code::NotFound);
/// assert_eq!(error.reason(), Some("NEURON_NOT_FOUND"));
/// assert_eq!(
///     error.to_string(),
///     r#"NOT_FOUND: no such neuron (reason NEURON_NOT_FOUND; resource neuron "1/99999")"#
/// );
/// ```
#[derive(Debug)]
pub struct StatusError {
    status: tonic::Status,
    details: ErrorDetails,
}

impl StatusError {
    /// The gRPC status code.
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::StatusError;
    ///
    /// let error = StatusError::from(tonic::Status::unavailable("try later"));
    /// assert_eq!(error.code(), tonic::Code::Unavailable);
    /// ```
    pub fn code(&self) -> Code {
        self.status.code()
    }

    /// The human-readable message of the status.
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::StatusError;
    ///
    /// let error = StatusError::from(tonic::Status::unavailable("try later"));
    /// assert_eq!(error.message(), "try later");
    /// ```
    pub fn message(&self) -> &str {
        self.status.message()
    }

    /// The `reason` of the `google.rpc.ErrorInfo` detail, if the status carries one.
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::StatusError;
    /// use std::collections::HashMap;
    /// use tonic_types::{ErrorDetails, StatusExt};
    ///
    /// let details = ErrorDetails::with_error_info("SPLIT_TOO_SMALL", "example.domain", HashMap::new());
    /// let status =
    ///     tonic::Status::with_error_details(tonic::Code::FailedPrecondition, "too few", details);
    /// assert_eq!(StatusError::from(status).reason(), Some("SPLIT_TOO_SMALL"));
    /// ```
    pub fn reason(&self) -> Option<&str> {
        self.details.error_info().map(|info| info.reason.as_str())
    }

    /// [`reason`](Self::reason) as the service's [`ErrorReason`], when it is one this SDK knows
    /// (a newer server may send reasons it does not).
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::{ErrorReason, StatusError};
    /// use std::collections::HashMap;
    /// use tonic_types::{ErrorDetails, StatusExt};
    ///
    /// let details =
    ///     ErrorDetails::with_error_info("NEURON_NOT_FOUND", "activations.neuron-explainer", HashMap::new());
    /// let status = tonic::Status::with_error_details(tonic::Code::NotFound, "no file", details);
    /// assert_eq!(StatusError::from(status).error_reason(), Some(ErrorReason::NeuronNotFound));
    /// ```
    pub fn error_reason(&self) -> Option<ErrorReason> {
        self.reason()?.parse().ok()
    }

    /// Every rich error detail decoded from the status (details that fail to decode are
    /// dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::StatusError;
    /// use std::time::Duration;
    /// use tonic_types::{ErrorDetails, StatusExt};
    ///
    /// let details = ErrorDetails::with_retry_info(Some(Duration::from_secs(2)));
    /// let status = tonic::Status::with_error_details(tonic::Code::Unavailable, "busy", details);
    /// let error = StatusError::from(status);
    /// let delay = error.details().retry_info().and_then(|retry| retry.retry_delay);
    /// assert_eq!(delay, Some(Duration::from_secs(2)));
    /// ```
    pub fn details(&self) -> &ErrorDetails {
        &self.details
    }

    /// The status as received.
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::StatusError;
    ///
    /// let error = StatusError::from(tonic::Status::internal("boom"));
    /// assert_eq!(error.status().message(), "boom");
    /// ```
    pub fn status(&self) -> &tonic::Status {
        &self.status
    }

    /// Gives back the status as received, for example to forward it from another gRPC service.
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::StatusError;
    ///
    /// let status = StatusError::from(tonic::Status::internal("boom")).into_status();
    /// assert_eq!(status.code(), tonic::Code::Internal);
    /// ```
    pub fn into_status(self) -> tonic::Status {
        self.status
    }
}

impl From<tonic::Status> for StatusError {
    fn from(status: tonic::Status) -> Self {
        let details = status.get_error_details();
        StatusError { status, details }
    }
}

/// A `google.rpc.Status` message, as `StreamNeuronSplits` sends a neuron's error, with its
/// details decoded as those of a call's status are.
///
/// # Examples
///
/// ```
/// use activations_client::StatusError;
/// use tonic::Code;
///
/// let status = tonic_types::Status {
///     code: Code::NotFound as i32,
///     message: "neuron 1:99 not found".into(),
///     details: Vec::new(),
/// };
/// let error = StatusError::from(status);
/// assert_eq!(error.code(), Code::NotFound);
/// assert_eq!(error.message(), "neuron 1:99 not found");
/// ```
impl From<tonic_types::Status> for StatusError {
    fn from(status: tonic_types::Status) -> Self {
        use prost::Message;
        // The details of a call's status travel as this very message, encoded.
        let code = Code::from(status.code);
        let message = status.message.clone();
        let encoded = bytes::Bytes::from(status.encode_to_vec());
        StatusError::from(tonic::Status::with_details(code, message, encoded))
    }
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(code_name(self.code()))?;
        if !self.message().is_empty() {
            write!(f, ": {}", self.message())?;
        }
        let details = describe_details(&self.details, self.message());
        if !details.is_empty() {
            write!(f, " ({})", details.join("; "))?;
        }
        // A status tonic made from a failure of the connection carries it as its source: its
        // message alone ("transport error") does not say what failed.
        if let Some(source) = std::error::Error::source(&self.status) {
            write!(f, " ({}){}", Chain(source), LikelyCause(source))?;
        }
        Ok(())
    }
}

/// `; likely cause: ...` for a failure of the connection whose causes' text says it (hyper, h2
/// and rustls give these only as text: read here, and nowhere else in the SDK), else nothing.
struct LikelyCause<'a>(&'a (dyn std::error::Error + 'static));

/// Texts in a connection failure's causes, and what each most likely means.
const LIKELY_CAUSES: [(&[&str], &str); 10] = [
    (
        &["Connection refused"],
        "nothing listens at that address: is activations-server running there, on this port?",
    ),
    // The TLS alerts a server sends when it refuses a client's certificate (mutual TLS).
    (
        &["received fatal alert: CertificateRequired"],
        "the server requires a client certificate (mutual TLS) and this client sent none: give \
         one (--tls-cert and --tls-key; ClientTls::identity_pem in the SDK)",
    ),
    (
        &[
            "received fatal alert: UnknownCA",
            "received fatal alert: BadCertificate",
            "received fatal alert: CertificateUnknown",
            "received fatal alert: AccessDenied",
        ],
        "the server refused this client's certificate: it is not signed by a CA the server \
         trusts for clients (its --tls-client-ca)",
    ),
    (
        &[
            "received fatal alert: CertificateExpired",
            "received fatal alert: CertificateRevoked",
        ],
        "the server refused this client's certificate: it has expired or was revoked; renew it",
    ),
    // A call made at once on a new connection that the server refuses may fail on the
    // connection's closing before the alert saying why is read: hyper then cancels it as
    // "connection closed" or "connection was not ready", by where the call was.
    (
        &["operation was canceled: connection"],
        "the server closed the connection as soon as it opened: over mutual TLS, a server does \
         so when it refuses this client's certificate (none sent, or not from a CA it trusts \
         for clients); else it was stopping",
    ),
    (
        &["InvalidContentType", "corrupt message"],
        "the server does not speak TLS: connect with http:// and without the TLS options",
    ),
    (
        &[
            "invalid peer certificate",
            "UnknownIssuer",
            "NotValidForName",
        ],
        "the server's certificate is not trusted here, or not for this name: give its CA (--tls-ca) \
         or the name it was issued for (--tls-domain)",
    ),
    (
        &[
            "h2 protocol error",
            "http2 error",
            "frame with invalid size",
            "invalid HTTP version",
        ],
        "something answered, but not as a gRPC server: is this activations-server's gRPC port \
         (not its metrics port, nor a web server)?",
    ),
    (
        &["dns error", "failed to lookup address"],
        "the host name does not resolve: check its spelling",
    ),
    (
        &["timed out", "deadline has elapsed"],
        "no answer in time: check the address and the network",
    ),
];

impl fmt::Display for LikelyCause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = Chain(self.0).to_string();
        let cause = LIKELY_CAUSES
            .iter()
            .find(|(signs, _)| signs.iter().any(|sign| text.contains(sign)));
        match cause {
            Some((_, cause)) => write!(f, "; likely cause: {cause}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for StatusError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.status)
    }
}

/// The details worth showing a person, in a fixed order. Left out: the ErrorInfo domain (the
/// same for every error of the service) and metadata (for programs, and repeated by the
/// message), and descriptions the message already contains.
fn describe_details(details: &ErrorDetails, message: &str) -> Vec<String> {
    let adds = |description: &str| !description.is_empty() && !message.contains(description);
    let mut parts = Vec::new();
    if let Some(info) = details.error_info() {
        parts.push(format!("reason {}", info.reason));
    }
    if let Some(resource) = details.resource_info() {
        let mut part = format!(
            "resource {} {:?}",
            resource.resource_type, resource.resource_name
        );
        if !resource.owner.is_empty() {
            part.push_str(&format!(" owned by {}", resource.owner));
        }
        if adds(&resource.description) {
            part.push_str(&format!(": {}", resource.description));
        }
        parts.push(part);
    }
    if let Some(bad_request) = details.bad_request() {
        for violation in &bad_request.field_violations {
            parts.push(format!(
                "invalid {}: {}",
                violation.field, violation.description
            ));
        }
    }
    if let Some(failure) = details.precondition_failure() {
        for violation in &failure.violations {
            let mut part = format!("precondition {} {}", violation.r#type, violation.subject);
            if adds(&violation.description) {
                part.push_str(&format!(": {}", violation.description));
            }
            parts.push(part);
        }
    }
    if let Some(retry) = details.retry_info() {
        parts.push(match retry.retry_delay {
            Some(delay) => format!("retry after {delay:?}"),
            None => "retry later".to_owned(),
        });
    }
    parts
}

/// Displays an error followed by its causes, `outer: inner: innermost`, skipping a cause whose
/// text repeats the previous one (hyper and tonic often wrap without adding words).
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous = self.0.to_string();
        f.write_str(&previous)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if text != previous {
                write!(f, ": {text}")?;
            }
            previous = text;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use tonic_types::{FieldViolation, PreconditionViolation};

    use super::*;

    fn status_with(code: Code, message: &str, details: ErrorDetails) -> Error {
        Error::from(tonic::Status::with_error_details(code, message, details))
    }

    #[test]
    fn display_of_not_found_shows_reason_and_resource() {
        let mut details = ErrorDetails::with_error_info(
            "NEURON_NOT_FOUND",
            "activations.neuron-explainer",
            HashMap::from([
                ("layer".to_owned(), "1".to_owned()),
                ("dataset".to_owned(), "gpt2-xl".to_owned()),
            ]),
        );
        details.set_resource_info("neuron", "gpt2-xl/1/99999", "", "no file");
        let error = status_with(Code::NotFound, "neuron 1:99999 not found", details);

        assert_eq!(
            error.to_string(),
            "NOT_FOUND: neuron 1:99999 not found (reason NEURON_NOT_FOUND; \
             resource neuron \"gpt2-xl/1/99999\": no file)"
        );
        assert_eq!(error.code(), Some(Code::NotFound));
        assert_eq!(
            error.status().and_then(StatusError::reason),
            Some("NEURON_NOT_FOUND")
        );
    }

    #[test]
    fn display_of_invalid_argument_lists_every_field_violation() {
        let details = ErrorDetails::with_bad_request(vec![
            FieldViolation::new("split", "must not be SPLIT_UNSPECIFIED"),
            FieldViolation::new("page_size", "must not be negative"),
        ]);
        let error = status_with(Code::InvalidArgument, "bad request", details);

        assert_eq!(
            error.to_string(),
            "INVALID_ARGUMENT: bad request (invalid split: must not be SPLIT_UNSPECIFIED; \
             invalid page_size: must not be negative)"
        );
    }

    #[test]
    fn display_of_failed_precondition_and_retry_info() {
        let mut details =
            ErrorDetails::with_precondition_failure(vec![PreconditionViolation::new(
                "SPLIT_SIZE",
                "neuron 1:1 valid",
                "n=20 needs 80 top-activating records, has 50",
            )]);
        details.set_retry_info(Some(Duration::from_millis(1500)));
        let error = status_with(Code::FailedPrecondition, "split too small", details);

        assert_eq!(
            error.to_string(),
            "FAILED_PRECONDITION: split too small (precondition SPLIT_SIZE neuron 1:1 valid: \
             n=20 needs 80 top-activating records, has 50; retry after 1.5s)"
        );
    }

    #[test]
    fn display_skips_descriptions_the_message_already_contains() {
        let description = "the valid split needs 400 top-activating records but has 50";
        let message = format!("neuron 1:1: {description}");
        let mut details =
            ErrorDetails::with_precondition_failure(vec![PreconditionViolation::new(
                "NOT_ENOUGH_RECORDS",
                "gpt2-xl/1/1",
                description,
            )]);
        details.set_error_info(
            "NOT_ENOUGH_RECORDS",
            "activations.neuron-explainer",
            HashMap::from([("needed".to_owned(), "400".to_owned())]),
        );
        let error = status_with(Code::FailedPrecondition, &message, details);

        assert_eq!(
            error.to_string(),
            format!(
                "FAILED_PRECONDITION: {message} (reason NOT_ENOUGH_RECORDS; \
                 precondition NOT_ENOUGH_RECORDS gpt2-xl/1/1)"
            )
        );
        // The metadata left out of the line is still there for programs.
        let info = error
            .status()
            .and_then(|status| status.details().error_info());
        assert_eq!(
            info.map(|info| info.metadata["needed"].as_str()),
            Some("400")
        );
    }

    #[test]
    fn display_of_plain_status_is_code_and_message() {
        assert_eq!(
            Error::from(tonic::Status::unavailable("connection refused")).to_string(),
            "UNAVAILABLE: connection refused"
        );
        assert_eq!(
            Error::from(tonic::Status::internal("")).to_string(),
            "INTERNAL"
        );
    }

    #[test]
    fn status_error_keeps_the_original_status() {
        let details = ErrorDetails::with_error_info("X", "d", HashMap::new());
        let error = StatusError::from(tonic::Status::with_error_details(
            Code::Aborted,
            "m",
            details,
        ));
        assert_eq!(error.message(), "m");
        assert_eq!(error.status().code(), Code::Aborted);
        assert_eq!(
            error
                .details()
                .error_info()
                .map(|info| info.domain.as_str()),
            Some("d")
        );
        assert_eq!(error.into_status().message(), "m");
    }

    #[test]
    fn rpc_status_message_keeps_code_message_and_details() {
        let mut details = ErrorDetails::with_error_info(
            "NEURON_NOT_FOUND",
            "activations.neuron-explainer",
            HashMap::new(),
        );
        details.set_resource_info("neuron", "d/1/99", "", "");
        let sent = tonic::Status::with_error_details(Code::NotFound, "no neuron 1:99", details);
        // What the server puts in NeuronSplits.error: the status as google.rpc.Status.
        let message = <tonic_types::Status as prost::Message>::decode(sent.details()).unwrap();

        let error = StatusError::from(message);
        assert_eq!(error.code(), Code::NotFound);
        assert_eq!(error.message(), "no neuron 1:99");
        assert_eq!(error.reason(), Some("NEURON_NOT_FOUND"));
        assert_eq!(
            error.to_string(),
            r#"NOT_FOUND: no neuron 1:99 (reason NEURON_NOT_FOUND; resource neuron "d/1/99")"#
        );
    }

    #[test]
    fn non_status_errors_have_no_code() {
        let error = Error::MalformedResponse { what: "record" };
        assert_eq!(error.code(), None);
        assert_eq!(
            error.to_string(),
            "malformed response from the server: record"
        );
    }
}
