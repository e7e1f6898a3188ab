//! Word-at-a-time scanning for the reader's two hot loops: finding the end of a token's text
//! and reading an activation's digits. Each looks at 8 input bytes as one `u64` (SWAR: SIMD
//! within a register), so a typical token or fraction costs a handful of instructions instead
//! of a branch per byte; near the end of the input, where fewer than 8 bytes are left, they
//! fall back to a byte loop. Pure functions of the input, checked against byte-by-byte
//! definitions by property tests.

/// 0x01 in every byte.
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
/// 0x80 in every byte.
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// 10^k for every k whose power fits the 15 digits the reader computes with.
pub(super) const POW10: [u64; 16] = {
    let mut powers = [1u64; 16];
    let mut k = 1;
    while k < powers.len() {
        powers[k] = powers[k - 1] * 10;
        k += 1;
    }
    powers
};

/// The 8 bytes at `at` as a little-endian word (the first byte lowest), if there are 8.
#[inline]
fn word(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk = bytes.get(at..at.checked_add(8)?)?;
    chunk.try_into().ok().map(u64::from_le_bytes)
}

/// The index in the word of the lowest byte whose mark (0x80) is set.
#[inline]
fn first_marked(marks: u64) -> usize {
    (marks.trailing_zeros() / 8) as usize
}

/// Marks (0x80) the bytes of `w` that end a plain run of string text: `"`, `\` and the raw
/// control characters below 0x20. Only the lowest mark is exact (a borrow can mark a byte
/// above a true one), which is the only one the callers read.
#[inline]
fn string_specials(w: u64) -> u64 {
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    // A byte below n: (b - n) borrows into its high bit while b itself has it clear.
    let zero_quote = quote.wrapping_sub(ONES) & !quote;
    let zero_backslash = backslash.wrapping_sub(ONES) & !backslash;
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    (zero_quote | zero_backslash | control) & HIGHS
}

/// The index of the first `"`, `\` or raw control character at or after `from`, or
/// `bytes.len()` if there is none.
#[inline]
pub(super) fn string_special(bytes: &[u8], from: usize) -> usize {
    let mut at = from;
    while let Some(w) = word(bytes, at) {
        let marks = string_specials(w);
        if marks != 0 {
            return at + first_marked(marks);
        }
        at += 8;
    }
    bytes
        .get(at..)
        .and_then(|tail| {
            tail.iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        })
        .map_or(bytes.len(), |found| at + found)
}

/// Marks (0x80) the bytes of `w` that are not ASCII digits; as in [`string_specials`] only
/// the lowest mark is exact.
#[inline]
fn non_digits(w: u64) -> u64 {
    // Below '0': the subtraction borrows into the high bit. Above '9' (up to 0xB9): adding
    // 0x46 reaches it. Bytes from 0xB0 up have the borrow's high bit anyway.
    (w.wrapping_sub(ONES * u64::from(b'0')) | w.wrapping_add(ONES * 0x46)) & HIGHS
}

/// The value of the first `count` (at most 8) bytes of `w`, which are ASCII digits, read as a
/// decimal number with the first byte most significant.
#[inline]
fn digits_value(w: u64, count: usize) -> u64 {
    if count == 0 {
        return 0;
    }
    // Keep the digits' values and move them to the top, so the word holds 8 digits with
    // leading zeros.
    let values = w.wrapping_sub(ONES * u64::from(b'0')) << (8 * (8 - count));
    // Pairs, then quadruples, then the whole: the standard multiply-and-shift reduction.
    let pairs = (values.wrapping_mul(10) + (values >> 8)) & 0x00FF_00FF_00FF_00FF;
    let quads = (pairs.wrapping_mul(100) + (pairs >> 16)) & 0x0000_FFFF_0000_FFFF;
    (quads.wrapping_mul(10_000) + (quads >> 32)) & 0xFFFF_FFFF
}

/// Reads the ASCII digits at `from`: their value (wrapping past `u64`, exact while there are
/// at most 19) and the index after the last one.
#[inline]
pub(super) fn digits(bytes: &[u8], from: usize) -> (u64, usize) {
    let mut value: u64 = 0;
    let mut at = from;
    while let Some(w) = word(bytes, at) {
        let marks = non_digits(w);
        let count = if marks == 0 { 8 } else { first_marked(marks) };
        value = value
            .wrapping_mul(POW10[count])
            .wrapping_add(digits_value(w, count));
        at += count;
        if count < 8 {
            return (value, at);
        }
    }
    while let Some(&digit @ b'0'..=b'9') = bytes.get(at) {
        value = value.wrapping_mul(10).wrapping_add(u64::from(digit - b'0'));
        at += 1;
    }
    (value, at)
}

