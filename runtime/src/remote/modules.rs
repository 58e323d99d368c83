//! Actor modules: actor types registered by name, so that other nodes can spawn them here.

use std::future::Future;
use std::pin::Pin;

use serde::de::DeserializeOwned;

use crate::actor::{Actor, SpawnOptions, UntypedRef};
use crate::node::Node;

use super::RemoteMessage;
use super::router::decode_with;
use super::wire::WireRef;

/// An actor a module started: reachable from other nodes, with its protocol's type name.
#[derive(Clone, Debug)]
pub struct ModuleActor {
    /// The actor.
    pub actor: UntypedRef,
    /// The Rust type name of its messages.
    pub msg_type: &'static str,
}

impl ModuleActor {
    /// Its reference as other nodes see it.
    pub fn to_wire(&self) -> WireRef {
        WireRef {
            id: self.actor.id().clone(),
            msg_type: self.msg_type.to_owned(),
        }
    }
}

pub(crate) type SpawnFuture = Pin<Box<dyn Future<Output = Result<ModuleActor, String>> + Send>>;

/// A registered module: decodes its arguments and starts an actor.
pub(crate) trait Module: Send + Sync {
    /// Starts an actor of the module; `before_started` is given it once spawned, before its
    /// `started` hook runs.
    fn start(
        &self,
        node: &Node,
        module: &str,
        args: &[u8],
        before_started: &dyn Fn(&UntypedRef),
    ) -> SpawnFuture;
}

/// A module made from a factory function of typed arguments.
pub(crate) struct FactoryModule<F, Args> {
    pub(crate) factory: F,
    pub(crate) _args: std::marker::PhantomData<fn(Args)>,
}

impl<A, Args, F> Module for FactoryModule<F, Args>
where
    A: Actor,
    A::Msg: RemoteMessage,
    Args: DeserializeOwned + Send + 'static,
    F: Fn(Args) -> A + Send + Sync + 'static,
{
    fn start(
        &self,
        node: &Node,
        module: &str,
        args: &[u8],
        before_started: &dyn Fn(&UntypedRef),
    ) -> SpawnFuture {
        // No arguments come as an empty map, which struct arguments with defaults accept; a
        // module whose arguments are `()` takes it as nil.
        let decoded = decode_with(node, args).or_else(|err| match args {
            [0x80] => decode_with(node, &[0xc0]).map_err(|_| err),
            _ => Err(err),
        });
        let args: Args = match decoded {
            Ok(args) => args,
            Err(err) => {
                let reason = format!(
                    "cannot decode the arguments of module {module:?} as {}: {err}",
                    std::any::type_name::<Args>()
                );
                return Box::pin(async move { Err(reason) });
            }
        };
        // A factory that panics fails this start, as a handler's panic ends only its actor:
        // the caller frees what it took for the start (a reservation, a singleton's lock)
        // through its error path.
        let actor =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.factory)(args))) {
                Ok(actor) => actor,
                Err(panic) => {
                    let reason = format!(
                        "the factory of module {module:?} panicked: {}",
                        crate::actor::panic_message(&*panic)
                    );
                    return Box::pin(async move { Err(reason) });
                }
            };
        let starting = match node.spawn_starting(actor, SpawnOptions::new(), None, before_started) {
            Ok(spawned) => spawned,
            Err(err) => {
                let reason = err.to_string();
                return Box::pin(async move { Err(reason) });
            }
        };
        let node = node.clone();
        Box::pin(async move {
            let actor_ref = starting.started().await.map_err(|err| err.to_string())?;
            if let Some(cell) = actor_ref.local() {
                node.inner.remote.export(cell);
            }
            Ok(ModuleActor {
                actor: actor_ref.untyped(),
                msg_type: std::any::type_name::<A::Msg>(),
            })
        })
    }
}
