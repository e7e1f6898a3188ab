//! The soak: the real release server, a dataset behind a flaky web store, hundreds of callers
//! for a bounded time, every answer checked, the server's process watched for leaks.
//!
//! - [`truth`]: the expected answers, from the dataset's files.
//! - [`workload`]: the callers and what they check.
//! - [`samples`]: the server's memory, descriptors and threads over time; its metrics.
//!
//! [`run`] returns a [`Report`]; [`Report::table`] is what `activations-soak` prints.

pub mod samples;
pub mod truth;
pub mod workload;

use activations_webstore::{FaultCounts, FaultyHttpServer, Network, splitmix};
use std::{
    fmt::Write as _,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use activations_client::{ActivationsClient, RetryPolicy};
use activations_format::shape::MANIFEST_FILE;
use activations_server::Ready;
use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::datagen::{DatasetSpec, write_dataset};
use samples::{LeakLimits, Sample, leak_violations, metric_by, mib, scrape};
use truth::Truth;
use workload::{Caller, Kind, Tally, hot_set};

/// Everything a soak run is given.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How long the callers run.
    pub duration: Duration,
    /// The `activations-server` binary.
    pub server_bin: PathBuf,
    /// The dataset's files, generated there (flat layout) unless a `manifest.json` is there.
    pub dataset_dir: PathBuf,
    pub layers: u32,
    pub neurons: u32,
    pub seed: u64,
    /// The server's `--cache-bytes`.
    pub cache_bytes: String,
    /// Concurrent callers.
    pub callers: usize,
    /// SDK clients (one HTTP/2 connection each) the callers share.
    pub connections: usize,
    /// Fraction of the store's requests that fail.
    pub fault_rate: f64,
    /// Longest injected delay.
    pub max_delay: Duration,
    /// The SDK's per-call deadline.
    pub call_timeout: Duration,
    /// Attempts of the SDK's retry policy.
    pub attempts: u32,
    /// Time between two samples of the server's process.
    pub sample_every: Duration,
    pub leak_limits: LeakLimits,
    /// The store's time to first byte, on every request.
    pub store_latency: Duration,
    /// Whether the server is stopped (SIGTERM) and started again halfway, on the same address.
    pub restart: bool,
}

/// What a run found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub duration: Duration,
    pub callers: usize,
    pub connections: usize,
    pub fault_rate: f64,
    pub cache_bytes: String,
    pub tally: Tally,
    pub faults: FaultCounts,
    pub samples: Vec<Sample>,
    /// Lines of the final metrics scrape worth reading.
    pub metrics: Vec<String>,
    /// WARN and ERROR lines the server logged (the first few), and how many in all.
    pub server_warnings: Vec<String>,
    pub server_warning_count: u64,
    pub store_latency: Duration,
    /// The restart halfway, if there was one.
    pub restart: Option<Restart>,
    /// Every rule the run broke; empty for a pass.
    pub violations: Vec<String>,
}

/// The server's restart in the middle of a soak.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Restart {
    /// When SIGTERM was sent, from the start of the run.
    pub at: Duration,
    /// From SIGTERM to the old process's exit (its drain).
    pub drained_in: Duration,
    /// From SIGTERM to the new process's ready line.
    pub back_in: Duration,
}

