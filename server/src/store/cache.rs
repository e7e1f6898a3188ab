//! [`CachedStore`]: an in-memory, byte-bounded, single-flight cache in front of any
//! [`NeuronStore`].
//!
//! # What is cached
//!
//! - **Parsed records.** [`NeuronStore::neuron`] answers are kept as the same
//!   `Arc<wire::NeuronRecord>` the inner store produced, so a hit costs no I/O, no parsing and no
//!   copy. Records never expire: neuron files are immutable datasets, so a record leaves the
//!   cache only when the byte budget needs its room (least recently used first). A file that is
//!   rewritten in place is therefore served stale until its record is evicted.
//! - **`NotFound`, for a while.** A [`StoreError::NotFound`] from `neuron` is remembered as a
//!   small "missing" marker carrying the path, for [`CacheConfig::not_found_ttl`] (measured from
//!   the read; later hits do not extend it). Clients probing for neurons that do not exist then
//!   cost one read per TTL, not one per call, and a file uploaded meanwhile becomes visible at
//!   most one TTL later. A TTL of zero remembers nothing (concurrent callers still share the
//!   read).
//!
//! # What is not cached, and why
//!
//! - **Other errors** (`Unavailable`, `Denied`, `Corrupt`, ...). They are shared by the callers
//!   that waited on the failed read (see below) but never stored: the next call reads again, so a
//!   network blip, a fixed credential or a re-uploaded file heals at once instead of being
//!   replayed from memory.
//! - **`neuron_exists` answers from the inner store.** When the cache holds the key (a record:
//!   `true`, a live marker: `false`) it answers without I/O; otherwise it asks the inner store,
//!   which only checks the file's metadata, and keeps nothing: an existence check must not cost
//!   a full read and parse, and a `false` learned that way has no path to build a marker from.
//! - **Listings** (`layers`, `neurons`) are kept only briefly, for
//!   [`CacheConfig::listing_ttl`]: a paged `ListNeurons` or a bulk stream over a layer asks for
//!   the same listing many times in a row, and listing a blob container costs one request per
//!   thousand blobs; a short TTL keeps new files visible soon after they appear. Concurrent
//!   callers share one listing; errors are not kept.
//!
//! # Weight and budget
//!
//! Each entry weighs its real heap size: [`heap_bytes`] for a record (its lists' capacities and
//! its encoded records' bytes, one buffer per parsed neuron), the key and the slot plus the
//! path's bytes for a marker. The cache holds at most
//! [`CacheConfig::max_bytes`] of these (moka's `max_capacity` with a weigher; a weight is a
//! `u32`, so one record above 4 GiB would count as 4 GiB). A record heavier than the whole
//! budget is returned to its callers but never kept.
//!
//! Eviction is least-recently-used, not moka's default TinyLFU: callers read one neuron several
//! times in a burst (record, summary, a split or two) and then move on, so recency predicts reuse,
//! while TinyLFU would refuse to admit a freshly read neuron whose frequency does not yet beat
//! the victim's, sending exactly that burst back to storage.
//!
//! moka applies evictions lazily, in maintenance that runs once enough operations are logged
//! (a few dozen) or some hundreds of milliseconds have passed. To keep the budget tight, the
//! caller that just loaded an entry runs that maintenance before returning, so the cache exceeds
//! `max_bytes` only by the records that are being loaded concurrently. The entry count and
//! weighted size in [`CacheStats`] are moka's figures as of its last maintenance, so they are
//! approximate in between; [`CachedStore::run_pending_tasks`] brings them up to date.
//!
//! # Single flight
//!
//! Concurrent `neuron` calls for the same absent key make exactly one call to the inner store
//! (moka's `try_get_with`): every waiter receives the same `Arc` on success, or a clone of the
//! same [`StoreError`] on failure. If the caller doing the read is cancelled (its RPC dropped),
//! one of the waiters takes over and reads again.
//!
//! # Disabled
//!
//! `max_bytes == 0` turns the wrapper into a pass-through: no records and no markers are kept,
//! and concurrent calls are **not** coalesced; every `neuron` call reads the inner store and
//! counts as a miss. That is the honest baseline to measure the cache against, and it keeps the
//! "no cache" setting free of any shared state between requests.

