//! Failures: workers killed while a client writes; the master stopped and started again on
//! another node.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Duration;

use ensemble::ActorRef;
use ensemble::kv::{Status, WorkerMsg, partition_of};

use ensemble::kv;

use crate::util::{
    KvCluster, PARTITIONS, check_keys, eventually, key, one_cluster_at_a_time, settled, value,
};

/// The worker with the most primaries.
fn busiest(status: &Status) -> ensemble::ActorId {
    status
        .workers
        .iter()
        .max_by_key(|w| (w.primaries, w.backups))
        .unwrap()
        .worker
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_workers_keeps_every_acknowledged_key() {
    let _turn = one_cluster_at_a_time().await;
    let mut kv = KvCluster::start().await;
    kv.start_master(0).await;
    kv.start_workers(&[0, 1, 2, 1]).await;
    let client = kv.client(2);
    let status = settled(&client, 4).await;

    // A writer keeps writing while a worker is killed; every put must be acknowledged.
    const KEYS: usize = 150;
    let acked = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let client = client.clone();
        let acked = acked.clone();
        async move {
            for i in 0..KEYS {
                if let Err(err) = client.put(key(i), value(i)).await {
                    panic!("put {} failed: {err}", key(i));
                }
                acked.fetch_add(1, Ordering::Release);
            }
        }
    });
    eventually("50 puts acknowledged", async || {
        (acked.load(Ordering::Acquire) >= 50).then_some(())
    })
    .await;
    let before = client.stats();
    let victim = busiest(&status);
    kv.kill_worker(&victim).await;
    writer.await.unwrap();
    check_keys(&client, 0..KEYS).await;
    let status = settled(&client, 3).await;
    assert!(status.workers.iter().all(|w| w.worker != victim));
    let after = client.stats().since(&before);
    eprintln!("first worker killed: {status}\nclient: {after:?}");

    // Another one, once the first loss is repaired: still nothing lost.
    let victim = busiest(&status);
    kv.kill_worker(&victim).await;
    check_keys(&client, 0..KEYS).await;
    let status = settled(&client, 2).await;
    check_keys(&kv.client(0), 0..KEYS).await;
    eprintln!("second worker killed: {status}");

    // A worker restarted (as the platform would, on any node) takes its share again.
    let fresh = kv.start_worker(2).await;
    let status = settled(&client, 3).await;
    let share = status.workers.iter().find(|w| w.worker == fresh).unwrap();
    assert!(share.primaries >= 1 && share.backups >= 1, "{status}");
    check_keys(&client, 0..KEYS).await;
    eprintln!("worker added: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_master_rebuilds_the_table_from_the_workers() {
    let _turn = one_cluster_at_a_time().await;
    let mut kv = KvCluster::start().await;
    let old = kv.start_master(0).await;
    kv.start_workers(&[1, 2, 1, 2]).await;
    let client = kv.client(1);
    settled(&client, 4).await;
    const KEYS: usize = 100;
    for i in 0..KEYS {
        client.put(key(i), value(i)).await.unwrap();
    }
    let before = client.table().await.unwrap();
    let stats = client.stats();

    old.stop();
    old.wait_for_exit().await;
    // Workers serve without a master, with the table clients have.
    check_keys(&client, 0..KEYS).await;

    let new = kv.start_master(2).await;
    let status = eventually("the client finds the new master, settled", async || {
        let status = client.status().await.ok()?;
        (status.master == *new.id() && status.settled && status.assigned == PARTITIONS)
            .then_some(status)
    })
    .await;
    eprintln!("new master: {status}");
    // The table is rebuilt from the workers' reports, not made anew: the same primaries and
    // backups, at newer epochs.
    let after = client.table().await.unwrap();
    assert_eq!(after.master, *new.id());
    for (p, (was, is)) in before.entries.iter().zip(&after.entries).enumerate() {
        assert_eq!(is.primary, was.primary, "partition {p}: primary");
        assert_eq!(is.backup, was.backup, "partition {p}: backup");
        assert!(
            is.epoch > was.epoch,
            "partition {p}: epoch {} after {}",
            is.epoch,
            was.epoch
        );
    }
    check_keys(&client, 0..KEYS).await;
    for i in KEYS..KEYS + 20 {
        client.put(key(i), value(i)).await.unwrap();
    }
    check_keys(&kv.client(0), 0..KEYS + 20).await;
    let stats = client.stats().since(&stats);
    assert!(stats.master_resolutions >= 1, "{stats:?}");
    assert!(stats.retries >= 1, "{stats:?}");
    eprintln!("client after the failover: {stats:?}");
}

