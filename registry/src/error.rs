//! What can go wrong with a registry call, each error naming what it is about.

use std::collections::BTreeMap;
use std::time::Duration;

use ensemble_runtime::remote::WireRef;
use ensemble_runtime::{ActorId, NodeId};

use crate::state::Holder;

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The name is held by another actor.
    #[error(
        "global name {name:?} is taken by actor {holder}; unregister it first or pick another name"
    )]
    NameTaken {
        /// The name.
        name: String,
        /// Who holds it.
        holder: ActorId,
    },
    /// The name resolves to an actor of another protocol than the one asked for.
    #[error("global name {name:?} holds actor {} which takes messages of type {}, not {expected}", .found.id, .found.msg_type)]
    WrongType {
        /// The name.
        name: String,
        /// The actor found.
        found: WireRef,
        /// The message type asked for.
        expected: &'static str,
    },
    /// Only actors of this node can be registered or join groups from it: names and group
    /// entries are bound to the owner node's session.
    #[error("actor {actor} is not on this node; register it from its own node ({})", .actor.node())]
    NotLocal {
        /// The actor.
        actor: ActorId,
    },
    /// The lock is held and the caller did not want to wait.
    #[error("lock {lock:?} is held by node {} (holder {})", .holder.node, .holder.id)]
    Busy {
        /// The lock.
        lock: String,
        /// Who holds it.
        holder: Holder,
    },
    /// A compare-and-set found another revision.
    #[error(
        "config key {key:?} is at revision {current}, not {expected} (0 means absent); read it again and retry"
    )]
    RevisionMismatch {
        /// The key.
        key: String,
        /// The revision expected.
        expected: u64,
        /// Its revision.
        current: u64,
    },
    /// A reservation does not fit: the node has not enough of a resource free. Nothing was
    /// reserved.
    #[error(
        "node {node} has {free} of resource {resource:?} free, not the {need} asked for; place it on another node, or free some (unreserve) or add capacity"
    )]
    Insufficient {
        /// The node.
        node: String,
        /// The first resource (in name order) that does not fit.
        resource: String,
        /// How much of it was asked for.
        need: u64,
        /// How much of it is free.
        free: u64,
    },
    /// The reservation id is taken by a reservation for another node or another need.
    #[error(
        "reservation {id:?} is held already, for node {node} with need {need:?}; unreserve it first or pick another id"
    )]
    ReservationTaken {
        /// The reservation id.
        id: String,
        /// The node of the reservation holding it.
        node: NodeId,
        /// What that reservation holds.
        need: BTreeMap<String, u64>,
    },
    /// This node's session expired (the cluster counts it down); the node must restart as a new
    /// incarnation to take part again.
    #[error(
        "the registry session of node {0} expired: the cluster counts this node as down; restart it to rejoin"
    )]
    SessionExpired(NodeId),
    /// The node has no session: not opened yet, closed when it left, or (for another node
    /// than this one, such as a reservation's) expired.
    #[error(
        "node {0} has no registry session (not opened yet, closed when it left, or expired: down)"
    )]
    NoSession(NodeId),
    /// This node could not renew its session in time and fenced itself: its leases are lost.
    #[error(
        "node {0} is fenced: it could not renew its registry session in time (no quorum reachable?)"
    )]
    Fenced(NodeId),
    /// No leader answered within the call's timeout.
    #[error("the registry did not answer {what} within {timeout:?}: {last}")]
    Timeout {
        /// The call.
        what: String,
        /// The timeout.
        timeout: std::time::Duration,
        /// The last thing that went wrong.
        last: String,
    },
    /// The request reached the leader but its outcome is unknown (the leader failed while
    /// committing it): it may or may not have taken effect.
    #[error("the outcome of {what} is unknown: {reason}; check the registry before retrying")]
    Unknown {
        /// The call.
        what: String,
        /// What happened.
        reason: String,
    },
    /// The registry's leader refused the request as malformed, before it reached the log: this
    /// attempt took no effect. Seen from a node of another version than the leader's.
    #[error(
        "the registry refused {what}: {reason}; this attempt took no effect (do all nodes run the same version?)"
    )]
    Refused {
        /// The call.
        what: String,
        /// Why.
        reason: String,
    },
    /// A command, or the answer to a read, is larger than the registry takes. A command may
    /// take an eighth of the transport's frame limit (`max_frame_size`, so 1 MiB by default),
    /// and is refused before it is sent; an answer may take half.
    #[error(
        "{what} takes about {bytes} bytes, over the registry's limit of {max} bytes for it (set by max_frame_size); keep large data elsewhere and store references to it in the registry, or read a narrower prefix"
    )]
    TooLarge {
        /// The command or the read.
        what: String,
        /// About how many bytes it takes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A registry vote was not moved as asked (`Registry::move_vote`): why, naming the nodes.
    /// The voters are as they were.
    #[error("the registry's voters were not changed: {why}")]
    VoteNotMoved {
        /// Why.
        why: String,
        /// The move was tried and failed (the node to take the vote did not catch up, or left
        /// meanwhile; another try may work), rather than refused up front (a node that does
        /// not vote, one that votes already, one that is not up or may not vote).
        tried: bool,
    },
    /// A number of voters the registry does not keep was asked (`Registry::set_voter_count`).
    #[error(
        "the registry cannot keep {asked} voters: ask for 1 to {max} (3 keep writes going with one voter lost, 5 with two)"
    )]
    BadVoterCount {
        /// The number asked.
        asked: usize,
        /// The most the registry keeps.
        max: usize,
    },
    /// The registry could not start.
    #[error("cannot start the registry: {0}")]
    Start(String),
}

impl RegistryError {
    /// The failure of a request that carried several calls, as one of them (`what`, given
    /// `timeout`) reports it.
    pub(crate) fn shared_with(&self, what: String, timeout: Duration) -> RegistryError {
        match self {
            RegistryError::Timeout { last, .. } => RegistryError::Timeout {
                what,
                timeout,
                last: last.clone(),
            },
            RegistryError::Unknown { reason, .. } => RegistryError::Unknown {
                what,
                reason: reason.clone(),
            },
            RegistryError::SessionExpired(node) => RegistryError::SessionExpired(node.clone()),
            RegistryError::NoSession(node) => RegistryError::NoSession(node.clone()),
            RegistryError::Fenced(node) => RegistryError::Fenced(node.clone()),
            RegistryError::Refused { reason, .. } => RegistryError::Refused {
                what,
                reason: reason.clone(),
            },
            other => RegistryError::Unknown {
                what,
                reason: other.to_string(),
            },
        }
    }
}
