//! The single-pass reader behind [`parse_neuron_record`](super::parse_neuron_record).
//!
//! A `Reader` is a cursor over the input bytes with JSON primitives (`expect_byte`,
//! `string`, `nullable_f64`, `skip_value`, ...) and one decode method per dataclass
//! (`neuron_record`, `neuron_id`, `activation_record`). Errors are built cheaply as a
//! `Failure` carrying the offset; the path (`random_sample[3].tokens`) is added while the
//! error travels up, and line and column are computed once at the end, so the happy path pays
//! for none of it.

use std::borrow::Cow;

use activations_proto::{encoded::EncodedRecord, python_max, record::field, wire};
use bytes::Bytes;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use super::{ParseError, scan};

/// How deeply the values of unknown keys may nest. Python's own limit is its recursion limit
/// (about 1000); the cap keeps the recursive skipper from exhausting a thread's stack.
const MAX_SKIP_DEPTH: usize = 128;

const BOM: &[u8] = b"\xEF\xBB\xBF";

pub(super) fn parse(bytes: &[u8]) -> std::result::Result<wire::NeuronRecord, ParseError> {
    // Validating the whole input at once is much cheaper than validating each string, and it
    // is what Python does too: json.loads(bytes) decodes before it parses.
    let text =
        std::str::from_utf8(bytes).or_else(|error| fail(error.valid_up_to(), "invalid UTF-8"));
    text.and_then(|text| {
        let mut reader = Reader {
            text,
            bytes,
            pos: 0,
            // The encoded records take about 60% of the JSON's size (measured on the public
            // files: 144 KB for 236 KB); one allocation in the common case.
            out: Vec::with_capacity(bytes.len() / 8 * 5 + 64),
            token_fields: Vec::new(),
            activations: Vec::new(),
            unescaped: String::new(),
        };
        let skeleton = reader.document()?;
        Ok(skeleton.finish(reader.out))
    })
    .map_err(|failure| failure.into_parse_error(bytes))
}

/// Where one encoded record sits in the neuron's buffer, and its counts.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    token_count: u32,
    max_activation: Option<f32>,
}

/// A decoded `NeuronRecord` whose activation records are still spans of the buffer being
/// written; [`Skeleton::finish`] turns them into slices of the finished buffer.
struct Skeleton {
    neuron_id: wire::NeuronId,
    random_sample: Vec<Span>,
    random_sample_by_quantile: Option<Vec<Vec<Span>>>,
    quantile_boundaries: Option<wire::QuantileBoundaries>,
    mean: Option<f64>,
    variance: Option<f64>,
    skewness: Option<f64>,
    kurtosis: Option<f64>,
    most_positive_activation_records: Vec<Span>,
}

impl Skeleton {
    fn finish(self, mut out: Vec<u8>) -> wire::NeuronRecord {
        // The cache weighs the encoded length; give back the rest of the estimate.
        out.shrink_to_fit();
        let buffer = Bytes::from(out);
        let records = |spans: Vec<Span>| -> Vec<EncodedRecord> {
            spans
                .into_iter()
                .map(|span| {
                    EncodedRecord::from_encoded(
                        buffer.slice(span.start..span.end),
                        span.token_count,
                        span.max_activation,
                    )
                })
                .collect()
        };
        wire::NeuronRecord {
            neuron_id: Some(self.neuron_id),
            random_sample: records(self.random_sample),
            random_sample_by_quantile: self.random_sample_by_quantile.map(|quantiles| {
                wire::RandomSampleByQuantile {
                    quantiles: quantiles
                        .into_iter()
                        .map(|spans| wire::ActivationRecordList {
                            records: records(spans),
                        })
                        .collect(),
                }
            }),
            quantile_boundaries: self.quantile_boundaries,
            mean: self.mean,
            variance: self.variance,
            skewness: self.skewness,
            kurtosis: self.kurtosis,
            most_positive_activation_records: records(self.most_positive_activation_records),
        }
    }
}

