//! The app controller on a node of its own (real QUIC, a real registry, the node's agent and
//! the controller's manager): what it does when an app is removed while its starts are under
//! way, deployed again, or its starts fail, and what its status says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ensemble::cluster::Cluster;
use ensemble::prelude::*;
use ensemble::registry::Registry;
use ensemble::supervisor::app::{
    APPS_PREFIX, AppSpec, Apps, AppsNode, CONTROLLER, Controller, STATUS_PREFIX, role_group,
};
use ensemble::supervisor::singleton::Singleton;
use serde::{Deserialize, Serialize};

use crate::solo::node_s1;
use crate::util::{DEADLINE, certificates, one_cluster_at_a_time};

/// What the probes of one test did, by their `tag` argument.
#[derive(Clone, Default)]
struct Counts(Arc<Mutex<HashMap<String, Count>>>);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Count {
    /// Starts begun.
    attempts: usize,
    /// Instances that came up.
    ups: usize,
    /// Instances up now.
    running: usize,
}

impl Counts {
    fn of(&self, tag: &str) -> Count {
        self.0.lock().unwrap().get(tag).copied().unwrap_or_default()
    }

    fn change(&self, tag: &str, change: impl FnOnce(&mut Count)) -> Count {
        let mut counts = self.0.lock().unwrap();
        let count = counts.entry(tag.to_owned()).or_default();
        change(count);
        *count
    }
}

#[derive(Serialize, Deserialize)]
enum ProbeMsg {
    /// Ends the instance normally.
    Quit,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct ProbeArgs {
    tag: String,
    /// How long its start takes.
    delay_ms: u64,
    /// Its first starts (by tag) that fail.
    fail_first: usize,
}

struct Probe {
    args: ProbeArgs,
    counts: Counts,
    up: bool,
}

impl Actor for Probe {
    type Msg = ProbeMsg;

    async fn started(&mut self, _ctx: &mut Context<Self>) -> ActorResult {
        let count = self.counts.change(&self.args.tag, |c| c.attempts += 1);
        if count.attempts <= self.args.fail_first {
            return Err(ActorError::new(format!(
                "start {} of {} told to fail",
                count.attempts, self.args.tag
            )));
        }
        tokio::time::sleep(Duration::from_millis(self.args.delay_ms)).await;
        self.counts.change(&self.args.tag, |c| {
            c.ups += 1;
            c.running += 1;
        });
        self.up = true;
        Ok(())
    }

    async fn handle(&mut self, msg: ProbeMsg, ctx: &mut Context<Self>) -> ActorResult {
        let ProbeMsg::Quit = msg;
        ctx.stop();
        Ok(())
    }

