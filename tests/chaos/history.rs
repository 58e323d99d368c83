//! The recorded histories and the invariants checked on them.
//!
//! The nodes record what they saw (see `child.rs`); the test records what it did: when each
//! incarnation died, when it was paused, and when the registry's voters could not form a
//! majority. Times are microseconds of the system clock.

use std::collections::BTreeMap;

/// A node incarnation: name and incarnation number.
pub(crate) type Incarnation = (String, u64);

/// The session TTL of the nodes (the registry's default).
pub(crate) const TTL: u128 = 1_000_000;
/// How long a node counts its session valid after its last renewal was sent: the TTL less
/// the default drift margin of 10 %.
pub(crate) const VALID: u128 = TTL * 9 / 10;
/// How long past the session TTL a name may still resolve to a dead node's actor: the
/// leader's expiry sweep, a new leader's wait of one TTL, the commit, and the feed to the
/// looking node's copy, on a loaded two-core machine. Generous on purpose: what the check
/// catches is a name that is never released, or released only much later.
pub(crate) const NAME_MARGIN: u128 = 10_000_000;
/// How long past the session TTL a name may still resolve to a dead node's actor once one
/// leader has led (and had a majority) without a break since the death: the leader's expiry
/// sweep, the commit, and the feed to the looking node's copy, on a loaded machine.
pub(crate) const LEADER_MARGIN: u128 = 1_500_000;

/// What the test did, as it did it.
#[derive(Default, Debug)]
pub(crate) struct Timeline {
    /// When each incarnation died (killed, or exited after its session expired).
    pub(crate) deaths: BTreeMap<Incarnation, u128>,
    /// When each incarnation was paused: (stopped, resumed).
    pub(crate) pauses: BTreeMap<Incarnation, Vec<(u128, u128)>>,
    /// When each voter could not take part in the registry (dead until its next incarnation
    /// was ready, paused, or cut off), by voter name.
    pub(crate) voter_gaps: BTreeMap<String, Vec<(u128, u128)>>,
}

impl Timeline {
    /// Intervals in which at least two of the three voters were out: no majority.
    pub(crate) fn no_quorum(&self) -> Vec<(u128, u128)> {
        let mut edges: Vec<(u128, i32)> = Vec::new();
        for gaps in self.voter_gaps.values() {
            for &(from, to) in gaps {
                edges.push((from, 1));
                edges.push((to, -1));
            }
        }
        // Ends before starts at one instant: touching gaps do not overlap.
        edges.sort_by_key(|&(at, delta)| (at, delta));
        let (mut out, mut since, mut lost) = (0, 0, Vec::new());
        for (at, delta) in edges {
            let before = out;
            out += delta;
            if before < 2 && out >= 2 {
                since = at;
            } else if before >= 2 && out < 2 {
                lost.push((since, at));
            }
        }
        lost
    }

    /// Until when a name of an incarnation that died at `death` may still resolve: a TTL and
    /// the margin after the registry had a majority again, pushed back by every loss of the
    /// majority that began before that.
    pub(crate) fn name_deadline(&self, death: u128, no_quorum: &[(u128, u128)]) -> u128 {
        let mut from = death;
        loop {
            let deadline = from + TTL + NAME_MARGIN;
            match no_quorum
                .iter()
                .filter(|&&(start, end)| start <= deadline && end > from)
                .map(|&(_, end)| end)
                .max()
            {
                Some(end) => from = end,
                None => return deadline,
            }
        }
    }

