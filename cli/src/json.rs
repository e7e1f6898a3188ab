//! JSON output of `activations get --json`.
//!
//! A whole record is one object laid out like the Python neuron file (`dataclass_name` tags,
//! the dataclass field order, `null` for `None`), so `neuron_explainer.fast_dataclasses.loads`
//! reads it back. A split is JSONL: one `{"source", "source_index", "tokens", "activations"}`
//! object per line.
//!
//! Standard JSON has no NaN or infinities, and Python's non-standard `NaN` literal breaks most
//! parsers, so non-finite numbers are written as the strings `"NaN"`, `"Infinity"` and
//! `"-Infinity"`. Activations are written as the shortest decimal of their f32 value (`0.1`,
//! not `0.10000000149011612`), which is how the files spell them.

use std::io::{self, Write};

use serde_json::{Value, json};

use activations_client::pb::{
    self, ActivationRecord, NeuronRecord, RecordSource, SplitActivationRecord,
};

/// One JSON object per line, one line per record of the split.
pub(super) fn write_split_records(
    out: &mut impl Write,
    records: &[SplitActivationRecord],
) -> io::Result<()> {
    for item in records {
        serde_json::to_writer(&mut *out, &split_record(item))?;
        writeln!(out)?;
    }
    Ok(())
}

/// Writes each neuron of `stream` as one line, `{"layer_index": L, "neuron_index": N, "splits":
/// {"valid": [records...], ...}, "cursor": "..."}`, or with `"error": {"code", "message"}` in
/// place of `"splits"` for a neuron the server could not serve, flushing after each line so a
/// reader sees neurons as they come. Returns the neurons read and how many of them failed. A
/// failure of the stream itself (after the SDK's own resumptions) ends it with that error.
pub(super) async fn write_neuron_splits(
    out: &mut impl Write,
    mut stream: activations_client::NeuronSplitsStream,
) -> Result<(u64, u64), crate::RunError> {
    use futures::TryStreamExt;

    let (mut read, mut failed) = (0, 0);
    while let Some(neuron) = stream.try_next().await? {
        read += 1;
        let mut line = json!({
            "layer_index": neuron.neuron_id.layer_index,
            "neuron_index": neuron.neuron_id.neuron_index,
        });
        match &neuron.splits {
            Ok(splits) => {
                let mut by_name = serde_json::Map::new();
                for split in splits {
                    let name = pb::Split::try_from(split.split)
                        .map_or("unspecified", |split| split.as_str_name());
                    let name = name.trim_start_matches("SPLIT_").to_ascii_lowercase();
                    let records = split.records.iter().map(split_record).collect();
                    by_name.insert(name, Value::Array(records));
                }
                line["splits"] = Value::Object(by_name);
            }
            Err(error) => {
                failed += 1;
                line["error"] = json!({
                    "code": activations_proto::code_name(error.code()),
                    "message": error.message(),
                });
            }
        }
        line["cursor"] = Value::String(neuron.cursor.clone());
        serde_json::to_writer(&mut *out, &line).map_err(io::Error::from)?;
        writeln!(out)?;
        out.flush()?;
    }
    Ok((read, failed))
}

/// The record as one JSON object, then a newline.
pub(super) fn write_neuron_record(out: &mut impl Write, record: &NeuronRecord) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &neuron_record(record))?;
    writeln!(out)
}

fn split_record(item: &SplitActivationRecord) -> Value {
    let source = match RecordSource::try_from(item.source) {
        Ok(RecordSource::TopActivating) => "top_activating",
        Ok(RecordSource::Random) => "random",
        Ok(RecordSource::Unspecified) | Err(_) => "unspecified",
    };
    let mut object = json!({ "source": source, "source_index": item.source_index });
    let empty = ActivationRecord::default();
    if let Value::Object(fields) = activation_record(item.record.as_ref().unwrap_or(&empty)) {
        for (key, value) in fields {
            if key != "dataclass_name" {
                object[key] = value;
            }
        }
    }
    object
}

fn neuron_record(record: &NeuronRecord) -> Value {
    let neuron_id = record.neuron_id.unwrap_or_default();
    json!({
        "dataclass_name": "NeuronRecord",
        "neuron_id": {
            "dataclass_name": "NeuronId",
            "layer_index": neuron_id.layer_index,
            "neuron_index": neuron_id.neuron_index,
        },
        "random_sample": activation_records(&record.random_sample),
        "random_sample_by_quantile": record.random_sample_by_quantile.as_ref().map(|by_quantile| {
            by_quantile
                .quantiles
                .iter()
                .map(|bucket| activation_records(&bucket.records))
                .collect::<Vec<_>>()
        }),
        "quantile_boundaries": record.quantile_boundaries.as_ref().map(quantile_boundaries),
        "mean": record.mean.map(f64_number),
        "variance": record.variance.map(f64_number),
        "skewness": record.skewness.map(f64_number),
        "kurtosis": record.kurtosis.map(f64_number),
        "most_positive_activation_records":
            activation_records(&record.most_positive_activation_records),
    })
}

fn activation_records(records: &[ActivationRecord]) -> Value {
    records.iter().map(activation_record).collect()
}

/// `dfa_values` and `dfa_target_index` appear only when the server sent them, like the files
/// that carry them.
fn activation_record(record: &ActivationRecord) -> Value {
    let mut object = json!({
        "dataclass_name": "ActivationRecord",
        "tokens": record.tokens,
        "activations": record.activations.iter().copied().map(f32_number).collect::<Vec<_>>(),
    });
    if !record.dfa_values.is_empty() || record.dfa_target_index.is_some() {
        object["dfa_values"] = json!(record.dfa_values);
    }
    if let Some(index) = record.dfa_target_index {
        object["dfa_target_index"] = json!(index);
    }
    object
}

