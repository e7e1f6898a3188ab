//! `activations export`: copies neurons from the server into neuron files laid out and
//! formatted like the public data (`DIR/{layer}/{neuron}.json`, byte for byte), or into one
//! JSONL file, so that an interrupted export resumes where it stopped when run again.
//!
//! - Files are written beside their final name (`N.json.partial`) and renamed, so a file with
//!   the final name is always complete; a rerun skips those without fetching them.
//! - The JSONL file grows as `neurons.jsonl.partial` and is renamed to `neurons.jsonl` at the
//!   end. A rerun drops a trailing incomplete line of the partial file, reads the neuron id at
//!   the start of its last line and continues after that neuron, in selection order. Neurons
//!   left out are listed in `neurons.jsonl.failed`, so a resumed run still counts them.
//! - A neuron the server cannot serve (missing, corrupt, too small) is reported on stderr and
//!   counted, and the export goes on; any other error (the server or the connection failing)
//!   stops it, keeping what has been written.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, IsTerminal, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use activations_client::Code;
use activations_format::neuron_json::write_neuron_record;
use futures::{StreamExt, TryStreamExt, stream};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::MissedTickBehavior;

use crate::{Diagnostics, RunError};
use activations_client::Error;
use activations_client::pb;
use activations_client::{ActivationsClient, Selection};

/// The JSONL file of a finished `--jsonl` export, in the output directory.
const JSONL_FILE: &str = "neurons.jsonl";
/// The JSONL file while the export runs.
const JSONL_PARTIAL: &str = "neurons.jsonl.partial";
/// The neurons left out of the JSONL file, one `L/N: error` line each; absent when none is.
const JSONL_FAILED: &str = "neurons.jsonl.failed";
/// Where a rerun writes the neurons it retried, before merging them into [`JSONL_FILE`].
const JSONL_RETRIED: &str = "neurons.jsonl.retried";
/// How often progress lines are written when stderr is not a terminal.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Neuron indices per `ListNeurons` request: the server's largest page.
const LIST_PAGE_SIZE: u32 = 10_000;
/// How much of a JSONL line is read to find its neuron id (the writer's prefix is ~110 bytes).
const ID_PREFIX_BYTES: usize = 4096;
/// Chunk size of the backwards scan for line ends in the partial JSONL file.
const SCAN_CHUNK: usize = 64 * 1024;

/// What `activations export` was asked to do.
#[derive(Debug)]
pub(super) struct Options {
    /// Layers to export; with `neurons: None` only those the server lists.
    pub layers: Range<u32>,
    /// Exactly these neurons of each layer, or `None` for every neuron the server lists.
    pub neurons: Option<Range<u32>>,
    /// The output directory.
    pub dir: PathBuf,
    /// One JSONL file instead of one file per neuron.
    pub jsonl: bool,
    /// Requests in flight at once (at least 1).
    pub concurrency: usize,
    /// `Some((i, n))`: only part `i` of `n` of the selection.
    pub shard: Option<(u32, u32)>,
}

/// `--shard I/N`: part I (from 0) of N.
pub(super) fn parse_shard(text: &str) -> Result<(u32, u32), String> {
    let parsed = text.split_once('/').and_then(|(index, count)| {
        Some((
            index.trim().parse::<u32>().ok()?,
            count.trim().parse::<u32>().ok()?,
        ))
    });
    match parsed {
        Some((index, count)) if index < count => Ok((index, count)),
        Some((index, count)) => Err(format!(
            "{index}/{count}: the part counts from 0 and is below the count (0/{count} to {}/{count})",
            count.saturating_sub(1)
        )),
        None => Err(format!(
            "{text:?} is not a part: expected I/N, such as 0/4 (the first of 4)"
        )),
    }
}

/// `--out`: a directory, existing or not; an existing file is refused before anything is
/// fetched.
pub(super) fn parse_out_dir(text: &str) -> Result<PathBuf, String> {
    let dir = PathBuf::from(text);
    if dir.exists() && !dir.is_dir() {
        return Err(format!(
            "{} is a file: an export writes a directory (created if needed); name a directory, \
             such as {}",
            dir.display(),
            dir.with_extension("export").display()
        ));
    }
    Ok(dir)
}

/// Parses an index range as `--layers` and `--neurons` take it: `A..B` (end-exclusive, as in
/// Rust), `A..=B`, or one index `A` meaning `A..A+1`. Empty ranges are rejected.
pub(super) fn parse_range(text: &str) -> Result<Range<u32>, String> {
    fn index(part: &str, what: &str) -> Result<u32, String> {
        if part.is_empty() {
            return Err(format!(
                "the range has no {what}: write START..END (end-exclusive), like 0..48, or one \
                 index, like 5"
            ));
        }
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{part:?} is not an index (a non-negative integer)"));
        }
        part.parse::<u32>()
            .map_err(|_| format!("{part} is too large (at most {})", u32::MAX))
    }
    let one_past = |end: u32| {
        end.checked_add(1)
            .ok_or_else(|| format!("{end} is too large (at most {})", u32::MAX - 1))
    };
    // `0-2`, as a range is often written elsewhere: say how to write it here.
    if let Some((first, last)) = text.split_once('-')
        && !first.is_empty()
        && first
            .bytes()
            .chain(last.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "{text} is not a range here: write {first}..={last} (both included) or {first}..{} \
             (the end excluded)",
            last.parse::<u64>()
                .map_or_else(|_| "END".to_string(), |l| (l + 1).to_string())
        ));
    }
    let (start, end) = if let Some((start, end)) = text.split_once("..=") {
        (index(start, "start")?, one_past(index(end, "end")?)?)
    } else if let Some((start, end)) = text.split_once("..") {
        (index(start, "start")?, index(end, "end")?)
    } else {
        let only = index(text, "index")?;
        (only, one_past(only)?)
    };
    if start >= end {
        return Err(format!(
            "{text} is empty: the end is exclusive and must be greater than the start"
        ));
    }
    Ok(start..end)
}