    /// The longest time between `death` and `at` during which one leader led without a break,
    /// could itself be reached (not dead, paused or cut off) and had a majority: time enough
    /// to have counted a session silent since `death` down once it exceeds the TTL (a leader
    /// also waits a TTL after its election before it expires any session).
    pub(crate) fn stable_leadership(
        &self,
        leads: &[Lead],
        death: u128,
        at: u128,
        no_quorum: &[(u128, u128)],
    ) -> u128 {
        let mut longest = 0;
        for lead in leads {
            let end = lead
                .end
                .or_else(|| self.deaths.get(&lead.leader).copied())
                .unwrap_or(u128::MAX)
                .min(at);
            let from = lead.start.max(death);
            if from >= end {
                continue;
            }
            let mut blocked: Vec<(u128, u128)> = no_quorum.to_vec();
            blocked.extend(self.voter_gaps.get(&lead.leader.0).into_iter().flatten());
            blocked.sort_unstable();
            let mut cursor = from;
            for (start, stop) in blocked {
                if stop <= cursor {
                    continue;
                }
                if start >= end {
                    break;
                }
                longest = longest.max(start.saturating_sub(cursor));
                cursor = cursor.max(stop);
            }
            longest = longest.max(end.saturating_sub(cursor));
        }
        longest
    }
}

/// One hold of a lock, as its holder recorded it.
#[derive(Clone, Debug)]
pub(crate) struct Hold {
    pub(crate) lock: String,
    pub(crate) token: u64,
    pub(crate) holder: Incarnation,
    /// When the holder first saw the lease valid.
    pub(crate) start: u128,
    /// When the holder asked for the lock.
    pub(crate) asked: u128,
    /// The last instant the holder saw it valid, if it recorded the end.
    pub(crate) end: Option<u128>,
    pub(crate) reason: String,
}

/// A name resolved on a node.
#[derive(Clone, Debug)]
pub(crate) struct Lookup {
    pub(crate) at: u128,
    pub(crate) observer: String,
    pub(crate) name: String,
    pub(crate) holder: Incarnation,
}

/// A spell of leading the registry, as the leader recorded it.
#[derive(Clone, Debug)]
pub(crate) struct Lead {
    pub(crate) leader: Incarnation,
    pub(crate) start: u128,
    /// When it recorded that it no longer led; `None` if it died leading, or led to the end.
    pub(crate) end: Option<u128>,
}

/// A hold's lock, token, holder name and holder incarnation.
type HoldKey = (String, u64, String, u64);

/// Everything the nodes recorded.
#[derive(Default, Debug)]
pub(crate) struct Records {
    pub(crate) holds: Vec<Hold>,
    pub(crate) lookups: Vec<Lookup>,
    pub(crate) leads: Vec<Lead>,
    /// Acknowledged puts: key -> (value, revision).
    pub(crate) acks: BTreeMap<String, (String, u64)>,
    /// Lines that did not parse: cut short by a `kill -9` during their write.
    pub(crate) torn: usize,
}

impl Records {
    /// Parses history files (`acq`, `end`, `look`, `lead`, `unlead` and `ack` lines, each
    /// ending with ` .`). A
    /// line cut short by a `kill -9` in the middle of its write lacks the end mark; it is
    /// counted in `torn` and otherwise ignored.
    pub(crate) fn parse(texts: &[String]) -> Records {
        let mut records = Records::default();
        let mut open: BTreeMap<HoldKey, usize> = BTreeMap::new();
        let mut ends = Vec::new();
        for line in texts.iter().flat_map(|t| t.lines()) {
            if records.parse_line(line, &mut open, &mut ends).is_none() && !line.is_empty() {
                records.torn += 1;
            }
        }
        for (key, end, reason) in ends {
            if let Some(&i) = open.get(&key) {
                records.holds[i].end = Some(end);
                records.holds[i].reason = reason;
            }
        }
        records
    }

