//! Prometheus metrics of a server: calls, records streamed, the cache, and storage.
//!
//! A [`Metrics`] is one registry and the metric families in it. It is handed to whatever
//! records into it (the per-call layer of [`crate::telemetry`], the service, each dataset's
//! storage and cache) rather than kept in a global, so that several servers in one process
//! (the tests) keep apart. [`serve`] answers `GET /metrics` with its text exposition.
//!
//! Every metric name carries the `activations_` prefix; the README lists them all.
//!
//! - `cache`: a collector that reads each dataset's [`CacheStats`](crate::store::CacheStats)
//!   at scrape time, so the cache keeps no second set of counters.
//! - `storage`: what reads of a store and the HTTP requests under them record;
//!   `observed`: [`ObservedStore`], the store wrapper that records them.
//! - `scrape`: the HTTP endpoint ([`serve`]).

mod cache;
mod observed;
mod scrape;
mod storage;

use std::{
    fmt,
    sync::{Arc, atomic::AtomicI64},
    time::Duration,
};

use futures::{Stream, StreamExt};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

pub use observed::ObservedStore;
pub use scrape::serve;
pub use storage::{StorageHttpConnector, StorageMetrics, StorageOperation};

use crate::store::CachedStore;

/// Upper bounds of the latency buckets, in seconds: 0.1 ms to 30 s in 1-2.5-5 steps, so a
/// cached unary call (tens of microseconds to a millisecond) and a bulk stream over a layer
/// (seconds) both land in buckets of their own.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The metrics of one server. Cheap to clone: clones share the registry and every series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    rpc_requests: Family<RpcCodeLabels, Counter>,
    rpc_duration: HistogramFamily<RpcLabels>,
    rpc_response_bytes: Family<RpcLabels, Counter>,
    rpc_in_flight: Gauge<i64, AtomicI64>,
    records_streamed: Family<RpcLabels, Counter>,
    slots: SlotMetrics,
    slots_capacity: Gauge<i64, AtomicI64>,
    storage: storage::Families,
    caches: Arc<cache::CacheCollector>,
    dataset_available: Family<DatasetLabels, Gauge<i64, AtomicI64>>,
    ready: Gauge<i64, AtomicI64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DatasetLabels {
    dataset: String,
}

/// What the limits of calls record: the slots in use, and the responses ended as idle.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotMetrics {
    pub(crate) in_use: Gauge<i64, AtomicI64>,
    pub(crate) idle_ended: Counter,
}

/// Labels of a call: the gRPC service and method, from the server's fixed set
/// ([`crate::routes::Route::labels`]), so that recording a call allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RpcLabels {
    /// The fully qualified service, e.g. `neuron_explainer.activations.v1.ActivationService`.
    pub service: &'static str,
    /// The method, e.g. `StreamActivationRecords`.
    pub rpc: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RpcCodeLabels {
    service: &'static str,
    rpc: &'static str,
    code: &'static str,
}

