//! The leader's lease for reads: a leader cut off from the other voters may answer
//! linearizable reads and keepalives without a heartbeat round for a while, but never once
//! another leader could have been elected (`registry/src/raft/lease.rs` has the argument).
//!
//! The test is deterministic: a perfect network until the cut, made at a chosen instant.

use std::sync::Arc;
use std::time::Duration;

use ensemble::registry::RegistryConfig;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::setup::{Cluster, four_nodes, leader_named_by, put_retrying, run};

const REQUEST_TIMEOUT: Duration = Duration::from_millis(300);

fn tune(settings: &mut RegistryConfig) {
    settings.request_timeout = REQUEST_TIMEOUT;
    settings.session_ttl = Duration::from_secs(3);
}

/// The first leader, s0, with an election timeout four times the others' (as while a longer
/// one rolls through the nodes): its lease must still end before theirs.
fn s0_waits_longer(settings: &mut RegistryConfig) {
    tune(settings);
    if settings.data_dir.ends_with("s0") {
        settings.election_timeout = (Duration::from_millis(150), Duration::from_millis(1_000));
    }
}

#[test]
fn a_cut_off_leader_answers_reads_on_its_lease_only_until_another_could_lead() {
    run(11, |seed| a_cut_off_leader_reads_on_its_lease(seed, tune));
}

/// Until 2026-12-07 (late night) a leader counted its lease from its own election timeout,
/// and answered reads on it for about 0.9 s here, after the other two had elected a leader
/// (0.4–0.5 s) and changed the value.
#[test]
fn a_leader_set_to_wait_longer_than_its_followers_counts_on_their_vote_refusal() {
    run(13, |seed| {
        a_cut_off_leader_reads_on_its_lease(seed, s0_waits_longer)
    });
}

async fn a_cut_off_leader_reads_on_its_lease(
    seed: u64,
    tune: fn(&mut RegistryConfig),
) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, tune).await?;
    let client = nodes[3].registry.clone();
    client
        .put("k", b"before".to_vec())
        .await
        .map_err(|e| format!("the first write failed: {e}"))?;
    let leader = leader_named_by(&client, &nodes)?;
    if leader != 0 {
        return Err(format!(
            "s{leader} leads, not s0, which started the registry"
        ));
    }
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    // The client keeps reading through the old leader, the only voter it can reach.
    let served = Arc::new(Mutex::new(Vec::<(Instant, Option<Vec<u8>>)>::new()));
    let reader = {
        let (client, served) = (client.clone(), served.clone());
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                if let Ok(value) = client.get("k").await {
                    served
                        .lock()
                        .push((Instant::now(), value.map(|kv| kv.value)));
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    net.partition(
        &[nodes[leader].addr, nodes[3].addr],
        &[nodes[others[0]].addr, nodes[others[1]].addr],
    );
    let cut = Instant::now();

    // The other two elect a leader (watched every millisecond) and change the value.
    let deadline = cut + Duration::from_secs(2);
    let elected = loop {
        if others.iter().any(|&i| nodes[i].registry.leads()) {
            break Instant::now();
        }
        if Instant::now() > deadline {
            return Err("the two voters cut off from the leader elected no other".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    put_retrying(&nodes[others[0]].registry, "k", b"after", "the new side").await?;
    reader.await.map_err(|e| e.to_string())?;
    net.heal();

    let served = served.lock().clone();
    let after_cut: Vec<&(Instant, Option<Vec<u8>>)> =
        served.iter().filter(|(at, _)| *at > cut).collect();
    let Some((last, _)) = after_cut.last() else {
        return Err(format!(
            "the old leader answered no read after the cut ({} before it): its lease was \
             never used",
            served.len()
        ));
    };
    eprintln!(
        "the old leader answered {} reads for {:?} after the cut; another was elected {:?} \
         after it",
        after_cut.len(),
        *last - cut,
        elected - cut
    );
    // The followers heard from the old leader last before the cut, so they refuse votes
    // until at least their leader lease after it; the old leader's must end before.
    let refusal = RegistryConfig::new(".").election_timeout.1;
    if *last >= cut + refusal {
        return Err(format!(
            "the old leader answered a read {:?} after the cut, past the {refusal:?} the \
             followers refuse votes for",
            *last - cut
        ));
    }
    if *last >= elected {
        return Err(format!(
            "the old leader answered a read {:?} after the cut, when another leader had been \
             elected {:?} after it",
            *last - cut,
            elected - cut
        ));
    }
    if let Some((at, value)) = served
        .iter()
        .find(|(_, value)| value.as_deref() != Some(b"before".as_slice()))
    {
        return Err(format!(
            "a read through the old leader {:?} after the cut saw {value:?}",
            *at - cut
        ));
    }
    Ok(())
}
