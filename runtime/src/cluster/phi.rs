//! The phi accrual failure detector (Hayashibara et al., as in Akka and Cassandra).
//!
//! Instead of a yes/no timeout, it turns the time since a peer's last heartbeat into a
//! suspicion level `phi`, from the distribution of the intervals seen so far: `phi = 1` means
//! about a 10 % chance that a heartbeat this late would still arrive, `phi = 8` about 10^-8.
//! Peers whose heartbeats are steady are suspected quickly; jittery ones get more slack.
//!
//! Pure code: heartbeats and the current time are passed in, so tests use synthetic times.

use std::collections::VecDeque;
use std::time::Duration;

/// Failure detector settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhiConfig {
    /// How often peers send heartbeats.
    pub heartbeat_interval: Duration,
    /// `phi` at and above which a peer is suspected.
    pub threshold: f64,
    /// Extra delay tolerated on top of the expected interval (scheduling pauses, bursts).
    pub acceptable_pause: Duration,
    /// Floor for the standard deviation of intervals, so a very regular peer is not suspected
    /// after a tiny delay.
    pub min_std_dev: Duration,
    /// How many intervals to remember.
    pub max_samples: usize,
}

impl Default for PhiConfig {
    /// Tuned to suspect a dead peer within about half a second on a LAN: heartbeats every
    /// 100 ms, 200 ms of acceptable pause, a 50 ms floor on the deviation, threshold 8.
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(100),
            threshold: 8.0,
            acceptable_pause: Duration::from_millis(200),
            min_std_dev: Duration::from_millis(50),
            max_samples: 200,
        }
    }
}

/// The detector for one peer.
#[derive(Clone, Debug)]
pub struct PhiAccrual {
    config: PhiConfig,
    /// Inter-arrival times in milliseconds, oldest first.
    intervals: VecDeque<f64>,
    sum: f64,
    sum_squares: f64,
    last: Option<Duration>,
}

impl PhiAccrual {
    /// A detector that has seen no heartbeat yet. Its history starts with two synthetic
    /// intervals around the configured heartbeat interval, so that the first real ones are
    /// judged sensibly.
    pub fn new(config: PhiConfig) -> Self {
        let mut detector = Self {
            config,
            intervals: VecDeque::with_capacity(config.max_samples.max(2)),
            sum: 0.0,
            sum_squares: 0.0,
            last: None,
        };
        let mean = millis(config.heartbeat_interval);
        let spread = mean / 4.0;
        detector.record(mean - spread);
        detector.record(mean + spread);
        detector
    }

    /// A heartbeat arrived at `now` (any monotonic clock, as time since an origin).
    pub fn heartbeat(&mut self, now: Duration) {
        if let Some(last) = self.last {
            self.record(millis(now.saturating_sub(last)));
        }
        self.last = Some(now);
    }

    /// The peer is back on a new connection at `now`: counts from there, without taking the
    /// time it was away as an interval between heartbeats. Recorded, one outage of a few
    /// seconds would stay in the history for `max_samples` heartbeats and slow the detection
    /// of a real crash for that long (Akka leaves such a gap out too). Pauses within a
    /// connection still count, so the detector adapts to a peer slower than expected.
    pub fn reconnected(&mut self, now: Duration) {
        self.last = Some(now);
    }

    fn record(&mut self, interval: f64) {
        if self.intervals.len() >= self.config.max_samples.max(2) {
            if let Some(old) = self.intervals.pop_front() {
                self.sum -= old;
                self.sum_squares -= old * old;
            }
        }
        self.intervals.push_back(interval);
        self.sum += interval;
        self.sum_squares += interval * interval;
    }

