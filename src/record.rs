//! `ActivationRecord`, the message every response is mostly made of, with a hand-written
//! decoder.
//!
//! The struct is the one prost would generate (same fields, same encoding); only its
//! [`Message::merge_field`] differs. A client spends most of a response's decoding on the
//! tokens: prost grows the token list one push at a time and copies each token through a
//! generic buffer adapter. Here a token that lies whole in the buffer's current chunk (always
//! the case for a tonic message, which is decoded from one contiguous buffer) is checked as
//! UTF-8 and copied in one step, and the list is sized once, by counting the tokens that follow
//! in the chunk. Packed activations are read the same way. Anything else (a token split across
//! chunks, a length of two or more varint bytes, a malformed field) goes through prost's own
//! code, so what is accepted, what is rejected and the error it gives are prost's. The tests
//! check both against a prost-derived copy of the message.

use bytes::{Buf, BufMut};
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType, float, int64, skip_field, string},
};

/// `ActivationRecord`: a text excerpt as tokens and the neuron's activation on each token.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct ActivationRecord {
    /// Tokens of the excerpt, as strings.
    pub tokens: Vec<String>,
    /// Raw activation on each token; as long as `tokens`. A JSON `null` is served as NaN.
    pub activations: Vec<f32>,
    /// Optional fields of the Python dataclass (`dfa_values`, `dfa_target_index`); empty/absent
    /// when the file does not carry them (Python: None).
    pub dfa_values: Vec<i64>,
    pub dfa_target_index: Option<i64>,
}

const TOKENS: u32 = 1;
const ACTIVATIONS: u32 = 2;
const DFA_VALUES: u32 = 3;
const DFA_TARGET_INDEX: u32 = 4;

/// The key byte of a `tokens` field: field 1, length-delimited.
const TOKEN_KEY: u8 = (TOKENS << 3) as u8 | WireType::LengthDelimited as u8;

/// Reserved at most this many tokens ahead, whatever a (possibly malformed) buffer suggests.
const MAX_RESERVE: usize = 1 << 12;

impl Message for ActivationRecord {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        string::encode_repeated(TOKENS, &self.tokens, buf);
        float::encode_packed(ACTIVATIONS, &self.activations, buf);
        int64::encode_packed(DFA_VALUES, &self.dfa_values, buf);
        if let Some(value) = &self.dfa_target_index {
            int64::encode(DFA_TARGET_INDEX, value, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let (merged, field) = match tag {
            TOKENS => (self.merge_token(wire_type, buf, ctx), "tokens"),
            ACTIVATIONS => (self.merge_activations(wire_type, buf, ctx), "activations"),
            DFA_VALUES => (
                int64::merge_repeated(wire_type, &mut self.dfa_values, buf, ctx),
                "dfa_values",
            ),
            DFA_TARGET_INDEX => (
                int64::merge(
                    wire_type,
                    self.dfa_target_index.get_or_insert_default(),
                    buf,
                    ctx,
                ),
                "dfa_target_index",
            ),
            _ => return skip_field(wire_type, tag, buf, ctx),
        };
        merged.map_err(|mut error| {
            error.push("ActivationRecord", field);
            error
        })
    }

    fn encoded_len(&self) -> usize {
        string::encoded_len_repeated(TOKENS, &self.tokens)
            + float::encoded_len_packed(ACTIVATIONS, &self.activations)
            + int64::encoded_len_packed(DFA_VALUES, &self.dfa_values)
            + self
                .dfa_target_index
                .as_ref()
                .map_or(0, |value| int64::encoded_len(DFA_TARGET_INDEX, value))
    }

    fn clear(&mut self) {
        self.tokens.clear();
        self.activations.clear();
        self.dfa_values.clear();
        self.dfa_target_index = None;
    }
}

impl ActivationRecord {
    /// One `tokens` field, its key already read.
    fn merge_token(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let chunk = buf.chunk();
        if wire_type == WireType::LengthDelimited {
            if self.tokens.capacity() == 0 {
                self.tokens.reserve(tokens_ahead(chunk));
            }
            if let Some((token, rest)) = short_field(chunk)
                && let Ok(token) = std::str::from_utf8(token)
            {
                self.tokens.push(token.to_owned());
                let used = chunk.len() - rest.len();
                buf.advance(used);
                return Ok(());
            }
        }
        string::merge_repeated(wire_type, &mut self.tokens, buf, ctx)
    }

