//! Identities of nodes and actors.
//!
//! A [`NodeId`] names one *incarnation* of a node: a node that restarts under the same name is a
//! new incarnation, so references to actors of the old one can never reach the new one by
//! accident. An [`ActorId`] is a node id plus a sequence number unique within that incarnation.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One incarnation of a node: its name and the incarnation number it started with.
///
/// One pointer wide and cheap to clone (every actor id holds one). Displayed as
/// `name#incarnation`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(Arc<NodeIdInner>);

#[derive(PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
struct NodeIdInner {
    name: String,
    incarnation: u64,
}

impl NodeId {
    /// A node id from a name and an incarnation number.
    pub fn new(name: impl Into<String>, incarnation: u64) -> Self {
        Self(Arc::new(NodeIdInner {
            name: name.into(),
            incarnation,
        }))
    }

    /// The node's name, the same across restarts.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The incarnation: different every time a node with this name starts.
    pub fn incarnation(&self) -> u64 {
        self.0.incarnation
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.0.name, self.0.incarnation)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The identity of one actor: the node incarnation it runs on and a sequence number.
///
/// Never reused: an actor that is restarted gets a new id. Displayed as `<name#incarnation.seq>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActorId {
    node: NodeId,
    seq: u64,
}

impl ActorId {
    /// An actor id from its node and its sequence number on that node.
    pub fn new(node: NodeId, seq: u64) -> Self {
        Self { node, seq }
    }

    /// The node incarnation the actor runs on.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The sequence number, unique within the node incarnation.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}.{}>", self.node, self.seq)
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_node_incarnation_and_sequence() {
        let node = NodeId::new("n1", 7);
        assert_eq!(node.to_string(), "n1#7");
        assert_eq!(ActorId::new(node, 42).to_string(), "<n1#7.42>");
    }

    #[test]
    fn incarnations_are_distinct_identities() {
        let a = ActorId::new(NodeId::new("n1", 1), 5);
        let b = ActorId::new(NodeId::new("n1", 2), 5);
        assert_ne!(a, b);
    }
}
