//! `ActivationRecord`, the message every response is mostly made of, and
//! `SplitActivationRecord`, which carries it in every split, with hand-written decoders.
//!
//! The structs are the ones prost would generate (same fields, same encoding, same helpers);
//! only their [`Message::merge_field`] differs. A client spends most of a response's decoding on
//! the tokens: prost grows the token list one push at a time, copies each token through a
//! generic buffer adapter and checks each one as UTF-8 on its own.
//!
//! - `SplitActivationRecord` knows where its record ends (the field's length), so when the
//!   record lies whole in the buffer's current chunk (always the case for a tonic message,
//!   which is decoded from one contiguous buffer) it is decoded from that slice in one go: each
//!   run of tokens is checked as UTF-8 in one pass (the keys and one-byte lengths between tokens
//!   are ASCII, so the run is valid exactly when every token is), the token list is sized once,
//!   and packed activations are copied in one loop.
//! - `ActivationRecord` elsewhere (a `NeuronRecord`'s lists) is decoded field by field, as
//!   prost does, but a token lying whole in the chunk is checked and copied in one step, and the
//!   list is sized once, by counting the tokens that follow.
//!
//! Anything else (a token split across chunks, a length of two or more varint bytes, the
//! optional `dfa_*` fields, a malformed field) goes through prost's own code, so what is
//! accepted, what is rejected and the error it gives are prost's. The tests check both messages
//! against prost-derived copies, and their fields against the compiled `.proto`.

use std::fmt;

use bytes::{Buf, BufMut};
use prost::{
    DecodeError, Message,
    encoding::{
        DecodeContext, WireType, decode_varint, float, int32, int64, skip_field, string, uint32,
    },
};

use crate::pb::RecordSource;

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

/// The field numbers of `ActivationRecord` in `proto/`, for the code that writes or reads its
/// encoding by hand (these decoders, and the server's JSON reader, which encodes records as it
/// reads them). The tests below check them against the compiled `.proto`.
pub mod field {
    use prost::encoding::WireType;

    pub const TOKENS: u32 = 1;
    pub const ACTIVATIONS: u32 = 2;
    pub const DFA_VALUES: u32 = 3;
    pub const DFA_TARGET_INDEX: u32 = 4;

    /// The key byte of a `tokens` field: field 1, length-delimited.
    pub const TOKEN_KEY: u8 = (TOKENS << 3) as u8 | WireType::LengthDelimited as u8;
    /// The key byte of packed `activations`: field 2, length-delimited.
    pub const ACTIVATIONS_KEY: u8 = (ACTIVATIONS << 3) as u8 | WireType::LengthDelimited as u8;
}

