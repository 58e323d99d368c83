//! The chaos run: five node processes, a seeded schedule of faults, a full restart, and the
//! checks on the recorded histories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::child::{KEYS, MUTEX, micros};
use crate::history::{self, Records, Timeline};
use crate::netns::Namespaces;
use crate::process::{DEADLINE, Launch, NodeProcess};

/// Nodes in the cluster; the first three (in name order) are the registry's voters.
const NODES: usize = 5;
const VOTERS: usize = 3;

/// How the run is set up, from the environment.
pub(crate) struct Settings {
    pub(crate) seed: u64,
    /// How long faults are made before the final restart.
    pub(crate) chaos: Duration,
    /// Whether to run each node in a network namespace of its own, for partitions.
    pub(crate) netns: bool,
}

impl Settings {
    pub(crate) fn from_env() -> Settings {
        let number = |var: &str| std::env::var(var).ok().and_then(|s| s.parse::<u64>().ok());
        let long = std::env::var_os("ENSEMBLE_CHAOS_LONG").is_some_and(|v| v != "0");
        let secs = number("ENSEMBLE_CHAOS_SECS").unwrap_or(if long { 600 } else { 60 });
        Settings {
            seed: number("ENSEMBLE_CHAOS_SEED").unwrap_or(1),
            chaos: Duration::from_secs(secs),
            netns: std::env::var("ENSEMBLE_CHAOS_NETNS").map_or(true, |v| v != "0"),
        }
    }
}

/// A fault the schedule makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// `kill -9` of one node, started again with its data dir after a while.
    Kill,
    /// `kill -9` of two of the three voters at once: the registry has no majority until they
    /// are back.
    KillTwoVoters,
    /// `SIGSTOP`, then `SIGCONT`: a frozen process looks cut off to the others.
    Pause,
    /// The node's link taken down in its network namespace, then up again.
    Cut,
}

/// The cluster as the test drives it, and what it did to it.
struct Run {
    dir: PathBuf,
    names: Vec<String>,
    nodes: Vec<Option<NodeProcess>>,
    namespaces: Option<Namespaces>,
    timeline: Timeline,
    /// Voters out of the registry since when (dead, paused or cut off).
    out_since: BTreeMap<String, u128>,
    rng: fastrand::Rng,
    seed: u64,
    origin: Instant,
    log: Vec<String>,
    faults: BTreeMap<Fault, usize>,
    /// Starts that ended before the node was ready.
    failed_starts: usize,
}

impl Run {
    fn note(&mut self, what: String) {
        let line = format!("{:>7.2}s {what}", self.origin.elapsed().as_secs_f64());
        if std::env::var_os("ENSEMBLE_CHAOS_TRACE").is_some() {
            eprintln!("{line}");
        }
        self.log.push(line);
    }

    fn is_voter(&self, i: usize) -> bool {
        i < VOTERS
    }

    fn out(&mut self, i: usize, at: u128) {
        if self.is_voter(i) {
            self.out_since.entry(self.names[i].clone()).or_insert(at);
        }
    }

    fn back(&mut self, i: usize, at: u128) {
        if let Some(since) = self.out_since.remove(&self.names[i]) {
            self.timeline
                .voter_gaps
                .entry(self.names[i].clone())
                .or_default()
                .push((since, at));
        }
    }

    /// Starts node `i` without waiting for its registry, joining through the running nodes.
    fn start(&mut self, i: usize, bootstrap: bool, seeds: Option<Vec<String>>) {
        let seeds = seeds.unwrap_or_else(|| {
            self.nodes
                .iter()
                .flatten()
                .map(|n| n.addr.clone())
                .collect()
        });
        let netns = self
            .namespaces
            .as_ref()
            .map(|ns| (ns.namespace(i), ns.listen(i)));
        let work_seed = self.seed.wrapping_mul(31).wrapping_add(i as u64);
        let launch = Launch {
            name: &self.names[i],
            dir: &self.dir,
            seeds: &seeds,
            bootstrap,
            nodes: &self.names,
            work_seed,
            netns: netns.as_ref().map(|(n, l)| (n.as_str(), l.as_str())),
        };
        self.nodes[i] = Some(NodeProcess::spawn(&launch));
    }

