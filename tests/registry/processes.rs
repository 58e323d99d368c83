//! Three voters in three processes.

use std::time::Instant;

use crate::child::{
    ENV_DRIFT_MARGIN, ENV_LOG_KEPT, ENV_REQUEST_TIMEOUT_MS, ENV_SESSION_TTL_MS, ENV_SNAPSHOT_EVERY,
    ENV_VOTER_GRACE_MS, ENV_VOTERS,
};
use crate::util::{
    ChildNode, certificates, leader, one_cluster_at_a_time, three_voters, three_voters_with,
};

#[test]
fn names_groups_locks_and_config_across_three_processes() {
    let _turn = one_cluster_at_a_time();
    let dir = certificates(&["a", "b", "c"]);
    let mut nodes = three_voters(dir.path());
    let [a, b, c] = &mut nodes[..] else {
        unreachable!()
    };

    // Names: one holder, resolved everywhere, taken names refused naming the holder.
    assert!(b.run("register master").starts_with("ok "));
    assert_eq!(c.run("whereis_lin master"), "found b");
    c.run_until("whereis master", "found b");
    let taken = a.run("register master");
    assert!(
        taken.contains("taken by actor") && taken.contains("b#"),
        "{taken}"
    );

    // Groups.
    assert_eq!(a.run("join workers"), "ok");
    assert_eq!(c.run("join workers"), "ok");
    b.run_until("group workers", "members 2");

    // Locks: FIFO hand-over with increasing tokens; try_lock names the holder.
    let first: u64 = a.run("lock l 5000")["granted ".len()..].parse().unwrap();
    let busy = c.run("trylock l");
    assert!(busy.contains("is held by node a#"), "{busy}");
    let waiting = b.send("lock l 10000");
    assert_eq!(a.run("release l"), "ok");
    let second: u64 = b.answer(waiting)["granted ".len()..].parse().unwrap();
    assert!(second > first, "{second} after {first}");

    // Config: put, get, compare-and-set on revisions.
    let rev: u64 = a.run("put cfg/x 1")["ok ".len()..].parse().unwrap();
    assert_eq!(c.run("get cfg/x"), format!("value 1 {rev}"));
    let stale = b.run("cas cfg/x 1 2");
    assert!(stale.contains(&format!("is at revision {rev}")), "{stale}");
    assert!(b.run(&format!("cas cfg/x {rev} 2")).starts_with("ok "));
    assert!(c.run("get cfg/x").starts_with("value 2 "));
}

