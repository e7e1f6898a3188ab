//! Jobs over many neurons: [`ActivationsClient::neuron_splits`] streams the requested splits of
//! a whole selection of neurons (`StreamNeuronSplits`), one item per neuron, resuming by itself
//! after transient failures; [`ActivationsClient::for_each_neuron`] runs a callback on each
//! neuron, several at once.
//!
//! # Examples
//!
//! An explainer-style job over a layer, on two servers, with the explainer's normalization:
//!
//! ```no_run
//! use activations_client::{
//!     ActivationsClient, RetryPolicy, Selection, Split, max_activation, normalized_activations,
//! };
//! use futures::TryStreamExt;
//!
//! #[tokio::main]
//! async fn main() -> activations_client::Result<()> {
//!     let client = ActivationsClient::builder()
//!         .endpoints(["http://10.0.0.5:50051", "http://10.0.0.6:50051"])
//!         .dataset("gpt2-xl")
//!         .retry(RetryPolicy { max_attempts: 5, ..RetryPolicy::DEFAULT })
//!         .connect()
//!         .await?;
//!     let layer_0 = Selection::Range { layers: 0..1, neurons: None };
//!     let mut neurons = client.neuron_splits(layer_0, &[Split::Train, Split::Valid], Some(5));
//!     while let Some(neuron) = neurons.try_next().await? {
//!         let Some(train) = neuron.records(Split::Train) else {
//!             if let Err(error) = &neuron.splits {
//!                 eprintln!("{:?} skipped: {error}", neuron.neuron_id);
//!             }
//!             continue;
//!         };
//!         let records: Vec<_> = train.iter().filter_map(|entry| entry.record.clone()).collect();
//!         let max = max_activation(&records).unwrap_or(0.0);
//!         for record in &records {
//!             let shown = normalized_activations(&record.activations, max);
//!             println!("{:?} {shown:?}", neuron.neuron_id);
//!         }
//!         // To stop and continue later: client.neuron_splits_from(.., neuron.cursor)
//!     }
//!     Ok(())
//! }
//! ```

pub(crate) mod spread;

// For the documentation's links only: the client is built on this module, not the reverse.
#[cfg(doc)]
use crate::ActivationsClient;
use std::future::Future;
use std::ops::Range;

use futures::stream::{self, BoxStream, StreamExt};
use tonic::Status;

use crate::error::{Error, Result, StatusError};
use crate::pb::{self, NeuronId, Split};
use crate::retry::{Backoff, Deadline};
use crate::routing::{Route, RouteKey, is_server_failure};
use crate::settings::CallSettings;

/// Which neurons a bulk stream reads, in which order.
///
/// # Examples
///
/// ```
/// use activations_client::{Selection, neuron_id, pb};
///
/// // Neurons 0..100 of layers 0..2: 0/0, 0/1, ..., 0/99, 1/0, ..., 1/99.
/// let block = Selection::Range { layers: 0..2, neurons: Some(0..100) };
/// // Every neuron of layers 10..12 that the dataset lists.
/// let layers = Selection::Range { layers: 10..12, neurons: None };
/// // Exactly these, in this order.
/// let list = Selection::Neurons(vec![neuron_id(5, 17), neuron_id(1, 1)]);
///
/// let wire = pb::NeuronSelection::from(block);
/// assert!(matches!(wire.selection, Some(pb::neuron_selection::Selection::Range(_))));
/// # let _ = (layers, list);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Exactly these neurons, in this order; repeats are served again.
    Neurons(Vec<NeuronId>),
    /// Layer by layer, each layer's neurons in ascending order.
    Range {
        /// The layers, end excluded.
        layers: Range<u32>,
        /// `Some(range)`: every neuron of `range` in each layer (end excluded), a missing one
        /// being a `NOT_FOUND` item. `None`: the neurons `ListNeurons` lists in each layer,
        /// layers that do not exist skipped (the dataset must be listable or declare its
        /// shape).
        neurons: Option<Range<u32>>,
    },
}

