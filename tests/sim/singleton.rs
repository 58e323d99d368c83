//! A cluster singleton's instance whose `started` hook is still running when its node fences
//! itself must end with the lease, whether a singleton manager started it or a node's agent
//! (an app's singleton role): the registry may grant the lock to another node once the
//! session could have expired, and that node starts an instance of its own (invariant 1).
//! The instance is bound to the lease before its hook runs; it used to be bound only after,
//! so a hook that waits (on the network, say) outlived the fence.
//!
//! Deterministic: a perfect network until the test cuts the client off, while the hook waits.

use std::time::Duration;

use ensemble::prelude::*;
use ensemble::registry::RegistryConfig;
use ensemble::supervisor::agent::{Agent, StartInstance, start_on};
use ensemble::supervisor::singleton::Singleton;
use ensemble::transport::simnet::SimNet;
use tokio::sync::mpsc;

use crate::setup::{Cluster, four_nodes, run};
use crate::{SimNode, until};

const SESSION_TTL: Duration = Duration::from_secs(3);

fn tune(settings: &mut RegistryConfig) {
    settings.session_ttl = SESSION_TTL;
}

/// An instance whose `started` hook says it began and then waits for good.
struct SlowStart {
    began: mpsc::UnboundedSender<ActorRef<()>>,
}

impl Actor for SlowStart {
    type Msg = ();

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        let _ = self.began.send(ctx.myself());
        std::future::pending::<()>().await;
        Ok(())
    }

    async fn handle(&mut self, _msg: (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

#[test]
fn a_singleton_still_starting_ends_when_its_node_fences_itself() {
    run(14, a_singleton_fenced_while_starting);
}

async fn a_singleton_fenced_while_starting(seed: u64) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, tune).await?;
    let client = &nodes[3];
    let (began, instances) = mpsc::unbounded_channel();
    let manager = Singleton::new("slow", move |_token| SlowStart {
        began: began.clone(),
    });
    client
        .node
        .spawn(manager)
        .map_err(|e| format!("spawn the manager: {e}"))?;
    ends_when_fenced(&net, client, instances).await
}

#[test]
fn an_agent_s_singleton_still_starting_ends_when_its_node_fences_itself() {
    run(15, an_agent_s_singleton_fenced_while_starting);
}

async fn an_agent_s_singleton_fenced_while_starting(seed: u64) -> Result<(), String> {
    let Cluster {
        net, nodes, _dir, ..
    } = four_nodes(seed, tune).await?;
    let client = &nodes[3];
    let (began, instances) = mpsc::unbounded_channel();
    client
        .node
        .register_module("test.slow", move |(): ()| SlowStart {
            began: began.clone(),
        });
    let agent = Agent::start(&client.node).await?;
    let request = StartInstance {
        instance: "test/slow@s3#1".into(),
        module: "test.slow".into(),
        args: rmp_serde::to_vec(&()).map_err(|e| e.to_string())?,
        resources: Default::default(),
        global_name: None,
        groups: Vec::new(),
        singleton: Some("test.slow".into()),
        lock_timeout: Duration::from_secs(5),
        owner: None,
    };
    // Never answered: the instance's start never ends.
    let cluster = client.cluster.clone();
    let _asked =
        tokio::spawn(
            async move { start_on(&cluster, &agent, request, Duration::from_secs(60)).await },
        );
    ends_when_fenced(&net, client, instances).await
}

/// Once the instance began to start (`instances` hears of it), cuts the client off until it
/// fences itself: the instance, still in its `started` hook, must end at once.
async fn ends_when_fenced(
    net: &SimNet,
    client: &SimNode,
    mut instances: mpsc::UnboundedReceiver<ActorRef<()>>,
) -> Result<(), String> {
    let instance = tokio::time::timeout(Duration::from_secs(10), instances.recv())
        .await
        .map_err(|_| "no instance began to start".to_owned())?
        .ok_or("nothing makes instances any more")?;

    net.isolate(client.addr);
    let registry = client.registry.clone();
    until("the client fenced", SESSION_TTL, || registry.is_fenced()).await?;
    until(
        "the starting instance ended",
        Duration::from_millis(100),
        || !instance.is_alive(),
    )
    .await?;
    if registry.is_expired() {
        return Err("the session expired: the test did not show what it is for".into());
    }
    Ok(())
}
