//! A bulk stream over several servers: the selection's neurons are cut by owner, each server
//! streams its own (one `StreamNeuronSplits` of a neuron list at a time), and the parts are
//! merged back into selection order, or yielded as they arrive.
//!
//! When a server fails in the middle, the neurons it has not delivered go to their next owner
//! among the servers left, and streams are opened there for them: every neuron is delivered
//! once, none twice. Each part is read by its own task into a small bounded channel, so a
//! server whose neurons are not wanted yet (in order) is slowed by backpressure, not buffered
//! without end.

use std::collections::VecDeque;
use std::sync::Arc;

use activations_proto::cursor::{Cursor, StreamIdentity};
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Status;

use super::{NeuronSplits, NeuronSplitsStream};
use crate::error::{Error, Result};
use crate::pb::{self, NeuronId};
use crate::routing::pool::{Pool, Replica, candidates, owner_among};
use crate::routing::{Route, RouteKey, is_server_failure};
use crate::settings::CallSettings;

/// What a bulk stream over several servers asks before it starts: the default dataset's name
/// (for cursors) and the listing of a range of listed neurons. The client answers, through its
/// own calls and retries.
pub(crate) trait Listing: Send + Sync + 'static {
    /// The name of the server's default dataset.
    fn default_dataset(&self) -> BoxFuture<'_, Result<String>>;
    /// The dataset's layers, ascending.
    fn layers(&self) -> BoxFuture<'_, Result<Vec<u32>>>;
    /// A layer's neurons, ascending.
    fn neurons(&self, layer: u32) -> BoxFuture<'_, Result<Vec<u32>>>;
}

/// Neurons per request: well below the server's `--bulk-max-listed` (100,000 by default).
const NEURONS_PER_REQUEST: usize = 10_000;
/// Neurons a part's task may hold ready before the merge takes them.
const PART_BUFFER: usize = 16;

/// The items of `request` over the servers of `pool`: in selection order with `ordered` (each
/// with a cursor of the whole request, which resumes it on one server or several), else as
/// they arrive (cursors empty).
pub(crate) fn stream(
    pool: Pool,
    calls: CallSettings,
    request: pb::StreamNeuronSplitsRequest,
    ordered: bool,
    listing: Arc<dyn Listing>,
) -> NeuronSplitsStream {
    let start = async move {
        match Spread::start(pool, calls, request, ordered, listing.as_ref()).await {
            Ok(spread) => stream::unfold(spread, |mut spread| async move {
                let item = spread.next().await?;
                Some((item, spread))
            })
            .boxed(),
            Err(error) => stream::once(async move { Err(error) }).boxed(),
        }
    };
    stream::once(start).flatten().boxed()
}

/// One part: the neurons one server streams.
struct Part {
    replica: Replica,
    /// Relative positions of the neurons it has not delivered, ascending.
    positions: VecDeque<usize>,
    items: mpsc::Receiver<Result<NeuronSplits>>,
    task: JoinHandle<()>,
}

impl Drop for Part {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Spread {
    pool: Pool,
    calls: CallSettings,
    /// The request, for the dataset, splits and slice parameters of every part.
    request: pb::StreamNeuronSplitsRequest,
    /// The identity of the whole stream, for cursors (in order only).
    identity: Option<StreamIdentity>,
    /// The neurons still to deliver at the start, in selection order.
    ids: Vec<NeuronId>,
    /// The position in the selection of `ids[0]`.
    first_position: u64,
    /// The part streaming each neuron (an index into `parts`).
    owner: Vec<usize>,
    parts: Vec<Option<Part>>,
    /// In order: the next relative position to deliver.
    next: usize,
    delivered: usize,
    ordered: bool,
    /// Servers lost so far; past the limit the stream ends with the last failure.
    failovers: u32,
    finished: bool,
}

impl Spread {
    async fn start(
        pool: Pool,
        calls: CallSettings,
        request: pb::StreamNeuronSplitsRequest,
        ordered: bool,
        listing: &dyn Listing,
    ) -> Result<Spread> {
        pool.ready_replicas().await?;
        let (ids, first_position, identity) = expand(listing, &request).await?;
        let mut spread = Spread {
            pool,
            calls,
            request,
            identity: ordered.then_some(identity),
            owner: vec![usize::MAX; ids.len()],
            ids,
            first_position,
            parts: Vec::new(),
            next: 0,
            delivered: 0,
            ordered,
            failovers: 0,
            finished: false,
        };
        let all: Vec<usize> = (0..spread.ids.len()).collect();
        spread.assign(&all);
        Ok(spread)
    }

