//! Supervision: time from a child's crash to its replacement answering a message, and the
//! time to recover 10,000 dynamic children of one supervisor each crashed once.
//! Figures and command: docs/performance.md.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ensemble::prelude::*;
use ensemble::supervisor::{ChildSpec, SupervisorRef, SupervisorSpec};

const CHILDREN: u64 = 10_000;

enum Work {
    Crash,
    Ping(ReplyTo<()>),
}

struct Worker {
    starts: Arc<AtomicU64>,
}

impl Actor for Worker {
    type Msg = Work;

    async fn started(&mut self, _ctx: &mut Context<Self>) -> ActorResult {
        self.starts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn handle(&mut self, msg: Work, _ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            Work::Crash => Err(ActorError::new("crash")),
            Work::Ping(reply) => {
                let _ = reply.send(());
                Ok(())
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn worker_spec(id: &str, starts: &Arc<AtomicU64>) -> ChildSpec {
    let starts = starts.clone();
    ChildSpec::worker(id, move || Worker {
        starts: starts.clone(),
    })
}

/// The running instance of the supervisor's first child.
async fn first_child(sup: &SupervisorRef) -> ActorRef<Work> {
    let children = sup.which_children().await.unwrap();
    children[0].actor.as_ref().unwrap().downcast().unwrap()
}

fn crash_to_replacement(c: &mut Criterion) {
    let rt = runtime();
    let starts = Arc::new(AtomicU64::new(0));
    let (node, sup) = rt.block_on(async {
        let node = Node::new(NodeConfig::new("bench")).unwrap();
        let spec = SupervisorSpec::new("bench")
            .intensity(u32::MAX, Duration::from_secs(1))
            .child(worker_spec("worker", &starts));
        let sup = SupervisorRef::start(&node, spec).await.unwrap();
        (node, sup)
    });
    let mut group = c.benchmark_group("supervision");
    group.bench_function("crash_to_replacement_answering", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let old = first_child(&sup).await;
                    let start = Instant::now();
                    old.tell(Work::Crash).await.unwrap();
                    // The supervisor answers after it has handled the exit and restarted.
                    let new = loop {
                        let child = first_child(&sup).await;
                        if child != old {
                            break child;
                        }
                    };
                    new.ask(Work::Ping, Duration::from_secs(5)).await.unwrap();
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.finish();
    rt.block_on(node.shutdown());
}

fn recover_ten_thousand(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("supervision");
    group.sample_size(10);
    group.throughput(Throughput::Elements(CHILDREN));
    group.bench_function("recover_10000_dynamic_children_each_crashed_once", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let node = Node::new(NodeConfig::new("bench")).unwrap();
                    let starts = Arc::new(AtomicU64::new(0));
                    let spec =
                        SupervisorSpec::new("pool").intensity(u32::MAX, Duration::from_secs(60));
                    let sup = SupervisorRef::start(&node, spec).await.unwrap();
                    let template = worker_spec("template", &starts);
                    let mut children = Vec::with_capacity(CHILDREN as usize);
                    for i in 0..CHILDREN {
                        let child = sup
                            .start_child(template.clone().with_id(format!("w{i}")))
                            .await
                            .unwrap();
                        children.push(child.downcast::<Work>().unwrap());
                    }
                    let start = Instant::now();
                    for child in &children {
                        child.tell(Work::Crash).await.unwrap();
                    }
                    while starts.load(Ordering::Relaxed) < 2 * CHILDREN {
                        tokio::task::yield_now().await;
                    }
                    total += start.elapsed();
                    black_box(sup.count_children().await.unwrap());
                    node.shutdown().await;
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, crash_to_replacement, recover_ten_thousand);
criterion_main!(benches);
