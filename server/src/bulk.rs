//! `StreamNeuronSplits`: the requested splits of many neurons in one resumable stream.
//!
//! The selection becomes a lazy sequence of neurons; each is read and cut into its splits by a
//! task, and a window of those tasks runs ahead of the client ([`ReadAhead`], which also keeps
//! selection order): at least [`BulkSettings::read_ahead`], wider as the storage's latency
//! calls for, within the server's byte budget. tonic polls the stream only when the connection
//! can take more, so a slow client holds the server at its window in memory, not the
//! selection; the tasks keep reading while the connection sends. Dropping the stream (a
//! cancelled call) aborts the reads in flight.
//!
//! A neuron whose records exceed [`BulkSettings::message_bytes`] is sent in several messages;
//! only the last carries the cursor, so a resumed stream never starts inside a neuron.

use std::{pin::Pin, sync::Arc};

use activations_proto::{
    cursor::{Cursor, StreamIdentity},
    pb, wire,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::Status;
use tracing::Instrument as _;

use activations_format::{
    neuron::NeuronKey,
    splits::{Split, SplitPlan, split_record},
};

use crate::{
    dataset::Dataset,
    datasets::Datasets,
    error::{ServiceError, Subject},
    read_ahead::{Budget, ReadAhead},
    store::{StoreError, heap_bytes},
    telemetry::{self, Failure},
};

/// Limits of `StreamNeuronSplits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkSettings {
    /// Neurons read and cut ahead of the client, per stream, at least: the window grows from
    /// there as the storage's latency calls for (see [`crate::read_ahead`]).
    pub read_ahead: usize,
    /// Bytes of read-ahead the whole server may hold: reads in flight and neurons read but not
    /// yet sent, over every stream.
    pub read_ahead_bytes: u64,
    /// A neuron's records are split over several messages beyond this many bytes.
    pub message_bytes: usize,
    /// Most neurons an explicit list may name.
    pub max_listed_neurons: usize,
}

impl BulkSettings {
    pub const DEFAULT: BulkSettings = BulkSettings {
        read_ahead: 16,
        read_ahead_bytes: 128 << 20,
        message_bytes: 1 << 20,
        max_listed_neurons: 100_000,
    };
}

impl Default for BulkSettings {
    fn default() -> Self {
        BulkSettings::DEFAULT
    }
}

/// The response stream of `StreamNeuronSplits`.
pub type NeuronSplitsStream =
    Pin<Box<dyn Stream<Item = Result<wire::NeuronSplits, Status>> + Send>>;

/// A single record larger than this cannot travel in a message a default client accepts (4 MiB).
const MAX_RECORD_BYTES: usize = 3 << 20;

/// Validates the request and returns the stream of its neurons' splits.
pub async fn stream(
    datasets: &Datasets,
    settings: &BulkSettings,
    budget: &Budget,
    request: wire::StreamNeuronSplitsRequest,
) -> Result<NeuronSplitsStream, ServiceError> {
    let dataset = datasets.get(&request.dataset)?.clone();
    let splits = parse_splits(&request.splits)?;
    let n = request
        .slice_params
        .as_ref()
        .and_then(|p| p.n_examples_per_split);
    let selection = Selection::parse(request.selection.as_ref(), settings)?;
    let stream = stream_identity(&dataset.name, &request);
    let resume = match request.cursor.as_str() {
        "" => None,
        cursor => Some(
            Cursor::decode(cursor, stream)
                .map_err(|e| ServiceError::invalid("cursor", e.to_string()))?,
        ),
    };
    let keys = selection.keys(dataset.clone(), resume).await?;
    let job = Arc::new(Job {
        dataset,
        splits,
        n,
        stream,
        message_bytes: settings.message_bytes.max(1),
    });
    let read = move |item: Keyed| {
        let job = job.clone();
        async move {
            let (position, key) = match item {
                Ok(keyed) => keyed,
                Err(error) => return (Err(error), 0),
            };
            // Each read runs as a task of its own, so the neurons ahead are read and parsed
            // while the connection is busy sending, not only when it polls.
            let name = job.dataset.name.clone();
            let read =
                tokio::spawn(async move { job.neuron(position, key).await }.in_current_span());
            AbortOnDrop(read).await.unwrap_or_else(|join| {
                let error = ServiceError::store(
                    &name,
                    Subject::Neuron(key),
                    StoreError::Internal {
                        path: String::new(),
                        detail: format!("reading the neuron failed: {join}"),
                    },
                );
                (Err(error), 0)
            })
        }
    };
    let messages = ReadAhead::new(keys, settings.read_ahead, budget.clone(), weigh, read)
        .map(|(messages, _)| messages)
        .map_ok(|messages| futures::stream::iter(messages.into_iter().map(Ok::<_, ServiceError>)))
        .try_flatten()
        .map_err(Status::from);
    Ok(Box::pin(stop_after_error(messages)))
}