    fn parse_line(
        &mut self,
        line: &str,
        open: &mut BTreeMap<HoldKey, usize>,
        ends: &mut Vec<(HoldKey, u128, String)>,
    ) -> Option<()> {
        // Every record ends with " .": a line without it was cut short.
        let w: Vec<&str> = line.strip_suffix(" .")?.split_whitespace().collect();
        let num = |i: usize| -> Option<u128> { w.get(i)?.parse().ok() };
        let word = |i: usize| -> Option<String> { w.get(i).map(|s| (*s).to_owned()) };
        match *w.first()? {
            "acq" if w.len() == 7 => {
                let hold = Hold {
                    lock: word(1)?,
                    token: num(2)? as u64,
                    holder: (word(3)?, num(4)? as u64),
                    start: num(5)?,
                    asked: num(6)?,
                    end: None,
                    reason: String::new(),
                };
                let key = (hold.lock.clone(), hold.token, word(3)?, hold.holder.1);
                open.insert(key, self.holds.len());
                self.holds.push(hold);
            }
            "end" if w.len() == 7 => ends.push((
                (word(1)?, num(2)? as u64, word(3)?, num(4)? as u64),
                num(5)?,
                word(6)?,
            )),
            "look" if w.len() == 6 => self.lookups.push(Lookup {
                at: num(1)?,
                observer: word(2)?,
                name: word(3)?,
                holder: (word(4)?, num(5)? as u64),
            }),
            "lead" if w.len() == 4 => self.leads.push(Lead {
                leader: (word(2)?, num(3)? as u64),
                start: num(1)?,
                end: None,
            }),
            "unlead" if w.len() == 4 => {
                let leader = (word(2)?, num(3)? as u64);
                let lead = self
                    .leads
                    .iter_mut()
                    .rfind(|l| l.leader == leader && l.end.is_none())?;
                lead.end = Some(num(1)?);
            }
            "ack" if w.len() == 4 => {
                self.acks.insert(word(1)?, (word(2)?, num(3)? as u64));
            }
            _ => return None,
        }
        Some(())
    }
}

/// What the lock check found.
#[derive(Default, Debug)]
pub(crate) struct LockReport {
    pub(crate) violations: Vec<String>,
    /// Holds whose holder, paused past its session's validity, still saw the lease valid
    /// after it was resumed: (hold, resumed at, last seen valid, a later grant that had begun
    /// by then). The scenario fails on any.
    pub(crate) late: Vec<(Hold, u128, u128, Option<u64>)>,
    /// Grants by lock.
    pub(crate) grants: BTreeMap<String, usize>,
}

/// Invariant 1: per lock, tokens are unique and, in token order, every hold ends before the
/// next begins.
///
/// A hold ends at the last instant its holder saw the lease valid; a holder that died before
/// recording it ends at its death. A holder paused for longer than a session's validity
/// while it held the lease could not count on it past (pause start + validity), whatever it
/// saw after it was resumed: its hold is cut there, and what it saw afterwards is reported in
/// `late`. A grant first seen after such a pause (the call waited in line through it) is a
/// lease of its own, valid only if the node renewed its session after the resume; it is
/// judged like any other hold, by what its holder saw.
pub(crate) fn check_locks(records: &Records, timeline: &Timeline) -> LockReport {
    let mut report = LockReport::default();
    let mut by_lock: BTreeMap<&str, Vec<(Hold, u128)>> = BTreeMap::new();
    for hold in &records.holds {
        let died = timeline.deaths.get(&hold.holder).copied();
        let mut end = hold.end.or(died).unwrap_or(u128::MAX);
        let seen = hold.end.unwrap_or(hold.start);
        let mut resumed_late = None;
        for &(stopped, resumed) in timeline.pauses.get(&hold.holder).into_iter().flatten() {
            // A pause while the lease was held.
            if stopped >= hold.start && stopped < end && resumed - stopped > VALID {
                if seen > resumed {
                    resumed_late = Some(resumed);
                }
                end = end.min(stopped + VALID);
            }
        }
        if let Some(resumed) = resumed_late {
            report.late.push((hold.clone(), resumed, seen, None));
        }
        by_lock
            .entry(hold.lock.as_str())
            .or_default()
            .push((hold.clone(), end));
    }
    for (lock, mut holds) in by_lock {
        holds.sort_by_key(|(hold, _)| hold.token);
        report.grants.insert(lock.to_owned(), holds.len());
        for pair in holds.windows(2) {
            let (a, b) = (&pair[0].0, &pair[1].0);
            if a.token == b.token {
                report.violations.push(format!(
                    "lock {lock}: token {} granted twice: {a:?} and {b:?}",
                    a.token
                ));
            }
        }
        for late in report.late.iter_mut().filter(|l| l.0.lock == lock) {
            late.3 = holds
                .iter()
                .find(|(h, _)| h.token > late.0.token && h.start < late.2)
                .map(|(h, _)| h.token);
        }
        // A hold cut to nothing by a pause was never one its holder could count on. Between
        // the others, consecutive checks suffice: each ends after it begins.
        holds.retain(|(hold, end)| *end > hold.start);
        for pair in holds.windows(2) {
            let ((a, a_end), (b, _)) = (&pair[0], &pair[1]);
            if b.start < *a_end {
                report.violations.push(format!(
                    "lock {lock}: token {} held by {}#{} until {} (recorded end {:?}, {}) \
                     overlaps token {} held by {}#{} from {} ({} us)",
                    a.token,
                    a.holder.0,
                    a.holder.1,
                    a_end,
                    a.end,
                    a.reason,
                    b.token,
                    b.holder.0,
                    b.holder.1,
                    b.start,
                    a_end - b.start
                ));
            }
        }
    }
    report
}

