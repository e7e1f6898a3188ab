//! Reading and writing neuron files: the JSON that `neuron_explainer` stores per neuron.
//!
//! A neuron file is one `NeuronRecord` dataclass dumped by Python's `json.dumps`:
//!
//! ```text
//! {"dataclass_name": "NeuronRecord",
//!  "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 1, "neuron_index": 1},
//!  "random_sample": [AR, ...], "random_sample_by_quantile": [[AR, ...], ...],
//!  "quantile_boundaries": [null, -0.0032, ..., null],
//!  "mean": -0.0499, "variance": 0.0053, "skewness": 9.8557, "kurtosis": 195.6007,
//!  "most_positive_activation_records": [AR, ...]}
//! AR = {"dataclass_name": "ActivationRecord", "tokens": ["..."], "activations": [0.1, ...]}
//! ```
//!
//! Python writes `NaN`, `Infinity` and `-Infinity` as bare literals, which standard JSON
//! parsers reject, so this module has its own reader. It decodes straight into the protobuf
//! encoding of each activation record, in one pass over the bytes, knowing the schema: no
//! intermediate JSON tree, no allocation per token (a token without escapes costs one copy of
//! its bytes), one buffer per neuron.
//!
//! - [`parse_neuron`] reads a file the way `neuron_explainer.fast_dataclasses.loads` does, and
//!   fails with a [`ParseError`] that says where and what, never a panic.
//!   [`parse_neuron_record`] gives the same record as typed messages.
//! - [`write_neuron_record`] writes a record back the way Python wrote the public files;
//!   for those files `write_neuron_record(&parse_neuron_record(f)?) == f`, byte for byte.

mod reader;
mod scan;
mod writer;

#[cfg(test)]
mod tests;

use activations_proto::{pb, wire};
use prost::Message as _;

/// Why a neuron file could not be read, and where.
///
/// `offset` is the byte offset into the input; `line` and `column` are 1-based, with the
/// column counted in characters (the public files are a single line, so the offset is often
/// the more useful number). `message` starts with the path of the offending value when there
/// is one, e.g. `random_sample[3].tokens[5]: expected a string, found a number`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}, column {column} (byte {offset}): {message}")]
pub struct ParseError {
    /// Byte offset of the problem in the input.
    pub offset: usize,
    /// 1-based line of `offset`.
    pub line: usize,
    /// 1-based column of `offset`, in characters.
    pub column: usize,
    /// What is wrong, prefixed by the path of the value it concerns.
    pub message: String,
}

/// Decodes one neuron file exactly as `neuron_explainer.fast_dataclasses.loads` reads it, into
/// the form the service keeps: each activation record as its protobuf encoding
/// ([`EncodedRecord`](activations_proto::encoded::EncodedRecord)), all of them slices of one
/// buffer.
///
/// Accepted beyond strict JSON, as Python's `json` accepts it: `NaN`, `Infinity` and
/// `-Infinity` in any number position, lone surrogate escapes (decoded as U+FFFD, since a Rust
/// string cannot hold them) and a leading UTF-8 byte order mark. In any number position `null`
/// is accepted too: an activation `null` becomes NaN, a moment (`mean`, ...) `null` becomes
/// `None`, a boundary `null` becomes a `NullableDouble` without value.
///
/// Schema rules, following the dataclasses:
/// - `dataclass_name` may be absent; if present it must name the class expected there
///   (`NeuronRecord`, `NeuronId`, `ActivationRecord`).
/// - Keys come in any order; for duplicate keys the last one wins; unknown keys are skipped
///   (their values still have to be valid JSON, nested at most 128 levels deep).
/// - `neuron_id`, `tokens`, `activations`, `layer_index` and `neuron_index` are required;
///   `random_sample` and `most_positive_activation_records` default to empty lists,
///   `random_sample_by_quantile` and `quantile_boundaries` to `None` and the moments to NaN.
/// - Every activation record has as many activations as tokens.
/// - Indices are non-negative integers that fit in `u32` (an integral float like `1.0` passes).
///
/// # Errors
///
/// A [`ParseError`] for invalid JSON, invalid UTF-8, a raw control character inside a string,
/// a value of the wrong type, a missing required field, a wrong `dataclass_name`, an
/// activation record whose lengths differ, or data after the record.
pub fn parse_neuron(bytes: &[u8]) -> Result<wire::NeuronRecord, ParseError> {
    reader::parse(bytes)
}

/// [`parse_neuron`], then decoded into the typed messages (a `String` per token): for tools
/// and tests that look inside records. The service itself never needs this.
///
/// # Errors
///
/// As [`parse_neuron`].
pub fn parse_neuron_record(bytes: &[u8]) -> Result<pb::NeuronRecord, ParseError> {
    parse_neuron(bytes).map(|record| typed(&record))
}

/// The typed form of a record the service holds. Both are encodings of the same message, so
/// this is a protobuf decode of its encoding; that cannot fail for a record built by this crate,
/// and an empty record is returned rather than a panic if it ever did.
pub fn typed(record: &wire::NeuronRecord) -> pb::NeuronRecord {
    pb::NeuronRecord::decode(record.encode_to_vec().as_slice()).unwrap_or_default()
}

/// Encodes a record the way Python's `json.dumps` wrote the public neuron files.
///
/// That is: `", "` and `": "` separators, each object's `dataclass_name` first and its other
/// fields in dataclass order, non-ASCII characters as `\uXXXX` escapes, floats as Python's
/// `repr` prints them (`0.0`, `1e-05`, `NaN`, `-Infinity`) and no trailing newline.
/// Activations are printed with the shortest digits that identify the `f32`, which reproduces
/// the public files (their activations have 4 decimals). `dfa_values` and `dfa_target_index`
/// are written only when the record carries one of them. A record without `neuron_id` gets
/// `"neuron_id": null`, which [`parse_neuron_record`] rejects.
#[must_use]
pub fn write_neuron_record(record: &pb::NeuronRecord) -> String {
    writer::write(record)
}
