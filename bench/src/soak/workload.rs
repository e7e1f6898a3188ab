//! The soak's callers: each loops until the deadline, making one call at a time of a kind drawn
//! at random, and checks every answer against the [`Truth`].
//!
//! | kind | call | checked |
//! | --- | --- | --- |
//! | summary | `GetNeuronSummary` | the whole summary, bit for bit |
//! | split | `StreamActivationRecords`, random split and `n` | every record, its source and index, in order; none missing on success |
//! | bulk | `StreamNeuronSplits` over a random range or list, random splits and `n`, through the SDK's auto-resuming `neuron_splits` | every neuron exactly once, in order, each split's records as for `split` |
//! | abandon | a split or bulk stream dropped after a random number of items | the items read |
//!
//! Half the neurons are drawn from a small hot set, so calls also meet in the cache and share
//! reads (and a caller going away hands its shared read over to the others).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Instant,
};

use activations_client::{ActivationsClient, Code, Error, Selection, neuron_id, pb};
use activations_format::splits::Split as PlanSplit;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use serde::Serialize;

use super::truth::{ExpectedRecord, Truth, received};
use activations_webstore::splitmix;

/// Codes a call may end with under injected storage faults (after the SDK's retries): the
/// store stayed unavailable, the server shed load or restarted, or the call ran out of time.
/// `DATA_LOSS` is allowed too, only with reason `CHECKSUM_MISMATCH`: a body corrupted in two
/// reads in a row, refused rather than served.
pub const ALLOWED_CODES: [Code; 3] = [
    Code::Unavailable,
    Code::ResourceExhausted,
    Code::DeadlineExceeded,
];

/// The largest `n_examples_per_split` drawn: the generated neurons hold 50 top-activating and
/// 50 random records, enough for 12 per split.
const MAX_N: u64 = 12;
/// Neurons in the hot set.
const HOT_NEURONS: usize = 32;
/// Examples kept of each kind of violation.
const EXAMPLES: usize = 10;

/// The kinds of call, in the summary's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Summary,
    Split,
    Bulk,
    Abandon,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Summary, Kind::Split, Kind::Bulk, Kind::Abandon];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Summary => "summary (GetNeuronSummary)",
            Kind::Split => "split (StreamActivationRecords)",
            Kind::Bulk => "bulk (StreamNeuronSplits, resuming)",
            Kind::Abandon => "abandoned mid-stream",
        }
    }
}

/// What the callers saw; summed over all of them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Calls made, by kind.
    pub calls: BTreeMap<Kind, u64>,
    /// Calls that ended OK (or, for `abandon`, were dropped as planned), by kind.
    pub ok: BTreeMap<Kind, u64>,
    /// Activation records compared with the truth.
    pub records_checked: u64,
    /// Summaries compared with the truth.
    pub summaries_checked: u64,
    /// Neurons of bulk streams compared with the truth.
    pub neurons_checked: u64,
    /// Answers that differ from the truth.
    pub wrong: u64,
    /// Records or neurons a stream that ended OK did not deliver.
    pub lost: u64,
    /// Records or neurons delivered more than once, or out of order.
    pub duplicated: u64,
    /// Errors by code name, allowed or not.
    pub errors: BTreeMap<String, u64>,
    /// Errors whose code is not in [`ALLOWED_CODES`].
    pub disallowed_errors: u64,
    /// A few of each violation, to reproduce.
    pub examples: Vec<String>,
}

impl Tally {
    /// Adds `other` to this tally.
    pub fn merge(&mut self, other: Tally) {
        for (k, v) in other.calls {
            *self.calls.entry(k).or_default() += v;
        }
        for (k, v) in other.ok {
            *self.ok.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.records_checked += other.records_checked;
        self.summaries_checked += other.summaries_checked;
        self.neurons_checked += other.neurons_checked;
        self.wrong += other.wrong;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.disallowed_errors += other.disallowed_errors;
        for example in other.examples {
            if self.examples.len() < 4 * EXAMPLES {
                self.examples.push(example);
            }
        }
    }

    /// Whether any answer broke the rules.
    pub fn violations(&self) -> u64 {
        self.wrong + self.lost + self.duplicated + self.disallowed_errors
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(text);
        }
    }

