//! Client-side group commit: proposals made on this node while its earlier requests are on
//! their way travel to the leader together, as one request.
//!
//! A proposal goes out at once, from its caller's task, while fewer than [`IN_FLIGHT`]
//! requests of this node are on their way. Otherwise it queues, and the next request to go
//! takes everything queued (up to [`MAX_BATCH`] commands and a log entry's size, only
//! proposals that agree on whether they may be retried). The leader folds requests into log
//! entries the same way, so a command means the same either way: each caller's commands stay
//! together, in one log entry, and each caller gets its own outcomes and its own timeout.
//! What it saves is a request and an answer per proposal, most of what a node making many
//! writes at once spends on them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::Shared;
use crate::error::RegistryError;
use crate::limits::approx_bytes;
use crate::server::MAX_BATCH;
use crate::state::{Command, Outcome};

/// Requests of this node on their way to the leader at once.
pub(crate) const IN_FLIGHT: usize = 4;

type Answer = Result<Vec<Outcome>, RegistryError>;

/// A proposal waiting for a request to carry it.
struct Pending {
    commands: Vec<Command>,
    idempotent: bool,
    /// When its caller's timeout ends.
    deadline: Instant,
    /// Its caller's timeout, for the errors that name it.
    timeout: Duration,
    answer: oneshot::Sender<Answer>,
}

/// The queue of proposals and the requests on their way.
pub(crate) struct Proposer {
    queue: mpsc::UnboundedSender<Pending>,
    /// Taken by [`run`] when it starts.
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Pending>>>,
    /// Proposals queued and not yet taken into a request.
    queued: AtomicUsize,
    in_flight: Arc<Semaphore>,
}

impl Proposer {
    pub(crate) fn new() -> Proposer {
        let (queue, receiver) = mpsc::unbounded_channel();
        Proposer {
            queue,
            receiver: Mutex::new(Some(receiver)),
            queued: AtomicUsize::new(0),
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
        }
    }
}

/// Commits `commands` (not empty), alone or with other proposals of this node, within
/// `timeout`.
pub(crate) async fn propose(
    shared: &Shared,
    commands: Vec<Command>,
    idempotent: bool,
    timeout: Duration,
) -> Answer {
    let proposer = &shared.proposer;
    if proposer.queued.load(Ordering::Acquire) == 0
        && let Ok(_permit) = proposer.in_flight.try_acquire()
    {
        let what = || commands[0].brief();
        return shared
            .send_proposal(&commands, idempotent, timeout, &what)
            .await;
    }
    let (answer, answered) = oneshot::channel();
    let deadline = Instant::now() + timeout;
    let brief = commands[0].brief();
    let pending = Pending {
        commands,
        idempotent,
        deadline,
        timeout,
        answer,
    };
    proposer.queued.fetch_add(1, Ordering::AcqRel);
    if let Err(mpsc::error::SendError(_)) = proposer.queue.send(pending) {
        proposer.queued.fetch_sub(1, Ordering::AcqRel);
        return Err(RegistryError::Unknown {
            what: brief,
            reason: "the registry client of this node has stopped".into(),
        });
    }
    // Each caller keeps its own timeout: the request carrying it runs until the latest
    // deadline of the proposals it carries (`send`), and this one stops waiting at its own.
    let what = || format!("{brief} (a write of node {})", shared.me());
    match tokio::time::timeout_at(deadline, answered).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(RegistryError::Unknown {
            what: what(),
            reason: "the registry client of this node stopped while sending it".into(),
        }),
        // Queued, or sent with proposals whose callers wait longer: a write that may be
        // retried says it timed out (it may still commit, as any write that timed out), one
        // that may not cannot say whether it will.
        Err(_) if idempotent => Err(RegistryError::Timeout {
            what: what(),
            timeout,
            last: "no answer yet to the request of this node's writes that carries it".into(),
        }),
        Err(_) => Err(RegistryError::Unknown {
            what: what(),
            reason: format!(
                "no answer within {timeout:?} to the request of this node's writes that \
                 carries it, which may still commit it"
            ),
        }),
    }
}

