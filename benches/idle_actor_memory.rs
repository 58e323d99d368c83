//! Bytes per idle actor: spawns 100,000 actors that have started and wait for messages, and
//! counts the heap bytes they hold with a counting allocator (RSS growth is printed too).
//! Run: `cargo bench --bench idle_actor_memory`; `ENSEMBLE_IDLE_ACTORS=1000000` for a million.
//! Figures: docs/performance.md and docs/reliability.md.
#![allow(missing_docs)]
// A counting global allocator is the one way to count heap bytes exactly; it only wraps `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ensemble::prelude::*;

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How many actors, unless `ENSEMBLE_IDLE_ACTORS` says otherwise.
const DEFAULT_ACTORS: u64 = 100_000;

/// An actor with a typical small state and protocol.
struct Idle {
    started: Arc<AtomicU64>,
    #[allow(dead_code)]
    state: u64,
}

enum IdleMsg {
    #[allow(dead_code)]
    Set(u64),
    #[allow(dead_code)]
    Get(ReplyTo<u64>),
}

impl Actor for Idle {
    type Msg = IdleMsg;

    async fn started(&mut self, _ctx: &mut Context<Self>) -> ActorResult {
        self.started.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn handle(&mut self, msg: IdleMsg, _ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            IdleMsg::Set(v) => self.state = v,
            IdleMsg::Get(reply) => {
                let _ = reply.send(self.state);
            }
        }
        Ok(())
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let actors: u64 = std::env::var("ENSEMBLE_IDLE_ACTORS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ACTORS);
    rt.block_on(async {
        let node = Node::new(NodeConfig::new("memory")).unwrap();
        let started = Arc::new(AtomicU64::new(0));
        // Warm up the runtime and the node's tables, then measure from a settled baseline.
        let warm = node
            .spawn(Idle {
                started: started.clone(),
                state: 0,
            })
            .unwrap();
        warm.ask(IdleMsg::Get, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        let heap_before = LIVE_BYTES.load(Ordering::Relaxed);
        let rss_before = rss_bytes();
        let mut refs = Vec::with_capacity(actors as usize);
        let refs_bytes = actors as usize * std::mem::size_of::<ActorRef<IdleMsg>>();
        for _ in 0..actors {
            refs.push(
                node.spawn(Idle {
                    started: started.clone(),
                    state: 0,
                })
                .unwrap(),
            );
        }
        while started.load(Ordering::Relaxed) < actors + 1 {
            tokio::task::yield_now().await;
        }
        let heap = LIVE_BYTES.load(Ordering::Relaxed) - heap_before - refs_bytes;
        let per_actor = heap as f64 / actors as f64;
        println!("idle actors: {actors}");
        println!(
            "heap bytes per idle actor (counting allocator): {per_actor:.0} ({:.0} MiB in all)",
            heap as f64 / MIB
        );
        if let (Some(before), Some(after)) = (rss_before, rss_bytes()) {
            let grown = after.saturating_sub(before) as f64;
            println!(
                "RSS growth per idle actor: {:.0} bytes ({:.0} MiB in all, the ActorRefs held \
                 by this benchmark included)",
                grown / actors as f64,
                grown / MIB
            );
        }
        drop(refs);
        node.shutdown().await;
    });
}
