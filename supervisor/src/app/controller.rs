//! The app controller: keeps every deployed app at its wanted shape.
//!
//! One controller runs in the cluster, as a [`Singleton`](crate::singleton::Singleton); when
//! its node dies another node's manager starts a fresh one. It holds no state that matters:
//! the wanted shape is the specs under [`APPS_PREFIX`] in the registry, the actual shape is the
//! registry group of each role (every instance joins its role's group on the node it runs on,
//! so an instance leaves the group when it ends or its node's session expires). A controller
//! that takes over reads both and carries on; instances on surviving nodes keep running.
//!
//! Reconciling a role: count its live instances plus the starts under way; place the missing
//! ones ([`crate::placement::plan`] over the members, their labels and their reservations in
//! the registry) and ask each chosen node's agent to start one; stop the extras. Replacing an
//! instance that ended follows the role's restart policy and intensity; a role that exceeds
//! its intensity gives up until the app is deployed again. What cannot be placed is shown in
//! the app's status, counted in `ensemble_app_unplaced_instances`, and tried again whenever a
//! node joins, a session changes or the periodic tick comes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use ensemble_registry::{Registry, RegistryEffect};
use ensemble_runtime::cluster::{Cluster, MemberEvent};
use ensemble_runtime::remote::WireRef;
use ensemble_runtime::{
    Actor, ActorId, ActorResult, Context, Down, ExitReason, NodeId, UntypedRef,
};
use tokio::time::Instant;

use super::spec::{AppSpec, LACKS_ROOM, RoleSpec, role_group};
use super::{APPS_PREFIX, STATUS_PREFIX};
use crate::agent::{NotStarted, StartInstance, agent_on, offers, start_on};
use crate::core::{RestartWindow, died_with_its_node};
use crate::placement::{Offer, plan};
use crate::spec::Restart;

/// How often the controller reconciles without being prompted.
const TICK: Duration = Duration::from_millis(500);
/// How long a start may take, singleton lease wait included.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an instance's end is remembered when its group entry is not (or not yet) in this
/// node's copy of the registry: far longer than the copy lags.
const ENDED_KEPT: Duration = Duration::from_secs(30);

type RoleKey = (String, String);

/// The controller's protocol (local only).
pub enum ControllerMsg {
    /// Something changed: reconcile every app.
    Reconcile,
    /// A start asked of an agent ended.
    Started {
        /// App and role.
        role: RoleKey,
        /// The start's id.
        start: u64,
        /// The instance, or why it did not start.
        result: Result<WireRef, NotStarted>,
    },
}

/// A start under way.
struct Starting {
    id: u64,
    node: String,
    index: usize,
}

/// The controller actor.
pub struct Controller {
    registry: Registry,
    cluster: Cluster,
    specs: BTreeMap<String, AppSpec>,
    starting: HashMap<RoleKey, Vec<Starting>>,
    /// Instances monitored, by actor: those in the roles' groups, and those this controller
    /// started (counted before this node's copy of the registry shows them in their group).
    watched: HashMap<ActorId, RoleKey>,
    /// Watched instances whose monitor fired because their node could not be reached from
    /// this one (not because the registry declared it down): they may still run, so they
    /// count as live, and they are monitored again once their node is reached, or taken for
    /// ended once the registry declares it down or they leave their role's group.
    out_of_touch: HashSet<ActorId>,
    /// Watched instances seen in their role's group in this node's copy of the registry: one
    /// out of touch that is no longer there ended.
    grouped: HashSet<ActorId>,
    /// The index (for global names) of each instance this controller started.
    indexes: HashMap<ActorId, usize>,
    /// Instances known to have ended whose group entry may not be gone yet, with when their
    /// end was seen.
    ended: HashMap<ActorId, Instant>,
    /// Instances being stopped on purpose (their end is not a failure). All of them are
    /// watched, so their ends clear them.
    stopping: HashSet<ActorId>,
    /// Replacements made, per role, for the restart intensity (instances that one node's death
    /// took count once).
    restarts: HashMap<RoleKey, RestartWindow>,
    /// What the restart windows count time from.
    epoch: Instant,
    /// Instances that ended for good (temporary, or transient that ended normally).
    done: HashMap<RoleKey, usize>,
    gave_up: HashSet<RoleKey>,
    /// Why the last replacement of each role was needed, for the status of one that gives up.
    last_failure: HashMap<RoleKey, String>,
    /// The revision of each app's spec as last read: a new one means the app was deployed
    /// again.
    revisions: HashMap<String, u64>,
    /// Why instances are missing, per app and role, as last written to the status key.
    problems: BTreeMap<String, BTreeMap<String, String>>,
    next_start: u64,
    scheduled: bool,
}

