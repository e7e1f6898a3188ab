//! A process's memory, from `/proc/PID/status` (Linux).

use serde::Serialize;

/// Resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcessMemory {
    /// `VmRSS`: resident now.
    pub rss: u64,
    /// `VmHWM`: the most ever resident (the peak).
    pub peak: u64,
}

impl ProcessMemory {
    /// Reads the memory of process `pid`; `None` where `/proc` is missing or the process ended.
    pub fn read(pid: u32) -> Option<ProcessMemory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Self::parse(&status)
    }

    /// Reads `VmRSS` and `VmHWM` (in kB) from the text of `/proc/PID/status`.
    fn parse(status: &str) -> Option<ProcessMemory> {
        let field = |name: &str| {
            status.lines().find_map(|line| {
                let value = line.strip_prefix(name)?.strip_prefix(':')?;
                let kilobytes = value
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()?;
                Some(kilobytes * 1024)
            })
        };
        Some(ProcessMemory {
            rss: field("VmRSS")?,
            peak: field("VmHWM")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_and_peak_are_read_in_bytes() {
        let status = "Name:\tactivations-ser\nVmPeak:\t 900000 kB\nVmHWM:\t  300000 kB\nVmRSS:\t  250000 kB\n";
        assert_eq!(
            ProcessMemory::parse(status),
            Some(ProcessMemory {
                rss: 250_000 * 1024,
                peak: 300_000 * 1024
            })
        );
        assert_eq!(ProcessMemory::parse("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_resident_memory() {
        let memory = ProcessMemory::read(std::process::id()).expect("/proc/self/status");
        assert!(memory.rss > 0 && memory.peak >= memory.rss);
    }
}
