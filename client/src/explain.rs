//! The two numeric helpers of neuron-explainer's explainer and simulator prompts, from
//! `neuron_explainer/activations/activation_records.py`: the largest activation of a set of
//! records, and activations normalized to the integers 0 to 10 that the prompts show.
//!
//! Both give what the Python functions give on the same neuron file. The Python code:
//!
//! ```python
//! def relu(x: float) -> float:
//!     return max(0.0, x)
//!
//! def calculate_max_activation(activation_records: Sequence[ActivationRecord]) -> float:
//!     flattened = [
//!         max(relu(x) for x in activation_record.activations)
//!         for activation_record in activation_records
//!     ]
//!     return max(flattened)
//!
//! def normalize_activations(activation_record: list[float], max_activation: float) -> list[int]:
//!     if max_activation <= 0:
//!         return [0 for x in activation_record]
//!     return [min(10, math.floor(10 * relu(x) / max_activation)) for x in activation_record]
//! ```
//!
//! # Floats and decimals
//!
//! Python computes on the doubles of the decimals in the neuron files (`0.7` is the double
//! nearest 0.7); the service serves each activation as the nearest `float`. Widening that float
//! to a double gives another number (`0.699999988...`), which in `floor(10 * x / max)` can fall
//! on the other side of an integer: `10 * 0.7 / 1.0` is 7 in Python, 6.99999988 from the
//! float. So [`normalized_activations`] widens each float through its shortest decimal
//! representation, which is the file's decimal for every value with up to 6 significant digits
//! (all of the public data: 4 decimals, below 100), and then computes exactly as Python does,
//! with Python's own rounding, down to `normalize_activations([0.0527], 0.0527) == [9]`. (A
//! float that did not come from a short decimal is taken as its shortest decimal too, within
//! half a float step of its value.)
//!
//! [`max_activation`] needs no such care: the largest float is the float of the largest
//! decimal.
//!
//! # NaN and infinities
//!
//! Python's `max(0.0, x)` keeps `0.0` unless `x > 0.0`, so `relu(NaN)` is `0.0` (and
//! `relu(-0.0)` is `+0.0`): a NaN activation (a JSON `NaN`, or a `null`, which the service serves
//! as NaN) counts as 0 in both functions here. In Python a `null` is `None` and `relu(None)`
//! raises `TypeError`; a `NaN` behaves as here.
//!
//! Where Python raises rather than answers, these functions answer as follows:
//! - [`max_activation`] of no records, or of a record without activations (Python:
//!   `ValueError: max() arg is an empty sequence`): `None`;
//! - [`normalized_activations`] with a NaN `max_activation` (Python: `ValueError` from
//!   `math.floor(nan)`, for a non-empty list): all zeros, as for a maximum `<= 0`;
//! - an activation of `+inf` (Python: `OverflowError`, or `ValueError` when the maximum is
//!   `+inf` too): 10, the value of any activation at or above the maximum.

use std::fmt;

use activations_proto::python_max;

use crate::pb::ActivationRecord;

/// Python's `relu`, `max(0.0, x)`: `x` when `x > 0.0`, else `+0.0` (NaN included).
fn relu(x: f32) -> f32 {
    if x > 0.0 { x } else { 0.0 }
}

/// The double Python holds for the decimal `x` was read from: the shortest decimal that reads
/// back as `x` (what `{:e}` prints), read as a double.
fn python_float(x: f32) -> f64 {
    if !x.is_finite() {
        return f64::from(x);
    }
    let mut decimal = DecimalBuffer::default();
    // Shortest round-trip digits, as `d.ddde-N`: at most 15 bytes for a float.
    match fmt::write(&mut decimal, format_args!("{x:e}")) {
        Ok(()) => decimal.as_str().parse().unwrap_or(f64::from(x)),
        Err(_) => f64::from(x),
    }
}

