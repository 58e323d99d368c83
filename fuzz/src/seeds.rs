//! The seed corpus: real values, encoded as a node encodes them, so that the fuzzer starts from
//! inputs that reach deep into each check rather than from noise.

use std::collections::BTreeMap;

use ensemble_registry::raft::{Batch, TypeConfig};
use ensemble_registry::state::{Command, Holder};
use ensemble_runtime::cluster::{Control, Hello, MemberView, PROTOCOL_VERSION};
use ensemble_runtime::remote::{Data, Outcome, RemoteSignal, WireRef};
use ensemble_runtime::transport::frame::{self, DEFAULT_MAX_FRAME};
use ensemble_runtime::{ActorId, ExitReason, NodeId};
use openraft::{Entry, EntryPayload};
use serde::Serialize;

use crate::handshake::{CLUSTER, local};

/// One seed: the target it is for, its file name, its bytes.
pub struct Seed {
    /// The fuzz target.
    pub target: &'static str,
    /// The file name in `corpus/<target>/`.
    pub name: String,
    /// The input.
    pub bytes: Vec<u8>,
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut seeds = Vec::new();
    frame_decoder(&mut seeds);
    handshake(&mut seeds);
    registry_command(&mut seeds);
    seeds
}

fn seed(seeds: &mut Vec<Seed>, target: &'static str, name: &str, bytes: Vec<u8>) {
    let name = format!(
        "{:02}-{name}",
        seeds.iter().filter(|s| s.target == target).count()
    );
    seeds.push(Seed {
        target,
        name,
        bytes,
    });
}

/// A value as the payload of a frame: named MessagePack, as `frame::encode` writes it.
fn payload<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("seed values encode")
}

fn framed<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    frame::encode_one(value, DEFAULT_MAX_FRAME)
        .expect("seed values encode")
        .to_vec()
}

fn node(name: &str, incarnation: u64) -> NodeId {
    NodeId::new(name, incarnation)
}

fn actor(node: &NodeId, seq: u64) -> ActorId {
    ActorId::new(node.clone(), seq)
}

fn wire_ref(node: &NodeId, seq: u64) -> WireRef {
    WireRef {
        id: actor(node, seq),
        msg_type: "kv::shard::Msg".into(),
    }
}

fn hello(name: &str) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        cluster: CLUSTER.into(),
        node: node(name, 1_700_000_000_001),
        listen: "127.0.0.1:7401".parse().expect("an address"),
        resources: BTreeMap::from([("cpu".into(), 8), ("memory_mb".into(), 16_384)]),
        labels: BTreeMap::from([("zone".into(), "a".into()), ("role".into(), "kv".into())]),
        heartbeat_interval_us: 100_000,
        max_frame_size: 8 << 20,
    }
}