impl Metrics {
    /// A registry with every family registered and no series yet.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("activations");
        let rpc_requests = Family::<RpcCodeLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "Completed calls, by service, method and gRPC status code. A stream counts when it \
             ends: its code comes from its trailers, and a stream the client gave up on counts \
             as CANCELLED.",
            rpc_requests.clone(),
        );
        let rpc_duration: HistogramFamily<RpcLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "rpc_duration",
            "Time from a call's arrival to the end of its response (the last message and the \
             trailers of a stream), by service and method.",
            Unit::Seconds,
            rpc_duration.clone(),
        );
        let rpc_response_bytes = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpc_response_bytes",
            "Bytes of response messages sent, as framed (and compressed) on the wire, by \
             service and method.",
            rpc_response_bytes.clone(),
        );
        let rpc_in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "rpc_in_flight",
            "Calls begun and not yet ended (streams included).",
            rpc_in_flight.clone(),
        );
        let records_streamed = Family::<RpcLabels, Counter>::default();
        registry.register(
            "records_streamed",
            "Activation records put into response streams, by service and method (for a \
             cancelled stream, those produced before it was cancelled).",
            records_streamed.clone(),
        );
        let slots_capacity = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "call_slots",
            "Calls the server runs at once (--max-concurrent-requests); one more is refused with \
             RESOURCE_EXHAUSTED.",
            slots_capacity.clone(),
        );
        let slots = SlotMetrics::default();
        registry.register(
            "call_slots_in_use",
            "Calls holding a slot now (streams until their last message): at call_slots, the \
             server is saturated and refuses calls.",
            slots.in_use.clone(),
        );
        registry.register(
            "responses_idle_ended",
            "Responses the server ended because their client read nothing of them for \
             --stream-idle-timeout (ABORTED, STREAM_IDLE).",
            slots.idle_ended.clone(),
        );
        let dataset_available = Family::<DatasetLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "dataset_available",
            "1 while a dataset is open, 0 while its store could not be read yet (its calls are \
             answered UNAVAILABLE and the server keeps trying to open it), by dataset.",
            dataset_available.clone(),
        );
        let ready = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "ready",
            "1 while the server is ready for calls (every dataset has opened or failed an attempt, \
             and it is not draining), 0 otherwise: the whole server's health, also served at \
             /readyz.",
            ready.clone(),
        );
        let storage = storage::Families::register(&mut registry);
        let caches = Arc::new(cache::CacheCollector::default());
        registry.register_collector(Box::new(caches.clone()));
        Metrics {
            inner: Arc::new(Inner {
                registry,
                rpc_requests,
                rpc_duration,
                rpc_response_bytes,
                rpc_in_flight,
                records_streamed,
                slots,
                slots_capacity,
                storage,
                caches,
                dataset_available,
                ready,
            }),
        }
    }

    /// The exposition of every metric, in the OpenMetrics text format (which Prometheus
    /// reads), ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    /// The call slots' series, for a server of `capacity` slots.
    pub(crate) fn slots(&self, capacity: usize) -> SlotMetrics {
        let capacity = i64::try_from(capacity).unwrap_or(i64::MAX);
        self.inner.slots_capacity.set(capacity);
        self.inner.slots.clone()
    }

    /// A call began.
    pub(crate) fn call_started(&self) {
        self.inner.rpc_in_flight.inc();
    }

    /// A call ended with `code` after `elapsed`, having sent `bytes` of response body.
    pub(crate) fn call_finished(
        &self,
        labels: &RpcLabels,
        code: &'static str,
        elapsed: Duration,
        bytes: u64,
    ) {
        let inner = &self.inner;
        inner.rpc_in_flight.dec();
        inner
            .rpc_requests
            .get_or_create(&RpcCodeLabels {
                service: labels.service,
                rpc: labels.rpc,
                code,
            })
            .inc();
        inner
            .rpc_duration
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
        if bytes > 0 {
            inner.rpc_response_bytes.get_or_create(labels).inc_by(bytes);
        }
    }

    /// `stream`, counting the records of each message (`records` of it) into
    /// `activations_records_streamed_total` for `ActivationService/{rpc}` as the message is
    /// produced. The series is looked up once, not per message.
    pub fn count_records<T, E>(
        &self,
        stream: impl Stream<Item = Result<T, E>> + Send + 'static,
        rpc: &'static str,
        records: impl Fn(&T) -> usize + Send + 'static,
    ) -> impl Stream<Item = Result<T, E>> + Send + 'static {
        let counter = self
            .inner
            .records_streamed
            .get_or_create(&RpcLabels {
                service: activations_proto::SERVICE_NAME,
                rpc,
            })
            .clone();
        stream.inspect(move |item| {
            if let Ok(message) = item {
                counter.inc_by(records(message) as u64);
            }
        })
    }

    /// What the storage of `dataset` records into.
    pub fn storage(&self, dataset: &str) -> StorageMetrics {
        StorageMetrics::new(self.inner.storage.clone(), dataset)
    }

    /// Records whether `dataset` is open.
    pub fn dataset_available(&self, dataset: &str, available: bool) {
        self.inner
            .dataset_available
            .get_or_create(&DatasetLabels {
                dataset: dataset.to_string(),
            })
            .set(i64::from(available));
    }

    /// Records whether the server is ready for calls: what `/readyz` answers.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.set(i64::from(ready));
    }

    /// Whether the server is ready for calls, as last recorded.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.get() == 1
    }

    /// Reports the statistics of `dataset`'s cache at every scrape, for as long as the cache
    /// lives.
    pub fn watch_cache(&self, dataset: &str, cache: &Arc<CachedStore>) {
        self.inner.caches.watch(dataset, cache);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}