/// Sends queued proposals as permits free up; ends when the registry handle is gone.
pub(crate) async fn run(shared: Weak<Shared>) {
    let Some(mut queue) = shared
        .upgrade()
        .and_then(|shared| shared.proposer.receiver.lock().take())
    else {
        return;
    };
    let mut next: Option<Pending> = None;
    loop {
        let first = match next.take() {
            Some(pending) => pending,
            None => match queue.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Ok(permit) = shared.proposer.in_flight.clone().acquire_owned().await else {
            return;
        };
        // Whatever queued while waiting for a permit goes in the same request, as long as the
        // request stays within a log entry's size.
        let idempotent = first.idempotent;
        let max_bytes = shared.limits().entry;
        let mut count = first.commands.len();
        let mut bytes = approx_bytes(&first.commands);
        let mut batch = vec![first];
        while count < MAX_BATCH {
            match queue.try_recv() {
                Ok(pending) => {
                    let more = approx_bytes(&pending.commands);
                    if pending.idempotent != idempotent
                        || count + pending.commands.len() > MAX_BATCH
                        || bytes + more > max_bytes
                    {
                        next = Some(pending);
                        break;
                    }
                    count += pending.commands.len();
                    bytes += more;
                    batch.push(pending);
                }
                Err(_) => break,
            }
        }
        shared
            .proposer
            .queued
            .fetch_sub(batch.len(), Ordering::AcqRel);
        tokio::spawn(async move {
            let _permit = permit;
            send(&shared, batch, idempotent).await;
        });
    }
}

/// Sends one request carrying `batch`, and gives each caller its outcomes.
///
/// The request runs until the latest of the callers' deadlines, so that none is cut short by
/// the deadline of one queued before it; each caller stops waiting at its own (`propose`).
async fn send(shared: &Shared, batch: Vec<Pending>, idempotent: bool) {
    let deadline = batch.iter().map(|p| p.deadline).max().expect("a proposal");
    let timeout = deadline.saturating_duration_since(Instant::now());
    // The callers' commands one after the other; each caller keeps where its own start.
    let mut commands = Vec::with_capacity(batch.len());
    let mut callers = Vec::with_capacity(batch.len());
    for pending in batch {
        callers.push((
            commands.len(),
            pending.commands.len(),
            pending.timeout,
            pending.answer,
        ));
        commands.extend(pending.commands);
    }
    let what_of = |start: usize| commands[start].brief();
    if timeout.is_zero() {
        for (start, _, timeout, answer) in callers {
            let _ = answer.send(Err(RegistryError::Timeout {
                what: what_of(start),
                timeout,
                last: "it waited that long behind this node's other requests to the leader".into(),
            }));
        }
        return;
    }
    let what = || {
        format!(
            "{} proposals of node {} (the first: {})",
            callers.len(),
            shared.me(),
            what_of(0)
        )
    };
    let result = shared
        .send_proposal(&commands, idempotent, timeout, &what)
        .await;
    match result {
        Ok(outcomes) if outcomes.len() == commands.len() => {
            let mut outcomes = outcomes.into_iter();
            for (_, count, _, answer) in callers {
                let _ = answer.send(Ok(outcomes.by_ref().take(count).collect()));
            }
        }
        Ok(outcomes) => {
            let reason = format!(
                "the leader answered {} outcomes for {} commands",
                outcomes.len(),
                commands.len()
            );
            for (start, _, _, answer) in callers {
                let _ = answer.send(Err(RegistryError::Unknown {
                    what: what_of(start),
                    reason: reason.clone(),
                }));
            }
        }
        Err(err) => {
            for (start, _, timeout, answer) in callers {
                let own = err.shared_with(what_of(start), timeout);
                let _ = answer.send(Err(own));
            }
        }
    }
}