/// A small stack buffer to format a float into without allocating.
#[derive(Default)]
struct DecimalBuffer {
    bytes: [u8; 32],
    len: usize,
}

impl DecimalBuffer {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for DecimalBuffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The largest activation over `records`, negative ones counting as 0: neuron-explainer's
/// `calculate_max_activation`, the scale the explainer and simulator normalize activations
/// with (pass it to [`normalized_activations`]).
///
/// `None` when there are no records or a record has no activations, where Python raises
/// `ValueError`. NaN activations count as 0 (see the [module documentation](self)), so the
/// result is never NaN and never negative. Unlike the summary's
/// [`max_activation`](crate::pb::NeuronSummary::max_activation) (the largest *raw* activation of
/// the top-activating records), this is over the records given, after ReLU.
///
/// # Examples
///
/// ```
/// use activations_client::{max_activation, pb::ActivationRecord};
///
/// let record = |activations: Vec<f32>| ActivationRecord {
///     tokens: activations.iter().map(|a| a.to_string()).collect(),
///     activations,
///     ..Default::default()
/// };
/// let records = [record(vec![0.5, -1.0, 2.25]), record(vec![f32::NAN, 1.0])];
/// assert_eq!(max_activation(&records), Some(2.25));
/// // Only negative activations: the neuron never fires, the maximum is 0.
/// assert_eq!(max_activation(&[record(vec![-3.0, -0.5])]), Some(0.0));
/// // Python raises on these.
/// assert_eq!(max_activation(&[]), None);
/// assert_eq!(max_activation(&[record(vec![])]), None);
/// ```
pub fn max_activation(records: &[ActivationRecord]) -> Option<f32> {
    let mut max = None;
    for record in records {
        let record_max = python_max(record.activations.iter().map(|&x| relu(x)))?;
        max = python_max(max.into_iter().chain([record_max]));
    }
    max
}

/// Activations as the integers 0 to 10 the explainer and simulator prompts show:
/// neuron-explainer's `normalize_activations`, `min(10, floor(10 * relu(x) / max_activation))`
/// for each activation, or all zeros when `max_activation <= 0`.
///
/// Computed in double precision on the decimals the floats stand for, as Python computes on
/// the file's values (see [Floats and decimals](self#floats-and-decimals)). A NaN activation is
/// 0; a NaN `max_activation` gives all zeros and an infinite activation 10, where Python raises
/// (see [NaN and infinities](self#nan-and-infinities)).
///
/// # Examples
///
/// ```
/// use activations_client::normalized_activations;
///
/// assert_eq!(
///     normalized_activations(&[0.0, 0.25, 0.7, 0.99, 1.0, 3.0, -2.0, f32::NAN], 1.0),
///     [0, 2, 7, 9, 10, 10, 0, 0]
/// );
/// // A neuron that never fires shows no activation.
/// assert_eq!(normalized_activations(&[1.0, 2.0], 0.0), [0, 0]);
/// // Python's rounding, kept: 10 * 0.0527 / 0.0527 is 9.999999999999998 in doubles.
/// assert_eq!(normalized_activations(&[0.0527], 0.0527), [9]);
/// ```
pub fn normalized_activations(activations: &[f32], max_activation: f32) -> Vec<u8> {
    // `max <= 0`, and NaN too (where Python raises).
    if max_activation <= 0.0 || max_activation.is_nan() {
        return vec![0; activations.len()];
    }
    let max = python_float(max_activation);
    activations
        .iter()
        .map(|&x| {
            // Python's `10 * relu(x) / max_activation`, in that order.
            let scaled = 10.0 * python_float(relu(x)) / max;
            // `>= 10` also takes infinities; NaN only comes from inf / inf.
            if scaled >= 10.0 || scaled.is_nan() {
                10
            } else {
                scaled.floor() as u8
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn record(activations: &[f32]) -> ActivationRecord {
        ActivationRecord {
            tokens: vec!["t".to_owned(); activations.len()],
            activations: activations.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn max_is_over_records_after_relu() {
        let records = [record(&[-1.0, 0.5]), record(&[3.5, 2.0]), record(&[0.0])];
        assert_eq!(max_activation(&records), Some(3.5));
        assert_eq!(
            max_activation(&[record(&[-1.0]), record(&[-2.0])]),
            Some(0.0)
        );
        // ReLU of -0.0 is +0.0, as Python's max(0.0, -0.0) keeps its first argument.
        let zero = max_activation(&[record(&[-0.0])]).unwrap();
        assert!(zero == 0.0 && zero.is_sign_positive());
        assert_eq!(max_activation(&[record(&[f32::NAN])]), Some(0.0));
        assert_eq!(
            max_activation(&[record(&[f32::NAN, 1.5, f32::NAN])]),
            Some(1.5)
        );
        assert_eq!(
            max_activation(&[record(&[f32::INFINITY])]),
            Some(f32::INFINITY)
        );
        assert_eq!(max_activation(&[record(&[f32::NEG_INFINITY])]), Some(0.0));
    }

    #[test]
    fn max_of_nothing_is_none_where_python_raises() {
        assert_eq!(max_activation(&[]), None);
        assert_eq!(max_activation(&[record(&[])]), None);
        assert_eq!(max_activation(&[record(&[1.0]), record(&[])]), None);
    }

    #[test]
    fn floats_are_widened_through_their_shortest_decimal() {
        assert_eq!(python_float(0.7), 0.7);
        assert_eq!(python_float(3.2617), 3.2617);
        assert_eq!(python_float(-12.5), -12.5);
        assert_eq!(python_float(0.0), 0.0);
        assert_eq!(python_float(f32::from_bits(1)), 1e-45);
        assert_eq!(python_float(f32::MAX), 3.4028235e38);
        assert_eq!(python_float(f32::INFINITY), f64::INFINITY);
        assert!(python_float(f32::NAN).is_nan());
        // Every float reads back as itself from its decimal.
        for bits in (0..u32::MAX).step_by(9_973) {
            let x = f32::from_bits(bits);
            if x.is_finite() {
                assert_eq!(python_float(x) as f32, x, "{bits:#x}");
            }
        }
    }

    #[test]
    fn normalized_edge_cases() {
        // What Python's normalize_activations answers for these decimals (checked against it):
        // bucket edges where the float's own value would fall below the integer, and Python's
        // 9 for an activation at the maximum.
        assert_eq!(
            normalized_activations(&[0.7, 0.3, 0.6, 0.9, 0.1, 0.2], 1.0),
            [7, 3, 6, 9, 1, 2]
        );
        assert_eq!(normalized_activations(&[1.4, 0.7], 2.0), [7, 3]);
        assert_eq!(
            normalized_activations(&[0.0527, 0.7, 0.1013, 0.3, 0.6], 0.0527),
            [9, 10, 10, 10, 10]
        );
        assert_eq!(normalized_activations(&[2.0, 2.5], 2.0), [10, 10]);
        assert_eq!(normalized_activations(&[1.0, -1.0, -0.0], 4.0), [2, 0, 0]);
        assert_eq!(normalized_activations(&[], 1.0), Vec::<u8>::new());
        assert_eq!(normalized_activations(&[], f32::NAN), Vec::<u8>::new());
        for max in [0.0, -0.0, -1.0, f32::NEG_INFINITY, f32::NAN] {
            assert_eq!(normalized_activations(&[1.0, 5.0], max), [0, 0], "{max}");
        }
        assert_eq!(normalized_activations(&[f32::NAN], 1.0), [0]);
        assert_eq!(normalized_activations(&[f32::INFINITY], 1.0), [10]);
        assert_eq!(
            normalized_activations(&[1.0, f32::INFINITY], f32::INFINITY),
            [0, 10]
        );
        // The smallest positive maximum: anything positive is 10.
        let tiny = f32::from_bits(1);
        assert_eq!(
            normalized_activations(&[tiny, 1e-30, 0.0], tiny),
            [10, 10, 0]
        );
        assert_eq!(normalized_activations(&[f32::MAX], f32::MAX), [10]);
    }

    #[test]
    fn an_activation_at_the_maximum_is_ten_unless_python_rounds_below() {
        // As Python answers (checked against it): 10 * x / x is 9.999999999999998 in doubles
        // for some x.
        let cases = [
            (1e-38_f32, 9),
            (0.1, 10),
            (0.3, 10),
            (2.5, 10),
            (3.2617, 10),
            (7.77, 9),
            (1234.5678, 10),
            (3.0e38, 10),
            (0.0527, 9),
            (0.0537, 9),
            (0.1013, 9),
            (0.1033, 9),
        ];
        for (max, expected) in cases {
            assert_eq!(normalized_activations(&[max], max), [expected], "{max}");
        }
    }

    /// Any f32 bit pattern: NaNs, infinities, subnormals and zeros of both signs included.
    fn any_f32() -> impl Strategy<Value = f32> {
        prop_oneof![
            any::<u32>().prop_map(f32::from_bits),
            -100.0f32..100.0,
            Just(0.0f32),
            Just(f32::NAN),
        ]
    }

    proptest! {
        #[test]
        fn normalized_values_are_between_0_and_10(
            activations in proptest::collection::vec(any_f32(), 0..32),
            max in any_f32(),
        ) {
            let normalized = normalized_activations(&activations, max);
            prop_assert_eq!(normalized.len(), activations.len());
            prop_assert!(normalized.iter().all(|&n| n <= 10));
        }

        #[test]
        fn normalized_is_monotone_in_the_activation(
            a in any_f32(),
            b in any_f32(),
            max in any_f32(),
        ) {
            prop_assume!(!a.is_nan() && !b.is_nan());
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            let normalized = normalized_activations(&[low, high], max);
            prop_assert!(normalized[0] <= normalized[1], "{:?} for {} <= {}", normalized, low, high);
        }

        #[test]
        fn a_maximum_not_above_zero_gives_zeros(
            activations in proptest::collection::vec(any_f32(), 0..32),
            max in prop_oneof![any::<u32>().prop_map(|bits| -f32::from_bits(bits).abs()), Just(0.0f32)],
        ) {
            prop_assert!(normalized_activations(&activations, max).iter().all(|&n| n == 0));
        }

        #[test]
        fn normalized_is_python_on_four_decimal_values(
            activations in proptest::collection::vec(-100_000i32..100_000, 0..32),
            max in 1i32..100_000,
        ) {
            // The public files' values: 4 decimals. Python reads the decimal as a double.
            let decimal = |tenths_of_milli: i32| f64::from(tenths_of_milli) / 10_000.0;
            let expected: Vec<u8> = activations
                .iter()
                .map(|&x| {
                    let q = (10.0 * decimal(x).max(0.0) / decimal(max)).floor();
                    q.min(10.0) as u8
                })
                .collect();
            let floats: Vec<f32> = activations.iter().map(|&x| decimal(x) as f32).collect();
            prop_assert_eq!(normalized_activations(&floats, decimal(max) as f32), expected);
        }

        #[test]
        fn the_maximum_is_an_activation_or_zero_and_bounds_them_all(
            records in proptest::collection::vec(proptest::collection::vec(any_f32(), 1..8), 1..8),
        ) {
            let records: Vec<ActivationRecord> = records.iter().map(|r| record(r)).collect();
            let max = max_activation(&records).unwrap();
            prop_assert!(max >= 0.0);
            let all = records.iter().flat_map(|r| r.activations.iter().copied());
            prop_assert!(all.clone().all(|x| x.is_nan() || x <= max));
            prop_assert!(max == 0.0 || all.clone().any(|x| x == max));
        }
    }
}