use field::{ACTIVATIONS, ACTIVATIONS_KEY, DFA_TARGET_INDEX, DFA_VALUES, TOKEN_KEY, TOKENS};

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
        in_field(merged, "ActivationRecord", field)
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
            let chunk = buf.chunk();
            if let Some(rest) = self.push_packed_activations(chunk) {
                let used = chunk.len() - rest.len();
                buf.advance(used);
                return Ok(());
            }
        }
        float::merge_repeated(wire_type, &mut self.activations, buf, ctx)
    }

    /// Packed activations whole in `fields` (which starts at their length, a multiple of 4):
    /// what follows them.
    fn push_packed_activations<'a>(&mut self, mut fields: &'a [u8]) -> Option<&'a [u8]> {
        let len = usize::try_from(decode_varint(&mut fields).ok()?).ok()?;
        if len % 4 != 0 {
            return None;
        }
        let packed = fields.get(..len)?;
        self.activations.reserve(len / 4);
        self.activations.extend(
            packed
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        Some(&fields[len..])
    }

    /// A whole record's encoding, decoded from the slice: `None` where it holds anything but
    /// tokens with one-byte lengths and packed activations, or anything malformed; prost's path
    /// then decides.
    fn decode_body(body: &[u8]) -> Option<ActivationRecord> {
        let mut record = ActivationRecord::default();
        let mut rest = body;
        while let Some((&key, after)) = rest.split_first() {
            rest = match key {
                TOKEN_KEY => record.push_token_run(rest)?,
                ACTIVATIONS_KEY => record.push_packed_activations(after)?,
                _ => return None,
            };
        }
        Some(record)
    }

    /// The token fields at the start of `fields` (at a token's key), as far as they have
    /// one-byte lengths, checked as UTF-8 in one pass: what follows them. The keys and lengths
    /// between the tokens are ASCII characters, so the run is valid UTF-8 exactly when every
    /// token is, and each token is a slice of the checked run.
    fn push_token_run<'a>(&mut self, fields: &'a [u8]) -> Option<&'a [u8]> {
        let (end, count) = token_run(fields, usize::MAX);
        if count == 0 {
            return None;
        }
        let run = std::str::from_utf8(&fields[..end]).ok()?;
        self.tokens.reserve(count);
        let mut at = 0;
        while at < end {
            let start = at + 2;
            at = start + usize::from(fields[at + 1]);
            self.tokens.push(run.get(start..at)?.to_owned());
        }
        Some(&fields[end..])
    }
}

/// One record of a split.
#[derive(Clone, PartialEq, Default)]
pub struct SplitActivationRecord {
    pub record: Option<ActivationRecord>,
    /// Which list of the neuron record it comes from.
    pub source: i32,
    /// Its position in that list.
    pub source_index: u32,
}

const RECORD: u32 = 1;
const SOURCE: u32 = 2;
const SOURCE_INDEX: u32 = 3;

impl SplitActivationRecord {
    /// `source` as a [`RecordSource`]; the default (unspecified) if it is not one.
    pub fn source(&self) -> RecordSource {
        RecordSource::try_from(self.source).unwrap_or_default()
    }

    /// Sets `source` to `value`.
    pub fn set_source(&mut self, value: RecordSource) {
        self.source = value as i32;
    }

    /// The `record` field, its key already read. The fast path needs no recursion budget:
    /// `ActivationRecord` holds no messages, and no message of the contract nests this one
    /// deeper than three levels, far below prost's limit of 100.
    fn merge_record(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if wire_type == WireType::LengthDelimited {
            let chunk = buf.chunk();
            let mut fields = chunk;
            if let Ok(len) = decode_varint(&mut fields)
                && let Some(body) = usize::try_from(len).ok().and_then(|len| fields.get(..len))
                && let Some(decoded) = ActivationRecord::decode_body(body)
            {
                let used = chunk.len() - fields.len() + body.len();
                match &mut self.record {
                    // A second `record` field merges into the first, as prost merges messages.
                    Some(record) => {
                        record.tokens.extend(decoded.tokens);
                        record.activations.extend(decoded.activations);
                    }
                    None => self.record = Some(decoded),
                }
                buf.advance(used);
                return Ok(());
            }
        }
        prost::encoding::message::merge(wire_type, self.record.get_or_insert_default(), buf, ctx)
    }
}

impl Message for SplitActivationRecord {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(record) = &self.record {
            prost::encoding::message::encode(RECORD, record, buf);
        }
        if self.source != 0 {
            int32::encode(SOURCE, &self.source, buf);
        }
        if self.source_index != 0 {
            uint32::encode(SOURCE_INDEX, &self.source_index, buf);
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
            RECORD => (self.merge_record(wire_type, buf, ctx), "record"),
            SOURCE => (
                int32::merge(wire_type, &mut self.source, buf, ctx),
                "source",
            ),
            SOURCE_INDEX => (
                uint32::merge(wire_type, &mut self.source_index, buf, ctx),
                "source_index",
            ),
            _ => return skip_field(wire_type, tag, buf, ctx),
        };
        in_field(merged, "SplitActivationRecord", field)
    }

    fn encoded_len(&self) -> usize {
        self.record.as_ref().map_or(0, |record| {
            prost::encoding::message::encoded_len(RECORD, record)
        }) + if self.source != 0 {
            int32::encoded_len(SOURCE, &self.source)
        } else {
            0
        } + if self.source_index != 0 {
            uint32::encoded_len(SOURCE_INDEX, &self.source_index)
        } else {
            0
        }
    }

    fn clear(&mut self) {
        *self = SplitActivationRecord::default();
    }
}

