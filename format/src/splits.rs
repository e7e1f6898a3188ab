//! Cutting a neuron's records into splits, exactly as the Python `NeuronRecord` does.
//!
//! `neuron_explainer.activations.activations` interleaves: split `i` of `k` takes the Python
//! slice `[i : n*k : k]` of its source. Top-activating records are cut `k = 4` ways (train,
//! calibration, valid, test), random records `k = 3` ways (calibration, valid, test). A split is
//! its top slice followed by its random slice. `n` is `n_examples_per_split`, or when that is
//! None, `len(source) // k` for each source separately. A source shorter than `n * k` fails the
//! Python assertion; here it is a [`NotEnoughRecords`] error.
//!
//! The plan is arithmetic on lengths; [`split_record`] applies it to a record, sharing each
//! record's encoding.

use std::fmt;

use activations_proto::wire;

/// One of the four splits of `NeuronRecord`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Calibration,
    Valid,
    Test,
}

impl Split {
    /// Every split, in the Python order.
    pub const ALL: [Split; 4] = [Split::Train, Split::Calibration, Split::Valid, Split::Test];

    /// The Python name (`"train"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Calibration => "calibration",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

impl TryFrom<i32> for Split {
    type Error = SplitValueError;

    /// A `Split` enum value as a request carries it; `SPLIT_UNSPECIFIED` is refused.
    fn try_from(value: i32) -> Result<Self, Self::Error> {
        match wire::Split::try_from(value) {
            Ok(wire::Split::Train) => Ok(Split::Train),
            Ok(wire::Split::Calibration) => Ok(Split::Calibration),
            Ok(wire::Split::Valid) => Ok(Split::Valid),
            Ok(wire::Split::Test) => Ok(Split::Test),
            Ok(wire::Split::Unspecified) => Err(SplitValueError::Unspecified),
            Err(_) => Err(SplitValueError::Unknown(value)),
        }
    }
}

impl From<Split> for wire::Split {
    fn from(split: Split) -> Self {
        match split {
            Split::Train => wire::Split::Train,
            Split::Calibration => wire::Split::Calibration,
            Split::Valid => wire::Split::Valid,
            Split::Test => wire::Split::Test,
        }
    }
}

/// Why a request's `Split` value names no split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitValueError {
    #[error("is required: one of SPLIT_TRAIN, SPLIT_CALIBRATION, SPLIT_VALID, SPLIT_TEST")]
    Unspecified,
    #[error("{0} is not a Split value (1 to 4)")]
    Unknown(i32),
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The list of a `NeuronRecord` a split record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// `most_positive_activation_records`, cut 4 ways.
    TopActivating,
    /// `random_sample`, cut 3 ways.
    Random,
}

impl Source {
    /// The splits this source is cut into, in the order Python enumerates them.
    pub fn splits(self) -> &'static [Split] {
        match self {
            Source::TopActivating => &Split::ALL,
            Source::Random => &Split::ALL[1..],
        }
    }

    /// The Python attribute holding this source's records.
    pub fn field_name(self) -> &'static str {
        match self {
            Source::TopActivating => "most_positive_activation_records",
            Source::Random => "random_sample",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::TopActivating => "top-activating",
            Source::Random => "random",
        })
    }
}

impl From<Source> for wire::RecordSource {
    fn from(source: Source) -> Self {
        match source {
            Source::TopActivating => wire::RecordSource::TopActivating,
            Source::Random => wire::RecordSource::Random,
        }
    }
}

/// A Python slice `[start : stop : step]` of a list known to hold at least `stop` items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StridedRange {
    pub start: usize,
    pub stop: usize,
    pub step: usize,
}

impl StridedRange {
    /// How many indices the slice selects.
    pub fn len(&self) -> usize {
        if self.start >= self.stop {
            0
        } else {
            (self.stop - self.start).div_ceil(self.step)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The selected indices, ascending.
    pub fn indices(&self) -> impl Iterator<Item = usize> + Send + use<> {
        (self.start..self.stop).step_by(self.step)
    }
}

/// A source too short for the requested split: where Python's assertion fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotEnoughRecords {
    pub split: Split,
    pub source: Source,
    /// The records per split that were asked for (or derived, when None was asked).
    pub n: usize,
    /// `n` times the number of splits the source is cut into.
    pub needed: usize,
    /// How many records the source holds.
    pub available: usize,
    /// The largest `n_examples_per_split` this neuron's split allows, both of its sources
    /// considered.
    pub largest: usize,
}

impl fmt::Display for NotEnoughRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} split with n_examples_per_split={} needs {} {} records ({} x {}) but {} \
             holds {}; this neuron's {} split allows n_examples_per_split up to {}",
            self.split,
            self.n,
            self.needed,
            self.source,
            self.n,
            self.source.splits().len(),
            self.source.field_name(),
            self.available,
            self.split,
            self.largest
        )
    }
}

