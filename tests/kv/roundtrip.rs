//! Puts, gets and deletes through the master's table, from clients on any node.

use std::collections::BTreeMap;
use std::time::Duration;

use ensemble::kv::{KvError, Role, WorkerMsg, WorkerReport};

use crate::util::{KvCluster, PARTITIONS, check_keys, key, one_cluster_at_a_time, settled, value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_and_gets_round_trip() {
    let _turn = one_cluster_at_a_time().await;
    let mut kv = KvCluster::start().await;
    kv.start_master(0).await;
    kv.start_workers(&[0, 1, 2, 1]).await;
    let client = kv.client(2);
    let status = settled(&client, 4).await;
    assert!(!status.recovering);
    let table = client.table().await.unwrap();
    assert_eq!(table.partitions(), PARTITIONS);
    for (p, entry) in table.entries.iter().enumerate() {
        let (primary, backup) = (
            entry.primary.as_ref().unwrap(),
            entry.backup.as_ref().unwrap(),
        );
        assert_ne!(
            primary.id().node(),
            backup.id().node(),
            "partition {p}: primary and backup on one node"
        );
    }
    // Every worker has a share.
    for w in &status.workers {
        assert!(w.primaries + w.backups >= 3, "{status}");
    }

    for i in 0..60 {
        client.put(key(i), value(i)).await.unwrap();
    }
    check_keys(&client, 0..60).await;
    assert_eq!(client.get("never written").await.unwrap(), None);
    client.delete(&key(0)).await.unwrap();
    assert_eq!(client.get(&key(0)).await.unwrap(), None);
    // Clients on other nodes see the same.
    check_keys(&kv.client(0), 1..60).await;
    check_keys(&kv.client(1), 1..60).await;

    // Backups hold every key their primaries hold (writes are acknowledged only then).
    let table = client.table().await.unwrap();
    let mut reports: BTreeMap<_, WorkerReport> = BTreeMap::new();
    for entry in &table.entries {
        for w in [&entry.primary, &entry.backup].into_iter().flatten() {
            let report = w
                .ask(WorkerMsg::Report, Duration::from_secs(5))
                .await
                .unwrap();
            reports.insert(w.id().clone(), report);
        }
    }
    let held = |w: &ensemble::ActorId, p: u32| {
        reports[w]
            .partitions
            .iter()
            .find(|r| r.partition == p)
            .copied()
            .unwrap()
    };
    let mut keys = 0;
    for (p, entry) in table.entries.iter().enumerate() {
        let p = p as u32;
        let primary = held(entry.primary.as_ref().unwrap().id(), p);
        let backup = held(entry.backup.as_ref().unwrap().id(), p);
        assert_eq!(primary.role, Role::Primary);
        assert_eq!(backup.role, Role::Backup);
        assert_eq!(
            (primary.epoch, primary.version, primary.keys),
            (backup.epoch, backup.version, backup.keys)
        );
        keys += primary.keys;
    }
    assert_eq!(keys, 59);

    // A backup refuses requests: only the primary serves them.
    let (partition, entry) = table.route(&key(5));
    let backup = entry.backup.as_ref().unwrap();
    let refused = backup
        .ask(
            |reply| WorkerMsg::Read {
                partition,
                epoch: entry.epoch,
                key: key(5),
                reply,
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    match refused {
        Err(KvError::NotPrimary { held, .. }) => {
            assert_eq!(held, Some((Role::Backup, entry.epoch)));
        }
        other => panic!("a backup answered a read: {other:?}"),
    }
    // So does a primary asked with another epoch.
    let primary = entry.primary.as_ref().unwrap();
    let stale = primary
        .ask(
            |reply| WorkerMsg::Read {
                partition,
                epoch: entry.epoch + 1,
                key: key(5),
                reply,
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(
        matches!(stale, Err(KvError::NotPrimary { .. })),
        "{stale:?}"
    );
}
