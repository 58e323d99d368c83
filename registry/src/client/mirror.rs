//! The node's local copy of the registry state, fed by one voter (on a voter, its own server;
//! elsewhere the leader):
//! first the whole state, then every batch applied after it, applied here with the same pure
//! state machine. Cached reads (`whereis`, group members) read it without a round trip, and
//! every change's effects are dispatched from here: nodes declared down, locks granted to a
//! waiter of this node, leases lost, config keys changed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ensemble_runtime::{Actor, ActorResult, Context};

use super::Shared;
use crate::server::protocol::FeedMsg;
use crate::state::{Effect, RegistryState, changes};

/// The copy, shared between the mirror actor (writes) and the registry handle (reads).
#[derive(Default)]
pub(crate) struct View {
    pub(crate) state: RegistryState,
    /// The log index the state is at.
    pub(crate) index: u64,
    /// The voter feeding it.
    pub(crate) source: Option<String>,
    /// Whether a whole state has arrived since the last subscription.
    pub(crate) synced: bool,
}

/// The actor the feed is sent to.
pub(crate) struct Mirror {
    pub(crate) shared: Arc<Shared>,
}

impl Actor for Mirror {
    type Msg = FeedMsg;

    async fn handle(&mut self, msg: FeedMsg, _ctx: &mut Context<Self>) -> ActorResult {
        let current = self.shared.epoch.load(Ordering::Acquire);
        let effects = match msg {
            FeedMsg::Sync {
                epoch,
                index,
                state,
            } => {
                if epoch != current {
                    tracing::debug!(epoch, current, "feed: sync of an old subscription dropped");
                    return Ok(());
                }
                let mut view = self.shared.view.write();
                if index < view.index {
                    // A voter a little behind the one before: the log is the same, so keep the
                    // newer copy and skip the batches it already holds.
                    view.synced = true;
                    return Ok(());
                }
                let effects = changes(&view.state, &state);
                view.state = *state;
                view.index = index;
                view.synced = true;
                effects
            }
            FeedMsg::Batch {
                epoch,
                index,
                commands,
            } => {
                let mut view = self.shared.view.write();
                if epoch != current || index <= view.index || !view.synced {
                    tracing::debug!(
                        epoch,
                        current,
                        index,
                        at = view.index,
                        synced = view.synced,
                        "feed: batch dropped"
                    );
                    return Ok(());
                }
                view.index = index;
                view.state.apply(&commands).1
            }
        };
        self.shared.applied.notify_waiters();
        for effect in effects {
            dispatch(&self.shared, effect);
        }
        Ok(())
    }
}

fn dispatch(shared: &Arc<Shared>, effect: Effect) {
    let me = shared.cluster.node().id();
    match &effect {
        Effect::SessionExpired(node) if node == me => shared.session_expired(),
        Effect::SessionExpired(node) => {
            shared.cluster.declare_down(node);
        }
        Effect::Granted {
            lock,
            holder,
            token,
        } if &holder.node == me => {
            if let Some(waiter) = shared.waiters.lock().remove(&(lock.clone(), holder.id)) {
                let _ = waiter.send(*token);
            }
        }
        Effect::Revoked { lock, holder, .. } if &holder.node == me => {
            if let Some(lease) = shared.leases.lock().remove(&(lock.clone(), holder.id)) {
                lease.lose("its lock was revoked by the registry");
            }
        }
        _ => {}
    }
    let _ = shared.effects.send(effect);
}
