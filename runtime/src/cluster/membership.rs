//! The member table: who is in the cluster and how reachable, as pure state with events out.
//!
//! # Invariants
//!
//! - At most one incarnation of a node name is a member. A newer incarnation replaces an
//!   older one, which is reported `Down` first (it can only have restarted).
//! - `Down` and `Left` are final for an incarnation: it is remembered and refused if it tries
//!   to come back.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::hashing::HashSet;
use crate::id::NodeId;

use super::handshake::Refusal;

/// How reachable a member is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Connected and its heartbeats arrive.
    Up,
    /// Its heartbeats are late (phi over the threshold); it may come back.
    Suspect,
}

/// A member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its name and incarnation.
    pub node: NodeId,
    /// Where it accepts connections.
    pub listen: SocketAddr,
    /// Up or suspect.
    pub status: MemberStatus,
    /// Resources it offers.
    pub resources: BTreeMap<String, u64>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// A change in membership, as subscribers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberEvent {
    /// A node joined (or this node connected to it).
    Joined(Member),
    /// A member's heartbeats are late.
    Suspect(NodeId),
    /// A suspected member's heartbeats arrive again.
    Reachable(NodeId),
    /// A member was declared down: it is gone for good (as this incarnation).
    Down(NodeId),
    /// A member left on purpose.
    Left(NodeId),
}

#[derive(Debug, Default)]
pub(crate) struct Membership {
    members: BTreeMap<String, Member>,
    /// Incarnations that were declared down or left.
    gone: HashSet<NodeId>,
}

impl Membership {
    /// Whether a peer may be admitted, before it is.
    pub(crate) fn admissible(&self, node: &NodeId) -> Result<(), Refusal> {
        if self.gone.contains(node) {
            return Err(Refusal::Downed { node: node.clone() });
        }
        match self.members.get(node.name()) {
            Some(existing) if existing.node.incarnation() > node.incarnation() => {
                Err(Refusal::Stale {
                    node: node.clone(),
                    newer: existing.node.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// A peer connected. Returns the events: `Joined`, preceded by `Down` of an older
    /// incarnation it replaces; nothing if it was a member already.
    pub(crate) fn up(&mut self, member: Member) -> Vec<MemberEvent> {
        if self.admissible(&member.node).is_err() {
            return Vec::new();
        }
        let mut events = Vec::new();
        if let Some(existing) = self.members.get(member.node.name()) {
            if existing.node == member.node {
                return events;
            }
            let old = existing.node.clone();
            self.gone.insert(old.clone());
            events.push(MemberEvent::Down(old));
        }
        self.members
            .insert(member.node.name().to_owned(), member.clone());
        events.push(MemberEvent::Joined(member));
        events
    }

    fn set_status(&mut self, node: &NodeId, status: MemberStatus) -> bool {
        match self.members.get_mut(node.name()) {
            Some(m) if &m.node == node && m.status != status => {
                m.status = status;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn suspect(&mut self, node: &NodeId) -> Option<MemberEvent> {
        self.set_status(node, MemberStatus::Suspect)
            .then(|| MemberEvent::Suspect(node.clone()))
    }

    pub(crate) fn reachable(&mut self, node: &NodeId) -> Option<MemberEvent> {
        self.set_status(node, MemberStatus::Up)
            .then(|| MemberEvent::Reachable(node.clone()))
    }

    fn remove(&mut self, node: &NodeId) -> bool {
        match self.members.get(node.name()) {
            Some(m) if &m.node == node => {
                self.members.remove(node.name());
                self.gone.insert(node.clone());
                true
            }
            _ => false,
        }
    }

    /// Declares `node` down, whether or not it is a member now (the registry may know of nodes
    /// this one never met): it is refused from then on. The event is for members only.
    pub(crate) fn down(&mut self, node: &NodeId) -> Option<MemberEvent> {
        let was_member = self.remove(node);
        self.gone.insert(node.clone());
        was_member.then(|| MemberEvent::Down(node.clone()))
    }

    /// Whether `node` was declared down or left.
    pub(crate) fn is_gone(&self, node: &NodeId) -> bool {
        self.gone.contains(node)
    }

    pub(crate) fn left(&mut self, node: &NodeId) -> Option<MemberEvent> {
        self.remove(node).then(|| MemberEvent::Left(node.clone()))
    }

    pub(crate) fn get(&self, node: &NodeId) -> Option<&Member> {
        self.members.get(node.name()).filter(|m| &m.node == node)
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, incarnation: u64) -> Member {
        Member {
            node: NodeId::new(name, incarnation),
            listen: "127.0.0.1:1".parse().unwrap(),
            status: MemberStatus::Up,
            resources: BTreeMap::new(),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn joining_twice_reports_once() {
        let mut m = Membership::default();
        assert_eq!(
            m.up(member("n2", 1)),
            vec![MemberEvent::Joined(member("n2", 1))]
        );
        assert!(m.up(member("n2", 1)).is_empty());
        assert_eq!(m.members().len(), 1);
    }

    #[test]
    fn a_newer_incarnation_replaces_the_old_one_which_is_down() {
        let mut m = Membership::default();
        m.up(member("n2", 1));
        let events = m.up(member("n2", 2));
        assert_eq!(
            events,
            vec![
                MemberEvent::Down(NodeId::new("n2", 1)),
                MemberEvent::Joined(member("n2", 2))
            ]
        );
        assert!(matches!(
            m.admissible(&NodeId::new("n2", 1)),
            Err(Refusal::Downed { .. })
        ));
    }

    #[test]
    fn down_is_final_for_an_incarnation() {
        let mut m = Membership::default();
        m.up(member("n2", 1));
        assert_eq!(
            m.down(&NodeId::new("n2", 1)),
            Some(MemberEvent::Down(NodeId::new("n2", 1)))
        );
        assert_eq!(m.down(&NodeId::new("n2", 1)), None);
        assert!(m.up(member("n2", 1)).is_empty());
        let err = m.admissible(&NodeId::new("n2", 1)).unwrap_err();
        assert!(err.to_string().contains("restart it to rejoin"), "{err}");
        // A restart is welcome.
        assert_eq!(m.up(member("n2", 2)).len(), 1);
    }

    #[test]
    fn an_older_incarnation_is_stale() {
        let mut m = Membership::default();
        m.up(member("n2", 5));
        assert!(matches!(
            m.admissible(&NodeId::new("n2", 4)),
            Err(Refusal::Stale { .. })
        ));
    }

    #[test]
    fn suspicion_comes_and_goes_once_per_change() {
        let mut m = Membership::default();
        let n2 = NodeId::new("n2", 1);
        m.up(member("n2", 1));
        assert_eq!(m.suspect(&n2), Some(MemberEvent::Suspect(n2.clone())));
        assert_eq!(m.suspect(&n2), None);
        assert_eq!(m.reachable(&n2), Some(MemberEvent::Reachable(n2.clone())));
        assert_eq!(m.get(&n2).unwrap().status, MemberStatus::Up);
        assert_eq!(m.left(&n2), Some(MemberEvent::Left(n2.clone())));
        assert!(m.get(&n2).is_none());
    }
}
