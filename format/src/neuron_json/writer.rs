//! The writer behind [`write_neuron_record`](super::write_neuron_record): Python's
//! `json.dumps` output for the neuron dataclasses.

use std::fmt::Write as _;

use activations_proto::pb;

pub(super) fn write(record: &pb::NeuronRecord) -> String {
    let token_count: usize = all_records(record).map(|r| r.tokens.len()).sum();
    // About 20 bytes per token and activation in the public files; avoids regrowing.
    let mut writer = Writer {
        out: String::with_capacity(1024 + 20 * token_count),
        scratch: String::new(),
    };
    writer.neuron_record(record);
    writer.out
}

fn all_records(record: &pb::NeuronRecord) -> impl Iterator<Item = &pb::ActivationRecord> {
    let quantiles = record
        .random_sample_by_quantile
        .iter()
        .flat_map(|by_quantile| &by_quantile.quantiles)
        .flat_map(|bucket| &bucket.records);
    record
        .random_sample
        .iter()
        .chain(quantiles)
        .chain(&record.most_positive_activation_records)
}

struct Writer {
    out: String,
    /// Reused buffer for Rust's float formatting, which `python_float` then rearranges.
    scratch: String,
}

impl Writer {
    fn neuron_record(&mut self, record: &pb::NeuronRecord) {
        self.out
            .push_str(r#"{"dataclass_name": "NeuronRecord", "neuron_id": "#);
        match &record.neuron_id {
            Some(id) => {
                // Writing to a String cannot fail.
                let _ = write!(
                    self.out,
                    r#"{{"dataclass_name": "NeuronId", "layer_index": {}, "neuron_index": {}}}"#,
                    id.layer_index, id.neuron_index
                );
            }
            None => self.out.push_str("null"),
        }
        self.out.push_str(r#", "random_sample": "#);
        self.record_list(&record.random_sample);
        self.out.push_str(r#", "random_sample_by_quantile": "#);
        match &record.random_sample_by_quantile {
            Some(by_quantile) => self.list(&by_quantile.quantiles, |w, bucket| {
                w.record_list(&bucket.records)
            }),
            None => self.out.push_str("null"),
        }
        self.out.push_str(r#", "quantile_boundaries": "#);
        match &record.quantile_boundaries {
            Some(boundaries) => self.list(&boundaries.boundaries, |w, boundary| {
                w.nullable_f64(boundary.value)
            }),
            None => self.out.push_str("null"),
        }
        for (key, value) in [
            (r#", "mean": "#, record.mean),
            (r#", "variance": "#, record.variance),
            (r#", "skewness": "#, record.skewness),
            (r#", "kurtosis": "#, record.kurtosis),
        ] {
            self.out.push_str(key);
            self.nullable_f64(value);
        }
        self.out
            .push_str(r#", "most_positive_activation_records": "#);
        self.record_list(&record.most_positive_activation_records);
        self.out.push('}');
    }

    /// `[a, b, c]`, each item written by `item`.
    fn list<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        self.out.push('[');
        for (i, value) in items.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            item(self, value);
        }
        self.out.push(']');
    }

    fn record_list(&mut self, records: &[pb::ActivationRecord]) {
        self.list(records, Self::activation_record);
    }

    fn activation_record(&mut self, record: &pb::ActivationRecord) {
        self.out
            .push_str(r#"{"dataclass_name": "ActivationRecord", "tokens": "#);
        self.list(&record.tokens, |w, token| {
            push_json_string(&mut w.out, token)
        });
        self.out.push_str(r#", "activations": "#);
        self.list(&record.activations, |w, &activation| w.f32(activation));
        // The public files predate these optional fields; write them only when set, and then
        // both, as the dataclass would.
        if !record.dfa_values.is_empty() || record.dfa_target_index.is_some() {
            self.out.push_str(r#", "dfa_values": "#);
            if record.dfa_values.is_empty() {
                self.out.push_str("null");
            } else {
                self.list(&record.dfa_values, |w, value| {
                    let _ = write!(w.out, "{value}");
                });
            }
            self.out.push_str(r#", "dfa_target_index": "#);
            match record.dfa_target_index {
                Some(index) => {
                    let _ = write!(self.out, "{index}");
                }
                None => self.out.push_str("null"),
            }
        }
        self.out.push('}');
    }

    /// An activation, with the shortest digits that identify the `f32`.
    ///
    /// The reader narrows through f64 (as Python reads floats), and for a few f32 values the
    /// shortest f32 digits round differently that way (e.g. `7.038531e-26`: the f64 nearest
    /// to it lies exactly halfway between two f32s). Those get the widened value's f64 digits,
    /// which read back exactly.
    fn f32(&mut self, value: f32) {
        if non_finite(&mut self.out, f64::from(value)) {
            return;
        }
        self.scratch.clear();
        let _ = write!(self.scratch, "{value:e}");
        let reads_back = self
            .scratch
            .parse::<f64>()
            .is_ok_and(|parsed| (parsed as f32).to_bits() == value.to_bits());
        if !reads_back {
            self.scratch.clear();
            let _ = write!(self.scratch, "{:e}", f64::from(value));
        }
        python_float(&self.scratch, &mut self.out);
    }

    fn nullable_f64(&mut self, value: Option<f64>) {
        let Some(value) = value else {
            self.out.push_str("null");
            return;
        };
        if non_finite(&mut self.out, value) {
            return;
        }
        self.scratch.clear();
        let _ = write!(self.scratch, "{value:e}");
        python_float(&self.scratch, &mut self.out);
    }
}

/// Writes Python's literals for NaN and the infinities; false for finite values.
fn non_finite(out: &mut String, value: f64) -> bool {
    let literal = if value.is_nan() {
        "NaN"
    } else if value == f64::INFINITY {
        "Infinity"
    } else if value == f64::NEG_INFINITY {
        "-Infinity"
    } else {
        return false;
    };
    out.push_str(literal);
    true
}

/// Rewrites Rust's shortest scientific form (`-6.74e-2`, `1e16`, `0e0`) as Python's `repr`
/// prints the same digits: positional when the exponent is in [-4, 16), with `.0` on integral
/// values (`-0.0674`, `3.0`), else scientific with a signed, at least two-digit exponent
/// (`1e+16`, `1.5e-05`).
fn python_float(scientific: &str, out: &mut String) {
    let (negative, unsigned) = match scientific.strip_prefix('-') {
        Some(unsigned) => (true, unsigned),
        None => (false, scientific),
    };
    let (mantissa, exponent) = unsigned.split_once('e').unwrap_or((unsigned, "0"));
    // At most 17 significant digits come out of Rust's shortest formatting.
    let mut buffer = [b'0'; 32];
    let mut len = 0;
    for digit in mantissa.bytes().filter(u8::is_ascii_digit) {
        if let Some(slot) = buffer.get_mut(len) {
            *slot = digit;
            len += 1;
        }
    }
    let digits = buffer.get(..len).unwrap_or_default();
    let (exponent_negative, exponent_digits) = match exponent.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, exponent),
    };
    let magnitude = exponent_digits
        .bytes()
        .fold(0i32, |acc, d| acc * 10 + i32::from(d.wrapping_sub(b'0')));
    let exponent = if exponent_negative {
        -magnitude
    } else {
        magnitude
    };
    let push_digits =
        |out: &mut String, digits: &[u8]| out.extend(digits.iter().map(|&d| char::from(d)));

    if negative {
        out.push('-');
    }
    match usize::try_from(exponent) {
        // Positional, value >= 1: integer part, then the rest or `.0`.
        Ok(whole) if exponent < 16 => {
            let integer_len = whole + 1;
            if digits.len() <= integer_len {
                push_digits(out, digits);
                out.extend(std::iter::repeat_n('0', integer_len - digits.len()));
                out.push_str(".0");
            } else {
                let (integer, fraction) = digits.split_at(integer_len);
                push_digits(out, integer);
                out.push('.');
                push_digits(out, fraction);
            }
        }
        // Positional, value < 1: `0.` and leading zeros.
        Err(_) if exponent >= -4 => {
            out.push_str("0.");
            out.extend(std::iter::repeat_n(
                '0',
                exponent.unsigned_abs() as usize - 1,
            ));
            push_digits(out, digits);
        }
        _ => {
            let (first, rest) = digits.split_at(digits.len().min(1));
            push_digits(out, first);
            if !rest.is_empty() {
                out.push('.');
                push_digits(out, rest);
            }
            let sign = if exponent < 0 { '-' } else { '+' };
            let _ = write!(out, "e{sign}{:02}", exponent.unsigned_abs());
        }
    }
}

/// Writes `text` as a JSON string the way `json.dumps(ensure_ascii=True)` does: only printable
/// ASCII stays as it is; the usual short escapes; everything else as lowercase `\uXXXX`, with
/// surrogate pairs above U+FFFF.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut run_start = 0;
    for (i, ch) in text.char_indices() {
        let short = match ch {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            ' '..='~' => continue,
            _ => "",
        };
        out.push_str(&text[run_start..i]);
        run_start = i + ch.len_utf8();
        if short.is_empty() {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push_str(short);
        }
    }
    out.push_str(&text[run_start..]);
    out.push('"');
}