/// As prost prints it: `source` by its name where it is a known value.
impl fmt::Debug for SplitActivationRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Source(i32);
        impl fmt::Debug for Source {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match RecordSource::try_from(self.0) {
                    Ok(source) => fmt::Debug::fmt(&source, f),
                    Err(_) => fmt::Debug::fmt(&self.0, f),
                }
            }
        }
        f.debug_struct("SplitActivationRecord")
            .field("record", &self.record)
            .field("source", &Source(self.source))
            .field("source_index", &self.source_index)
            .finish()
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
/// and those right after it, as far as they have one-byte lengths, up to [`MAX_RESERVE`]. Only
/// a capacity: a short or long count costs a reallocation or some unused slots, never a wrong
/// answer.
fn tokens_ahead(chunk: &[u8]) -> usize {
    short_field(chunk).map_or(0, |(_, rest)| 1 + token_run(rest, MAX_RESERVE - 1).1)
}

/// The token fields at the start of `fields` (at a key), as far as they have one-byte lengths
/// and lie whole in `fields`, at most `limit` of them: where they end, and how many there are.
fn token_run(fields: &[u8], limit: usize) -> (usize, usize) {
    let mut end = 0;
    let mut count = 0;
    while count < limit
        && let [TOKEN_KEY, ref rest @ ..] = fields[end..]
        && let Some((token, _)) = short_field(rest)
    {
        end += 2 + token.len();
        count += 1;
    }
    (end, count)
}

/// Names the field an error of `merged` arose in, as prost's generated code does.
fn in_field(
    merged: Result<(), DecodeError>,
    message: &'static str,
    field: &'static str,
) -> Result<(), DecodeError> {
    merged.map_err(|mut error| {
        error.push(message, field);
        error
    })
}

