//! [`EncodedRecord`]: an `ActivationRecord` kept as its protobuf encoding.
//!
//! The server reads a neuron once and then answers many requests from it, each a selection of
//! its records. Holding every record as the bytes of its encoding (slices of one buffer per
//! neuron) makes a response a list of reference-counted slices: nothing is copied or encoded per
//! request but the final write into the HTTP/2 frame, and a cached neuron is one allocation of
//! about half its JSON size instead of one per token.
//!
//! [`wire`](crate::wire) is generated with `ActivationRecord` mapped to this type, so the
//! messages that embed records (`SplitActivationRecord`, `NeuronRecord`, `NeuronSplits`, ...)
//! encode exactly the bytes [`pb`] would: an embedded message is its length and its
//! body, and the body is what this type stores.

use std::fmt;

use bytes::{Buf, BufMut, Bytes};
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType},
};

use crate::{pb, python_max};

/// The body of an encoded `ActivationRecord` (its fields, without tag or length), with the two
/// facts about it the server needs without decoding it: its token count and its largest
/// activation.
///
/// Built by the server's neuron-file reader, which writes the body itself
/// ([`EncodedRecord::from_encoded`]), or from a typed record ([`EncodedRecord::from_record`]).
/// Decoding (`prost::Message::decode`) is supported too and gives the same result as decoding a
/// [`pb::ActivationRecord`] and converting it.
#[derive(Clone, Default)]
pub struct EncodedRecord {
    body: Bytes,
    token_count: u32,
    max_activation: Option<f32>,
}

impl EncodedRecord {
    /// Wraps a body the caller encoded itself.
    ///
    /// `body` must be the encoding of an `ActivationRecord` with `token_count` tokens whose
    /// activations have `max_activation` as their [`python_max`]. Debug builds check it.
    pub fn from_encoded(body: Bytes, token_count: u32, max_activation: Option<f32>) -> Self {
        let record = EncodedRecord {
            body,
            token_count,
            max_activation,
        };
        #[cfg(debug_assertions)]
        {
            let decoded = record.to_record();
            debug_assert_eq!(decoded.tokens.len(), token_count as usize);
            debug_assert_eq!(
                python_max(decoded.activations.iter().copied()).map(f32::to_bits),
                max_activation.map(f32::to_bits)
            );
        }
        record
    }

    /// Encodes a typed record.
    pub fn from_record(record: &pb::ActivationRecord) -> Self {
        EncodedRecord {
            body: Bytes::from(record.encode_to_vec()),
            token_count: count(record.tokens.len()),
            max_activation: python_max(record.activations.iter().copied()),
        }
    }

    /// Decodes the record. The body was either written by this crate's types or checked when it
    /// was decoded, so this cannot fail short of a bug; it answers an empty record rather than
    /// panic if it does.
    pub fn to_record(&self) -> pb::ActivationRecord {
        pb::ActivationRecord::decode(self.body.clone()).unwrap_or_default()
    }

    /// The encoded body (what follows the record's tag and length inside its parent).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// How many tokens the record has.
    pub fn token_count(&self) -> u32 {
        self.token_count
    }

    /// `max(record.activations)` as Python's `max` computes it; `None` without activations.
    pub fn max_activation(&self) -> Option<f32> {
        self.max_activation
    }
}

fn count(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Equal when the encodings are equal (the counts follow from the encoding).
impl PartialEq for EncodedRecord {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body
    }
}

impl fmt::Debug for EncodedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedRecord")
            .field("encoded_len", &self.body.len())
            .field("token_count", &self.token_count)
            .field("max_activation", &self.max_activation)
            .finish()
    }
}

impl Message for EncodedRecord {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.body);
    }

    /// Decodes one field as [`pb::ActivationRecord`] would (so strings are checked for UTF-8
    /// and wire types for each field) and appends its encoding. A repeated field may thus
    /// arrive in several runs, which decoders concatenate, as the protobuf encoding allows.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let mut field = pb::ActivationRecord::default();
        field.merge_field(tag, wire_type, buf, ctx)?;
        let mut body = Vec::from(std::mem::take(&mut self.body));
        field.encode_raw(&mut body);
        self.body = Bytes::from(body);
        self.token_count = self.token_count.saturating_add(count(field.tokens.len()));
        let previous = self.max_activation;
        self.max_activation = python_max(previous.into_iter().chain(field.activations));
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.body.len()
    }

    fn clear(&mut self) {
        *self = EncodedRecord::default();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::record::tests::{bits, record};
    use crate::wire;

    fn same(a: &pb::ActivationRecord, b: &pb::ActivationRecord) -> bool {
        a.tokens == b.tokens
            && bits(&a.activations) == bits(&b.activations)
            && a.dfa_values == b.dfa_values
            && a.dfa_target_index == b.dfa_target_index
    }

    proptest! {
        /// A message that embeds encoded records is byte-for-byte the message that embeds the
        /// typed ones, and decodes back to them.
        #[test]
        fn wire_messages_encode_like_typed_ones(records in prop::collection::vec(record(), 0..5), index in any::<u32>()) {
            let typed: Vec<pb::SplitActivationRecord> = records
                .iter()
                .map(|r| pb::SplitActivationRecord {
                    record: Some(r.clone()),
                    source: pb::RecordSource::Random.into(),
                    source_index: index,
                })
                .collect();
            let encoded: Vec<wire::SplitActivationRecord> = records
                .iter()
                .map(|r| wire::SplitActivationRecord {
                    record: Some(EncodedRecord::from_record(r)),
                    source: wire::RecordSource::Random.into(),
                    source_index: index,
                })
                .collect();
            for (typed, encoded) in typed.iter().zip(&encoded) {
                let bytes = encoded.encode_to_vec();
                prop_assert_eq!(&bytes, &typed.encode_to_vec());
                let back = pb::SplitActivationRecord::decode(&bytes[..]).unwrap();
                prop_assert!(same(back.record.as_ref().unwrap(), typed.record.as_ref().unwrap()));
            }
        }

        /// Decoding into an `EncodedRecord` keeps every field and the derived counts.
        #[test]
        fn decoding_keeps_fields_and_counts(record in record()) {
            let bytes = record.encode_to_vec();
            let encoded = EncodedRecord::decode(&bytes[..]).unwrap();
            prop_assert_eq!(encoded.token_count() as usize, record.tokens.len());
            prop_assert_eq!(
                encoded.max_activation().map(f32::to_bits),
                python_max(record.activations.iter().copied()).map(f32::to_bits)
            );
            prop_assert!(same(&encoded.to_record(), &record));
            prop_assert_eq!(encoded, EncodedRecord::from_record(&record));
        }
    }

    #[test]
    fn decoding_rejects_what_the_typed_record_rejects() {
        // Field 1 (tokens) holding invalid UTF-8.
        let bad = [0x0A, 0x01, 0xFF];
        assert!(pb::ActivationRecord::decode(&bad[..]).is_err());
        assert!(EncodedRecord::decode(&bad[..]).is_err());
    }
}