/// Runs the export, writing the summary line to `out` and progress and failed neurons to
/// `diagnostics`.
pub(super) async fn run(
    client: &ActivationsClient,
    options: Options,
    out: &mut impl Write,
    diagnostics: Diagnostics<'_>,
) -> Result<(), RunError> {
    let started = Instant::now();
    let dir = &options.dir;

    let done_jsonl = dir.join(JSONL_FILE);
    if options.jsonl && done_jsonl.exists() {
        let failed = dir.join(JSONL_FAILED);
        let failures = match fs::read_to_string(&failed) {
            Ok(list) => list,
            Err(error) if error.kind() == io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(at(&failed, error)),
        };
        if failures.trim().is_empty() {
            writeln!(
                out,
                "nothing to do: {} is complete (delete it to export again)",
                done_jsonl.display()
            )?;
            return Ok(());
        }
        return retry_jsonl(client, &options, out, diagnostics, &failures, started).await;
    }

    let selection = select(client, &options).await?;
    fs::create_dir_all(dir).map_err(|e| at(dir, e))?;
    let (target, resume_at, failed_before) = if options.jsonl {
        prepare_jsonl(dir, done_jsonl, &selection)?
    } else {
        (Target::Files(dir.clone()), 0, Vec::new())
    };
    let todo: Vec<(u32, u32)> = match &target {
        Target::Files(_) => selection
            .iter()
            .copied()
            .filter(|&(layer, neuron)| !neuron_path(dir, layer, neuron).exists())
            .collect(),
        Target::Jsonl { .. } => selection[resume_at..].to_vec(),
    };
    let selected = selection.len() as u64;
    let failed_before_count = failed_before.len() as u64;
    let counts = Counts {
        selected,
        skipped: selected - todo.len() as u64 - failed_before_count,
        failed_before: failed_before_count,
        ..Counts::default()
    };

    let counts = export_showing_progress(
        client,
        &todo,
        options.concurrency,
        target,
        Progress::start(diagnostics, counts, &failed_before),
    )
    .await?;
    let (exported, skipped, failed) = (counts.exported, counts.skipped, counts.failed_in_all());
    let noun = if exported == 1 { "neuron" } else { "neurons" };
    writeln!(
        out,
        "exported {exported} {noun} to {} ({skipped} skipped, {failed} failed) in {:.1}s",
        dir.display(),
        started.elapsed().as_secs_f64()
    )?;
    if failed > 0 {
        return Err(RunError::ExportIncomplete { failed, selected });
    }
    Ok(())
}

/// Reruns a complete JSONL export whose failure list names neurons: fetches them again, merges
/// those served into the JSONL file at their places in the selection (so the file is what one
/// clean run would have written), and lists those that fail again.
async fn retry_jsonl(
    client: &ActivationsClient,
    options: &Options,
    out: &mut impl Write,
    diagnostics: Diagnostics<'_>,
    failures: &str,
    started: Instant,
) -> Result<(), RunError> {
    let dir = &options.dir;
    let failed = dir.join(JSONL_FAILED);
    let listed: HashSet<(u32, u32)> = failures.lines().filter_map(failure_neuron).collect();
    let selection = select(client, options).await?;
    let retry: Vec<(u32, u32)> = selection
        .iter()
        .copied()
        .filter(|id| listed.contains(id))
        .collect();
    // The failures of neurons outside this selection stay listed; the others are retried.
    let kept: Vec<&str> = failures
        .lines()
        .filter(|line| failure_neuron(line).is_some_and(|id| !retry.contains(&id)))
        .collect();
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    fs::write(&failed, text).map_err(|e| at(&failed, e))?;
    let retried = dir.join(JSONL_RETRIED);
    let file = File::create(&retried).map_err(|e| at(&retried, e))?;
    let target = Target::Jsonl {
        file,
        partial: retried,
        done: dir.join(JSONL_FILE),
        failed,
        merge_into_order: Some(
            selection
                .iter()
                .enumerate()
                .map(|(position, &id)| (id, position))
                .collect(),
        ),
    };
    let counts = Counts {
        selected: retry.len() as u64,
        ..Counts::default()
    };
    let counts = export_showing_progress(
        client,
        &retry,
        options.concurrency,
        target,
        Progress::start(diagnostics, counts, &[]),
    )
    .await?;
    let failed = dir.join(JSONL_FAILED);
    if fs::metadata(&failed).is_ok_and(|list| list.len() == 0) {
        fs::remove_file(&failed).map_err(|e| at(&failed, e))?;
    }
    writeln!(
        out,
        "retried {} {} listed in {JSONL_FAILED}: {} exported into {JSONL_FILE}, {} failed \
         again, in {:.1}s",
        retry.len(),
        if retry.len() == 1 {
            "neuron"
        } else {
            "neurons"
        },
        counts.exported,
        counts.failed,
        started.elapsed().as_secs_f64()
    )?;
    if counts.failed > 0 {
        return Err(RunError::ExportIncomplete {
            failed: counts.failed,
            selected: retry.len() as u64,
        });
    }
    Ok(())
}

/// Merges the lines of `retried` into `done`, each at its neuron's place in `order` (both files
/// are in that order already), through a new file renamed over `done`.
fn merge_jsonl(
    done: &Path,
    retried: &Path,
    order: &HashMap<(u32, u32), usize>,
) -> Result<(), RunError> {
    let place = |line: &[u8]| {
        parse_line_neuron_id(&line[..line.len().min(ID_PREFIX_BYTES)])
            .and_then(|id| order.get(&id).copied())
    };
    let read_lines = |path: &Path| -> Result<Vec<Vec<u8>>, RunError> {
        let mut reader = io::BufReader::new(File::open(path).map_err(|e| at(path, e))?);
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| at(path, e))?;
            if read == 0 {
                return Ok(lines);
            }
            lines.push(line);
        }
    };
    // The retried neurons are few: held in memory; the done file is streamed.
    let mut pending = read_lines(retried)?.into_iter().peekable();
    let merged = done.with_extension("jsonl.merging");
    let mut writer = io::BufWriter::new(File::create(&merged).map_err(|e| at(&merged, e))?);
    let mut reader = io::BufReader::new(File::open(done).map_err(|e| at(done, e))?);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .map_err(|e| at(done, e))?
            == 0
        {
            break;
        }
        if let Some(here) = place(&line) {
            while let Some(next) = pending.next_if(|next| place(next).is_some_and(|at| at < here)) {
                writer.write_all(&next).map_err(|e| at(&merged, e))?;
            }
        }
        writer.write_all(&line).map_err(|e| at(&merged, e))?;
    }
    for next in pending {
        writer.write_all(&next).map_err(|e| at(&merged, e))?;
    }
    writer.flush().map_err(|e| at(&merged, e))?;
    drop(writer);
    fs::rename(&merged, done).map_err(|e| at(done, e))?;
    fs::remove_file(retried).map_err(|e| at(retried, e))
}

