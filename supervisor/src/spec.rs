//! What a supervisor is told to do: its strategy, its restart intensity and its children.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ensemble_runtime::{Actor, Context, SpawnError, SpawnOptions, UntypedRef};
use serde::{Deserialize, Serialize};

use crate::supervisor::Supervisor;

/// Which children a supervisor restarts when one of them fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// Restart only the child that ended.
    #[default]
    OneForOne,
    /// Stop all other children, then restart all of them.
    OneForAll,
    /// Stop the children started after the one that ended, then restart it and them.
    RestForOne,
}

/// When a child that ended is restarted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Restart {
    /// Always.
    #[default]
    Permanent,
    /// Only after an abnormal exit (anything but `Normal` and `Shutdown`).
    Transient,
    /// Never; its spec is removed when it ends.
    Temporary,
}

/// How a supervisor stops a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Shutdown {
    /// Kill it at once.
    Brutal,
    /// Ask it to stop, and kill it if it has not ended within the timeout.
    Timeout(Duration),
    /// Ask it to stop and wait as long as it takes (for child supervisors).
    Infinity,
}

/// Default shutdown timeout of a worker, as in Erlang/OTP.
pub const DEFAULT_WORKER_SHUTDOWN: Shutdown = Shutdown::Timeout(Duration::from_secs(5));

/// At most `max_restarts` restarts within `period`; one more and the supervisor gives up: it
/// stops its children and exits, so that its own supervisor decides. The children that ran on
/// a node that died (ended with `ExitReason::NodeDown` of that node) count as one restart
/// within the period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intensity {
    /// Restarts allowed within the period.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl Default for Intensity {
    /// One restart in five seconds, as in Erlang/OTP.
    fn default() -> Self {
        Self {
            max_restarts: 1,
            period: Duration::from_secs(5),
        }
    }
}

/// Exponential backoff between restarts of a child that keeps failing.
///
/// The n-th restart in a row waits `min(initial * multiplier^(n-1), max)`, shortened by a random
/// fraction of up to `jitter` so that many children failing together do not restart in step.
/// A child that ran for `reset_after` before failing starts again from `initial`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Growth factor per consecutive failure (at least 1).
    pub multiplier: f64,
    /// Fraction in `0.0..=1.0` by which a delay may be randomly shortened.
    pub jitter: f64,
    /// A run this long counts as stable and resets the backoff.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before restart number `failures` (1 for the first) in a row, given a random
    /// sample `u` in `0.0..1.0`.
    pub fn delay(&self, failures: u32, u: f64) -> Duration {
        let exponent = failures.saturating_sub(1).min(64) as i32;
        let grown = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = grown.min(self.max.as_secs_f64());
        let jittered = capped * (1.0 - self.jitter.clamp(0.0, 1.0) * u.clamp(0.0, 1.0));
        // A delay near `Duration::MAX` rounds up past it as seconds in f64 (2^64), which
        // `Duration::from_secs_f64` panics on: such a delay is the longest one.
        Duration::try_from_secs_f64(jittered.max(0.0))
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// Where a child runs. Children made by a closure run locally only; children started from a
/// registered module ([`ChildSpec::module`]) may run on any node with an agent
/// ([`crate::agent`]), chosen at every (re)start among the nodes alive then.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// On the supervisor's node.
    #[default]
    Local,
    /// On the named node.
    Node(String),
    /// On any node that meets the requirements (resources, labels, spread or pack).
    Any(crate::placement::Requirements),
}

impl Placement {
    /// The requirements of a placement made by the supervisor on `local`.
    pub(crate) fn requirements(&self, local: &str) -> crate::placement::Requirements {
        match self {
            Placement::Local => crate::placement::Requirements {
                node: Some(local.to_owned()),
                ..Default::default()
            },
            Placement::Node(node) => crate::placement::Requirements {
                node: Some(node.clone()),
                ..Default::default()
            },
            Placement::Any(needs) => needs.clone(),
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Local => f.write_str("local"),
            Placement::Node(node) => write!(f, "node {node}"),
            Placement::Any(needs) => write!(f, "any node meeting {needs:?}"),
        }
    }
}

/// Whether a child is a worker or a supervisor (shown in introspection, and supervisors are
/// asked for their own tree in snapshots).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChildKind {
    /// An ordinary actor.
    Worker,
    /// A nested supervisor.
    Supervisor,
}

pub(crate) type StartFuture<'a> =
    Pin<Box<dyn Future<Output = Result<UntypedRef, SpawnError>> + Send + 'a>>;

/// Starts one instance of a child, as a linked child of the supervisor, waiting for `started`.
pub(crate) type StartFn =
    Arc<dyn for<'a> Fn(&'a mut Context<Supervisor>, SpawnOptions) -> StartFuture<'a> + Send + Sync>;

/// How a child's instances are made.
#[derive(Clone)]
pub(crate) enum ChildStart {
    /// By a closure, on the supervisor's node.
    Local(StartFn),
    /// From a registered module (name, encoded arguments), on the node placement chooses,
    /// through that node's agent.
    Module(String, Vec<u8>),
}

/// One child of a supervisor: how to start it, when to restart it, how to stop it.
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) id: String,
    pub(crate) start: ChildStart,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Shutdown,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) placement: Placement,
    pub(crate) kind: ChildKind,
    pub(crate) local_name: Option<String>,
    pub(crate) mailbox_capacity: Option<usize>,
    pub(crate) global_name: Option<String>,
}