    fn wrong(&mut self, text: String) {
        self.wrong += 1;
        self.example(format!("wrong: {text}"));
    }

    /// Counts an error; `true` when it is allowed.
    fn error(&mut self, what: &str, error: &Error) -> bool {
        let code = error.code();
        let name = code.map_or_else(|| "no status".to_string(), |c| format!("{c:?}"));
        *self.errors.entry(name).or_default() += 1;
        // A body the store corrupted twice in a row is refused, never served: correct too.
        let refused_corrupt = code == Some(Code::DataLoss)
            && error
                .status()
                .is_some_and(|status| status.reason() == Some("CHECKSUM_MISMATCH"));
        let allowed = code.is_some_and(|c| ALLOWED_CODES.contains(&c)) || refused_corrupt;
        if !allowed {
            self.disallowed_errors += 1;
            self.example(format!("error: {what}: {error}"));
        }
        allowed
    }
}

/// One caller: a client, its random draws, and the truth.
pub struct Caller {
    pub client: ActivationsClient,
    pub truth: Arc<Truth>,
    pub hot: Arc<[(u32, u32)]>,
    pub rng: u64,
    pub tally: Tally,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").field("rng", &self.rng).finish()
    }
}

/// The hot set: `HOT_NEURONS` neurons drawn with `seed`.
pub fn hot_set(truth: &Truth, seed: u64) -> Vec<(u32, u32)> {
    let mut rng = seed;
    (0..HOT_NEURONS)
        .map(|_| {
            (
                (splitmix(&mut rng) % u64::from(truth.layers)) as u32,
                (splitmix(&mut rng) % u64::from(truth.neurons)) as u32,
            )
        })
        .collect()
}

impl Caller {
    /// Makes calls until `deadline`, then returns what it saw.
    pub async fn run(mut self, deadline: Instant) -> Tally {
        while Instant::now() < deadline {
            let kind = match self.below(100) {
                0..30 => Kind::Summary,
                30..65 => Kind::Split,
                65..85 => Kind::Bulk,
                _ => Kind::Abandon,
            };
            *self.tally.calls.entry(kind).or_default() += 1;
            let ok = match kind {
                Kind::Summary => self.summary().await,
                Kind::Split => self.split(None).await,
                Kind::Bulk => self.bulk(None).await,
                Kind::Abandon if self.below(2) == 0 => {
                    let stop = self.below(30) as usize;
                    self.split(Some(stop)).await
                }
                Kind::Abandon => {
                    let stop = self.below(8) as usize;
                    self.bulk(Some(stop)).await
                }
            };
            if ok {
                *self.tally.ok.entry(kind).or_default() += 1;
            }
        }
        self.tally
    }

    fn below(&mut self, n: u64) -> u64 {
        splitmix(&mut self.rng) % n.max(1)
    }

    fn neuron(&mut self) -> (u32, u32) {
        if self.below(2) == 0 {
            let i = self.below(self.hot.len() as u64) as usize;
            self.hot[i]
        } else {
            (
                self.below(u64::from(self.truth.layers)) as u32,
                self.below(u64::from(self.truth.neurons)) as u32,
            )
        }
    }

    fn n(&mut self) -> Option<u32> {
        match self.below(4) {
            0 => None,
            _ => Some(1 + self.below(MAX_N) as u32),
        }
    }

    async fn summary(&mut self) -> bool {
        let (layer, neuron) = self.neuron();
        let what = format!("GetNeuronSummary {layer}/{neuron}");
        match self.client.neuron_summary(neuron_id(layer, neuron)).await {
            Ok(summary) => {
                self.tally.summaries_checked += 1;
                let expected = &self
                    .truth
                    .neuron(layer, neuron)
                    .expect("in the truth")
                    .summary;
                if summary.encode_to_vec() != *expected {
                    let expected = pb::NeuronSummary::decode(expected.as_slice());
                    self.tally
                        .wrong(format!("{what}: got {summary:?}, expected {expected:?}"));
                }
                true
            }
            Err(error) => {
                self.tally.error(&what, &error);
                false
            }
        }
    }