/// Invariant 2: no name resolves to an actor of a dead incarnation past the TTL (and a
/// margin) after the registry could decide so: after one leader had led, with a majority,
/// for that long since the death (`LEADER_MARGIN`), and, whoever led, after the registry
/// had had a majority for that long (`NAME_MARGIN`, which holds even if the leaders' records
/// were wrong).
pub(crate) fn check_names(records: &Records, timeline: &Timeline) -> Vec<String> {
    let no_quorum = timeline.no_quorum();
    let mut worst: BTreeMap<(String, Incarnation), (u128, String)> = BTreeMap::new();
    for look in &records.lookups {
        let Some(&death) = timeline.deaths.get(&look.holder) else {
            continue;
        };
        let deadline = timeline.name_deadline(death, &no_quorum);
        let led = timeline.stable_leadership(&records.leads, death, look.at, &no_quorum);
        if look.at > deadline || led > TTL + LEADER_MARGIN {
            let key = (look.name.clone(), look.holder.clone());
            let late = look.at - death;
            let entry = worst.entry(key).or_insert((0, String::new()));
            if late > entry.0 {
                *entry = (late, look.observer.clone());
            }
        }
    }
    worst
        .into_iter()
        .map(|((name, (node, inc)), (late, observer))| {
            format!(
                "name {name} still resolved to {node}#{inc} on {observer} {:.1} s after it died",
                late as f64 / 1e6
            )
        })
        .collect()
}

/// What the config check found.
#[derive(Default, Debug)]
pub(crate) struct AckReport {
    /// Acknowledged writes whose value is not there: lost.
    pub(crate) lost: Vec<String>,
    /// Acknowledged writes whose value is there, at another revision than the one the writer
    /// was given, or applied more than once (every key is written once): a put sent again
    /// after its first attempt had committed, which the registry must apply once.
    pub(crate) reapplied: Vec<String>,
}