/// The bytes a neuron held while it was read (its parsed record) and holds while it waits to
/// be sent (its messages): what its share of the read-ahead budget is estimated from.
fn weigh((messages, record): &Read) -> usize {
    let waiting = messages.as_ref().map_or(0, |messages| {
        messages.iter().map(Message::encoded_len).sum()
    });
    record + waiting
}

/// A spawned task that is aborted when its handle is dropped: a cancelled stream stops the
/// reads it had started.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Ends a stream after its first error, so nothing follows a failure.
fn stop_after_error<T: Send, E: Send>(
    stream: impl Stream<Item = Result<T, E>> + Send,
) -> impl Stream<Item = Result<T, E>> + Send {
    stream.scan(false, |failed, item| {
        let out = if *failed {
            None
        } else {
            *failed = item.is_err();
            Some(item)
        };
        futures::future::ready(out)
    })
}

fn parse_splits(values: &[i32]) -> Result<Vec<Split>, ServiceError> {
    if values.is_empty() {
        return Err(ServiceError::invalid(
            "splits",
            "name at least one of SPLIT_TRAIN, SPLIT_CALIBRATION, SPLIT_VALID, SPLIT_TEST",
        ));
    }
    let mut splits = Vec::with_capacity(values.len());
    for &value in values {
        let split =
            Split::try_from(value).map_err(|e| ServiceError::invalid("splits", e.to_string()))?;
        if splits.contains(&split) {
            return Err(ServiceError::invalid(
                "splits",
                format!("{split} is named twice"),
            ));
        }
        splits.push(split);
    }
    Ok(splits)
}

/// The neurons of a request, before resuming.
#[derive(Debug)]
enum Selection {
    List(Vec<NeuronKey>),
    /// Layers and neurons with a known end: every pair is read.
    Block {
        layers: std::ops::Range<u32>,
        neurons: std::ops::Range<u32>,
    },
    /// Layers, and each layer's listed neurons from `neuron_start` on.
    Listed {
        layers: std::ops::Range<u32>,
        neuron_start: u32,
    },
}

/// A neuron's place in the selection, and the neuron.
type Keyed = Result<(u64, NeuronKey), ServiceError>;

impl Selection {
    fn parse(
        selection: Option<&wire::NeuronSelection>,
        settings: &BulkSettings,
    ) -> Result<Selection, ServiceError> {
        use wire::neuron_selection::Selection as Pb;
        match selection.and_then(|s| s.selection.as_ref()) {
            None => Err(ServiceError::invalid(
                "selection",
                "is required: a list of neuron_ids or a range",
            )),
            Some(Pb::Neurons(list)) => {
                if list.neuron_ids.len() > settings.max_listed_neurons {
                    return Err(ServiceError::invalid(
                        "selection.neurons",
                        format!(
                            "names {} neurons; at most {} per request (use a range, or split \
                             the list over several requests)",
                            list.neuron_ids.len(),
                            settings.max_listed_neurons
                        ),
                    ));
                }
                Ok(Selection::List(
                    list.neuron_ids.iter().map(NeuronKey::from).collect(),
                ))
            }
            Some(Pb::Range(range)) => {
                if range.layer_start > range.layer_end {
                    return Err(ServiceError::invalid(
                        "selection.range",
                        format!(
                            "layer_start {} is after layer_end {}",
                            range.layer_start, range.layer_end
                        ),
                    ));
                }
                let layers = range.layer_start..range.layer_end;
                match range.neuron_end {
                    Some(end) if range.neuron_start > end => Err(ServiceError::invalid(
                        "selection.range",
                        format!(
                            "neuron_start {} is after neuron_end {end}",
                            range.neuron_start
                        ),
                    )),
                    Some(end) => Ok(Selection::Block {
                        layers,
                        neurons: range.neuron_start..end,
                    }),
                    None => Ok(Selection::Listed {
                        layers,
                        neuron_start: range.neuron_start,
                    }),
                }
            }
        }
    }