#[cfg(test)]
pub(crate) mod tests {
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

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct SplitActivationRecord {
            #[prost(message, optional, tag = "1")]
            pub record: Option<ActivationRecord>,
            #[prost(enumeration = "crate::pb::RecordSource", tag = "2")]
            pub source: i32,
            #[prost(uint32, tag = "3")]
            pub source_index: u32,
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

    /// Any record: tokens of every length class, activations (NaN included) and `dfa_*` fields,
    /// each list of its own length. Also the strategy of `encoded`'s tests.
    pub(crate) fn record() -> impl Strategy<Value = ActivationRecord> {
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

    pub(crate) fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// The same fields, floats compared bit for bit (NaN included).
    fn same(ours: &ActivationRecord, generated: &Generated) -> bool {
        ours.tokens == generated.tokens
            && bits(&ours.activations) == bits(&generated.activations)
            && ours.dfa_values == generated.dfa_values
            && ours.dfa_target_index == generated.dfa_target_index
    }

    /// Decodes `bytes` as ours (`O`) and as prost's (`G`): the outcome must agree (`same`
    /// compares the fields), and so must an error's text.
    fn agree_as<O, G>(bytes: &[u8], same: fn(&O, &G) -> bool) -> Result<(), TestCaseError>
    where
        O: Message + Default + std::fmt::Debug,
        G: Message + Default + std::fmt::Debug,
    {
        let ours = O::decode(bytes);
        let generated = G::decode(bytes);
        match (&ours, &generated) {
            (Ok(ours), Ok(generated)) => prop_assert!(same(ours, generated), "{ours:?}"),
            (Err(ours), Err(generated)) => prop_assert_eq!(ours.to_string(), generated.to_string()),
            _ => prop_assert!(false, "ours {ours:?}, prost {generated:?}"),
        }
        Ok(())
    }

    fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
        agree_as::<ActivationRecord, Generated>(bytes, same)
    }

    /// `agree` on an encoding, on it cut short and on it with one byte changed: lengths that
    /// overrun, broken UTF-8, other wire types and unknown fields.
    fn agree_when_broken(
        bytes: &[u8],
        cut: prop::sample::Index,
        flip: prop::sample::Index,
        byte: u8,
        agree: fn(&[u8]) -> Result<(), TestCaseError>,
    ) -> Result<(), TestCaseError> {
        agree(bytes)?;
        if !bytes.is_empty() {
            agree(&bytes[..cut.index(bytes.len())])?;
            let mut changed = bytes.to_vec();
            changed[flip.index(bytes.len())] = byte;
            agree(&changed)?;
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
            agree_when_broken(&record.encode_to_vec(), cut, flip, byte, agree)?;
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

    /// The compiled descriptor of one message of the package.
    fn proto_message(name: &str) -> prost_types::DescriptorProto {
        let descriptors =
            prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        descriptors
            .file
            .into_iter()
            .filter(|file| file.package() == "neuron_explainer.activations.v1")
            .flat_map(|file| file.message_type)
            .find(|message| message.name() == name)
            .unwrap_or_else(|| panic!("{name} is in proto/"))
    }

    /// The hand-written struct stays the message of `proto/`: a field added there fails this
    /// test instead of being skipped as unknown by the decoder.
    #[test]
    fn the_fields_are_those_of_the_proto() {
        use prost_types::field_descriptor_proto::{Label, Type};
        let message = proto_message("ActivationRecord");
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
    /// Records as the service sends them: short tokens (ASCII or not), activations, no `dfa_*`
    /// fields, which `SplitActivationRecord` decodes in one go.
    fn served_record() -> impl Strategy<Value = ActivationRecord> {
        prop::collection::vec((prop_oneof![".{0,8}", "\\PC{0,3}"], any::<f32>()), 0..40).prop_map(
            |pairs| {
                let (tokens, activations) = pairs.into_iter().unzip();
                ActivationRecord {
                    tokens,
                    activations,
                    ..Default::default()
                }
            },
        )
    }

    fn split_record() -> impl Strategy<Value = SplitActivationRecord> {
        (
            prop::option::of(prop_oneof![served_record(), record()]),
            prop_oneof![0..3, any::<i32>()],
            any::<u32>(),
        )
            .prop_map(|(record, source, source_index)| SplitActivationRecord {
                record,
                source,
                source_index,
            })
    }

    impl From<&SplitActivationRecord> for generated::SplitActivationRecord {
        fn from(split: &SplitActivationRecord) -> Self {
            generated::SplitActivationRecord {
                record: split.record.as_ref().map(Generated::from),
                source: split.source,
                source_index: split.source_index,
            }
        }
    }

    fn same_split(
        ours: &SplitActivationRecord,
        generated: &generated::SplitActivationRecord,
    ) -> bool {
        let records = match (&ours.record, &generated.record) {
            (Some(ours), Some(generated)) => same(ours, generated),
            (None, None) => true,
            _ => false,
        };
        records && ours.source == generated.source && ours.source_index == generated.source_index
    }

    fn agree_split(bytes: &[u8]) -> Result<(), TestCaseError> {
        agree_as::<SplitActivationRecord, generated::SplitActivationRecord>(bytes, same_split)
    }

    proptest! {
        #[test]
        fn split_records_encode_as_prost_does(split in split_record()) {
            let generated = generated::SplitActivationRecord::from(&split);
            prop_assert_eq!(split.encode_to_vec(), generated.encode_to_vec());
            prop_assert_eq!(split.encoded_len(), split.encode_to_vec().len());
            prop_assert_eq!(format!("{split:?}").replace("SplitActivationRecord", ""),
                format!("{generated:?}").replace("SplitActivationRecord", ""));
        }

        #[test]
        fn split_records_decode_as_prost_does_valid_or_not(
            split in split_record(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let bytes = split.encode_to_vec();
            agree_when_broken(&bytes, cut, flip, byte, agree_split)?;
            // Twice in a row: the second message merges into the first.
            agree_split(&[bytes.as_slice(), bytes.as_slice()].concat())?;
        }

        #[test]
        fn split_records_decode_arbitrary_bytes_as_prost_does(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            agree_split(&bytes)?;
        }

        #[test]
        fn split_records_decode_from_a_buffer_in_pieces_as_from_one(split in split_record(), at in any::<prop::sample::Index>()) {
            let bytes = split.encode_to_vec();
            let at = at.index(bytes.len() + 1);
            let decoded = SplitActivationRecord::decode(bytes::Buf::chain(&bytes[..at], &bytes[at..])).unwrap();
            prop_assert!(same_split(&decoded, &(&split).into()));
        }

        /// What the service sends is decoded in one go, not field by field.
        #[test]
        fn a_served_record_is_decoded_from_its_slice(record in served_record()) {
            let decoded = ActivationRecord::decode_body(&record.encode_to_vec());
            prop_assert!(decoded.is_some_and(|decoded| same(&decoded, &Generated::from(&record))));
        }
    }

    /// A split's records inside a list (as `SplitRecords` holds them) each keep to their own
    /// bytes, whichever path decodes them.
    #[test]
    fn split_records_in_a_list_keep_to_their_own_bytes() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct List {
            #[prost(message, repeated, tag = "2")]
            records: Vec<SplitActivationRecord>,
        }
        let records: Vec<SplitActivationRecord> =
            [vec!["a", "b"], vec![], vec!["\u{e9}t\u{e9}", " the"]]
                .into_iter()
                .enumerate()
                .map(|(i, tokens)| SplitActivationRecord {
                    record: Some(ActivationRecord {
                        activations: vec![i as f32; tokens.len()],
                        tokens: tokens.into_iter().map(String::from).collect(),
                        dfa_target_index: (i == 1).then_some(3),
                        ..Default::default()
                    }),
                    source: i as i32,
                    source_index: i as u32,
                })
                .collect();
        let list = List {
            records: records.clone(),
        };
        let decoded = List::decode(list.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.records, records);
    }

    #[test]
    fn source_reads_and_sets_the_enum() {
        let mut split = SplitActivationRecord::default();
        assert_eq!(split.source(), RecordSource::Unspecified);
        split.set_source(RecordSource::Random);
        assert_eq!((split.source, split.source()), (2, RecordSource::Random));
        split.source = 99;
        assert_eq!(split.source(), RecordSource::Unspecified);
    }

    #[test]
    fn the_split_record_fields_are_those_of_the_proto() {
        use prost_types::field_descriptor_proto::Type;
        let fields: Vec<_> = proto_message("SplitActivationRecord")
            .field
            .iter()
            .map(|f| {
                (
                    f.name().to_owned(),
                    f.number(),
                    f.r#type(),
                    f.type_name().to_owned(),
                )
            })
            .collect();
        let package = ".neuron_explainer.activations.v1";
        assert_eq!(
            fields,
            [
                (
                    "record".into(),
                    RECORD as i32,
                    Type::Message,
                    format!("{package}.ActivationRecord")
                ),
                (
                    "source".into(),
                    SOURCE as i32,
                    Type::Enum,
                    format!("{package}.RecordSource")
                ),
                (
                    "source_index".into(),
                    SOURCE_INDEX as i32,
                    Type::Uint32,
                    String::new()
                ),
            ]
        );
    }
}
