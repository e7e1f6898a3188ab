//! Human-readable output of the `activations` command.
//!
//! A record is two lines: a header `[top-activating #12] 64 tokens, max 3.21`, then every token
//! with its activation, `token(0.12) token(3.21)`, with control characters in tokens escaped so
//! each record stays on its line. Absent values (Python `None`) print as `none`.

use std::fmt::Write as _;
use std::io::{self, Write};

use activations_client::pb::{
    self, ActivationRecord, DatasetInfo, Layout, NeuronRecord, NeuronSummary, RecordSource,
    SplitActivationRecord,
};

/// One line per dataset: name, URI and layout (`unavailable` for a dataset the server could not
/// open yet), tab-separated, then `(default)` on the default, then why it is unavailable.
pub(super) fn write_datasets(out: &mut impl Write, datasets: &[DatasetInfo]) -> io::Result<()> {
    for dataset in datasets {
        let layout = match Layout::try_from(dataset.layout) {
            _ if !dataset.unavailable.is_empty() => "unavailable",
            Ok(Layout::Flat) => "flat",
            Ok(Layout::Neurons) => "neurons",
            Ok(Layout::Unspecified) | Err(_) => "unspecified",
        };
        write!(out, "{}\t{}\t{layout}", dataset.name, dataset.uri)?;
        if dataset.is_default {
            write!(out, "\t(default)")?;
        }
        if !dataset.unavailable.is_empty() {
            write!(out, "\t{}", dataset.unavailable)?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// One index per line.
pub(super) fn write_indices(out: &mut impl Write, indices: &[u32]) -> io::Result<()> {
    for index in indices {
        writeln!(out, "{index}")?;
    }
    Ok(())
}

/// The records of a split, each labelled with where it comes from.
pub(super) fn write_split_records(
    out: &mut impl Write,
    records: &[SplitActivationRecord],
) -> io::Result<()> {
    let empty = ActivationRecord::default();
    for item in records {
        let source = match RecordSource::try_from(item.source) {
            Ok(RecordSource::TopActivating) => "top-activating",
            Ok(RecordSource::Random) => "random",
            Ok(RecordSource::Unspecified) | Err(_) => "unknown source",
        };
        let label = format!("{source} #{}", item.source_index);
        write_record(out, &label, item.record.as_ref().unwrap_or(&empty))?;
    }
    Ok(())
}

/// The whole record: moments and quantile boundaries, then every list of records.
pub(super) fn write_neuron_record(out: &mut impl Write, record: &NeuronRecord) -> io::Result<()> {
    writeln!(out, "neuron: {}", describe_neuron(record.neuron_id))?;
    write_moments(
        out,
        record.mean,
        record.variance,
        record.skewness,
        record.kurtosis,
    )?;
    writeln!(
        out,
        "quantile boundaries: {}",
        describe_boundaries(record.quantile_boundaries.as_ref())
    )?;

    let top = &record.most_positive_activation_records;
    writeln!(out, "most positive activation records: {}", top.len())?;
    for (index, item) in top.iter().enumerate() {
        write_record(out, &format!("top-activating #{index}"), item)?;
    }

    writeln!(out, "random sample: {}", record.random_sample.len())?;
    for (index, item) in record.random_sample.iter().enumerate() {
        write_record(out, &format!("random #{index}"), item)?;
    }

    match &record.random_sample_by_quantile {
        None => writeln!(out, "random sample by quantile: none")?,
        Some(by_quantile) => {
            let counts: Vec<_> = by_quantile
                .quantiles
                .iter()
                .map(|q| q.records.len())
                .collect();
            writeln!(out, "random sample by quantile: {}", join(&counts))?;
            for (quantile, bucket) in by_quantile.quantiles.iter().enumerate() {
                for (index, item) in bucket.records.iter().enumerate() {
                    write_record(out, &format!("quantile {quantile} #{index}"), item)?;
                }
            }
        }
    }
    Ok(())
}

/// Moments, boundaries, max activation and counts, one `name: value` per line.
pub(super) fn write_summary(out: &mut impl Write, summary: &NeuronSummary) -> io::Result<()> {
    writeln!(out, "neuron: {}", describe_neuron(summary.neuron_id))?;
    write_moments(
        out,
        summary.mean,
        summary.variance,
        summary.skewness,
        summary.kurtosis,
    )?;
    writeln!(
        out,
        "quantile boundaries: {}",
        describe_boundaries(summary.quantile_boundaries.as_ref())
    )?;
    let max = summary
        .max_activation
        .map_or_else(|| "none".to_owned(), |max| max.to_string());
    writeln!(out, "max activation: {max}")?;
    writeln!(
        out,
        "most positive activation records: {}",
        summary.most_positive_activation_record_count
    )?;
    writeln!(out, "random sample: {}", summary.random_sample_count)?;
    let counts = &summary.random_sample_by_quantile_counts;
    if counts.is_empty() {
        writeln!(out, "random sample by quantile: none")?;
    } else {
        writeln!(out, "random sample by quantile: {}", join(counts))?;
    }
    writeln!(out, "tokens: {}", summary.token_count)
}

/// A record's header line and its token line.
fn write_record(out: &mut impl Write, label: &str, record: &ActivationRecord) -> io::Result<()> {
    let max = record
        .activations
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .reduce(f32::max)
        .map_or_else(|| "none".to_owned(), |max| max.to_string());
    writeln!(out, "[{label}] {} tokens, max {max}", record.tokens.len())?;

    let mut line = String::new();
    for (index, token) in record.tokens.iter().enumerate() {
        if index > 0 {
            line.push(' ');
        }
        escape_token(&mut line, token);
        match record.activations.get(index) {
            Some(activation) => write!(line, "({activation})"),
            None => write!(line, "(?)"),
        }
        .expect("writing to a String cannot fail");
    }
    writeln!(out, "{line}")
}

fn write_moments(
    out: &mut impl Write,
    mean: Option<f64>,
    variance: Option<f64>,
    skewness: Option<f64>,
    kurtosis: Option<f64>,
) -> io::Result<()> {
    writeln!(out, "mean: {}", optional(mean))?;
    writeln!(out, "variance: {}", optional(variance))?;
    writeln!(out, "skewness: {}", optional(skewness))?;
    writeln!(out, "kurtosis: {}", optional(kurtosis))
}

/// Escapes backslashes and control characters (`\n`, `\r`, `\t`, others as `\u{..}`) so a
/// token cannot break the line or be mistaken for an escape.
fn escape_token(line: &mut String, token: &str) {
    for c in token.chars() {
        match c {
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if c.is_control() => line.extend(c.escape_unicode()),
            c => line.push(c),
        }
    }
}

fn describe_neuron(id: Option<pb::NeuronId>) -> String {
    match id {
        Some(id) => format!("layer {}, neuron {}", id.layer_index, id.neuron_index),
        None => "unknown".to_owned(),
    }
}

fn describe_boundaries(boundaries: Option<&pb::QuantileBoundaries>) -> String {
    match boundaries {
        None => "none".to_owned(),
        Some(boundaries) => {
            let values: Vec<_> = boundaries
                .boundaries
                .iter()
                .map(|b| optional(b.value))
                .collect();
            format!("[{}]", values.join(", "))
        }
    }
}

fn optional(value: Option<f64>) -> String {
    value.map_or_else(|| "none".to_owned(), |value| value.to_string())
}

/// `a, b, c`
fn join(values: &[impl ToString]) -> String {
    let values: Vec<_> = values.iter().map(ToString::to_string).collect();
    values.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_output::{record, render};

    #[test]
    fn split_record_is_a_header_and_a_token_line() {
        let records = [
            SplitActivationRecord {
                record: Some(record(&[" the", "\n", "a\\b"], &[0.12, 3.21, -0.5])),
                source: RecordSource::TopActivating.into(),
                source_index: 12,
            },
            SplitActivationRecord {
                record: Some(record(&["x"], &[0.0])),
                source: RecordSource::Random.into(),
                source_index: 1,
            },
        ];
        let text = render(|out| write_split_records(out, &records));
        assert_eq!(
            text,
            "[top-activating #12] 3 tokens, max 3.21\n the(0.12) \\n(3.21) a\\\\b(-0.5)\n\
             [random #1] 1 tokens, max 0\nx(0)\n"
        );
    }

    #[test]
    fn record_max_ignores_nan_and_empty_record_has_none() {
        let text = render(|out| write_record(out, "r", &record(&["a", "b"], &[f32::NAN, 1.5])));
        assert_eq!(text, "[r] 2 tokens, max 1.5\na(NaN) b(1.5)\n");
        let text = render(|out| write_record(out, "r", &record(&[], &[])));
        assert_eq!(text, "[r] 0 tokens, max none\n\n");
    }

    #[test]
    fn control_characters_in_tokens_stay_on_the_line() {
        let mut line = String::new();
        escape_token(&mut line, "a\tb\r\u{1b}é");
        assert_eq!(line, "a\\tb\\r\\u{1b}é");
    }

    #[test]
    fn datasets_mark_the_default() {
        let datasets = [
            DatasetInfo {
                name: "gpt2-xl".into(),
                uri: "file:///data/xl".into(),
                layout: Layout::Flat.into(),
                is_default: true,
                unavailable: String::new(),
            },
            DatasetInfo {
                name: "small".into(),
                uri: "az://openaipublic/x".into(),
                layout: Layout::Neurons.into(),
                is_default: false,
                unavailable: String::new(),
            },
            DatasetInfo {
                name: "down".into(),
                uri: "s3://bucket/x".into(),
                layout: Layout::Unspecified.into(),
                is_default: false,
                unavailable: "reading x/manifest.json failed".into(),
            },
        ];
        assert_eq!(
            render(|out| write_datasets(out, &datasets)),
            "gpt2-xl\tfile:///data/xl\tflat\t(default)\nsmall\taz://openaipublic/x\tneurons\n\
             down\ts3://bucket/x\tunavailable\treading x/manifest.json failed\n"
        );
    }

    #[test]
    fn indices_are_one_per_line() {
        assert_eq!(render(|out| write_indices(out, &[0, 2, 10])), "0\n2\n10\n");
    }

    #[test]
    fn summary_prints_every_field() {
        let summary = NeuronSummary {
            neuron_id: Some(pb::NeuronId {
                layer_index: 1,
                neuron_index: 2,
            }),
            mean: Some(-0.0499),
            variance: Some(f64::NAN),
            skewness: None,
            kurtosis: Some(195.6007),
            quantile_boundaries: Some(pb::QuantileBoundaries {
                boundaries: vec![
                    pb::NullableDouble { value: None },
                    pb::NullableDouble {
                        value: Some(0.5005),
                    },
                ],
            }),
            max_activation: Some(3.21),
            most_positive_activation_record_count: 50,
            random_sample_count: 49,
            random_sample_by_quantile_counts: vec![20, 20],
            token_count: 12777,
        };
        assert_eq!(
            render(|out| write_summary(out, &summary)),
            "neuron: layer 1, neuron 2\nmean: -0.0499\nvariance: NaN\nskewness: none\n\
             kurtosis: 195.6007\nquantile boundaries: [none, 0.5005]\nmax activation: 3.21\n\
             most positive activation records: 50\nrandom sample: 49\n\
             random sample by quantile: 20, 20\ntokens: 12777\n"
        );
    }

    #[test]
    fn summary_without_records_or_quantiles_says_none() {
        let summary = NeuronSummary::default();
        let text = render(|out| write_summary(out, &summary));
        assert!(text.contains("neuron: unknown\n"), "{text}");
        assert!(text.contains("quantile boundaries: none\n"), "{text}");
        assert!(text.contains("max activation: none\n"), "{text}");
        assert!(text.contains("random sample by quantile: none\n"), "{text}");
    }

    #[test]
    fn whole_record_lists_every_record_by_list() {
        let record = NeuronRecord {
            neuron_id: Some(pb::NeuronId {
                layer_index: 0,
                neuron_index: 7,
            }),
            random_sample: vec![record(&["r"], &[0.25])],
            random_sample_by_quantile: Some(pb::RandomSampleByQuantile {
                quantiles: vec![
                    pb::ActivationRecordList { records: vec![] },
                    pb::ActivationRecordList {
                        records: vec![record(&["q"], &[1.0])],
                    },
                ],
            }),
            quantile_boundaries: None,
            mean: Some(0.5),
            variance: None,
            skewness: None,
            kurtosis: None,
            most_positive_activation_records: vec![record(&["t"], &[2.0])],
        };
        assert_eq!(
            render(|out| write_neuron_record(out, &record)),
            "neuron: layer 0, neuron 7\nmean: 0.5\nvariance: none\nskewness: none\n\
             kurtosis: none\nquantile boundaries: none\nmost positive activation records: 1\n\
             [top-activating #0] 1 tokens, max 2\nt(2)\nrandom sample: 1\n\
             [random #0] 1 tokens, max 0.25\nr(0.25)\nrandom sample by quantile: 0, 1\n\
             [quantile 1 #0] 1 tokens, max 1\nq(1)\n"
        );
    }
}