use std::{
    fmt,
    mem::size_of,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use activations_proto::wire;
use async_trait::async_trait;
use moka::{Expiry, future::Cache, policy::EvictionPolicy};

use super::{NeuronStore, StoreError};
use activations_format::neuron::{self, NeuronKey};

/// Settings of a [`CachedStore`].
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Budget of the cache: the sum of the records' heap sizes (`heap_bytes`: their lists and
    /// encoded records), plus a few bytes per entry. `0` disables caching:
    /// every call reads the inner store.
    pub max_bytes: u64,
    /// How long a `NotFound` from the inner store is remembered. Zero remembers nothing.
    pub not_found_ttl: Duration,
    /// How long a listing (`layers`, `neurons`) is reused. Zero lists the store every time.
    pub listing_ttl: Duration,
}

impl CacheConfig {
    /// Default budget: 1 GiB, several hundred GPT-2 XL neurons.
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
    /// Default time a `NotFound` is remembered: 10 seconds.
    pub const DEFAULT_NOT_FOUND_TTL: Duration = Duration::from_secs(10);
    /// Default time a listing is reused: 10 seconds.
    pub const DEFAULT_LISTING_TTL: Duration = Duration::from_secs(10);
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            not_found_ttl: Self::DEFAULT_NOT_FOUND_TTL,
            listing_ttl: Self::DEFAULT_LISTING_TTL,
        }
    }
}

/// Counters of a [`CachedStore`], since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Calls answered with a record without reading the inner store: `neuron` calls that found
    /// the record cached or shared another caller's read, and `neuron_exists` calls answered
    /// `true` from a cached record.
    pub hits: u64,
    /// `neuron` calls that read the inner store (one per coalesced group of callers).
    pub misses: u64,
    /// Calls answered from a remembered `NotFound`, by `neuron` (an error) or `neuron_exists`
    /// (`false`).
    pub not_found_hits: u64,
    /// Entries (records and markers) held, as of moka's last maintenance.
    pub entries: u64,
    /// Total weight of the entries held, in bytes, as of moka's last maintenance.
    pub weighted_bytes: u64,
}

/// A [`NeuronStore`] that keeps parsed records in memory within a byte budget, coalesces
/// concurrent reads of the same neuron, and remembers `NotFound` for a while.
///
/// - `neuron`: records are kept (weighed by their heap size, evicted least recently used
///   first, never expired); concurrent calls for an absent key make one inner read and all get
///   its `Arc` or a clone of its error; `NotFound` is remembered for
///   [`CacheConfig::not_found_ttl`]; other errors are never kept, so the next call reads again.
/// - `neuron_exists`: answered from a cached record (`true`) or a remembered `NotFound`
///   (`false`) without I/O, otherwise asked of the inner store (and not kept).
/// - `layers`, `neurons`: reused for [`CacheConfig::listing_ttl`], one listing for concurrent
///   callers, errors not kept.
///
/// With [`CacheConfig::max_bytes`] `== 0` records are not kept (no coalescing either); listings
/// follow `listing_ttl` alone.
pub struct CachedStore {
    inner: Arc<dyn NeuronStore>,
    config: CacheConfig,
    /// `None` when `max_bytes == 0`: a pass-through.
    cache: Option<Cache<NeuronKey, Slot>>,
    /// `None` when `listing_ttl` is zero.
    listings: Option<Cache<Listing, Arc<Vec<u32>>>>,
    counters: Counters,
}

/// Which listing a cached one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Listing {
    Layers,
    Neurons(u32),
}

/// What the cache holds for a key.
#[derive(Debug, Clone)]
enum Slot {
    Record(Arc<wire::NeuronRecord>),
    /// The inner store answered `NotFound` for this path.
    Missing(Arc<str>),
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    not_found_hits: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Markers expire `ttl` after they are written; records never expire.
#[derive(Debug)]
struct NotFoundExpiry {
    ttl: Duration,
}

impl NotFoundExpiry {
    fn lifetime(&self, slot: &Slot) -> Option<Duration> {
        match slot {
            Slot::Record(_) => None,
            Slot::Missing(_) => Some(self.ttl),
        }
    }
}

impl Expiry<NeuronKey, Slot> for NotFoundExpiry {
    fn expire_after_create(&self, _key: &NeuronKey, slot: &Slot, _at: Instant) -> Option<Duration> {
        self.lifetime(slot)
    }

