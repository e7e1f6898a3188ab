//! What the soak watches on the server's process over time (resident memory, open file
//! descriptors, threads, from `/proc`), the leak verdicts drawn from that series, and a scrape
//! of its Prometheus metrics.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One look at the server's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Since the load started.
    pub at: Duration,
    /// `VmRSS`, bytes.
    pub rss: u64,
    /// Entries of `/proc/PID/fd`.
    pub fds: u64,
    /// `Threads:` of `/proc/PID/status`.
    pub threads: u64,
}

impl Sample {
    /// Reads process `pid`; `None` where `/proc` is missing or the process ended.
    pub fn read(pid: u32, at: Duration) -> Option<Sample> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
        let (rss, threads) = parse_status(&status)?;
        Some(Sample {
            at,
            rss,
            fds,
            threads,
        })
    }
}

/// `VmRSS` in bytes and `Threads` from the text of `/proc/PID/status`.
fn parse_status(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(':')?.trim();
            value.trim_end_matches("kB").trim().parse::<u64>().ok()
        })
    };
    Some((field("VmRSS")? * 1024, field("Threads")?))
}

/// How much growth after the warm-up counts as a leak.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LeakLimits {
    /// Resident memory may end at most this fraction above its level after the warm-up.
    pub rss_growth: f64,
    /// Open file descriptors may end at most this many above their warm-up maximum.
    pub fd_growth: u64,
    /// Threads may end at most this many above their warm-up maximum.
    pub thread_growth: u64,
}

/// The series' verdicts: one line per violation.
///
/// The warm-up is the first third of the run (the cache fills, the thread pools and connection
/// pools reach their working size). Memory is compared between the first sample after it and
/// the last; descriptors and threads between the warm-up's maximum and the last sample, since
/// they move with the connections and blocking threads of the moment and only a level that
/// keeps rising is a leak.
pub fn leak_violations(samples: &[Sample], run: Duration, limits: &LeakLimits) -> Vec<String> {
    let warm_up = run / 3;
    let (Some(last), Some(after)) = (samples.last(), samples.iter().find(|s| s.at >= warm_up))
    else {
        return vec!["too few samples of the server's process to judge leaks".to_string()];
    };
    let mut violations = Vec::new();
    let rss_limit = after.rss as f64 * (1.0 + limits.rss_growth);
    if last.rss as f64 > rss_limit {
        violations.push(format!(
            "RSS grew from {:.1} MiB at {:.0}s to {:.1} MiB at the end (limit +{:.0}%)",
            mib(after.rss),
            after.at.as_secs_f64(),
            mib(last.rss),
            limits.rss_growth * 100.0
        ));
    }
    let warm: Vec<&Sample> = samples.iter().filter(|s| s.at <= warm_up).collect();
    let warm_max = |f: fn(&Sample) -> u64| warm.iter().map(|s| f(s)).max().unwrap_or(0);
    let fds = warm_max(|s| s.fds);
    if last.fds > fds + limits.fd_growth {
        violations.push(format!(
            "open file descriptors grew from at most {fds} in the warm-up to {} at the end",
            last.fds
        ));
    }
    let threads = warm_max(|s| s.threads);
    if last.threads > threads + limits.thread_growth {
        violations.push(format!(
            "threads grew from at most {threads} in the warm-up to {} at the end",
            last.threads
        ));
    }
    violations
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The text of `http://ADDRESS/metrics`, by a plain HTTP/1.0 request.
///
/// # Errors
///
/// Nothing listens, or the answer is not a 200.
pub async fn scrape(address: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .map_err(|_| std::io::Error::other("no complete answer within 10 s"))??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP head"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(std::io::Error::other(format!(
            "answered {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.to_string())
}

/// The sum of the samples of `metric` whose labels contain every `key="value"` of `labels`,
/// grouped by the value of label `by` (or under `""` without one).
pub fn metric_by(text: &str, metric: &str, labels: &[&str], by: &str) -> Vec<(String, f64)> {
    let mut sums: Vec<(String, f64)> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, label_text) = match name_labels.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (name_labels, ""),
        };
        if name != metric || !labels.iter().all(|l| label_text.contains(l)) {
            continue;
        }
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let group = label_text
            .split(',')
            .find_map(|pair| pair.strip_prefix(by)?.strip_prefix("=\""))
            .map_or(String::new(), |v| v.trim_end_matches('"').to_string());
        match sums.iter_mut().find(|(g, _)| *g == group) {
            Some((_, sum)) => *sum += value,
            None => sums.push((group, value)),
        }
    }
    sums.sort_by(|a, b| a.0.cmp(&b.0));
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(secs: u64, rss_mib: u64, fds: u64, threads: u64) -> Sample {
        Sample {
            at: Duration::from_secs(secs),
            rss: rss_mib << 20,
            fds,
            threads,
        }
    }

    const LIMITS: LeakLimits = LeakLimits {
        rss_growth: 0.25,
        fd_growth: 32,
        thread_growth: 8,
    };

    #[test]
    fn steady_series_after_warm_up_passes() {
        let samples = [
            sample(0, 50, 20, 10),
            sample(30, 150, 60, 14),
            sample(60, 160, 40, 12),
            sample(90, 170, 50, 13),
        ];
        assert!(leak_violations(&samples, Duration::from_secs(90), &LIMITS).is_empty());
    }

    #[test]
    fn memory_descriptors_and_threads_rising_after_warm_up_fail() {
        let samples = [
            sample(0, 50, 20, 10),
            sample(30, 100, 30, 10),
            sample(60, 140, 80, 15),
            sample(90, 180, 200, 40),
        ];
        let violations = leak_violations(&samples, Duration::from_secs(90), &LIMITS);
        assert_eq!(violations.len(), 3, "{violations:?}");
        assert!(violations[0].starts_with("RSS grew from 100.0 MiB"));
    }

    #[test]
    fn status_fields_are_read() {
        let status = "Name:\tx\nVmRSS:\t  2048 kB\nThreads:\t7\n";
        assert_eq!(parse_status(status), Some((2048 * 1024, 7)));
    }

    #[test]
    fn metric_samples_are_summed_by_a_label() {
        let text = "# TYPE a counter\n\
            a_total{service=\"s\",rpc=\"X\",code=\"OK\"} 3\n\
            a_total{service=\"s\",rpc=\"Y\",code=\"OK\"} 2\n\
            a_total{service=\"s\",rpc=\"Y\",code=\"CANCELLED\"} 1\n\
            a_total{service=\"t\",rpc=\"Y\",code=\"OK\"} 9\n\
            g 4\n";
        assert_eq!(
            metric_by(text, "a_total", &["service=\"s\""], "code"),
            [("CANCELLED".to_string(), 1.0), ("OK".to_string(), 5.0)]
        );
        assert_eq!(metric_by(text, "g", &[], "x"), [(String::new(), 4.0)]);
    }
}
