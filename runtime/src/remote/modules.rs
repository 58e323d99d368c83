//! Actor modules: actor types registered by name, so that other nodes can spawn them here.

use std::future::Future;
use std::pin::Pin;

use serde::de::DeserializeOwned;

use crate::actor::Actor;
use crate::node::Node;

use super::RemoteMessage;
use super::router::decode_with;
use super::wire::WireRef;

pub(crate) type SpawnFuture = Pin<Box<dyn Future<Output = Result<WireRef, String>> + Send>>;

/// A registered module: decodes its arguments and starts an actor.
pub(crate) trait Module: Send + Sync {
    fn start(&self, node: &Node, module: &str, args: &[u8]) -> SpawnFuture;
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
    fn start(&self, node: &Node, module: &str, args: &[u8]) -> SpawnFuture {
        let args: Args = match decode_with(node, args) {
            Ok(args) => args,
            Err(err) => {
                let reason = format!(
                    "cannot decode the arguments of module {module:?} as {}: {err}",
                    std::any::type_name::<Args>()
                );
                return Box::pin(async move { Err(reason) });
            }
        };
        let actor = (self.factory)(args);
        let node = node.clone();
        Box::pin(async move {
            let actor_ref = node.start(actor).await.map_err(|err| err.to_string())?;
            if let Some(cell) = actor_ref.local() {
                node.inner.remote.export(cell);
            }
            Ok(WireRef {
                id: actor_ref.id().clone(),
                msg_type: std::any::type_name::<A::Msg>().to_owned(),
            })
        })
    }
}