/// Opens the JSONL target, resuming a partial file: returns it, the position in `selection`
/// to continue from, and the failures recorded for the neurons before that position (the
/// lines of [`JSONL_FAILED`] that are kept).
fn prepare_jsonl(
    dir: &Path,
    done: PathBuf,
    selection: &[(u32, u32)],
) -> Result<(Target, usize, Vec<String>), RunError> {
    let partial = dir.join(JSONL_PARTIAL);
    let failed = dir.join(JSONL_FAILED);
    let (file, last) = open_jsonl(&partial)?;
    let resume_at = match last {
        None => 0,
        Some(id) => match selection.iter().position(|&n| n == id) {
            Some(position) => position + 1,
            None => {
                return Err(RunError::ExportResume {
                    path: partial,
                    reason: format!(
                        "its last neuron, {}/{}, is not among the neurons selected; rerun with \
                         the same selection, or delete the file to start over",
                        id.0, id.1
                    ),
                });
            }
        },
    };
    let failed_before = keep_failures(&failed, &selection[..resume_at])?;
    let target = Target::Jsonl {
        file,
        partial,
        done,
        failed,
        merge_into_order: None,
    };
    Ok((target, resume_at, failed_before))
}

/// Keeps the lines of the failure list `path` (`L/N: error`) that name one of `before` (the
/// neurons a resumed export does not fetch again) and returns them; removes the list when
/// none is left.
fn keep_failures(path: &Path, before: &[(u32, u32)]) -> Result<Vec<String>, RunError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(at(path, error)),
    };
    let mut before: HashSet<(u32, u32)> = if text.is_empty() {
        HashSet::new()
    } else {
        before.iter().copied().collect()
    };
    let kept: Vec<String> = text
        .lines()
        // Removing keeps one line per neuron.
        .filter(|line| failure_neuron(line).is_some_and(|id| before.remove(&id)))
        .map(str::to_owned)
        .collect();
    if kept.is_empty() {
        fs::remove_file(path).map_err(|e| at(path, e))?;
    } else {
        let mut text = kept.join("\n");
        text.push('\n');
        fs::write(path, text).map_err(|e| at(path, e))?;
    }
    Ok(kept)
}

/// The neuron of a line of the failure list: `L/N: error`.
fn failure_neuron(line: &str) -> Option<(u32, u32)> {
    let (id, _) = line.split_once(": ")?;
    let (layer, neuron) = id.split_once('/')?;
    Some((layer.parse().ok()?, neuron.parse().ok()?))
}

/// The neurons to export, layer by layer, neurons ascending.
async fn select(
    client: &ActivationsClient,
    options: &Options,
) -> Result<Vec<(u32, u32)>, RunError> {
    let selection = select_all(client, options).await?;
    let Some((index, count)) = options.shard else {
        return Ok(selection);
    };
    // The SDK's rule, so a job sharded through the SDK and one through the CLI agree.
    let ids = selection
        .into_iter()
        .map(|(layer, neuron)| activations_client::neuron_id(layer, neuron))
        .collect();
    let part = Selection::Neurons(ids)
        .shard(index, count)
        .expect("--shard's parser keeps the part below the count");
    let Selection::Neurons(part) = part else {
        unreachable!("a list is cut into lists")
    };
    Ok(part
        .into_iter()
        .map(|id| (id.layer_index, id.neuron_index))
        .collect())
}

/// Every neuron the options select, in order.
async fn select_all(
    client: &ActivationsClient,
    options: &Options,
) -> Result<Vec<(u32, u32)>, RunError> {
    let layers = options.layers.clone();
    if let Some(neurons) = &options.neurons {
        return Ok(layers
            .flat_map(|layer| neurons.clone().map(move |neuron| (layer, neuron)))
            .collect());
    }
    let mut selection = Vec::new();
    let served = client.sorted_layers().await?;
    for &layer in &served {
        if layers.contains(&layer) {
            let neurons: Vec<u32> = client
                .neuron_indices_paged(layer, LIST_PAGE_SIZE)
                .try_collect()
                .await?;
            selection.extend(neurons.into_iter().map(|neuron| (layer, neuron)));
        }
    }
    if selection.is_empty() {
        return Err(RunError::NothingSelected {
            layers: format!("{}..{}", layers.start, layers.end),
            served: summarize_layers(&served),
        });
    }
    Ok(selection)
}

/// `0..48` for consecutive layers, else the list, cut after 20.
fn summarize_layers(layers: &[u32]) -> String {
    match (layers.first(), layers.last()) {
        (None, _) | (_, None) => "none".to_string(),
        (Some(&first), Some(&last)) if (last - first) as usize + 1 == layers.len() => {
            format!("{first}..{}", u64::from(last) + 1)
        }
        _ => {
            let shown: Vec<String> = layers.iter().take(20).map(u32::to_string).collect();
            let more = if layers.len() > 20 { ", ..." } else { "" };
            format!("{}{more}", shown.join(", "))
        }
    }
}

/// [`export`]s `todo` into `target` showing `progress`, ends the display and completes the
/// target; returns the counts.
async fn export_showing_progress(
    client: &ActivationsClient,
    todo: &[(u32, u32)],
    concurrency: usize,
    mut target: Target,
    mut progress: Progress<'_>,
) -> Result<Counts, RunError> {
    let outcome = export(client, todo, concurrency, &mut target, &mut progress).await;
    progress.finish(outcome.is_ok());
    outcome?;
    target.finish()?;
    Ok(progress.counts)
}