/// With no master at all, a worker's death stops only the partitions it served: a client goes
/// on with the table it has for the others, rather than drop it at the first failure and wait
/// for a master to give it a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_master_a_dead_worker_stops_only_its_own_partitions() {
    let _turn = one_cluster_at_a_time().await;
    let mut kv = KvCluster::start().await;
    let master = kv.start_master(0).await;
    kv.start_workers(&[1, 2, 1, 2]).await;
    let client = kv.client(1);
    let status = settled(&client, 4).await;
    const KEYS: usize = 60;
    for i in 0..KEYS {
        client.put(key(i), value(i)).await.unwrap();
    }
    let table = client.table().await.unwrap();
    master.stop();
    master.wait_for_exit().await;
    let victim = busiest(&status);
    kv.kill_worker(&victim).await;

    let quick = client.clone().with_deadline(Duration::from_secs(1));
    let on_victim =
        |worker: Option<&ActorRef<WorkerMsg>>| worker.is_some_and(|w| *w.id() == victim);
    let (mut lost_primary, mut kept) = (0, 0);
    for i in 0..KEYS {
        let entry = &table.entries[partition_of(&key(i), PARTITIONS) as usize];
        if on_victim(entry.primary.as_ref()) {
            // No master to place the partition anew: this fails, at its deadline.
            assert!(quick.get(&key(i)).await.is_err(), "{}", key(i));
            lost_primary += 1;
            continue;
        }
        assert_eq!(
            quick
                .get(&key(i))
                .await
                .expect("a partition whose primary lives"),
            Some(value(i)),
            "{}",
            key(i)
        );
        if !on_victim(entry.backup.as_ref()) {
            quick
                .put(key(i), value(i + KEYS))
                .await
                .expect("a partition whose primary and backup live");
            kept += 1;
        }
    }
    assert!(lost_primary > 0 && kept > 0, "{lost_primary} {kept}");
}

/// Keys route by the partition count: a master of another count than the one that placed the
/// data would look for keys in the wrong partitions. It ends instead, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_of_another_partition_count_refuses_the_data() {
    let _turn = one_cluster_at_a_time().await;
    let mut kv = KvCluster::start().await;
    let master = kv.start_master(0).await;
    kv.start_workers(&[1, 2]).await;
    let client = kv.client(1);
    settled(&client, 2).await;
    for i in 0..20 {
        client.put(key(i), value(i)).await.unwrap();
    }
    master.stop();
    master.wait_for_exit().await;
    let other = kv.start_master_unnamed(2, PARTITIONS * 2).await;
    let reason = tokio::time::timeout(Duration::from_secs(30), other.wait_for_exit())
        .await
        .expect("the master ends");
    let ensemble::ExitReason::Failed(why) = &reason else {
        panic!("ended with {reason}");
    };
    assert!(
        why.contains(&format!("a deployment with {PARTITIONS} partitions"))
            && why.contains(&format!("this master has {}", PARTITIONS * 2)),
        "{why}"
    );
    // The data is untouched: the right master finds every key.
    kv.start_master(0).await;
    check_keys(&client, 0..20).await;
}

/// A master that takes every request and answers none.
struct Silent(Vec<ensemble::kv::MasterMsg>);

impl ensemble::Actor for Silent {
    type Msg = ensemble::kv::MasterMsg;

    async fn handle(
        &mut self,
        msg: ensemble::kv::MasterMsg,
        _ctx: &mut ensemble::Context<Self>,
    ) -> ensemble::ActorResult {
        // Kept, reply handles and all: the asker waits out its timeout.
        self.0.push(msg);
        Ok(())
    }
}

/// A call that stops waiting while it fetches the table (a timeout around it) must not leave
/// the fetch marked as under way: every later call would then go on with the stale table for
/// good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_while_it_fetches_the_table_lets_the_next_fetch() {
    let _turn = one_cluster_at_a_time().await;
    let mut kv = KvCluster::start().await;
    let master = kv.start_master(0).await;
    kv.start_workers(&[1, 2, 1, 2]).await;
    let client = kv.client(1).with_deadline(Duration::from_secs(1));
    let status = settled(&client, 4).await;
    let table = client.table().await.unwrap();
    let victim = busiest(&status);
    let on_victim = |i: usize| {
        let entry = &table.entries[partition_of(&key(i), PARTITIONS) as usize];
        entry.primary.as_ref().is_some_and(|w| *w.id() == victim)
    };
    let (dead, alive) = (
        (0..100).find(|&i| on_victim(i)).unwrap(),
        (0..100).find(|&i| !on_victim(i)).unwrap(),
    );
    client.put(key(dead), value(dead)).await.unwrap();

    // The master is replaced by one that answers nothing, and a worker dies: a call to its
    // partition finds the table wrong.
    master.stop();
    master.wait_for_exit().await;
    let n = &kv.nodes[0];
    let silent = n.node.spawn(Silent(Vec::new())).unwrap();
    eventually("the silent master registered", async || {
        n.registry.register(kv::MASTER_NAME, &silent).await.ok()
    })
    .await;
    kv.kill_worker(&victim).await;
    assert!(client.get(&key(dead)).await.is_err());
    // Calls go on with the stale table for a fifth of a second after a fetch the master did
    // not answer; then one fetches it from the silent master, and is given up meanwhile.
    eventually("a call given up while it fetches the table", async || {
        let key = key(alive);
        let call = tokio::time::timeout(Duration::from_millis(100), client.get(&key));
        call.await.is_err().then_some(())
    })
    .await;

    // A real master again: the next fetch finds the dead worker's partition a new primary.
    silent.stop();
    silent.wait_for_exit().await;
    kv.start_master(2).await;
    let patient = client.clone().with_deadline(Duration::from_secs(30));
    assert_eq!(patient.get(&key(dead)).await.unwrap(), Some(value(dead)));
}
