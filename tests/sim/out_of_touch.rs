//! Watchers of an actor whose node they cannot reach (a partial partition: both nodes still
//! reach the registry). The runtime fires a monitor set on an actor of a node that is not
//! connected at once with `NodeDown`, as Erlang's `noconnection`; the actor may run on.
//!
//! - The app controller: one that took over while cut off from an instance's node used to
//!   take the instance for ended and place a second one. Now it counts the instance as
//!   running, monitors it again once its node is reached, and takes it for ended when the
//!   registry declares the node down or the instance leaves its group (it ended).
//! - The kv master: one started while cut off from a worker's node used to ignore that worker
//!   for good (and could start a partition whose only copy it held again, empty). Now the
//!   worker counts as live and silent, and is used again once its node is reached.
//!
//! Deterministic: a perfect network until the test cuts it.

use std::time::Duration;

use ensemble::kv::{Master, MasterArgs, MasterMsg, Worker, WorkerArgs};
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
    replaced(watcher, &instance, "that ended", Duration::from_secs(10)).await
}

#[test]
fn an_instance_out_of_touch_that_ends_is_replaced_while_its_node_stays_out_of_reach() {
    run(19, ended_out_of_reach);
}

/// It ends while the partition lasts: it leaves its group (its node still reaches the
/// registry), which tells the controller.
async fn ended_out_of_reach(seed: u64) -> Result<(), String> {
    let (cluster, watcher, instance) = cut_off_from_an_instance(seed).await?;
    let nodes = &cluster.nodes;
    let watcher: &SimNode = &nodes[watcher];
    UntypedRef::from_id(&nodes[3].node, &instance)
        .stop_with(ExitReason::Failed("ended by the test".into()));
    replaced(
        watcher,
        &instance,
        "that ended out of reach",
        Duration::from_secs(10),
    )
    .await?;
    if watcher.cluster.connection(nodes[3].node.id()).is_some() {
        return Err("the nodes connected again: the test did not show what it is for".into());
    }
    Ok(())
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
    replaced(
        watcher,
        &instance,
        "on the node declared down",
        SESSION_TTL * 5,
    )
    .await?;
    if !watcher.registry.session_ended(nodes[3].node.id()) {
        return Err("replaced before the registry declared the node down".into());
    }
    Ok(())
}

/// Waits until `watcher`'s copy of the registry shows the role's one instance, and it is not
/// `instance` (the instance `which` describes).
async fn replaced(
    watcher: &SimNode,
    instance: &ActorId,
    which: &str,
    within: Duration,
) -> Result<(), String> {
    let what = format!("a replacement of the instance {which}");
    until(&what, within, || {
        let members = instances(&watcher.registry);
        members.len() == 1 && &members[0] != instance
    })
    .await
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

    let watcher = not_leading(nodes)?;
    cut_off_from(&cluster, watcher).await?;
    let runner = nodes[3].node.id().clone();
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

#[test]
fn a_kv_worker_out_of_touch_is_used_again_once_its_node_is_reached() {
    run(18, kv_worker_reached_again);
}

async fn kv_worker_reached_again(seed: u64) -> Result<(), String> {
    const PARTITIONS: u32 = 6;
    let cluster = four_nodes(seed, tune).await?;
    let nodes = &cluster.nodes;
    let watcher = not_leading(nodes)?;
    let mut workers = Vec::new();
    for (i, node) in nodes.iter().enumerate().filter(|(i, _)| *i != watcher) {
        let worker = node
            .node
            .start(Worker::new(WorkerArgs::default()))
            .await
            .map_err(|e| format!("start the worker on s{i}: {e}"))?;
        workers.push(worker.id().clone());
    }
    let args = MasterArgs {
        partitions: PARTITIONS,
        ..MasterArgs::default()
    };
    let first = nodes[watcher]
        .node
        .start(Master::new(args.clone()))
        .await
        .map_err(|e| format!("start the first master: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !first
        .ask(MasterMsg::Status, Duration::from_secs(1))
        .await
        .is_ok_and(|s| s.settled && s.replicated == PARTITIONS)
    {
        if Instant::now() > deadline {
            return Err("the first master never settled the table".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.stop();
    first.wait_for_exit().await;

    let runner = nodes[3].node.id().clone();
    let cut_off = workers
        .iter()
        .find(|w| w.node() == &runner)
        .cloned()
        .ok_or("no worker on s3")?;
    cut_off_from(&cluster, watcher).await?;
    let second = nodes[watcher]
        .node
        .start(Master::new(args))
        .await
        .map_err(|e| format!("start the second master: {e}"))?;
    // Long enough for the master to plan without the worker it cannot reach.
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.net.heal();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let table = second
            .ask(MasterMsg::Table, Duration::from_secs(1))
            .await
            .ok();
        let uses = table.as_ref().is_some_and(|t| {
            t.entries.iter().any(|e| {
                [&e.primary, &e.backup]
                    .into_iter()
                    .flatten()
                    .any(|w| w.id() == &cut_off)
            })
        });
        if uses {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the master never used worker {cut_off} again after its node was reached: {table:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The position of a voter that does not lead: s3 keeps its session through the leader, so
/// the node cut off from s3 must not lead.
fn not_leading(nodes: &[SimNode]) -> Result<usize, String> {
    let leader = nodes[0].registry.leader().ok_or("no leader known")?;
    nodes[..3]
        .iter()
        .position(|n| n.node.id().name() != leader)
        .ok_or_else(|| "every voter leads".into())
}

/// Cuts node `watcher` off from s3, and waits until it has no connection to it.
async fn cut_off_from(cluster: &Cluster, watcher: usize) -> Result<(), String> {
    let nodes = &cluster.nodes;
    cluster
        .net
        .partition(&[nodes[watcher].addr], &[nodes[3].addr]);
    let runner = nodes[3].node.id().clone();
    until(
        "the watcher's node lost its connection to s3",
        Duration::from_secs(30),
        || nodes[watcher].cluster.connection(&runner).is_none(),
    )
    .await
}