/// Invariant 4: every acknowledged put reads back with its value from `dump`
/// (`KEY VALUE REVISION VERSION` lines). Every key is written once, so a version above 1 or a
/// revision other than the acknowledged one means the put was applied again.
pub(crate) fn check_acks(records: &Records, dump: &str) -> AckReport {
    let stored: BTreeMap<&str, (&str, u64, u64)> = dump
        .lines()
        .filter_map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            let number = |i: usize| -> Option<u64> { w.get(i)?.parse().ok() };
            Some((*w.first()?, (*w.get(1)?, number(2)?, number(3)?)))
        })
        .collect();
    let mut report = AckReport::default();
    for (key, (value, revision)) in &records.acks {
        match stored.get(key.as_str()) {
            Some((found, ..)) if found != value => report.lost.push(format!(
                "acknowledged {key}={value} (revision {revision}) reads back as {found}"
            )),
            None => report.lost.push(format!(
                "acknowledged {key}={value} (revision {revision}) is gone"
            )),
            Some((_, at, version)) if at != revision || *version != 1 => {
                report.reapplied.push(format!(
                    "{key}: acknowledged at revision {revision}, stored at revision {at} as \
                     version {version}"
                ));
            }
            Some(_) => {}
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(node: &str, n: u64) -> Incarnation {
        (node.to_owned(), n)
    }

    fn records(lines: &[&str]) -> Records {
        let lines: Vec<String> = lines.iter().map(|l| format!("{l} .")).collect();
        Records::parse(&[lines.join("\n")])
    }

    #[test]
    fn holds_in_token_order_that_overlap_are_found() {
        let r = records(&[
            "acq mutex 5 n1 1 100 90",
            "end mutex 5 n1 1 200 released",
            "acq mutex 7 n2 1 150 90",
            "end mutex 7 n2 1 300 released",
        ]);
        let report = check_locks(&r, &Timeline::default());
        assert_eq!(report.violations.len(), 1, "{report:?}");
        assert!(report.violations[0].contains("token 5"));
    }

    #[test]
    fn a_killed_holder_holds_until_its_death() {
        let r = records(&["acq mutex 5 n1 1 100 90", "acq mutex 7 n2 1 150 90"]);
        let mut timeline = Timeline::default();
        timeline.deaths.insert(inc("n1", 1), 140);
        assert!(check_locks(&r, &timeline).violations.is_empty());
        timeline.deaths.insert(inc("n1", 1), 160);
        assert_eq!(check_locks(&r, &timeline).violations.len(), 1);
    }

    #[test]
    fn a_long_pause_cuts_the_hold_and_what_the_holder_saw_after_it_is_reported() {
        let r = records(&[
            "acq mutex 5 n1 1 100 90",
            "end mutex 5 n1 1 5000000 lost",
            "acq mutex 7 n2 1 2000000 90",
        ]);
        let mut timeline = Timeline::default();
        timeline
            .pauses
            .insert(inc("n1", 1), vec![(1_000, 4_000_000)]);
        let report = check_locks(&r, &timeline);
        assert!(report.violations.is_empty(), "{report:?}");
        assert_eq!(report.late.len(), 1);
        assert_eq!(report.late[0].3, Some(7));
    }

    #[test]
    fn a_grant_first_seen_after_a_long_pause_is_judged_by_what_its_holder_saw() {
        // n1 asked at 90 µs, was paused from 1 ms to 4 s while in line, and saw the grant at
        // 4.5 s: not a lease held across the pause.
        let mut timeline = Timeline::default();
        timeline
            .pauses
            .insert(inc("n1", 1), vec![(1_000, 4_000_000)]);
        let alone = records(&[
            "acq mutex 5 n1 1 4500000 90",
            "end mutex 5 n1 1 5000000 released",
        ]);
        let report = check_locks(&alone, &timeline);
        assert!(
            report.violations.is_empty() && report.late.is_empty(),
            "{report:?}"
        );
        // Its hold runs to what it saw, so a later grant before that overlaps.
        let overlapped = records(&[
            "acq mutex 5 n1 1 4500000 90",
            "end mutex 5 n1 1 5000000 released",
            "acq mutex 7 n2 1 4800000 4700000",
        ]);
        assert_eq!(check_locks(&overlapped, &timeline).violations.len(), 1);
    }

    #[test]
    fn names_may_outlive_their_node_by_a_ttl_after_the_majority_is_back() {
        let r = records(&["look 20000000 n2 svc.n1 n1 1"]);
        let mut timeline = Timeline::default();
        timeline.deaths.insert(inc("n1", 1), 1_000_000);
        assert_eq!(check_names(&r, &timeline).len(), 1);
        // The majority was lost from 0.5 s to 15 s: the name could not be released before.
        timeline
            .voter_gaps
            .insert("n1".into(), vec![(500_000, 15_000_000)]);
        timeline
            .voter_gaps
            .insert("n2".into(), vec![(900_000, 16_000_000)]);
        assert_eq!(timeline.no_quorum(), vec![(900_000, 15_000_000)]);
        assert!(check_names(&r, &timeline).is_empty());
    }

    #[test]
    fn names_must_go_once_one_leader_led_a_ttl_and_the_margin_since_the_death() {
        let mut timeline = Timeline::default();
        timeline.deaths.insert(inc("n1", 1), 1_000_000);
        // n2 led from the start; cut off from 1.5 s to 2 s; the majority lost from 3 s to
        // 4 s.
        timeline
            .voter_gaps
            .insert("n2".into(), vec![(1_500_000, 2_000_000)]);
        timeline
            .voter_gaps
            .insert("n3".into(), vec![(3_000_000, 4_000_000)]);
        timeline
            .voter_gaps
            .insert("n1".into(), vec![(1_000_000, 5_000_000)]);
        let lead = "lead 0 n2 1";
        let no_quorum = timeline.no_quorum();
        let at = |r: &Records, t| timeline.stable_leadership(&r.leads, 1_000_000, t, &no_quorum);
        let r = records(&[lead]);
        // From the death to the cut: 0.5 s; from 2 s to 3 s: 1 s; from 4 s on: the rest.
        assert_eq!(at(&r, 3_500_000), 1_000_000);
        assert_eq!(at(&r, 5_000_000), 1_000_000);
        assert_eq!(at(&r, 7_000_000), 3_000_000);
        // n2 stopped leading at 5 s, n3 led from 6 s.
        let r = records(&[lead, "unlead 5000000 n2 1", "lead 6000000 n3 1"]);
        assert_eq!(at(&r, 7_000_000), 1_000_000);
        // A name of n1 seen at 6.4 s: n2 led, reachable and with a majority, for 1 s before
        // that; at 9 s, n3 for 3 s: too long.
        let look = |t: u128| format!("look {t} n4 svc.n1 n1 1");
        let early = records(&[
            lead,
            "unlead 5000000 n2 1",
            "lead 6000000 n3 1",
            &look(6_400_000),
        ]);
        assert!(check_names(&early, &timeline).is_empty());
        let late = records(&[
            lead,
            "unlead 5000000 n2 1",
            "lead 6000000 n3 1",
            &look(9_000_000),
        ]);
        assert_eq!(check_names(&late, &timeline).len(), 1);
    }

    #[test]
    fn torn_lines_are_counted_not_read() {
        let r = Records::parse(&[
            "ack chaos/a v1 10 .\nack chaos/b v2 1\nlook 5 n1 svc.n2 n2 1 .\n".into(),
        ]);
        assert_eq!((r.acks.len(), r.lookups.len(), r.torn), (1, 1, 1));
    }

    #[test]
    fn lost_acknowledged_writes_are_named() {
        let r = records(&[
            "ack chaos/a v1 10",
            "ack chaos/b v2 11",
            "ack chaos/c v3 12",
        ]);
        let report = check_acks(&r, "chaos/a v1 10 1\nchaos/b v9 12 2\nchaos/c v3 13 2\n");
        assert_eq!(report.lost.len(), 1);
        assert!(report.lost[0].contains("chaos/b"), "{report:?}");
        assert_eq!(report.reapplied.len(), 1);
        assert!(report.reapplied[0].contains("chaos/c"), "{report:?}");
    }
}
