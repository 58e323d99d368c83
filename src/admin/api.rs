//! The admin JSON API's documents: what the node's admin server answers and what the CLI reads.
//!
//! Every endpoint is under `/api/v1/` and answers JSON; an error answers a status code and an
//! [`ApiError`] document. Nodes are printed as `name#incarnation` and actors as
//! `<name#incarnation.serial>` (their `Display` forms), so the documents read well in `curl`;
//! [`MemberEntry`], [`LeaseEntry`] and [`NodeStatus`] give the name and the incarnation apart.
//! Examples of every document are in `docs/admin.md` of the repository.

use std::collections::BTreeMap;

use ensemble_supervisor::TreeSnapshot;
use ensemble_supervisor::app::{AppSpec, AppStatus};
use serde::{Deserialize, Serialize};

/// `GET /api/v1/status`: the node answering and what it sees of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's name.
    pub node: String,
    /// Its incarnation (start time in milliseconds since the Unix epoch, by default).
    pub incarnation: u64,
    /// The cluster it belongs to.
    pub cluster: String,
    /// Where it accepts cluster connections (QUIC).
    pub listen: String,
    /// Members it is connected to and sees up, itself included.
    pub members_up: usize,
    /// Members it sees suspect.
    pub members_suspect: usize,
    /// Actors running on this node.
    pub actors: usize,
    /// The registry as this node sees it.
    pub registry: RegistryStatus,
    /// Seconds since the admin server started.
    pub uptime_secs: u64,
}

/// The registry part of [`NodeStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryStatus {
    /// The Raft leader's node name, if known.
    pub leader: Option<String>,
    /// The revision of this node's copy.
    pub revision: u64,
    /// Whether this node's copy has caught up with the leader's feed.
    pub synced: bool,
    /// Whether this node fenced itself (its session may have expired).
    pub fenced: bool,
    /// The registry's voters, by name, as its leader answered within a second (gone voters
    /// too, until their votes move); empty if it did not answer in time.
    #[serde(default)]
    pub voters: Vec<String>,
    /// How many voters the registry keeps, if an operator set it for the cluster
    /// (`ensemble voters count`); absent while the leader grows the voters to its node's
    /// `voters` setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voter_count: Option<usize>,
}

/// `GET /api/v1/members`: one member of the cluster, as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    /// Its name.
    pub node: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// Where it accepts cluster connections.
    pub listen: String,
    /// `"self"`, `"up"` or `"suspect"` (heartbeats late).
    pub status: String,
    /// Whether it holds an open registry session (it is down once that expires).
    pub session: bool,
    /// Whether it votes in the registry; `None` if the leader did not say within a second.
    #[serde(default)]
    pub voter: Option<bool>,
    /// Resources it offers to placement.
    pub resources: BTreeMap<String, u64>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// `GET /api/v1/actors`: one actor running on the node answering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorEntry {
    /// Its id.
    pub id: String,
    /// The Rust type of the actor.
    pub type_name: String,
    /// The actor that spawned it, if any.
    pub parent: Option<String>,
    /// The local names it holds.
    pub names: Vec<String>,
    /// Messages waiting in its mailbox.
    pub mailbox_len: usize,
}

/// `GET /api/v1/trees`: the node's top-level supervision trees.
pub type Trees = Vec<TreeSnapshot>;

/// `GET /api/v1/names`: one global name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEntry {
    /// The name.
    pub name: String,
    /// The actor holding it.
    pub actor: String,
    /// The node the actor runs on.
    pub node: String,
}

/// `GET /api/v1/locks`: one lock (or lease) with a holder or waiters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEntry {
    /// The lock's name.
    pub name: String,
    /// The node holding it, if held.
    pub holder: Option<String>,
    /// The fencing token of the current grant (0 if not held).
    pub token: u64,
    /// Nodes waiting for it, first in line first.
    pub waiters: Vec<String>,
}

/// `GET /api/v1/leases`: one member session, the lease every node keeps alive with its
/// keepalives and that everything bound to it (names, locks, reservations) hangs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEntry {
    /// The node.
    pub node: String,
    /// The incarnation that opened the session.
    pub incarnation: u64,
    /// How long the session lives without a keepalive, in milliseconds.
    pub ttl_ms: u64,
    /// Locks held by the node.
    pub locks: Vec<String>,
}

/// `GET /api/v1/apps`: one deployed app, its spec and its status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppEntry {
    /// The spec as deployed, as the answering node's copy of the registry holds it (an app
    /// changed a moment ago may still show its previous spec there).
    pub spec: AppSpec,
    /// Instances wanted and running per role of that same spec, and the problems the app
    /// controller reported. The node answering always gives it; it is optional so that a
    /// document without it still reads.
    pub status: Option<AppStatus>,
}

/// The answer of `POST /api/v1/apps` (body: the spec as TOML) and
/// `DELETE /api/v1/apps/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppChange {
    /// The app.
    pub app: String,
    /// Whether something changed (false: removing an app that was not deployed).
    pub changed: bool,
}

/// The body of `POST /api/v1/voters/move`: move the registry vote of node `from` to node `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteMoveRequest {
    /// The node that votes now, by name.
    pub from: String,
    /// The node to take its vote, by name.
    pub to: String,
}

/// The answer of `POST /api/v1/voters/move`, once the vote moved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteMoved {
    /// The node that voted.
    pub from: String,
    /// The node that votes in its place.
    pub to: String,
    /// The registry's voters after the move, by name; absent if they could not be read after
    /// the move was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voters: Option<Vec<String>>,
}

/// The body of `POST /api/v1/voters/count`: how many voters the registry keeps from now on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterCountRequest {
    /// How many voters, from 1 to 9.
    pub count: usize,
}

/// The answer of `POST /api/v1/voters/count`, once the count is committed: the leader adds
/// or removes voters from then on, one at a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterCountSet {
    /// How many voters the registry keeps.
    pub count: usize,
    /// The registry's voters as the count was set, by name; absent if they could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voters: Option<Vec<String>>,
}

/// An error: the status code says its kind, the message what was wrong and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, naming the thing it is about.
    pub error: String,
}