impl Controller {
    /// A controller for the node's cluster and registry.
    pub fn new(registry: Registry, cluster: Cluster) -> Self {
        Self {
            registry,
            cluster,
            specs: BTreeMap::new(),
            starting: HashMap::new(),
            watched: HashMap::new(),
            out_of_touch: HashSet::new(),
            grouped: HashSet::new(),
            indexes: HashMap::new(),
            ended: HashMap::new(),
            stopping: HashSet::new(),
            restarts: HashMap::new(),
            epoch: Instant::now(),
            done: HashMap::new(),
            gave_up: HashSet::new(),
            last_failure: HashMap::new(),
            revisions: HashMap::new(),
            problems: BTreeMap::new(),
            next_start: 0,
            scheduled: false,
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if !self.scheduled {
            self.scheduled = true;
            ctx.myself().try_tell(ControllerMsg::Reconcile).ok();
        }
    }

    /// Reads the deployed specs; apps no longer deployed are stopped. From this node's copy of
    /// the registry, like the groups that tell what runs: a reconciliation never waits on the
    /// leader (which may be being elected), and the copy is complete once synced.
    async fn load_specs(&mut self, ctx: &mut Context<Self>) -> Result<(), String> {
        if !self.registry.is_synced() {
            return Err("this node's copy of the registry is not synced yet".into());
        }
        let entries = self.registry.get_prefix_cached(APPS_PREFIX);
        let mut specs = BTreeMap::new();
        let mut revisions = HashMap::new();
        for (key, value) in entries {
            let text = String::from_utf8_lossy(&value.value);
            match AppSpec::from_toml(&text) {
                Ok(spec) => {
                    revisions.insert(spec.name.clone(), value.modified);
                    specs.insert(spec.name.clone(), spec);
                }
                Err(e) => {
                    tracing::error!(%key, "deployed app spec is not valid: {e}");
                    // Not a removal: one written past `deploy`'s checks, or one a rule newer
                    // than it refuses, leaves the app as it ran.
                    let name = key.strip_prefix(APPS_PREFIX).unwrap_or(&key);
                    if let Some(old) = self.specs.get(name) {
                        if let Some(revision) = self.revisions.get(name) {
                            revisions.insert(name.to_owned(), *revision);
                        }
                        specs.insert(name.to_owned(), old.clone());
                    }
                }
            }
        }
        let old_specs = std::mem::take(&mut self.specs);
        for (name, old) in &old_specs {
            match specs.get(name) {
                None => self.remove_app(old, ctx).await,
                // Deployed again, changed or not: every deploy writes the key, so its
                // revision tells a deploy apart from a tick that found nothing new (comparing
                // the specs could not: one deployed again unchanged is equal, and one with a
                // NaN among its arguments is never equal to itself).
                Some(new) if revisions.get(name) != self.revisions.get(name) => {
                    // Roles the new spec dropped go.
                    for role in old.roles.iter().filter(|r| new.role(&r.name).is_none()) {
                        self.stop_role(&old.name, &role.name, ctx);
                        self.forget_role(&(old.name.clone(), role.name.clone()));
                    }
                    // A role that gave up, or whose instances ended for good, gets another
                    // chance.
                    for role in &new.roles {
                        self.forget_role(&(name.clone(), role.name.clone()));
                    }
                }
                _ => {}
            }
        }
        self.specs = specs;
        self.revisions = revisions;
        Ok(())
    }

    async fn remove_app(&mut self, spec: &AppSpec, ctx: &mut Context<Self>) {
        tracing::info!(app = %spec.name, "app removed; stopping its instances");
        for role in &spec.roles {
            self.stop_role(&spec.name, &role.name, ctx);
            // Deployed again later, the app starts afresh.
            self.forget_role(&(spec.name.clone(), role.name.clone()));
        }
        self.problems.remove(&spec.name);
        let _ = self
            .registry
            .delete(&format!("{STATUS_PREFIX}{}", spec.name))
            .await;
    }

    /// Forgets what a role's history decided: its restarts, whether it gave up, how many of
    /// its instances ended for good.
    fn forget_role(&mut self, key: &RoleKey) {
        self.gave_up.remove(key);
        self.done.remove(key);
        self.restarts.remove(key);
        self.last_failure.remove(key);
    }

    /// Whether the deployed specs still have this role.
    fn wants(&self, key: &RoleKey) -> bool {
        self.specs
            .get(&key.0)
            .is_some_and(|s| s.role(&key.1).is_some())
    }

    /// Stops every instance of a role (not a failure: they are not replaced): those its group
    /// shows, those this controller started that the group does not show yet, and those
    /// still starting (their start is forgotten, so the instance is stopped when it answers).
    fn stop_role(&mut self, app: &str, role: &str, ctx: &mut Context<Self>) {
        let key: RoleKey = (app.to_owned(), role.to_owned());
        let mut ids: HashSet<ActorId> = self
            .registry
            .group_members(&role_group(app, role))
            .into_iter()
            .map(|w| w.id)
            .collect();
        ids.extend(
            self.watched
                .iter()
                .filter(|(_, k)| **k == key)
                .map(|(id, _)| id.clone()),
        );
        for id in ids {
            self.stop_instance(&key, id, ctx);
        }
        self.starting.remove(&key);
    }

    /// Stops an instance on purpose, watching it until it ends (so its end is not taken for a
    /// failure, and the stopping instance is forgotten then).
    fn stop_instance(&mut self, key: &RoleKey, id: ActorId, ctx: &mut Context<Self>) {
        if self.ended.contains_key(&id) {
            return;
        }
        let instance = UntypedRef::from_id(ctx.node(), &id);
        if !self.watched.contains_key(&id) {
            ctx.monitor(instance.clone());
            self.watched.insert(id.clone(), key.clone());
        }
        self.stopping.insert(id);
        instance.stop_with(ExitReason::Shutdown);
    }

    async fn reconcile(&mut self, ctx: &mut Context<Self>) {
        self.scheduled = false;
        self.touch_again(ctx);
        let specs: Vec<AppSpec> = self.specs.values().cloned().collect();
        for spec in &specs {
            let mut problems = BTreeMap::new();
            for role in &spec.roles {
                if let Some(problem) = self.reconcile_role(&spec.name, role, ctx) {
                    problems.insert(role.name.clone(), problem);
                }
            }
            if self.problems.get(&spec.name) != Some(&problems) {
                let key = format!("{STATUS_PREFIX}{}", spec.name);
                let value = toml::to_string(&problems).expect("a map of strings serializes");
                if self.registry.put(&key, value).await.is_ok() {
                    self.problems.insert(spec.name.clone(), problems);
                }
            }
        }
        // Forget ended instances once their group entries are gone, but not before this node's
        // copy of the registry could have shown an entry it did not show yet: one that
        // appeared after the end was seen would be watched again, and its end counted twice.
        let live: HashSet<ActorId> = specs
            .iter()
            .flat_map(|s| {
                s.roles
                    .iter()
                    .map(|r| role_group(&s.name, &r.name))
                    .collect::<Vec<_>>()
            })
            .flat_map(|g| self.registry.group_members(&g))
            .map(|w| w.id)
            .collect();
        self.ended
            .retain(|id, seen| live.contains(id) || seen.elapsed() < ENDED_KEPT);
    }

    /// Follows up the instances out of touch: one whose node's session ended is taken for
    /// ended (with its node), as is one that left its role's group (on its own); one whose
    /// node is connected again is monitored again. Others wait for the next round (the tick,
    /// or a node joining, paces the tries).
    fn touch_again(&mut self, ctx: &mut Context<Self>) {
        let ids: Vec<ActorId> = self.out_of_touch.iter().cloned().collect();
        let synced = self.registry.is_synced();
        for id in ids {
            let node = id.node().clone();
            if synced && self.registry.session_ended(&node) {
                self.out_of_touch.remove(&id);
                self.instance_down(id, ExitReason::NodeDown(node), ctx);
            } else if synced && self.grouped.contains(&id) && !self.in_its_group(&id) {
                // It left its group: it ended, on a node still up (an instance leaves its
                // group only as it ends).
                self.out_of_touch.remove(&id);
                let why = "ended while its node could not be reached from the controller's (it left its group)";
                self.instance_down(id, ExitReason::Failed(why.into()), ctx);
            } else if self.cluster.connection(&node).is_some() {
                self.out_of_touch.remove(&id);
                tracing::info!(actor = %id, "an instance's node is reached again; monitoring it again");
                let instance = UntypedRef::from_id(ctx.node(), &id);
                ctx.monitor(instance.clone());
                if self.stopping.contains(&id) {
                    // A stop sent while apart may have been dropped (to a node this one had
                    // never been connected to); stopped twice, it stops once.
                    instance.stop_with(ExitReason::Shutdown);
                }
            }
        }
    }

    /// Whether a watched instance is in its role's group in this node's copy.
    fn in_its_group(&self, id: &ActorId) -> bool {
        self.watched.get(id).is_some_and(|(app, role)| {
            self.registry
                .group_members(&role_group(app, role))
                .iter()
                .any(|w| &w.id == id)
        })
    }

    /// An instance's monitor fired: it ended, or (with `NodeDown` while the registry still
    /// holds its node's session) its node could not be reached from this one.
    fn instance_down(&mut self, actor: ActorId, reason: ExitReason, ctx: &mut Context<Self>) {
        let Some(key) = self.watched.get(&actor).cloned() else {
            return;
        };
        let node = actor.node();
        if matches!(&reason, ExitReason::NodeDown(n) if n == node)
            && !(self.registry.is_synced() && self.registry.session_ended(node))
        {
            // As Erlang's `noconnection`: the monitor was set (or its signal could not go)
            // while the node was not connected, and the instance may run on. Replacing it
            // would run one instance too many (a singleton's replacement would wait for a
            // lock that is never given up), and stopping its app would skip it.
            tracing::info!(app = %key.0, role = %key.1, %actor, "an instance's node cannot be reached; it counts as running until the registry declares the node down or it leaves its group");
            self.out_of_touch.insert(actor);
            return;
        }
        self.watched.remove(&actor);
        self.grouped.remove(&actor);
        self.indexes.remove(&actor);
        self.ended.insert(actor.clone(), Instant::now());
        if self.stopping.remove(&actor) {
            return;
        }
        tracing::info!(app = %key.0, role = %key.1, %actor, %reason, "instance ended");
        let died = died_with_its_node(actor.node(), &reason);
        let why = format!("instance {actor} ended: {reason}");
        self.ended(key, &reason, died, why);
        self.schedule(ctx);
    }

    /// Brings one role toward its wanted count; returns why it falls short, if it does.
    fn reconcile_role(
        &mut self,
        app: &str,
        role: &RoleSpec,
        ctx: &mut Context<Self>,
    ) -> Option<String> {
        let key: RoleKey = (app.to_owned(), role.name.clone());
        for wire in self.registry.group_members(&role_group(app, &role.name)) {
            if !self.watched.contains_key(&wire.id) && !self.ended.contains_key(&wire.id) {
                ctx.monitor(UntypedRef::from_id(ctx.node(), &wire.id));
                self.watched.insert(wire.id.clone(), key.clone());
                // Adopted (started by an earlier controller): its index, if its name tells.
                if !self.indexes.contains_key(&wire.id)
                    && let Some(index) = self.index_by_name(role, &wire.id)
                {
                    self.indexes.insert(wire.id.clone(), index);
                }
            }
            if self.watched.contains_key(&wire.id) {
                self.grouped.insert(wire.id);
            }
        }
        // Live: every instance monitored and not known to have ended, whether or not this
        // node's copy of the registry shows it in its group yet.
        let mut live: Vec<ActorId> = self
            .watched
            .iter()
            .filter(|(id, k)| {
                **k == key && !self.ended.contains_key(*id) && !self.stopping.contains(*id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        live.sort();
        if self.gave_up.contains(&key) {
            return Some(format!(
                "gave up: more than {} restarts within {} s (the last because {}); deploy the app again to retry",
                role.restart.max_restarts,
                role.restart.within_secs,
                self.last_failure
                    .get(&key)
                    .map_or("of an unknown failure", String::as_str)
            ));
        }
        let starting = self.starting.get(&key).map_or(0, Vec::len);
        let wanted = role
            .instances
            .saturating_sub(self.done.get(&key).copied().unwrap_or(0));
        let have = live.len() + starting;
        if have > wanted && starting == 0 {
            // Too many (a start of an earlier controller landed late): stop the newest.
            // Highest index first, so names stay at the low indexes.
            let mut extra = live.clone();
            extra.sort_by_key(|id| std::cmp::Reverse(self.indexes.get(id).copied()));
            for id in extra.into_iter().take(have - wanted) {
                tracing::info!(%app, role = %role.name, actor = %id, "stopping an instance over the wanted count");
                self.stop_instance(&key, id, ctx);
            }
            return None;
        }
        if have >= wanted {
            return None;
        }
        let missing = wanted - have;
        let offers = self.offers(&key, &live);
        let placed = plan(&offers, &role.placement, missing);
        let used: HashSet<usize> = self
            .starting
            .get(&key)
            .into_iter()
            .flatten()
            .map(|s| s.index)
            .chain(live.iter().filter_map(|id| self.indexes.get(id).copied()))
            .collect();
        let registry = self.registry.clone();
        // Bounded: a global name without `{i}` is the same for every index, and while an
        // instance on its way out still holds it, no index is free (an unbounded search would
        // spin forever). Such a start waits for the next round, once the name is released.
        let limit = used.len() + wanted + placed.nodes.len();
        let mut free_indexes = (0..=limit).filter(|i| {
            !used.contains(i)
                && role
                    .global_name_of(*i)
                    .is_none_or(|name| registry.name_holder(&name).is_none())
        });
        let mut started = 0;
        for node in &placed.nodes {
            let Some(index) = free_indexes.next() else {
                tracing::debug!(%app, role = %role.name, "the role's global name is still held; starting once it is released");
                break;
            };
            self.start(&key, role, node, index, ctx);
            started += 1;
        }
        let short = missing - started;
        metrics::gauge!("ensemble_app_unplaced_instances", "app" => app.to_owned(), "role" => role.name.clone())
            .set(short as f64);
        if short == 0 {
            return None;
        }
        let running = live.len() + self.starting.get(&key).map_or(0, Vec::len);
        let (wanted, least) = (role.instances, role.min());
        let problem = if started < placed.nodes.len() {
            format!(
                "{short} of {wanted} instances wait for their global name ({running} placed, at least {least} wanted): {}",
                self.name_held(&key, role, &used, limit)
            )
        } else {
            format!(
                "{short} of {wanted} {LACKS_ROOM} ({running} placed, at least {least} wanted): {}",
                placed.reason()
            )
        };
        tracing::warn!(%app, role = %role.name, "{problem}");
        Some(problem)
    }

    /// The index of instance `id` of a role whose global name has one (`{i}`): the index whose
    /// name it holds, looked for among twice the role's count and a few more (an earlier
    /// controller started instances of lower indexes first).
    fn index_by_name(&self, role: &RoleSpec, id: &ActorId) -> Option<usize> {
        if !role.global_name.as_ref()?.contains("{i}") {
            return None;
        }
        (0..role.instances.saturating_mul(2).saturating_add(8)).find(|i| {
            role.global_name_of(*i)
                .and_then(|name| self.registry.name_holder(&name))
                .is_some_and(|holder| &holder.id == id)
        })
    }

    /// Who holds the global name that a start of the role waits for: the name of the lowest
    /// index not in `used` (up to `limit`) that is held.
    fn name_held(
        &self,
        key: &RoleKey,
        role: &RoleSpec,
        used: &HashSet<usize>,
        limit: usize,
    ) -> String {
        let held = (0..=limit)
            .filter(|i| !used.contains(i))
            .filter_map(|i| role.global_name_of(i))
            .find_map(|name| {
                self.registry
                    .name_holder(&name)
                    .map(|holder| (name, holder.id))
            });
        let Some((name, holder)) = held else {
            return "its global name was held; it is free again, the next round starts it".into();
        };
        if self.stopping.contains(&holder) {
            format!(
                "its global name {name:?} is still held by instance {holder}, which is stopping"
            )
        } else if self.watched.get(&holder) == Some(key) {
            format!("its global name {name:?} is held by instance {holder} of the role")
        } else {
            format!(
                "its global name {name:?} is held by actor {holder}, which is not an instance of the role (end or unregister it, or give the role another global_name)"
            )
        }
    }

    /// The nodes that can take instances, with what is reserved on them and how many
    /// instances of the role they run (or are starting).
    fn offers(&self, key: &RoleKey, live: &[ActorId]) -> Vec<Offer> {
        let starting = self.starting.get(key);
        offers(&self.registry, &self.cluster, |node| {
            live.iter().filter(|id| id.node() == node).count()
                + starting.map_or(0, |s| s.iter().filter(|s| s.node == node.name()).count())
        })
    }

    fn start(
        &mut self,
        key: &RoleKey,
        role: &RoleSpec,
        node: &str,
        index: usize,
        ctx: &mut Context<Self>,
    ) {
        let Some(agent) = agent_on(&self.registry, &self.cluster, node) else {
            return;
        };
        self.next_start += 1;
        let id = self.next_start;
        let (app, role_name) = key;
        let request = StartInstance {
            // The controller's own id, not only its node's: a controller started again on the
            // same node (its manager restarted) counts from 0 again, and an instance it
            // started before may still hold its reservation.
            instance: format!("{app}/{role_name}/{index}@{}#{id}", ctx.myself().id()),
            module: role.module_name().to_owned(),
            args: role.encoded_args(),
            resources: role.placement.resources.clone(),
            global_name: role.global_name_of(index),
            groups: std::iter::once(role_group(app, role_name))
                .chain(role.groups.iter().cloned())
                .collect(),
            singleton: role
                .singleton
                .then(|| crate::singleton::lock_name(&format!("{app}/{role_name}"))),
            lock_timeout: START_TIMEOUT,
            // Instances outlive their controller: one that takes over adopts them.
            owner: None,
        };
        tracing::info!(%app, role = %role_name, %node, index, "starting an instance");
        self.starting
            .entry(key.clone())
            .or_default()
            .push(Starting {
                id,
                node: node.to_owned(),
                index,
            });
        let (me, key, cluster) = (ctx.myself(), key.clone(), self.cluster.clone());
        tokio::spawn(async move {
            let result = start_on(&cluster, &agent, request, START_TIMEOUT + TICK).await;
            let _ = me
                .tell(ControllerMsg::Started {
                    role: key,
                    start: id,
                    result,
                })
                .await;
        });
    }

    /// An instance ended (because node `died` died, if that is why): decide whether it is
    /// replaced.
    fn ended(&mut self, key: RoleKey, reason: &ExitReason, died: Option<&NodeId>, why: String) {
        let Some(role) = self.specs.get(&key.0).and_then(|s| s.role(&key.1)).cloned() else {
            return;
        };
        let replace = match role.restart.restart {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_normal(),
            Restart::Temporary => false,
        };
        if !replace {
            *self.done.entry(key).or_default() += 1;
            return;
        }
        self.count_restart(key, &role, died, why);
    }

    /// Counts one replacement of a role (for node `died`'s death, if that is why) against its
    /// restart intensity; the role gives up when it is exceeded.
    fn count_restart(&mut self, key: RoleKey, role: &RoleSpec, died: Option<&NodeId>, why: String) {
        let window = Duration::from_secs(role.restart.within_secs);
        let now = self.epoch.elapsed();
        let history = self.restarts.entry(key.clone()).or_default();
        let count = history.count(died, now, window);
        self.last_failure.insert(key.clone(), why);
        if count > role.restart.max_restarts as usize {
            tracing::error!(app = %key.0, role = %key.1, "restart intensity exceeded; the role gives up");
            metrics::counter!("ensemble_app_roles_given_up_total").increment(1);
            self.gave_up.insert(key);
        } else {
            metrics::counter!("ensemble_app_restarts_total", "app" => key.0.clone(), "role" => key.1.clone())
                .increment(1);
        }
    }
}

impl Actor for Controller {
    type Msg = ControllerMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        // A controller that takes over may find the registry electing a leader: it reads the
        // specs again at every tick, so it starts anyway rather than fail (and hand its lease
        // on) for a moment's unavailability.
        if let Err(e) = self.load_specs(ctx).await {
            tracing::warn!("the app controller cannot read the app specs yet: {e}");
        }
        tracing::info!(node = %ctx.node().id(), apps = self.specs.len(), "app controller started");
        // Prompts: registry sessions and app specs changing, nodes joining, and a tick.
        let (mut effects, me) = (self.registry.subscribe(), ctx.myself());
        tokio::spawn(async move {
            loop {
                let prompt = match effects.recv().await {
                    Ok(RegistryEffect::Key { key, .. }) => key.starts_with(APPS_PREFIX),
                    Ok(
                        RegistryEffect::SessionExpired(_)
                        | RegistryEffect::SessionClosed(_)
                        | RegistryEffect::SessionOpened(_),
                    ) => true,
                    Ok(_) => false,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if prompt && me.tell(ControllerMsg::Reconcile).await.is_err() {
                    return;
                }
            }
        });
        let (mut members, me) = (self.cluster.subscribe(), ctx.myself());
        tokio::spawn(async move {
            loop {
                match members.recv().await {
                    Ok(MemberEvent::Joined(_))
                    | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if me.tell(ControllerMsg::Reconcile).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        ctx.send_interval(TICK, || ControllerMsg::Reconcile);
        self.schedule(ctx);
        Ok(())
    }

    async fn handle(&mut self, msg: ControllerMsg, ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            ControllerMsg::Reconcile => {
                if let Err(e) = self.load_specs(ctx).await {
                    tracing::warn!("the app controller cannot read the app specs: {e}");
                }
                self.reconcile(ctx).await;
            }
            ControllerMsg::Started {
                role,
                start,
                result,
            } => {
                // A start that is not under way any more was forgotten on purpose: its role
                // was stopped (the app removed, or the role dropped) while it ran.
                let mut index = None;
                if let Some(starting) = self.starting.get_mut(&role) {
                    index = starting.iter().find(|s| s.id == start).map(|s| s.index);
                    starting.retain(|s| s.id != start);
                }
                let wanted = index.is_some() && self.wants(&role);
                match result {
                    Ok(wire) if !wanted => {
                        tracing::info!(app = %role.0, role = %role.1, actor = %wire.id, "an instance started for a role no longer deployed; stopping it");
                        self.stop_instance(&role, wire.id, ctx);
                        return Ok(());
                    }
                    Ok(wire) if self.ended.contains_key(&wire.id) => {
                        // Its end came first (this node's copy of the registry showed it in
                        // its group, so it was watched) and is counted already.
                    }
                    Ok(wire) => {
                        if let Some(index) = index {
                            self.indexes.insert(wire.id.clone(), index);
                        }
                        if let std::collections::hash_map::Entry::Vacant(entry) =
                            self.watched.entry(wire.id.clone())
                        {
                            ctx.monitor(UntypedRef::from_id(ctx.node(), &wire.id));
                            entry.insert(role);
                        }
                    }
                    Err(_) if !wanted => return Ok(()),
                    Err(NotStarted::NoRoom(why)) => {
                        // Another placer took the node's last room first: planned again at
                        // the next tick, from a fresher copy; not a failure of the role.
                        tracing::info!(app = %role.0, role = %role.1, "instance not placed, the node's room went first: {why}");
                        return Ok(());
                    }
                    Err(NotStarted::NodeDown(node)) => {
                        // Counted once with the instances that ran there, however many
                        // starts it had under way.
                        tracing::warn!(app = %role.0, role = %role.1, %node, "instance did not start: its node went down");
                        if let Some(spec) = self
                            .specs
                            .get(&role.0)
                            .and_then(|s| s.role(&role.1))
                            .cloned()
                        {
                            let why = format!("node {node} went down during a start");
                            self.count_restart(role, &spec, Some(&node), why);
                        }
                        self.schedule(ctx);
                        return Ok(());
                    }
                    Err(NotStarted::Failed(why)) => {
                        tracing::warn!(app = %role.0, role = %role.1, "instance did not start: {why}");
                        metrics::counter!("ensemble_app_start_failures_total").increment(1);
                        // Counted against the restart intensity whatever the restart policy,
                        // but never as an instance that ended for good: no instance ran.
                        if let Some(spec) = self
                            .specs
                            .get(&role.0)
                            .and_then(|s| s.role(&role.1))
                            .cloned()
                        {
                            self.count_restart(role, &spec, None, format!("a start failed: {why}"));
                        }
                        // Tried again at the next tick, not at once: a start that fails
                        // fast would otherwise spend the restart intensity in a moment.
                        return Ok(());
                    }
                }
                self.schedule(ctx);
            }
        }
        Ok(())
    }

    async fn on_down(&mut self, down: Down, ctx: &mut Context<Self>) -> ActorResult {
        self.instance_down(down.actor, down.reason, ctx);
        Ok(())
    }
}