impl Selection {
    /// The part `index` of `count` (0-based) of this selection, for `count` workers that each
    /// take one: the parts are disjoint, together they are the whole selection, and they depend
    /// only on the selection, `index` and `count`, so a restarted worker gets its part again.
    ///
    /// Cut into contiguous blocks, so a worker's neurons are neighbours and its part stays one
    /// compact request that a cursor resumes:
    /// - a list: `neurons[index * len / count .. (index + 1) * len / count]`;
    /// - a range with `neurons`: the same layers, with the block `index` of the neuron range
    ///   in each (so every part has the same number of neurons per layer, give or take one).
    ///
    /// A range of every *listed* neuron (`neurons: None`) cannot be cut without its listing:
    /// list it first (as [`Selection::Neurons`]) or give the neuron range.
    ///
    /// # Errors
    ///
    /// [`ShardError`] when `count` is 0, `index` is not below `count`, or the selection is a
    /// range of listed neurons.
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::Selection;
    ///
    /// // 48 layers of 6400 neurons over 4 workers (Kubernetes' JOB_COMPLETION_INDEX 0..4).
    /// let all = Selection::Range { layers: 0..48, neurons: Some(0..6400) };
    /// let part = all.shard(1, 4).unwrap();
    /// assert_eq!(part, Selection::Range { layers: 0..48, neurons: Some(1600..3200) });
    /// ```
    pub fn shard(&self, index: u32, count: u32) -> std::result::Result<Selection, ShardError> {
        if count == 0 || index >= count {
            return Err(ShardError::Index { index, count });
        }
        // u64 arithmetic: `len * (index + 1)` may not fit in 32 bits.
        let block = |len: u64| -> Range<u64> {
            let (index, count) = (u64::from(index), u64::from(count));
            len * index / count..len * (index + 1) / count
        };
        match self {
            Selection::Neurons(neurons) => {
                let range = block(neurons.len() as u64);
                Ok(Selection::Neurons(
                    neurons[range.start as usize..range.end as usize].to_vec(),
                ))
            }
            Selection::Range {
                layers,
                neurons: Some(neurons),
            } => {
                let len = u64::from(neurons.end.saturating_sub(neurons.start));
                let range = block(len);
                let start = neurons.start + range.start as u32;
                Ok(Selection::Range {
                    layers: layers.clone(),
                    neurons: Some(start..start + (range.end - range.start) as u32),
                })
            }
            Selection::Range { neurons: None, .. } => Err(ShardError::Listed),
        }
    }
}

/// Why [`Selection::shard`] cannot cut a selection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// The part asked for does not exist.
    #[error("shard {index}/{count} does not exist: the index counts from 0 and is below the count (0/{count} to {last}/{count})", last = .count.saturating_sub(1))]
    Index {
        /// The part asked for.
        index: u32,
        /// How many parts.
        count: u32,
    },
    /// A range of every listed neuron.
    #[error(
        "a range of every listed neuron cannot be cut without its listing: give the neuron \
         range, or list the neurons and shard the list"
    )]
    Listed,
}

impl From<Selection> for pb::NeuronSelection {
    fn from(selection: Selection) -> Self {
        use pb::neuron_selection::Selection as Pb;
        let selection = match selection {
            Selection::Neurons(neuron_ids) => Pb::Neurons(pb::NeuronIdList { neuron_ids }),
            Selection::Range { layers, neurons } => Pb::Range(pb::NeuronRange {
                layer_start: layers.start,
                layer_end: layers.end,
                neuron_start: neurons.as_ref().map_or(0, |neurons| neurons.start),
                neuron_end: neurons.map(|neurons| neurons.end),
            }),
        };
        pb::NeuronSelection {
            selection: Some(selection),
        }
    }
}

impl From<Vec<NeuronId>> for Selection {
    fn from(neurons: Vec<NeuronId>) -> Self {
        Selection::Neurons(neurons)
    }
}

