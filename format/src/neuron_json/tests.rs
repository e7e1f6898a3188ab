use activations_proto::pb;
use proptest::prelude::*;

use super::{ParseError, parse_neuron_record, write_neuron_record};

/// The public file for GPT-2 XL layer 1, neuron 1, byte for byte.
const FIXTURE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../data/gpt2-xl-sample/collated-activations/1/1.json"
));

/// A small document in the public files' format that uses every part of the schema.
const SMALL: &str = r#"{"dataclass_name": "NeuronRecord", "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 3, "neuron_index": 7}, "random_sample": [{"dataclass_name": "ActivationRecord", "tokens": ["a", "\u00e9\n"], "activations": [0.5, -1.25]}], "random_sample_by_quantile": [[{"dataclass_name": "ActivationRecord", "tokens": ["x"], "activations": [NaN]}], []], "quantile_boundaries": [null, 0.1, Infinity, null], "mean": -Infinity, "variance": null, "skewness": 1e-05, "kurtosis": 3.0, "most_positive_activation_records": [{"dataclass_name": "ActivationRecord", "tokens": [], "activations": []}]}"#;

fn parse(text: &str) -> pb::NeuronRecord {
    parse_neuron_record(text.as_bytes())
        .unwrap_or_else(|error| panic!("{error}\nwhile parsing {text}"))
}

fn parse_err(text: &str) -> ParseError {
    match parse_neuron_record(text.as_bytes()) {
        Ok(record) => panic!("parsed {text}\ninto {record:?}\nbut expected an error"),
        Err(error) => error,
    }
}

