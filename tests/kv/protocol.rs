//! The worker protocol without a master: the test gives the orders, to see replication,
//! snapshots, dropping, and the fencing of a primary that was replaced without being told.

use std::time::Duration;

use ensemble::ActorRef;
use ensemble::kv::{self, Assignment, KvError, PartitionReport, Role, WorkerMsg, WriteResult};

use crate::util::{KvCluster, eventually, one_cluster_at_a_time};

const T: Duration = Duration::from_secs(5);

fn assign(
    worker: &ActorRef<WorkerMsg>,
    epoch: u64,
    role: Role,
    backup: Option<&ActorRef<WorkerMsg>>,
) {
    assign_from(0, worker, epoch, role, backup);
}

/// An order of the master with fencing token `master_token` (of no lease the registry knows).
fn assign_from(
    master_token: u64,
    worker: &ActorRef<WorkerMsg>,
    epoch: u64,
    role: Role,
    backup: Option<&ActorRef<WorkerMsg>>,
) {
    assign_under(("", master_token), worker, epoch, role, backup);
}

/// An order of the master holding lock `lease` with fencing token `token`.
fn assign_under(
    (lease, token): (&str, u64),
    worker: &ActorRef<WorkerMsg>,
    epoch: u64,
    role: Role,
    backup: Option<&ActorRef<WorkerMsg>>,
) {
    let order = Assignment {
        partition: 0,
        epoch,
        role,
        backup: backup.cloned(),
        partitions: 1,
        master_token: token,
        master_lease: lease.to_owned(),
    };
    worker.try_tell(WorkerMsg::Assign(order)).unwrap();
}

async fn write(worker: &ActorRef<WorkerMsg>, epoch: u64, key: &str) -> WriteResult {
    worker
        .ask(
            |reply| WorkerMsg::Write {
                partition: 0,
                epoch,
                key: key.to_owned(),
                value: Some(key.as_bytes().to_vec()),
                reply,
            },
            T,
        )
        .await
        .unwrap()
}

async fn read(worker: &ActorRef<WorkerMsg>, epoch: u64, key: &str) -> Option<Vec<u8>> {
    worker
        .ask(
            |reply| WorkerMsg::Read {
                partition: 0,
                epoch,
                key: key.to_owned(),
                reply,
            },
            T,
        )
        .await
        .unwrap()
        .unwrap()
}

