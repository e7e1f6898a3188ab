//! Client settings: the servers to call, deadlines, retries, compression and the largest message
//! accepted, set with a [`ClientBuilder`] from [`ActivationsClient::builder`].
//!
//! | setting | default | what it does |
//! | --- | --- | --- |
//! | [`endpoint`](ClientBuilder::endpoint) / [`endpoints`](ClientBuilder::endpoints) | none (required) | the server(s), or one `dns:///host:port` name whose every address is a server |
//! | [`policy`](ClientBuilder::policy) | [`Policy::Affinity`](crate::routing::Policy::Affinity) | with several servers: each neuron's calls to its owner by rendezvous hashing, or round robin (see [`routing`](crate::routing)) |
//! | [`resolve_interval`](ClientBuilder::resolve_interval) | 30 s | how often a `dns:///` name is resolved again (and soon after a server fails) |
//! | [`resolver`](ClientBuilder::resolver) | the system's | what resolves a `dns:///` name |
//! | [`dataset`](ClientBuilder::dataset) | `""` (the server's default) | the dataset every request names |
//! | [`timeout`](ClientBuilder::timeout) | none | deadline of every call, streams and retries included, sent as `grpc-timeout` |
//! | [`connect_timeout`](ClientBuilder::connect_timeout) | 10 s | bound on opening one connection |
//! | [`retry`](ClientBuilder::retry) | [`RetryPolicy::DEFAULT`]: 3 attempts, 100 ms to 2 s | retries of transient failures |
//! | [`compression`](ClientBuilder::compression) | none | compression of requests and responses (worth it over slow links only) |
//! | [`max_decoding_message_size`](ClientBuilder::max_decoding_message_size) | [`MAX_DECODING_MESSAGE_SIZE`] (64 MiB) | largest response message decoded |
//! | [`tls`](ClientBuilder::tls) | none (`https://` endpoints trust the system's roots) | the CA to trust, a client certificate, the name to verify |
//! | [`bearer_token`](ClientBuilder::bearer_token) | none | sent as `authorization: Bearer <token>` on every call |
//! | [`max_encoding_message_size`](ClientBuilder::max_encoding_message_size) | [`MAX_ENCODING_MESSAGE_SIZE`] (4 MiB) | largest request message sent |

// For the documentation's links only: the client is built on this module, not the reverse.
#[cfg(doc)]
use crate::{ActivationsClient, ClientBuilder};
use std::time::Duration;

use tonic::codec::CompressionEncoding;

/// The largest response the client decodes. A neuron record of the public GPT-2 XL data is
/// about 230 KB of JSON; this leaves room for much larger records without being unbounded.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The largest request the client sends: the server's default `--max-request-bytes`.
pub const MAX_ENCODING_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// The default of [`ClientBuilder::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a call that failed for a transient reason is tried again.
///
/// A failure is **retried** when it is `UNAVAILABLE` (the server's storage could not be read
/// after the server's own retries, the server is shutting down or restarting, no connection
/// could be made), `RESOURCE_EXHAUSTED` with a `RetryInfo` (the server is running its limit of
/// concurrent calls and says when to come back; without `RetryInfo`, such as for a request
/// above the server's size limit, it is final), or a failure of the connection itself
/// (refused, reset, dropped in the middle of a response). Every other status is final and
/// returned at once: `INVALID_ARGUMENT`, `NOT_FOUND`,
/// `FAILED_PRECONDITION` and `DATA_LOSS` would fail the same way again, and
/// `DEADLINE_EXCEEDED` means the call's own time is up.
///
/// The wait before retry *k* (1 for the first retry) is drawn uniformly from
/// `0..=min(max_backoff, initial_backoff * 2^(k-1))` ("full jitter", so that many clients
/// failing together do not retry together), and is at least the `RetryInfo.retry_delay` the
/// server attached to the error, if any. No retry starts when it could not begin before the
/// call's [deadline](ClientBuilder::timeout); the call then fails with the last error.
///
/// Which calls retry:
/// - every unary call (`get_neuron_record`, `neuron_summary`, `list_layers`, ...): each attempt
///   sends the whole request again;
/// - [`stream_activation_records`](ActivationsClient::stream_activation_records) (and the
///   methods collecting it) only when the attempt fails before its first record, so a
///   stream never repeats a record;
/// - [`neuron_splits`](ActivationsClient::neuron_splits) resumes after the last complete neuron,
///   and counts failures since the last neuron it delivered: every neuron gets the whole policy.
///
/// # Examples
///
/// ```
/// use activations_client::RetryPolicy;
/// use std::time::Duration;
///
/// let patient = RetryPolicy {
///     max_attempts: 8,
///     initial_backoff: Duration::from_millis(200),
///     max_backoff: Duration::from_secs(10),
/// };
/// assert_eq!(RetryPolicy::default(), RetryPolicy::DEFAULT);
/// assert_eq!(RetryPolicy::NONE.max_attempts, 1);
/// # let _ = patient;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included: 1 never retries (0 counts as 1).
    pub max_attempts: u32,
    /// Upper bound of the wait before the first retry; it doubles for each further retry.
    pub initial_backoff: Duration,
    /// The upper bound of the wait never grows beyond this.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The default: 3 attempts, waits of up to 100 ms, then 200 ms, doubling up to 2 s.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
    };

    /// Never retries: every failure is returned as it happens.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::DEFAULT
    };
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::DEFAULT
    }
}

/// Compression of the messages between client and server, both ways.
///
/// The client sends its requests in this encoding and asks the server to compress its
/// responses with it. Records compress about 3:1, but compressing costs more CPU than it saves
/// on a fast network: on one 2-core machine, a bulk stream of cached neurons ran at 2,600
/// neurons/s uncompressed and 900 with zstd. Use it where bandwidth, not CPU, is the limit.
///
/// # Examples
///
/// ```no_run
/// use activations_client::{ActivationsClient, Compression};
///
/// # async fn example() -> activations_client::Result<()> {
/// let client = ActivationsClient::builder()
///     .endpoint("http://127.0.0.1:50051")
///     .compression(Some(Compression::Zstd))
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// gzip (`grpc-encoding: gzip`).
    Gzip,
    /// Zstandard (`grpc-encoding: zstd`).
    Zstd,
}

impl From<Compression> for CompressionEncoding {
    fn from(compression: Compression) -> Self {
        match compression {
            Compression::Gzip => CompressionEncoding::Gzip,
            Compression::Zstd => CompressionEncoding::Zstd,
        }
    }
}

/// What every call of a client does beyond sending its request: its deadline and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallSettings {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: RetryPolicy,
}

impl CallSettings {
    pub(crate) const DEFAULT: CallSettings = CallSettings {
        timeout: None,
        retry: RetryPolicy::DEFAULT,
    };
}