fn quantile_boundaries(boundaries: &pb::QuantileBoundaries) -> Value {
    boundaries
        .boundaries
        .iter()
        .map(|boundary| boundary.value.map(f64_number).unwrap_or(Value::Null))
        .collect()
}

fn f32_number(value: f32) -> Value {
    if value.is_finite() {
        // Through the f32's shortest decimal, so the f64 JSON number prints the same digits.
        let shortest = value.to_string().parse().unwrap_or(f64::from(value));
        f64_number(shortest)
    } else {
        f64_number(f64::from(value))
    }
}

fn f64_number(value: f64) -> Value {
    match serde_json::Number::from_f64(value) {
        Some(number) => Value::Number(number),
        None if value.is_nan() => Value::from("NaN"),
        None if value > 0.0 => Value::from("Infinity"),
        None => Value::from("-Infinity"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_output::{record, render};

    #[test]
    fn split_is_one_object_per_line_in_documented_key_order() {
        let records = [
            SplitActivationRecord {
                record: Some(record(&["a", "\n"], &[0.1, 3.21])),
                source: RecordSource::TopActivating.into(),
                source_index: 12,
            },
            SplitActivationRecord {
                record: Some(record(&["b"], &[-0.0032])),
                source: RecordSource::Random.into(),
                source_index: 0,
            },
        ];
        assert_eq!(
            render(|out| write_split_records(out, &records)),
            "{\"source\":\"top_activating\",\"source_index\":12,\"tokens\":[\"a\",\"\\n\"],\
             \"activations\":[0.1,3.21]}\n\
             {\"source\":\"random\",\"source_index\":0,\"tokens\":[\"b\"],\
             \"activations\":[-0.0032]}\n"
        );
    }

    #[test]
    fn non_finite_numbers_become_strings() {
        let records = [SplitActivationRecord {
            record: Some(record(
                &["a", "b", "c"],
                &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY],
            )),
            source: RecordSource::Random.into(),
            source_index: 3,
        }];
        let text = render(|out| write_split_records(out, &records));
        let parsed: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(
            parsed["activations"],
            json!(["NaN", "Infinity", "-Infinity"])
        );
    }

    #[test]
    fn whole_record_mirrors_the_python_file() {
        let record = NeuronRecord {
            neuron_id: Some(pb::NeuronId {
                layer_index: 1,
                neuron_index: 1,
            }),
            random_sample: vec![record(&["r"], &[0.5005])],
            random_sample_by_quantile: Some(pb::RandomSampleByQuantile {
                quantiles: vec![pb::ActivationRecordList {
                    records: vec![record(&["q"], &[1.0])],
                }],
            }),
            quantile_boundaries: Some(pb::QuantileBoundaries {
                boundaries: vec![
                    pb::NullableDouble { value: None },
                    pb::NullableDouble {
                        value: Some(-0.0032),
                    },
                    pb::NullableDouble { value: None },
                ],
            }),
            mean: Some(-0.0499),
            variance: Some(f64::NAN),
            skewness: None,
            kurtosis: Some(f64::INFINITY),
            most_positive_activation_records: vec![record(&["t"], &[3.21])],
        };
        assert_eq!(
            render(|out| write_neuron_record(out, &record)),
            concat!(
                r#"{"dataclass_name":"NeuronRecord","#,
                r#""neuron_id":{"dataclass_name":"NeuronId","layer_index":1,"neuron_index":1},"#,
                r#""random_sample":[{"dataclass_name":"ActivationRecord","tokens":["r"],"activations":[0.5005]}],"#,
                r#""random_sample_by_quantile":[[{"dataclass_name":"ActivationRecord","tokens":["q"],"activations":[1.0]}]],"#,
                r#""quantile_boundaries":[null,-0.0032,null],"#,
                r#""mean":-0.0499,"variance":"NaN","skewness":null,"kurtosis":"Infinity","#,
                r#""most_positive_activation_records":[{"dataclass_name":"ActivationRecord","tokens":["t"],"activations":[3.21]}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn absent_quantile_fields_are_null() {
        let value = neuron_record(&NeuronRecord::default());
        assert_eq!(value["random_sample_by_quantile"], Value::Null);
        assert_eq!(value["quantile_boundaries"], Value::Null);
        assert_eq!(value["mean"], Value::Null);
        assert_eq!(value["random_sample"], json!([]));
    }

    #[test]
    fn dfa_fields_appear_only_when_present() {
        let plain = activation_record(&record(&["a"], &[1.0]));
        assert!(plain.get("dfa_values").is_none() && plain.get("dfa_target_index").is_none());

        let with_dfa = activation_record(&ActivationRecord {
            dfa_values: vec![1, -2],
            dfa_target_index: Some(0),
            ..record(&["a"], &[1.0])
        });
        assert_eq!(with_dfa["dfa_values"], json!([1, -2]));
        assert_eq!(with_dfa["dfa_target_index"], json!(0));
    }

    #[test]
    fn activations_print_their_shortest_f32_decimal() {
        assert_eq!(f32_number(0.1).to_string(), "0.1");
        assert_eq!(f32_number(-0.0499).to_string(), "-0.0499");
        assert_eq!(f32_number(1e-7).to_string(), "1e-7");
    }
}
