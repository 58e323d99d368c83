//! How a node takes part in the registry.

use std::path::PathBuf;
use std::time::Duration;

/// Registry settings of a node.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Where the node keeps its Raft log and vote (in `registry-log/` inside) and its snapshots
    /// (in `registry-log-snapshots/`).
    pub data_dir: PathBuf,
    /// Start a new registry, with this node its only voter, if the data dir holds none. Set it
    /// on the first node of a new cluster only (the one started without seeds).
    pub bootstrap: bool,
    /// How many voters the leader adds, from the connected members in name order (members
    /// labelled `registry.voter = "no"` never vote). A single node alone is its own voter.
    pub voters: usize,
    /// How long a node's session lives without a keepalive. The node is declared down this
    /// long after its last keepalive reached the leader.
    pub session_ttl: Duration,
    /// How often a node renews its session.
    pub keepalive_interval: Duration,
    /// How long a voter may be gone (its session ended and its node not connected to the
    /// leader) before the leader gives its vote to another node that may vote. Long enough
    /// for a voter's restart, so that a restarted voter keeps its vote.
    pub voter_grace: Duration,
    /// The part of the TTL a node gives up to clock drift when deciding it is still valid:
    /// it fences itself at (last acknowledged keepalive sent) + TTL x (1 - margin).
    pub drift_margin: f64,
    /// How long each call waits for the registry, retries on a changed leader included.
    pub request_timeout: Duration,
    /// Raft heartbeats from the leader.
    pub heartbeat_interval: Duration,
    /// A follower without heartbeats starts an election after a random time in this range.
    pub election_timeout: (Duration, Duration),
    /// A voter snapshots its state once it has applied this many entries since its last
    /// snapshot (openraft's `SnapshotPolicy::LogsSinceLast`), and then drops the log the
    /// snapshot covers but for `log_kept_after_snapshot` entries.
    pub snapshot_every: u64,
    /// How many entries before its latest snapshot a voter keeps in its log: a voter that is
    /// at most this far behind catches up from the log; one further behind is sent the
    /// snapshot.
    pub log_kept_after_snapshot: u64,
    /// Write the Raft log on the calling task instead of a writer thread, blocking the async
    /// runtime during every commit. Only for simulations on paused tokio time, where a writer
    /// thread would let virtual time run on while the disk works; never in production.
    pub inline_storage: bool,
    /// How fast this node's clock runs against true time: 1.0 everywhere but in simulations
    /// of clock skew, where a node at 1.05 measures every duration (its TTL checks, keepalive
    /// ticks, fencing and Raft timers) 5 % short. Keep `drift_margin` above the skew between
    /// any two nodes (safe while `fastest / slowest <= 1 / (1 - drift_margin)`).
    pub clock_rate: f64,
}

/// The longest any of the registry's intervals and timeouts may be. Past it a setting is
/// surely a mistake (a unit mixed up), and the sums and products the registry makes of them
/// (a deadline, twice an interval) would overflow.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

impl RegistryConfig {
    /// How long a node counts its session valid after sending a keepalive that is then
    /// acknowledged: TTL x (1 - drift margin), on this node's clock.
    pub(crate) fn session_validity(&self) -> Duration {
        self.on_local_clock(self.session_ttl.mul_f64(1.0 - self.drift_margin))
    }

    /// How long `duration`, measured by this node's clock, lasts in true time.
    pub(crate) fn on_local_clock(&self, duration: Duration) -> Duration {
        duration.div_f64(self.clock_rate)
    }