    /// A key is rewritten when its marker has expired (or was about to) and the new read
    /// answered: the new value's own lifetime applies, not what was left of the old one.
    fn expire_after_update(
        &self,
        _key: &NeuronKey,
        slot: &Slot,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        self.lifetime(slot)
    }
}

/// Weight of one entry in bytes, saturated to moka's `u32`.
fn weigh(_key: &NeuronKey, slot: &Slot) -> u32 {
    let fixed = size_of::<NeuronKey>() + size_of::<Slot>();
    let bytes = match slot {
        Slot::Record(record) => fixed + heap_bytes(record),
        Slot::Missing(path) => fixed + path.len(),
    };
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// Bytes of heap memory a record occupies: the `NeuronRecord` struct itself (as it sits in its
/// `Arc`), its lists of records and boundaries, and the encoded records' bytes. A parsed neuron
/// keeps all its records in one buffer (see [`neuron_json::parse_neuron`]), which is the bulk of
/// its weight; records are counted by their encoded length, so a buffer shared with records
/// outside this neuron would be undercounted, which the parser never does.
///
/// [`neuron_json::parse_neuron`]: activations_format::neuron_json::parse_neuron
pub fn heap_bytes(record: &wire::NeuronRecord) -> usize {
    let containers = allocated(size_of::<wire::NeuronRecord>())
        + vec_bytes(&record.most_positive_activation_records)
        + vec_bytes(&record.random_sample)
        + record.random_sample_by_quantile.as_ref().map_or(0, |q| {
            vec_bytes(&q.quantiles)
                + q.quantiles
                    .iter()
                    .map(|l| vec_bytes(&l.records))
                    .sum::<usize>()
        })
        + record
            .quantile_boundaries
            .as_ref()
            .map_or(0, |b| vec_bytes(&b.boundaries));
    let encoded = neuron::activation_records(record)
        .map(|r| r.body().len())
        .sum::<usize>();
    containers + allocated(encoded)
}

fn vec_bytes<T>(items: &Vec<T>) -> usize {
    allocated(items.capacity() * size_of::<T>())
}

/// The memory an allocation of `bytes` takes: malloc adds a header, rounds up to 16 bytes and
/// hands out at least 32.
fn allocated(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        (bytes + 8).next_multiple_of(16).max(32)
    }
}

impl CachedStore {
    /// Wraps `inner` in a cache configured by `config`.
    pub fn new(inner: Arc<dyn NeuronStore>, config: CacheConfig) -> Self {
        let cache = (config.max_bytes > 0).then(|| {
            Cache::builder()
                .name("neuron records")
                .max_capacity(config.max_bytes)
                .weigher(weigh)
                .eviction_policy(EvictionPolicy::lru())
                .expire_after(NotFoundExpiry {
                    ttl: config.not_found_ttl,
                })
                .build()
        });
        let listings = (!config.listing_ttl.is_zero()).then(|| {
            Cache::builder()
                .name("listings")
                .time_to_live(config.listing_ttl)
                // A layer's listing of 6400 neurons is 25 KB; a few thousand layers at most.
                .max_capacity(4096)
                .build()
        });
        CachedStore {
            inner,
            config,
            cache,
            listings,
            counters: Counters::default(),
        }
    }

    /// The settings this cache was built with.
    pub fn config(&self) -> CacheConfig {
        self.config
    }

    /// The counters so far. `entries` and `weighted_bytes` are as of moka's last maintenance
    /// (see [`CachedStore::run_pending_tasks`]); the others are exact.
    pub fn stats(&self) -> CacheStats {
        let (entries, weighted_bytes) = self
            .cache
            .as_ref()
            .map_or((0, 0), |c| (c.entry_count(), c.weighted_size()));
        CacheStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            not_found_hits: self.counters.not_found_hits.load(Ordering::Relaxed),
            entries,
            weighted_bytes,
        }
    }