    /// A `StreamActivationRecords` call, read to its end or, with `stop`, dropped after that
    /// many records.
    async fn split(&mut self, stop: Option<usize>) -> bool {
        let (layer, neuron) = self.neuron();
        let split = PLAN_SPLITS[self.below(4) as usize];
        let n = self.n();
        let what = format!(
            "StreamActivationRecords {layer}/{neuron} {} n={n:?}",
            split.name()
        );
        let expected = self
            .truth
            .neuron(layer, neuron)
            .expect("in the truth")
            .split(split, n)
            .expect("n is small enough for every generated neuron");
        let mut stream = match self
            .client
            .stream_activation_records(neuron_id(layer, neuron), pb_split(split), n)
            .await
        {
            Ok(stream) => stream,
            Err(error) => {
                self.tally.error(&what, &error);
                return false;
            }
        };
        let mut got = 0;
        loop {
            if stop.is_some_and(|stop| got >= stop) {
                // Abandoned as planned: the stream is dropped here.
                return true;
            }
            match stream.next().await {
                None => break,
                Some(Ok(record)) => {
                    self.tally.records_checked += 1;
                    match expected.get(got) {
                        Some(want) => {
                            let have = received(&record);
                            if have != *want {
                                self.tally.wrong(format!(
                                    "{what}: record {got} is {have:?}, expected {want:?}"
                                ));
                            }
                        }
                        None => {
                            self.tally.duplicated += 1;
                            self.tally
                                .example(format!("extra: {what}: record {got} beyond the split"));
                        }
                    }
                    got += 1;
                }
                Some(Err(error)) => {
                    self.tally
                        .error(&format!("{what} after {got} records"), &error);
                    return false;
                }
            }
        }
        if got < expected.len() {
            self.tally.lost += (expected.len() - got) as u64;
            self.tally.example(format!(
                "lost: {what}: ended OK after {got} of {} records",
                expected.len()
            ));
        }
        true
    }

    /// A `StreamNeuronSplits` call through the SDK's resuming stream, read to its end or, with
    /// `stop`, dropped after that many neurons.
    async fn bulk(&mut self, stop: Option<usize>) -> bool {
        let (selection, order) = self.selection();
        let splits = self.splits();
        let n = self.n();
        let what = format!(
            "StreamNeuronSplits {selection:?} splits {:?} n={n:?}",
            splits.iter().map(|s| s.name()).collect::<Vec<_>>()
        );
        let pb_splits: Vec<pb::Split> = splits.iter().map(|&s| pb_split(s)).collect();
        let mut stream = self.client.neuron_splits(selection, &pb_splits, n);
        let mut seen: Vec<(u32, u32)> = Vec::new();
        let ended_ok = loop {
            if stop.is_some_and(|stop| seen.len() >= stop) {
                drop(stream);
                self.check_order(&what, &order[..seen.len().min(order.len())], &seen);
                return true;
            }
            match stream.try_next().await {
                Ok(None) => break true,
                Ok(Some(item)) => {
                    let id = item.neuron_id;
                    seen.push((id.layer_index, id.neuron_index));
                    self.check_neuron(&what, &splits, n, item);
                }
                Err(error) => {
                    self.tally
                        .error(&format!("{what} after {} neurons", seen.len()), &error);
                    break false;
                }
            }
        };
        let want = if ended_ok {
            &order[..]
        } else {
            &order[..seen.len().min(order.len())]
        };
        self.check_order(&what, want, &seen);
        ended_ok
    }

    /// A random range (a block of neurons in one or two layers) or a random list with repeats,
    /// and the neurons it selects in order.
    fn selection(&mut self) -> (Selection, Vec<(u32, u32)>) {
        if self.below(3) == 0 {
            let len = 1 + self.below(16) as usize;
            let order: Vec<(u32, u32)> = (0..len).map(|_| self.neuron()).collect();
            let ids = order.iter().map(|&(l, n)| neuron_id(l, n)).collect();
            return (Selection::Neurons(ids), order);
        }
        let layer_start = self.below(u64::from(self.truth.layers)) as u32;
        let layer_end = (layer_start + 1 + self.below(2) as u32).min(self.truth.layers);
        let len = 1 + self.below(12) as u32;
        let start = self.below(u64::from(self.truth.neurons - len + 1)) as u32;
        let order = (layer_start..layer_end)
            .flat_map(|l| (start..start + len).map(move |n| (l, n)))
            .collect();
        let selection = Selection::Range {
            layers: layer_start..layer_end,
            neurons: Some(start..start + len),
        };
        (selection, order)
    }

