//! Introspection: what a supervisor runs, as values and as a serializable tree.

use ensemble_runtime::UntypedRef;
use serde::{Deserialize, Serialize};

use crate::core::ChildState;
use crate::spec::{ChildKind, Restart, Strategy};

/// One child, as listed by `which_children`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildInfo {
    /// Its id.
    pub id: String,
    /// The running instance, if any.
    pub actor: Option<UntypedRef>,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Its restart type.
    pub restart: Restart,
    /// Running, restarting or stopped.
    pub state: ChildState,
}

/// Counts of a supervisor's children, as `count_children`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildCounts {
    /// Child specs held.
    pub specs: usize,
    /// Children with a running instance.
    pub active: usize,
    /// Children that are supervisors.
    pub supervisors: usize,
    /// Children that are workers.
    pub workers: usize,
}

/// A supervision tree, for the CLI and the dashboard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeSnapshot {
    /// The supervisor's name.
    pub name: String,
    /// Its actor id.
    pub actor: String,
    /// Its strategy.
    pub strategy: Strategy,
    /// Its children, in start order.
    pub children: Vec<ChildSnapshot>,
}

/// One child in a [`TreeSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSnapshot {
    /// Its id.
    pub id: String,
    /// The running instance's actor id, if any.
    pub actor: Option<String>,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Its restart type.
    pub restart: Restart,
    /// Running, restarting or stopped.
    pub state: ChildState,
    /// How many times this supervisor has restarted it.
    pub restarts: u64,
    /// For a running child supervisor, its own tree (absent if it did not answer in time).
    pub tree: Option<Box<TreeSnapshot>>,
}