    /// One `activations` field, its key already read: packed (as every encoder writes it) or
    /// one value.
    fn merge_activations(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if wire_type == WireType::LengthDelimited {
            let mut chunk = buf.chunk();
            let available = chunk.len();
            if let Ok(len) = prost::encoding::decode_varint(&mut chunk)
                && let Ok(len) = usize::try_from(len)
                && len % 4 == 0
                && let Some(packed) = chunk.get(..len)
            {
                self.activations.reserve(len / 4);
                self.activations.extend(
                    packed
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
                let used = available - chunk.len() + len;
                buf.advance(used);
                return Ok(());
            }
        }
        float::merge_repeated(wire_type, &mut self.activations, buf, ctx)
    }
}

/// A length-delimited value with a one-byte length, whole in `chunk` (which starts at the
/// length): the value and what follows it.
fn short_field(chunk: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = chunk.split_first()?;
    if len >= 0x80 {
        return None;
    }
    (rest.len() >= len as usize).then(|| rest.split_at(len as usize))
}

/// How many tokens `chunk` holds from its start (a token's length, its key just read): this one
/// and those right after it, as far as they have one-byte lengths. Only a capacity: a short or
/// long count costs a reallocation or some unused slots, never a wrong answer.
fn tokens_ahead(chunk: &[u8]) -> usize {
    let mut count = 0;
    let mut rest = chunk;
    while count < MAX_RESERVE
        && let Some((_, after)) = short_field(rest)
    {
        count += 1;
        match after.split_first() {
            Some((&TOKEN_KEY, next)) => rest = next,
            _ => break,
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What prost generates for the message (see `proto/`), to check ours against; named as
    /// ours, since prost's errors name the message.
    mod generated {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct ActivationRecord {
            #[prost(string, repeated, tag = "1")]
            pub tokens: Vec<String>,
            #[prost(float, repeated, tag = "2")]
            pub activations: Vec<f32>,
            #[prost(int64, repeated, tag = "3")]
            pub dfa_values: Vec<i64>,
            #[prost(int64, optional, tag = "4")]
            pub dfa_target_index: Option<i64>,
        }
    }
    use generated::ActivationRecord as Generated;

    impl From<&ActivationRecord> for Generated {
        fn from(record: &ActivationRecord) -> Self {
            Generated {
                tokens: record.tokens.clone(),
                activations: record.activations.clone(),
                dfa_values: record.dfa_values.clone(),
                dfa_target_index: record.dfa_target_index,
            }
        }
    }

    /// Tokens of every length class: empty, short, multi-byte UTF-8, and past the one-byte
    /// length (128 bytes and more).
    fn token() -> impl Strategy<Value = String> {
        prop_oneof![".{0,8}", "[a-z]{120,140}", "\\PC{0,3}"]
    }

    fn record() -> impl Strategy<Value = ActivationRecord> {
        (
            prop::collection::vec(token(), 0..40),
            prop::collection::vec(any::<f32>(), 0..40),
            prop::collection::vec(any::<i64>(), 0..4),
            prop::option::of(any::<i64>()),
        )
            .prop_map(|(tokens, activations, dfa_values, dfa_target_index)| {
                ActivationRecord {
                    tokens,
                    activations,
                    dfa_values,
                    dfa_target_index,
                }
            })
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// The same fields, floats compared bit for bit (NaN included).
    fn same(ours: &ActivationRecord, generated: &Generated) -> bool {
        ours.tokens == generated.tokens
            && bits(&ours.activations) == bits(&generated.activations)
            && ours.dfa_values == generated.dfa_values
            && ours.dfa_target_index == generated.dfa_target_index
    }

    /// Decodes with both, as a field of a list (how records travel): the outcome must agree,
    /// and so must the error's text.
    fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
        let ours = ActivationRecord::decode(bytes);
        let generated = Generated::decode(bytes);
        match (&ours, &generated) {
            (Ok(ours), Ok(generated)) => prop_assert!(same(ours, generated), "{ours:?}"),
            (Err(ours), Err(generated)) => prop_assert_eq!(ours.to_string(), generated.to_string()),
            _ => prop_assert!(false, "ours {ours:?}, prost {generated:?}"),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn encodes_as_prost_does(record in record()) {
            prop_assert_eq!(record.encode_to_vec(), Generated::from(&record).encode_to_vec());
            prop_assert_eq!(record.encoded_len(), record.encode_to_vec().len());
        }

        #[test]
        fn decodes_what_it_encodes(record in record()) {
            let decoded = ActivationRecord::decode(record.encode_to_vec().as_slice()).unwrap();
            prop_assert!(same(&decoded, &Generated::from(&record)));
        }

        #[test]
        fn decodes_as_prost_does_valid_or_not(
            record in record(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let bytes = record.encode_to_vec();
            agree(&bytes)?;
            if !bytes.is_empty() {
                // Cut short, and one byte changed: lengths that overrun, broken UTF-8, other
                // wire types and unknown fields.
                agree(&bytes[..cut.index(bytes.len())])?;
                let mut changed = bytes.clone();
                changed[flip.index(bytes.len())] = byte;
                agree(&changed)?;
            }
        }

        #[test]
        fn decodes_arbitrary_bytes_as_prost_does(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            agree(&bytes)?;
        }

        #[test]
        fn decodes_from_a_buffer_in_pieces_as_from_one(record in record(), at in any::<prop::sample::Index>()) {
            let bytes = record.encode_to_vec();
            let at = at.index(bytes.len() + 1);
            let pieces = bytes::Buf::chain(&bytes[..at], &bytes[at..]);
            let decoded = ActivationRecord::decode(pieces).unwrap();
            prop_assert!(same(&decoded, &Generated::from(&record)));
        }
    }

    /// Records inside a message: each token list and activation list stops at its record's
    /// end, even where the next record's bytes look like more tokens.
    #[test]
    fn records_in_a_list_keep_to_their_own_bytes() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct List {
            #[prost(message, repeated, tag = "1")]
            records: Vec<ActivationRecord>,
        }
        let records = vec![
            ActivationRecord {
                tokens: vec!["a".into(), "b".into()],
                ..Default::default()
            },
            ActivationRecord {
                tokens: vec!["c".into()],
                activations: vec![1.0],
                ..Default::default()
            },
            ActivationRecord::default(),
            ActivationRecord {
                tokens: vec!["d".into(); 3],
                activations: vec![f32::NAN, -0.5, 2.0],
                dfa_values: vec![-1, 7],
                dfa_target_index: Some(2),
            },
        ];
        let list = List {
            records: records.clone(),
        };
        let decoded = List::decode(list.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.records.len(), records.len());
        for (got, want) in decoded.records.iter().zip(&records) {
            assert!(same(got, &Generated::from(want)), "{got:?} != {want:?}");
        }
    }

    /// The hand-written struct stays the message of `proto/`: a field added there fails this
    /// test instead of being skipped as unknown by the decoder.
    #[test]
    fn the_fields_are_those_of_the_proto() {
        use prost_types::field_descriptor_proto::{Label, Type};
        let descriptors =
            prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let message = descriptors
            .file
            .iter()
            .filter(|file| file.package() == "neuron_explainer.activations.v1")
            .flat_map(|file| &file.message_type)
            .find(|message| message.name() == "ActivationRecord")
            .expect("ActivationRecord is in proto/");
        let fields: Vec<_> = message
            .field
            .iter()
            .map(|f| {
                (
                    f.name(),
                    f.number(),
                    f.label(),
                    f.r#type(),
                    f.proto3_optional(),
                )
            })
            .collect();
        assert_eq!(
            fields,
            [
                (
                    "tokens",
                    TOKENS as i32,
                    Label::Repeated,
                    Type::String,
                    false
                ),
                (
                    "activations",
                    ACTIVATIONS as i32,
                    Label::Repeated,
                    Type::Float,
                    false
                ),
                (
                    "dfa_values",
                    DFA_VALUES as i32,
                    Label::Repeated,
                    Type::Int64,
                    false
                ),
                (
                    "dfa_target_index",
                    DFA_TARGET_INDEX as i32,
                    Label::Optional,
                    Type::Int64,
                    true
                ),
            ]
        );
        // Repeated scalars are packed unless the .proto says otherwise.
        assert!(message.field.iter().all(|f| f.options.is_none()));
    }

    #[test]
    fn the_token_list_is_sized_once_for_the_tokens_in_the_buffer() {
        let record = ActivationRecord {
            tokens: (0..64).map(|i| format!("t{i}")).collect(),
            activations: vec![0.5; 64],
            ..Default::default()
        };
        let decoded = ActivationRecord::decode(record.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.tokens, record.tokens);
        assert_eq!(decoded.tokens.capacity(), 64);
        assert_eq!(decoded.activations.capacity(), 64);
    }
}
