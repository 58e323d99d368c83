//! A granted lock: its fencing token, its loss, and the actors bound to it.

use std::sync::Arc;

use ensemble_runtime::{ActorId, UntypedRef};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::Shared;
use crate::state::{Command, Holder, Outcome};

/// What the registry handle and the lease share, so the handle can tell the lease it is lost.
pub(crate) struct LeaseState {
    /// The grant's fencing token.
    token: u64,
    lost: watch::Sender<Option<String>>,
    bound: Mutex<Bound>,
}

/// The actors bound to a lease, and whether it is lost: under one lock, so that an actor bound
/// while the lease is being lost is either killed with the others or not bound at all.
#[derive(Default)]
struct Bound {
    actors: Vec<UntypedRef>,
    lost: bool,
}

impl LeaseState {
    pub(crate) fn new(token: u64) -> Arc<Self> {
        Arc::new(LeaseState {
            token,
            lost: watch::channel(None).0,
            bound: Mutex::default(),
        })
    }

    /// The grant's token, if `actor` is bound to the lease and it is not lost.
    pub(crate) fn token_if_bound(&self, actor: &ActorId) -> Option<u64> {
        let bound = self.bound.lock();
        (!bound.lost && bound.actors.iter().any(|a| a.id() == actor)).then_some(self.token)
    }

    /// The lease is lost: bound actors are killed first, then waiters on `lost` are told.
    /// Answers the actors killed (a kill takes effect at an actor's next `.await`: whoever
    /// must know them ended waits for their exits).
    pub(crate) fn lose(&self, why: &str) -> Vec<UntypedRef> {
        let actors = {
            let mut bound = self.bound.lock();
            bound.lost = true;
            std::mem::take(&mut bound.actors)
        };
        for actor in &actors {
            actor.kill();
        }
        self.lost.send_if_modified(|lost| {
            if lost.is_none() {
                *lost = Some(why.to_owned());
                true
            } else {
                false
            }
        });
        actors
    }
}

/// What [`Lease::lost`] says of a lease its holder released.
pub const LEASE_RELEASED: &str = "released by its holder";

/// A lock held by this node. Dropping it does not release the lock: call
/// [`release`](Lease::release) (the lock is also released when this node's session ends).
pub struct Lease {
    pub(crate) lock: String,
    pub(crate) holder: Holder,
    pub(crate) token: u64,
    pub(crate) state: Arc<LeaseState>,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("lock", &self.lock)
            .field("holder", &self.holder)
            .field("token", &self.token)
            .field("lost", &*self.state.lost.borrow())
            .finish()
    }
}

impl Lease {
    /// The lock's name.
    pub fn lock(&self) -> &str {
        &self.lock
    }

    /// The grant's fencing token: strictly greater than every earlier grant of this lock.
    /// Pass it with every side effect, so that receivers can refuse a stale holder's.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Whether the lease is lost: revoked, or this node fenced itself, or this node's clock
    /// is past its session's validity. The last is read from the clock at each call, so a
    /// holder resumed from a freeze sees its lease lost at once, before the node's fencing
    /// timer has run (which then releases the lock).
    pub fn is_lost(&self) -> bool {
        lost(&self.state, &self.shared)
    }

    /// Resolves when the lease is lost, saying why ([`LEASE_RELEASED`] once its holder released
    /// it). The future does not borrow the lease, so it can be awaited in another task.
    pub fn lost(&self) -> impl Future<Output = String> + Send + 'static {
        let mut lost = self.state.lost.subscribe();
        async move {
            loop {
                if let Some(why) = lost.borrow_and_update().clone() {
                    return why;
                }
                if lost.changed().await.is_err() {
                    return "the registry stopped".into();
                }
            }
        }
    }

    /// Binds an actor to the lease: it is killed when the lease is lost, before the registry
    /// could grant the lock to anyone else (see the self-fencing rule in docs/registry.md).
    pub fn bind(&self, actor: impl Into<UntypedRef>) {
        bind(&self.state, &self.shared, actor.into());
    }

    /// What [`bind`](Self::bind) does, as a function that owns what it needs: for
    /// `SpawnOptions::before_start`, which binds the actor before anything of it runs (so
    /// its `started` hook can read [`Registry::fencing_token_of`](crate::Registry::fencing_token_of)).
    pub fn binder(&self) -> impl Fn(&UntypedRef) + Send + Sync + 'static {
        let (state, shared) = (self.state.clone(), self.shared.clone());
        move |actor| bind(&state, &shared, actor.clone())
    }

    /// Gives the lock back; the next waiter gets it at once.
    ///
    /// The actors bound to the lease are not killed: they keep running, beside the next
    /// holder. Stop them first (and wait for their end) if that holder must not overlap
    /// them.
    ///
    /// If the registry cannot be reached within the request timeout, the error is returned
    /// and the lock is still given back: a task of this node keeps proposing the release
    /// until the registry takes it or this node's session ends (which releases it too). The
    /// same task takes over when the caller stops waiting (a timeout or `select!` around the
    /// call drops it).
    pub async fn release(self) -> Result<(), crate::RegistryError> {
        self.shared
            .leases
            .lock()
            .remove(&(self.lock.clone(), self.holder.id));
        // Its bound actors stay; whoever awaits `lost` learns why it ended.
        self.state.bound.lock().actors.clear();
        self.state.lose(LEASE_RELEASED);
        let command = Command::Release {
            lock: self.lock.clone(),
            holder: self.holder.clone(),
        };
        match self.shared.release_or_keep_trying(command).await? {
            Outcome::Done { .. } | Outcome::NotHeld => Ok(()),
            other => Err(self
                .shared
                .unexpected(&format!("release of lock {:?}", self.lock), other)),
        }
    }
}

/// See [`Lease::is_lost`].
fn lost(state: &LeaseState, shared: &Shared) -> bool {
    state.lost.borrow().is_some() || shared.is_fenced()
}

fn bind(state: &LeaseState, shared: &Shared, actor: UntypedRef) {
    {
        let mut bound = state.bound.lock();
        if !bound.lost && !lost(state, shared) {
            bound.actors.push(actor);
            return;
        }
    }
    actor.kill();
}