/// One neuron of a bulk stream: the records of each requested split, or why the neuron cannot
/// be served.
///
/// # Examples
///
/// ```no_run
/// use activations_client::{ActivationsClient, Selection, Split};
/// use futures::TryStreamExt;
///
/// # async fn example() -> activations_client::Result<()> {
/// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
/// let selection = Selection::Range { layers: 0..1, neurons: Some(0..10) };
/// let mut neurons = client.neuron_splits(selection, &[Split::Train, Split::Valid], Some(5));
/// while let Some(neuron) = neurons.try_next().await? {
///     match &neuron.splits {
///         Ok(_) => {
///             let train = neuron.records(Split::Train).unwrap();
///             println!("{:?}: {} train records", neuron.neuron_id, train.len());
///         }
///         Err(status) => println!("{:?} skipped: {status}", neuron.neuron_id),
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct NeuronSplits {
    /// The neuron.
    pub neuron_id: NeuronId,
    /// One entry per requested split, in request order, each with all its records in the
    /// Python order; or the neuron's error: `NOT_FOUND` (no file), `FAILED_PRECONDITION` with
    /// reason `NOT_ENOUGH_RECORDS` (a split needs more records than the neuron has), `DATA_LOSS`
    /// (a corrupt file). Such an error concerns this neuron only: the stream goes on.
    pub splits: std::result::Result<Vec<pb::SplitRecords>, StatusError>,
    /// Pass it to [`neuron_splits_from`](ActivationsClient::neuron_splits_from) (with the same
    /// dataset, selection, splits and `n`) to continue after this neuron. Opaque;
    /// [`Cursor::inspect`](crate::Cursor::inspect) reads where it stopped.
    pub cursor: String,
}

impl NeuronSplits {
    /// The records of `split`, if it was requested and the neuron was served.
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::{NeuronSplits, Split, neuron_id, pb};
    ///
    /// let neuron = NeuronSplits {
    ///     neuron_id: neuron_id(1, 1),
    ///     splits: Ok(vec![pb::SplitRecords { split: Split::Valid.into(), records: vec![] }]),
    ///     cursor: String::new(),
    /// };
    /// assert_eq!(neuron.records(Split::Valid).map(<[_]>::len), Some(0));
    /// assert!(neuron.records(Split::Test).is_none());
    /// ```
    pub fn records(&self, split: Split) -> Option<&[pb::SplitActivationRecord]> {
        let splits = self.splits.as_ref().ok()?;
        splits
            .iter()
            .find(|records| records.split == i32::from(split))
            .map(|records| records.records.as_slice())
    }
}

/// A bulk stream: one item per neuron, in selection order. See
/// [`ActivationsClient::neuron_splits`].
pub type NeuronSplitsStream = BoxStream<'static, Result<NeuronSplits>>;

/// The items of a `StreamNeuronSplits` call for `request` (see
/// [`ActivationsClient::neuron_splits`](crate::ActivationsClient::neuron_splits)), resumed from
/// the last neuron delivered after transient failures.
pub(crate) fn stream(
    route: Route,
    calls: CallSettings,
    request: pb::StreamNeuronSplitsRequest,
) -> NeuronSplitsStream {
    stream_on(route, calls, request, false)
}

/// [`stream`]; with `hand_over`, a failure of the server itself (see
/// [`is_server_failure`](crate::routing::is_server_failure)) ends the stream at once instead of
/// being retried there, for the caller to resume the rest on another server.
pub(crate) fn stream_on(
    route: Route,
    calls: CallSettings,
    request: pb::StreamNeuronSplitsRequest,
    hand_over: bool,
) -> NeuronSplitsStream {
    stream_keyed(route, calls, request, hand_over, None)
}

/// [`stream_on`], each call routed as a call about neuron `key` is (to its owner, with
/// affinity), for a selection whose neurons all have that owner.
pub(crate) fn stream_keyed(
    route: Route,
    calls: CallSettings,
    request: pb::StreamNeuronSplitsRequest,
    hand_over: bool,
    key: Option<NeuronId>,
) -> NeuronSplitsStream {
    let bulk = Bulk {
        key,
        hand_over,
        route,
        calls,
        assembler: Assembler::new(request.splits.clone()),
        backoff: Backoff::new(calls.retry, None),
        request,
        messages: None,
        finished: false,
    };
    stream::unfold(bulk, |mut bulk| async move {
        let item = bulk.next().await?;
        Some((item, bulk))
    })
    .boxed()
}

