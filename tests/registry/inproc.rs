//! A registry of nodes in this process (real QUIC on loopback), for what needs no kill -9.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ensemble::cluster::{Cluster, DownDecision};
use ensemble::prelude::*;
use ensemble::registry::{Registry, RegistryConfig, RegistryError, WatchEvent};
use ensemble::transport::certs::NodeCert;

use crate::util::{Sink, certificates};

async fn start(
    name: &str,
    certs: &std::path::Path,
    seeds: Vec<std::net::SocketAddr>,
) -> (Node, Cluster, Registry) {
    start_with(name, certs, seeds, |_| {}).await
}

async fn start_with(
    name: &str,
    certs: &std::path::Path,
    seeds: Vec<std::net::SocketAddr>,
    settings: impl FnOnce(&mut RegistryConfig),
) -> (Node, Cluster, Registry) {
    crate::in_process::start_node(name, certs, seeds, settings).await
}

async fn start_framed(
    name: &str,
    certs: &std::path::Path,
    seeds: Vec<std::net::SocketAddr>,
    max_frame_size: usize,
    settings: impl FnOnce(&mut RegistryConfig),
) -> (Node, Cluster, Registry) {
    let frame = |config: &mut ensemble::cluster::ClusterConfig| {
        config.max_frame_size = max_frame_size;
    };
    crate::in_process::start_node_with(name, certs, seeds, frame, settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_is_its_own_registry() {
    let certs = certificates(&["solo"]);
    let (node, _cluster, registry) = start("solo", certs.path(), vec![]).await;
    let sink = node.spawn(Sink).unwrap();
    registry.register("sink", &sink).await.unwrap();
    let found = registry
        .whereis::<crate::util::SinkMsg>("sink")
        .unwrap()
        .unwrap();
    assert_eq!(found.id(), sink.id());
    let lease = registry.try_lock("l").await.unwrap();
    assert!(lease.token() > 0);
    let revision = registry.put("config/a", b"1".to_vec()).await.unwrap();
    assert_eq!(
        registry.get("config/a").await.unwrap().unwrap().modified,
        revision
    );
    lease.release().await.unwrap();
    sink.stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while registry
        .whereis::<crate::util::SinkMsg>("sink")
        .unwrap()
        .is_some()
    {
        assert!(tokio::time::Instant::now() < deadline, "name not released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A lock call whose caller stops waiting (a timeout around it) leaves no holder behind: the
/// node takes its place in line back, so the lock is free once its holder releases it.
/// `Duration::MAX` as a lock's timeout means no deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_call_its_caller_stopped_waiting_for_leaves_no_holder() {
    let certs = certificates(&["dropper"]);
    let (_node, _cluster, registry) = start("dropper", certs.path(), vec![]).await;
    let first = registry.try_lock("l").await.unwrap();
    let waiting = {
        let registry = registry.clone();
        tokio::spawn(async move { registry.lock("l", Duration::from_secs(60)).await })
    };
    until_queued(&registry, "l", "the second call").await;
    waiting.abort();
    let _ = waiting.await;
    first.release().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Some(lock) = registry.lock_info("l")
        && (lock.holder.is_some() || !lock.waiters.is_empty())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the abandoned call kept its place: {lock:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lease = registry.lock("l", Duration::MAX).await.unwrap();
    let lost = lease.lost();
    lease.release().await.unwrap();
    assert_eq!(lost.await, ensemble::registry::LEASE_RELEASED);
}

/// Waits until `registry`'s copy shows someone in line for `lock` (`who`, for the failure).
async fn until_queued(registry: &Registry, lock: &str, who: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while registry
        .lock_info(lock)
        .is_none_or(|l| l.waiters.is_empty())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{who} never queued for {lock}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the registry of `registry` has three voters.
async fn three_voters(registry: &Registry) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while registry.voters().await.map_or(0, |v| v.len()) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the voters never grew to 3"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes made at once on one node share requests to the leader (client-side group commit):
/// each caller must still get the outcome of its own command, and puts (retried when a leader
/// fails) must not share a request with compare-and-sets (never retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_of_one_node_each_get_their_own_outcome() {
    let certs = certificates(&["busy"]);
    let (_node, _cluster, registry) = start("busy", certs.path(), vec![]).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let key = format!("k/{i}");
                let value = i.to_string().into_bytes();
                if i % 2 == 0 {
                    let revision = registry.put(&key, value.clone()).await.unwrap();
                    let stored = registry.get(&key).await.unwrap().expect("stored");
                    assert_eq!((stored.modified, stored.value), (revision, value), "{key}");
                } else {
                    let revision = registry
                        .compare_and_set(&key, 0, Some(value))
                        .await
                        .unwrap();
                    match registry
                        .compare_and_set(&key, 0, Some(b"again".to_vec()))
                        .await
                    {
                        Err(RegistryError::RevisionMismatch {
                            key: named,
                            current,
                            ..
                        }) => assert_eq!((named, current), (key.clone(), revision), "{key}"),
                        other => panic!("{key}: the second compare-and-set gave {other:?}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Writes queued behind others on a node that lost its quorum still end by their own timeout,
/// each with an error naming its own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_without_a_quorum_time_out_each_naming_its_key() {
    let certs = certificates(&["qa", "qb", "qc"]);
    // A long session: the node must not fence itself while its writes wait.
    let settings = |config: &mut RegistryConfig| {
        config.session_ttl = Duration::from_secs(30);
        config.request_timeout = Duration::from_millis(500);
    };
    let (_a_node, a_cluster, a) = start_with("qa", certs.path(), vec![], settings).await;
    let seeds = vec![a_cluster.local_addr()];
    let (b_node, _b_cluster, _b) = start_with("qb", certs.path(), seeds.clone(), settings).await;
    let (c_node, _c_cluster, _c) = start_with("qc", certs.path(), seeds, settings).await;
    three_voters(&a).await;
    b_node.shutdown().await;
    c_node.shutdown().await;
    let writes: Vec<_> = (0..20)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move { (i, a.put(&format!("k/{i}"), b"v".to_vec()).await) })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for write in writes {
        let (i, result) = tokio::time::timeout_at(deadline, write)
            .await
            .expect("a write without a quorum never ended")
            .unwrap();
        match result {
            Err(RegistryError::Timeout { what, .. }) | Err(RegistryError::Unknown { what, .. }) => {
                assert!(
                    what.contains(&format!("\"k/{i}\"")),
                    "write {i} reported {what}"
                )
            }
            other => panic!("write {i} without a quorum gave {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_refuse_what_a_node_has_no_room_for() {
    let certs = certificates(&["host"]);
    let (node, _cluster, registry) = start("host", certs.path(), vec![]).await;
    let me = node.id().clone();
    let amounts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|&(r, n)| (r.to_owned(), n)).collect()
    };
    let capacity = amounts(&[("cpu", 4), ("memory", 1024)]);
    let web = amounts(&[("cpu", 3), ("memory", 512)]);
    registry
        .reserve("web.1", &me, &web, &capacity)
        .await
        .unwrap();
    // A retry of the same reservation changes nothing.
    registry
        .reserve("web.1", &me, &web, &capacity)
        .await
        .unwrap();
    let err = registry
        .reserve("web.2", &me, &web, &capacity)
        .await
        .unwrap_err();
    match &err {
        RegistryError::Insufficient {
            node,
            resource,
            need,
            free,
        } => assert_eq!(
            (node.as_str(), resource.as_str(), *need, *free),
            (me.to_string().as_str(), "cpu", 3, 1)
        ),
        other => panic!("expected Insufficient, got {other:?}"),
    }
    assert!(err.to_string().contains("another node"), "{err}");
    // This node's copy catches up with the leader.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while registry.reserved(&me) != web {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reservation not seen"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        registry.reservations(),
        vec![("web.1".to_owned(), me.clone(), web.clone())]
    );
    // Freeing the first makes room for the second.
    assert!(registry.unreserve("web.1").await.unwrap());
    assert!(!registry.unreserve("web.1").await.unwrap());
    registry
        .reserve("web.2", &me, &web, &capacity)
        .await
        .unwrap();
    // A node without a session has nothing to reserve on.
    let err = registry
        .reserve(
            "elsewhere",
            &ensemble::NodeId::new("nobody", 1),
            &web,
            &capacity,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NoSession(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_names_and_locks() {
    let certs = certificates(&["a", "b", "c"]);
    let (_a_node, a_cluster, a) = start("a", certs.path(), vec![]).await;
    let seeds = vec![a_cluster.local_addr()];
    let (b_node, _b_cluster, b) = start("b", certs.path(), seeds.clone()).await;
    let (_c_node, _c_cluster, c) = start("c", certs.path(), seeds).await;
    let sink = b_node.spawn(Sink).unwrap();
    b.register("sink", &sink).await.unwrap();
    let found = c
        .whereis_linearizable::<crate::util::SinkMsg>("sink")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id(), sink.id());
    let lease = a.lock("l", Duration::from_secs(5)).await.unwrap();
    let waiting = tokio::spawn({
        let c = c.clone();
        async move { c.lock("l", Duration::from_secs(10)).await }
    });
    // Wait until c is in line (as a's copy shows it), so the hand-over is what is tested.
    until_queued(&a, "l", "c").await;
    let first = lease.token();
    lease.release().await.unwrap();
    let second = waiting.await.unwrap().unwrap();
    assert!(second.token() > first);
}

/// Writes, reads and copies larger than a frame: a command over the limit is refused at once
/// with an error naming it briefly; commands that fit one by one but not together go through
/// in several log entries; a voter that was away catches up through AppendEntries that each
/// fit a frame; a new node's copy receives a state larger than a frame in parts; a read whose
/// answer would not fit says so. The frames here are 64 KiB, so a command may take 8 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_larger_than_a_frame_is_split_or_refused_by_name() {
    const FRAME: usize = 64 << 10;
    let certs = certificates(&["fa", "fb", "fc", "fd"]);
    let start = |name: &'static str, seeds| start_framed(name, certs.path(), seeds, FRAME, |_| {});
    let (_a_node, a_cluster, a) = start("fa", vec![]).await;
    let seeds = vec![a_cluster.local_addr()];
    let (_b_node, _b_cluster, b) = start("fb", seeds.clone()).await;
    let (c_node, _c_cluster, _c) = start("fc", seeds.clone()).await;
    three_voters(&a).await;

    match b.put("big/too", vec![7; 9 << 10]).await {
        Err(err @ RegistryError::TooLarge { .. }) => {
            let message = err.to_string();
            assert!(
                message.contains("big/too") && message.contains("8192"),
                "{message}"
            );
            assert!(
                message.len() < 600,
                "the value is not spelled out: {message}"
            );
        }
        other => panic!("a 9 KiB value gave {other:?}"),
    }

    // fc is away while the writes are made, and must catch up on all of them later.
    c_node.shutdown().await;
    // 6 KiB each: two fit a log entry (16 KiB), five an AppendEntries (32 KiB).
    let writes: Vec<_> = (0..40)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move { b.put(&format!("big/{i:02}"), large_value(i)).await })
        })
        .collect();
    for (i, write) in writes.into_iter().enumerate() {
        write
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("put {i}: {e}"));
    }
    b.put("small", b"1".to_vec())
        .await
        .expect("a small put after the large ones");

    // About 240 KiB of entries reach fc, restarted on its data dir.
    let (_c_node, _c_cluster, c) = start("fc", seeds.clone()).await;
    holds_the_large_values(&c, "fc").await;
    // About 240 KiB of state reaches a new node's copy in parts.
    let (_d_node, _d_cluster, d) = start("fd", seeds).await;
    holds_the_large_values(&d, "fd").await;

    match d.get_prefix("big/").await {
        Err(err @ RegistryError::TooLarge { .. }) => {
            assert!(err.to_string().contains("big/"), "{err}");
        }
        other => panic!("a 240 KiB prefix read gave {:?}", other.map(|v| v.len())),
    }
    assert_eq!(d.get_prefix("small").await.unwrap().len(), 1);
}

/// The value of key `big/{i:02}` in `data_larger_than_a_frame_is_split_or_refused_by_name`.
fn large_value(i: usize) -> Vec<u8> {
    vec![i as u8; 6 << 10]
}

/// Waits until the copy of `node` holds the last write of that test, then checks that it holds
/// every large value.
async fn holds_the_large_values(registry: &Registry, node: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while registry.get_cached("small").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the copy of {node} never caught up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..40 {
        let key = format!("big/{i:02}");
        let cached = registry
            .get_cached(&key)
            .unwrap_or_else(|| panic!("{key} missing on {node}"));
        assert_eq!(cached.value, large_value(i), "{key} on {node}");
    }
}

/// A registry refuses to start under frames too small for its commands, saying which setting
/// to raise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_under_too_small_frames_refuses_to_start_naming_the_setting() {
    let certs = certificates(&["tiny"]);
    let node = Node::new(NodeConfig::new("tiny")).unwrap();
    let cert = NodeCert::load(certs.path(), "tiny").unwrap();
    let mut config = ensemble::cluster::ClusterConfig::new("test");
    config.down = DownDecision::External;
    config.max_frame_size = 16 << 10;
    let cluster = Cluster::start(&node, config, &cert).await.unwrap();
    let mut registry = RegistryConfig::new(certs.path().join("tiny-data"));
    registry.bootstrap = true;
    match Registry::start(&cluster, registry).await {
        Err(RegistryError::Start(reason)) => {
            assert!(reason.contains("max_frame_size (16384 bytes)"), "{reason}");
        }
        other => panic!("16 KiB frames gave {:?}", other.map(|_| "a registry")),
    }
}

/// Works without an `.await` for a while when told to: a kill takes effect only after that.
struct Busy(Arc<AtomicBool>);

impl Actor for Busy {
    type Msg = Duration;

    async fn handle(&mut self, work: Duration, _ctx: &mut Context<Self>) -> ActorResult {
        self.0.store(true, Ordering::SeqCst);
        std::thread::sleep(work);
        self.0.store(false, Ordering::SeqCst);
        Ok(())
    }
}

/// A node that leaves gives its locks to the next holder only once the actors bound to them
/// have ended: b's actor is in the middle of 500 ms of work with no `.await` when b leaves, so
/// its kill takes effect only after it, and a must not be granted the lock before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_gives_its_locks_on_once_their_actors_ended() {
    let certs = certificates(&["a", "b"]);
    let (_a_node, a_cluster, a) = start("a", certs.path(), vec![]).await;
    let (b_node, _b_cluster, b) = start("b", certs.path(), vec![a_cluster.local_addr()]).await;
    let lease = b.try_lock("l").await.unwrap();
    let working = Arc::new(AtomicBool::new(false));
    let busy = b_node.spawn(Busy(working.clone())).unwrap();
    lease.bind(&busy);
    let waiting = tokio::spawn({
        let a = a.clone();
        async move { a.lock("l", Duration::from_secs(20)).await }
    });
    until_queued(&b, "l", "a").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    busy.tell(Duration::from_millis(500)).await.unwrap();
    while !working.load(Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the work never began"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    b.leave().await.unwrap();
    let granted = waiting.await.unwrap().unwrap();
    assert!(
        !working.load(Ordering::SeqCst),
        "a was granted the lock (token {}) while b's bound actor was still working",
        granted.token()
    );
    assert!(!busy.is_alive());
}

/// An actor learns the fencing token of the lease it is bound to, and of no other: a
/// singleton's instance passes it with its orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_bound_to_a_lease_learns_its_fencing_token() {
    let certs = certificates(&["a"]);
    let (node, _cluster, a) = start("a", certs.path(), vec![]).await;
    let working = Arc::new(AtomicBool::new(false));
    let first = node.spawn(Busy(working.clone())).unwrap();
    let other = node.spawn(Busy(working)).unwrap();
    let lease = a.try_lock("l").await.unwrap();
    assert_eq!(a.fencing_token_of(first.id()), None, "not bound yet");
    lease.bind(&first);
    assert_eq!(a.fencing_token_of(first.id()), Some(lease.token()));
    assert_eq!(
        a.lease_of(first.id()),
        Some(("l".to_owned(), lease.token())),
        "the lock's name with the token"
    );
    assert_eq!(a.fencing_token_of(other.id()), None, "never bound");
    let old = lease.token();
    lease.release().await.unwrap();
    assert_eq!(
        a.fencing_token_of(first.id()),
        None,
        "its lease was released"
    );
    let again = a.try_lock("l").await.unwrap();
    again.bind(&other);
    let new = a
        .fencing_token_of(other.id())
        .expect("bound to the new grant");
    assert!(new > old, "the new grant's token {new} is not above {old}");
    // Bound as it is spawned, an actor reads the token in its `started` hook.
    let (tx, seen) = tokio::sync::oneshot::channel();
    let reader = ReadsItsToken(a.clone(), Some(tx));
    node.start_with(reader, SpawnOptions::new().before_start(again.binder()))
        .await
        .unwrap();
    assert_eq!(seen.await.unwrap(), Some(again.token()));
}

/// Tells the fencing token of its lease, as its `started` hook sees it.
struct ReadsItsToken(Registry, Option<tokio::sync::oneshot::Sender<Option<u64>>>);

impl Actor for ReadsItsToken {
    type Msg = ();

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        if let Some(tx) = self.1.take() {
            let _ = tx.send(self.0.fencing_token_of(ctx.id()));
        }
        Ok(())
    }

    async fn handle(&mut self, _msg: (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

/// A loopback address with a UDP port free at the moment.
fn free_udp_addr() -> std::net::SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

/// A program that stops its node (its session expired, say) can start it again in-process, on
/// the same address and data dir: a stopped host lets go of both, even with a lock call of it
/// still waiting in line (it ends with the leave). So does a host whose start failed
/// part-way (here at the registry, whose data dir another host holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_host_frees_its_address_and_data_dir() {
    use ensemble::host::{Host, HostConfig};
    use ensemble::transport::certs::ClusterCa;
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("again").unwrap();
    let config = |name: &str, data: &str| {
        let mut config = HostConfig::new(name, ca.issue(name).unwrap(), dir.path().join(data));
        config.listen = free_udp_addr();
        config.apps = false;
        config
    };
    let first = Host::start(config("first", "first"), |_| {})
        .await
        .expect("the first node");
    let holder = first.registry.try_lock("held").await.unwrap();
    let mut again = config("again", "again");
    again.seeds = vec![first.cluster.local_addr()];
    let host = Host::start(again.clone(), |_| {})
        .await
        .expect("the node that stops");
    let waiting = tokio::spawn({
        let registry = host.registry.clone();
        async move { registry.lock("held", Duration::from_secs(60)).await }
    });
    until_queued(&first.registry, "held", "the stopping node's call").await;
    host.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the lock call ends with the leave")
        .unwrap();
    assert!(
        matches!(ended, Err(RegistryError::NoSession(_))),
        "{ended:?}"
    );
    let host = Host::start(again, |_| {})
        .await
        .expect("a start again on the same address and data dir");

    let mut other = config("other", "again");
    other.seeds = vec![first.cluster.local_addr()];
    let err = match Host::start(other.clone(), |_| {}).await {
        Ok(_) => panic!("started on a data dir another host holds"),
        Err(err) => err,
    };
    assert_eq!(err.stage, "registry", "{err}");
    std::net::UdpSocket::bind(other.listen)
        .unwrap_or_else(|e| panic!("the address of a failed start is still bound: {e}"));
    drop(holder);
    host.stop().await;
    first.stop().await;
}

/// A prefix watch sees every change under its prefix, in order, and nothing else; it ends
/// when its node leaves the registry, though the watcher still holds a handle to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watch_sees_its_keys_in_order_and_ends_when_its_node_leaves() {
    let certs = certificates(&["watcher"]);
    let (_node, _cluster, registry) = start("watcher", certs.path(), vec![]).await;
    let mut watch = registry.watch_prefix("config/");
    let mut revisions = Vec::new();
    for (key, value) in [("config/a", "1"), ("other/b", "2"), ("config/a", "3")] {
        revisions.push(registry.put(key, value.as_bytes().to_vec()).await.unwrap());
    }
    registry.delete("config/a").await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
            Ok(Some(WatchEvent::Changed(change))) => seen.push(change),
            other => panic!("not a change: {other:?}"),
        }
    }
    let values: Vec<_> = seen
        .iter()
        .map(|c| (c.key.as_str(), c.value.as_deref()))
        .collect();
    assert_eq!(
        values,
        [
            ("config/a", Some(&b"1"[..])),
            ("config/a", Some(&b"3"[..])),
            ("config/a", None)
        ]
    );
    assert_eq!(seen[0].revision, revisions[0]);
    assert_eq!(seen[1].revision, revisions[2]);
    // Still holding a handle, as a watcher that reads the prefix again after a lag does.
    let kept = registry.clone();
    kept.leave().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch did not end when its node left");
    assert_eq!(end, None);
}
