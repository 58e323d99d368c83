//! CPU time spent by a set of processes, and time stolen from this machine by its hypervisor,
//! read from `/proc` (Linux; elsewhere both read as unknown).
//!
//! Wall-clock rates on a shared machine move with its neighbours; the CPU time a workload
//! costs per operation moves much less, so the benchmarks print both.

use std::time::Duration;

/// The kernel's clock tick for `/proc/<pid>/stat` times: 100 Hz on every Linux this runs on.
const TICKS_PER_SECOND: u64 = 100;

/// A reading of the processes' CPU time and the machine's steal time.
#[derive(Clone, Copy)]
pub(crate) struct CpuReading {
    processes: Option<Duration>,
    steal: Option<(u64, u64)>,
}

/// Reads the CPU time (user + system, every thread) of `pids` and the machine's steal time.
pub(crate) fn read(pids: &[u32]) -> CpuReading {
    let processes = pids
        .iter()
        .map(|pid| process_ticks(*pid))
        .sum::<Option<u64>>()
        .map(|ticks| Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND));
    CpuReading {
        processes,
        steal: steal_ticks(),
    }
}

impl CpuReading {
    /// What happened between `self` and `later`, per operation for `ops` operations:
    /// `"cpu 312 µs/op, steal 4 %"`, or less when `/proc` cannot tell.
    pub(crate) fn describe_until(&self, later: &CpuReading, ops: usize) -> String {
        let mut parts = Vec::new();
        if let (Some(before), Some(after)) = (self.processes, later.processes) {
            let per = after.saturating_sub(before).as_secs_f64() / ops as f64;
            parts.push(format!("cpu {:>6.0} µs/op", per * 1e6));
        }
        if let (Some((steal0, all0)), Some((steal1, all1))) = (self.steal, later.steal)
            && all1 > all0
        {
            let share = (steal1 - steal0) as f64 / (all1 - all0) as f64;
            parts.push(format!("steal {:>2.0} %", share * 100.0));
        }
        parts.join(", ")
    }
}

/// utime + stime of a process, in ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // Fields 14 and 15 of the whole line are the 12th and 13th after the name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// (steal, total) ticks of all CPUs since boot.
fn steal_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice, counted in user]
    let steal = *ticks.get(7)?;
    let total = ticks.iter().take(8).sum();
    Some((steal, total))
}