/// The state of a bulk stream between items.
struct Bulk {
    /// The neuron the calls are routed by, if any.
    key: Option<NeuronId>,
    /// Whether a failure of the server ends the stream rather than being retried.
    hand_over: bool,
    route: Route,
    calls: CallSettings,
    /// The request; its cursor is that of the last neuron delivered.
    request: pb::StreamNeuronSplitsRequest,
    assembler: Assembler,
    /// Failures since the last neuron delivered.
    backoff: Backoff,
    /// The messages of the current call, if one is open.
    messages: Option<BoxStream<'static, Result<pb::NeuronSplits, Status>>>,
    finished: bool,
}

impl Bulk {
    async fn next(&mut self) -> Option<Result<NeuronSplits>> {
        if self.finished {
            return None;
        }
        loop {
            let messages = match &mut self.messages {
                Some(messages) => messages,
                None => match self.open().await {
                    Ok(messages) => self.messages.insert(messages),
                    Err(status) if self.hand_over && is_server_failure(&status) => {
                        return self.fail(Error::from(status));
                    }
                    Err(status) => match self.backoff.retry_after(Error::from(status)).await {
                        Ok(()) => continue,
                        Err(error) => return self.fail(error),
                    },
                },
            };
            let failure = match messages.next().await {
                Some(Ok(message)) => match self.assembler.push(message) {
                    Ok(Some(neuron)) => {
                        self.backoff.reset();
                        self.request.cursor.clone_from(&neuron.cursor);
                        return Some(Ok(neuron));
                    }
                    Ok(None) => continue,
                    Err(malformed) => return self.fail(malformed),
                },
                Some(Err(status)) => Error::from(status),
                None => match self.assembler.in_progress() {
                    None => {
                        self.finished = true;
                        return None;
                    }
                    Some(id) => Error::from(Status::unavailable(format!(
                        "the stream ended in the middle of neuron {}:{}",
                        id.layer_index, id.neuron_index
                    ))),
                },
            };
            self.messages = None;
            self.assembler.discard();
            if self.hand_over
                && failure
                    .status()
                    .is_some_and(|s| is_server_failure(s.status()))
            {
                return self.fail(failure);
            }
            if let Err(error) = self.backoff.retry_after(failure).await {
                return self.fail(error);
            }
        }
    }

    /// Opens a call from the current cursor.
    fn open(
        &self,
    ) -> impl Future<Output = Result<BoxStream<'static, Result<pb::NeuronSplits, Status>>, Status>>
    + Send
    + 'static {
        let deadline = Deadline::start(self.calls.timeout);
        let route = self.route.clone();
        let key = self.key;
        let request = deadline.request(self.request.clone());
        async move {
            let dataset = request.get_ref().dataset.clone();
            let key = key.map(|id| RouteKey::new(&dataset, id));
            let open = route.attempt(key, |mut stub| async move {
                stub.stream_neuron_splits(request).await
            });
            let response = deadline.run(open).await?;
            Ok(deadline.bound(response.into_inner()))
        }
    }

    /// Waits before resuming after `error`, or gives it back when it is final.
    fn fail(&mut self, error: Error) -> Option<Result<NeuronSplits>> {
        self.finished = true;
        self.messages = None;
        Some(Err(error))
    }
}

/// Puts neurons back together from the messages of `StreamNeuronSplits`.
#[derive(Debug)]
pub(crate) struct Assembler {
    /// The splits requested, in request order: every message carries these.
    splits: Vec<i32>,
    /// The neuron whose parts are being gathered, and its records so far.
    partial: Option<(NeuronId, Vec<pb::SplitRecords>)>,
}

fn malformed(what: &'static str) -> Error {
    Error::MalformedResponse { what }
}

impl Assembler {
    pub(crate) fn new(splits: Vec<i32>) -> Assembler {
        Assembler {
            splits,
            partial: None,
        }
    }

    /// The neuron whose first parts have arrived but not its last.
    pub(crate) fn in_progress(&self) -> Option<NeuronId> {
        self.partial.as_ref().map(|(id, _)| *id)
    }

    /// Forgets the parts of the neuron in progress.
    pub(crate) fn discard(&mut self) {
        self.partial = None;
    }