/// One of every control frame the node sends.
fn controls() -> Vec<(&'static str, Control)> {
    let n2 = node("n2", 7);
    vec![
        ("hello", Control::Hello(hello("n2"))),
        ("welcome", Control::Welcome(hello("n1"))),
        ("ready", Control::Ready),
        (
            "refused",
            Control::Refused {
                reason: "node n2#7 belongs to cluster \"test\", not \"prod\"".into(),
                downed: false,
            },
        ),
        (
            "refused-downed",
            Control::Refused {
                reason: "node n2#7 was declared down".into(),
                downed: true,
            },
        ),
        ("heartbeat", Control::Heartbeat),
        (
            "members",
            Control::Members(vec![
                MemberView {
                    node: n2.clone(),
                    listen: "10.0.0.2:7401".parse().expect("an address"),
                },
                MemberView {
                    node: node("n3", 2),
                    listen: "[::1]:7402".parse().expect("an address"),
                },
            ]),
        ),
        ("leaving", Control::Leaving { lanes: 3 }),
        (
            "stop",
            Control::Signal {
                seq: 1,
                signal: RemoteSignal::Stop {
                    to: 12,
                    reason: Some(ExitReason::Shutdown),
                },
            },
        ),
        (
            "kill",
            Control::Signal {
                seq: 2,
                signal: RemoteSignal::Stop {
                    to: 12,
                    reason: None,
                },
            },
        ),
        (
            "monitor",
            Control::Signal {
                seq: 3,
                signal: RemoteSignal::Monitor { to: 3, monitor: 44 },
            },
        ),
        (
            "demonitor",
            Control::Signal {
                seq: 4,
                signal: RemoteSignal::Demonitor { to: 3, monitor: 44 },
            },
        ),
        (
            "down",
            Control::Signal {
                seq: 5,
                signal: RemoteSignal::Down {
                    monitor: 44,
                    actor: actor(&n2, 3),
                    reason: ExitReason::Panicked("index out of bounds".into()),
                },
            },
        ),
        (
            "link",
            Control::Signal {
                seq: 6,
                signal: RemoteSignal::Link {
                    to: 5,
                    from: actor(&n2, 9),
                },
            },
        ),
        (
            "unlink",
            Control::Signal {
                seq: 7,
                signal: RemoteSignal::Unlink {
                    to: 5,
                    from: actor(&n2, 9),
                },
            },
        ),
        (
            "exit",
            Control::Signal {
                seq: 8,
                signal: RemoteSignal::Exit {
                    to: 5,
                    from: actor(&n2, 9),
                    reason: ExitReason::NodeDown(node("n3", 2)),
                },
            },
        ),
        ("signals-applied", Control::SignalsApplied { through: 8 }),
        (
            "whereis",
            Control::WhereIs {
                request: 1,
                name: "kv.master".into(),
            },
        ),
        (
            "found",
            Control::Found {
                request: 1,
                actor: Some(wire_ref(&n2, 4)),
            },
        ),
        (
            "spawned",
            Control::Signal {
                seq: 2,
                signal: RemoteSignal::Spawned {
                    request: 2,
                    result: Ok(wire_ref(&n2, 10)),
                },
            },
        ),
        (
            "spawn-failed",
            Control::Signal {
                seq: 3,
                signal: RemoteSignal::Spawned {
                    request: 2,
                    result: Err("no module \"kv.shard\" on node n2#7".into()),
                },
            },
        ),
    ]
}

/// One of every data-lane frame.
fn data() -> Vec<(&'static str, Data<'static>)> {
    vec![
        (
            "tell",
            Data::Tell {
                to: 12,
                msg_type: "kv::shard::Msg",
                payload: b"\x81\xa3Put\x92\xa1k\xc4\x01v",
                ask: None,
                more_asks: Vec::new(),
            },
        ),
        (
            "ask",
            Data::Tell {
                to: 12,
                msg_type: "kv::shard::Msg",
                payload: b"\x81\xa3Get\x91\xa1k",
                ask: Some(77),
                more_asks: Vec::new(),
            },
        ),
        (
            "ask-two-handles",
            Data::Tell {
                to: 12,
                msg_type: "kv::shard::Msg",
                payload: b"\x81\xa4Swap\x92\xa1k\xa1k",
                ask: Some(78),
                more_asks: vec![79],
            },
        ),
        (
            "reply",
            Data::Reply {
                ask: 77,
                outcome: Outcome::Value(b"\xc4\x01v"),
            },
        ),
        (
            "reply-dropped",
            Data::Reply {
                ask: 78,
                outcome: Outcome::Dropped,
            },
        ),
        (
            "reply-refused",
            Data::Reply {
                ask: 79,
                outcome: Outcome::Refused("the mailbox of <n2#7.12> is full".into()),
            },
        ),
        (
            "reply-noactor",
            Data::Reply {
                ask: 80,
                outcome: Outcome::NoActor,
            },
        ),
        (
            "spawn",
            Data::Spawn {
                request: 2,
                module: "kv.shard",
                args: b"\x92\x03\xa7shard-3",
            },
        ),
    ]
}

