//! A million idle actors on one node, within 1 GB (the growth of the process's resident set
//! while they are spawned, the test's own `ActorRef`s to them included).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ensemble::prelude::*;

use crate::{MIB, one_at_a_time, rss};

/// An actor with a small state, started and waiting for messages.
struct Idle {
    started: Arc<AtomicU64>,
    state: u64,
}

enum IdleMsg {
    Get(ReplyTo<u64>),
}

impl Actor for Idle {
    type Msg = IdleMsg;

    async fn started(&mut self, _ctx: &mut Context<Self>) -> ActorResult {
        self.started.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn handle(&mut self, msg: IdleMsg, _ctx: &mut Context<Self>) -> ActorResult {
        let IdleMsg::Get(reply) = msg;
        let _ = reply.send(self.state);
        Ok(())
    }
}

/// About 20 s and 800 MiB in a debug build; `ENSEMBLE_IDLE_ACTORS=N` for another count.
#[test]
fn idle_actors_a_million_fit_in_a_gigabyte() {
    let _turn = one_at_a_time();
    let count: u64 = std::env::var("ENSEMBLE_IDLE_ACTORS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let node = Node::new(NodeConfig::new("idle")).unwrap();
        let started = Arc::new(AtomicU64::new(0));
        let warm = node
            .spawn(Idle {
                started: started.clone(),
                state: 0,
            })
            .unwrap();
        warm.ask(IdleMsg::Get, Duration::from_secs(10))
            .await
            .unwrap();
        let before = rss();
        let mut refs = Vec::with_capacity(count as usize);
        for i in 0..count {
            refs.push(
                node.spawn(Idle {
                    started: started.clone(),
                    state: i,
                })
                .unwrap(),
            );
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while started.load(Ordering::Relaxed) < count + 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {count} actors started",
                started.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let grown = rss().saturating_sub(before);
        let refs_bytes = refs.capacity() * std::mem::size_of::<ActorRef<IdleMsg>>();
        // Every one of them still answers (a sample, spread over the population).
        for i in (0..count).step_by((count as usize / 100).max(1)) {
            let state = refs[i as usize]
                .ask(IdleMsg::Get, Duration::from_secs(10))
                .await
                .unwrap();
            assert_eq!(state, i);
        }
        eprintln!(
            "{count} idle actors: RSS grew {:.0} MiB ({} bytes per actor, {} of them the test's \
             own ActorRef), {} actors on the node",
            grown as f64 / MIB,
            grown / count,
            refs_bytes as u64 / count,
            node.actor_count()
        );
        assert!(
            grown < (1 << 30),
            "{count} idle actors took {:.0} MiB",
            grown as f64 / MIB
        );
        drop(refs);
        node.shutdown().await;
    });
}