    /// Adds a message: the neuron it completes, if any.
    pub(crate) fn push(&mut self, message: pb::NeuronSplits) -> Result<Option<NeuronSplits>> {
        let id = message
            .neuron_id
            .ok_or(malformed("NeuronSplits without a neuron_id"))?;
        if let Some(error) = message.error {
            if self.partial.is_some() {
                return Err(malformed(
                    "NeuronSplits with an error between the parts of another neuron",
                ));
            }
            if message.continues || !message.splits.is_empty() {
                return Err(malformed("NeuronSplits with an error and records"));
            }
            if message.cursor.is_empty() {
                return Err(malformed(
                    "the last NeuronSplits of a neuron without a cursor",
                ));
            }
            return Ok(Some(NeuronSplits {
                neuron_id: id,
                splits: Err(StatusError::from(error)),
                cursor: message.cursor,
            }));
        }
        let in_order = message.splits.len() == self.splits.len()
            && message
                .splits
                .iter()
                .zip(&self.splits)
                .all(|(got, &wanted)| got.split == wanted);
        if !in_order {
            return Err(malformed(
                "NeuronSplits whose splits are not the requested ones in request order",
            ));
        }
        let records = match self.partial.take() {
            None => message.splits,
            Some((partial_id, mut records)) => {
                if partial_id != id {
                    return Err(malformed(
                        "NeuronSplits of one neuron before the last part of another",
                    ));
                }
                for (gathered, part) in records.iter_mut().zip(message.splits) {
                    gathered.records.extend(part.records);
                }
                records
            }
        };
        if message.continues {
            self.partial = Some((id, records));
            return Ok(None);
        }
        if message.cursor.is_empty() {
            return Err(malformed(
                "the last NeuronSplits of a neuron without a cursor",
            ));
        }
        Ok(Some(NeuronSplits {
            neuron_id: id,
            splits: Ok(records),
            cursor: message.cursor,
        }))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::neuron_id;

    /// The neurons a selection names, in order (ranges with `neurons` only).
    fn enumerate(selection: &Selection) -> Vec<(u32, u32)> {
        match selection {
            Selection::Neurons(ids) => ids
                .iter()
                .map(|id| (id.layer_index, id.neuron_index))
                .collect(),
            Selection::Range {
                layers,
                neurons: Some(neurons),
            } => layers
                .clone()
                .flat_map(|layer| neurons.clone().map(move |neuron| (layer, neuron)))
                .collect(),
            Selection::Range { neurons: None, .. } => unreachable!("not enumerable"),
        }
    }

    proptest::proptest! {
        #[test]
        fn shards_are_disjoint_complete_and_balanced(
            layers in 0u32..6,
            start in 0u32..50,
            len in 0u32..200,
            count in 1u32..20,
            list in proptest::collection::vec((0u32..4, 0u32..100), 0..300),
        ) {
            let range = Selection::Range { layers: 0..layers, neurons: Some(start..start + len) };
            let list = Selection::Neurons(list.into_iter().map(|(l, n)| neuron_id(l, n)).collect());
            for selection in [range, list] {
                let whole = enumerate(&selection);
                let mut parts = Vec::new();
                let mut sizes = Vec::new();
                for index in 0..count {
                    let part = enumerate(&selection.shard(index, count).unwrap());
                    sizes.push(part.len());
                    // Stable: the same part every time.
                    proptest::prop_assert_eq!(&part, &enumerate(&selection.shard(index, count).unwrap()));
                    parts.extend(part);
                }
                let mut sorted_parts = parts.clone();
                sorted_parts.sort_unstable();
                let mut sorted_whole = whole.clone();
                sorted_whole.sort_unstable();
                // Together exactly the whole (lists may repeat a neuron: counted as many times).
                proptest::prop_assert_eq!(sorted_parts, sorted_whole);
                let (least, most) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                let per_layer = if matches!(selection, Selection::Range { .. }) { layers as usize } else { 1 };
                proptest::prop_assert!(most - least <= per_layer.max(1), "{sizes:?}");
            }
        }
    }

    #[test]
    fn shard_refuses_what_it_cannot_cut() {
        let all = Selection::Range {
            layers: 0..2,
            neurons: Some(0..10),
        };
        assert_eq!(
            all.shard(2, 2),
            Err(ShardError::Index { index: 2, count: 2 })
        );
        assert_eq!(
            all.shard(0, 0),
            Err(ShardError::Index { index: 0, count: 0 })
        );
        assert_eq!(
            ShardError::Index { index: 4, count: 4 }.to_string(),
            "shard 4/4 does not exist: the index counts from 0 and is below the count (0/4 to 3/4)"
        );
        let listed = Selection::Range {
            layers: 0..2,
            neurons: None,
        };
        assert_eq!(listed.shard(0, 2), Err(ShardError::Listed));
    }

    const SPLITS: [Split; 2] = [Split::Train, Split::Valid];

    fn new_assembler() -> Assembler {
        Assembler::new(SPLITS.iter().map(|&s| i32::from(s)).collect())
    }

    /// A record whose single token names it.
    fn entry(name: &str) -> pb::SplitActivationRecord {
        pb::SplitActivationRecord {
            record: Some(pb::ActivationRecord {
                tokens: vec![name.to_owned()],
                activations: vec![1.0],
                ..Default::default()
            }),
            source: pb::RecordSource::TopActivating.into(),
            source_index: 0,
        }
    }

    /// A part of neuron `(layer, neuron)` with these records per split.
    fn part(
        (layer, neuron): (u32, u32),
        records: [&[&str]; 2],
        continues: bool,
        cursor: &str,
    ) -> pb::NeuronSplits {
        pb::NeuronSplits {
            neuron_id: Some(neuron_id(layer, neuron)),
            splits: SPLITS
                .iter()
                .zip(records)
                .map(|(&split, names)| pb::SplitRecords {
                    split: split.into(),
                    records: names.iter().map(|name| entry(name)).collect(),
                })
                .collect(),
            error: None,
            continues,
            cursor: cursor.to_owned(),
        }
    }

    fn names(neuron: &NeuronSplits, split: Split) -> Vec<String> {
        neuron
            .records(split)
            .unwrap()
            .iter()
            .map(|entry| entry.record.as_ref().unwrap().tokens[0].clone())
            .collect()
    }

    fn malformed_what(result: Result<Option<NeuronSplits>>) -> &'static str {
        match result {
            Err(Error::MalformedResponse { what }) => what,
            other => panic!("expected a malformed response, got {other:?}"),
        }
    }