    /// Waits until node `i` is ready. A node whose registry could not start exits (as
    /// `ensemble node` does) and is noted, to be started again by `settle`, as a process
    /// supervisor would.
    fn ready(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        if node.incarnation.is_some() {
            return;
        }
        let name = self.names[i].clone();
        match node.wait_ready() {
            Some(incarnation) => {
                self.back(i, micros());
                self.note(format!("{name} ready as incarnation {incarnation}"));
            }
            None => {
                let why = node
                    .log_tail(200)
                    .lines()
                    .rev()
                    .find(|l| l.contains("panicked") || l.contains("registry:"))
                    .unwrap_or("")
                    .to_owned();
                self.nodes[i] = None;
                self.failed_starts += 1;
                self.note(format!("{name} exited before it was ready: {why}"));
            }
        }
    }

    fn incarnation(&self, i: usize) -> Option<(String, u64)> {
        let node = self.nodes[i].as_ref()?;
        Some((self.names[i].clone(), node.incarnation?))
    }

    /// `kill -9` of node `i`.
    fn kill(&mut self, i: usize) {
        let who = self.incarnation(i);
        let Some(mut node) = self.nodes[i].take() else {
            return;
        };
        let at = node.kill();
        if let Some(who) = who {
            self.timeline.deaths.insert(who, at);
        }
        self.out(i, at);
        let name = self.names[i].clone();
        self.note(format!("{name} killed"));
    }

    /// Notes nodes whose process ended on its own (their session expired).
    fn reap(&mut self) {
        for i in 0..NODES {
            let exited = self.nodes[i].as_mut().is_some_and(|n| n.has_exited());
            if exited {
                let at = self.nodes[i].as_ref().expect("running").exit_time();
                if let Some(who) = self.incarnation(i) {
                    self.timeline.deaths.insert(who, at);
                }
                self.nodes[i] = None;
                self.out(i, at);
                let name = self.names[i].clone();
                self.note(format!("{name} exited: the cluster declared it down"));
            }
        }
    }

    /// A delay of the schedule, noting exits as they happen.
    fn idle(&mut self, delay: Duration) {
        let until = Instant::now() + delay;
        while Instant::now() < until {
            self.reap();
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
        self.reap();
    }

    /// Starts every node that is not running and waits until all are ready.
    fn settle(&mut self) {
        let deadline = Instant::now() + DEADLINE * 2;
        loop {
            self.reap();
            let missing: Vec<usize> = (0..NODES).filter(|&i| self.nodes[i].is_none()).collect();
            for &i in &missing {
                self.start(i, false, None);
            }
            for i in 0..NODES {
                self.ready(i);
            }
            self.reap();
            let ready = self
                .nodes
                .iter()
                .all(|n| n.as_ref().is_some_and(|n| n.incarnation.is_some()));
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle with every node running"
            );
        }
    }

    fn pick(&mut self) -> Fault {
        let cut = self.namespaces.is_some();
        loop {
            let fault = match self.rng.u32(..100) {
                0..35 => Fault::Kill,
                35..50 => Fault::KillTwoVoters,
                50..75 => Fault::Pause,
                _ => Fault::Cut,
            };
            if fault != Fault::Cut || cut {
                return fault;
            }
        }
    }

    fn fault(&mut self, fault: Fault) {
        *self.faults.entry(fault).or_default() += 1;
        let (lo, hi) = match fault {
            Fault::Kill => (200, 3000),
            Fault::KillTwoVoters => (500, 3000),
            Fault::Pause => (200, 3000),
            Fault::Cut => (300, 3000),
        };
        let hold = Duration::from_millis(self.rng.u64(lo..hi));
        match fault {
            Fault::Kill => {
                let i = self.rng.usize(..NODES);
                self.kill(i);
                self.idle(hold);
            }
            Fault::KillTwoVoters => {
                let spared = self.rng.usize(..VOTERS);
                for i in (0..VOTERS).filter(|&i| i != spared) {
                    self.kill(i);
                }
                self.idle(hold);
            }
            Fault::Pause => {
                let i = self.rng.usize(..NODES);
                let Some(node) = self.nodes[i].as_mut() else {
                    return;
                };
                node.pause();
                let stopped = micros();
                self.out(i, stopped);
                let name = self.names[i].clone();
                self.note(format!("{name} paused for {hold:?}"));
                self.idle(hold);
                let Some(node) = self.nodes[i].as_mut() else {
                    return;
                };
                node.resume();
                let resumed = micros();
                self.back(i, resumed);
                if let Some(who) = self.incarnation(i) {
                    self.timeline
                        .pauses
                        .entry(who)
                        .or_default()
                        .push((stopped, resumed));
                }
            }
            Fault::Cut => {
                let i = self.rng.usize(..NODES);
                let at = micros();
                self.namespaces.as_ref().expect("namespaces").cut(i);
                self.out(i, at);
                let name = self.names[i].clone();
                self.note(format!("{name} cut off for {hold:?}"));
                self.idle(hold);
                self.namespaces.as_ref().expect("namespaces").heal(i);
                self.back(i, micros());
                self.note(format!("{name} joined again"));
            }
        }
        self.settle();
    }