    /// Gives the neurons at `positions` (ascending) to their owners among the servers that take
    /// calls, one new part per server.
    fn assign(&mut self, positions: &[usize]) {
        let replicas = self.pool.replicas();
        let candidates = candidates(&replicas);
        let mut groups: Vec<(Replica, Vec<usize>)> = Vec::new();
        for &position in positions {
            let key = RouteKey::new(&self.request.dataset, self.ids[position]);
            let owner = owner_among(&candidates, &key);
            match groups
                .iter_mut()
                .find(|(replica, _)| replica.address == owner.address)
            {
                Some((_, group)) => group.push(position),
                None => groups.push((owner.clone(), vec![position])),
            }
        }
        for (replica, group) in groups {
            let index = self.parts.len();
            for &position in &group {
                self.owner[position] = index;
            }
            let ids: Vec<NeuronId> = group.iter().map(|&p| self.ids[p]).collect();
            let (sender, items) = mpsc::channel(PART_BUFFER);
            let task = tokio::spawn(run_part(
                replica.clone(),
                self.calls,
                self.request.clone(),
                ids,
                sender,
            ));
            self.parts.push(Some(Part {
                replica,
                positions: group.into(),
                items,
                task,
            }));
        }
    }

    async fn next(&mut self) -> Option<Result<NeuronSplits>> {
        if self.finished {
            return None;
        }
        loop {
            if self.delivered == self.ids.len() {
                self.finished = true;
                return None;
            }
            let (index, item) = if self.ordered {
                let index = self.owner[self.next];
                let part = self.parts[index]
                    .as_mut()
                    .expect("the owner of a neuron to come");
                (index, part.items.recv().await)
            } else {
                self.any_item().await
            };
            let outcome = match item {
                Some(Ok(neuron)) => return Some(Ok(self.deliver(index, neuron))),
                Some(Err(error)) => error,
                None => Error::from(Status::unavailable(
                    "a server's stream ended before its last neuron",
                )),
            };
            let server_failed = outcome
                .status()
                .is_some_and(|status| is_server_failure(status.status()));
            if !server_failed || !self.fail_over(index) {
                self.finished = true;
                self.parts.clear();
                return Some(Err(outcome));
            }
        }
    }

    /// The next item of any part with neurons left, as it arrives.
    async fn any_item(&mut self) -> (usize, Option<Result<NeuronSplits>>) {
        let (indices, waits): (Vec<usize>, Vec<_>) = self
            .parts
            .iter_mut()
            .enumerate()
            .filter_map(|(index, part)| {
                let part = part.as_mut().filter(|part| !part.positions.is_empty())?;
                Some((index, Box::pin(part.items.recv())))
            })
            .unzip();
        let (item, which, _) = futures::future::select_all(waits).await;
        (indices[which], item)
    }

    /// Takes `neuron`, the next of part `index`.
    fn deliver(&mut self, index: usize, mut neuron: NeuronSplits) -> NeuronSplits {
        let part = self.parts[index].as_mut().expect("a part that delivered");
        let position = part
            .positions
            .pop_front()
            .expect("a part delivers only the neurons it was given");
        if part.positions.is_empty() {
            self.parts[index] = None;
        }
        self.delivered += 1;
        if self.ordered {
            self.next = position + 1;
        }
        neuron.cursor = match &self.identity {
            Some(identity) => {
                let id = self.ids[position];
                Cursor::new(
                    *identity,
                    self.first_position + position as u64,
                    id.layer_index,
                    id.neuron_index,
                )
                .encode()
            }
            None => String::new(),
        };
        neuron
    }