/// One step of the path to the value an error concerns.
#[derive(Debug)]
enum Segment {
    Field(&'static str),
    /// A member the schema does not know, named only when an error is inside it.
    UnknownField(String),
    Index(usize),
}

/// An error on its way up: boxed so that `Result<f32, _>` in the hot loops stays small.
#[derive(Debug)]
struct Failure {
    offset: usize,
    message: String,
    /// Innermost segment first: segments are pushed while unwinding.
    path: Vec<Segment>,
}

type Result<T> = std::result::Result<T, Box<Failure>>;

impl Failure {
    fn into_parse_error(self, bytes: &[u8]) -> ParseError {
        let before = bytes.get(..self.offset).unwrap_or(bytes);
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |newline| newline + 1);
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        // Characters, not bytes: skip UTF-8 continuation bytes.
        let column = 1 + before
            .get(line_start..)
            .unwrap_or_default()
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count();
        let mut path = String::new();
        for segment in self.path.iter().rev() {
            let name = match segment {
                Segment::Field(name) => name,
                Segment::UnknownField(name) => name.as_str(),
                Segment::Index(index) => {
                    path.push('[');
                    path.push_str(&index.to_string());
                    path.push(']');
                    continue;
                }
            };
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(name);
        }
        let message = if path.is_empty() {
            self.message
        } else {
            format!("{path}: {}", self.message)
        };
        ParseError {
            offset: self.offset,
            line,
            column,
            message,
        }
    }
}

/// Adds a path segment to an error as it passes a field or list element.
trait Within {
    fn in_field(self, name: &'static str) -> Self;
    fn in_unknown_field(self, name: &str) -> Self;
    fn at_index(self, index: usize) -> Self;
}

impl<T> Within for Result<T> {
    fn in_field(self, name: &'static str) -> Self {
        self.map_err(|mut failure| {
            failure.path.push(Segment::Field(name));
            failure
        })
    }

    fn in_unknown_field(self, name: &str) -> Self {
        self.map_err(|mut failure| {
            failure.path.push(Segment::UnknownField(name.to_owned()));
            failure
        })
    }

    fn at_index(self, index: usize) -> Self {
        self.map_err(|mut failure| {
            failure.path.push(Segment::Index(index));
            failure
        })
    }
}

fn fail<T>(offset: usize, message: impl Into<String>) -> Result<T> {
    Err(Box::new(Failure {
        offset,
        message: message.into(),
        path: Vec::new(),
    }))
}

/// Appends one `tokens` field (length-delimited) holding `token`.
fn push_token(fields: &mut Vec<u8>, token: &[u8]) {
    match u8::try_from(token.len()) {
        Ok(len) if len < 0x80 => fields.extend_from_slice(&[field::TOKEN_KEY, len]),
        _ => {
            fields.push(field::TOKEN_KEY);
            encode_varint(token.len() as u64, fields);
        }
    }
    fields.extend_from_slice(token);
}

/// [`push_token`] for the token at `bytes[start..end]`. Most tokens are short: when 16 bytes
/// are there to copy, copying a fixed 16 and dropping the excess is cheaper than a copy of
/// variable length.
#[inline]
fn push_token_at(fields: &mut Vec<u8>, bytes: &[u8], start: usize, end: usize) {
    let len = end - start;
    match bytes.get(start..start + 16) {
        Some(window) if len <= 16 => {
            fields.extend_from_slice(&[0x0A, len as u8]);
            let kept = fields.len() + len;
            fields.extend_from_slice(window);
            fields.truncate(kept);
        }
        _ => push_token(fields, &bytes[start..end]),
    }
}

/// A `dataclass_name` value and where it was, checked once the object is complete because a
/// later duplicate key would override it.
type ClassName<'a> = Option<(Cow<'a, str>, usize)>;

fn check_class(found: ClassName<'_>, expected: &str) -> Result<()> {
    match found {
        Some((name, offset)) if name != expected => fail(
            offset,
            format!("expected dataclass_name \"{expected}\", found {name:?}"),
        ),
        _ => Ok(()),
    }
}

/// Exact powers of ten: every 10^k up to 10^22 is representable in f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A scanned JSON number.
struct Number<'a> {
    text: &'a str,
    /// No fraction and no exponent.
    is_integer: bool,
    /// The value, when it is a plain decimal short enough to compute exactly on the spot.
    short: Option<f64>,
}

struct Reader<'a> {
    /// The input, known to be valid UTF-8.
    text: &'a str,
    /// The same input as bytes, which is how the reader looks at it.
    bytes: &'a [u8],
    /// Byte offset of the cursor.
    pos: usize,
    /// The protobuf bodies of the activation records read so far, back to back.
    out: Vec<u8>,
    /// The encoded `tokens` fields of the record being read (they precede its activations in
    /// the encoding, whatever the key order in the file), reused from record to record.
    token_fields: Vec<u8>,
    /// The activations of the record being read, reused from record to record.
    activations: Vec<f32>,
    /// The decoded text of a token with escapes, reused from token to token.
    unescaped: String,
}

