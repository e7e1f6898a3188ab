//! What a run prints and writes: one markdown table of the scenarios, the ratios the performance
//! targets are stated in, and the same as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::scenarios::{Figures, Results, mib};

/// The figures the performance targets are stated in.
#[derive(Debug, Clone, Serialize)]
pub struct Targets {
    /// Cold neurons/s as a percentage of the in-process read-and-parse ceiling.
    pub cold_vs_ceiling_percent: f64,
    /// The concurrency the warm comparison is made at: 64, or the level nearest to it.
    pub warm_compared_at: usize,
    /// Warm requests/s as a percentage of the echo ceiling's at that concurrency.
    pub warm_vs_echo_percent: f64,
    /// The highest warm concurrency (256 by default) and its p99, service and echo.
    pub warm_top_concurrency: usize,
    pub warm_top_p99_ms: f64,
    pub echo_top_p99_ms: f64,
    /// Bulk neurons/s, uncompressed.
    pub bulk_neurons_per_second: f64,
    /// Peak resident memory of the memory scenario's server, and its cache budget.
    pub peak_rss_bytes: Option<u64>,
    pub cache_budget_bytes: u64,
}

impl Targets {
    /// The ratios of `results`.
    pub fn of(results: &Results) -> Targets {
        let nearest = |target: usize| {
            results
                .warm
                .iter()
                .enumerate()
                .min_by_key(|(_, f)| f.concurrency.abs_diff(target))
                .map_or(0, |(i, _)| i)
        };
        let at_64 = nearest(64);
        let top = nearest(usize::MAX);
        let warm = |i: usize| results.warm.get(i);
        let echo = |i: usize| results.warm_ceiling.get(i);
        Targets {
            cold_vs_ceiling_percent: percent(
                results.cold.neurons_per_second,
                results.cold_ceiling.neurons_per_second,
            ),
            warm_compared_at: warm(at_64).map_or(0, |f| f.concurrency),
            warm_vs_echo_percent: percent(
                warm(at_64).map_or(0.0, |f| f.requests_per_second),
                echo(at_64).map_or(0.0, |f| f.requests_per_second),
            ),
            warm_top_concurrency: warm(top).map_or(0, |f| f.concurrency),
            warm_top_p99_ms: warm(top).map_or(0.0, |f| f.p99_ms),
            echo_top_p99_ms: echo(top).map_or(0.0, |f| f.p99_ms),
            bulk_neurons_per_second: results
                .bulk
                .iter()
                .find(|run| run.compression.is_none())
                .map_or(0.0, |run| run.figures.neurons_per_second),
            peak_rss_bytes: results.memory.peak_rss_bytes,
            cache_budget_bytes: results.memory.cache_bytes,
        }
    }
}

fn percent(value: f64, ceiling: f64) -> f64 {
    if ceiling > 0.0 {
        100.0 * value / ceiling
    } else {
        0.0
    }
}

/// A run's results and ratios, as `--json` prints them.
#[derive(Debug, Serialize)]
pub struct JsonReport<'a> {
    pub machine: &'a str,
    pub results: &'a Results,
    pub targets: Targets,
    /// The remote-storage scenario, when it ran.
    pub remote: Option<&'a crate::remote::RemoteResults>,
    /// The replicas scenario, when it ran.
    pub replicas: Option<&'a crate::replicas::ReplicasResults>,
}