    /// The neuron at `position` of a list or a block, whose order needs no listing; `None`
    /// past their end, and for listed ranges.
    fn key_at(&self, position: u64) -> Option<NeuronKey> {
        match self {
            Selection::List(keys) => keys.get(usize::try_from(position).ok()?).copied(),
            Selection::Block { layers, neurons } => {
                let per_layer = u64::from(neurons.end - neurons.start);
                let total = u64::from(layers.end - layers.start) * per_layer;
                // position < total, so both quotient and remainder fit their u32 ranges.
                (position < total).then(|| {
                    NeuronKey::new(
                        layers.start + (position / per_layer) as u32,
                        neurons.start + (position % per_layer) as u32,
                    )
                })
            }
            Selection::Listed { .. } => None,
        }
    }

    /// Checks that `cursor` names a place of this selection, so that resuming neither repeats
    /// nor skips a neuron: in a list or a block, the neuron at the cursor's position is the
    /// cursor's neuron; in a listed range, the neuron is one of the range. A cursor edited by
    /// hand, or re-encoded with other numbers, fails here.
    fn check_resume(&self, cursor: &Cursor) -> Result<(), ServiceError> {
        let neuron = NeuronKey::new(cursor.layer_index, cursor.neuron_index);
        let fits = match self {
            Selection::List(_) | Selection::Block { .. } => {
                self.key_at(cursor.position) == Some(neuron)
            }
            Selection::Listed {
                layers,
                neuron_start,
            } => {
                layers.contains(&neuron.layer)
                    && neuron.neuron >= *neuron_start
                    && cursor.position < u64::MAX
            }
        };
        if fits {
            return Ok(());
        }
        Err(ServiceError::invalid(
            "cursor",
            format!(
                "names {neuron} at position {}, which is not where this selection has it: \
                 resume with a cursor this stream issued, unchanged",
                cursor.position
            ),
        ))
    }

    /// The neurons to serve, in selection order, after the cursor's neuron when resuming.
    async fn keys(
        self,
        dataset: Arc<Dataset>,
        resume: Option<Cursor>,
    ) -> Result<Pin<Box<dyn Stream<Item = Keyed> + Send>>, ServiceError> {
        // Lists (which may repeat neurons) and blocks (whose order is arithmetic) resume by
        // position; listed ranges, whose listing may change between calls, resume after the
        // cursor's neuron, as they are ascending.
        if let Some(cursor) = &resume {
            self.check_resume(cursor)?;
        }
        // Checked above: a resumed position is below the end of the selection, or u64::MAX.
        let first = resume.as_ref().map_or(0, |c| c.position + 1);
        let after = resume.map(|c| NeuronKey::new(c.layer_index, c.neuron_index));
        let past = move |key: NeuronKey| after.is_none_or(|after| key > after);
        match self {
            Selection::List(keys) => {
                let keyed = keys
                    .into_iter()
                    .enumerate()
                    .map(|(i, key)| Ok((i as u64, key)))
                    .skip(first as usize);
                Ok(Box::pin(futures::stream::iter(keyed)))
            }
            Selection::Block { .. } => {
                let keyed = (first..).map_while(move |i| self.key_at(i).map(|key| Ok((i, key))));
                Ok(Box::pin(futures::stream::iter(keyed)))
            }
            Selection::Listed {
                layers,
                neuron_start,
            } => {
                let all_layers = dataset
                    .store
                    .layers()
                    .await
                    .map_err(|e| ServiceError::store(&dataset.name, Subject::Layers, e))?;
                let wanted: Vec<u32> = all_layers
                    .into_iter()
                    .filter(|layer| layers.contains(layer))
                    .filter(|&layer| after.is_none_or(|after| layer >= after.layer))
                    .collect();
                let keyed = futures::stream::iter(wanted)
                    .then(move |layer| {
                        let dataset = dataset.clone();
                        async move {
                            match dataset.store.neurons(layer).await {
                                Ok(neurons) => Ok(neurons),
                                // Listed, then gone: nothing to serve in it.
                                Err(StoreError::NotFound { .. }) => Ok(Vec::new()),
                                Err(e) => Err(ServiceError::store(
                                    &dataset.name,
                                    Subject::Layer(layer),
                                    e,
                                )),
                            }
                            .map(|neurons| {
                                neurons
                                    .into_iter()
                                    .filter(|&n| n >= neuron_start)
                                    .map(move |n| NeuronKey::new(layer, n))
                                    .filter(|&key| past(key))
                                    .collect::<Vec<_>>()
                            })
                        }
                    })
                    .map_ok(|keys| {
                        futures::stream::iter(keys.into_iter().map(Ok::<_, ServiceError>))
                    })
                    .try_flatten()
                    .enumerate()
                    .map(move |(i, item)| item.map(|key| (first + i as u64, key)));
                Ok(Box::pin(keyed))
            }
        }
    }
}