    async fn stopped(&mut self, _reason: &ExitReason, _ctx: &mut Context<Self>) {
        if self.up {
            self.counts.change(&self.args.tag, |c| c.running -= 1);
        }
    }
}

/// A node of its own, `s1`, with the module `c.probe`, taking part in apps.
async fn one_node(certs: &std::path::Path) -> (Node, Registry, Apps, Counts) {
    let (node, registry, apps, counts) = one_node_with_manager(certs).await;
    (node, registry, apps.apps, counts)
}

/// [`one_node`], with the node's manager of the controller singleton.
async fn one_node_with_manager(certs: &std::path::Path) -> (Node, Registry, AppsNode, Counts) {
    let (node, registry) = node_s1(certs).await;
    let counts = Counts::default();
    let made = counts.clone();
    node.register_module("c.probe", move |args: ProbeArgs| Probe {
        args,
        counts: made.clone(),
        up: false,
    });
    let apps = Apps::start(&node).await.unwrap();
    (node, registry, apps, counts)
}

/// An app `name` of one role `r` running `c.probe` with these extra keys.
fn app(name: &str, role: &str) -> AppSpec {
    AppSpec::from_toml(&format!(
        "name = \"{name}\"\n[[roles]]\nname = \"r\"\nmodule = \"c.probe\"\n{role}\n"
    ))
    .unwrap()
}

/// Waits until `done` holds, or panics saying what was last seen.
async fn wait_for<T: std::fmt::Debug>(
    what: &str,
    mut seen: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let now = seen();
        if done(&now) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: last seen {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Ends the one instance of `app`'s role `r` normally and waits until its group is empty.
async fn quit(registry: &Registry, app: &str) {
    let group = role_group(app, "r");
    let instance = wait_for(
        "the role has no instance to end",
        || registry.group::<ProbeMsg>(&group),
        |g| g.len() == 1,
    )
    .await;
    instance[0].tell(ProbeMsg::Quit).await.unwrap();
    wait_for(
        "the instance that ended is still in its group",
        || registry.group_members(&group).len(),
        |n| *n == 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Held for the whole test on purpose, as in the other tests of this file's neighbours.
#[allow(clippy::await_holding_lock)]
async fn an_instance_that_starts_after_its_app_was_removed_is_stopped() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, _registry, apps, counts) = one_node(certs.path()).await;
    apps.deploy(&app("gone", "args = { tag = \"gone\", delay_ms = 2000 }"))
        .await
        .unwrap();
    // The start is under way (the module's start takes 2 s): remove the app now.
    wait_for("no start began", || counts.of("gone"), |c| c.attempts == 1).await;
    assert!(apps.remove("gone").await.unwrap());
    // The instance comes up once its start ends, and is stopped then.
    wait_for(
        "the instance of the removed app still runs",
        || counts.of("gone"),
        |c| c.ups == 1 && c.running == 0,
    )
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn an_app_deployed_again_starts_its_temporary_role_again() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, registry, apps, counts) = one_node(certs.path()).await;
    let spec = app(
        "again",
        "args = { tag = \"again\" }\nrestart = { restart = \"temporary\" }",
    );
    apps.deploy(&spec).await.unwrap();
    // Its one instance ends normally: a temporary role does not replace it.
    quit(&registry, "again").await;
    // Deployed again, unchanged: it starts again.
    apps.deploy(&spec).await.unwrap();
    wait_for(
        "the app deployed again did not start its role",
        || counts.of("again"),
        |c| c.ups == 2 && c.running == 1,
    )
    .await;
    quit(&registry, "again").await;
    // Removed (the controller sees it: it deletes the app's status), then deployed again.
    assert!(apps.remove("again").await.unwrap());
    let status = format!("{STATUS_PREFIX}again");
    wait_for(
        "the controller did not see the app removed",
        || registry.get_cached(&status),
        Option::is_none,
    )
    .await;
    apps.deploy(&spec).await.unwrap();
    wait_for(
        "the app removed and deployed again did not start its role",
        || counts.of("again"),
        |c| c.ups == 3 && c.running == 1,
    )
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_temporary_role_whose_start_failed_is_started_again() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, _registry, apps, counts) = one_node(certs.path()).await;
    apps.deploy(&app(
        "retried",
        "args = { tag = \"retried\", fail_first = 1 }\nrestart = { restart = \"temporary\" }",
    ))
    .await
    .unwrap();
    wait_for(
        "the temporary role whose start failed was not started again",
        || counts.of("retried"),
        |c| c.attempts == 2 && c.running == 1,
    )
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_spec_with_nan_arguments_keeps_its_temporary_role_ended() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, registry, apps, counts) = one_node(certs.path()).await;
    // NaN is not equal to itself, nor is a spec holding it.
    apps.deploy(&app(
        "nan",
        "args = { tag = \"nan\", x = nan }\nrestart = { restart = \"temporary\" }",
    ))
    .await
    .unwrap();
    quit(&registry, "nan").await;
    // Another app, deployed after the end was seen, runs once the controller has reconciled
    // every app at least once since.
    apps.deploy(&app("other", "args = { tag = \"other\" }"))
        .await
        .unwrap();
    wait_for(
        "the other app did not start",
        || counts.of("other"),
        |c| c.running == 1,
    )
    .await;
    assert_eq!(
        counts.of("nan").attempts,
        1,
        "the temporary role's instance that ended was started again"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_role_that_gave_up_says_why_its_last_start_failed() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, _registry, apps, _counts) = one_node(certs.path()).await;
    apps.deploy(&app(
        "failing",
        "args = { tag = \"failing\", fail_first = 1000 }\nrestart = { max_restarts = 1 }",
    ))
    .await
    .unwrap();
    let problem = wait_for(
        "the role did not give up",
        || {
            apps.status("failing")
                .and_then(|s| s.roles[0].problem.clone())
        },
        |p| p.as_deref().is_some_and(|p| p.starts_with("gave up")),
    )
    .await
    .unwrap();
    assert!(problem.contains("told to fail"), "{problem}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_global_name_held_by_another_actor_is_named_with_its_holder() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, registry, apps, _counts) = one_node(certs.path()).await;
    let other = node
        .start(Probe {
            args: ProbeArgs::default(),
            counts: Counts::default(),
            up: false,
        })
        .await
        .unwrap();
    registry.register("taken", &other).await.unwrap();
    apps.deploy(&app("named", "global_name = \"taken\""))
        .await
        .unwrap();
    let problem = wait_for(
        "no problem shown",
        || {
            apps.status("named")
                .and_then(|s| s.roles[0].problem.clone())
        },
        Option::is_some,
    )
    .await
    .unwrap();
    assert!(
        problem.contains("\"taken\"") && problem.contains(&other.id().to_string()),
        "{problem}"
    );
    assert!(!problem.contains("stopping"), "{problem}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_deployed_role_may_not_become_a_singleton() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, _registry, apps, counts) = one_node(certs.path()).await;
    apps.deploy(&app("single", "args = { tag = \"single\" }"))
        .await
        .unwrap();
    wait_for("no instance", || counts.of("single"), |c| c.running == 1).await;
    let err = apps
        .deploy(&app(
            "single",
            "args = { tag = \"single\" }\nsingleton = true",
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("roles[r].singleton"), "{err}");
    // Removed and deployed again, it may.
    assert!(apps.remove("single").await.unwrap());
    apps.deploy(&app(
        "single",
        "args = { tag = \"single\" }\nsingleton = true",
    ))
    .await
    .unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_deployed_spec_overwritten_with_one_that_does_not_parse_keeps_its_app_running() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, registry, apps, counts) = one_node(certs.path()).await;
    apps.deploy(&app("kept", "args = { tag = \"kept\" }"))
        .await
        .unwrap();
    wait_for(
        "the app did not start",
        || counts.of("kept"),
        |c| c.running == 1,
    )
    .await;
    // Written past `deploy`'s checks, as a node of an older release could: not a removal.
    registry
        .put(
            &format!("{APPS_PREFIX}kept"),
            "name = \"kept\"\nroles = 7\n",
        )
        .await
        .unwrap();
    // Another app, deployed after it, runs once the controller has read the specs since.
    apps.deploy(&app("other", "args = { tag = \"other\" }"))
        .await
        .unwrap();
    wait_for(
        "the other app did not start",
        || counts.of("other"),
        |c| c.running == 1,
    )
    .await;
    let group = role_group("kept", "r");
    assert_eq!(registry.group_members(&group).len(), 1);
    assert_eq!(
        counts.of("kept"),
        Count {
            attempts: 1,
            ups: 1,
            running: 1
        },
        "the app whose spec does not parse was stopped"
    );
    node.shutdown().await;
}

/// A controller that takes over adopts the instances of the one before, and tells their
/// indexes by their global names: with one instance too many, it stops the one of the
/// highest index, so the names stay at the low ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_controller_that_took_over_stops_the_highest_named_index_first() {
    let _turn = one_cluster_at_a_time();
    let certs = certificates(&["s1"]);
    let (node, registry, apps, _counts) = one_node_with_manager(certs.path()).await;
    let named = |count: usize| {
        app(
            "indexed",
            &format!("instances = {count}\nglobal_name = \"indexed.{{i}}\""),
        )
    };
    let holders = |count: usize| -> Vec<Option<ActorId>> {
        (0..count)
            .map(|i| {
                registry
                    .name_holder(&format!("indexed.{i}"))
                    .map(|holder| holder.id)
            })
            .collect()
    };
    apps.apps.deploy(&named(3)).await.unwrap();
    let before = wait_for(
        "the three instances did not take their names",
        || holders(3),
        |held| held.iter().all(Option::is_some),
    )
    .await;
    // The controller ends (its instances outlive it), the app shrinks meanwhile, and a new
    // controller takes over.
    apps.controller.stop();
    apps.controller.wait_for_exit().await;
    apps.apps.deploy(&named(2)).await.unwrap();
    let (cluster, controller_registry) = (node.extension::<Cluster>().unwrap(), registry.clone());
    let _manager = node
        .start(Singleton::new(CONTROLLER, move |_token| {
            Controller::new(controller_registry.clone(), cluster.clone())
        }))
        .await
        .unwrap();
    let after = wait_for(
        "no instance was stopped",
        || holders(3),
        |held| held.iter().filter(|h| h.is_some()).count() == 2,
    )
    .await;
    assert_eq!(
        after,
        vec![before[0].clone(), before[1].clone(), None],
        "not the highest index was stopped"
    );
    node.shutdown().await;
}
