//! Storage metrics: reads of a dataset's store, their errors and latency, and the HTTP requests
//! `object_store` makes for them.
//!
//! A read is one call to the store (a neuron file fetched and parsed, an existence check, a
//! listing); `object_store` may make several HTTP requests for it, retrying transient failures
//! (and paging long listings). Counting both lets an operator see retries without a hook inside
//! `object_store`'s retry loop: for a remote dataset, retries ≈ HTTP requests − reads.

use std::{future::Future, time::Instant};

use async_trait::async_trait;
use object_store::{
    ClientOptions,
    client::{
        HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService,
        ReqwestConnector,
    },
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::{Registry, Unit},
};

use super::{HistogramFamily, latency_histogram};
use crate::{
    integrity::{Checksums, VerifiedClient},
    store::StoreError,
};

/// What a read of a store was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageOperation {
    /// A neuron file fetched and parsed.
    Read,
    /// A neuron file's existence checked (a HEAD request on remote stores).
    Exists,
    /// The layers, or one layer's neurons, listed.
    List,
}

impl StorageOperation {
    fn label(self) -> &'static str {
        match self {
            StorageOperation::Read => "read",
            StorageOperation::Exists => "exists",
            StorageOperation::List => "list",
        }
    }
}

/// The error kind label of a store error: one per category, so a new category must pick one.
fn error_kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::NotFound { .. } => "not_found",
        StoreError::Corrupt { .. } => "corrupt",
        StoreError::Unavailable { .. } => "unavailable",
        StoreError::Denied { .. } => "denied",
        StoreError::ListingUnavailable { .. } => "listing_unavailable",
        StoreError::Internal { .. } => "internal",
        StoreError::Unreadable { .. } => "unreadable",
        StoreError::Mismatch { .. } => "checksum_mismatch",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReadLabels {
    dataset: String,
    operation: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    dataset: String,
    operation: &'static str,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    dataset: String,
    status: &'static str,
}

/// The storage families of a registry.
#[derive(Debug, Clone)]
pub(super) struct Families {
    reads: Family<ReadLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: HistogramFamily<ReadLabels>,
    http_requests: Family<HttpLabels, Counter>,
}

impl Families {
    pub(super) fn register(registry: &mut Registry) -> Families {
        let families = Families {
            reads: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            http_requests: Family::default(),
        };
        registry.register(
            "storage_reads",
            "Reads of a dataset's store begun, by dataset and operation (read: a neuron file \
             fetched and parsed; exists: a file checked; list: a directory listed). Cache hits \
             make none.",
            families.reads.clone(),
        );
        registry.register(
            "storage_read_errors",
            "Reads of a store that failed, by dataset, operation and kind (not_found, corrupt, \
             unavailable, denied, listing_unavailable, internal), after object_store's retries.",
            families.errors.clone(),
        );
        registry.register_with_unit(
            "storage_read_duration",
            "Time of a read of a store, retries included (for read: the transfer and the \
             parse), by dataset and operation.",
            Unit::Seconds,
            families.duration.clone(),
        );
        registry.register(
            "storage_http_requests",
            "HTTP requests made to a remote store, by dataset and response status class (2xx, \
             3xx, 4xx, 5xx, or error when no response came). Requests beyond one per read are \
             retries (and the pages of long listings).",
            families.http_requests.clone(),
        );
        families
    }
}

/// What the store of one dataset records into.
#[derive(Debug, Clone)]
pub struct StorageMetrics {
    families: Families,
    dataset: String,
}

impl StorageMetrics {
    pub(super) fn new(families: Families, dataset: &str) -> StorageMetrics {
        StorageMetrics {
            families,
            dataset: dataset.to_string(),
        }
    }

    /// Runs one read, counting it when it begins, and its latency and any error when it ends.
    /// A read dropped before it ends (its call cancelled) counts as begun only.
    pub async fn observe<T>(
        &self,
        operation: StorageOperation,
        read: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let labels = ReadLabels {
            dataset: self.dataset.clone(),
            operation: operation.label(),
        };
        self.families.reads.get_or_create(&labels).inc();
        let started = Instant::now();
        let result = read.await;
        self.families
            .duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            self.families
                .errors
                .get_or_create(&ErrorLabels {
                    dataset: labels.dataset,
                    operation: labels.operation,
                    kind: error_kind(error),
                })
                .inc();
        }
        result
    }

    /// An `object_store` HTTP connector that counts this dataset's requests.
    pub fn http_connector(&self) -> StorageHttpConnector {
        StorageHttpConnector {
            counter: Some(self.clone()),
            checksums: Checksums::default(),
        }
    }

    fn count_http(&self, status: &'static str) {
        self.families
            .http_requests
            .get_or_create(&HttpLabels {
                dataset: self.dataset.clone(),
                status,
            })
            .inc();
    }
}

/// `object_store`'s own reqwest connector, checking whole bodies against the checksums their
/// responses carry ([`VerifiedClient`]), and counting every HTTP request its clients make
/// (credential requests included) when it has a [`StorageMetrics`].
#[derive(Debug, Clone, Default)]
pub struct StorageHttpConnector {
    counter: Option<StorageMetrics>,
    checksums: Checksums,
}

impl StorageHttpConnector {
    /// Trusts also the checksums `checksums` names (an S3 `ETag`).
    pub fn with_checksums(mut self, checksums: Checksums) -> Self {
        self.checksums = checksums;
        self
    }
}

impl HttpConnector for StorageHttpConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = HttpClient::new(VerifiedClient {
            client: ReqwestConnector::default().connect(options)?,
            checksums: self.checksums,
        });
        Ok(match &self.counter {
            None => client,
            Some(counter) => HttpClient::new(CountedClient {
                client,
                counter: counter.clone(),
            }),
        })
    }
}

#[derive(Debug)]
struct CountedClient {
    client: HttpClient,
    counter: StorageMetrics,
}

#[async_trait]
impl HttpService for CountedClient {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let response = self.client.execute(request).await;
        self.counter.count_http(status_class(
            response.as_ref().ok().map(|r| r.status().as_u16()),
        ));
        response
    }
}

/// The status label of an HTTP response, or `error` for a request that got none.
fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) | None => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn http_statuses_are_counted_by_class() {
        assert_eq!(status_class(Some(200)), "2xx");
        assert_eq!(status_class(Some(206)), "2xx");
        assert_eq!(status_class(Some(304)), "3xx");
        assert_eq!(status_class(Some(404)), "4xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(None), "error");
    }

    #[tokio::test]
    async fn a_read_counts_when_it_begins_and_its_error_by_kind() {
        let metrics = Metrics::new();
        let storage = metrics.storage("xl");
        let missing = storage
            .observe(StorageOperation::Read, async {
                Err::<(), _>(StoreError::NotFound {
                    path: "1/2.json".into(),
                })
            })
            .await;
        assert!(missing.is_err());
        storage
            .observe(StorageOperation::List, async { Ok(()) })
            .await
            .unwrap();
        let text = metrics.encode();
        for line in [
            r#"activations_storage_reads_total{dataset="xl",operation="read"} 1"#,
            r#"activations_storage_reads_total{dataset="xl",operation="list"} 1"#,
            r#"activations_storage_read_errors_total{dataset="xl",operation="read",kind="not_found"} 1"#,
            r#"activations_storage_read_duration_seconds_count{dataset="xl",operation="list"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains(r#"operation="list",kind="#), "{text}");
    }
}