/// Fetches `todo` with up to `concurrency` requests in flight and writes each record, in order.
async fn export(
    client: &ActivationsClient,
    todo: &[(u32, u32)],
    concurrency: usize,
    target: &mut Target,
    progress: &mut Progress<'_>,
) -> Result<(), RunError> {
    let mut fetched = stream::iter(todo.iter().copied())
        .map(|(layer, neuron)| {
            let client = client.clone();
            async move { (layer, neuron, client.load_neuron(layer, neuron).await) }
        })
        .buffered(concurrency.max(1));
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + PROGRESS_INTERVAL,
        PROGRESS_INTERVAL,
    );
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            item = fetched.next() => match item {
                None => return Ok(()),
                Some((layer, neuron, Ok(record))) => match target.refuse(layer, neuron, &record) {
                    Some(reason) => {
                        target.record_failure(layer, neuron, &reason)?;
                        progress.failed(layer, neuron, &reason);
                    }
                    None => {
                        target.write(layer, neuron, &record)?;
                        progress.exported();
                    }
                },
                Some((layer, neuron, Err(error))) if is_neuron_failure(&error) => {
                    target.record_failure(layer, neuron, &error)?;
                    progress.failed(layer, neuron, &error);
                }
                Some((layer, neuron, Err(source))) => {
                    return Err(RunError::ExportStopped { layer, neuron, source });
                }
            },
            _ = ticks.tick() => progress.tick(),
        }
    }
}

/// Whether `error` is about the neuron itself (missing, corrupt, too small for the request),
/// so the export reports it and goes on. Errors that would fail every neuron alike (an
/// unknown dataset, refused storage credentials) and transport errors stop the export.
fn is_neuron_failure(error: &Error) -> bool {
    let dataset_wide = matches!(
        error.status().and_then(|status| status.reason()),
        Some("UNKNOWN_DATASET" | "STORAGE_ACCESS_DENIED" | "DATASET_SHAPE_UNKNOWN")
    );
    !dataset_wide
        && matches!(
            error.code(),
            Some(Code::NotFound | Code::FailedPrecondition | Code::DataLoss)
        )
}

/// `DIR/{layer}/{neuron}.json`, the public (flat) layout.
fn neuron_path(dir: &Path, layer: u32, neuron: u32) -> PathBuf {
    dir.join(layer.to_string()).join(format!("{neuron}.json"))
}

/// An I/O error that names the file it concerns.
fn at(path: &Path, error: io::Error) -> RunError {
    RunError::Output(io::Error::new(
        error.kind(),
        format!("{}: {error}", path.display()),
    ))
}

/// Where records go.
#[derive(Debug)]
enum Target {
    /// One file per neuron below this directory.
    Files(PathBuf),
    /// One line per neuron, appended to `file` (at `partial`), renamed to `done` at the end;
    /// the neurons left out are listed in `failed`. A rerun that retries failed neurons merges
    /// `partial` into `done` instead, each line at its neuron's place in `merge_into_order`.
    Jsonl {
        file: File,
        partial: PathBuf,
        done: PathBuf,
        failed: PathBuf,
        merge_into_order: Option<HashMap<(u32, u32), usize>>,
    },
}

impl Target {
    /// Why `record`, served for `layer`/`neuron`, cannot be written, if it cannot.
    ///
    /// A JSONL line is known by the `neuron_id` it holds (a rerun resumes after the neuron
    /// its last line names), so a record whose `neuron_id` is not the neuron asked for is left
    /// out there. A file is known by its path and is written as served.
    fn refuse(&self, layer: u32, neuron: u32, record: &pb::NeuronRecord) -> Option<String> {
        if let Target::Files(_) = self {
            return None;
        }
        let says = match &record.neuron_id {
            Some(id) if (id.layer_index, id.neuron_index) == (layer, neuron) => return None,
            Some(id) => format!("neuron {}/{}", id.layer_index, id.neuron_index),
            None => "no neuron".to_owned(),
        };
        Some(format!(
            "the record served names {says} in its neuron_id; left out of {JSONL_FILE}, whose \
             lines are known by their neuron_id"
        ))
    }

    fn write(
        &mut self,
        layer: u32,
        neuron: u32,
        record: &pb::NeuronRecord,
    ) -> Result<(), RunError> {
        let mut bytes = write_neuron_record(record);
        match self {
            Target::Files(dir) => {
                let path = neuron_path(dir, layer, neuron);
                let partial = path.with_extension("json.partial");
                if let Some(layer_dir) = path.parent() {
                    fs::create_dir_all(layer_dir).map_err(|e| at(layer_dir, e))?;
                }
                fs::write(&partial, bytes).map_err(|e| at(&partial, e))?;
                fs::rename(&partial, &path).map_err(|e| at(&path, e))
            }
            Target::Jsonl { file, partial, .. } => {
                bytes.push('\n');
                file.write_all(bytes.as_bytes()).map_err(|e| at(partial, e))
            }
        }
    }

    /// Notes a neuron left out of the JSONL file in its failure list: a resumed export does not
    /// fetch the neurons before its resume point again, and learns of their failures there.
    fn record_failure(
        &mut self,
        layer: u32,
        neuron: u32,
        error: &dyn std::fmt::Display,
    ) -> Result<(), RunError> {
        let Target::Jsonl { failed, .. } = self else {
            return Ok(());
        };
        let line = format!("{layer}/{neuron}: {error}").replace(['\n', '\r'], " ");
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&failed)
            .and_then(|mut file| writeln!(file, "{line}"))
            .map_err(|e| at(failed, e))
    }

    /// Completes the export: renames the JSONL file to its final name.
    fn finish(self) -> Result<(), RunError> {
        match self {
            Target::Files(_) => Ok(()),
            Target::Jsonl {
                file,
                partial,
                done,
                merge_into_order,
                ..
            } => {
                drop(file);
                match merge_into_order {
                    Some(order) => merge_jsonl(&done, &partial, &order),
                    None => fs::rename(&partial, &done).map_err(|e| at(&done, e)),
                }
            }
        }
    }
}