/// Runs the soak of `plan`; progress goes to stderr.
///
/// # Errors
///
/// The dataset cannot be generated or read, the server does not start, or a client cannot
/// connect: a soak that could not run, as opposed to one that found a fault.
pub async fn run(plan: &Plan) -> Result<Report, Box<dyn std::error::Error>> {
    prepare_dataset(plan)?;
    eprintln!(
        "computing the expected answers from {}",
        plan.dataset_dir.display()
    );
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let truth = Arc::new(Truth::load(
        &plan.dataset_dir,
        plan.layers,
        plan.neurons,
        threads,
    )?);
    let store = FaultyHttpServer::start_dir(&plan.dataset_dir)?;
    store.set_network(Network {
        first_byte: plan.store_latency,
        ..Network::default()
    });
    let mut server = Server::start(plan, &store.url(), "127.0.0.1:0").await?;
    eprintln!(
        "server pid {} at {}, metrics at {}, store {} failing {:.1}% of requests",
        server.pid,
        server.url,
        server.metrics,
        store.url(),
        plan.fault_rate * 100.0
    );
    store.set_fault_rate(plan.fault_rate, plan.seed, plan.max_delay);

    let mut clients = Vec::new();
    for _ in 0..plan.connections.max(1) {
        clients.push(
            ActivationsClient::builder()
                .endpoint(&server.url)
                .timeout(plan.call_timeout)
                .retry(RetryPolicy {
                    max_attempts: plan.attempts,
                    ..RetryPolicy::DEFAULT
                })
                .connect()
                .await?,
        );
    }
    let hot: Arc<[(u32, u32)]> = hot_set(&truth, !plan.seed).into();
    let started = Instant::now();
    let deadline = started + plan.duration;
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..plan.callers {
        let caller = Caller {
            client: clients[i % clients.len()].clone(),
            truth: truth.clone(),
            hot: hot.clone(),
            // A mixed starting point per caller: SplitMix64 states one increment apart would
            // give every caller the same draws, shifted by one.
            rng: splitmix(&mut (plan.seed ^ (i as u64) << 32)),
            tally: Tally::default(),
        };
        callers.spawn(caller.run(deadline));
    }

    let mut samples = Vec::new();
    let mut tally = Tally::default();
    let mut next_sample = started;
    let mut restart = None;
    let restart_at = started + plan.duration / 2;
    while !callers.is_empty() {
        tokio::select! {
            joined = callers.join_next() => {
                if let Some(result) = joined {
                    tally.merge(result?);
                }
            }
            () = tokio::time::sleep_until(restart_at.into()), if plan.restart && restart.is_none() => {
                let at = started.elapsed();
                let (next, drained_in) = server.restart(plan, &store.url()).await?;
                server = next;
                let back_in = started.elapsed() - at;
                eprintln!(
                    "{:>5.0}s  restarted the server: drained in {:.1}s, serving again (pid {}) \
                     {:.1}s after SIGTERM",
                    at.as_secs_f64(), drained_in.as_secs_f64(), server.pid, back_in.as_secs_f64()
                );
                restart = Some(Restart { at, drained_in, back_in });
            }
            () = tokio::time::sleep_until(next_sample.into()) => {
                next_sample += plan.sample_every;
                let Some(sample) = Sample::read(server.pid, started.elapsed()) else {
                    return Err("the server's process is gone".into());
                };
                let faults = store.counts();
                eprintln!(
                    "{:>5.0}s  RSS {:>6.1} MiB  fds {:>4}  threads {:>3}  store requests {:>7}  faults {:>5}",
                    sample.at.as_secs_f64(), mib(sample.rss), sample.fds, sample.threads,
                    faults.requests, faults.total()
                );
                samples.push(sample);
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(sample) = Sample::read(server.pid, elapsed) {
        samples.push(sample);
    }
    let faults = store.counts();

    let mut violations = Vec::new();
    if tally.wrong > 0 {
        violations.push(format!("{} wrong answers", tally.wrong));
    }
    if tally.lost > 0 {
        violations.push(format!("{} records or neurons lost", tally.lost));
    }
    if tally.duplicated > 0 {
        violations.push(format!(
            "{} records or neurons duplicated",
            tally.duplicated
        ));
    }
    if tally.disallowed_errors > 0 {
        violations.push(format!(
            "{} errors with a code other than UNAVAILABLE, RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED",
            tally.disallowed_errors
        ));
    }
    // Leaks are judged on the process that ran to the end, over its own lifetime.
    let (judged, lifetime) = match restart {
        Some(restart) => (
            samples
                .iter()
                .filter(|s| s.at >= restart.at + restart.back_in)
                .map(|s| Sample {
                    at: s.at - (restart.at + restart.back_in),
                    ..*s
                })
                .collect(),
            plan.duration.saturating_sub(restart.at + restart.back_in),
        ),
        None => (samples.clone(), plan.duration),
    };
    violations.extend(leak_violations(&judged, lifetime, &plan.leak_limits));
    // Every call ended on the client side: the server must see them all end too, abandoned
    // streams included, or it holds their slots (and their reads) forever.
    let (in_flight, metrics_text) = settle(&server.metrics).await;
    if in_flight != Some(0.0) {
        violations.push(format!(
            "{in_flight:?} calls still in flight on the server 15 s after the last caller stopped"
        ));
    }
    let (warnings, warning_count) = server.warnings();
    Ok(Report {
        duration: elapsed,
        callers: plan.callers,
        connections: plan.connections,
        fault_rate: plan.fault_rate,
        cache_bytes: plan.cache_bytes.clone(),
        tally,
        faults,
        samples,
        metrics: metric_lines(&metrics_text),
        server_warnings: warnings,
        server_warning_count: warning_count,
        store_latency: plan.store_latency,
        restart,
        violations,
    })
}

fn prepare_dataset(plan: &Plan) -> Result<(), Box<dyn std::error::Error>> {
    if plan.dataset_dir.join(MANIFEST_FILE).exists() {
        return Ok(());
    }
    eprintln!(
        "generating {} x {} neurons into {}",
        plan.layers,
        plan.neurons,
        plan.dataset_dir.display()
    );
    let spec = DatasetSpec {
        layers: plan.layers,
        neurons: plan.neurons,
        seed: plan.seed,
        layout: activations_format::layout::Layout::Flat,
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    write_dataset(&plan.dataset_dir, &spec, threads)?;
    Ok(())
}

/// Waits up to 15 s for the server's `activations_rpc_in_flight` to fall to 0; returns its
/// last value and the last scrape.
async fn settle(metrics: &str) -> (Option<f64>, String) {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let text = scrape(metrics).await.unwrap_or_default();
        let in_flight = metric_by(&text, "activations_rpc_in_flight", &[], "")
            .first()
            .map(|(_, v)| *v);
        if in_flight == Some(0.0) || Instant::now() >= until {
            return (in_flight, text);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The scrape's figures worth a line of the summary.
fn metric_lines(text: &str) -> Vec<String> {
    let service = "service=\"neuron_explainer.activations.v1.ActivationService\"";
    let mut lines = Vec::new();
    let mut add = |title: &str, metric: &str, labels: &[&str], by: &str| {
        let values = metric_by(text, metric, labels, by);
        if values.is_empty() {
            return;
        }
        let parts: Vec<String> = values
            .iter()
            .map(|(group, value)| format!("{} {value}", if group.is_empty() { "-" } else { group }))
            .collect();
        lines.push(format!("{title}: {}", parts.join(", ")));
    };
    add(
        "calls ended, by code",
        "activations_rpc_requests_total",
        &[service],
        "code",
    );
    add(
        "storage reads, by operation",
        "activations_storage_reads_total",
        &[],
        "operation",
    );
    add(
        "storage HTTP requests, by status",
        "activations_storage_http_requests_total",
        &[],
        "status",
    );
    add(
        "storage reads failed after retries, by kind",
        "activations_storage_read_errors_total",
        &[],
        "kind",
    );
    add("cache hits", "activations_cache_hits_total", &[], "");
    add("cache misses", "activations_cache_misses_total", &[], "");
    add("cache entries", "activations_cache_entries", &[], "");
    add(
        "cache weighted bytes",
        "activations_cache_weighted_bytes",
        &[],
        "",
    );
    add(
        "cache capacity bytes",
        "activations_cache_capacity_bytes",
        &[],
        "",
    );
    lines
}

/// The `activations-server` process; killed when dropped.
struct Server {
    child: Child,
    pid: u32,
    url: String,
    metrics: String,
    warnings: Arc<Mutex<(Vec<String>, u64)>>,
}

impl Server {
    /// Starts the server on `listen` (`127.0.0.1:0` for any free port).
    async fn start(
        plan: &Plan,
        store_url: &str,
        listen: &str,
    ) -> Result<Server, Box<dyn std::error::Error>> {
        let dataset = format!(
            "soak={store_url}/?layers={}&neurons={}&layout=flat",
            plan.layers, plan.neurons
        );
        let mut child = Command::new(&plan.server_bin)
            .args(["--listen", listen, "--metrics-listen", "127.0.0.1:0"])
            // A restart drains for at most this long; streams still running then are ended
            // UNAVAILABLE, and their callers resume them on the next server.
            .args(["--shutdown-grace", "5s"])
            .args(["--log", "info", "--dataset", &dataset])
            .args(["--cache-bytes", &plan.cache_bytes])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", plan.server_bin.display()))?;
        let pid = child.id().ok_or("the server exited at once")?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut ready_lines = BufReader::new(stdout).lines();
        let started = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = ready_lines.next_line().await? {
                if let Some(ready) = Ready::parse(&line) {
                    return Ok(Some(ready));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let ready = match started {
            Ok(Ok(Some(ready))) => ready,
            Ok(Ok(None)) => return Err("the server exited before listening".into()),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err("the server did not listen within 60 s".into()),
        };
        let metrics = ready
            .metrics_address
            .ok_or("the server reports no metrics address")?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        // Keep draining the log (a full pipe would block the server), keeping the warnings.
        let warnings = Arc::new(Mutex::new((Vec::new(), 0)));
        let kept = warnings.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("WARN") || line.contains("ERROR") {
                    let mut kept = kept.lock().expect("warnings lock");
                    kept.1 += 1;
                    if kept.0.len() < 5 {
                        kept.0.push(line);
                    }
                }
            }
        });
        Ok(Server {
            child,
            pid,
            url: format!("http://{}", ready.address),
            metrics: metrics.to_string(),
            warnings,
        })
    }

    fn warnings(&self) -> (Vec<String>, u64) {
        self.warnings.lock().expect("warnings lock").clone()
    }

    /// Stops this server as an orchestrator does (SIGTERM, then waiting for it to drain and
    /// exit) and starts another on the same address; the new one and how long the drain took.
    async fn restart(
        mut self,
        plan: &Plan,
        store_url: &str,
    ) -> Result<(Server, Duration), Box<dyn std::error::Error>> {
        let address = self.url.trim_start_matches("http://").to_string();
        let stopping = Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        if !sent.success() {
            return Err(format!("kill -TERM {} failed", self.pid).into());
        }
        let exited = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        match exited {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => return Err(format!("the server exited with {status}").into()),
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => return Err("the server did not exit within 60 s of SIGTERM".into()),
        }
        let drained_in = stopping.elapsed();
        let mut next = Server::start(plan, store_url, &address).await?;
        // The old process's warnings count as the run's.
        let (kept, count) = self.warnings();
        {
            let mut warnings = next.warnings.lock().expect("warnings lock");
            warnings.0.splice(0..0, kept);
            warnings.0.truncate(5);
            warnings.1 += count;
        }
        next.url = format!("http://{address}");
        Ok((next, drained_in))
    }
}

impl Report {
    /// The summary, as a markdown table and notes.
    pub fn table(&self, machine: &str) -> String {
        let mut out = String::new();
        let t = &self.tally;
        let row = |out: &mut String, what: &str, value: String| {
            let _ = writeln!(out, "| {what} | {value} |");
        };
        let _ = writeln!(out, "| soak | |\n| --- | ---: |");
        row(&mut out, "machine", machine.to_string());
        row(
            &mut out,
            "duration",
            format!("{:.1} s", self.duration.as_secs_f64()),
        );
        row(
            &mut out,
            "callers / connections",
            format!("{} / {}", self.callers, self.connections),
        );
        row(&mut out, "server cache", self.cache_bytes.clone());
        for kind in Kind::ALL {
            row(
                &mut out,
                &format!("calls: {}", kind.name()),
                format!(
                    "{} ({} ok)",
                    t.calls.get(&kind).unwrap_or(&0),
                    t.ok.get(&kind).unwrap_or(&0)
                ),
            );
        }
        let total: u64 = t.calls.values().sum();
        row(
            &mut out,
            "calls per second",
            format!("{:.0}", total as f64 / self.duration.as_secs_f64()),
        );
        row(&mut out, "records checked", t.records_checked.to_string());
        row(
            &mut out,
            "bulk neurons checked",
            t.neurons_checked.to_string(),
        );
        row(
            &mut out,
            "summaries checked",
            t.summaries_checked.to_string(),
        );
        row(&mut out, "**wrong answers**", t.wrong.to_string());
        row(&mut out, "**lost records/neurons**", t.lost.to_string());
        row(
            &mut out,
            "**duplicated records/neurons**",
            t.duplicated.to_string(),
        );
        let errors: Vec<String> = t.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
        row(
            &mut out,
            "errors by code (after retries)",
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(", ")
            },
        );
        row(
            &mut out,
            "**errors of other codes**",
            t.disallowed_errors.to_string(),
        );
        let f = &self.faults;
        row(
            &mut out,
            "store requests / faults injected",
            format!(
                "{} / {} ({:.1}%)",
                f.requests,
                f.total(),
                100.0 * f.total() as f64 / f.requests.max(1) as f64
            ),
        );
        row(
            &mut out,
            "faults by kind",
            format!(
                "503 {}, delay {}, reset {}, truncated body {}, corrupted body {}",
                f.unavailable, f.delay, f.reset, f.truncate, f.corrupt
            ),
        );
        row(
            &mut out,
            "store time to first byte",
            format!("{} ms", self.store_latency.as_millis()),
        );
        if let Some(restart) = &self.restart {
            row(
                &mut out,
                "server restart (SIGTERM, drain, start)",
                format!(
                    "at {:.0} s: drained in {:.1} s, serving again {:.1} s after SIGTERM",
                    restart.at.as_secs_f64(),
                    restart.drained_in.as_secs_f64(),
                    restart.back_in.as_secs_f64()
                ),
            );
        }
        if let (Some(first), Some(last)) = (self.samples.first(), self.samples.last()) {
            let min = self.samples.iter().map(|s| s.rss).min().unwrap_or(0);
            let max = self.samples.iter().map(|s| s.rss).max().unwrap_or(0);
            row(
                &mut out,
                "RSS first / min / max / last",
                format!(
                    "{:.1} / {:.1} / {:.1} / {:.1} MiB",
                    mib(first.rss),
                    mib(min),
                    mib(max),
                    mib(last.rss)
                ),
            );
            row(
                &mut out,
                "open fds first / max / last",
                format!(
                    "{} / {} / {}",
                    first.fds,
                    self.samples.iter().map(|s| s.fds).max().unwrap_or(0),
                    last.fds
                ),
            );
            row(
                &mut out,
                "threads first / max / last",
                format!(
                    "{} / {} / {}",
                    first.threads,
                    self.samples.iter().map(|s| s.threads).max().unwrap_or(0),
                    last.threads
                ),
            );
        }
        row(
            &mut out,
            "server WARN/ERROR log lines",
            self.server_warning_count.to_string(),
        );
        let _ = writeln!(out, "\nRSS (MiB), fds, threads every sample:\n");
        let series: Vec<String> = self
            .samples
            .iter()
            .map(|s| {
                format!(
                    "{:.0}s {:.0}/{}/{}",
                    s.at.as_secs_f64(),
                    mib(s.rss),
                    s.fds,
                    s.threads
                )
            })
            .collect();
        let _ = writeln!(out, "{}", series.join(", "));
        if !self.metrics.is_empty() {
            let _ = writeln!(out, "\nServer metrics at the end:\n");
            for line in &self.metrics {
                let _ = writeln!(out, "- {line}");
            }
        }
        if !self.server_warnings.is_empty() {
            let _ = writeln!(out, "\nFirst server warnings:\n");
            for line in &self.server_warnings {
                let _ = writeln!(out, "    {line}");
            }
        }
        if !t.examples.is_empty() {
            let _ = writeln!(out, "\nExamples:\n");
            for line in &t.examples {
                let _ = writeln!(out, "- {line}");
            }
        }
        if self.violations.is_empty() {
            let _ = writeln!(out, "\nPASS");
        } else {
            let _ = writeln!(out, "\nFAIL:");
            for line in &self.violations {
                let _ = writeln!(out, "- {line}");
            }
        }
        out
    }
}