    /// Waits until a node takes the mutex after `since` (its grants go on).
    fn wait_mutex_granted(&mut self, since: u128, what: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let records = Records::parse(&self.histories());
            if records
                .holds
                .iter()
                .any(|h| h.lock == MUTEX && h.start > since)
            {
                return;
            }
            if Instant::now() > deadline {
                let views: Vec<String> = self
                    .nodes
                    .iter_mut()
                    .flatten()
                    .map(|n| {
                        let seen = n.run(&format!("holder {MUTEX}"));
                        format!("{}: {seen}", n.name)
                    })
                    .collect();
                let kept = self.dir.display();
                panic!(
                    "no node took the lock {MUTEX:?} within {DEADLINE:?} {what}; seed {}; \
                     the lock as each node's copy shows it:\n  {}\n\
                     (logs and histories in {kept} if ENSEMBLE_TEST_KEEP is set)",
                    self.seed,
                    views.join("\n  "),
                );
            }
            self.idle(Duration::from_millis(200));
        }
    }

    fn histories(&self) -> Vec<String> {
        self.names
            .iter()
            .map(|n| {
                std::fs::read_to_string(self.dir.join(format!("history-{n}"))).unwrap_or_default()
            })
            .collect()
    }

    /// Every node killed at once, then started again with its data dir.
    fn full_restart(&mut self) {
        for i in 0..NODES {
            self.kill(i);
        }
        self.note("every node killed: full restart".into());
        self.start(0, false, Some(Vec::new()));
        let seeds = vec![self.nodes[0].as_ref().expect("started").addr.clone()];
        for i in 1..NODES {
            self.start(i, false, Some(seeds.clone()));
        }
        for i in 0..NODES {
            self.ready(i);
        }
        self.settle();
    }

    fn first(&mut self) -> &mut NodeProcess {
        self.nodes
            .iter_mut()
            .flatten()
            .next()
            .expect("a running node")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "chaos seed {} failed; the schedule so far:\n  {}",
                self.seed,
                self.log.join("\n  ")
            );
        }
    }
}

/// What a run found.
pub(crate) struct Outcome {
    pub(crate) summary: String,
    pub(crate) problems: Vec<String>,
    pub(crate) log: Vec<String>,
}