/// Opens (or creates) the partial JSONL file for appending, after dropping a trailing
/// incomplete line; returns it with the neuron of its last complete line, if any.
fn open_jsonl(path: &Path) -> Result<(File, Option<(u32, u32)>), RunError> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| at(path, e))?;
    let last = resume_point(&mut file).map_err(|e| at(path, e))?;
    Ok((file, last))
}

/// Truncates `file` after its last newline and reads the neuron id at the start of its last
/// complete line. Reads only the end of the file, however long it is.
fn resume_point(file: &mut File) -> io::Result<Option<(u32, u32)>> {
    let len = file.metadata()?.len();
    let complete = complete_len(file, len)?;
    if complete < len {
        file.set_len(complete)?;
    }
    if complete == 0 {
        return Ok(None);
    }
    let prefix = last_line_prefix(file, complete, ID_PREFIX_BYTES)?;
    match parse_line_neuron_id(&prefix) {
        Some(id) => Ok(Some(id)),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "cannot resume: its last line does not start with a neuron record's neuron_id; \
             delete the file to start over",
        )),
    }
}

/// The length of the complete lines among the first `len` bytes: up to and including the last
/// `\n`, 0 when there is none.
fn complete_len(reader: &mut (impl Read + Seek), len: u64) -> io::Result<u64> {
    Ok(rfind_newline(reader, len)?.map_or(0, |newline| newline + 1))
}

/// The first `max` bytes (at most) of the last line of `reader[..complete]`, which ends with
/// `\n` (not included).
fn last_line_prefix(
    reader: &mut (impl Read + Seek),
    complete: u64,
    max: usize,
) -> io::Result<Vec<u8>> {
    let line_end = complete - 1;
    let start = rfind_newline(reader, line_end)?.map_or(0, |newline| newline + 1);
    let take = (line_end - start).min(max as u64);
    let mut prefix = vec![0; take as usize];
    reader.seek(SeekFrom::Start(start))?;
    reader.read_exact(&mut prefix)?;
    Ok(prefix)
}

/// The offset of the last `\n` before `end`, scanning backwards in chunks.
fn rfind_newline(reader: &mut (impl Read + Seek), end: u64) -> io::Result<Option<u64>> {
    let mut chunk = vec![0; SCAN_CHUNK];
    let mut end = end;
    while end > 0 {
        let start = end.saturating_sub(SCAN_CHUNK as u64);
        let chunk = &mut chunk[..(end - start) as usize];
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(chunk)?;
        if let Some(at) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + at as u64));
        }
        end = start;
    }
    Ok(None)
}

/// The `(layer, neuron)` of a neuron record line from the start of the line alone:
/// `{"dataclass_name": "NeuronRecord", "neuron_id": {"dataclass_name": "NeuronId",
/// "layer_index": L, "neuron_index": N}, ...`. Whitespace, a missing `dataclass_name` and the
/// order of the id's keys may vary; `neuron_id` must come before the record's other fields, as
/// the writer puts it. `None` when the prefix is not that.
fn parse_line_neuron_id(prefix: &[u8]) -> Option<(u32, u32)> {
    let mut json = Prefix { bytes: prefix };
    json.eat(b'{')?;
    loop {
        let key = json.string()?;
        json.eat(b':')?;
        match key {
            b"neuron_id" => return json.neuron_id(),
            b"dataclass_name" => {
                json.string()?;
            }
            _ => return None,
        }
        json.eat(b',')?;
    }
}

/// Just enough of a JSON reader for [`parse_line_neuron_id`].
struct Prefix<'a> {
    bytes: &'a [u8],
}

impl<'a> Prefix<'a> {
    fn skip_whitespace(&mut self) {
        let skip = self
            .bytes
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .count();
        self.bytes = &self.bytes[skip..];
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.first().copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.bytes = &self.bytes[1..])
    }

    /// A string's raw contents (escapes left as they are).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let mut i = 0;
        loop {
            match *self.bytes.get(i)? {
                b'"' => break,
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        let contents = &self.bytes[..i];
        self.bytes = &self.bytes[i + 1..];
        Some(contents)
    }

    fn index(&mut self) -> Option<u32> {
        self.skip_whitespace();
        let digits = self.bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        // A number cut off by the end of the prefix could be longer: not an answer.
        if digits == 0 || digits == self.bytes.len() {
            return None;
        }
        let value = std::str::from_utf8(&self.bytes[..digits])
            .ok()?
            .parse()
            .ok()?;
        self.bytes = &self.bytes[digits..];
        // `1.0` or `1e3` are not what the writer writes.
        (!matches!(self.bytes[0], b'.' | b'e' | b'E')).then_some(value)
    }

    /// `{"dataclass_name": "NeuronId", "layer_index": L, "neuron_index": N}`, keys in any order.
    fn neuron_id(&mut self) -> Option<(u32, u32)> {
        self.eat(b'{')?;
        let (mut layer, mut neuron) = (None, None);
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            match key {
                b"layer_index" => layer = Some(self.index()?),
                b"neuron_index" => neuron = Some(self.index()?),
                b"dataclass_name" => {
                    if self.string()? != b"NeuronId" {
                        return None;
                    }
                }
                _ => return None,
            }
            if self.eat(b'}').is_some() {
                return Some((layer?, neuron?));
            }
            self.eat(b',')?;
        }
    }
}

/// How far an export is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    /// Neurons selected.
    selected: u64,
    /// Neurons not fetched because an earlier run exported them.
    skipped: u64,
    /// Neurons not fetched because they failed in an earlier run (JSONL only).
    failed_before: u64,
    /// Neurons written by this run.
    exported: u64,
    /// Neurons that failed in this run.
    failed: u64,
}

impl Counts {
    fn failed_in_all(&self) -> u64 {
        self.failed_before + self.failed
    }

    fn done(&self) -> u64 {
        self.skipped + self.failed_before + self.exported + self.failed
    }
}