/// 10^k as f32, exact for every k here (5^10 < 2^24).
const POW10_F32: [f32; 9] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];

/// Reads an activation written as a plain decimal (`-?(0|[1-9][0-9]*)(\.[0-9]{1,8})?`, not
/// followed by an exponent) whose digits, as an integer `m`, are below 2^24: the form of every
/// activation in the public files. Answers the value as Python reads it, narrowed to f32, and
/// the index after the number; anything else answers `None` for the general path.
///
/// The value is `m / 10^k` with `k` fraction digits, and one f32 division computes it: `m`
/// and `10^k` are exact in f32, so the quotient is the exact value correctly rounded to f32.
/// The general path rounds twice (to f64 as Python does, then to f32), which could only differ
/// if the f64 landed exactly on a midpoint between two f32s. It cannot: such a midpoint `M`
/// has 25 significant bits, `|m / 10^k - M|` is a nonzero multiple of `1 / (10^k 2^e)` where
/// `M`'s last bit is `2^-e`, while rounding to f64 moves the value by at most
/// `2^-53 * 2^(25-e)`; for `k <= 8`, `10^k < 2^28` keeps the first above the second.
#[inline]
pub(super) fn plain_activation(bytes: &[u8], at: usize) -> Option<(f32, usize)> {
    let negative = bytes.get(at) == Some(&b'-');
    let integer_start = at + usize::from(negative);
    // Most activations are below 1 in magnitude: their integer part is a single `0`.
    let (integer, integer_end) = if bytes.get(integer_start..integer_start + 2) == Some(b"0.") {
        (0, integer_start + 1)
    } else {
        digits(bytes, integer_start)
    };
    let integer_digits = integer_end - integer_start;
    if integer_digits == 0
        || integer_digits > 8
        || (integer_digits > 1 && bytes[integer_start] == b'0')
    {
        return None;
    }
    let (mantissa, end, fraction_digits) = if bytes.get(integer_end) == Some(&b'.') {
        let (fraction, fraction_end) = digits(bytes, integer_end + 1);
        let fraction_digits = fraction_end - (integer_end + 1);
        if fraction_digits == 0 || fraction_digits > 8 {
            return None;
        }
        // At most 16 digits: no overflow.
        let mantissa = integer * POW10[fraction_digits] + fraction;
        (mantissa, fraction_end, fraction_digits)
    } else {
        (integer, integer_end, 0)
    };
    if mantissa >= 1 << 24 || matches!(bytes.get(end), Some(b'e' | b'E')) {
        return None;
    }
    // Exact: below 2^24.
    let magnitude = mantissa as u32 as f32 / POW10_F32[fraction_digits];
    Some((if negative { -magnitude } else { magnitude }, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn string_special_bytewise(bytes: &[u8], from: usize) -> usize {
        bytes[from..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .map_or(bytes.len(), |found| from + found)
    }

    fn digits_bytewise(bytes: &[u8], from: usize) -> (u64, usize) {
        let end = bytes[from..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .map_or(bytes.len(), |found| from + found);
        let value = bytes[from..end].iter().fold(0u64, |value, &digit| {
            value.wrapping_mul(10).wrapping_add(u64::from(digit - b'0'))
        });
        (value, end)
    }

    /// Bytes weighted towards the ones the scanners tell apart.
    fn interesting_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            4 => b'0'..=b'9',
            2 => Just(b'"'),
            2 => Just(b'\\'),
            1 => 0u8..0x20,
            1 => prop::sample::select(vec![b'/', b':', b'.', b'-', b',', b' ', 0x7F, 0x80, 0xB9, 0xBA, 0xFF]),
            3 => b'a'..=b'z',
            2 => any::<u8>(),
        ]
    }

    fn input() -> impl Strategy<Value = (Vec<u8>, usize)> {
        prop::collection::vec(interesting_byte(), 0..40).prop_flat_map(|bytes| {
            let len = bytes.len();
            (Just(bytes), 0..=len)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn string_special_is_the_first_special_byte((bytes, from) in input()) {
            prop_assert_eq!(string_special(&bytes, from), string_special_bytewise(&bytes, from));
        }

        #[test]
        fn digits_reads_the_digit_run((bytes, from) in input()) {
            prop_assert_eq!(digits(&bytes, from), digits_bytewise(&bytes, from));
        }

        #[test]
        fn digits_reads_long_numbers(number in any::<u64>(), suffix in prop::collection::vec(interesting_byte(), 0..10)) {
            let mut bytes = number.to_string().into_bytes();
            let len = bytes.len();
            bytes.extend(suffix);
            let (value, end) = digits(&bytes, 0);
            prop_assert_eq!((value, end), digits_bytewise(&bytes, 0));
            if end == len {
                prop_assert_eq!(value, number);
            }
        }
    }

    /// What Python reads, narrowed as the service narrows it.
    fn python_f32(text: &str) -> f32 {
        text.parse::<f64>().expect("a valid number") as f32
    }

    /// `m` with `k` fraction digits (`m = 1234, k = 6` is `0.001234`).
    fn decimal(negative: bool, m: u32, k: usize) -> String {
        let digits = format!("{m:0width$}", width = k + 1);
        let (integer, fraction) = digits.split_at(digits.len() - k);
        let sign = if negative { "-" } else { "" };
        if k == 0 {
            format!("{sign}{integer}")
        } else {
            format!("{sign}{integer}.{fraction}")
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn plain_activations_read_as_python_narrowed(
            negative in any::<bool>(),
            m in prop_oneof![0u32..10_000, 0u32..1 << 24, (1u32 << 24) - 100..(1 << 24) + 100],
            k in 0usize..=9,
            after in prop::sample::select(vec!["", ", ", "]", "e5", "E-2", "0", ".", "x"]),
        ) {
            let text = decimal(negative, m, k);
            let input = format!("{text}{after}");
            let read = plain_activation(input.as_bytes(), 0);
            let fast_path_form = m < 1 << 24 && k <= 8 && !after.starts_with(['e', 'E', '0', '.'])
                && text.split('.').next().is_some_and(|i| i.trim_start_matches('-').len() <= 8);
            if fast_path_form {
                let (value, end) = read.expect("a plain decimal is read");
                prop_assert_eq!(value.to_bits(), python_f32(&text).to_bits(), "{}", text);
                prop_assert_eq!(end, text.len());
            } else if let Some((value, end)) = read {
                // Whatever the fast path does read, it reads like Python.
                prop_assert_eq!(value.to_bits(), python_f32(&input[..end]).to_bits());
            }
        }

        #[test]
        fn plain_activation_never_misreads_noise((bytes, from) in input()) {
            if let Some((value, end)) = plain_activation(&bytes, from) {
                let text = std::str::from_utf8(&bytes[from..end]).expect("digits are ASCII");
                prop_assert_eq!(value.to_bits(), python_f32(text).to_bits(), "{}", text);
                prop_assert!(!matches!(bytes.get(end), Some(b'0'..=b'9' | b'e' | b'E')));
            }
        }
    }

    /// Every activation with 4 decimals (the public files' form) whose digits fit the fast
    /// path: one f32 division equals Python's f64 narrowed to f32.
    #[test]
    fn four_decimal_activations_match_double_rounding_exhaustively() {
        for m in 0..1u32 << 24 {
            let single = m as f32 / 1e4f32;
            let double = (f64::from(m) / 1e4) as f32;
            assert_eq!(single.to_bits(), double.to_bits(), "{m} / 10^4");
        }
    }

    #[test]
    fn every_byte_value_is_classified_like_the_definition() {
        for byte in 0..=u8::MAX {
            for position in 0..8 {
                let mut bytes = [b'a'; 8];
                bytes[position] = byte;
                assert_eq!(
                    string_special(&bytes, 0),
                    string_special_bytewise(&bytes, 0),
                    "{byte:#04x} at {position}"
                );
                let mut digits_then = [b'7'; 9];
                digits_then[position] = byte;
                assert_eq!(
                    digits(&digits_then, 0),
                    digits_bytewise(&digits_then, 0),
                    "{byte:#04x} at {position}"
                );
            }
        }
    }
}
