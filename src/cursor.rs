//! The `cursor` of `StreamNeuronSplits`: where a stream stopped, so that a new request continues
//! after the last neuron received. The server issues and reads cursors; clients hold them as
//! opaque strings, and may read one back with [`Cursor::decode`] to see which neuron it follows.
//!
//! A cursor is valid only for a request that asks for the same stream: the same dataset,
//! selection, splits and `slice_params`. Those fields, and only those, make its
//! [`StreamIdentity`], so a field added to the request later does not invalidate saved cursors.
//!
//! Versions: `c2` (this one) fingerprints those four fields. `c1`, issued by earlier servers,
//! fingerprinted the whole request message; it is still read, and it resumes the same stream as
//! long as the request carries only those four fields.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use prost::Message as _;

use crate::pb;

/// The version this crate writes.
const VERSION: &str = "c2";
/// The version of earlier servers, still read.
const LEGACY_VERSION: &str = "c1";

/// Identifies the stream a `StreamNeuronSplits` request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamIdentity {
    /// Fingerprint of the dataset, selection, splits and slice parameters (`c2`).
    fingerprint: u64,
    /// Fingerprint of the whole request message, as `c1` cursors hold it.
    legacy: u64,
}

impl StreamIdentity {
    /// The stream `request` asks for, in `dataset` (the name the server resolved, which may
    /// differ from the request's empty default). The request's own cursor does not count.
    pub fn of(dataset: &str, request: &pb::StreamNeuronSplitsRequest) -> StreamIdentity {
        let mut canonical = Vec::new();
        field(&mut canonical, 1, dataset.as_bytes());
        let selection = request
            .selection
            .as_ref()
            .map(prost::Message::encode_to_vec);
        if let Some(selection) = &selection {
            field(&mut canonical, 2, selection);
        }
        let splits: Vec<u8> = request
            .splits
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        field(&mut canonical, 3, &splits);
        if let Some(n) = request
            .slice_params
            .as_ref()
            .and_then(|p| p.n_examples_per_split)
        {
            field(&mut canonical, 4, &n.to_le_bytes());
        }
        let legacy = pb::StreamNeuronSplitsRequest {
            dataset: dataset.to_string(),
            selection: request.selection.clone(),
            splits: request.splits.clone(),
            slice_params: request.slice_params,
            cursor: String::new(),
        };
        StreamIdentity {
            fingerprint: fnv1a(&canonical),
            legacy: fnv1a(&legacy.encode_to_vec()),
        }
    }
}

/// Appends one part of the canonical form: its number, its length, its bytes.
fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
    out.push(number);
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// FNV-1a: stable across builds and platforms, unlike the standard library's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where a stream stopped: after the neuron at `position` in the selection's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    fingerprint: u64,
    /// Position of the last neuron sent, in selection order (0 for the first).
    pub position: u64,
    /// The last neuron sent.
    pub layer_index: u32,
    pub neuron_index: u32,
}

/// Why a cursor cannot continue a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorError {
    /// Not a cursor this service issued (or a damaged copy of one).
    Malformed,
    /// A cursor of another stream: another dataset, selection, splits or `slice_params`.
    OtherStream,
}

impl fmt::Display for CursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CursorError::Malformed => "is not a cursor issued by StreamNeuronSplits",
            CursorError::OtherStream => {
                "belongs to a different request: resume with the same dataset, selection, \
                 splits and slice_params as the stream that issued it"
            }
        })
    }
}

impl std::error::Error for CursorError {}

impl Cursor {
    /// The cursor after the neuron at `position` of `stream`.
    pub fn new(stream: StreamIdentity, position: u64, layer_index: u32, neuron_index: u32) -> Self {
        Cursor {
            fingerprint: stream.fingerprint,
            position,
            layer_index,
            neuron_index,
        }
    }