/// Counts and shows progress: a bar when stderr is a terminal, else a line every
/// [`PROGRESS_INTERVAL`] and one at the end. Failed neurons are reported through it too.
struct Progress<'a> {
    view: View<'a>,
    counts: Counts,
    started: Instant,
}

enum View<'a> {
    Bar(ProgressBar),
    Lines(Box<dyn Write + 'a>),
}

impl<'a> Progress<'a> {
    /// Starts with `counts` (what earlier runs did), reporting the `failed_before` neurons.
    fn start(diagnostics: Diagnostics<'a>, counts: Counts, failed_before: &[String]) -> Self {
        let view = match diagnostics {
            Diagnostics::Stderr if io::stderr().is_terminal() => View::Bar(progress_bar(&counts)),
            Diagnostics::Stderr => View::Lines(Box::new(io::stderr())),
            Diagnostics::Writer(writer) => View::Lines(Box::new(writer)),
        };
        let mut progress = Progress {
            view,
            counts,
            started: Instant::now(),
        };
        for failure in failed_before {
            progress.report(format!("neuron {failure} (in an earlier run)"));
        }
        progress.update_bar();
        progress
    }

    fn exported(&mut self) {
        self.counts.exported += 1;
        if let View::Bar(bar) = &self.view {
            bar.inc(1);
        }
        self.update_bar();
    }

    fn failed(&mut self, layer: u32, neuron: u32, error: &dyn std::fmt::Display) {
        self.counts.failed += 1;
        self.report(format!("neuron {layer}/{neuron}: {error}"));
        if let View::Bar(bar) = &self.view {
            bar.inc(1);
        }
        self.update_bar();
    }

    /// Writes one line about a neuron.
    fn report(&mut self, line: String) {
        match &mut self.view {
            View::Bar(bar) => bar.println(line),
            // Nothing sensible is left to do if stderr is gone.
            View::Lines(out) => drop(writeln!(out, "{line}")),
        }
    }

    fn tick(&mut self) {
        if let View::Lines(_) = self.view {
            self.write_line();
        }
    }

    /// Ends the display. The bar is replaced by its last frame as a plain line, ending in a
    /// newline, so that what follows (the summary, an error) starts a line of its own: a
    /// finished bar leaves the cursor at the end of its padded line. Without a terminal, the
    /// summary that follows says it all; an export that stopped gets its last progress line.
    fn finish(&mut self, complete: bool) {
        let line = progress_line(&self.counts, self.started.elapsed());
        match &mut self.view {
            View::Bar(bar) => {
                bar.finish_and_clear();
                drop(writeln!(io::stderr(), "{line}"));
            }
            View::Lines(out) if !complete => drop(writeln!(out, "{line}")),
            View::Lines(_) => {}
        }
    }

    fn update_bar(&self) {
        if let View::Bar(bar) = &self.view {
            bar.set_message(bar_message(&self.counts));
        }
    }

    /// See [`progress_line`].
    fn write_line(&mut self) {
        let line = progress_line(&self.counts, self.started.elapsed());
        if let View::Lines(out) = &mut self.view {
            drop(writeln!(out, "{line}"));
        }
    }
}

/// The bar's counts: `98 exported, 2 failed, 0 skipped`, so that its frames and the summary
/// agree on what was exported.
fn bar_message(counts: &Counts) -> String {
    format!(
        "{} exported, {} failed, {} skipped",
        counts.exported,
        counts.failed_in_all(),
        counts.skipped
    )
}

fn progress_bar(counts: &Counts) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{wide_bar} {human_pos}/{human_len} neurons ({msg}; {per_sec:1}), ETA {eta}",
    )
    .expect("a valid progress template");
    let bar = ProgressBar::with_draw_target(Some(counts.selected), ProgressDrawTarget::stderr())
        .with_style(style)
        // The counts are in the first frame already.
        .with_message(bar_message(counts));
    // Start at what earlier runs did without counting it into the rate: record the jump, then
    // forget the rate it implies.
    bar.set_position(counts.done());
    bar.tick();
    bar.reset_eta();
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// One progress line: neurons done (skipped, exported or failed) of those selected, the rate
/// of this run and the time left at that rate:
/// `done 1200/307200 neurons (1198 exported, 2 failed, 0 skipped; 35.2/s), ETA 2h25m`.
fn progress_line(counts: &Counts, elapsed: Duration) -> String {
    let fetched = counts.exported + counts.failed;
    let (done, selected) = (counts.done(), counts.selected);
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        fetched as f64 / seconds
    } else {
        0.0
    };
    let left = selected.saturating_sub(done);
    let eta = if left == 0 {
        "0s".to_owned()
    } else if rate > 0.0 {
        human_duration(Duration::from_secs_f64(left as f64 / rate))
    } else {
        "unknown".to_owned()
    };
    format!(
        "done {done}/{selected} neurons ({}; {rate:.1}/s), ETA {eta}",
        bar_message(counts)
    )
}