impl<'a> Reader<'a> {
    // ---- primitives -------------------------------------------------------------------

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `literal` if the input continues with it.
    fn eat(&mut self, literal: &[u8]) -> bool {
        let matches = self.rest().starts_with(literal);
        if matches {
            self.pos += literal.len();
        }
        matches
    }

    /// Names what the input holds at the cursor, for "expected X, found Y" messages.
    fn found(&self) -> String {
        let rest = self.rest();
        let literal = [
            (&b"null"[..], "null"),
            (b"true", "true"),
            (b"false", "false"),
            (b"NaN", "NaN"),
            (b"Infinity", "Infinity"),
            (b"-Infinity", "-Infinity"),
        ]
        .into_iter()
        .find(|(text, _)| rest.starts_with(text));
        if let Some((_, name)) = literal {
            return name.to_owned();
        }
        match rest.first() {
            None => "the end of the input".to_owned(),
            Some(b'"') => "a string".to_owned(),
            Some(b'{') => "an object".to_owned(),
            Some(b'[') => "a list".to_owned(),
            Some(b'-' | b'0'..=b'9') => "a number".to_owned(),
            Some(&b) if b.is_ascii_graphic() => format!("'{}'", char::from(b)),
            Some(_) => match self
                .text
                .get(self.pos..)
                .and_then(|text| text.chars().next())
            {
                Some(ch) => format!("{ch:?}"),
                None => "an unexpected byte".to_owned(),
            },
        }
    }

    fn expected<T>(&self, what: &str) -> Result<T> {
        fail(self.pos, format!("expected {what}, found {}", self.found()))
    }