    #[test]
    fn a_single_message_neuron_is_delivered_at_once() {
        let mut assembler = new_assembler();
        let neuron = assembler
            .push(part((1, 2), [&["t0", "t1"], &["v0"]], false, "c1"))
            .unwrap()
            .unwrap();
        assert_eq!(neuron.neuron_id, neuron_id(1, 2));
        assert_eq!(neuron.cursor, "c1");
        assert_eq!(names(&neuron, Split::Train), ["t0", "t1"]);
        assert_eq!(names(&neuron, Split::Valid), ["v0"]);
        assert_eq!(assembler.in_progress(), None);
    }

    #[test]
    fn parts_are_concatenated_split_by_split() {
        let mut assembler = new_assembler();
        // Train spans the first two parts; valid starts in the second; a part may hold
        // nothing of a split.
        assert!(
            assembler
                .push(part((3, 4), [&["t0", "t1"], &[]], true, ""))
                .unwrap()
                .is_none()
        );
        assert_eq!(assembler.in_progress(), Some(neuron_id(3, 4)));
        assert!(
            assembler
                .push(part((3, 4), [&["t2"], &["v0"]], true, ""))
                .unwrap()
                .is_none()
        );
        let neuron = assembler
            .push(part((3, 4), [&[], &["v1", "v2"]], false, "c34"))
            .unwrap()
            .unwrap();
        assert_eq!(names(&neuron, Split::Train), ["t0", "t1", "t2"]);
        assert_eq!(names(&neuron, Split::Valid), ["v0", "v1", "v2"]);
        assert_eq!(neuron.cursor, "c34");
        assert_eq!(assembler.in_progress(), None);

        // The next neuron starts afresh.
        let next = assembler
            .push(part((3, 5), [&["x"], &["y"]], false, "c35"))
            .unwrap()
            .unwrap();
        assert_eq!(names(&next, Split::Train), ["x"]);
    }

