//! Names and groups for actors known by id and message type only (actors started from
//! modules), for the layers that place actors without knowing their types (the supervisor's
//! app controller and node agents), and the code the typed calls share with them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ensemble_runtime::remote::{ModuleActor, WireRef};
use ensemble_runtime::{ActorId, NodeId, UntypedRef};

use super::{ExitRelease, Registry};
use crate::error::RegistryError;
use crate::state::{Command, Outcome};

impl Registry {
    /// [`register`](Registry::register) for an actor started from a module on this node.
    pub async fn register_module_actor(
        &self,
        name: &str,
        actor: &ModuleActor,
    ) -> Result<(), RegistryError> {
        self.local_module_actor(actor)?;
        self.register_wire(name, actor.to_wire(), actor.actor.clone())
            .await
    }

    /// [`join_group`](Registry::join_group) for an actor started from a module on this node.
    pub async fn join_group_module_actor(
        &self,
        group: &str,
        actor: &ModuleActor,
    ) -> Result<(), RegistryError> {
        self.local_module_actor(actor)?;
        self.join_group_wire(group, actor.to_wire(), actor.actor.clone())
            .await
    }

    /// Binds `name` to the (local) actor `wire`, released when `actor` ends.
    pub(super) async fn register_wire(
        &self,
        name: &str,
        wire: WireRef,
        actor: UntypedRef,
    ) -> Result<(), RegistryError> {
        let command = Command::RegisterName {
            name: name.to_owned(),
            actor: wire,
        };
        let release = Command::UnregisterName {
            name: name.to_owned(),
            actor: actor.id().clone(),
        };
        let key = ExitRelease::Name(name.to_owned(), actor.id().clone());
        let mut on_exit = ReleaseUnlessRefused::new(self, actor, release, key);
        match on_exit.refused_if_definite(self.shared.propose_one(command, true).await)? {
            Outcome::Done { .. } | Outcome::Unchanged => Ok(()),
            Outcome::NameTaken { holder } => {
                on_exit.refused();
                Err(RegistryError::NameTaken {
                    name: name.to_owned(),
                    holder: holder.id,
                })
            }
            other => Err(self
                .shared
                .unexpected(&format!("registration of name {name:?}"), other)),
        }
    }

    /// Adds the (local) actor `wire` to `group`, removed when `actor` ends.
    pub(super) async fn join_group_wire(
        &self,
        group: &str,
        wire: WireRef,
        actor: UntypedRef,
    ) -> Result<(), RegistryError> {
        let command = Command::JoinGroup {
            group: group.to_owned(),
            actor: wire,
        };
        let release = Command::LeaveGroup {
            group: group.to_owned(),
            actor: actor.id().clone(),
        };
        let key = ExitRelease::Member(group.to_owned(), actor.id().clone());
        let mut on_exit = ReleaseUnlessRefused::new(self, actor, release, key);
        on_exit.refused_if_definite(self.shared.propose_one(command, true).await)?;
        Ok(())
    }

    /// A group's members whatever their message type, from this node's copy.
    pub fn group_members(&self, group: &str) -> Vec<WireRef> {
        self.shared.view.read().state.group(group)
    }

    /// The actor a global name resolves to whatever its message type, from this node's copy.
    pub fn name_holder(&self, name: &str) -> Option<WireRef> {
        self.shared.view.read().state.name(name).cloned()
    }

    /// Whether node incarnation `node`'s session ended for good (it expired, or the node
    /// closed it as it left), from this node's copy: the registry's word that the node is
    /// down, the only one (DESIGN.md section 4).
    pub fn session_ended(&self, node: &NodeId) -> bool {
        self.shared.view.read().state.has_ended(node)
    }

    /// The open member sessions, from this node's copy.
    pub fn sessions(&self) -> Vec<crate::state::Session> {
        self.shared.view.read().state.sessions().cloned().collect()
    }

    /// Every lock with a holder or waiters, by name, from this node's copy. A lease is a lock
    /// whose holder keeps it alive through its session, so this lists leases too.
    pub fn locks(&self) -> Vec<(String, crate::state::Lock)> {
        let view = self.shared.view.read();
        view.state
            .locks()
            .map(|(name, lock)| (name.clone(), lock.clone()))
            .collect()
    }

    /// The global names whose key starts with `prefix`, from this node's copy.
    pub fn names_with_prefix(&self, prefix: &str) -> Vec<(String, WireRef)> {
        self.shared
            .view
            .read()
            .state
            .names()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, wire)| (name.clone(), wire.clone()))
            .collect()
    }

    fn local_module_actor(&self, actor: &ModuleActor) -> Result<(), RegistryError> {
        let id: &ActorId = actor.actor.id();
        if id.node() != self.node().id() {
            return Err(RegistryError::NotLocal { actor: id.clone() });
        }
        Ok(())
    }

    /// Proposes `command` when `actor` ends, and again until the registry takes it (an
    /// actor that ends while the registry has no quorum must not keep its name for as long as
    /// this node's session lives). One task per `key`: registering the same name for the same
    /// actor again replaces it, and an explicit unregister or leave stops it.
    fn release_when_ended(&self, actor: UntypedRef, command: Command, key: ExitRelease) {
        let shared = Arc::downgrade(&self.shared);
        let number = self.shared.next_on_exit.fetch_add(1, Ordering::Relaxed);
        let mine = key.clone();
        // Locked until the entry is in: the task looks for it once the actor has ended, which
        // may be at once.
        let mut on_exit = self.shared.on_exit.lock();
        let task = tokio::spawn(async move {
            actor.wait_for_exit().await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            // Its own entry, not one a later registration put in its place.
            shared.take_on_exit(&mine, Some(number));
            if !shared.expired.load(Ordering::Acquire) {
                let _ = shared.release_or_keep_trying(command).await;
            }
        });
        let replaced = on_exit.insert(key, (number, task.abort_handle()));
        drop(on_exit);
        if let Some((_, earlier)) = replaced {
            earlier.abort();
        }
    }
}

/// The release of a name or group entry when its actor ends, made ready before the entry is
/// proposed and set going when dropped, unless the registry refused the entry for sure. A call
/// that timed out, whose outcome is unknown, or whose caller stopped waiting (its future
/// dropped) may have put the entry in all the same: its actor's end must take it out, or it
/// would stay for as long as this node's session lives. Releasing an entry that never went in
/// changes nothing.
struct ReleaseUnlessRefused<'a> {
    registry: &'a Registry,
    release: Option<(UntypedRef, Command, ExitRelease)>,
}

impl<'a> ReleaseUnlessRefused<'a> {
    fn new(registry: &'a Registry, actor: UntypedRef, command: Command, key: ExitRelease) -> Self {
        Self {
            registry,
            release: Some((actor, command, key)),
        }
    }

    /// The entry is not in the registry: nothing to release.
    fn refused(&mut self) {
        self.release = None;
    }

    /// Passes `result` on, taking its error for a refusal unless it leaves the outcome open.
    fn refused_if_definite<T>(
        &mut self,
        result: Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        if let Err(err) = &result
            && !matches!(
                err,
                RegistryError::Timeout { .. } | RegistryError::Unknown { .. }
            )
        {
            self.refused();
        }
        result
    }
}

impl Drop for ReleaseUnlessRefused<'_> {
    fn drop(&mut self) {
        let Some((actor, command, key)) = self.release.take() else {
            return;
        };
        // A call dropped outside a runtime (its runtime shutting down) leaves nothing to do
        // the release: the node goes with it.
        if tokio::runtime::Handle::try_current().is_ok() {
            self.registry.release_when_ended(actor, command, key);
        }
    }
}