    /// Skips whitespace and consumes `byte`.
    fn expect_byte(&mut self, byte: u8) -> Result<()> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.expected(&format!("'{}'", char::from(byte)))
        }
    }

    /// Walks an object, calling `member(reader, key)` with the cursor on each member's value.
    /// Keys are decoded only if `keep_keys` (a skipped object's keys cost no allocation).
    fn object<F>(&mut self, keep_keys: bool, mut member: F) -> Result<()>
    where
        F: FnMut(&mut Self, Cow<'a, str>) -> Result<()>,
    {
        self.skip_ws();
        if self.peek() != Some(b'{') {
            return self.expected("an object");
        }
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return self.expected("a field name in double quotes");
            }
            let key = self.string_impl(keep_keys)?;
            self.expect_byte(b':')?;
            self.skip_ws();
            member(self, key)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.expected("',' or '}' after an object member"),
            }
        }
    }

    /// Walks a list, calling `element(reader, index)` with the cursor on each element.
    fn array<F>(&mut self, mut element: F) -> Result<()>
    where
        F: FnMut(&mut Self, usize) -> Result<()>,
    {
        self.skip_ws();
        if self.peek() != Some(b'[') {
            return self.expected("a list");
        }
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        let mut index = 0;
        loop {
            self.skip_ws();
            element(self, index)?;
            index += 1;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.expected("',' or ']' after a list element"),
            }
        }
    }

    /// The text between two offsets; both sit next to ASCII delimiters, so they are character
    /// boundaries and the lookup cannot fail in practice.
    fn slice(&self, start: usize, end: usize) -> Result<&'a str> {
        match self.text.get(start..end) {
            Some(text) => Ok(text),
            None => fail(start, "internal error: not a character boundary"),
        }
    }

    /// Reads a string with the cursor on its opening quote. Without escapes the result borrows
    /// the input; with them it is decoded into a new string, unless `keep` is false (skipping),
    /// in which case escapes are checked and nothing is allocated.
    fn string_impl(&mut self, keep: bool) -> Result<Cow<'a, str>> {
        let quote = self.pos;
        let start = quote + 1;
        // Fast path: most strings hold no escape, so look for the first byte that needs care.
        let special = scan::string_special(self.bytes, start);
        if self.bytes.get(special) == Some(&b'"') {
            let text = self.slice(start, special)?;
            self.pos = special + 1;
            return Ok(Cow::Borrowed(text));
        }
        let mut out = String::new();
        self.unescape(quote, special, keep.then_some(&mut out))?;
        Ok(Cow::Owned(out))
    }

    /// Reads the rest of the string opened at `quote` whose first byte needing care is at
    /// `special` (not its closing quote), appending the decoded text to `out` if there is one
    /// (with `None` escapes are only checked), and leaves the cursor after the closing quote.
    fn unescape(
        &mut self,
        quote: usize,
        special: usize,
        mut out: Option<&mut String>,
    ) -> Result<()> {
        let bytes = self.bytes;
        let mut run_start = quote + 1;
        let mut i = special;
        loop {
            match bytes.get(i) {
                None => return fail(quote, "unterminated string"),
                Some(b'"') => {
                    let run = self.slice(run_start, i)?;
                    if let Some(out) = out.as_deref_mut() {
                        out.push_str(run);
                    }
                    self.pos = i + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    let run = self.slice(run_start, i)?;
                    let (decoded, next) = self.escape(i, quote)?;
                    if let Some(out) = out.as_deref_mut() {
                        out.push_str(run);
                        out.push(decoded);
                    }
                    run_start = next;
                    i = scan::string_special(bytes, next);
                }
                // Python's json.loads (strict=True) rejects raw control characters in strings.
                Some(&b) => {
                    return fail(
                        i,
                        format!(
                            "raw control character 0x{b:02x} in a string (JSON needs it escaped)"
                        ),
                    );
                }
            }
        }
    }

    /// Decodes the escape at `bytes[at] == b'\\'`; returns the character and the index after
    /// the escape (after both halves of a surrogate pair).
    fn escape(&self, at: usize, quote: usize) -> Result<(char, usize)> {
        let simple = match self.bytes.get(at + 1) {
            None => return fail(quote, "unterminated string"),
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => return self.unicode_escape(at),
            Some(&b) => {
                let shown = if b.is_ascii_graphic() {
                    format!("\\{}", char::from(b))
                } else {
                    format!("backslash followed by byte 0x{b:02x}")
                };
                return fail(at, format!("invalid escape {shown} in a string"));
            }
        };
        Ok((simple, at + 2))
    }

    /// Decodes `\uXXXX` at `at`, pairing a high surrogate with a following low-surrogate
    /// escape as Python does. A surrogate left alone becomes U+FFFD: Python keeps it, but a
    /// Rust string cannot hold it.
    fn unicode_escape(&self, at: usize) -> Result<(char, usize)> {
        let first = self.hex4(at + 2)?;
        let after = at + 6;
        let is_high = (0xD800..0xDC00).contains(&first);
        if is_high && self.bytes.get(after..after + 2) == Some(b"\\u") {
            // A malformed second escape is reported when it is read on its own.
            if let Ok(second) = self.hex4(after + 2)
                && (0xDC00..0xE000).contains(&second)
            {
                let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                let pair = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
                return Ok((pair, after + 6));
            }
        }
        // Surrogates (0xD800..=0xDFFF) are exactly the values `from_u32` refuses.
        let single = char::from_u32(first).unwrap_or(char::REPLACEMENT_CHARACTER);
        Ok((single, after))
    }

    /// Reads the four hex digits of a `\u` escape starting at `at`.
    fn hex4(&self, at: usize) -> Result<u32> {
        let digits = self.bytes.get(at..at + 4).unwrap_or_default();
        if digits.len() != 4 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return fail(
                at.saturating_sub(2),
                "invalid \\u escape: expected 4 hex digits",
            );
        }
        Ok(digits.iter().fold(0, |value, &digit| {
            let nibble = match digit {
                b'0'..=b'9' => digit - b'0',
                b'a'..=b'f' => digit - b'a' + 10,
                _ => digit - b'A' + 10,
            };
            value << 4 | u32::from(nibble)
        }))
    }

    /// Reads a string value the schema requires (tokens, `dataclass_name`).
    fn string(&mut self) -> Result<Cow<'a, str>> {
        if self.peek() != Some(b'"') {
            return self.expected("a string");
        }
        self.string_impl(true)
    }

    /// Scans digits, folding them into `mantissa` (wrapping; only used when `count` is
    /// small) and counting them. False if there are none.
    fn digits(&mut self, mantissa: &mut u64, count: &mut usize) -> bool {
        let first = self.pos;
        while let Some(&digit @ b'0'..=b'9') = self.bytes.get(self.pos) {
            *mantissa = mantissa
                .wrapping_mul(10)
                .wrapping_add(u64::from(digit - b'0'));
            self.pos += 1;
        }
        *count += self.pos - first;
        self.pos > first
    }

    /// Scans a JSON number (Python's grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`)
    /// with the cursor on its first byte.
    ///
    /// Plain decimals of at most 15 digits (the only kind the public files hold) get their value in the
    /// same pass, exactly, by Clinger's fast path: such a mantissa (< 2^53) and 10^k for
    /// k <= 22 are both exact in f64, so their IEEE quotient is the correctly rounded value,
    /// the one `str::parse` (and Python) gives. Everything else is left to `str::parse`.
    fn number(&mut self) -> Result<Number<'a>> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let (mut mantissa, mut count) = (0, 0);
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits(&mut mantissa, &mut count);
            }
            _ => return self.expected("a digit"),
        }
        let mut fraction_digits = 0;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.digits(&mut mantissa, &mut fraction_digits) {
                return self.expected("a digit after the decimal point");
            }
            count += fraction_digits;
        }
        let mut has_exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !self.digits(&mut 0, &mut 0) {
                return self.expected("a digit in the exponent");
            }
            has_exponent = true;
        }
        let short = match POW10.get(fraction_digits) {
            Some(&power) if count <= 15 && !has_exponent => {
                // `as` is exact: the mantissa is below 10^15 < 2^53.
                let magnitude = mantissa as f64 / power;
                Some(if negative { -magnitude } else { magnitude })
            }
            _ => None,
        };
        Ok(Number {
            // The scanned bytes are ASCII, so this cannot fail; no need to panic if it did.
            text: self.slice(start, self.pos)?,
            is_integer: fraction_digits == 0 && !has_exponent,
            short,
        })
    }

    /// Reads any value allowed in a number position: a number, `NaN`, `Infinity`,
    /// `-Infinity`, or `null` (as `None`).
    fn nullable_f64(&mut self) -> Result<Option<f64>> {
        match self.peek() {
            Some(b'n') if self.eat(b"null") => Ok(None),
            Some(b'N') if self.eat(b"NaN") => Ok(Some(f64::NAN)),
            Some(b'I') if self.eat(b"Infinity") => Ok(Some(f64::INFINITY)),
            Some(b'-') if self.eat(b"-Infinity") => Ok(Some(f64::NEG_INFINITY)),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                let number = self.number()?;
                if let Some(value) = number.short {
                    return Ok(Some(value));
                }
                match number.text.parse::<f64>() {
                    Ok(value) => Ok(Some(value)),
                    Err(_) => fail(start, format!("cannot read {} as a number", number.text)),
                }
            }
            _ => self.expected("a number"),
        }
    }

    /// Reads an integer field. Python stores whatever number it finds; an integral float such
    /// as `1.0` is accepted, anything else (fractions, NaN, null) is an error.
    fn integer(&mut self) -> Result<i64> {
        let start = self.pos;
        if !matches!(self.peek(), Some(b'-' | b'0'..=b'9')) || self.rest().starts_with(b"-I") {
            return self.expected("an integer");
        }
        let Number {
            text, is_integer, ..
        } = self.number()?;
        if is_integer {
            return text
                .parse::<i64>()
                .or_else(|_| fail(start, format!("integer {text} is out of range")));
        }
        let value = text.parse::<f64>().unwrap_or(f64::NAN);
        // [-2^63, 2^63) is i64's range; the cast is exact for integral values in it.
        let limit = 2f64.powi(63);
        if value.fract() == 0.0 && (-limit..limit).contains(&value) {
            Ok(value as i64)
        } else {
            fail(start, format!("expected an integer, found {text}"))
        }
    }

    /// Reads an index field: a non-negative integer that fits in `u32`.
    fn index(&mut self) -> Result<u32> {
        let start = self.pos;
        let value = self.integer()?;
        u32::try_from(value).or_else(|_| {
            fail(
                start,
                format!("expected a non-negative integer below 2^32, found {value}"),
            )
        })
    }

    /// Reads `null` as `None`; otherwise leaves the cursor for the caller's reader.
    fn null(&mut self) -> bool {
        self.peek() == Some(b'n') && self.eat(b"null")
    }

    /// Skips any JSON value (including Python's non-finite literals), validating it without
    /// allocating.
    fn skip_value(&mut self, depth: usize) -> Result<()> {
        match self.peek() {
            Some(b'{' | b'[') if depth >= MAX_SKIP_DEPTH => fail(
                self.pos,
                format!("values nested more than {MAX_SKIP_DEPTH} levels deep"),
            ),
            Some(b'{') => self.object(false, |reader, _| reader.skip_value(depth + 1)),
            Some(b'[') => self.array(|reader, _| reader.skip_value(depth + 1)),
            Some(b'"') => self.string_impl(false).map(drop),
            Some(b't') if self.eat(b"true") => Ok(()),
            Some(b'f') if self.eat(b"false") => Ok(()),
            Some(b'n') if self.eat(b"null") => Ok(()),
            Some(b'N') if self.eat(b"NaN") => Ok(()),
            Some(b'I') if self.eat(b"Infinity") => Ok(()),
            Some(b'-' | b'0'..=b'9') => self.nullable_f64().map(drop),
            _ => self.expected("a value"),
        }
    }

    /// Reads a `dataclass_name` value, remembering where it was.
    fn class_name(&mut self) -> Result<ClassName<'a>> {
        let offset = self.pos;
        let name = self.string().in_field("dataclass_name")?;
        Ok(Some((name, offset)))
    }

    // ---- the schema -------------------------------------------------------------------

    /// The whole input: one `NeuronRecord` object, surrounded by optional whitespace.
    fn document(&mut self) -> Result<Skeleton> {
        // json.loads on bytes (as load_neuron calls it) accepts a UTF-8 byte order mark.
        if self.bytes.starts_with(BOM) {
            self.pos = BOM.len();
        }
        self.skip_ws();
        if self.peek().is_none() {
            return fail(self.pos, "empty input: expected a neuron record object");
        }
        let record = self.neuron_record()?;
        self.skip_ws();
        if self.peek().is_some() {
            return fail(
                self.pos,
                format!("unexpected data after the neuron record: {}", self.found()),
            );
        }
        Ok(record)
    }

    fn neuron_record(&mut self) -> Result<Skeleton> {
        let start = self.pos;
        let mut class = None;
        let mut neuron_id = None;
        let mut record = Skeleton {
            neuron_id: wire::NeuronId::default(),
            random_sample: Vec::new(),
            random_sample_by_quantile: None,
            quantile_boundaries: None,
            // The dataclass defaults the moments to math.nan.
            mean: Some(f64::NAN),
            variance: Some(f64::NAN),
            skewness: Some(f64::NAN),
            kurtosis: Some(f64::NAN),
            most_positive_activation_records: Vec::new(),
        };
        self.object(true, |reader, key| {
            match &*key {
                "dataclass_name" => class = reader.class_name()?,
                "neuron_id" => neuron_id = Some(reader.neuron_id().in_field("neuron_id")?),
                "random_sample" => {
                    record.random_sample = reader.record_list().in_field("random_sample")?;
                }
                "random_sample_by_quantile" => {
                    record.random_sample_by_quantile = reader
                        .random_sample_by_quantile()
                        .in_field("random_sample_by_quantile")?;
                }
                "quantile_boundaries" => {
                    record.quantile_boundaries = reader
                        .quantile_boundaries()
                        .in_field("quantile_boundaries")?;
                }
                "mean" => record.mean = reader.nullable_f64().in_field("mean")?,
                "variance" => record.variance = reader.nullable_f64().in_field("variance")?,
                "skewness" => record.skewness = reader.nullable_f64().in_field("skewness")?,
                "kurtosis" => record.kurtosis = reader.nullable_f64().in_field("kurtosis")?,
                "most_positive_activation_records" => {
                    record.most_positive_activation_records = reader
                        .record_list()
                        .in_field("most_positive_activation_records")?;
                }
                _ => reader.skip_value(0).in_unknown_field(&key)?,
            }
            Ok(())
        })?;
        check_class(class, "NeuronRecord")?;
        match neuron_id {
            Some(neuron_id) => Ok(Skeleton {
                neuron_id,
                ..record
            }),
            None => fail(start, "missing field neuron_id"),
        }
    }

    fn neuron_id(&mut self) -> Result<wire::NeuronId> {
        let start = self.pos;
        let mut class = None;
        let (mut layer_index, mut neuron_index) = (None, None);
        self.object(true, |reader, key| {
            match &*key {
                "dataclass_name" => class = reader.class_name()?,
                "layer_index" => layer_index = Some(reader.index().in_field("layer_index")?),
                "neuron_index" => neuron_index = Some(reader.index().in_field("neuron_index")?),
                _ => reader.skip_value(0).in_unknown_field(&key)?,
            }
            Ok(())
        })?;
        check_class(class, "NeuronId")?;
        match (layer_index, neuron_index) {
            (Some(layer_index), Some(neuron_index)) => Ok(wire::NeuronId {
                layer_index,
                neuron_index,
            }),
            (None, _) => fail(start, "missing field layer_index"),
            (_, None) => fail(start, "missing field neuron_index"),
        }
    }

    /// A list whose elements `element` decodes, each error tagged with its index.
    fn list<T>(&mut self, mut element: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let mut items = Vec::new();
        self.array(|reader, index| {
            items.push(element(reader).at_index(index)?);
            Ok(())
        })?;
        Ok(items)
    }

    fn record_list(&mut self) -> Result<Vec<Span>> {
        self.list(Self::activation_record)
    }

    fn random_sample_by_quantile(&mut self) -> Result<Option<Vec<Vec<Span>>>> {
        if self.null() {
            return Ok(None);
        }
        self.list(Self::record_list).map(Some)
    }

    fn quantile_boundaries(&mut self) -> Result<Option<wire::QuantileBoundaries>> {
        if self.null() {
            return Ok(None);
        }
        let boundaries = self.list(|reader| {
            let value = reader.nullable_f64()?;
            Ok(wire::NullableDouble { value })
        })?;
        Ok(Some(wire::QuantileBoundaries { boundaries }))
    }

    /// Reads one activation record and appends its protobuf body to `out`, in field order
    /// (tokens, packed activations, packed dfa_values, dfa_target_index) as prost encodes it.
    fn activation_record(&mut self) -> Result<Span> {
        let start = self.pos;
        let mut class = None;
        let mut tokens: Option<u32> = None;
        let mut activations: Option<u32> = None;
        let mut dfa_values = Vec::new();
        let mut dfa_target_index = None;
        self.object(true, |reader, key| {
            match &*key {
                "dataclass_name" => class = reader.class_name()?,
                "tokens" => tokens = Some(reader.tokens().in_field("tokens")?),
                "activations" => {
                    activations = Some(reader.activations().in_field("activations")?);
                }
                "dfa_values" => dfa_values = reader.dfa_values().in_field("dfa_values")?,
                "dfa_target_index" => {
                    dfa_target_index = if reader.null() {
                        None
                    } else {
                        Some(reader.integer().in_field("dfa_target_index")?)
                    };
                }
                _ => reader.skip_value(0).in_unknown_field(&key)?,
            }
            Ok(())
        })?;
        check_class(class, "ActivationRecord")?;
        let Some(tokens) = tokens else {
            return fail(start, "missing field tokens");
        };
        let Some(activations) = activations else {
            return fail(start, "missing field activations");
        };
        if tokens != activations {
            return fail(
                start,
                format!("{tokens} tokens but {activations} activations"),
            );
        }
        Ok(self.write_record(tokens, &dfa_values, dfa_target_index))
    }

    /// Appends the body of the record whose tokens and activations were just read.
    fn write_record(
        &mut self,
        token_count: u32,
        dfa_values: &[i64],
        dfa_target_index: Option<i64>,
    ) -> Span {
        let out = &mut self.out;
        let start = out.len();
        out.extend_from_slice(&self.token_fields);
        if !self.activations.is_empty() {
            encode_key(field::ACTIVATIONS, WireType::LengthDelimited, out);
            encode_varint(4 * self.activations.len() as u64, out);
            let packed = out.len();
            out.resize(packed + 4 * self.activations.len(), 0);
            for (slot, activation) in out[packed..].chunks_exact_mut(4).zip(&self.activations) {
                slot.copy_from_slice(&activation.to_le_bytes());
            }
        }
        if !dfa_values.is_empty() {
            // int64 is encoded as the varint of its two's complement, as prost does.
            let len: usize = dfa_values
                .iter()
                .map(|&v| encoded_len_varint(v as u64))
                .sum();
            encode_key(field::DFA_VALUES, WireType::LengthDelimited, out);
            encode_varint(len as u64, out);
            for &value in dfa_values {
                encode_varint(value as u64, out);
            }
        }
        if let Some(index) = dfa_target_index {
            encode_key(field::DFA_TARGET_INDEX, WireType::Varint, out);
            encode_varint(index as u64, out);
        }
        Span {
            start,
            end: out.len(),
            token_count,
            max_activation: python_max(self.activations.iter().copied()),
        }
    }

    /// Reads the tokens into `token_fields`, encoded as field 1, and counts them.
    fn tokens(&mut self) -> Result<u32> {
        let mut fields = std::mem::take(&mut self.token_fields);
        fields.clear();
        let read = self.token_list(&mut fields);
        self.token_fields = fields;
        read
    }

    /// The loop of [`Reader::array`] specialised for tokens, the bulk of a file: a string
    /// without escapes is copied straight from the input, and the `", "` between two tokens
    /// is taken in one step; anything else takes the general path.
    fn token_list(&mut self, fields: &mut Vec<u8>) -> Result<u32> {
        let bytes = self.bytes;
        self.list_start()?;
        if self.list_end() {
            return Ok(0);
        }
        let mut count = 0u32;
        loop {
            self.skip_ws();
            let quote = self.pos;
            if bytes.get(quote) != Some(&b'"') {
                return self.expected("a string").at_index(count as usize);
            }
            let special = scan::string_special(bytes, quote + 1);
            if bytes.get(special) == Some(&b'"') {
                // Between two ASCII quotes of valid UTF-8: a whole string.
                push_token_at(fields, bytes, quote + 1, special);
                self.pos = special + 1;
            } else {
                let mut text = std::mem::take(&mut self.unescaped);
                text.clear();
                let read = self.unescape(quote, special, Some(&mut text));
                push_token(fields, text.as_bytes());
                self.unescaped = text;
                read.at_index(count as usize)?;
            }
            count = count.saturating_add(1);
            if self.separator() {
                continue;
            }
            if self.list_next()? {
                return Ok(count);
            }
        }
    }

    /// Consumes the `, ` that `json.dumps` puts between list elements, if that is what
    /// follows; anything else is left to [`Reader::list_next`].
    #[inline]
    fn separator(&mut self) -> bool {
        let found = self.bytes.get(self.pos..self.pos + 2) == Some(b", ");
        if found {
            self.pos += 2;
        }
        found
    }

    /// Reads the activations into `activations` and counts them. They are read as Python
    /// floats (f64) and then narrowed, so each equals `f32(python_value)`; `null` becomes NaN.
    fn activations(&mut self) -> Result<u32> {
        let mut activations = std::mem::take(&mut self.activations);
        activations.clear();
        let read = self.activation_list(&mut activations);
        let count = u32::try_from(activations.len()).unwrap_or(u32::MAX);
        self.activations = activations;
        read.map(|()| count)
    }

    /// The loop of [`Reader::array`] specialised for activations: plain decimals are read in
    /// one pass ([`scan::plain_activation`]); anything else takes the general path.
    fn activation_list(&mut self, activations: &mut Vec<f32>) -> Result<()> {
        self.list_start()?;
        if self.list_end() {
            return Ok(());
        }
        loop {
            self.skip_ws();
            let value = match scan::plain_activation(self.bytes, self.pos) {
                Some((value, end)) => {
                    self.pos = end;
                    value
                }
                None => self
                    .nullable_f64()
                    .at_index(activations.len())?
                    .map_or(f32::NAN, |value| value as f32),
            };
            activations.push(value);
            if self.separator() {
                continue;
            }
            if self.list_next()? {
                return Ok(());
            }
        }
    }

    /// Consumes the `[` of a list.
    fn list_start(&mut self) -> Result<()> {
        self.skip_ws();
        if self.peek() != Some(b'[') {
            return self.expected("a list");
        }
        self.pos += 1;
        Ok(())
    }

    /// After `[`: consumes the `]` of an empty list.
    #[inline]
    fn list_end(&mut self) -> bool {
        self.skip_ws();
        let empty = self.peek() == Some(b']');
        if empty {
            self.pos += 1;
        }
        empty
    }

    /// After an element: consumes `,` (false: more follow) or `]` (true: the list is over).
    #[inline]
    fn list_next(&mut self) -> Result<bool> {
        self.skip_ws();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(false)
            }
            Some(b']') => {
                self.pos += 1;
                Ok(true)
            }
            _ => self.expected("',' or ']' after a list element"),
        }
    }

    /// `dfa_values`: `null` (Python's default) or a list of integers.
    fn dfa_values(&mut self) -> Result<Vec<i64>> {
        if self.null() {
            return Ok(Vec::new());
        }
        self.list(Self::integer)
    }
}