    /// After part `index`'s server failed: takes the server out and gives the neurons it did not
    /// deliver to their next owners. False when too many servers were lost already.
    fn fail_over(&mut self, index: usize) -> bool {
        let Some(part) = self.parts[index].take() else {
            return false;
        };
        self.pool.eject(&part.replica);
        self.failovers += 1;
        // Each server may fail once per attempt of the policy.
        let limit = self.calls.retry.max_attempts.max(1) * self.pool.replicas().len().max(1) as u32;
        if self.failovers > limit {
            return false;
        }
        let rest: Vec<usize> = part.positions.iter().copied().collect();
        self.assign(&rest);
        true
    }
}

/// Streams `ids` from `replica`, `NEURONS_PER_REQUEST` at a time, into `sender`; ends after
/// the first error.
async fn run_part(
    replica: Replica,
    calls: CallSettings,
    template: pb::StreamNeuronSplitsRequest,
    ids: Vec<NeuronId>,
    sender: mpsc::Sender<Result<NeuronSplits>>,
) {
    for chunk in ids.chunks(NEURONS_PER_REQUEST) {
        let request = pb::StreamNeuronSplitsRequest {
            selection: Some(crate::Selection::Neurons(chunk.to_vec()).into()),
            cursor: String::new(),
            ..template.clone()
        };
        let route = Route::One(Box::new(replica.stub.clone()));
        let mut items = super::stream_on(route, calls, request, true);
        while let Some(item) = items.next().await {
            let failed = item.is_err();
            if sender.send(item).await.is_err() || failed {
                return;
            }
        }
    }
}

/// The neurons `request` selects after its cursor, in order; the position in the selection of
/// the first; and the identity of the stream, for cursors.
async fn expand(
    listing: &dyn Listing,
    request: &pb::StreamNeuronSplitsRequest,
) -> Result<(Vec<NeuronId>, u64, StreamIdentity)> {
    use pb::neuron_selection::Selection as Pb;
    let dataset = match request.dataset.as_str() {
        "" => listing.default_dataset().await?,
        name => name.to_owned(),
    };
    let identity = StreamIdentity::of(&dataset, request);
    let resume =
        match request.cursor.as_str() {
            "" => None,
            text => Some(Cursor::decode(text, identity).map_err(|error| {
                Error::from(Status::invalid_argument(format!("cursor: {error}")))
            })?),
        };
    let selection = request
        .selection
        .as_ref()
        .and_then(|selection| selection.selection.as_ref())
        .ok_or_else(|| Error::from(Status::invalid_argument("selection: is required")))?;
    let mut ids: Vec<NeuronId> = match selection {
        Pb::Neurons(list) => list.neuron_ids.clone(),
        Pb::Range(range) => match range.neuron_end {
            Some(end) => (range.layer_start..range.layer_end)
                .flat_map(|layer| {
                    (range.neuron_start..end).map(move |neuron| crate::neuron_id(layer, neuron))
                })
                .collect(),
            None => listed(listing, range).await?,
        },
    };
    let listed_range = matches!(selection, Pb::Range(range) if range.neuron_end.is_none());
    let Some(cursor) = resume else {
        return Ok((ids, 0, identity));
    };
    let first = cursor.position.saturating_add(1);
    let at = crate::neuron_id(cursor.layer_index, cursor.neuron_index);
    if listed_range {
        // As the server resumes a listed range: after the cursor's neuron, whose listing may
        // have changed since.
        let key = |id: &NeuronId| (id.layer_index, id.neuron_index);
        ids.retain(|id| key(id) > key(&at));
    } else {
        let fits = usize::try_from(cursor.position)
            .ok()
            .and_then(|position| ids.get(position))
            == Some(&at);
        if !fits {
            return Err(Error::from(Status::invalid_argument(format!(
                "cursor: names {}/{} at position {}, which is not where this selection has it: \
                 resume with a cursor this stream issued, unchanged",
                at.layer_index, at.neuron_index, cursor.position
            ))));
        }
        ids.drain(..first as usize);
    }
    Ok((ids, first, identity))
}

/// Every neuron the dataset lists in `range`'s layers from its `neuron_start`, in order.
async fn listed(listing: &dyn Listing, range: &pb::NeuronRange) -> Result<Vec<NeuronId>> {
    let mut ids = Vec::new();
    for layer in listing.layers().await? {
        if !(range.layer_start..range.layer_end).contains(&layer) {
            continue;
        }
        let neurons = listing.neurons(layer).await?;
        ids.extend(
            neurons
                .into_iter()
                .filter(|&neuron| neuron >= range.neuron_start)
                .map(|neuron| crate::neuron_id(layer, neuron)),
        );
    }
    Ok(ids)
}