#[test]
fn killing_the_leader_keeps_writes_going_after_an_election() {
    let _turn = one_cluster_at_a_time();
    let dir = certificates(&["a", "b", "c"]);
    let mut nodes = three_voters(dir.path());
    let acknowledged: Vec<u64> = (0..20)
        .map(|i| {
            nodes[1].run(&format!("put k{i} v{i}"))["ok ".len()..]
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(acknowledged.len(), 20);
    let leader = leader(&mut nodes[0]);
    let at = nodes.iter().position(|n| n.name == leader).unwrap();
    let mut dead = nodes.remove(at);
    let led = raft_position(&dead.run("raft"), "term");
    let killed = Instant::now();
    dead.kill();
    let survivor = &mut nodes[0];
    let answer = survivor.run_until("put after-failover yes", "ok ");
    let failover = killed.elapsed();
    assert!(answer.starts_with("ok "));
    for i in 0..20 {
        let answer = survivor.run(&format!("get k{i}"));
        assert!(
            answer.starts_with(&format!("value v{i} ")),
            "k{i} lost after the leader died: {answer}"
        );
    }
    eprintln!("leader {leader} killed; next write acknowledged after {failover:?}");

    // Back with its data dir, the old leader follows the new one, in a later term, and its
    // copy holds every write, those acknowledged before its death and after.
    let survivor = survivor.addr.clone();
    let last = ("after-failover", "yes");
    let mut back = restart_with_writes(&leader, dir.path(), &survivor, &[], last, "k", 20);
    // Its copy may have had the writes from the leader's feed before the new leader's first
    // AppendEntries reached its Raft (a restarted voter's copy follows the leader until then).
    back.run_until_answer("raft", |answer| raft_position(answer, "term") > led);
}

#[test]
fn session_expiry_releases_names_and_locks_and_downs_the_node() {
    let _turn = one_cluster_at_a_time();
    let dir = certificates(&["a", "b", "c", "d"]);
    let mut nodes = three_voters(dir.path());
    // d is not a voter: killing it never costs the registry its quorum or leader.
    let mut d = ChildNode::start("d", dir.path(), &[nodes[0].addr.clone()], false);
    assert!(d.run("register svc").starts_with("ok "));
    let held: u64 = d.run("lock l 5000")["granted ".len()..].parse().unwrap();
    let waiting = nodes[1].send("lock l 20000");
    nodes[2].run_until("whereis svc", "found d");
    d.kill();
    nodes[0].expect_line("DOWN d");
    nodes[2].expect_line("DOWN d");
    let granted: u64 = nodes[1].answer(waiting)["granted ".len()..]
        .parse()
        .unwrap();
    assert!(granted > held, "token {granted} after {held}");
    assert_eq!(nodes[2].run("whereis_lin svc"), "none");
}

/// A node that does not vote keeps its copy of the registry fed by the leader. Here the
/// leader is killed and comes back under the same name (it is the only voter, so it leads
/// again): a new incarnation, whose feed the copy must take up although the leader's name never
/// changed. The chaos test found copies that froze in this case.
#[test]
fn a_copy_follows_a_leader_that_came_back_under_the_same_name() {
    let _turn = one_cluster_at_a_time();
    let dir = certificates(&["a", "d"]);
    // A TTL long enough that d does not fence itself while a is away: this test is about d's
    // copy, not its session.
    let env = [(ENV_VOTERS, "1"), (ENV_SESSION_TTL_MS, "5000")];
    let mut a = ChildNode::start_with("a", dir.path(), &[], true, &env);
    let mut d = ChildNode::start_with("d", dir.path(), &[a.addr.clone()], false, &env);
    assert_eq!(d.run("leader"), "leader a voters a");
    assert!(a.run("register before").starts_with("ok "));
    d.run_until("whereis before", "found a");

    a.kill();
    // Back with its data dir, whose log makes it the only voter, so it leads again.
    let mut a = ChildNode::start_with("a", dir.path(), &[d.addr.clone()], false, &env);
    assert!(a.run("register after").starts_with("ok "));
    // d's copy hears of the new incarnation's writes...
    d.run_until("whereis after", "found a");
    // ...and of the old incarnation's session expiring, which released the name it held.
    d.run_until("whereis before", "none");
}

/// A voter gone (its session expired, its node not connected) for longer than the voter grace
/// gives its vote to a node that has none, so that the registry can lose another voter and still
/// write. Back with its data dir, whose log still names it a voter, the old voter's copy follows
/// the leader; it takes the vote of the next voter that is gone.
#[test]
fn a_voter_gone_for_good_gives_its_vote_to_another_node() {
    let _turn = one_cluster_at_a_time();
    let dir = certificates(&["a", "b", "c", "d"]);
    let grace = std::time::Duration::from_secs(3);
    let env = [(ENV_VOTER_GRACE_MS, "3000")];
    let mut nodes = three_voters_with(dir.path(), &env);
    let mut d = ChildNode::start_with("d", dir.path(), &[nodes[0].addr.clone()], false, &env);
    assert!(d.run("leader").ends_with(" voters a,b,c"));
    let leader = leader(&mut d);
    let voters = |names: &[&str]| {
        let mut names = names.to_vec();
        names.sort_unstable();
        format!(" voters {}", names.join(","))
    };
    // A voter that does not lead dies first.
    let first = nodes
        .iter()
        .find(|n| n.name != leader)
        .unwrap()
        .name
        .clone();
    let mut kill = |name: &str| nodes.iter_mut().find(|n| n.name == name).unwrap().kill();

    let killed = Instant::now();
    kill(&first);
    let others: Vec<String> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| *n != first)
        .map(String::from)
        .collect();
    d.run_until("leader", &voters(&[&others[0], &others[1], "d"]));
    // Not before the grace: the session expires a TTL after the node's last keepalive, and the
    // grace counts from then (a slower machine only makes this longer).
    let moved = killed.elapsed();
    assert!(moved >= grace, "the vote moved {moved:?} after the kill");

    // Back, the first is no voter, and its copy hears of what was written since.
    let mut back = ChildNode::start_with(&first, dir.path(), &[d.addr.clone()], false, &env);
    assert!(d.run("register after-return").starts_with("ok "));
    back.run_until("whereis after-return", "found d");
    // Told it no longer votes, it stops standing for election: its term, which rose with each
    // try, stays put.
    let still = std::time::Duration::from_millis(1500);
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let mut term = raft_position(&back.run("raft"), "term");
    let mut since = Instant::now();
    while since.elapsed() < still {
        assert!(
            Instant::now() < deadline,
            "the former voter still stands for election (term {term})"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = raft_position(&back.run("raft"), "term");
        if now != term {
            (term, since) = (now, Instant::now());
        }
    }

    // The registry loses a second voter, one that does not lead now, and still writes: two of
    // its three voters are left.
    let leading = crate::util::leader(&mut d);
    let (second, kept) = if others[0] == leading {
        (&others[1], &others[0])
    } else {
        (&others[0], &others[1])
    };
    let term = raft_position(&d.run("raft"), "term");
    kill(second);
    let answer = d.run("put after-second-loss yes");
    assert!(answer.starts_with("ok "), "{answer}");
    // The first takes the vote of the second, its log caught up from where it diverged: as a
    // voter its copy follows its own state machine, which holds the write made meanwhile.
    d.run_until("leader", &voters(&[kept, &first, "d"]));
    back.run_until("get_cached after-second-loss", "value yes");
    assert!(back.run("put through-the-first yes").starts_with("ok "));
    // Taken back in without a new election: the first never stood for election while it was
    // not a voter, so its term was not ahead of the leader's when the leader added it (a
    // later term would have made the leader step down, and writes wait for the next one).
    let after = raft_position(&d.run("raft"), "term");
    assert_eq!(
        after, term,
        "the leader stepped down when the former voter took the vote back"
    );
}

/// The leader leaves on purpose (`Registry::leave`, as a node stopped with Ctrl-C does): it
/// hands its vote to the fourth node before its session closes, and steps down. Then one more
/// of the first voters is killed, and the registry still writes with two of its three voters.
/// Without the hand-over the vote would move only after the voter grace (30 s by default),
/// and the second loss would have cost the quorum.
#[test]
fn a_leader_that_leaves_hands_its_vote_over_first() {
    let _turn = one_cluster_at_a_time();
    let dir = certificates(&["a", "b", "c", "d"]);
    let mut nodes = three_voters(dir.path());
    let mut d = ChildNode::start("d", dir.path(), &[nodes[0].addr.clone()], false);
    assert!(d.run("put before yes").starts_with("ok "));
    let leaving = leader(&mut d);
    let at = nodes.iter().position(|n| n.name == leaving).unwrap();
    let term = raft_position(&d.run("raft"), "term");
    assert_eq!(nodes[at].run("leave"), "ok");
    // Once `leave` returned, the fourth node votes in its place.
    let mut stays: Vec<String> = nodes
        .iter()
        .map(|n| n.name.clone())
        .filter(|n| *n != leaving)
        .collect();
    let mut expected = stays.clone();
    expected.push("d".into());
    expected.sort();
    let answer = d.run_until_answer("leader", |answer| answer.contains(" voters "));
    assert!(
        answer.ends_with(&format!(" voters {}", expected.join(","))),
        "right after the leader {leaving} left: {answer}"
    );
    // It steps down once the configuration without it is applied (it may still lead a moment
    // after `leave` returned); the next leader is elected in a later term, among the new
    // voters.
    let gone = format!("leader {leaving} ");
    d.run_until_answer("leader", |answer| !answer.starts_with(&gone));
    let next = leader(&mut d);
    assert!(raft_position(&d.run("raft"), "term") > term);
    nodes.remove(at).kill();
    // One more of the first voters dies, one that does not lead: two of three are left.
    stays.retain(|n| *n != next);
    if let Some(second) = stays.first() {
        nodes.iter_mut().find(|n| n.name == *second).unwrap().kill();
    }
    let answer = d.run("put after yes");
    assert!(answer.starts_with("ok "), "{answer}");
    assert!(d.run("get before").starts_with("value yes "));
}

/// A voter declared down and restarted at once keeps its vote, past the time the voter grace
/// would have ended had it stayed away, and the registry needs it to write.
#[test]
fn a_voter_declared_down_and_back_at_once_keeps_its_vote() {
    let _turn = one_cluster_at_a_time();
    let dir = certificates(&["a", "b", "c", "d"]);
    let env = [(ENV_VOTER_GRACE_MS, "6000")];
    let mut nodes = three_voters_with(dir.path(), &env);
    let mut d = ChildNode::start_with("d", dir.path(), &[nodes[0].addr.clone()], false, &env);
    let leader = leader(&mut d);
    let at = nodes.iter().position(|n| n.name != leader).unwrap();
    let name = nodes[at].name.clone();
    nodes[at].kill();
    // Gone from here on (on the leader a moment before): its session expired and its node is
    // not connected.
    d.expect_line(&format!("DOWN {name}"));
    let down = Instant::now();
    nodes[at] = ChildNode::start_with(&name, dir.path(), &[d.addr.clone()], false, &env);
    // Had the leader kept counting from the DOWN, the vote would move 6 s after it.
    let watched = std::time::Duration::from_secs(8);
    while down.elapsed() < watched {
        let answer = d.run("leader");
        assert!(
            !answer.contains(" voters ") || answer.ends_with(" voters a,b,c"),
            "the vote moved {:?} after the DOWN: {answer}",
            down.elapsed()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // And it votes: with another voter stopped, the registry writes only with it.
    let leading = crate::util::leader(&mut d);
    let other = nodes
        .iter()
        .position(|n| n.name != leading && n.name != name)
        .unwrap();
    nodes[other].kill();
    let answer = d.run("put with-the-restarted-voter yes");
    assert!(answer.starts_with("ok "), "{answer}");
    assert!(d.run("leader").ends_with(" voters a,b,c"));
}

#[test]
fn a_minority_cannot_write_and_its_lease_holders_fence_themselves() {
    let _turn = one_cluster_at_a_time();
    let dir = certificates(&["a", "b", "c"]);
    // The majority is made by pausing the two other nodes until the leader has fenced itself
    // and failed a write, so they are silent too: past their TTL, the leader (which may lead
    // again when they wake) would rightly expire their sessions. So sessions last 4 s here,
    // the leader fences itself at 60 % of that (2.4 s, a drift margin of 40 %) and gives up
    // its write after 300 ms: the others wake more than a second before they are due.
    let mut nodes = three_voters_with(
        dir.path(),
        &[
            (ENV_SESSION_TTL_MS, "4000"),
            (ENV_DRIFT_MARGIN, "0.4"),
            (ENV_REQUEST_TIMEOUT_MS, "300"),
        ],
    );
    let lone = leader(&mut nodes[0]);
    // Keep the leader's side the minority: its lease must be given up before anyone else
    // could be granted the lock.
    let at = nodes.iter().position(|n| n.name == lone).unwrap();
    let token: u64 = nodes[at].run("lock l 5000")["granted ".len()..]
        .parse()
        .unwrap();
    for (i, node) in nodes.iter().enumerate() {
        if i != at {
            node.signal("-STOP");
        }
    }
    let paused = Instant::now();
    let lost = nodes[at].expect_line("LOST l");
    assert_eq!(lost, format!("LOST l {token}"));
    let fenced_after = paused.elapsed();
    let write = nodes[at].run("put minority yes");
    assert!(write.starts_with("err "), "the minority wrote: {write}");
    let silent_for = paused.elapsed();
    for (i, node) in nodes.iter().enumerate() {
        if i != at {
            node.signal("-CONT");
        }
    }
    // The majority side takes over the lock with a greater token. (Its nodes were paused
    // too, so each fences itself until its next keepalive gets through.)
    let other = (at + 1) % 3;
    let granted: u64 = nodes[other].run_until("lock l 20000", "granted ")["granted ".len()..]
        .parse()
        .unwrap();
    assert!(granted > token);
    eprintln!(
        "minority fenced itself {fenced_after:?} after losing its quorum; the majority was \
         paused for {silent_for:?}"
    );
}

/// A former voter (its vote moved to another node while it was away) started again with the
/// whole registry does not stand for election: the voters its log names hear no leader either
/// at first, but their logs are ahead of its own. Standing, it would raise its term, and the
/// leader that later took it back as a voter would step down for that term.
#[test]
fn a_former_voter_does_not_stand_for_election_when_the_whole_registry_restarts() {
    let _turn = one_cluster_at_a_time();
    let dir = certificates(&["a", "b", "c", "d"]);
    let env = [(ENV_VOTER_GRACE_MS, "3000")];
    let mut nodes = three_voters_with(dir.path(), &env);
    let mut d = ChildNode::start_with("d", dir.path(), &[nodes[0].addr.clone()], false, &env);
    let leader = leader(&mut d);
    let at = nodes.iter().position(|n| n.name != leader).unwrap();
    let former = nodes[at].name.clone();
    let term = raft_position(&nodes[at].run("raft"), "term");
    nodes[at].kill();
    let mut voters: Vec<&str> = ["a", "b", "c", "d"]
        .into_iter()
        .filter(|n| *n != former)
        .collect();
    voters.sort_unstable();
    d.run_until("leader", &format!(" voters {}", voters.join(",")));
    // The former voter, kept as a learner until the vote moved, is dropped from the Raft group
    // (it is gone): no leader replicates to it after the restart.
    d.run_until_answer("raft", |answer| answer.ends_with(" learners -"));
    // Every voter's log holds the new voters before the stop: one that held only the joint
    // configuration (which counts the former voter) would ask it for its vote, raising its term.
    assert!(d.run("put settled yes").starts_with("ok "));
    d.run_until("get_cached settled", "value yes");
    for node in nodes.iter_mut().filter(|n| n.name != former) {
        node.run_until("get_cached settled", "value yes");
    }

    // Every node stops, and all start again on their data dirs, the former voter too.
    for node in &mut nodes {
        node.kill();
    }
    d.kill();
    drop((nodes, d));
    let mut first = ChildNode::start_detached(voters[0], dir.path(), &[]);
    let seeds = vec![first.addr.clone()];
    let mut others: Vec<ChildNode> = ["a", "b", "c", "d"]
        .into_iter()
        .filter(|n| *n != voters[0])
        .map(|name| ChildNode::start_detached(name, dir.path(), &seeds))
        .collect();
    first.wait_ready();
    for node in &mut others {
        node.wait_ready();
    }
    assert!(first.run("put after-restart yes").starts_with("ok "));
    let registry_term = raft_position(&first.run("raft"), "term");
    let back = others.iter_mut().find(|n| n.name == former).unwrap();
    // Its term is the one it had before it was killed, and stays so; and the registry's.
    let watched = Instant::now();
    while watched.elapsed() < std::time::Duration::from_millis(1500) {
        let now = raft_position(&back.run("raft"), "term");
        assert_eq!(
            now, term,
            "the former voter stood for election after the whole registry restarted"
        );
        assert_eq!(
            raft_position(&first.run("raft"), "term"),
            registry_term,
            "the registry's term changed after the whole registry restarted"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_full_restart_keeps_every_acknowledged_write() {
    let _turn = one_cluster_at_a_time();
    let dir = certificates(&["a", "b", "c"]);
    let mut nodes = three_voters(dir.path());
    let mut acknowledged = Vec::new();
    for i in 0..30 {
        let answer = nodes[i % 3].run(&format!("put r{i} v{i}"));
        if answer.starts_with("ok ") {
            acknowledged.push(i);
        }
    }
    assert_eq!(acknowledged.len(), 30);
    for node in &mut nodes {
        node.kill();
    }
    drop(nodes);
    // Back with their data dirs; none bootstraps: their logs say who votes.
    let restarted = Instant::now();
    let mut a = ChildNode::start_detached("a", dir.path(), &[]);
    let seeds = vec![a.addr.clone()];
    let _b = ChildNode::start_detached("b", dir.path(), &seeds);
    let _c = ChildNode::start_detached("c", dir.path(), &seeds);
    a.wait_ready();
    // A node started on a log that names it a voter stands for election once it knows the
    // registry has no leader: here once another voter answers that it hears none.
    eprintln!(
        "the restarted registry opened a's session {:?} after the restart",
        restarted.elapsed()
    );
    for i in acknowledged {
        assert_eq!(
            a.run(&format!("get r{i}")).split_whitespace().nth(1),
            Some(format!("v{i}").as_str()),
            "r{i} lost in the restart"
        );
    }
}

/// Starts voter `name` again on its data dir, joining through `seed`, and waits until its
/// local copy shows the write `last` (key, value); then checks that the copy holds the writes
/// `{prefix}{i}` = `v{i}` for `i` below `count`.
fn restart_with_writes(
    name: &str,
    dir: &std::path::Path,
    seed: &str,
    env: &[(&str, &str)],
    last: (&str, &str),
    prefix: &str,
    count: usize,
) -> ChildNode {
    let mut back = ChildNode::start_with(name, dir, &[seed.to_owned()], false, env);
    back.run_until(
        &format!("get_cached {}", last.0),
        &format!("value {}", last.1),
    );
    for i in 0..count {
        assert_eq!(
            back.run(&format!("get_cached {prefix}{i}")),
            format!("value v{i}"),
            "{prefix}{i} on {name} once back"
        );
    }
    back
}

/// One of the figures in a node's answer to `raft`: its `term`, or one of its log positions
/// `log`, `applied`, `snapshot` or `purged` (0 for none, which the answer gives as `-`).
fn raft_position(answer: &str, which: &str) -> u64 {
    let mut words = answer.split_whitespace();
    words.find(|word| *word == which);
    match words.next() {
        Some("-") => 0,
        Some(at) => at
            .parse()
            .unwrap_or_else(|_| panic!("{which} is not a position in {answer:?}")),
        None => panic!("no {which} in {answer:?}"),
    }
}

/// A voter that was away while the others snapshotted and dropped the log it missed is sent
/// the snapshot when it comes back (openraft's InstallSnapshot, over the transport), and then
/// holds every write.
#[test]
fn a_voter_behind_the_dropped_log_catches_up_from_a_snapshot() {
    let _turn = one_cluster_at_a_time();
    let dir = certificates(&["a", "b", "c"]);
    // A snapshot every 20 entries, keeping none of the log it covers.
    let env = [(ENV_SNAPSHOT_EVERY, "20"), (ENV_LOG_KEPT, "0")];
    let mut nodes = three_voters_with(dir.path(), &env);
    let lead = leader(&mut nodes[0]);
    let writer = nodes.iter().position(|n| n.name == lead).unwrap();
    let away = (writer + 1) % 3;
    let stopped_at = raft_position(&nodes[away].run("raft"), "log");
    nodes[away].kill();
    for i in 0..100 {
        let answer = nodes[writer].run(&format!("put s{i} v{i}"));
        assert!(answer.starts_with("ok "), "put s{i}: {answer}");
    }
    // The voters left dropped the log past where the absent one stopped...
    nodes[writer].run_until_answer("raft", |answer| {
        raft_position(answer, "purged") > stopped_at
    });
    // ...so when it comes back with its data dir, only a snapshot can bring it up to date.
    let name = nodes[away].name.clone();
    let seed = nodes[writer].addr.clone();
    let mut back = restart_with_writes(&name, dir.path(), &seed, &env, ("s99", "v99"), "s", 100);
    // Its copy may have had the writes from the leader's feed before its own log caught up
    // (a restarted voter's copy follows the leader until the leader replicates to it).
    back.run_until_answer("raft", |answer| {
        raft_position(answer, "snapshot") > stopped_at
    });
}

#[test]
fn seeded_lock_clients_never_overlap() {
    let seed: u64 = std::env::var("ENSEMBLE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    eprintln!("seed {seed} (set ENSEMBLE_TEST_SEED to replay)");
    let _turn = one_cluster_at_a_time();
    let dir = certificates(&["a", "b", "c"]);
    let mut nodes = three_voters(dir.path());
    let ids: Vec<u64> = nodes
        .iter_mut()
        .enumerate()
        .map(|(i, n)| n.send(&format!("lockloop shared 15 {}", seed + i as u64)))
        .collect();
    let mut holds: Vec<(u64, u128, u128)> = Vec::new();
    for (node, id) in nodes.iter_mut().zip(ids) {
        let answer = node.answer(id);
        let words: Vec<&str> = answer.split_whitespace().collect();
        assert_eq!(words[0], "held", "{answer}");
        for hold in words[1..].chunks(3) {
            holds.push((
                hold[0].parse().unwrap(),
                hold[1].parse().unwrap(),
                hold[2].parse().unwrap(),
            ));
        }
    }
    assert_eq!(holds.len(), 45);
    holds.sort();
    for pair in holds.windows(2) {
        let ((t1, _, end), (t2, start, _)) = (pair[0], pair[1]);
        assert!(t2 > t1, "tokens repeat: {t1}, {t2}");
        assert!(
            start >= end,
            "holders overlap: token {t1} held until {end}, token {t2} from {start}"
        );
    }
}