fn frame_decoder(seeds: &mut Vec<Seed>) {
    const TARGET: &str = "frame_decoder";
    // Size byte 255: frames up to 2040 bytes, which every seed frame fits.
    let input = |size: u8, cut: u8, stream: &[u8]| [&[size, cut][..], stream].concat();
    for (i, (name, control)) in controls().into_iter().enumerate() {
        let cut = [0, 1, 7, 63][i % 4];
        seed(seeds, TARGET, name, input(255, cut, &framed(&control)));
    }
    for (i, (name, data)) in data().into_iter().enumerate() {
        let cut = [0, 3, 16][i % 3];
        seed(seeds, TARGET, name, input(255, cut, &framed(&data)));
    }
    let stream: Vec<u8> = controls()
        .iter()
        .take(6)
        .flat_map(|(_, c)| framed(c))
        .collect();
    seed(seeds, TARGET, "control-stream", input(255, 5, &stream));
    let lane: Vec<u8> = data().iter().flat_map(|(_, d)| framed(d)).collect();
    seed(seeds, TARGET, "data-lane", input(255, 2, &lane));
    // A hello over a 64-byte maximum: refused as soon as its header is in.
    let hello = framed(&controls()[0].1);
    seed(seeds, TARGET, "oversized", input(8, 1, &hello));
    // Heartbeats, then a frame announcing 4 GiB.
    let mut stream: Vec<u8> = (0..3).flat_map(|_| framed(&Control::Heartbeat)).collect();
    stream.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x00]);
    seed(seeds, TARGET, "announced-4gib", input(255, 9, &stream));
    // An empty frame at a maximum of 0, and a frame cut off in its header.
    seed(
        seeds,
        TARGET,
        "empty-frame",
        input(0, 0, &[0, 0, 0, 0, 0, 0]),
    );
    seed(seeds, TARGET, "cut-header", input(255, 1, &hello[..3]));
    // Garbage in a frame: malformed, not fatal to the framing.
    let garbage = [
        &[0, 0, 0, 3, 0xc1, 0xff, 0x00][..],
        &framed(&Control::Leaving { lanes: 0 }),
    ]
    .concat();
    seed(seeds, TARGET, "malformed", input(255, 0, &garbage));
}

fn handshake(seeds: &mut Vec<Seed>) {
    const TARGET: &str = "handshake";
    let me = local();
    let mut variants: Vec<(&str, Control)> = vec![
        ("hello", Control::Hello(hello("n2"))),
        ("welcome", Control::Welcome(hello("n3"))),
    ];
    let mut old = hello("n2");
    old.version = PROTOCOL_VERSION + 1;
    variants.push(("other-version", Control::Hello(old)));
    let mut other = hello("n2");
    other.cluster = "test".into();
    variants.push(("other-cluster", Control::Hello(other)));
    variants.push(("same-name", Control::Hello(hello(me.name()))));
    let mut bare = hello("n4");
    bare.resources.clear();
    bare.labels.clear();
    bare.listen = "[2001:db8::1]:7401".parse().expect("an address");
    variants.push(("bare", Control::Welcome(bare)));
    let mut old_welcome = hello("n3");
    old_welcome.version = 0;
    variants.push(("welcome-version-0", Control::Welcome(old_welcome)));
    variants.push(("welcome-same-name", Control::Welcome(hello(me.name()))));
    let mut nameless = hello("");
    nameless.cluster = String::new();
    variants.push(("empty-names", Control::Hello(nameless)));
    let mut wide = hello("n5");
    wide.node = node("n5", u64::MAX);
    wide.resources = (0..12).map(|i| (format!("gpu{i}"), u64::MAX - i)).collect();
    wide.labels = (0..12)
        .map(|i| (format!("l{i}"), "x".repeat(i as usize)))
        .collect();
    variants.push(("wide", Control::Hello(wide)));
    let mut unicode = hello("nœud-é");
    unicode.cluster = "prod\u{0}\"\u{1f980}\n".into();
    variants.push(("unicode", Control::Hello(unicode)));
    let mut zero = hello("n6");
    zero.node = node("n6", 0);
    zero.listen = "0.0.0.0:0".parse().expect("an address");
    variants.push(("incarnation-0", Control::Welcome(zero)));
    let mut slow = hello("n7");
    slow.heartbeat_interval_us = 3_600_000_000;
    variants.push(("slow-heartbeats", Control::Hello(slow)));
    let mut unsaid = hello("n8");
    unsaid.heartbeat_interval_us = 0;
    variants.push(("heartbeats-unsaid", Control::Welcome(unsaid)));
    variants.extend(controls().into_iter().filter(|(name, _)| {
        [
            "refused",
            "refused-downed",
            "heartbeat",
            "members",
            "leaving",
            "down",
            "whereis",
            "found",
            "ready",
            "spawn-failed",
        ]
        .contains(name)
    }));
    for (name, control) in &variants {
        seed(seeds, TARGET, name, payload(control));
    }
    // Hellos with their fields as arrays (how `rmp_serde::to_vec` writes structs): the node reads
    // both forms.
    for (name, control) in variants.iter().take(4) {
        let compact = rmp_serde::to_vec(control).expect("encodes");
        seed(seeds, TARGET, &format!("{name}-compact"), compact);
    }
}