/// The scenarios as one markdown table, followed by the target ratios.
pub fn markdown(results: &Results, machine: &str) -> String {
    let mut out = String::new();
    let plan = &results.plan;
    let _ = writeln!(
        out,
        "Machine: {machine}. Dataset: {} layers x {} neurons; n_examples_per_split={}. \
         Each scenario and ceiling but memory ran {} times on fresh servers; rows are the \
         median runs.{}\n",
        plan.layers,
        plan.neurons,
        plan.n_examples,
        plan.repeat,
        if results.fresh_servers {
            ""
        } else {
            " One running server for every scenario: caches were not fresh."
        }
    );
    out.push_str("| scenario | concurrency | calls | throughput | p50 ms | p99 ms | MB/s | RSS MiB | vs ceiling |\n");
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    let mut row =
        |name: &str, f: &Figures, throughput: String, latency: bool, rss: String, ratio: String| {
            let latency_cell = |ms: f64| {
                if latency {
                    format!("{ms:.2}")
                } else {
                    String::new()
                }
            };
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {throughput} | {} | {} | {:.1} | {rss} | {ratio} |",
                f.concurrency,
                f.requests,
                latency_cell(f.p50_ms),
                latency_cell(f.p99_ms),
                f.megabytes_per_second,
            );
        };
    let neurons = |f: &Figures| format!("{:.0} neurons/s", f.neurons_per_second);
    let requests = |f: &Figures| format!("{:.0} req/s", f.requests_per_second);

    let targets = Targets::of(results);
    row(
        "cold: 1 neuron/call, 4 splits",
        &results.cold,
        neurons(&results.cold),
        true,
        String::new(),
        format!("{:.0}%", targets.cold_vs_ceiling_percent),
    );
    row(
        "cold ceiling: read + parse in-process",
        &results.cold_ceiling,
        neurons(&results.cold_ceiling),
        true,
        String::new(),
        String::new(),
    );
    for (service, echo) in results.warm.iter().zip(&results.warm_ceiling) {
        row(
            "warm: valid split",
            service,
            requests(service),
            true,
            String::new(),
            format!(
                "{:.0}%",
                percent(service.requests_per_second, echo.requests_per_second)
            ),
        );
        row(
            "warm ceiling: echo",
            echo,
            requests(echo),
            true,
            String::new(),
            String::new(),
        );
    }
    for run in &results.bulk {
        let f = &run.figures;
        row(
            &format!(
                "bulk: range, 4 splits, {}",
                run.compression.unwrap_or("uncompressed")
            ),
            f,
            format!("{} ({:.0} records/s)", neurons(f), f.records_per_second),
            false,
            String::new(),
            String::new(),
        );
    }
    let memory = &results.memory;
    let rss_cell =
        |bytes: Option<u64>| bytes.map_or("n/a".to_string(), |b| format!("{:.0}", mib(b)));
    for (i, pass) in memory.passes.iter().enumerate() {
        row(
            &format!(
                "memory: pass {}, cache {:.0} MiB",
                i + 1,
                mib(memory.cache_bytes)
            ),
            &pass.figures,
            neurons(&pass.figures),
            false,
            rss_cell(pass.rss_bytes),
            String::new(),
        );
    }
    let _ = writeln!(
        out,
        "| memory: peak (VmHWM) | | | | | | | {} | {} |",
        rss_cell(memory.peak_rss_bytes),
        memory.peak_rss_bytes.map_or(String::new(), |peak| format!(
            "{:.2}x budget",
            peak as f64 / memory.cache_bytes.max(1) as f64
        ))
    );

    let _ = writeln!(out, "\nTargets:\n");
    let _ = writeln!(
        out,
        "- cold vs in-process read+parse ceiling: {:.0}%",
        targets.cold_vs_ceiling_percent
    );
    let _ = writeln!(
        out,
        "- warm req/s vs echo ceiling at c={}: {:.0}%",
        targets.warm_compared_at, targets.warm_vs_echo_percent
    );
    let _ = writeln!(
        out,
        "- warm p99 at c={}: {:.2} ms (echo: {:.2} ms)",
        targets.warm_top_concurrency, targets.warm_top_p99_ms, targets.echo_top_p99_ms
    );
    let _ = writeln!(
        out,
        "- bulk: {:.0} neurons/s uncompressed",
        targets.bulk_neurons_per_second
    );
    let _ = writeln!(
        out,
        "- peak RSS vs cache budget: {} / {:.0} MiB",
        rss_cell(targets.peak_rss_bytes),
        mib(targets.cache_budget_bytes)
    );
    out
}

/// `N cores, MODEL`, from the scheduler and /proc/cpuinfo.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    format!("{cores} cores, {model}")
}
