//! FIFO per sender: many concurrent senders, each sequence arrives in order and complete.

use std::collections::HashMap;

use ensemble::prelude::*;

use crate::util::*;

/// Checks that every sender's sequence numbers arrive as 0, 1, 2, ...
#[derive(Default)]
struct SequenceChecker {
    next: HashMap<u32, u64>,
    violations: u64,
}

enum Check {
    Item { sender: u32, seq: u64 },
    Report(ReplyTo<(HashMap<u32, u64>, u64)>),
}

impl Actor for SequenceChecker {
    type Msg = Check;

    async fn handle(&mut self, msg: Check, _ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            Check::Item { sender, seq } => {
                let next = self.next.entry(sender).or_default();
                if *next != seq {
                    self.violations += 1;
                }
                *next = seq + 1;
            }
            Check::Report(reply) => {
                let _ = reply.send((self.next.clone(), self.violations));
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_senders_messages_arrive_in_order_under_concurrency() {
    const SENDERS: u32 = 16;
    const PER_SENDER: u64 = 20_000;
    let node = node();
    // A small mailbox so that senders contend and wait (backpressure) all the time.
    let checker = node
        .spawn_with(
            SequenceChecker::default(),
            SpawnOptions::new().mailbox_capacity(8),
        )
        .unwrap();
    let mut tasks = Vec::new();
    for sender in 0..SENDERS {
        let checker = checker.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..PER_SENDER {
                // Mix waiting and non-waiting sends.
                let mut msg = Check::Item { sender, seq };
                if seq % 3 == 0 {
                    loop {
                        match checker.try_tell(msg) {
                            Ok(()) => break,
                            Err(err) => {
                                msg = err.into_message();
                                tokio::task::yield_now().await;
                            }
                        }
                    }
                } else {
                    checker.tell(msg).await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        within("a sender", task).await.unwrap();
    }
    let (next, violations) = checker.ask(Check::Report, ASK).await.unwrap();
    assert_eq!(violations, 0);
    assert_eq!(next.len(), SENDERS as usize);
    assert!(next.values().all(|&n| n == PER_SENDER), "{next:?}");
}