fn registry_command(seeds: &mut Vec<Seed>) {
    const TARGET: &str = "registry_command";
    let a = node("a", 1);
    let b = node("b", 1);
    let a2 = node("a", 2);
    let holder = |node: &NodeId, id| Holder {
        node: node.clone(),
        id,
    };
    let open = |node: &NodeId| Command::OpenSession {
        node: node.clone(),
        ttl_ms: 3000,
    };
    let acquire = |lock: &str, h: Holder, wait| Command::Acquire {
        lock: lock.into(),
        holder: h,
        wait,
    };
    let release = |lock: &str, h: Holder| Command::Release {
        lock: lock.into(),
        holder: h,
    };
    // A request of `node`, numbered `id`, that says the node sends nothing below `below`
    // again.
    let request = |node: &NodeId, id, below, commands: Vec<Command>| {
        Command::request(node, id, below, &commands)
    };
    let put = |key: &str| Command::Put {
        key: key.into(),
        value: b"v".to_vec(),
    };
    let first = || vec![put("k"), acquire("l", holder(&a, 1), true)];
    let scenarios: Vec<(&str, Vec<Vec<Command>>)> = vec![
        ("open", vec![vec![open(&a)]]),
        (
            "names",
            vec![
                vec![open(&a), open(&b)],
                vec![Command::RegisterName {
                    name: "kv.master".into(),
                    actor: wire_ref(&a, 1),
                }],
                vec![
                    Command::RegisterName {
                        name: "kv.master".into(),
                        actor: wire_ref(&b, 1),
                    },
                    Command::UnregisterName {
                        name: "kv.master".into(),
                        actor: actor(&a, 1),
                    },
                ],
            ],
        ),
        (
            "groups",
            vec![
                vec![open(&a)],
                vec![
                    Command::JoinGroup {
                        group: "kv.shards".into(),
                        actor: wire_ref(&a, 2),
                    },
                    Command::JoinGroup {
                        group: "kv.shards".into(),
                        actor: wire_ref(&a, 3),
                    },
                    Command::LeaveGroup {
                        group: "kv.shards".into(),
                        actor: actor(&a, 2),
                    },
                ],
            ],
        ),
        (
            "lock-queue",
            vec![
                vec![open(&a), open(&b)],
                vec![
                    acquire("master", holder(&a, 1), true),
                    acquire("master", holder(&b, 1), true),
                    acquire("master", holder(&b, 2), false),
                ],
                vec![release("master", holder(&a, 1))],
                vec![release("master", holder(&b, 1))],
            ],
        ),
        (
            "lock-expiry",
            vec![
                vec![open(&a), open(&b)],
                vec![
                    acquire("singleton", holder(&a, 1), true),
                    acquire("singleton", holder(&b, 1), true),
                ],
                vec![Command::ExpireSession { node: a.clone() }],
                vec![open(&a)],
            ],
        ),
        (
            "new-incarnation",
            vec![
                vec![open(&a), acquire("l", holder(&a, 1), true)],
                vec![open(&a2), acquire("l", holder(&a2, 1), true)],
                vec![Command::CloseSession { node: a2.clone() }],
            ],
        ),
        (
            "config",
            vec![
                vec![Command::Put {
                    key: "app/kv/replicas".into(),
                    value: b"3".to_vec(),
                }],
                vec![
                    Command::CompareAndSet {
                        key: "app/kv/replicas".into(),
                        expected: 1,
                        value: Some(b"5".to_vec()),
                    },
                    Command::CompareAndSet {
                        key: "app/kv/leader".into(),
                        expected: 0,
                        value: None,
                    },
                    Command::Delete {
                        key: "app/kv/replicas".into(),
                    },
                ],
            ],
        ),
        (
            "reserve",
            vec![
                vec![open(&a)],
                vec![
                    Command::Reserve {
                        id: "kv.shard/1".into(),
                        node: a.clone(),
                        need: BTreeMap::from([("cpu".into(), 2), ("memory".into(), 512)]),
                        capacity: BTreeMap::from([("cpu".into(), 4), ("memory".into(), 1024)]),
                    },
                    Command::Reserve {
                        id: "kv.shard/2".into(),
                        node: a.clone(),
                        need: BTreeMap::from([("cpu".into(), 3)]),
                        capacity: BTreeMap::from([("cpu".into(), 4)]),
                    },
                    Command::Unreserve {
                        id: "kv.shard/1".into(),
                    },
                ],
                vec![Command::CloseSession { node: a.clone() }],
            ],
        ),
        (
            "lock-busy",
            vec![
                vec![open(&a), open(&b)],
                vec![
                    acquire("master", holder(&a, 1), false),
                    acquire("master", holder(&a, 1), false),
                    acquire("master", holder(&b, 1), false),
                    release("master", holder(&b, 1)),
                    release("other", holder(&a, 1)),
                ],
            ],
        ),
        (
            "lock-waiter-leaves",
            vec![
                vec![open(&a), open(&b)],
                vec![
                    acquire("master", holder(&a, 1), true),
                    acquire("master", holder(&b, 1), true),
                    acquire("master", holder(&b, 2), true),
                    release("master", holder(&b, 1)),
                    Command::CloseSession { node: b.clone() },
                    release("master", holder(&a, 1)),
                ],
            ],
        ),
        (
            "locks-of-one-node",
            vec![
                vec![open(&a), open(&b)],
                (0..6)
                    .map(|i| acquire(&format!("shard/{i}"), holder(&a, i), true))
                    .chain((0..6).map(|i| acquire(&format!("shard/{i}"), holder(&b, i), true)))
                    .collect(),
                vec![Command::ExpireSession { node: a.clone() }],
            ],
        ),
        (
            "no-session",
            vec![vec![
                acquire("master", holder(&a, 1), true),
                Command::RegisterName {
                    name: "kv.master".into(),
                    actor: wire_ref(&a, 1),
                },
                Command::JoinGroup {
                    group: "kv".into(),
                    actor: wire_ref(&a, 1),
                },
                Command::CloseSession { node: a.clone() },
            ]],
        ),
        (
            "stale-incarnation",
            vec![
                vec![open(&a2)],
                vec![open(&a), Command::ExpireSession { node: a2.clone() }],
                vec![open(&a2), open(&node("a", 3))],
            ],
        ),
        (
            "session-ends-all",
            vec![
                vec![open(&a), open(&b)],
                vec![
                    Command::RegisterName {
                        name: "kv.master".into(),
                        actor: wire_ref(&a, 1),
                    },
                    Command::JoinGroup {
                        group: "kv".into(),
                        actor: wire_ref(&a, 1),
                    },
                    Command::JoinGroup {
                        group: "kv".into(),
                        actor: wire_ref(&b, 1),
                    },
                    acquire("master", holder(&a, 1), true),
                    acquire("master", holder(&b, 1), true),
                    Command::Reserve {
                        id: "r".into(),
                        node: a.clone(),
                        need: BTreeMap::from([("cpu".into(), 1)]),
                        capacity: BTreeMap::from([("cpu".into(), 1)]),
                    },
                ],
                vec![Command::ExpireSession { node: a.clone() }],
            ],
        ),
        (
            "config-revisions",
            vec![vec![
                Command::Put {
                    key: "a".into(),
                    value: Vec::new(),
                },
                Command::Put {
                    key: "a/b".into(),
                    value: vec![0; 40],
                },
                Command::CompareAndSet {
                    key: "a".into(),
                    expected: 2,
                    value: None,
                },
                Command::CompareAndSet {
                    key: "a".into(),
                    expected: 1,
                    value: None,
                },
                Command::Delete { key: "a".into() },
                Command::CompareAndSet {
                    key: "a".into(),
                    expected: 0,
                    value: Some(b"again".to_vec()),
                },
            ]],
        ),
        (
            "reserve-refused",
            vec![
                vec![open(&a), open(&b)],
                vec![
                    Command::Reserve {
                        id: "big".into(),
                        node: a.clone(),
                        need: BTreeMap::from([("cpu".into(), 5), ("gpu".into(), 0)]),
                        capacity: BTreeMap::from([("cpu".into(), 4)]),
                    },
                    Command::Reserve {
                        id: "r".into(),
                        node: a.clone(),
                        need: BTreeMap::from([("cpu".into(), 4)]),
                        capacity: BTreeMap::from([("cpu".into(), 4)]),
                    },
                    Command::Reserve {
                        id: "r".into(),
                        node: a.clone(),
                        need: BTreeMap::from([("cpu".into(), 4)]),
                        capacity: BTreeMap::from([("cpu".into(), 8)]),
                    },
                    Command::Reserve {
                        id: "r".into(),
                        node: b.clone(),
                        need: BTreeMap::from([("cpu".into(), 1)]),
                        capacity: BTreeMap::from([("cpu".into(), 8)]),
                    },
                    Command::Reserve {
                        id: "s".into(),
                        node: a.clone(),
                        need: BTreeMap::from([("cpu".into(), u64::MAX)]),
                        capacity: BTreeMap::from([("cpu".into(), u64::MAX)]),
                    },
                    Command::Unreserve { id: "none".into() },
                ],
            ],
        ),
        (
            "requests-sent-again",
            vec![
                vec![open(&a)],
                request(&a, 1, 1, first()),
                // Sent again, with another request in the same entry.
                [
                    request(&a, 1, 1, first()),
                    request(
                        &a,
                        2,
                        1,
                        vec![Command::CompareAndSet {
                            key: "k".into(),
                            expected: 2,
                            value: None,
                        }],
                    ),
                ]
                .concat(),
                // Over for the node: a late copy changes nothing.
                request(&a, 3, 3, vec![release("l", holder(&a, 1))]),
                request(&a, 1, 3, first()),
                // No session to remember it by: applied each time.
                request(&b, 1, 1, vec![put("b")]),
                request(&b, 1, 1, vec![put("b")]),
                vec![Command::ExpireSession { node: a.clone() }],
                // Its session expired: refused.
                request(&a, 4, 4, vec![put("k")]),
            ],
        ),
        (
            "voter-count",
            vec![
                vec![open(&a), Command::SetVoterCount { count: 5 }],
                vec![
                    Command::SetVoterCount { count: 0 },
                    put("k"),
                    Command::SetVoterCount { count: 1000 },
                ],
                request(&a, 1, 1, vec![Command::SetVoterCount { count: 3 }]),
            ],
        ),
        (
            "request-after-leave",
            vec![
                vec![open(&a)],
                request(&a, 1, 1, vec![put("k")]),
                vec![Command::CloseSession { node: a.clone() }],
                // Sent again after the node left, and a late copy of its opening: refused.
                request(&a, 1, 1, vec![put("k")]),
                vec![open(&a)],
            ],
        ),
        (
            "leave-in-a-request",
            vec![
                vec![open(&b)],
                // As `leave` sends it: the session is open when the request goes out.
                request(&b, 1, 1, vec![Command::CloseSession { node: b.clone() }]),
                request(&b, 1, 1, vec![Command::CloseSession { node: b.clone() }]),
            ],
        ),
    ];
    for (name, batches) in &scenarios {
        // Proposals: form byte 1, one `Vec<Command>` after the other.
        let mut proposals = vec![1];
        for batch in batches {
            proposals.extend(payload(batch));
        }
        seed(seeds, TARGET, &format!("propose-{name}"), proposals);
        // Log entries: form byte 0, entries as the log store writes them.
        let mut entries = vec![0];
        entries.extend(payload(&Entry::<TypeConfig> {
            log_id: openraft::testing::log_id(1, 7, 1),
            payload: EntryPayload::Blank,
        }));
        for (i, batch) in batches.iter().enumerate() {
            entries.extend(payload(&Entry::<TypeConfig> {
                log_id: openraft::testing::log_id(1, 7, i as u64 + 2),
                payload: EntryPayload::Normal(Batch::new(batch.clone())),
            }));
        }
        seed(seeds, TARGET, &format!("log-{name}"), entries);
    }
}