impl ChildSpec {
    /// A worker child: `factory` makes a fresh actor for every (re)start. Permanent, stopped
    /// with a 5 s timeout, no backoff, local.
    pub fn worker<A, F>(id: impl Into<String>, factory: F) -> Self
    where
        A: Actor,
        F: Fn() -> A + Send + Sync + 'static,
    {
        let start: StartFn = Arc::new(
            move |ctx: &mut Context<Supervisor>, options: SpawnOptions| {
                let actor = factory();
                Box::pin(async move { ctx.start_with(actor, options).await.map(|r| r.untyped()) })
            },
        );
        Self::with_start(id.into(), ChildStart::Local(start))
    }

    fn with_start(id: String, start: ChildStart) -> Self {
        Self {
            id,
            start,
            restart: Restart::Permanent,
            shutdown: DEFAULT_WORKER_SHUTDOWN,
            backoff: None,
            placement: Placement::Local,
            kind: ChildKind::Worker,
            local_name: None,
            mailbox_capacity: None,
            global_name: None,
        }
    }

    /// A worker child started from the module registered as `module` (see
    /// `Node::register_module`) with these arguments, on the node its [`Placement`] chooses
    /// at each (re)start: when its node goes down, it is restarted by the strategy on a node
    /// that is alive. The supervisor links to it across nodes.
    pub fn module(
        id: impl Into<String>,
        module: impl Into<String>,
        args: &impl Serialize,
    ) -> Result<Self, rmp_serde::encode::Error> {
        let args = rmp_serde::to_vec_named(args)?;
        Ok(Self::with_start(
            id.into(),
            ChildStart::Module(module.into(), args),
        ))
    }

    /// A global name each new instance registers (needs the node's registry; released when
    /// the instance ends). For children started from a module only: a closure child asking
    /// for one is refused with `SupervisorError::GlobalNameUnsupported`.
    pub fn global_name(mut self, name: impl Into<String>) -> Self {
        self.global_name = Some(name.into());
        self
    }

    /// A nested supervisor. Permanent, stopped with `Shutdown::Infinity` (it stops its own
    /// children within their timeouts).
    pub fn supervisor(id: impl Into<String>, spec: crate::SupervisorSpec) -> Self {
        let mut child = Self::worker(id, move || Supervisor::new(spec.clone()));
        child.shutdown = Shutdown::Infinity;
        child.kind = ChildKind::Supervisor;
        child
    }

    /// When to restart it.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// How to stop it.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Wait between restarts that come in a row.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Where to run it (only `Placement::Local` for now).
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// A local name every new instance registers (released when it ends).
    pub fn local_name(mut self, name: impl Into<String>) -> Self {
        self.local_name = Some(name.into());
        self
    }

    /// The mailbox capacity of its instances.
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = Some(capacity);
        self
    }

    /// The same spec under another id: many children of one spec (Erlang's
    /// `simple_one_for_one`) are copies of a template with ids of their own.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Its id, unique among its supervisor's children.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The module its instances are started from, if any.
    pub(crate) fn module_name(&self) -> Option<&str> {
        match &self.start {
            ChildStart::Module(module, _) => Some(module),
            ChildStart::Local(_) => None,
        }
    }

    /// What makes children of one supervisor one role, for anti-affinity and spreading: the
    /// module (copies of one template, shards of one module), and for a program, which every
    /// program is a child of one module for, the program too (its encoded spec).
    pub(crate) fn role(&self) -> Option<(&str, &[u8])> {
        match &self.start {
            ChildStart::Module(module, args) if module == crate::program::PROGRAM_MODULE => {
                Some((module, args))
            }
            ChildStart::Module(module, _) => Some((module, &[])),
            ChildStart::Local(_) => None,
        }
    }

    pub(crate) fn spawn_options(&self) -> SpawnOptions {
        let mut options = SpawnOptions::new().linked();
        if let Some(name) = &self.local_name {
            options = options.name(name.clone());
        }
        if let Some(capacity) = self.mailbox_capacity {
            options = options.mailbox_capacity(capacity);
        }
        options
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("backoff", &self.backoff)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

/// A supervisor: its name, strategy, restart intensity and the children it starts, in order.
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    pub(crate) name: String,
    pub(crate) strategy: Strategy,
    pub(crate) intensity: Intensity,
    pub(crate) children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A one-for-one supervisor with the default intensity (1 restart in 5 s) and no children.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            children: Vec::new(),
        }
    }

    /// The restart strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// At most `max_restarts` within `period`.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Intensity {
            max_restarts,
            period,
        };
        self
    }

    /// Adds a child; children start in the order they are added and stop in reverse.
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// The supervisor's name, used in logs, metrics and snapshots.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_down_only() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.5,
            reset_after: Duration::from_secs(10),
        };
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay(2, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay(4, 0.0), Duration::from_millis(800));
        assert_eq!(b.delay(5, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(500, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(50));
        assert!(b.delay(3, 0.5) < b.delay(3, 0.0));
    }

    #[test]
    fn the_longest_delays_do_not_overflow() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::MAX,
            multiplier: 2.0,
            jitter: 0.0,
            reset_after: Duration::from_secs(10),
        };
        assert_eq!(b.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(100, 0.0), Duration::MAX);
        let b = Backoff {
            initial: Duration::MAX,
            ..b
        };
        assert_eq!(b.delay(1, 0.0), Duration::MAX);
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::MAX);
        // Jitter shortens it, to a duration that is still representable.
        let jittery = Backoff { jitter: 0.5, ..b };
        assert!(jittery.delay(1, 1.0) < Duration::MAX);
        assert!(jittery.delay(1, 1.0) > Duration::from_secs(u64::MAX / 4));
        let capped = Backoff {
            max: Duration::from_secs(5),
            ..b
        };
        assert_eq!(capped.delay(1, 0.0), Duration::from_secs(5));
    }
}