/// A record with the given top-level members after a valid `neuron_id`.
fn with_members(members: &str) -> String {
    format!(r#"{{"neuron_id": {{"layer_index": 0, "neuron_index": 0}}{members}}}"#)
}

/// A record whose only record is a random sample with these members.
fn with_record(members: &str) -> String {
    with_members(&format!(r#", "random_sample": [{{{members}}}]"#))
}

fn all_records(record: &pb::NeuronRecord) -> Vec<&pb::ActivationRecord> {
    let mut records: Vec<_> = record.random_sample.iter().collect();
    for bucket in record
        .random_sample_by_quantile
        .iter()
        .flat_map(|by_quantile| &by_quantile.quantiles)
    {
        records.extend(&bucket.records);
    }
    records.extend(&record.most_positive_activation_records);
    records
}

/// Debug output prints every NaN as `NaN` and tells all other floats apart (shortest
/// round-trip digits, `-0.0`), so equal Debug strings mean equal records with NaN == NaN.
fn nan_aware(record: &pb::NeuronRecord) -> String {
    format!("{record:?}")
}

fn bits(value: Option<f64>) -> Option<u64> {
    value.map(f64::to_bits)
}

// ---- the real file ------------------------------------------------------------------

#[test]
fn fixture_has_the_documented_shape() {
    let record = parse_neuron_record(FIXTURE).expect("the public file parses");
    assert_eq!(
        record.neuron_id,
        Some(pb::NeuronId {
            layer_index: 1,
            neuron_index: 1
        })
    );
    assert_eq!(record.most_positive_activation_records.len(), 50);
    assert_eq!(record.random_sample.len(), 50);
    let quantiles = &record
        .random_sample_by_quantile
        .as_ref()
        .expect("quantiles present")
        .quantiles;
    assert_eq!(quantiles.len(), 5);
    assert!(quantiles.iter().all(|bucket| bucket.records.len() == 20));
    let boundaries = &record
        .quantile_boundaries
        .as_ref()
        .expect("boundaries present")
        .boundaries;
    let present: Vec<bool> = boundaries.iter().map(|b| b.value.is_some()).collect();
    assert_eq!(present, [false, true, true, true, true, false]);
    // Values as DATA.md quotes them from the file.
    assert_eq!(record.mean, Some(-0.0499));
    assert_eq!(record.kurtosis, Some(195.6007));
    let records = all_records(&record);
    assert_eq!(records.len(), 200);
    assert!(
        records
            .iter()
            .all(|r| r.tokens.len() == r.activations.len())
    );
    assert!(records.iter().all(|r| r.tokens.len() <= 64));
    let tokens: usize = records.iter().map(|r| r.tokens.len()).sum();
    assert_eq!(tokens, 12_777);
    assert!(
        records
            .iter()
            .all(|r| r.dfa_values.is_empty() && r.dfa_target_index.is_none())
    );
}

#[test]
fn fixture_round_trips_byte_for_byte() {
    let record = parse_neuron_record(FIXTURE).expect("the public file parses");
    let written = write_neuron_record(&record);
    // Compare as text first for a readable diff, then as bytes.
    assert_eq!(written, String::from_utf8_lossy(FIXTURE));
    assert_eq!(written.as_bytes(), FIXTURE);
}

#[test]
fn fixture_activations_are_f32_of_the_written_decimals() {
    let record = parse_neuron_record(FIXTURE).expect("the public file parses");
    let first = &record.random_sample[0];
    // The first activations in the file, read independently of the reader.
    let text = std::str::from_utf8(FIXTURE).expect("UTF-8");
    let start = text.find(r#""activations": ["#).expect("activations") + 16;
    let end = start + text[start..].find(']').expect("list end");
    let expected: Vec<f32> = text[start..end]
        .split(", ")
        .map(|number| number.parse::<f64>().expect("a plain decimal") as f32)
        .collect();
    assert_eq!(first.activations, expected);
}

// ---- numbers ------------------------------------------------------------------------

#[test]
fn non_finite_literals_and_null_are_read_in_every_number_position() {
    let record = parse(&with_members(
        r#", "random_sample": [{"tokens": ["a", "b", "c", "d", "e"], "activations": [NaN, Infinity, -Infinity, null, -0.0]}], "quantile_boundaries": [NaN, Infinity, -Infinity, null], "mean": NaN, "variance": Infinity, "skewness": -Infinity, "kurtosis": null"#,
    ));
    let activations = &record.random_sample[0].activations;
    assert!(activations[0].is_nan());
    assert_eq!(activations[1], f32::INFINITY);
    assert_eq!(activations[2], f32::NEG_INFINITY);
    assert!(activations[3].is_nan(), "null activation reads as NaN");
    assert_eq!(activations[4].to_bits(), (-0.0f32).to_bits());
    let boundaries: Vec<_> = record.quantile_boundaries.expect("present").boundaries;
    assert!(boundaries[0].value.is_some_and(f64::is_nan));
    assert_eq!(boundaries[1].value, Some(f64::INFINITY));
    assert_eq!(boundaries[2].value, Some(f64::NEG_INFINITY));
    assert_eq!(boundaries[3].value, None);
    assert!(record.mean.is_some_and(f64::is_nan));
    assert_eq!(record.variance, Some(f64::INFINITY));
    assert_eq!(record.skewness, Some(f64::NEG_INFINITY));
    assert_eq!(record.kurtosis, None, "null moment is None");
}

#[test]
fn missing_fields_take_the_dataclass_defaults() {
    let record = parse(&with_members(""));
    assert!(record.random_sample.is_empty());
    assert!(record.most_positive_activation_records.is_empty());
    assert_eq!(record.random_sample_by_quantile, None);
    assert_eq!(record.quantile_boundaries, None);
    for moment in [
        record.mean,
        record.variance,
        record.skewness,
        record.kurtosis,
    ] {
        assert!(
            moment.is_some_and(f64::is_nan),
            "moments default to math.nan"
        );
    }
}

#[test]
fn null_and_empty_quantile_parts_are_told_apart() {
    let null = parse(&with_members(
        r#", "random_sample_by_quantile": null, "quantile_boundaries": null"#,
    ));
    assert_eq!(null.random_sample_by_quantile, None);
    assert_eq!(null.quantile_boundaries, None);
    let empty = parse(&with_members(
        r#", "random_sample_by_quantile": [], "quantile_boundaries": []"#,
    ));
    assert_eq!(
        empty.random_sample_by_quantile,
        Some(pb::RandomSampleByQuantile::default())
    );
    assert_eq!(
        empty.quantile_boundaries,
        Some(pb::QuantileBoundaries::default())
    );
}

#[test]
fn number_grammar_follows_python_json() {
    for good in ["0", "-0", "1.5", "-2.25e3", "1E+2", "3e-2", "123456789"] {
        let record = parse(&with_members(&format!(r#", "mean": {good}"#)));
        let expected: f64 = good.parse().expect("valid Rust float syntax too");
        assert_eq!(bits(record.mean), bits(Some(expected)), "{good}");
    }
    for bad in [
        "01", "1.", ".5", "+1", "-", "1e", "1e+", "--1", "nan", "inf", "-NaN", "0x10",
    ] {
        parse_err(&with_members(&format!(r#", "mean": {bad}"#)));
    }
}

#[test]
fn indices_are_non_negative_integers_within_u32() {
    let index = |text: &str| {
        parse_neuron_record(
            format!(r#"{{"neuron_id": {{"layer_index": {text}, "neuron_index": 0}}}}"#).as_bytes(),
        )
        .map(|record| record.neuron_id.map(|id| id.layer_index))
    };
    assert_eq!(index("0"), Ok(Some(0)));
    assert_eq!(index("-0"), Ok(Some(0)));
    assert_eq!(
        index("2.0"),
        Ok(Some(2)),
        "Python keeps the float; it is integral"
    );
    assert_eq!(index("1e2"), Ok(Some(100)));
    assert_eq!(index("4294967295"), Ok(Some(u32::MAX)));
    for bad in [
        "-1",
        "4294967296",
        "1.5",
        "NaN",
        "Infinity",
        "-Infinity",
        "null",
        "\"1\"",
        "99999999999999999999",
    ] {
        let error = index(bad).expect_err(bad);
        assert!(
            error.message.starts_with("neuron_id.layer_index: "),
            "{bad}: {error}"
        );
    }
}

// ---- schema -------------------------------------------------------------------------

#[test]
fn objects_without_dataclass_name_read_like_named_ones() {
    let named = parse(SMALL);
    let anonymous = parse(
        &SMALL
            .replace(r#""dataclass_name": "NeuronRecord", "#, "")
            .replace(r#""dataclass_name": "NeuronId", "#, "")
            .replace(r#""dataclass_name": "ActivationRecord", "#, ""),
    );
    assert_eq!(nan_aware(&anonymous), nan_aware(&named));
}

#[test]
fn unknown_fields_are_skipped_at_every_level_including_nested_values() {
    let extra = r#""extra": {"a": [1, {"b": "\u00e9\"\\", "c": [[], {}]}], "d": NaN, "e": -Infinity, "f": true, "g": false, "h": null, "\u006b": "x"}"#;
    let plain = parse(SMALL);
    let with_extra = parse(
        &SMALL
            .replace(
                r#""dataclass_name": "NeuronRecord", "#,
                &format!("{extra}, \"dataclass_name\": \"NeuronRecord\", "),
            )
            .replace(
                r#""layer_index": 3"#,
                &format!(r#""layer_index": 3, {extra}"#),
            )
            .replace(
                r#""tokens": ["x"]"#,
                &format!(r#""tokens": ["x"], {extra}"#),
            ),
    );
    assert_eq!(nan_aware(&with_extra), nan_aware(&plain));
}

#[test]
fn invalid_json_inside_unknown_fields_is_still_an_error() {
    for bad in [
        r#"[1 2]"#,
        r#"{"a" 1}"#,
        r#""\x""#,
        "tru",
        r#"{"a": 1,}"#,
        "[1,]",
    ] {
        let error = parse_err(&with_members(&format!(r#", "extra": {bad}"#)));
        assert!(error.offset > 0, "{bad}: {error}");
        assert!(error.message.starts_with("extra: "), "{bad}: {error}");
    }
    let nested = parse_err(&with_record(
        r#""tokens": [], "activations": [], "dfa_extra": [1 2]"#,
    ));
    assert!(
        nested.message.starts_with("random_sample[0].dfa_extra: "),
        "{nested}"
    );
}

#[test]
fn keys_come_in_any_order_and_the_last_duplicate_wins() {
    let record = parse(
        r#"{"mean": 1.0, "most_positive_activation_records": [{"activations": [2.0], "tokens": ["b"]}], "neuron_id": {"neuron_index": 5, "layer_index": 4, "layer_index": 6}, "mean": 2.0, "dataclass_name": "Wrong", "dataclass_name": "NeuronRecord"}"#,
    );
    assert_eq!(record.mean, Some(2.0));
    assert_eq!(
        record.neuron_id,
        Some(pb::NeuronId {
            layer_index: 6,
            neuron_index: 5
        })
    );
    assert_eq!(record.most_positive_activation_records[0].tokens, ["b"]);
    assert_eq!(
        record.most_positive_activation_records[0].activations,
        [2.0]
    );
}

#[test]
fn short_and_empty_records_are_kept_as_they_are() {
    let record = parse(&with_members(
        r#", "most_positive_activation_records": [{"tokens": [], "activations": []}, {"tokens": ["<|endoftext|>"], "activations": [0.25]}]"#,
    ));
    let lengths: Vec<usize> = record
        .most_positive_activation_records
        .iter()
        .map(|r| r.tokens.len())
        .collect();
    assert_eq!(lengths, [0, 1]);
}

/// Tokens are copied by a fixed-width window where the input allows it: every length around
/// the window's size and the one-byte length limit, anywhere from the start of the input to
/// its last bytes, comes out whole.
#[test]
fn tokens_of_every_length_are_copied_whole_wherever_they_are() {
    let alphabet: String = ('a'..='z').cycle().take(300).collect();
    for len in (0..40).chain(120..135).chain([255, 256, 300]) {
        let token = &alphabet[..len];
        let activations = ["0.5"; 3].join(", ");
        // Last in the document, so the final token ends a few bytes before the input does.
        let text = with_record(&format!(
            r#""activations": [{activations}], "tokens": ["{token}", "x", "{token}"]"#
        ));
        let record = parse(&text);
        assert_eq!(record.random_sample[0].tokens, [token, "x", token], "{len}");
    }
}

#[test]
fn dfa_fields_are_read_and_written_back() {
    let record = parse(&with_record(
        r#""tokens": ["a"], "activations": [1.0], "dfa_values": [3, -4, 0], "dfa_target_index": 2"#,
    ));
    let ar = &record.random_sample[0];
    assert_eq!(ar.dfa_values, [3, -4, 0]);
    assert_eq!(ar.dfa_target_index, Some(2));
    let again = parse(&write_neuron_record(&record));
    assert_eq!(nan_aware(&again), nan_aware(&record));

    let nulls = parse(&with_record(
        r#""tokens": [], "activations": [], "dfa_values": null, "dfa_target_index": null"#,
    ));
    assert!(nulls.random_sample[0].dfa_values.is_empty());
    assert_eq!(nulls.random_sample[0].dfa_target_index, None);
    assert!(
        !write_neuron_record(&nulls).contains("dfa_"),
        "absent dfa fields are not written"
    );
    let only_index = pb::ActivationRecord {
        dfa_target_index: Some(7),
        ..Default::default()
    };
    let record = pb::NeuronRecord {
        random_sample: vec![only_index],
        ..parse(&with_members(""))
    };
    assert!(write_neuron_record(&record).contains(r#""dfa_values": null, "dfa_target_index": 7"#));
    let error = parse_err(&with_record(
        r#""tokens": [], "activations": [], "dfa_values": [1.5]"#,
    ));
    assert!(
        error
            .message
            .starts_with("random_sample[0].dfa_values[0]: "),
        "{error}"
    );
}

#[test]
fn mismatched_lengths_are_an_error_naming_the_record_at_its_position() {
    let text = with_members(
        r#", "most_positive_activation_records": [{"tokens": ["a"], "activations": [1.0]}, {"tokens": ["a", "b"], "activations": [1.0]}]"#,
    );
    let error = parse_err(&text);
    assert_eq!(
        error.message,
        "most_positive_activation_records[1]: 2 tokens but 1 activations"
    );
    let second_record = text.rfind(r#"{"tokens""#).expect("second record");
    assert_eq!(error.offset, second_record);

    let text = with_members(
        r#", "random_sample_by_quantile": [[], [{"tokens": [], "activations": [1.0]}]]"#,
    );
    assert_eq!(
        parse_err(&text).message,
        "random_sample_by_quantile[1][0]: 0 tokens but 1 activations"
    );
}

#[test]
fn wrong_dataclass_name_is_an_error_naming_both_classes() {
    let top = parse_err(&SMALL.replacen("\"NeuronRecord\"", "\"NeuronId\"", 1));
    assert!(
        top.message.contains("NeuronRecord") && top.message.contains("\"NeuronId\""),
        "{top}"
    );
    let id = parse_err(&SMALL.replacen("\"NeuronId\"", "\"ActivationRecord\"", 1));
    assert!(id.message.starts_with("neuron_id: "), "{id}");
    assert!(
        id.message.contains("NeuronId") && id.message.contains("\"ActivationRecord\""),
        "{id}"
    );
    let nested = parse_err(&SMALL.replacen("\"ActivationRecord\"", "\"Foo\"", 1));
    assert!(nested.message.starts_with("random_sample[0]: "), "{nested}");
    assert!(nested.message.contains("ActivationRecord") && nested.message.contains("\"Foo\""));
    let not_a_string = parse_err(&SMALL.replacen("\"NeuronRecord\"", "1", 1));
    assert_eq!(
        not_a_string.message,
        "dataclass_name: expected a string, found a number"
    );
}

#[test]
fn missing_required_fields_are_errors() {
    assert_eq!(parse_err("{}").message, "missing field neuron_id");
    assert_eq!(
        parse_err(r#"{"neuron_id": {"neuron_index": 1}}"#).message,
        "neuron_id: missing field layer_index"
    );
    assert_eq!(
        parse_err(&with_record(r#""activations": []"#)).message,
        "random_sample[0]: missing field tokens"
    );
    assert_eq!(
        parse_err(&with_record(r#""tokens": []"#)).message,
        "random_sample[0]: missing field activations"
    );
}

#[test]
fn wrong_types_get_messages_that_name_the_place() {
    let cases = [
        (
            with_record(r#""tokens": ["a", 1], "activations": [1, 2]"#),
            "random_sample[0].tokens[1]: expected a string, found a number",
        ),
        (
            with_record(r#""tokens": "ab", "activations": []"#),
            "random_sample[0].tokens: expected a list, found a string",
        ),
        (
            with_record(r#""tokens": ["a"], "activations": ["1"]"#),
            "random_sample[0].activations[0]: expected a number, found a string",
        ),
        (
            with_members(r#", "random_sample": null"#),
            "random_sample: expected a list, found null",
        ),
        (
            with_members(r#", "random_sample": [[]]"#),
            "random_sample[0]: expected an object, found a list",
        ),
        (
            with_members(r#", "mean": "0.5""#),
            "mean: expected a number, found a string",
        ),
        (
            with_members(r#", "quantile_boundaries": [true]"#),
            "quantile_boundaries[0]: expected a number, found true",
        ),
        (
            r#"{"neuron_id": null}"#.to_owned(),
            "neuron_id: expected an object, found null",
        ),
        ("[]".to_owned(), "expected an object, found a list"),
    ];
    for (text, message) in cases {
        assert_eq!(parse_err(&text).message, message, "{text}");
    }
}

// ---- strings ------------------------------------------------------------------------

#[test]
fn string_escapes_and_surrogate_pairs_decode() {
    let record = parse(&with_record(
        r#""tokens": ["\"\\\/\b\f\n\r\t", "\u00e9\u20AC\u0000", "\ud83d\ude00", "raw é😀", ""], "activations": [1, 2, 3, 4, 5]"#,
    ));
    assert_eq!(
        record.random_sample[0].tokens,
        ["\"\\/\u{8}\u{c}\n\r\t", "é€\u{0}", "😀", "raw é😀", ""]
    );
}

#[test]
fn lone_surrogate_escapes_become_the_replacement_character() {
    let record = parse(&with_record(
        r#""tokens": ["\ud800", "\udc00", "a\ud800b", "\ud800\u0041", "\ude00\ud83d", "\ud83d\ud83d\ude00"], "activations": [1, 2, 3, 4, 5, 6]"#,
    ));
    assert_eq!(
        record.random_sample[0].tokens,
        [
            "\u{fffd}",
            "\u{fffd}",
            "a\u{fffd}b",
            "\u{fffd}A",
            "\u{fffd}\u{fffd}",
            "\u{fffd}😀"
        ]
    );
}

#[test]
fn bad_strings_are_errors_at_the_offending_byte() {
    let raw_newline = with_record("\"tokens\": [\"a\nb\"], \"activations\": [1]");
    let error = parse_err(&raw_newline);
    assert_eq!(error.offset, raw_newline.find('\n').expect("newline"));
    assert!(error.message.contains("control character"), "{error}");

    let mut invalid_utf8 = with_record(r#""tokens": ["abc"], "activations": [1]"#).into_bytes();
    let b = invalid_utf8.iter().position(|&c| c == b'b').expect("b");
    invalid_utf8[b] = 0xFF;
    let error = parse_neuron_record(&invalid_utf8).expect_err("invalid UTF-8");
    assert_eq!(error.offset, b);
    assert!(error.message.contains("UTF-8"), "{error}");

    for bad in [
        r#""\x""#,
        r#""\u12""#,
        r#""\u12G4""#,
        r#""\ud800\u12G4""#,
        r#""abc"#,
        r#""\"#,
    ] {
        let text = with_record(&format!(r#""tokens": [{bad}], "activations": [1]"#));
        parse_err(&text);
    }
}

// ---- document level -----------------------------------------------------------------

#[test]
fn surrounding_whitespace_is_fine_and_trailing_data_is_an_error() {
    let record = parse(SMALL);
    let spaced = format!(" \n\t\r{SMALL}\n\n ");
    assert_eq!(nan_aware(&parse(&spaced)), nan_aware(&record));
    let error = parse_err(&format!("{SMALL} x"));
    assert_eq!(error.offset, SMALL.len() + 1);
    parse_err(&format!("{SMALL}{SMALL}"));
}

#[test]
fn whitespace_between_all_tokens_is_accepted() {
    let compact = SMALL.replace(", ", ",").replace(": ", ":");
    let airy = SMALL
        .replace(", ", " \n,\t ")
        .replace(": ", "\r\n:\n ")
        .replace('[', "[ ")
        .replace(']', " ]")
        .replace('{', "{ ")
        .replace('}', " }");
    let expected = nan_aware(&parse(SMALL));
    assert_eq!(nan_aware(&parse(&compact)), expected);
    assert_eq!(nan_aware(&parse(&airy)), expected);
}

#[test]
fn empty_or_blank_input_is_an_error() {
    for blank in ["", "   ", "\n"] {
        assert!(parse_err(blank).message.starts_with("empty input"));
    }
}

#[test]
fn a_leading_byte_order_mark_is_accepted() {
    let with_bom = [&b"\xEF\xBB\xBF"[..], SMALL.as_bytes()].concat();
    let record = parse_neuron_record(&with_bom).expect("BOM accepted like json.loads(bytes)");
    assert_eq!(nan_aware(&record), nan_aware(&parse(SMALL)));
}

#[test]
fn every_truncation_of_a_small_document_is_an_error() {
    for end in 0..SMALL.len() {
        let prefix = &SMALL.as_bytes()[..end];
        assert!(
            parse_neuron_record(prefix).is_err(),
            "prefix of {end} bytes parsed"
        );
    }
    assert!(parse_neuron_record(SMALL.as_bytes()).is_ok());
}

#[test]
fn deep_nesting_in_unknown_values_is_capped_without_overflowing_the_stack() {
    let nested = |depth: usize| {
        with_members(&format!(
            r#", "extra": {}0{}"#,
            "[{\"a\": ".repeat(depth),
            "}]".repeat(depth)
        ))
    };
    parse(&nested(60)); // 120 levels
    let error = parse_err(&nested(100_000));
    assert!(error.message.starts_with("extra: "), "{error}");
    assert!(error.message.contains("nested"), "{error}");
    let unclosed = with_members(&format!(r#", "extra": {}"#, "[".repeat(1_000_000)));
    parse_err(&unclosed);
}

#[test]
fn error_positions_count_lines_and_characters() {
    let text =
        "{\n\"neuron_id\": {\"layer_index\": 1, \"neuron_index\": 2},\n\"é€\": 0, \"mean\": ?}";
    let error = parse_err(text);
    let offset = text.find('?').expect("marker");
    let line_start = text[..offset].rfind('\n').expect("newline") + 1;
    assert_eq!(error.offset, offset);
    assert_eq!(error.line, 3);
    assert_eq!(error.column, text[line_start..offset].chars().count() + 1);
    assert_eq!(
        error.to_string(),
        format!(
            "line 3, column {} (byte {offset}): mean: expected a number, found '?'",
            error.column
        )
    );
}

// ---- writer -------------------------------------------------------------------------

#[test]
fn floats_are_written_like_python_repr() {
    // Expected strings are Python 3.11's json.dumps of the same float.
    let cases: [(f64, &str); 25] = [
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (1.0, "1.0"),
        (-3.0, "-3.0"),
        (0.5, "0.5"),
        (0.0001, "0.0001"),
        (0.00012345, "0.00012345"),
        (1e-05, "1e-05"),
        (1.5e-05, "1.5e-05"),
        (123456789012345.0, "123456789012345.0"),
        (1e15, "1000000000000000.0"),
        (1e16, "1e+16"),
        (1.5e16, "1.5e+16"),
        (9999999999999998.0, "9999999999999998.0"),
        (1e22, "1e+22"),
        (1e100, "1e+100"),
        (-1e-100, "-1e-100"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (0.1, "0.1"),
        (0.30000000000000004, "0.30000000000000004"),
        (-0.0499, "-0.0499"),
        (195.6007, "195.6007"),
        (9007199254740992.0, "9007199254740992.0"),
        (123.456, "123.456"),
    ];
    let base = parse(&with_members(""));
    for (value, python) in cases {
        let record = pb::NeuronRecord {
            mean: Some(value),
            ..base.clone()
        };
        let written = write_neuron_record(&record);
        assert!(
            written.contains(&format!(r#""mean": {python}, "#)),
            "{value:e} should be written {python}: {written}"
        );
    }
}

#[test]
fn activations_are_written_with_the_shortest_f32_digits() {
    // f64 repr of f32 0.1 would be 0.10000000149011612; the file holds 0.1.
    let record = pb::NeuronRecord {
        random_sample: vec![pb::ActivationRecord {
            tokens: vec!["a".into(); 4],
            activations: vec![0.1, -0.0674, 3.0, 1e-5],
            ..Default::default()
        }],
        ..parse(&with_members(""))
    };
    assert!(write_neuron_record(&record).contains(r#""activations": [0.1, -0.0674, 3.0, 1e-05]"#));
}

#[test]
fn f32_values_that_double_round_through_f64_still_read_back() {
    // Found by checking every f32: the shortest f32 digits of this value, 7.038531e-26, read
    // as f64 land exactly halfway between two f32s and narrow to the neighbour.
    let value = f32::from_bits(0x15ae_43fd);
    let record = pb::NeuronRecord {
        random_sample: vec![pb::ActivationRecord {
            tokens: vec!["a".into()],
            activations: vec![value],
            ..Default::default()
        }],
        ..parse(&with_members(""))
    };
    let again = parse(&write_neuron_record(&record));
    assert_eq!(
        again.random_sample[0].activations[0].to_bits(),
        value.to_bits()
    );
}

#[test]
fn strings_are_escaped_like_json_dumps_with_ensure_ascii() {
    // Expected strings are Python 3.11's json.dumps of the same text.
    let cases = [
        ("plain", r#""plain""#),
        ("\"q\"", r#""\"q\"""#),
        ("back\\slash", r#""back\\slash""#),
        ("\n\r\t\u{8}\u{c}", r#""\n\r\t\b\f""#),
        ("\u{0}\u{1f}\u{7f}", r#""\u0000\u001f\u007f""#),
        ("é£–", r#""\u00e9\u00a3\u2013""#),
        ("😀", r#""\ud83d\ude00""#),
        ("/", r#""/""#),
        ("\u{2028}", r#""\u2028""#),
        ("\u{fffd}", r#""\ufffd""#),
    ];
    for (text, python) in cases {
        let record = pb::NeuronRecord {
            random_sample: vec![pb::ActivationRecord {
                tokens: vec![text.to_owned()],
                activations: vec![1.0],
                ..Default::default()
            }],
            ..parse(&with_members(""))
        };
        let written = write_neuron_record(&record);
        assert!(
            written.contains(&format!(r#""tokens": [{python}]"#)),
            "{text:?} should be written {python}: {written}"
        );
    }
}

#[test]
fn records_are_written_in_python_key_order() {
    let written = write_neuron_record(&parse(SMALL));
    // SMALL is in json.dumps form (checked with Python: json.dumps(json.loads(SMALL)) == SMALL).
    assert_eq!(written, SMALL);
}

// ---- properties ---------------------------------------------------------------------

fn token() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '"', '\\', '/', '\n', '\r', '\t', '\u{0}', '\u{8}', '\u{c}', '\u{1f}', '\u{7f}', 'é',
        '\u{2028}', '\u{fffd}', '😀', ' ',
    ]);
    prop::collection::vec(prop_oneof![any::<char>(), special], 0..6)
        .prop_map(|chars| chars.into_iter().collect())
}

fn activation() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<f32>(),
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(-0.0f32),
        // Four-decimal values like the public files hold.
        (-20_000i32..20_000).prop_map(|n| (f64::from(n) / 10_000.0) as f32),
    ]
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        (-2_000_000i32..2_000_000).prop_map(|n| f64::from(n) / 10_000.0),
    ]
}

fn activation_record() -> impl Strategy<Value = pb::ActivationRecord> {
    (0usize..5)
        .prop_flat_map(|len| {
            (
                prop::collection::vec(token(), len),
                prop::collection::vec(activation(), len),
                prop::collection::vec(any::<i64>(), 0..3),
                prop::option::of(any::<i64>()),
            )
        })
        .prop_map(
            |(tokens, activations, dfa_values, dfa_target_index)| pb::ActivationRecord {
                tokens,
                activations,
                dfa_values,
                dfa_target_index,
            },
        )
}

fn neuron_record() -> impl Strategy<Value = pb::NeuronRecord> {
    let records = || prop::collection::vec(activation_record(), 0..4);
    (
        (any::<u32>(), any::<u32>()),
        records(),
        prop::option::of(prop::collection::vec(records(), 0..3)),
        prop::option::of(prop::collection::vec(prop::option::of(double()), 0..4)),
        [
            prop::option::of(double()),
            prop::option::of(double()),
            prop::option::of(double()),
            prop::option::of(double()),
        ],
        records(),
    )
        .prop_map(
            |((layer_index, neuron_index), random, by_quantile, boundaries, moments, top)| {
                let [mean, variance, skewness, kurtosis] = moments;
                pb::NeuronRecord {
                    neuron_id: Some(pb::NeuronId {
                        layer_index,
                        neuron_index,
                    }),
                    random_sample: random,
                    random_sample_by_quantile: by_quantile.map(|buckets| {
                        pb::RandomSampleByQuantile {
                            quantiles: buckets
                                .into_iter()
                                .map(|records| pb::ActivationRecordList { records })
                                .collect(),
                        }
                    }),
                    quantile_boundaries: boundaries.map(|values| pb::QuantileBoundaries {
                        boundaries: values
                            .into_iter()
                            .map(|value| pb::NullableDouble { value })
                            .collect(),
                    }),
                    mean,
                    variance,
                    skewness,
                    kurtosis,
                    most_positive_activation_records: top,
                }
            },
        )
}

/// A mutation of the fixture, as a corrupted store or a careless edit could make one. Positions
/// are drawn as [`prop::sample::Index`] so they scale to whatever length the file has by then.
#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrites a byte.
    Set(prop::sample::Index, u8),
    /// Flips one bit of a byte.
    FlipBit(prop::sample::Index, u8),
    /// Inserts bytes (a random byte, a JSON token, a non-finite literal, ...).
    Insert(prop::sample::Index, Vec<u8>),
    /// Deletes up to `len` bytes.
    DeleteRange(prop::sample::Index, usize),
    /// Repeats up to `len` bytes right after themselves.
    DuplicateRange(prop::sample::Index, usize),
    /// Cuts the file.
    Truncate(prop::sample::Index),
    /// Replaces the first number at or after a position with `with`.
    ReplaceNumber(prop::sample::Index, &'static str),
    /// Opens (and closes, if `closed`) `depth` nested lists or objects at a position.
    Nest(prop::sample::Index, usize, bool),
    /// Adds an unknown member holding `depth` nested lists to the first object at or after a
    /// position, where the reader has to skip it.
    NestedUnknownField(prop::sample::Index, usize),
}

/// What a number can turn into: Python's literals, `null`, and numbers at or past the limits.
const NUMBER_REPLACEMENTS: &[&str] = &[
    "NaN",
    "Infinity",
    "-Infinity",
    "null",
    "-NaN",
    "nan",
    "1e999",
    "-1e999",
    "1e-999",
    "-4.9e-324",
    "1.7976931348623157e308",
    "3.4028236e38",
    "123456789012345678901234567890",
    "0.000000000000000000000000000000000000000000001",
    "1e",
    "--1",
    "01",
    "1.",
    "\"1.0\"",
    "true",
    "[]",
];

/// JSON fragments worth inserting anywhere.
const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    ", ",
    ": ",
    "null",
    "true",
    "false",
    "NaN",
    "Infinity",
    "-Infinity",
    "0",
    "-0.0",
    "1e5",
    "\"x\"",
    "[]",
    "{}",
    "\\u00e9",
    "\\ud800",
    "\"tokens\": []",
    "\"activations\": [1.0]",
    "\"dataclass_name\": \"NeuronRecord\", ",
    "\u{feff}",
    "\x00",
    "\x1f",
    "\u{7f}",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<prop::sample::Index>;
    // Bytes the grammar cares about, so mutations hit the interesting paths often.
    let byte = || {
        prop_oneof![
            any::<u8>(),
            prop::sample::select(b"\"\\{}[],:0-.eNIn \n\x80\xff".to_vec()),
        ]
    };
    let inserted = prop_oneof![
        byte().prop_map(|b| vec![b]),
        prop::sample::select(FRAGMENTS).prop_map(|f| f.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    let len = prop_oneof![1usize..16, 16usize..4096];
    let depth = prop_oneof![1usize..130, Just(127), Just(128), Just(129), Just(20_000)];
    prop_oneof![
        (at(), byte()).prop_map(|(at, b)| Mutation::Set(at, b)),
        (at(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (at(), inserted).prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (at(), len.clone()).prop_map(|(at, len)| Mutation::DeleteRange(at, len)),
        (at(), len).prop_map(|(at, len)| Mutation::DuplicateRange(at, len)),
        at().prop_map(Mutation::Truncate),
        (at(), prop::sample::select(NUMBER_REPLACEMENTS))
            .prop_map(|(at, with)| Mutation::ReplaceNumber(at, with)),
        (at(), depth.clone(), any::<bool>())
            .prop_map(|(at, depth, closed)| Mutation::Nest(at, depth, closed)),
        (at(), depth).prop_map(|(at, depth)| Mutation::NestedUnknownField(at, depth)),
    ]
}

/// The first number at or after `from`: a `-` or digit after a space, `[` or `:`.
fn number_at_or_after(bytes: &[u8], from: usize) -> Option<std::ops::Range<usize>> {
    let is_start = |i: usize| {
        matches!(bytes[i], b'-' | b'0'..=b'9')
            && i > 0
            && matches!(bytes[i - 1], b' ' | b'[' | b':')
    };
    let start = (from..bytes.len()).find(|&i| is_start(i))?;
    let len = bytes[start + 1..]
        .iter()
        .take_while(|b| matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
        .count();
    Some(start..start + 1 + len)
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    if len == 0 {
        return;
    }
    match mutation {
        Mutation::Set(at, b) => bytes[at.index(len)] = *b,
        Mutation::FlipBit(at, bit) => bytes[at.index(len)] ^= 1 << bit,
        Mutation::Insert(at, inserted) => {
            let at = at.index(len + 1);
            bytes.splice(at..at, inserted.iter().copied());
        }
        Mutation::DeleteRange(at, n) => {
            let at = at.index(len);
            bytes.drain(at..(at + n).min(len));
        }
        Mutation::DuplicateRange(at, n) => {
            let at = at.index(len);
            let range = bytes[at..(at + n).min(len)].to_vec();
            let end = at + range.len();
            bytes.splice(end..end, range);
        }
        Mutation::Truncate(at) => bytes.truncate(at.index(len)),
        Mutation::ReplaceNumber(at, with) => {
            if let Some(number) = number_at_or_after(bytes, at.index(len)) {
                bytes.splice(number, with.bytes());
            }
        }
        Mutation::Nest(at, depth, closed) => {
            let at = at.index(len + 1);
            let mut nested = "[{\"a\": ".repeat(depth / 2).into_bytes();
            nested.extend(b"[".repeat(depth % 2));
            if *closed {
                nested.extend(b"0");
                nested.extend(b"]".repeat(depth % 2));
                nested.extend(b"}]".repeat(depth / 2));
            }
            bytes.splice(at..at, nested);
        }
        Mutation::NestedUnknownField(at, depth) => {
            if let Some(brace) = bytes[at.index(len)..].iter().position(|&b| b == b'{') {
                let after = at.index(len) + brace + 1;
                let member = format!("\"extra\": {}0{}, ", "[".repeat(*depth), "]".repeat(*depth));
                bytes.splice(after..after, member.into_bytes());
            }
        }
    }
}

/// What the loader must do with any input: decode it into records that pair every token with an
/// activation, or fail with an error inside the input that says where.
fn check_loader_on(bytes: &[u8]) -> Result<(), TestCaseError> {
    match parse_neuron_record(bytes) {
        Ok(record) => {
            for (i, ar) in all_records(&record).into_iter().enumerate() {
                prop_assert_eq!(ar.tokens.len(), ar.activations.len(), "record {}", i);
            }
        }
        Err(error) => {
            prop_assert!(error.offset <= bytes.len(), "{}", error);
            prop_assert!(error.line >= 1 && error.column >= 1, "{}", error);
            prop_assert!(!error.message.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn written_records_parse_back_equal(record in neuron_record()) {
        let written = write_neuron_record(&record);
        let parsed = parse_neuron_record(written.as_bytes())
            .map_err(|error| TestCaseError::fail(format!("{error}\nin {written}")))?;
        prop_assert_eq!(nan_aware(&parsed), nan_aware(&record));
        // And the written form is stable.
        prop_assert_eq!(write_neuron_record(&parsed), written);
    }

    #[test]
    fn numbers_read_exactly_like_str_parse(
        negative in any::<bool>(),
        // Mostly short enough for the reader's fast path, sometimes too long for it.
        integer in "0|[1-9][0-9]{0,17}",
        fraction in prop::option::of("[0-9]{1,24}"),
        exponent in prop::option::of("[eE][-+]?[0-9]{1,3}"),
    ) {
        let text = format!(
            "{}{integer}{}{}",
            if negative { "-" } else { "" },
            fraction.map(|f| format!(".{f}")).unwrap_or_default(),
            exponent.unwrap_or_default(),
        );
        let expected: f64 = text.parse().expect("valid Rust float syntax too");
        let record = parse(&with_members(&format!(r#", "mean": {text}"#)));
        prop_assert_eq!(bits(record.mean), Some(expected.to_bits()), "{}", text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_loader_on(&bytes)?;
    }
}

proptest! {
    // Each case parses a 236 KB file in a debug build; 96 cases take about 4 s.
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn mutated_fixture_never_panics_and_keeps_lengths_paired(
        mutations in prop::collection::vec(mutation(), 1..4)
    ) {
        let mut bytes = FIXTURE.to_vec();
        for mutation in &mutations {
            apply(&mut bytes, mutation);
        }
        check_loader_on(&bytes)?;
    }
}
