#![allow(missing_docs)]
//! Local actor throughput and latency: tell (1 and 8 senders), sequential ask between two
//! actors, and spawn rate. Figures and the command that produced them: docs/performance.md.
//!
//! Each measurement runs on a tokio multi-thread runtime with one worker per core, as a deployed
//! node would (`multi_thread/...`), and the message-passing ones also on a current-thread
//! runtime (`current_thread/...`), which is how actix runs its actors and shows the cost of
//! the runtime itself without wake-ups across threads.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ensemble::prelude::*;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

const TELLS: u64 = 1_000_000;
const ASKS: u64 = 100_000;
const SPAWNS: u64 = 100_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Both runtime flavours, named.
fn runtimes() -> [(&'static str, Runtime); 2] {
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    [("multi_thread", runtime()), ("current_thread", current)]
}

/// Counts messages and reports when it has seen the expected number.
struct Sink {
    remaining: u64,
    done: Option<oneshot::Sender<()>>,
}

impl Actor for Sink {
    type Msg = u64;

    async fn handle(&mut self, msg: u64, _ctx: &mut Context<Self>) -> ActorResult {
        black_box(msg);
        self.remaining -= 1;
        if self.remaining == 0
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
        Ok(())
    }
}

/// Time for `senders` tasks to tell `TELLS` messages in all, until the actor has handled them.
async fn tell_run(node: &Node, senders: u64) -> Duration {
    let (done_tx, done_rx) = oneshot::channel();
    let sink = node
        .spawn(Sink {
            remaining: TELLS,
            done: Some(done_tx),
        })
        .unwrap();
    let start = Instant::now();
    for _ in 0..senders {
        let sink = sink.clone();
        tokio::spawn(async move {
            for i in 0..TELLS / senders {
                sink.tell(i).await.unwrap();
            }
        });
    }
    done_rx.await.unwrap();
    let elapsed = start.elapsed();
    sink.stop();
    sink.wait_for_exit().await;
    elapsed
}

fn tell(c: &mut Criterion) {
    let mut group = c.benchmark_group("tell");
    group.throughput(Throughput::Elements(TELLS));
    group.sample_size(20);
    for (flavor, rt) in runtimes() {
        let node = rt.block_on(async { Node::new(NodeConfig::new("bench")).unwrap() });
        for senders in [1, 8] {
            group.bench_function(format!("{flavor}/{senders}_sender_to_1_actor"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += tell_run(&node, senders).await;
                        }
                        total
                    })
                })
            });
        }
    }
    group.finish();
}

/// Replies with what it is sent.
struct Echo;

impl Actor for Echo {
    type Msg = (u64, ReplyTo<u64>);

    async fn handle(&mut self, (n, reply): Self::Msg, _ctx: &mut Context<Self>) -> ActorResult {
        let _ = reply.send(n);
        Ok(())
    }
}

/// Asks the echo actor `n` times in a row from inside its handler.
struct Asker {
    echo: ActorRef<(u64, ReplyTo<u64>)>,
}

impl Actor for Asker {
    type Msg = (u64, ReplyTo<Duration>);

    async fn handle(&mut self, (n, reply): Self::Msg, _ctx: &mut Context<Self>) -> ActorResult {
        let start = Instant::now();
        for i in 0..n {
            let answer = self.echo.ask(|r| (i, r), Duration::from_secs(5)).await?;
            black_box(answer);
        }
        let _ = reply.send(start.elapsed());
        Ok(())
    }
}

fn ask(c: &mut Criterion) {
    let mut group = c.benchmark_group("ask");
    group.throughput(Throughput::Elements(ASKS));
    group.sample_size(20);
    for (flavor, rt) in runtimes() {
        let (node, asker) = rt.block_on(async {
            let node = Node::new(NodeConfig::new("bench")).unwrap();
            let echo = node.spawn(Echo).unwrap();
            let asker = node.spawn(Asker { echo }).unwrap();
            (node, asker)
        });
        group.bench_function(format!("{flavor}/sequential_actor_to_actor"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += asker
                            .ask(|r| (ASKS, r), Duration::from_secs(60))
                            .await
                            .unwrap();
                    }
                    total
                })
            })
        });
        rt.block_on(node.shutdown());
    }
    group.finish();
}

/// Counts its start, then idles.
struct Idle {
    started: Arc<AtomicU64>,
}

impl Actor for Idle {
    type Msg = ();

    async fn started(&mut self, _ctx: &mut Context<Self>) -> ActorResult {
        self.started.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn handle(&mut self, _msg: (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

fn spawn(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("spawn");
    group.throughput(Throughput::Elements(SPAWNS));
    group.sample_size(10);
    group.bench_function("multi_thread/spawn_until_started", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let node = Node::new(NodeConfig::new("bench")).unwrap();
                    let started = Arc::new(AtomicU64::new(0));
                    let spawner = {
                        let (node, started) = (node.clone(), started.clone());
                        // Spawned from a task on the runtime, as actors spawn actors.
                        tokio::spawn(async move {
                            let start = Instant::now();
                            for _ in 0..SPAWNS {
                                node.spawn(Idle {
                                    started: started.clone(),
                                })
                                .unwrap();
                            }
                            while started.load(Ordering::Relaxed) < SPAWNS {
                                tokio::task::yield_now().await;
                            }
                            start.elapsed()
                        })
                    };
                    total += spawner.await.unwrap();
                    node.shutdown().await;
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, tell, ask, spawn);
criterion_main!(benches);