/// Runs the cluster through the schedule and checks the histories.
pub(crate) fn run(settings: &Settings, dir: &Path) -> Outcome {
    let names: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
    let namespaces = if settings.netns {
        match Namespaces::create(NODES) {
            Ok(ns) => Some(ns),
            Err(why) => {
                eprintln!(
                    "partitions skipped: network namespaces are not available here ({why}); \
                     the run goes on with kills and pauses only"
                );
                None
            }
        }
    } else {
        eprintln!("partitions skipped: ENSEMBLE_CHAOS_NETNS=0");
        None
    };
    let mut run = Run {
        dir: dir.to_owned(),
        names: names.clone(),
        nodes: (0..NODES).map(|_| None).collect(),
        namespaces,
        timeline: Timeline::default(),
        out_since: BTreeMap::new(),
        rng: fastrand::Rng::with_seed(settings.seed),
        seed: settings.seed,
        origin: Instant::now(),
        log: Vec::new(),
        faults: BTreeMap::new(),
        failed_starts: 0,
    };

    // Form the cluster: n1 bootstraps; the leader makes n1, n2 and n3 the voters.
    run.start(0, true, None);
    run.ready(0);
    for i in 1..NODES {
        run.start(i, false, None);
        run.ready(i);
    }
    run.settle();
    let deadline = Instant::now() + DEADLINE;
    let wanted = format!("voters {}", names[..VOTERS].join(","));
    loop {
        let answer = run.first().run("leader");
        if answer.ends_with(&wanted) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the voters never became {wanted}: {answer}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    run.note("cluster formed".into());

    let chaos_start = Instant::now();
    while chaos_start.elapsed() < settings.chaos {
        let gap = Duration::from_millis(run.rng.u64(300..1500));
        run.idle(gap);
        run.settle();
        let fault = run.pick();
        run.fault(fault);
    }
    run.note("faults over".into());
    let calm = micros();
    run.wait_mutex_granted(calm, "after the faults ended");

    run.full_restart();
    let restarted = micros();
    run.first()
        .run_until(&format!("holder {}", crate::child::SINGLETON), "held ");
    run.wait_mutex_granted(restarted, "after the full restart");
    // The writers stop, so that the dump below holds every write acknowledged before it.
    for node in run.nodes.iter_mut().flatten() {
        assert_eq!(node.run("quiet"), "ok");
    }
    let dump = dir.join("dump");
    let dump_command = format!("dump {KEYS} {}", dump.display());
    run.first().run_until(&dump_command, "ok ");
    let stored = std::fs::read_to_string(&dump).unwrap_or_default();
    for i in 0..NODES {
        run.kill(i);
    }

    let records = Records::parse(&run.histories());
    let locks = history::check_locks(&records, &run.timeline);
    let mut problems = locks.violations.clone();
    problems.extend(history::check_names(&records, &run.timeline));
    let acks = history::check_acks(&records, &stored);
    problems.extend(acks.lost.iter().cloned());
    // A put sent again takes effect once (docs/registry.md, "A request takes effect once").
    problems.extend(
        acks.reapplied
            .iter()
            .map(|r| format!("a put took effect more than once: {r}")),
    );

    // Lookups of a dead incarnation: how long after its death, and for how long one leader
    // had led, reachable and with a majority, since then (its time to count the death).
    let no_quorum = run.timeline.no_quorum();
    let (dead_lookups, led): (Vec<u128>, Vec<u128>) = records
        .lookups
        .iter()
        .filter_map(|l| {
            let died = *run.timeline.deaths.get(&l.holder)?;
            (l.at > died).then(|| {
                let led = run
                    .timeline
                    .stable_leadership(&records.leads, died, l.at, &no_quorum);
                (l.at - died, led)
            })
        })
        .unzip();
    // Holders that saw their lease valid after being resumed from a pause past its validity:
    // `Lease::is_lost` reads the clock, so none may (docs/reliability.md); whether another
    // node held the lock by then says how bad it was.
    let late: Vec<String> = locks
        .late
        .iter()
        .map(|(hold, resumed, seen, later)| {
            format!(
                "{} token {} on {}#{} (granted {} ms after it asked): seen valid {} ms after its \
                 node was resumed{}",
                hold.lock,
                hold.token,
                hold.holder.0,
                hold.holder.1,
                hold.start.saturating_sub(hold.asked) / 1000,
                (seen - resumed) / 1000,
                match later {
                    Some(token) => format!(", when token {token} was already held elsewhere"),
                    None => ", no one else held it yet".to_owned(),
                }
            )
        })
        .collect();
    let overlapping = locks.late.iter().filter(|l| l.3.is_some()).count();
    problems.extend(
        late.iter()
            .map(|l| format!("a holder saw its lease valid after a pause past its validity: {l}")),
    );
    let summary = format!(
        "seed {}: {:.0} s of faults {:?}, {} no-majority spells, {} incarnations died, {} \
         starts failed; \
         grants {:?}; {} lookups ({} of a dead incarnation, the latest {:.1} s after its death; \
         the longest one leader had led since such a death, reachable and with a majority: \
         {:.2} s); \
         {} acknowledged writes, all read back after the full restart: {} ({} applied twice: \
         {}); {} torn history lines; holders that saw a lease valid after a pause past its validity: {} ({} while \
         another node held the lock){}",
        settings.seed,
        chaos_start.elapsed().as_secs_f64(),
        run.faults,
        run.timeline.no_quorum().len(),
        run.timeline.deaths.len(),
        run.failed_starts,
        locks.grants,
        records.lookups.len(),
        dead_lookups.len(),
        dead_lookups.iter().max().copied().unwrap_or(0) as f64 / 1e6,
        led.iter().max().copied().unwrap_or(0) as f64 / 1e6,
        records.acks.len(),
        acks.lost.is_empty(),
        acks.reapplied.len(),
        acks.reapplied.join("; "),
        records.torn,
        late.len(),
        overlapping,
        if late.is_empty() {
            String::new()
        } else {
            format!(": {}", late.join("; "))
        }
    );
    Outcome {
        summary,
        problems,
        log: std::mem::take(&mut run.log),
    }
}