/// Where the records of one split come from: a slice of the top-activating records, then
/// (except for train) a slice of the random records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitPlan {
    pub top: StridedRange,
    pub random: Option<StridedRange>,
}

impl SplitPlan {
    /// Plans `split` for a neuron with `top_len` top-activating and `random_len` random records.
    ///
    /// As in Python, the top source is checked first, and the train split never looks at the
    /// random source (so a neuron without random records still has a train split).
    pub fn new(
        split: Split,
        n_examples_per_split: Option<u32>,
        top_len: usize,
        random_len: usize,
    ) -> Result<Self, NotEnoughRecords> {
        let largest = |mut error: NotEnoughRecords| {
            let top = top_len / Source::TopActivating.splits().len();
            error.largest = match split {
                Split::Train => top,
                _ => top.min(random_len / Source::Random.splits().len()),
            };
            error
        };
        let top = source_slice(Source::TopActivating, split, n_examples_per_split, top_len)
            .map_err(largest)?;
        let random = match split {
            Split::Train => None,
            _ => Some(
                source_slice(Source::Random, split, n_examples_per_split, random_len)
                    .map_err(largest)?,
            ),
        };
        Ok(SplitPlan { top, random })
    }

    /// Plans `split` for `record`'s top-activating and random records.
    pub fn for_record(
        split: Split,
        n_examples_per_split: Option<u32>,
        record: &wire::NeuronRecord,
    ) -> Result<Self, NotEnoughRecords> {
        Self::new(
            split,
            n_examples_per_split,
            record.most_positive_activation_records.len(),
            record.random_sample.len(),
        )
    }