/// What every neuron of one stream is cut into.
#[derive(Debug)]
struct Job {
    dataset: Arc<Dataset>,
    splits: Vec<Split>,
    n: Option<u32>,
    stream: StreamIdentity,
    message_bytes: usize,
}

/// One neuron's messages, and the bytes its parsed record held.
type Read = (Result<Vec<wire::NeuronSplits>, ServiceError>, usize);

/// The message of a neuron that failed: its error, in a stream that goes on. The observing
/// layer never sees it, so it is logged here.
fn failed(key: NeuronKey, cursor: String, error: ServiceError) -> wire::NeuronSplits {
    let (code, reason) = error.code_and_reason();
    let message = error.to_string();
    let reason = Some(reason);
    telemetry::log_failure(code, &Failure { reason, message });
    wire::NeuronSplits {
        neuron_id: Some(key.into()),
        splits: Vec::new(),
        error: Some(rpc_status(Status::from(error))),
        continues: false,
        cursor,
    }
}

impl Job {
    /// The messages of one neuron: its splits, or its error, and the bytes its parsed record
    /// held. Errors that concern the stream rather than the neuron (storage unavailable, a
    /// bug) are returned as `Err`.
    async fn neuron(&self, position: u64, key: NeuronKey) -> Read {
        let cursor = Cursor::new(self.stream, position, key.layer, key.neuron).encode();
        match self.dataset.store.neuron(key).await {
            Ok(record) => {
                let held = heap_bytes(&record);
                (self.cut(key, cursor, &record), held)
            }
            Err(e) if is_about_the_neuron(&e) => {
                let error = ServiceError::store(&self.dataset.name, Subject::Neuron(key), e);
                (Ok(vec![failed(key, cursor, error)]), 0)
            }
            Err(e) => (
                Err(ServiceError::store(
                    &self.dataset.name,
                    Subject::Neuron(key),
                    e,
                )),
                0,
            ),
        }
    }

    /// A neuron's record cut into the stream's splits, in messages of at most `message_bytes`
    /// (the last one carrying `cursor`), or the message of its error.
    fn cut(
        &self,
        key: NeuronKey,
        cursor: String,
        record: &wire::NeuronRecord,
    ) -> Result<Vec<wire::NeuronSplits>, ServiceError> {
        let failed = |error| Ok(vec![failed(key, cursor.clone(), error)]);
        let mut plans = Vec::with_capacity(self.splits.len());
        for &split in &self.splits {
            let plan = SplitPlan::for_record(split, self.n, record);
            match plan {
                Ok(plan) => plans.push((split, plan)),
                Err(detail) => {
                    return failed(ServiceError::NotEnoughRecords {
                        dataset: self.dataset.name.clone(),
                        neuron: key,
                        detail,
                    });
                }
            }
        }
        let mut messages = Vec::new();
        let mut current = self.empty_message(key);
        let mut size = 0;
        for (i, (_, plan)) in plans.iter().enumerate() {
            for (source, index) in plan.entries() {
                let entry = split_record(record, source, index);
                let len = entry.encoded_len();
                if len > MAX_RECORD_BYTES {
                    return failed(ServiceError::invalid(
                        "selection",
                        format!(
                            "record {index} of the {} records of {key} is {len} bytes, too \
                             large for one message; read it with GetNeuronRecord",
                            source.field_name()
                        ),
                    ));
                }
                if size > 0 && size + len > self.message_bytes {
                    current.continues = true;
                    messages.push(std::mem::replace(&mut current, self.empty_message(key)));
                    size = 0;
                }
                size += len;
                current.splits[i].records.push(entry);
            }
        }
        current.cursor = cursor;
        messages.push(current);
        Ok(messages)
    }

    fn empty_message(&self, key: NeuronKey) -> wire::NeuronSplits {
        wire::NeuronSplits {
            neuron_id: Some(key.into()),
            splits: self
                .splits
                .iter()
                .map(|&split| wire::SplitRecords {
                    split: wire::Split::from(split).into(),
                    records: Vec::new(),
                })
                .collect(),
            error: None,
            continues: false,
            cursor: String::new(),
        }
    }
}