/// How `worker` holds partition 0.
async fn held(worker: &ActorRef<WorkerMsg>) -> Option<PartitionReport> {
    let report = worker.ask(WorkerMsg::Report, T).await.unwrap();
    report.partitions.into_iter().find(|p| p.partition == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_replicate_and_fence_a_replaced_primary() {
    let _turn = one_cluster_at_a_time().await;
    let mut kv = KvCluster::start().await;
    let ids = [
        kv.start_worker(1).await,
        kv.start_worker(2).await,
        kv.start_worker(2).await,
    ];
    // Found as the master finds them: through the group, from another node's copy.
    let registry = kv.nodes[0].registry.clone();
    let [a, b, c] = eventually("the workers in the group", async || {
        let group = registry.group::<WorkerMsg>(kv::WORKERS_GROUP);
        let find = |i: usize| group.iter().find(|w| *w.id() == ids[i]).cloned();
        Some([find(0)?, find(1)?, find(2)?])
    })
    .await;

    // Epoch 1: a primary, b backup. A write is acknowledged once b holds it.
    assign(&b, 1, Role::Backup, None);
    assign(&a, 1, Role::Primary, Some(&b));
    assert_eq!(write(&a, 1, "k1").await, Ok(1));
    let on_b = held(&b).await.unwrap();
    assert_eq!(
        (on_b.role, on_b.epoch, on_b.version, on_b.keys),
        (Role::Backup, 1, 1, 1)
    );
    // An order of an older epoch is ignored.
    assign(&a, 0, Role::Backup, None);
    assert_eq!(write(&a, 1, "k2").await, Ok(2));
    // Only the primary, at its epoch, serves.
    assert!(matches!(
        write(&b, 1, "x").await,
        Err(KvError::NotPrimary { .. })
    ));
    assert!(matches!(
        write(&a, 2, "x").await,
        Err(KvError::NotPrimary { .. })
    ));

    // Epoch 2: c replaces b as backup and gets a snapshot first.
    assign(&c, 2, Role::Backup, None);
    assign(&a, 2, Role::Primary, Some(&c));
    assert_eq!(write(&a, 2, "k3").await, Ok(3));
    let on_c = held(&c).await.unwrap();
    assert_eq!((on_c.epoch, on_c.version, on_c.keys), (2, 3, 3));
    // b's copy is no longer needed.
    b.try_tell(WorkerMsg::Drop {
        partition: 0,
        epoch: 2,
        master_token: 0,
        master_lease: String::new(),
    })
    .unwrap();
    eventually("b drops its copy", async || {
        held(&b).await.is_none().then_some(())
    })
    .await;

    // Epoch 3: c is promoted, but a is not told. Its next write reaches c, which holds a
    // newer epoch: a learns it was replaced, refuses the write and stops serving.
    assign(&c, 3, Role::Primary, None);
    assert_eq!(write(&c, 3, "k4").await, Ok(4));
    match write(&a, 2, "lost").await {
        Err(KvError::NotPrimary { .. }) => {}
        other => panic!("a replaced primary acknowledged a write: {other:?}"),
    }
    assert_eq!(held(&a).await.unwrap().role, Role::Spare);
    assert!(matches!(
        write(&a, 2, "x").await,
        Err(KvError::NotPrimary { .. })
    ));
    assert_eq!(read(&c, 3, "lost").await, None);
    assert_eq!(read(&c, 3, "k1").await, Some(b"k1".to_vec()));
    assert_eq!(read(&c, 3, "k4").await, Some(b"k4".to_vec()));
}

/// Starts a worker on node b, and answers it once node a's copy lists it in the group.
async fn worker_on_b(kv: &mut KvCluster) -> ActorRef<WorkerMsg> {
    let id = kv.start_worker(1).await;
    let registry = kv.nodes[0].registry.clone();
    eventually("the worker in the group", async || {
        let group = registry.group::<WorkerMsg>(kv::WORKERS_GROUP);
        group.into_iter().find(|w| *w.id() == id)
    })
    .await
}

/// An order still on its way from a master that was replaced (its successor numbers epochs
/// from the workers' reports, so the two can give one epoch) is ignored: a worker follows no
/// master with a lower fencing token than one it followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_of_a_replaced_master_are_ignored() {
    let _turn = one_cluster_at_a_time().await;
    let mut kv = KvCluster::start().await;
    let a = worker_on_b(&mut kv).await;

    // The successor, token 9, makes `a` the primary at epoch 2.
    assign_from(9, &a, 2, Role::Primary, None);
    // The replaced master's orders, token 5, of the same epoch and a later one, come late.
    assign_from(5, &a, 2, Role::Backup, None);
    a.try_tell(WorkerMsg::Drop {
        partition: 0,
        epoch: 3,
        master_token: 5,
        master_lease: String::new(),
    })
    .unwrap();
    // Messages from one sender arrive in order: these follow the late orders.
    assert_eq!(write(&a, 2, "k").await, Ok(1));
    let report = a.ask(WorkerMsg::Report, T).await.unwrap();
    assert_eq!(report.master_token, 9);
    let on_a = report.partitions.first().copied().expect("partition 0");
    assert_eq!((on_a.role, on_a.epoch, on_a.version), (Role::Primary, 2, 1));
    // A later master's orders are followed.
    assign_from(12, &a, 4, Role::Primary, None);
    assert!(write(&a, 4, "k2").await.is_ok());
    assert_eq!(held(&a).await.unwrap().epoch, 4);
    // So are those of a master without a token (no lease, or an earlier build): it is not
    // fenced, and raises nothing.
    assign_from(0, &a, 5, Role::Primary, None);
    assert!(write(&a, 5, "k3").await.is_ok());
    let report = a.ask(WorkerMsg::Report, T).await.unwrap();
    assert_eq!(report.master_token, 12);
}

/// A worker the successor has not reached yet (not yet in its view of the group) ignores a
/// late order of the replaced master once its node's copy of the registry shows the master's
/// lease granted again: the copy may lag behind the registry, never run ahead of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_of_a_master_whose_lease_passed_on_are_ignored() {
    let _turn = one_cluster_at_a_time().await;
    let mut kv = KvCluster::start().await;
    let a = worker_on_b(&mut kv).await;

    // The master's lease, granted twice: the replaced master held the first grant, its
    // successor holds the second.
    let lease = "kv-test/master";
    let registry = kv.nodes[0].registry.clone();
    let first = registry.try_lock(lease).await.unwrap();
    let replaced = first.token();
    first.release().await.unwrap();
    let second = registry.try_lock(lease).await.unwrap();
    let successor = second.token();
    assert!(successor > replaced);
    // Waits until the worker's node's copy shows the lock held with token `wanted` (`None`:
    // held by nobody).
    let copy = kv.nodes[1].registry.clone();
    let copy_shows = async |what: &str, wanted: Option<u64>| {
        eventually(what, async || {
            let holding = copy.lock_info(lease).and_then(|lock| lock.holder);
            (holding.map(|(_, token)| token) == wanted).then_some(())
        })
        .await
    };
    copy_shows("the second grant in the worker's copy", Some(successor)).await;
    // An order of the replaced master arriving late, at `epoch`; the worker's report after it.
    let late_order = async |epoch| {
        assign_under((lease, replaced), &a, epoch, Role::Primary, None);
        a.ask(WorkerMsg::Report, T).await.unwrap()
    };

    // The worker followed no master yet, so only the lease tells it the order is stale.
    let report = late_order(2).await;
    assert_eq!(
        report.partitions,
        vec![],
        "the replaced master's order was followed"
    );
    assert_eq!(
        report.master_token, successor,
        "the bar is the later grant's"
    );
    // The refusal outlasts the later grant: a lock nobody holds shows no holder at all.
    second.release().await.unwrap();
    copy_shows("the lock free in the worker's copy", None).await;
    let report = late_order(3).await;
    assert_eq!(
        report.partitions,
        vec![],
        "a late order was followed once the lock was free"
    );
    // The successor's order is followed.
    assign_under((lease, successor), &a, 2, Role::Primary, None);
    assert_eq!(write(&a, 2, "k").await, Ok(1));
    let report = a.ask(WorkerMsg::Report, T).await.unwrap();
    assert_eq!(report.master_token, successor);
}