    #[test]
    fn a_neuron_error_is_an_item_and_keeps_its_details() {
        let mut assembler = new_assembler();
        let status = tonic_types::Status {
            code: Code::DataLoss as i32,
            message: "corrupt".to_owned(),
            details: Vec::new(),
        };
        let neuron = assembler
            .push(pb::NeuronSplits {
                neuron_id: Some(neuron_id(0, 2)),
                splits: Vec::new(),
                error: Some(status),
                continues: false,
                cursor: "c02".to_owned(),
            })
            .unwrap()
            .unwrap();
        let error = neuron.splits.as_ref().unwrap_err();
        assert_eq!(error.code(), Code::DataLoss);
        assert_eq!(error.message(), "corrupt");
        assert_eq!(neuron.cursor, "c02");
        assert!(neuron.records(Split::Train).is_none());
    }

    #[test]
    fn discarded_parts_are_forgotten() {
        let mut assembler = new_assembler();
        assembler
            .push(part((1, 1), [&["stale"], &[]], true, ""))
            .unwrap();
        assembler.discard();
        assert_eq!(assembler.in_progress(), None);
        // Re-read from the start after a resume.
        assembler
            .push(part((1, 1), [&["t0"], &[]], true, ""))
            .unwrap();
        let neuron = assembler
            .push(part((1, 1), [&["t1"], &["v0"]], false, "c"))
            .unwrap()
            .unwrap();
        assert_eq!(names(&neuron, Split::Train), ["t0", "t1"]);
    }

    #[test]
    fn parts_that_do_not_fit_together_are_malformed() {
        // Another neuron before the last part.
        let mut assembler = new_assembler();
        assembler
            .push(part((1, 1), [&["a"], &[]], true, ""))
            .unwrap();
        let what = malformed_what(assembler.push(part((1, 2), [&["b"], &[]], false, "c")));
        assert!(what.contains("another"), "{what}");

        // Splits in another order, or missing.
        let mut swapped = part((1, 1), [&["a"], &["b"]], false, "c");
        swapped.splits.reverse();
        malformed_what(new_assembler().push(swapped));
        let mut short = part((1, 1), [&["a"], &["b"]], false, "c");
        short.splits.pop();
        malformed_what(new_assembler().push(short));

        // An error in the middle of a neuron's parts.
        let mut assembler = new_assembler();
        assembler
            .push(part((1, 1), [&["a"], &[]], true, ""))
            .unwrap();
        let error = pb::NeuronSplits {
            neuron_id: Some(neuron_id(1, 2)),
            error: Some(tonic_types::Status::default()),
            cursor: "c".to_owned(),
            ..Default::default()
        };
        malformed_what(assembler.push(error));

        // No neuron id; a last part without a cursor.
        let mut anonymous = part((1, 1), [&[], &[]], false, "c");
        anonymous.neuron_id = None;
        malformed_what(new_assembler().push(anonymous));
        malformed_what(new_assembler().push(part((1, 1), [&[], &[]], false, "")));
    }

    #[test]
    fn selections_become_their_messages() {
        use pb::neuron_selection::Selection as Pb;
        let block = pb::NeuronSelection::from(Selection::Range {
            layers: 2..4,
            neurons: Some(10..20),
        });
        assert_eq!(
            block.selection,
            Some(Pb::Range(pb::NeuronRange {
                layer_start: 2,
                layer_end: 4,
                neuron_start: 10,
                neuron_end: Some(20),
            }))
        );
        let listed = pb::NeuronSelection::from(Selection::Range {
            layers: 0..48,
            neurons: None,
        });
        assert_eq!(
            listed.selection,
            Some(Pb::Range(pb::NeuronRange {
                layer_start: 0,
                layer_end: 48,
                neuron_start: 0,
                neuron_end: None,
            }))
        );
        let ids = vec![neuron_id(1, 1), neuron_id(0, 3), neuron_id(1, 1)];
        let list = pb::NeuronSelection::from(Selection::from(ids.clone()));
        assert_eq!(
            list.selection,
            Some(Pb::Neurons(pb::NeuronIdList { neuron_ids: ids }))
        );
    }
}