    /// How many records the split holds.
    pub fn len(&self) -> usize {
        self.top.len() + self.random.map_or(0, |r| r.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(source, index in that source)` of each record of the split, in the Python order.
    pub fn entries(&self) -> impl Iterator<Item = (Source, usize)> + Send + use<> {
        let top = self.top.indices().map(|i| (Source::TopActivating, i));
        let random = self
            .random
            .into_iter()
            .flat_map(|r| r.indices())
            .map(|i| (Source::Random, i));
        top.chain(random)
    }
}

/// The message for record `index` of `source` in `record`: it shares the record's encoding (a
/// reference count, no copy).
pub fn split_record(
    record: &wire::NeuronRecord,
    source: Source,
    index: usize,
) -> wire::SplitActivationRecord {
    let list = match source {
        Source::TopActivating => &record.most_positive_activation_records,
        Source::Random => &record.random_sample,
    };
    wire::SplitActivationRecord {
        record: Some(list[index].clone()),
        source: wire::RecordSource::from(source).into(),
        source_index: index as u32,
    }
}

/// `get_slices_for_splits(source.splits(), n)[split]`, after the Python length assertion.
fn source_slice(
    source: Source,
    split: Split,
    n_examples_per_split: Option<u32>,
    available: usize,
) -> Result<StridedRange, NotEnoughRecords> {
    let splits = source.splits();
    let stride = splits.len();
    let n = match n_examples_per_split {
        Some(n) => n as usize,
        None => available / stride,
    };
    let needed = n.saturating_mul(stride);
    if available < needed {
        return Err(NotEnoughRecords {
            split,
            source,
            n,
            needed,
            available,
            // Set by `SplitPlan::new`, which knows both sources.
            largest: available / stride,
        });
    }
    let position = splits
        .iter()
        .position(|&s| s == split)
        .expect("every split but train is cut from both sources, and train is never asked of the random source");
    Ok(StridedRange {
        start: position,
        stop: needed,
        step: stride,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Python's `list(range(len))[start:stop:step]` for non-negative start/stop and step > 0,
    /// written independently of `StridedRange` as the reference.
    fn python_slice(len: usize, start: usize, stop: usize, step: usize) -> Vec<usize> {
        let stop = stop.min(len);
        let mut out = Vec::new();
        let mut i = start;
        while i < stop {
            out.push(i);
            i += step;
        }
        out
    }

    /// The Python module's split, computed the way `activations.py` spells it out.
    fn python_split(
        split: Split,
        n: Option<u32>,
        top_len: usize,
        random_len: usize,
    ) -> Option<Vec<(Source, usize)>> {
        let top_names = ["train", "calibration", "valid", "test"];
        let random_names = ["calibration", "valid", "test"];
        let top_n = n.map_or(top_len / 4, |n| n as usize);
        if top_len < top_n * 4 {
            return None;
        }
        let i = top_names.iter().position(|s| *s == split.name()).unwrap();
        let mut out: Vec<_> = python_slice(top_len, i, top_n * 4, 4)
            .into_iter()
            .map(|i| (Source::TopActivating, i))
            .collect();
        if split != Split::Train {
            let random_n = n.map_or(random_len / 3, |n| n as usize);
            if random_len < random_n * 3 {
                return None;
            }
            let i = random_names
                .iter()
                .position(|s| *s == split.name())
                .unwrap();
            out.extend(
                python_slice(random_len, i, random_n * 3, 3)
                    .into_iter()
                    .map(|i| (Source::Random, i)),
            );
        }
        Some(out)
    }

    fn any_split() -> impl Strategy<Value = Split> {
        prop::sample::select(Split::ALL.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn plan_matches_python_slicing(
            split in any_split(),
            n in prop::option::of(0u32..40),
            top_len in 0usize..130,
            random_len in 0usize..130,
        ) {
            let plan = SplitPlan::new(split, n, top_len, random_len);
            let expected = python_split(split, n, top_len, random_len);
            match (plan, expected) {
                (Ok(plan), Some(expected)) => {
                    let got: Vec<_> = plan.entries().collect();
                    prop_assert_eq!(plan.len(), got.len());
                    prop_assert_eq!(got, expected);
                }
                (Err(_), None) => {}
                (plan, expected) => prop_assert!(false, "plan {plan:?} but Python gives {expected:?}"),
            }
        }

        #[test]
        fn splits_are_disjoint_and_cover_the_first_n_times_k_records(
            n in 0u32..30,
            extra_top in 0usize..10,
            extra_random in 0usize..10,
        ) {
            let n = n as usize;
            let (top_len, random_len) = (4 * n + extra_top, 3 * n + extra_random);
            let mut seen = Vec::new();
            for split in Split::ALL {
                let plan = SplitPlan::new(split, Some(n as u32), top_len, random_len).unwrap();
                prop_assert_eq!(plan.top.len(), n);
                prop_assert_eq!(plan.random.map_or(0, |r| r.len()), if split == Split::Train { 0 } else { n });
                seen.extend(plan.entries());
            }
            seen.sort_by_key(|&(s, i)| (s == Source::Random, i));
            let expected: Vec<_> = (0..4 * n).map(|i| (Source::TopActivating, i))
                .chain((0..3 * n).map(|i| (Source::Random, i)))
                .collect();
            prop_assert_eq!(seen, expected);
        }

        #[test]
        fn too_few_records_names_the_short_source(
            split in any_split(),
            n in 1u32..30,
            top_short in any::<bool>(),
        ) {
            let n_us = n as usize;
            let (top_len, random_len) = if top_short { (4 * n_us - 1, 3 * n_us) } else { (4 * n_us, 3 * n_us - 1) };
            let result = SplitPlan::new(split, Some(n), top_len, random_len);
            if !top_short && split == Split::Train {
                prop_assert!(result.is_ok(), "train never reads the random sample");
            } else {
                let err = result.unwrap_err();
                let (source, k, available) = if top_short {
                    (Source::TopActivating, 4, top_len)
                } else {
                    (Source::Random, 3, random_len)
                };
                prop_assert_eq!(err.clone(), NotEnoughRecords { split, source, n: n_us, needed: k * n_us, available, largest: n_us - 1 });
                let message = err.to_string();
                prop_assert!(message.contains(split.name()) && message.contains(&available.to_string()), "{}", message);
                prop_assert!(message.contains(&format!("up to {}", n_us - 1)), "{}", message);
            }
        }
    }

    proptest! {
        /// The largest n an error names is the largest that plans, whatever the lengths.
        #[test]
        fn the_largest_n_named_is_the_largest_that_plans(
            split in any_split(),
            n in 0u32..40,
            top_len in 0usize..100,
            random_len in 0usize..100,
        ) {
            if let Err(error) = SplitPlan::new(split, Some(n), top_len, random_len) {
                let largest = u32::try_from(error.largest).unwrap();
                prop_assert!(largest < n);
                prop_assert!(SplitPlan::new(split, Some(largest), top_len, random_len).is_ok());
                prop_assert!(SplitPlan::new(split, Some(largest + 1), top_len, random_len).is_err());
            }
        }
    }

    #[test]
    fn none_derives_n_separately_for_each_source() {
        // 50 top and 50 random records: valid gets 50 // 4 = 12 top and 50 // 3 = 16 random.
        let plan = SplitPlan::new(Split::Valid, None, 50, 50).unwrap();
        assert_eq!(plan.top.len(), 50 / 4);
        assert_eq!(plan.random.unwrap().len(), 50 / 3);
        let train = SplitPlan::new(Split::Train, None, 50, 50).unwrap();
        assert_eq!(train.random, None);
    }

    #[test]
    fn zero_examples_per_split_is_empty_even_without_records() {
        for split in Split::ALL {
            let plan = SplitPlan::new(split, Some(0), 0, 0).unwrap();
            assert!(plan.is_empty(), "{split}");
            assert_eq!(plan.entries().count(), 0);
        }
    }

    #[test]
    fn valid_split_interleaves_top_and_random() {
        let plan = SplitPlan::new(Split::Valid, Some(2), 8, 6).unwrap();
        let entries: Vec<_> = plan.entries().collect();
        assert_eq!(
            entries,
            [
                (Source::TopActivating, 2),
                (Source::TopActivating, 6),
                (Source::Random, 1),
                (Source::Random, 4),
            ]
        );
    }
}