    /// Runs moka's pending maintenance now: applies evictions and expirations and brings
    /// `entries` and `weighted_bytes` up to date. The cache does this itself after every load;
    /// this is for tests and for exact statistics.
    pub async fn run_pending_tasks(&self) {
        if let Some(cache) = &self.cache {
            cache.run_pending_tasks().await;
        }
    }
}

impl fmt::Debug for CachedStore {
    /// The cache's contents are left out: they are large.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl NeuronStore for CachedStore {
    async fn neuron(&self, key: NeuronKey) -> Result<Arc<wire::NeuronRecord>, StoreError> {
        let Some(cache) = &self.cache else {
            Counters::add(&self.counters.misses);
            return self.inner.neuron(key).await;
        };
        // Set by whichever caller's `load` moka runs: that caller did the read, the others
        // shared it or found the entry cached.
        let loaded = AtomicBool::new(false);
        let load = async {
            loaded.store(true, Ordering::Relaxed);
            Counters::add(&self.counters.misses);
            match self.inner.neuron(key).await {
                Ok(record) => Ok(Slot::Record(record)),
                Err(StoreError::NotFound { path }) => Ok(Slot::Missing(path.into())),
                Err(error) => Err(error),
            }
        };
        let outcome = cache.try_get_with(key, load).await;
        let loaded = loaded.load(Ordering::Relaxed);
        if loaded {
            // Apply the eviction this insert may call for now, not at moka's next flush.
            cache.run_pending_tasks().await;
        }
        match outcome {
            Ok(Slot::Record(record)) => {
                if !loaded {
                    Counters::add(&self.counters.hits);
                }
                Ok(record)
            }
            Ok(Slot::Missing(path)) => {
                if !loaded {
                    Counters::add(&self.counters.not_found_hits);
                }
                Err(StoreError::NotFound {
                    path: path.to_string(),
                })
            }
            Err(shared) => Err(StoreError::clone(&shared)),
        }
    }

    async fn neuron_exists(&self, key: NeuronKey) -> Result<bool, StoreError> {
        if let Some(cache) = &self.cache {
            match cache.get(&key).await {
                Some(Slot::Record(_)) => {
                    Counters::add(&self.counters.hits);
                    return Ok(true);
                }
                Some(Slot::Missing(_)) => {
                    Counters::add(&self.counters.not_found_hits);
                    return Ok(false);
                }
                None => {}
            }
        }
        self.inner.neuron_exists(key).await
    }

    async fn layers(&self) -> Result<Vec<u32>, StoreError> {
        self.listing(Listing::Layers).await
    }

    async fn neurons(&self, layer: u32) -> Result<Vec<u32>, StoreError> {
        self.listing(Listing::Neurons(layer)).await
    }
}

impl CachedStore {
    /// A listing, from the listing cache when it is fresh enough.
    async fn listing(&self, listing: Listing) -> Result<Vec<u32>, StoreError> {
        let list = || async {
            match listing {
                Listing::Layers => self.inner.layers().await,
                Listing::Neurons(layer) => self.inner.neurons(layer).await,
            }
        };
        let Some(listings) = &self.listings else {
            return list().await;
        };
        listings
            .try_get_with(listing, async { list().await.map(Arc::new) })
            .await
            .map(|shared| shared.as_ref().clone())
            .map_err(|shared| StoreError::clone(&shared))
    }
}

#[cfg(test)]
mod tests {
    use std::{
        fmt,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use futures::stream::BoxStream;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, memory::InMemory,
        path::Path,
    };

    use super::*;
    use activations_proto::encoded::EncodedRecord;

    use activations_format::{layout::Layout, neuron_json};

    use crate::store::ObjectNeuronStore;