    /// One to four distinct splits, in a random order.
    fn splits(&mut self) -> Vec<PlanSplit> {
        let mut all = PLAN_SPLITS.to_vec();
        for i in (1..all.len()).rev() {
            all.swap(i, self.below(i as u64 + 1) as usize);
        }
        all.truncate(1 + self.below(4) as usize);
        all
    }

    fn check_neuron(
        &mut self,
        what: &str,
        splits: &[PlanSplit],
        n: Option<u32>,
        item: activations_client::NeuronSplits,
    ) {
        let id = item.neuron_id;
        let (layer, neuron) = (id.layer_index, id.neuron_index);
        let Some(truth) = self.truth.neuron(layer, neuron) else {
            self.tally
                .wrong(format!("{what}: neuron {layer}/{neuron} was not selected"));
            return;
        };
        self.tally.neurons_checked += 1;
        let got = match item.splits {
            Ok(got) => got,
            Err(status) => {
                let error = Error::Status(Box::new(status));
                self.tally
                    .error(&format!("{what}: neuron {layer}/{neuron}"), &error);
                return;
            }
        };
        if got.len() != splits.len() {
            self.tally.wrong(format!(
                "{what}: neuron {layer}/{neuron} came with {} splits",
                got.len()
            ));
            return;
        }
        for (records, &split) in got.iter().zip(splits) {
            if records.split != i32::from(pb_split(split)) {
                self.tally.wrong(format!(
                    "{what}: neuron {layer}/{neuron}: split {} where {} was expected",
                    records.split,
                    split.name()
                ));
                continue;
            }
            let expected = truth.split(split, n).expect("n is small enough");
            self.tally.records_checked += records.records.len() as u64;
            let have: Vec<ExpectedRecord> = records.records.iter().map(received).collect();
            if have != expected {
                let first = have.iter().zip(&expected).position(|(h, e)| h != e);
                self.tally.wrong(format!(
                    "{what}: neuron {layer}/{neuron} {}: {} records, {} expected, first difference at {first:?}",
                    split.name(),
                    have.len(),
                    expected.len()
                ));
            }
        }
    }

    /// Neurons delivered against those selected (in order): each one missing is lost, each
    /// one in excess is duplicated; the same neurons in another order count as wrong.
    fn check_order(&mut self, what: &str, want: &[(u32, u32)], seen: &[(u32, u32)]) {
        if want == seen {
            return;
        }
        let mut counts: HashMap<(u32, u32), i64> = HashMap::new();
        for id in want {
            *counts.entry(*id).or_default() += 1;
        }
        for id in seen {
            *counts.entry(*id).or_default() -= 1;
        }
        let lost: i64 = counts.values().filter(|&&c| c > 0).sum();
        let extra: i64 = -counts.values().filter(|&&c| c < 0).sum::<i64>();
        self.tally.lost += lost as u64;
        self.tally.duplicated += extra as u64;
        if lost == 0 && extra == 0 {
            self.tally.wrong(format!("{what}: neurons out of order"));
        } else {
            self.tally.example(format!(
                "lost/duplicated: {what}: {lost} lost, {extra} duplicated; wanted {want:?}, got {seen:?}"
            ));
        }
    }
}

const PLAN_SPLITS: [PlanSplit; 4] = PlanSplit::ALL;

fn pb_split(split: PlanSplit) -> pb::Split {
    match split {
        PlanSplit::Train => pb::Split::Train,
        PlanSplit::Calibration => pb::Split::Calibration,
        PlanSplit::Valid => pb::Split::Valid,
        PlanSplit::Test => pb::Split::Test,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_exhausted_and_deadline_errors_are_allowed() {
        let mut tally = Tally::default();
        let status = tonic::Status::internal("boom");
        assert!(!tally.error("x", &Error::from(status)));
        assert!(tally.error("x", &Error::from(tonic::Status::unavailable("later"))));
        assert_eq!(tally.disallowed_errors, 1);
        assert_eq!(tally.errors["Unavailable"], 1);
        assert_eq!(tally.errors["Internal"], 1);
    }
}
