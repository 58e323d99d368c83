//! Running a benchmark's workloads the same way in every process that drives one: a rate,
//! p50, p99 and the CPU time per operation of every process taking part, and
//! `ENSEMBLE_BENCH_ONLY=<text>` to run only the workloads whose name contains the text (`a|b`
//! for those that contain either).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cpu;

// The workloads' sizes, the same in every benchmark that runs them.

/// Operations of each sequential workload.
pub(crate) const SEQUENTIAL: usize = 2_000;
/// Puts of the concurrent workload, and how many are in flight at once.
pub(crate) const CONCURRENT_PUTS: usize = 30_000;
pub(crate) const IN_FLIGHT: usize = 64;
/// Clients contending for one lock.
pub(crate) const CONTENDERS: usize = 8;
/// Times the leader is killed.
pub(crate) const FAILOVERS: usize = 5;

/// The processes whose CPU time a workload counts.
static PROCESSES: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Counts the CPU time of `others` and of this process in every workload from now on.
pub(crate) fn count_cpu_of(others: impl IntoIterator<Item = u32>) {
    *PROCESSES.lock().expect("pids") = others.into_iter().chain([std::process::id()]).collect();
}

/// A reading of the counted processes' CPU time.
fn cpu_now() -> cpu::CpuReading {
    cpu::read(&PROCESSES.lock().expect("pids"))
}

/// Prints what the processes cost doing nothing for two seconds (heartbeats, keepalives,
/// timers): part of the CPU time per operation of every workload, more so the slower it is.
pub(crate) async fn report_idle_cost() {
    let idle = cpu_now();
    let idle_for = Duration::from_secs(2);
    tokio::time::sleep(idle_for).await;
    println!(
        "{:<44} {}\n",
        "idle, per second",
        idle.describe_until(&cpu_now(), idle_for.as_secs() as usize)
            .replace("/op", "/s")
    );
}

/// Whether the workload named `what` runs: all do, unless `ENSEMBLE_BENCH_ONLY` names some
/// (texts separated by `|`).
pub(crate) fn selected(what: &str) -> bool {
    std::env::var("ENSEMBLE_BENCH_ONLY")
        .map_or(true, |only| only.split('|').any(|text| what.contains(text)))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Runs `op` `n` times in sequence; prints the rate, p50 and p99.
pub(crate) async fn sequential<F, Fut>(what: &str, n: usize, mut op: F)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    if !selected(what) {
        return;
    }
    let mut latencies = Vec::with_capacity(n);
    let cpu = cpu_now();
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        op(i).await;
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    report(what, n, elapsed, latencies, cpu);
}

/// Prints a workload's rate, p50, p99, and CPU time per operation (every process).
fn report(
    what: &str,
    n: usize,
    elapsed: Duration,
    mut latencies: Vec<Duration>,
    cpu: cpu::CpuReading,
) {
    latencies.sort();
    println!(
        "{what:<44} {:>9.0}/s   p50 {:>8.3} ms   p99 {:>8.3} ms   {}",
        n as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        cpu.describe_until(&cpu_now(), n),
    );
}

/// Runs `n` operations from `tasks` concurrent tasks; prints the rate and p50.
pub(crate) async fn concurrent<F, Fut>(what: &str, n: usize, tasks: usize, op: F)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    if !selected(what) {
        return;
    }
    let op = Arc::new(op);
    let cpu = cpu_now();
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (task..n).step_by(tasks) {
                    let t = Instant::now();
                    op(task, i).await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for handle in handles {
        latencies.extend(handle.await.expect("task"));
    }
    let elapsed = start.elapsed();
    report(what, n, elapsed, latencies, cpu);
}

/// Prints the median and the longest of the times from a leader's `kill -9` to the next
/// acknowledged write.
pub(crate) fn report_failovers(mut took: Vec<Duration>) {
    took.sort();
    println!(
        "{:<44} median {:?}, max {:?} over {} trials",
        "kill -9 of the leader -> next acknowledged put",
        took[took.len() / 2],
        took[took.len() - 1],
        took.len()
    );
}