/// Whether a storage error belongs to one neuron (sent in its message) rather than to the
/// stream (which it ends, to be resumed).
fn is_about_the_neuron(error: &StoreError) -> bool {
    match error {
        StoreError::NotFound { .. }
        | StoreError::Corrupt { .. }
        | StoreError::Mismatch { .. }
        | StoreError::Unreadable { .. } => true,
        StoreError::Unavailable { .. }
        | StoreError::Denied { .. }
        | StoreError::ListingUnavailable { .. }
        | StoreError::Internal { .. } => false,
    }
}

/// A status as the `google.rpc.Status` message, details included.
fn rpc_status(status: Status) -> tonic_types::Status {
    tonic_types::Status::decode(status.details())
        .ok()
        .filter(|decoded| decoded.code == status.code() as i32)
        .unwrap_or_else(|| tonic_types::Status {
            code: status.code() as i32,
            message: status.message().to_string(),
            details: Vec::new(),
        })
}

/// The stream `request` asks for, which its cursors are bound to.
fn stream_identity(dataset: &str, request: &wire::StreamNeuronSplitsRequest) -> StreamIdentity {
    // The server's message type and the contract's encode alike (the request holds no
    // record); the cursor module reads the contract's.
    let request = pb::StreamNeuronSplitsRequest::decode(request.encode_to_vec().as_slice())
        .expect("a message decodes as the same message");
    StreamIdentity::of(dataset, &request)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A list (with repeats) or a block, small enough to hold whole.
    fn selection() -> impl Strategy<Value = Selection> {
        prop_oneof![
            prop::collection::vec((0u32..4, 0u32..4), 0..12).prop_map(|ids| Selection::List(
                ids.into_iter().map(|(l, n)| NeuronKey::new(l, n)).collect()
            )),
            (0u32..3, 0u32..3, 0u32..3, 0u32..4).prop_map(|(l0, dl, n0, dn)| Selection::Block {
                layers: l0..l0 + dl,
                neurons: n0..n0 + dn,
            }),
        ]
    }

    /// Every neuron of a list or a block, in order.
    fn all(selection: &Selection) -> Vec<NeuronKey> {
        (0..).map_while(|i| selection.key_at(i)).collect()
    }

    fn cursor(position: u64, neuron: NeuronKey) -> Cursor {
        let stream = StreamIdentity::of("d", &pb::StreamNeuronSplitsRequest::default());
        Cursor::new(stream, position, neuron.layer, neuron.neuron)
    }

    proptest! {
        /// Whatever a cursor says (one the stream issued, one with its position or neuron
        /// edited, any numbers at all), either it is refused or the stream resumes exactly
        /// after the neuron it names: nothing repeated, nothing skipped.
        #[test]
        fn no_cursor_makes_a_stream_repeat_or_skip(
            selection in selection(),
            position in prop_oneof![0u64..16, any::<u64>(), Just(u64::MAX)],
            layer in 0u32..5,
            neuron in 0u32..5,
            issued in any::<bool>(),
        ) {
            let keys = all(&selection);
            let named = match (issued, keys.get(position as usize)) {
                (true, Some(&key)) if position < keys.len() as u64 => key,
                _ => NeuronKey::new(layer, neuron),
            };
            let resumed = selection.check_resume(&cursor(position, named));
            let fits = position < keys.len() as u64 && keys[position as usize] == named;
            prop_assert_eq!(resumed.is_ok(), fits);
            if fits {
                let rest: Vec<NeuronKey> =
                    ((position + 1)..).map_while(|i| selection.key_at(i)).collect();
                prop_assert_eq!(&rest[..], &keys[position as usize + 1..]);
            }
        }
    }

    #[test]
    fn a_listed_range_refuses_a_neuron_outside_it_and_the_last_position() {
        let listed = Selection::Listed {
            layers: 2..4,
            neuron_start: 10,
        };
        assert!(
            listed
                .check_resume(&cursor(7, NeuronKey::new(3, 12)))
                .is_ok()
        );
        for (position, neuron) in [
            (7, NeuronKey::new(1, 12)),
            (7, NeuronKey::new(4, 12)),
            (7, NeuronKey::new(2, 9)),
            (u64::MAX, NeuronKey::new(2, 12)),
        ] {
            let refused = listed.check_resume(&cursor(position, neuron));
            assert!(
                matches!(
                    &refused,
                    Err(ServiceError::InvalidArgument {
                        field: "cursor",
                        ..
                    })
                ),
                "{position} {neuron}: {refused:?}"
            );
        }
    }
}