/// `2h25m` (to the nearest minute), `3m07s`, `42s`.
fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64().round() as u64;
    if seconds >= 3600 {
        let minutes = (seconds + 30) / 60;
        format!("{}h{:02}m", minutes / 60, minutes % 60)
    } else if seconds >= 60 {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use activations_client::neuron_id;

    #[test]
    fn ranges_are_end_exclusive_or_a_single_index() {
        assert_eq!(parse_range("0..48"), Ok(0..48));
        assert_eq!(parse_range("5"), Ok(5..6));
        assert_eq!(parse_range("3..=5"), Ok(3..6));
        assert_eq!(parse_range("7..8"), Ok(7..8));
        assert_eq!(parse_range("0"), Ok(0..1));
        assert_eq!(parse_range("4294967294"), Ok(u32::MAX - 1..u32::MAX));
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        let error = |text| parse_range(text).unwrap_err();
        assert_eq!(
            error("5..3"),
            "5..3 is empty: the end is exclusive and must be greater than the start"
        );
        assert!(error("5..5").contains("is empty"));
        assert_eq!(
            error("a..b"),
            r#""a" is not an index (a non-negative integer)"#
        );
        assert_eq!(
            error("1..b"),
            r#""b" is not an index (a non-negative integer)"#
        );
        assert!(
            error("..4").starts_with("the range has no start: write START..END"),
            "{}",
            error("..4")
        );
        assert!(error("4..").starts_with("the range has no end"));
        assert!(error("").starts_with("the range has no index"));
        assert!(error("-1..3").contains(r#""-1" is not an index"#));
        assert!(error("+1").contains("is not an index"));
        assert!(error("1..2..3").contains(r#""2..3" is not an index"#));
        assert!(error(" 1..3").contains("is not an index"));
        assert_eq!(
            error("4294967296"),
            "4294967296 is too large (at most 4294967295)"
        );
        assert!(error("4294967295").contains("too large"));
        assert!(error("0..=4294967295").contains("too large"));
    }

    fn written_line(layer: u32, neuron: u32) -> String {
        let record = pb::NeuronRecord {
            neuron_id: Some(neuron_id(layer, neuron)),
            ..Default::default()
        };
        write_neuron_record(&record)
    }

    #[test]
    fn the_neuron_id_is_read_from_the_writers_prefix() {
        let line = written_line(12, 6399);
        assert!(line.starts_with(
            r#"{"dataclass_name": "NeuronRecord", "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 12, "neuron_index": 6399}, "#
        ));
        assert_eq!(parse_line_neuron_id(line.as_bytes()), Some((12, 6399)));
        // Only the prefix is needed.
        assert_eq!(
            parse_line_neuron_id(&line.as_bytes()[..120]),
            Some((12, 6399))
        );
        assert_eq!(
            parse_line_neuron_id(written_line(0, 0).as_bytes()),
            Some((0, 0))
        );
        assert_eq!(
            parse_line_neuron_id(written_line(u32::MAX, u32::MAX).as_bytes()),
            Some((u32::MAX, u32::MAX))
        );
    }

    #[test]
    fn the_neuron_id_prefix_is_parsed_robustly() {
        let parse = |text: &str| parse_line_neuron_id(text.as_bytes());
        // Other spacing, key order and no dataclass names.
        assert_eq!(
            parse(r#" { "neuron_id" :{"neuron_index":3,"layer_index":47} ,"random_sample": []}"#),
            Some((47, 3))
        );
        assert_eq!(
            parse(r#"{"neuron_id": {"layer_index": 1, "neuron_index": 2}}"#),
            Some((1, 2))
        );
        // Escapes in a skipped string.
        assert_eq!(
            parse(
                r#"{"dataclass_name": "Neuron\"Record", "neuron_id": {"layer_index": 1, "neuron_index": 2}}"#
            ),
            Some((1, 2))
        );
        for bad in [
            "",
            "{",
            "[]",
            "not json",
            r#"{"neuron_id": null}"#,
            r#"{"random_sample": [], "neuron_id": {"layer_index": 1, "neuron_index": 2}}"#,
            r#"{"neuron_id": {"layer_index": 1}}"#,
            r#"{"neuron_id": {"layer_index": -1, "neuron_index": 2}}"#,
            r#"{"neuron_id": {"layer_index": 1.0, "neuron_index": 2}}"#,
            r#"{"neuron_id": {"layer_index": 1e2, "neuron_index": 2}}"#,
            r#"{"neuron_id": {"layer_index": 4294967296, "neuron_index": 2}}"#,
            r#"{"neuron_id": {"layer_index": "1", "neuron_index": 2}}"#,
            r#"{"neuron_id": {"dataclass_name": "Other", "layer_index": 1, "neuron_index": 2}}"#,
            r#"{"neuron_id": {"layer_index": 1, "neuron_index": 2, "extra": 3}}"#,
            // Cut off inside the id, even where the number might be complete.
            r#"{"neuron_id": {"layer_index": 1, "neuron_index": 23"#,
            r#"{"neuron_id": {"layer_index": 1, "neuron_index": 2"#,
            r#"{"neuron_id": {"layer_index": 1, "neu"#,
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn complete_lines_end_at_the_last_newline() {
        let check = |text: &str, expected: u64| {
            let mut reader = Cursor::new(text.as_bytes());
            assert_eq!(
                complete_len(&mut reader, text.len() as u64).unwrap(),
                expected,
                "{text:?}"
            );
        };
        check("", 0);
        check("half a li", 0);
        check("one\n", 4);
        check("one\ntwo\nthr", 8);
        check("one\ntwo\n", 8);
        check("\n", 1);
    }

    #[test]
    fn scans_span_chunks() {
        // Newlines further back than one chunk, and a last line longer than a chunk.
        let long = "x".repeat(SCAN_CHUNK * 2 + 17);
        let text = format!("a\n{long}\n{long}");
        let mut reader = Cursor::new(text.as_bytes());
        let complete = complete_len(&mut reader, text.len() as u64).unwrap();
        assert_eq!(complete, 2 + long.len() as u64 + 1);
        let prefix = last_line_prefix(&mut reader, complete, 10).unwrap();
        assert_eq!(prefix, b"xxxxxxxxxx");
        let prefix = last_line_prefix(&mut reader, 2, 10).unwrap();
        assert_eq!(prefix, b"a");
        // A line shorter than `max` is read whole, without its newline.
        let mut reader = Cursor::new(&b"first\nsecond\n"[..]);
        assert_eq!(last_line_prefix(&mut reader, 13, 100).unwrap(), b"second");
        assert_eq!(last_line_prefix(&mut reader, 6, 100).unwrap(), b"first");
    }

    #[test]
    fn a_partial_jsonl_file_is_truncated_to_its_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JSONL_PARTIAL);
        let (first, second) = (written_line(3, 4), written_line(3, 5));
        let whole = format!("{first}\n{second}\n");
        std::fs::write(&path, format!("{whole}{}", &first[..150])).unwrap();

        let (mut file, last) = open_jsonl(&path).unwrap();
        assert_eq!(last, Some((3, 5)));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
        // Writes append after the kept lines.
        file.write_all(b"next\n").unwrap();
        drop(file);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{whole}next\n")
        );
    }

    #[test]
    fn a_partial_jsonl_file_without_a_complete_line_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JSONL_PARTIAL);
        std::fs::write(&path, &written_line(3, 4)[..50]).unwrap();
        let (_, last) = open_jsonl(&path).unwrap();
        assert_eq!(last, None);
        assert_eq!(std::fs::read(&path).unwrap(), b"");

        // A missing file is created.
        let fresh = dir.path().join("fresh.partial");
        assert_eq!(open_jsonl(&fresh).unwrap().1, None);
        assert!(fresh.exists());
    }

    #[test]
    fn a_partial_jsonl_file_of_something_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JSONL_PARTIAL);
        std::fs::write(&path, "hello\nworld\n").unwrap();
        let error = open_jsonl(&path).unwrap_err().to_string();
        assert!(
            error.contains("last line does not start with a neuron record"),
            "{error}"
        );
        // Left as it was.
        assert_eq!(std::fs::read(&path).unwrap(), b"hello\nworld\n");
    }

    #[test]
    fn failure_lists_keep_the_neurons_before_the_resume_point() {
        assert_eq!(failure_neuron("0/2: DATA_LOSS: bad: worse"), Some((0, 2)));
        assert_eq!(failure_neuron("12/6399: x"), Some((12, 6399)));
        assert_eq!(failure_neuron("0/2 DATA_LOSS"), None);
        assert_eq!(failure_neuron("a/2: x"), None);
        assert_eq!(failure_neuron(""), None);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JSONL_FAILED);
        assert_eq!(
            keep_failures(&path, &[(0, 1)]).unwrap(),
            Vec::<String>::new()
        );
        std::fs::write(
            &path,
            "0/1: gone\n0/1: gone again\ngarbage\n3/4: later\n0/9: x\n",
        )
        .unwrap();
        let kept = keep_failures(&path, &[(0, 0), (0, 1), (0, 9)]).unwrap();
        assert_eq!(kept, ["0/1: gone", "0/9: x"]);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "0/1: gone\n0/9: x\n"
        );
        // None left: the list goes.
        assert!(keep_failures(&path, &[]).unwrap().is_empty());
        assert!(!path.exists());
    }

    #[test]
    fn progress_lines_show_done_rate_and_eta() {
        let counts = |skipped, failed_before, exported, failed| Counts {
            selected: 10,
            skipped,
            failed_before,
            exported,
            failed,
        };
        let big = Counts {
            selected: 307_200,
            exported: 1198,
            failed: 2,
            ..Counts::default()
        };
        assert_eq!(
            progress_line(&big, Duration::from_secs_f64(1200.0 / 35.2)),
            "done 1200/307200 neurons (1198 exported, 2 failed, 0 skipped; 35.2/s), ETA 2h25m"
        );
        assert_eq!(
            progress_line(&counts(4, 0, 6, 0), Duration::from_secs(2)),
            "done 10/10 neurons (6 exported, 0 failed, 4 skipped; 3.0/s), ETA 0s"
        );
        assert_eq!(
            progress_line(&counts(0, 0, 0, 0), Duration::ZERO),
            "done 0/10 neurons (0 exported, 0 failed, 0 skipped; 0.0/s), ETA unknown"
        );
        // Failures of an earlier run count as done and failed, not into the rate.
        assert_eq!(
            progress_line(&counts(3, 2, 1, 1), Duration::from_secs(1)),
            "done 7/10 neurons (1 exported, 3 failed, 3 skipped; 2.0/s), ETA 2s"
        );
        let slow = Counts {
            selected: 100,
            exported: 10,
            ..Counts::default()
        };
        assert_eq!(
            progress_line(&slow, Duration::from_secs(10)),
            "done 10/100 neurons (10 exported, 0 failed, 0 skipped; 1.0/s), ETA 1m30s"
        );
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(human_duration(Duration::from_secs(0)), "0s");
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_secs(187)), "3m07s");
        assert_eq!(
            human_duration(Duration::from_secs(2 * 3600 + 25 * 60 + 3)),
            "2h25m"
        );
        assert_eq!(human_duration(Duration::from_secs(30 * 3600)), "30h00m");
        assert_eq!(
            human_duration(Duration::from_secs(3600 + 59 * 60 + 31)),
            "2h00m"
        );
        assert_eq!(human_duration(Duration::from_secs(3599)), "59m59s");
        assert_eq!(human_duration(Duration::from_millis(59_600)), "1m00s");
    }

    #[test]
    fn only_errors_of_one_neuron_let_the_export_go_on() {
        use std::collections::HashMap;
        use tonic_types::{ErrorDetails, StatusExt};

        let with_reason = |code, reason: &str| {
            Error::from(tonic::Status::with_error_details(
                code,
                "message",
                ErrorDetails::with_error_info(
                    reason,
                    "activations.neuron-explainer",
                    HashMap::new(),
                ),
            ))
        };
        assert!(is_neuron_failure(&with_reason(
            Code::NotFound,
            "NEURON_NOT_FOUND"
        )));
        assert!(is_neuron_failure(&with_reason(
            Code::DataLoss,
            "CORRUPT_NEURON_FILE"
        )));
        assert!(is_neuron_failure(&with_reason(
            Code::FailedPrecondition,
            "NOT_ENOUGH_RECORDS"
        )));
        assert!(is_neuron_failure(&Error::from(tonic::Status::not_found(
            "x"
        ))));
        assert!(!is_neuron_failure(&with_reason(
            Code::NotFound,
            "UNKNOWN_DATASET"
        )));
        assert!(!is_neuron_failure(&with_reason(
            Code::FailedPrecondition,
            "STORAGE_ACCESS_DENIED"
        )));
        assert!(!is_neuron_failure(&with_reason(
            Code::Unavailable,
            "STORAGE_UNAVAILABLE"
        )));
        assert!(!is_neuron_failure(&Error::from(
            tonic::Status::unavailable("x")
        )));
        assert!(!is_neuron_failure(&Error::from(tonic::Status::internal(
            "x"
        ))));
    }
}