    /// The text sent as `NeuronSplits.cursor`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{VERSION}\n{:016x}\n{}\n{}\n{}",
            self.fingerprint, self.position, self.layer_index, self.neuron_index
        ))
    }

    /// Reads `text` as a cursor of `stream`.
    pub fn decode(text: &str, stream: StreamIdentity) -> Result<Cursor, CursorError> {
        let (version, cursor) = Cursor::read(text)?;
        let expected = match version {
            Version::Current => stream.fingerprint,
            Version::Legacy => stream.legacy,
        };
        if cursor.fingerprint != expected {
            return Err(CursorError::OtherStream);
        }
        Ok(Cursor {
            fingerprint: stream.fingerprint,
            ..cursor
        })
    }

    /// Reads `text` as a cursor of any stream: where it stopped, whichever request issued it.
    pub fn inspect(text: &str) -> Result<Cursor, CursorError> {
        Cursor::read(text).map(|(_, cursor)| cursor)
    }

    fn read(text: &str) -> Result<(Version, Cursor), CursorError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| CursorError::Malformed)?;
        let text = String::from_utf8(bytes).map_err(|_| CursorError::Malformed)?;
        let parts: Vec<&str> = text.split('\n').collect();
        let [version, hash, position, layer, neuron] = parts[..] else {
            return Err(CursorError::Malformed);
        };
        let version = match version {
            VERSION => Version::Current,
            LEGACY_VERSION => Version::Legacy,
            _ => return Err(CursorError::Malformed),
        };
        let number = |_: std::num::ParseIntError| CursorError::Malformed;
        let cursor = Cursor {
            fingerprint: u64::from_str_radix(hash, 16).map_err(number)?,
            position: position.parse().map_err(number)?,
            layer_index: layer.parse().map_err(number)?,
            neuron_index: neuron.parse().map_err(number)?,
        };
        Ok((version, cursor))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Current,
    Legacy,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn request(
        layers: std::ops::Range<u32>,
        splits: Vec<i32>,
        n: Option<u32>,
    ) -> pb::StreamNeuronSplitsRequest {
        pb::StreamNeuronSplitsRequest {
            dataset: String::new(),
            selection: Some(pb::NeuronSelection {
                selection: Some(pb::neuron_selection::Selection::Range(pb::NeuronRange {
                    layer_start: layers.start,
                    layer_end: layers.end,
                    neuron_start: 0,
                    neuron_end: None,
                })),
            }),
            splits,
            slice_params: Some(pb::ActivationRecordSliceParams {
                n_examples_per_split: n,
            }),
            cursor: String::new(),
        }
    }

    /// A cursor as the server of `c1` wrote it (the format and fingerprint of that release).
    fn legacy_cursor(
        dataset: &str,
        request: &pb::StreamNeuronSplitsRequest,
        position: u64,
        layer: u32,
        neuron: u32,
    ) -> String {
        let canonical = pb::StreamNeuronSplitsRequest {
            dataset: dataset.to_string(),
            cursor: String::new(),
            ..request.clone()
        };
        let hash = fnv1a(&canonical.encode_to_vec());
        URL_SAFE_NO_PAD.encode(format!("c1\n{hash:016x}\n{position}\n{layer}\n{neuron}"))
    }

    #[test]
    fn a_cursor_continues_its_own_stream_only() {
        let valid = request(0..2, vec![3], Some(5));
        let stream = StreamIdentity::of("xl", &valid);
        let text = Cursor::new(stream, 7, 1, 42).encode();
        let cursor = Cursor::decode(&text, stream).unwrap();
        assert_eq!(
            (cursor.position, cursor.layer_index, cursor.neuron_index),
            (7, 1, 42)
        );
        assert_eq!(Cursor::inspect(&text), Ok(cursor));
        // The request's own cursor is not part of the stream it asks for.
        let resumed = pb::StreamNeuronSplitsRequest {
            cursor: text.clone(),
            ..valid.clone()
        };
        assert_eq!(StreamIdentity::of("xl", &resumed), stream);
        for other in [
            StreamIdentity::of("small", &valid),
            StreamIdentity::of("xl", &request(0..3, vec![3], Some(5))),
            StreamIdentity::of("xl", &request(0..2, vec![3, 1], Some(5))),
            StreamIdentity::of("xl", &request(0..2, vec![3], None)),
            StreamIdentity::of("xl", &request(0..2, vec![3], Some(6))),
        ] {
            assert_eq!(Cursor::decode(&text, other), Err(CursorError::OtherStream));
        }
    }

    #[test]
    fn cursors_of_the_previous_version_still_resume_their_stream() {
        let valid = request(0..2, vec![3], Some(5));
        let legacy = legacy_cursor("xl", &valid, 9, 1, 3);
        let cursor = Cursor::decode(&legacy, StreamIdentity::of("xl", &valid)).unwrap();
        assert_eq!(
            (cursor.position, cursor.layer_index, cursor.neuron_index),
            (9, 1, 3)
        );
        let other = StreamIdentity::of("xl", &request(0..2, vec![2], Some(5)));
        assert_eq!(
            Cursor::decode(&legacy, other),
            Err(CursorError::OtherStream)
        );
    }

    #[test]
    fn a_cursor_issued_by_the_previous_release_resumes_after_its_neuron() {
        // Issued by the release before `c2` for this request on its bundled sample, after
        // neuron 1/1 (the first of the selection).
        const ISSUED: &str = "YzEKYTAxY2E5OTE4NjgyZmZlYwowCjEKMQ";
        let neuron = |layer_index, neuron_index| pb::NeuronId {
            layer_index,
            neuron_index,
        };
        let issued_for = pb::StreamNeuronSplitsRequest {
            dataset: String::new(),
            selection: Some(pb::NeuronSelection {
                selection: Some(pb::neuron_selection::Selection::Neurons(pb::NeuronIdList {
                    neuron_ids: vec![neuron(1, 1), neuron(1, 2)],
                })),
            }),
            splits: vec![pb::Split::Valid as i32],
            slice_params: Some(pb::ActivationRecordSliceParams {
                n_examples_per_split: Some(5),
            }),
            cursor: String::new(),
        };
        let stream = StreamIdentity::of("gpt2-xl-sample", &issued_for);
        let cursor = Cursor::decode(ISSUED, stream).unwrap();
        assert_eq!(
            (cursor.position, cursor.layer_index, cursor.neuron_index),
            (0, 1, 1)
        );
        let other = StreamIdentity::of("another-dataset", &issued_for);
        assert_eq!(Cursor::decode(ISSUED, other), Err(CursorError::OtherStream));
    }

    #[test]
    fn garbage_is_malformed_never_misread() {
        let stream = StreamIdentity::of("xl", &request(0..2, vec![3], Some(5)));
        for text in [
            "",
            "not base64!",
            &URL_SAFE_NO_PAD.encode("c3\n0000000000000000\n1\n2\n3"),
            &URL_SAFE_NO_PAD.encode("c2\nzz\n1\n2\n3"),
            &URL_SAFE_NO_PAD.encode("c2\n0000000000000000\n1\n2"),
            &URL_SAFE_NO_PAD.encode("c2\n0000000000000000\n-1\n2\n3"),
        ] {
            assert_eq!(
                Cursor::decode(text, stream),
                Err(CursorError::Malformed),
                "{text}"
            );
        }
    }

    proptest! {
        #[test]
        fn every_cursor_reads_back(position: u64, layer: u32, neuron: u32, n: Option<u32>) {
            let stream = StreamIdentity::of("d", &request(0..4, vec![1, 2, 3, 4], n));
            let cursor = Cursor::new(stream, position, layer, neuron);
            prop_assert_eq!(Cursor::decode(&cursor.encode(), stream), Ok(cursor));
        }

        #[test]
        fn arbitrary_text_is_never_a_cursor_of_the_stream(text in "[A-Za-z0-9_-]{0,64}") {
            let stream = StreamIdentity::of("d", &request(0..4, vec![1], None));
            prop_assert!(Cursor::decode(&text, stream).is_err());
        }
    }
}