    /// Defaults, keeping data under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        RegistryConfig {
            data_dir: data_dir.into(),
            bootstrap: false,
            voters: 3,
            session_ttl: Duration::from_secs(1),
            // A node stays valid for TTL x 0.9 after its last acknowledged keepalive was sent; at
            // 100 ms that leaves 0.8 s or more after a leader dies, enough to renew with the
            // next leader (elected within 0.5 s, below) before fencing itself for nothing.
            keepalive_interval: Duration::from_millis(100),
            voter_grace: Duration::from_secs(30),
            drift_margin: 0.1,
            request_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_millis(50),
            // A follower that heard from a leader waits its lease (openraft: the range's upper
            // end) plus a random time in the range before it stands, so a dead leader is
            // replaced 0.40-0.50 s after its last heartbeat.
            election_timeout: (Duration::from_millis(150), Duration::from_millis(250)),
            // openraft's defaults.
            snapshot_every: 5000,
            log_kept_after_snapshot: 1000,
            inline_storage: false,
            clock_rate: 1.0,
        }
    }

    /// Checks the settings, naming the first one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let max = crate::state::MAX_VOTERS as usize;
        if !(1..=max).contains(&self.voters) {
            return Err(format!(
                "registry.voters must be from 1 to {max}, not {}",
                self.voters
            ));
        }
        // Each drives a timer or bounds a wait; zero would spin a timer or fail every call,
        // and a huge one would overflow the deadlines made of it.
        for (name, value) in [
            ("session_ttl", self.session_ttl),
            ("keepalive_interval", self.keepalive_interval),
            ("voter_grace", self.voter_grace),
            ("request_timeout", self.request_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
        ] {
            if value < Duration::from_millis(1) {
                return Err(format!(
                    "registry.{name} must be at least 1 ms, not {value:?}"
                ));
            }
            if value > MAX_INTERVAL {
                return Err(format!(
                    "registry.{name} must be at most {MAX_INTERVAL:?} (a day), not {value:?}"
                ));
            }
        }
        if self.election_timeout.1 > MAX_INTERVAL {
            return Err(format!(
                "registry.election_timeout must end at most {MAX_INTERVAL:?} (a day), not {:?}",
                self.election_timeout.1
            ));
        }
        if !(0.0..0.5).contains(&self.drift_margin) {
            return Err(format!(
                "registry.drift_margin must be in [0, 0.5), not {}",
                self.drift_margin
            ));
        }
        if self.snapshot_every == 0 {
            return Err("registry.snapshot_every must be at least 1 entry".into());
        }
        if !(0.5..=2.0).contains(&self.clock_rate) {
            return Err(format!(
                "registry.clock_rate must be in [0.5, 2], not {}",
                self.clock_rate
            ));
        }
        if self.keepalive_interval.saturating_mul(2)
            >= self.session_ttl.mul_f64(1.0 - self.drift_margin)
        {
            return Err(format!(
                "registry.keepalive_interval ({:?}) must be under half the session TTL ({:?}) less the drift margin",
                self.keepalive_interval, self.session_ttl
            ));
        }
        let (min, max) = self.election_timeout;
        if min <= self.heartbeat_interval.saturating_mul(2) || max <= min {
            return Err(format!(
                "registry.election_timeout ({min:?}..{max:?}) must exceed twice the heartbeat interval ({:?}) and be a range",
                self.heartbeat_interval
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_every_zero_entries_are_refused_by_name() {
        let mut config = RegistryConfig::new("data");
        assert_eq!(config.validate(), Ok(()));
        config.snapshot_every = 0;
        let problem = config.validate().unwrap_err();
        assert!(problem.contains("registry.snapshot_every"), "{problem}");
    }

    /// A huge interval is refused by name, not taken (and later overflowed) nor a panic.
    #[test]
    fn huge_intervals_are_refused_by_name() {
        for (name, set) in [
            (
                "keepalive_interval",
                (|c| c.keepalive_interval = Duration::MAX) as fn(&mut RegistryConfig),
            ),
            ("heartbeat_interval", |c| {
                c.heartbeat_interval = Duration::MAX
            }),
            ("request_timeout", |c| c.request_timeout = Duration::MAX),
            ("session_ttl", |c| c.session_ttl = Duration::MAX),
            ("voter_grace", |c| c.voter_grace = Duration::MAX),
            ("election_timeout", |c| {
                c.election_timeout = (Duration::from_secs(1), Duration::MAX)
            }),
        ] {
            let mut config = RegistryConfig::new("data");
            set(&mut config);
            let problem = config.validate().unwrap_err();
            assert!(
                problem.contains(&format!("registry.{name} must")) && problem.contains("a day"),
                "{problem}"
            );
        }
        let mut config = RegistryConfig::new("data");
        config.session_ttl = MAX_INTERVAL;
        config.request_timeout = MAX_INTERVAL;
        assert_eq!(config.validate(), Ok(()), "a day is allowed");
    }

    #[test]
    fn zero_intervals_are_refused_by_name() {
        for (name, set) in [
            (
                "keepalive_interval",
                (|c| c.keepalive_interval = Duration::ZERO) as fn(&mut RegistryConfig),
            ),
            ("heartbeat_interval", |c| {
                c.heartbeat_interval = Duration::ZERO
            }),
            ("request_timeout", |c| c.request_timeout = Duration::ZERO),
            ("session_ttl", |c| c.session_ttl = Duration::ZERO),
            ("voter_grace", |c| c.voter_grace = Duration::ZERO),
        ] {
            let mut config = RegistryConfig::new("data");
            set(&mut config);
            let problem = config.validate().unwrap_err();
            assert!(
                problem.contains(&format!("registry.{name} must be at least 1 ms")),
                "{problem}"
            );
        }
    }
}