    /// The suspicion level at `now`; 0 before the first heartbeat.
    pub fn phi(&self, now: Duration) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let n = self.intervals.len() as f64;
        let mean = self.sum / n + millis(self.config.acceptable_pause);
        let variance = (self.sum_squares / n - (self.sum / n).powi(2)).max(0.0);
        let std_dev = variance.sqrt().max(millis(self.config.min_std_dev));
        phi(millis(now.saturating_sub(last)), mean, std_dev)
    }

    /// True while `phi` is below the threshold.
    pub fn is_available(&self, now: Duration) -> bool {
        self.phi(now) < self.config.threshold
    }

    /// The settings.
    pub fn config(&self) -> &PhiConfig {
        &self.config
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `-log10(1 - F(elapsed))` for a normal distribution, with the logistic approximation of its
/// tail used by Akka (accurate to about 10^-4 and never infinite).
fn phi(elapsed: f64, mean: f64, std_dev: f64) -> f64 {
    let y = (elapsed - mean) / std_dev;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    if elapsed > mean {
        // `e` underflows to 0 after very long silences; keep phi large but finite.
        -(e.max(f64::MIN_POSITIVE) / (1.0 + e)).log10()
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn steady(beats: u32, every: Duration) -> PhiAccrual {
        let mut d = PhiAccrual::new(PhiConfig::default());
        for i in 0..beats {
            d.heartbeat(every * i);
        }
        d
    }

    #[test]
    fn no_suspicion_before_the_first_heartbeat() {
        let d = PhiAccrual::new(PhiConfig::default());
        assert_eq!(d.phi(Duration::from_secs(100)), 0.0);
        assert!(d.is_available(Duration::from_secs(100)));
    }

    /// An outage (here 3 s away, then the peer back on a new connection) leaves no trace in
    /// the history: a crash afterwards is suspected as soon as before it.
    #[test]
    fn the_first_heartbeat_after_an_outage_does_not_slow_detection() {
        let before = steady(50, 100 * MS);
        let mut after = steady(50, 100 * MS);
        let back = 4900 * MS + 3000 * MS;
        after.reconnected(back);
        for silence in [300u32, 500, 700, 1000] {
            let expected = before.phi(4900 * MS + silence * MS);
            let phi = after.phi(back + silence * MS);
            assert!(
                (phi - expected).abs() < 1e-9,
                "after {silence} ms of silence: phi {phi}, {expected} without the outage"
            );
        }
    }

    #[test]
    fn phi_grows_with_silence() {
        let d = steady(50, 100 * MS);
        let last = 4900 * MS;
        let mut previous = -1.0;
        for after in [0u32, 100, 200, 300, 400, 500, 600, 800] {
            let phi = d.phi(last + after * MS);
            assert!(phi > previous, "phi must grow: {phi} after {after} ms");
            previous = phi;
        }
    }

    #[test]
    fn a_steady_peer_is_available_on_time_and_suspected_well_within_a_second() {
        let d = steady(50, 100 * MS);
        let last = 4900 * MS;
        assert!(d.is_available(last + 100 * MS));
        assert!(d.is_available(last + 300 * MS));
        assert!(!d.is_available(last + 1000 * MS));
        // Find when it crosses the threshold: between the acceptable pause and one second.
        let crossing = (0..2000u32)
            .map(|ms| last + ms * MS)
            .find(|&t| !d.is_available(t))
            .unwrap();
        let after = crossing - last;
        assert!(
            after > 300 * MS && after < 700 * MS,
            "suspected after {after:?}"
        );
    }

    #[test]
    fn jittery_peers_get_more_slack_than_steady_ones() {
        let steady = steady(60, 100 * MS);
        let mut jittery = PhiAccrual::new(PhiConfig::default());
        let mut t = Duration::ZERO;
        for i in 0..60u64 {
            t += if i % 2 == 0 { 20 * MS } else { 380 * MS };
            jittery.heartbeat(t);
        }
        let silence = 600 * MS;
        assert!(jittery.phi(t + silence) < steady.phi(5900 * MS + silence));
    }

    #[test]
    fn old_samples_are_forgotten() {
        let config = PhiConfig {
            max_samples: 10,
            ..PhiConfig::default()
        };
        let mut d = PhiAccrual::new(config);
        let mut t = Duration::ZERO;
        // A slow past, then a fast present: only the present counts.
        for _ in 0..20 {
            t += 1000 * MS;
            d.heartbeat(t);
        }
        for _ in 0..20 {
            t += 10 * MS;
            d.heartbeat(t);
        }
        assert_eq!(d.intervals.len(), 10);
        assert!(!d.is_available(t + 800 * MS));
    }

    #[test]
    fn phi_is_finite_for_huge_silences() {
        let d = steady(10, 100 * MS);
        let phi = d.phi(Duration::from_secs(1_000_000));
        assert!(phi.is_finite() && phi > 8.0, "{phi}");
    }
}