    const FIXTURE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/gpt2-xl-sample/collated-activations/1/1.json"
    ));

    /// An in-memory object store that counts every `get_opts` (gets and heads alike, the only
    /// reads `ObjectNeuronStore` makes), can delay each one so concurrent calls overlap, and can
    /// fail the next few with a retryable error.
    #[derive(Debug, Default)]
    struct CountingStore {
        inner: InMemory,
        reads: AtomicUsize,
        lists: AtomicUsize,
        delay: Duration,
        failures: AtomicUsize,
    }

    impl fmt::Display for CountingStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "CountingStore({})", self.inner)
        }
    }

    #[async_trait]
    impl ObjectStore for CountingStore {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            let fail = self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if fail {
                return Err(object_store::Error::Generic {
                    store: "counting",
                    source: "injected failure".into(),
                });
            }
            self.inner.get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    impl CountingStore {
        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }
    }

    /// The fixture at `{layer}/{neuron}.json` for each key (flat layout, empty root).
    async fn counting_store(keys: &[NeuronKey], delay: Duration) -> Arc<CountingStore> {
        let store = Arc::new(CountingStore {
            delay,
            ..CountingStore::default()
        });
        for key in keys {
            let path = Path::from(format!("{}/{}.json", key.layer, key.neuron));
            store
                .put(&path, PutPayload::from_static(FIXTURE))
                .await
                .unwrap();
        }
        store
    }

    fn cached(store: &Arc<CountingStore>, config: CacheConfig) -> Arc<CachedStore> {
        let inner = ObjectNeuronStore::new(store.clone(), Path::default(), Layout::Flat);
        Arc::new(CachedStore::new(Arc::new(inner), config))
    }

    fn fixture_record() -> wire::NeuronRecord {
        neuron_json::parse_neuron(FIXTURE).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_calls_for_one_key_share_one_read_and_one_arc() {
        let key = NeuronKey::new(1, 1);
        let store = counting_store(&[key], Duration::from_millis(200)).await;
        let cache = cached(&store, CacheConfig::default());

        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let cache = cache.clone();
            calls.spawn(async move { cache.neuron(key).await });
        }
        let records: Vec<_> = calls
            .join_all()
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(records.len(), 64);
        assert_eq!(store.reads(), 1);
        assert!(records.iter().all(|r| Arc::ptr_eq(r, &records[0])));
        assert_eq!(records[0].most_positive_activation_records.len(), 50);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (63, 1));

        // A second round finds the record cached.
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let cache = cache.clone();
            calls.spawn(async move { cache.neuron(key).await });
        }
        for record in calls.join_all().await {
            assert!(Arc::ptr_eq(&record.unwrap(), &records[0]));
        }
        assert_eq!(store.reads(), 1);
        cache.run_pending_tasks().await;
        let stats = cache.stats();
        assert_eq!(
            stats,
            CacheStats {
                hits: 127,
                misses: 1,
                not_found_hits: 0,
                entries: 1,
                weighted_bytes: u64::from(weigh(&key, &Slot::Record(records[0].clone()))),
            }
        );

        // Existence of a cached record is answered without I/O.
        assert!(cache.neuron_exists(key).await.unwrap());
        assert_eq!(store.reads(), 1);
        assert_eq!(cache.stats().hits, 128);
    }

    #[tokio::test]
    async fn the_byte_budget_evicts_the_least_recently_used_records() {
        let keys: Vec<_> = (0..5).map(|n| NeuronKey::new(1, n)).collect();
        let store = counting_store(&keys, Duration::ZERO).await;
        let max_bytes = heap_bytes(&fixture_record()) as u64 * 5 / 2;
        let cache = cached(
            &store,
            CacheConfig {
                max_bytes,
                ..CacheConfig::default()
            },
        );

        for &key in &keys {
            cache.neuron(key).await.unwrap();
        }
        assert_eq!(store.reads(), 5);
        cache.run_pending_tasks().await;
        let stats = cache.stats();
        assert!(
            stats.weighted_bytes <= max_bytes,
            "{stats:?} over {max_bytes}"
        );
        assert_eq!(stats.entries, 2, "{stats:?}");

        // The most recent one is still there; the first one read was the first evicted.
        cache.neuron(keys[4]).await.unwrap();
        assert_eq!(store.reads(), 5);
        cache.neuron(keys[0]).await.unwrap();
        assert_eq!(store.reads(), 6);
        cache.run_pending_tasks().await;
        assert!(cache.stats().weighted_bytes <= max_bytes);
    }

    #[tokio::test]
    async fn a_record_heavier_than_the_budget_is_returned_but_not_kept() {
        let key = NeuronKey::new(1, 1);
        let store = counting_store(&[key], Duration::ZERO).await;
        let cache = cached(
            &store,
            CacheConfig {
                max_bytes: 1000,
                ..CacheConfig::default()
            },
        );
        let first = cache.neuron(key).await.unwrap();
        let second = cache.neuron(key).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(store.reads(), 2);
        cache.run_pending_tasks().await;
        assert_eq!(cache.stats().entries, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn not_found_is_remembered_for_its_ttl() {
        let key = NeuronKey::new(1, 2);
        let store = counting_store(&[], Duration::ZERO).await;
        let cache = cached(
            &store,
            CacheConfig {
                not_found_ttl: Duration::from_millis(200),
                ..CacheConfig::default()
            },
        );
        fn is_not_found<T>(result: Result<T, StoreError>) -> bool {
            matches!(result, Err(StoreError::NotFound { path }) if path == "1/2.json")
        }

        assert!(is_not_found(cache.neuron(key).await));
        assert!(is_not_found(cache.neuron(key).await));
        assert_eq!(store.reads(), 1);
        assert!(!cache.neuron_exists(key).await.unwrap());
        assert_eq!(store.reads(), 1);
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.not_found_hits), (1, 2));

        tokio::time::sleep(Duration::from_millis(300)).await;
        // The marker has expired: both calls go to storage again.
        assert!(!cache.neuron_exists(key).await.unwrap());
        assert_eq!(store.reads(), 2);
        assert!(is_not_found(cache.neuron(key).await));
        assert_eq!(store.reads(), 3);
        assert_eq!(cache.stats().misses, 2);
    }

    #[tokio::test]
    async fn a_file_that_appears_after_the_ttl_is_served() {
        let key = NeuronKey::new(1, 1);
        let store = counting_store(&[], Duration::ZERO).await;
        let cache = cached(
            &store,
            CacheConfig {
                not_found_ttl: Duration::from_millis(100),
                ..CacheConfig::default()
            },
        );
        assert!(matches!(
            cache.neuron(key).await,
            Err(StoreError::NotFound { .. })
        ));
        store
            .put(&Path::from("1/1.json"), PutPayload::from_static(FIXTURE))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The record replaces the expired marker and does not inherit its expiry.
        let record = cache.neuron(key).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(Arc::ptr_eq(&record, &cache.neuron(key).await.unwrap()));
        assert_eq!(store.reads(), 2);
    }

    #[tokio::test]
    async fn a_transient_error_is_not_cached() {
        let key = NeuronKey::new(1, 1);
        let store = counting_store(&[key], Duration::ZERO).await;
        store.failures.store(1, Ordering::SeqCst);
        let cache = cached(&store, CacheConfig::default());

        let err = cache.neuron(key).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable { path, .. } if path == "1/1.json"),
            "{err:?}"
        );
        cache.neuron(key).await.unwrap();
        cache.neuron(key).await.unwrap();
        assert_eq!(store.reads(), 2);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_share_one_failed_read() {
        let key = NeuronKey::new(1, 1);
        let store = counting_store(&[key], Duration::from_millis(200)).await;
        store.failures.store(1, Ordering::SeqCst);
        let cache = cached(&store, CacheConfig::default());

        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let cache = cache.clone();
            calls.spawn(async move { cache.neuron(key).await });
        }
        for result in calls.join_all().await {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, StoreError::Unavailable { source, .. }
                    if source.to_string().contains("injected failure")),
                "{err:?}"
            );
        }
        assert_eq!(store.reads(), 1);
    }

    #[tokio::test]
    async fn a_zero_budget_reads_through_every_time() {
        let key = NeuronKey::new(1, 1);
        let store = counting_store(&[key], Duration::ZERO).await;
        let cache = cached(
            &store,
            CacheConfig {
                max_bytes: 0,
                ..CacheConfig::default()
            },
        );
        cache.neuron(key).await.unwrap();
        cache.neuron(key).await.unwrap();
        assert!(cache.neuron_exists(key).await.unwrap());
        assert_eq!(store.reads(), 3);
        cache.run_pending_tasks().await;
        assert_eq!(
            cache.stats(),
            CacheStats {
                misses: 2,
                ..CacheStats::default()
            }
        );
    }

    #[tokio::test]
    async fn listings_are_shared_and_reused_until_their_ttl() {
        let store = counting_store(
            &[NeuronKey::new(1, 1), NeuronKey::new(3, 2)],
            Duration::ZERO,
        )
        .await;
        let cache = cached(
            &store,
            CacheConfig {
                listing_ttl: Duration::from_millis(300),
                ..CacheConfig::default()
            },
        );
        let lists = || store.lists.load(Ordering::SeqCst);
        let calls: Vec<_> = (0..16).map(|_| cache.layers()).collect();
        for layers in futures::future::join_all(calls).await {
            assert_eq!(layers.unwrap(), vec![1, 3]);
        }
        assert_eq!(cache.neurons(3).await.unwrap(), vec![2]);
        assert_eq!(cache.neurons(3).await.unwrap(), vec![2]);
        assert_eq!(lists(), 2, "one listing of the layers, one of layer 3");

        // Errors are not kept.
        for _ in 0..2 {
            assert!(matches!(
                cache.neurons(2).await,
                Err(StoreError::NotFound { .. })
            ));
        }
        assert_eq!(lists(), 4);

        // A new file shows once the listing expires.
        store
            .put(&Path::from("3/7.json"), PutPayload::from_static(FIXTURE))
            .await
            .unwrap();
        assert_eq!(cache.neurons(3).await.unwrap(), vec![2]);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(cache.neurons(3).await.unwrap(), vec![2, 7]);
    }

    #[tokio::test]
    async fn a_zero_listing_ttl_lists_every_time() {
        let store = counting_store(&[NeuronKey::new(1, 1)], Duration::ZERO).await;
        let cache = cached(
            &store,
            CacheConfig {
                listing_ttl: Duration::ZERO,
                ..CacheConfig::default()
            },
        );
        for _ in 0..3 {
            assert_eq!(cache.layers().await.unwrap(), vec![1]);
        }
        assert_eq!(store.lists.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn heap_bytes_of_the_fixture_is_its_encoding_plus_its_lists() {
        let record = fixture_record();
        let typed = neuron_json::typed(&record);
        let (token_bytes, activations) = typed
            .most_positive_activation_records
            .iter()
            .chain(&typed.random_sample)
            .chain(
                typed
                    .random_sample_by_quantile
                    .iter()
                    .flat_map(|q| &q.quantiles)
                    .flat_map(|l| &l.records),
            )
            .fold((0, 0), |(bytes, count), r| {
                (
                    bytes + r.tokens.iter().map(String::len).sum::<usize>(),
                    count + r.activations.len(),
                )
            });
        let bytes = heap_bytes(&record);
        assert!(activations > 0);
        // The text and the floats, plus a tag and a length per token...
        assert!(
            bytes > token_bytes + 4 * activations + 2 * activations,
            "{bytes} <= {token_bytes} + 6 × {activations}"
        );
        // ...and little more: about 60% of the JSON.
        assert!(
            bytes < FIXTURE.len() * 2 / 3,
            "{bytes} >= 2/3 × {}",
            FIXTURE.len()
        );
    }

    #[test]
    fn heap_bytes_counts_lists_and_encoded_bytes() {
        let record = |tokens: usize| {
            EncodedRecord::from_record(&activations_proto::pb::ActivationRecord {
                tokens: vec!["ab".to_string(); tokens],
                activations: vec![1.0; tokens],
                ..Default::default()
            })
        };
        let small = wire::NeuronRecord {
            random_sample: vec![record(1)],
            ..Default::default()
        };
        let mut bigger = small.clone();
        bigger.random_sample[0] = record(100);
        // 99 more tokens: 4 bytes each ("ab" with tag and length) and 4 bytes of activation.
        assert!(heap_bytes(&bigger) > heap_bytes(&small) + 99 * 7);
        let mut quantiles = small.clone();
        quantiles.random_sample_by_quantile = Some(wire::RandomSampleByQuantile {
            quantiles: vec![wire::ActivationRecordList {
                records: small.random_sample.clone(),
            }],
        });
        assert!(heap_bytes(&quantiles) > heap_bytes(&small) + size_of::<EncodedRecord>());
    }
}
