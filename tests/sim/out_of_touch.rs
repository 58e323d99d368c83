//! The app controller and an instance whose node it cannot reach (a partial partition: both
//! nodes still reach the registry). The runtime fires a monitor set on an actor of a node that
//! is not connected at once with `NodeDown`, as Erlang's `noconnection`; the instance may run
//! on. A controller that took over while cut off from the instance's node used to take such an
//! instance for ended and place a second one. Now it counts the instance as running, monitors
//! it again once its node is reached, and takes it for ended only when the registry declares
//! the node down.
//!
//! Deterministic: a perfect network until the test cuts it.

use std::time::Duration;

use ensemble::prelude::*;
use ensemble::registry::{Registry, RegistryConfig};
use ensemble::supervisor::agent::Agent;
use ensemble::supervisor::app::{AppSpec, Apps, Controller, role_group};
use serde::Deserialize;
use tokio::time::Instant;

use crate::setup::{Cluster, four_nodes, run};
use crate::{SimNode, until};

const SESSION_TTL: Duration = Duration::from_secs(3);

const SPEC: &str = r#"
name = "sim"

[[roles]]
name = "idle"
module = "sim.idle"
instances = 1
"#;

fn tune(settings: &mut RegistryConfig) {
    settings.session_ttl = SESSION_TTL;
}

/// The module's arguments: none.
#[derive(Deserialize)]
struct NoArgs {}

/// An instance that does nothing.
struct Idle;

impl Actor for Idle {
    type Msg = ();

    async fn handle(&mut self, _msg: (), _ctx: &mut Context<Self>) -> ActorResult {
        Ok(())
    }
}

#[test]
fn an_instance_out_of_touch_counts_as_running_until_its_node_is_reached_again() {
    run(16, reached_again);
}

async fn reached_again(seed: u64) -> Result<(), String> {
    let (cluster, watcher, instance) = cut_off_from_an_instance(seed).await?;
    let nodes = &cluster.nodes;
    let watcher: &SimNode = &nodes[watcher];
    cluster.net.heal();
    let runner = nodes[3].node.id().clone();
    until(
        "the controller's node connected to the instance's again",
        Duration::from_secs(30),
        || watcher.cluster.connection(&runner).is_some(),
    )
    .await?;
    // Monitored again, its end is seen and it is replaced.
    UntypedRef::from_id(&nodes[3].node, &instance)
        .stop_with(ExitReason::Failed("ended by the test".into()));
    until(
        "a replacement of the instance that ended",
        Duration::from_secs(10),
        || {
            let members = instances(&watcher.registry);
            members.len() == 1 && members[0] != instance
        },
    )
    .await
}

#[test]
fn an_instance_out_of_touch_is_replaced_once_the_registry_declares_its_node_down() {
    run(17, declared_down);
}

async fn declared_down(seed: u64) -> Result<(), String> {
    let (cluster, watcher, instance) = cut_off_from_an_instance(seed).await?;
    let nodes = &cluster.nodes;
    let watcher: &SimNode = &nodes[watcher];
    cluster.net.isolate(nodes[3].addr);
    until(
        "a replacement of the instance on the node declared down",
        SESSION_TTL * 5,
        || {
            let members = instances(&watcher.registry);
            members.len() == 1 && members[0] != instance
        },
    )
    .await?;
    if !watcher.registry.session_ended(nodes[3].node.id()) {
        return Err("replaced before the registry declared the node down".into());
    }
    Ok(())
}

/// The role's instances, from `registry`'s copy.
fn instances(registry: &Registry) -> Vec<ActorId> {
    registry
        .group_members(&role_group("sim", "idle"))
        .into_iter()
        .map(|w| w.id)
        .collect()
}

/// Runs the app's one instance on s3 (under a controller on s0, which then stops), cuts a
/// voter that does not lead off from s3 and starts a controller there. Checks that the
/// controller places no second instance for 5 s (virtual), and returns the cluster, the
/// position of the controller's node and the instance.
async fn cut_off_from_an_instance(seed: u64) -> Result<(Cluster, usize, ActorId), String> {
    let cluster = four_nodes(seed, tune).await?;
    let nodes = &cluster.nodes;
    for node in nodes {
        node.node.register_module("sim.idle", |_: NoArgs| Idle);
    }
    // Only s3 takes instances at first.
    let s3_agent = Agent::start(&nodes[3].node).await?;
    let apps = Apps::new(&nodes[0].node).map_err(|e| e.to_string())?;
    let spec = AppSpec::from_toml(SPEC).map_err(|e| e.to_string())?;
    apps.deploy(&spec).await.map_err(|e| e.to_string())?;
    let first = nodes[0]
        .node
        .spawn(Controller::new(
            nodes[0].registry.clone(),
            nodes[0].cluster.clone(),
        ))
        .map_err(|e| format!("spawn the first controller: {e}"))?;
    until("the instance on s3", Duration::from_secs(10), || {
        instances(&nodes[0].registry).len() == 1
    })
    .await?;
    let instance = instances(&nodes[0].registry)[0].clone();
    first.stop();
    first.wait_for_exit().await;
    // Every other node takes instances now; s3 none, so a replacement goes elsewhere.
    s3_agent.stop();
    s3_agent.wait_for_exit().await;
    for node in &nodes[..3] {
        Agent::start(&node.node).await?;
    }

    // The controller's node must not lead: s3 keeps its session through the leader.
    let leader = nodes[0].registry.leader().ok_or("no leader known")?;
    let watcher = nodes[..3]
        .iter()
        .position(|n| n.node.id().name() != leader)
        .ok_or("every voter leads")?;
    cluster
        .net
        .partition(&[nodes[watcher].addr], &[nodes[3].addr]);
    let runner = nodes[3].node.id().clone();
    until(
        "the controller's node lost its connection to the instance's",
        Duration::from_secs(30),
        || nodes[watcher].cluster.connection(&runner).is_none(),
    )
    .await?;
    nodes[watcher]
        .node
        .spawn(Controller::new(
            nodes[watcher].registry.clone(),
            nodes[watcher].cluster.clone(),
        ))
        .map_err(|e| format!("spawn the controller: {e}"))?;
    let until_then = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until_then {
        let members = instances(&nodes[watcher].registry);
        if members != [instance.clone()] {
            return Err(format!(
                "the controller cut off from the instance's node placed another: the role's instances are {members:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if nodes[watcher].registry.session_ended(&runner) {
        return Err(
            "the instance's node was declared down: the test did not show what it is for".into(),
        );
    }
    Ok((cluster, watcher, instance))
}
