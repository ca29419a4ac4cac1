//! What the machine is, and what processes on it cost: `/proc` readers.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The header of the report: cores, CPU model, memory.
pub struct Machine {
    pub cores: usize,
    pub nproc: String,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let nproc = std::process::Command::new("nproc")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "?".into());
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| status_field_kib(&text, "MemTotal"))
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Machine {
            cores,
            nproc,
            cpu_model,
            memory_gib: memory_kib as f64 / (1024.0 * 1024.0),
            kernel,
        }
    }
}

/// `Name:   123 kB` from a `/proc` status-like file.
fn status_field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Resident memory of a process, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Peak resident set (VmHWM), KiB.
    pub peak_kib: u64,
    /// Current resident set (VmRSS), KiB.
    pub rss_kib: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Option<Memory> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(Memory {
            peak_kib: status_field_kib(&text, "VmHWM")?,
            rss_kib: status_field_kib(&text, "VmRSS")?,
        })
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / clock_ticks_per_second(),
    ))
}

/// Busy and total jiffies of all CPUs, from `/proc/stat`.
#[derive(Clone, Copy, Debug)]
pub struct CpuTotals {
    busy: u64,
    total: u64,
}

impl CpuTotals {
    pub fn now() -> CpuTotals {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let values: Vec<u64> = text
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let total: u64 = values.iter().take(8).sum();
        // idle and iowait
        let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
        CpuTotals {
            busy: total.saturating_sub(idle),
            total,
        }
    }

    /// CPU-seconds all CPUs were busy since `earlier`.
    pub fn busy_seconds_since(&self, earlier: &CpuTotals) -> f64 {
        self.busy.saturating_sub(earlier.busy) as f64 / clock_ticks_per_second()
    }

    /// Share of all CPUs that was busy since `earlier`, 0..=1.
    pub fn busy_since(&self, earlier: &CpuTotals) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

/// The processes whose CPU a phase accounts for.
#[derive(Clone, Debug)]
pub struct Processes {
    pub named: Vec<(String, u32)>,
}

impl Processes {
    /// The control plane's processes (their pid files sit in its directory) and this one.
    pub fn of_control_plane(dir: &Path) -> Processes {
        let mut named = Vec::new();
        for name in ["kube-apiserver", "etcd"] {
            if let Some(pid) = std::fs::read_to_string(dir.join(format!("{name}.pid")))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                named.push((name.to_owned(), pid));
            }
        }
        named.push(("bench (simulator, driver)".to_owned(), std::process::id()));
        Processes { named }
    }

    pub fn with(&self, name: &str, pid: u32) -> Processes {
        let mut named = self.named.clone();
        named.insert(0, (name.to_owned(), pid));
        Processes { named }
    }
}

/// CPU used by each process and by the machine over a phase.
pub struct CpuMeter {
    processes: Processes,
    start: Vec<Option<Duration>>,
    machine: CpuTotals,
}

pub struct CpuReport {
    /// (name, CPU seconds used in the phase)
    pub per_process: Vec<(String, f64)>,
    /// Share of the machine's CPUs that was busy, 0..=1.
    pub machine_busy: f64,
    /// CPU-seconds used by everything else on the machine (other users of a shared host).
    pub others: f64,
}

impl CpuMeter {
    pub fn start(processes: &Processes) -> CpuMeter {
        CpuMeter {
            start: processes.named.iter().map(|(_, p)| cpu_time(*p)).collect(),
            processes: processes.clone(),
            machine: CpuTotals::now(),
        }
    }

    pub fn stop(&self) -> CpuReport {
        let now = CpuTotals::now();
        let per_process: Vec<(String, f64)> = self
            .processes
            .named
            .iter()
            .zip(&self.start)
            .map(|((name, pid), start)| {
                let used = match (start, cpu_time(*pid)) {
                    (Some(a), Some(b)) => b.saturating_sub(*a).as_secs_f64(),
                    _ => f64::NAN,
                };
                (name.clone(), used)
            })
            .collect();
        let ours: f64 = per_process
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.is_finite())
            .sum();
        CpuReport {
            machine_busy: now.busy_since(&self.machine),
            others: (now.busy_seconds_since(&self.machine) - ours).max(0.0),
            per_process,
        }
    }
}

impl CpuReport {
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .per_process
            .iter()
            .map(|(name, secs)| format!("{name} {secs:.1}"))
            .collect();
        format!(
            "{}, everything else {:.1}; machine {:.0}% busy",
            parts.join(", "),
            self.others,
            self.machine_busy * 100.0
        )
    }
}

/// Polls a process until its resident memory and CPU time have stopped moving for 2 s.
/// Returns the memory then, and how long after the call it was last busy (250 ms steps).
pub async fn settle(
    pid: u32,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<(Memory, Duration)> {
    const STEP: Duration = Duration::from_millis(250);
    const QUIET_STEPS: u32 = 8;
    let started = Instant::now();
    let deadline = started + timeout;
    let mut quiet = 0;
    let mut busy_until = Duration::ZERO;
    let mut last = (Memory::of(pid), cpu_time(pid));
    loop {
        tokio::time::sleep(STEP).await;
        if !alive() {
            bail!("process {pid} exited while settling");
        }
        let now = (Memory::of(pid), cpu_time(pid));
        let rss_still = match (last.0, now.0) {
            (Some(a), Some(b)) => a.rss_kib.abs_diff(b.rss_kib) <= 256,
            _ => false,
        };
        let cpu_still = match (last.1, now.1) {
            (Some(a), Some(b)) => b.saturating_sub(a) <= Duration::from_millis(10),
            _ => false,
        };
        if rss_still && cpu_still {
            quiet += 1;
        } else {
            quiet = 0;
            busy_until = started.elapsed();
        }
        last = now;
        if quiet >= QUIET_STEPS {
            let memory = last.0.context("reading /proc/PID/status")?;
            return Ok((memory, busy_until));
        }
        if Instant::now() >= deadline {
            bail!("process {pid} did not settle within {timeout:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_kib() {
        let text = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_field_kib(text, "VmHWM"), Some(20480));
        assert_eq!(status_field_kib(text, "VmRSS"), Some(10240));
        assert_eq!(status_field_kib(text, "VmSwap"), None);
    }

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let pid = std::process::id();
        let memory = Memory::of(pid).expect("own /proc status");
        assert!(memory.rss_kib > 0 && memory.peak_kib >= memory.rss_kib);
        assert!(cpu_time(pid).is_some());
    }
}
