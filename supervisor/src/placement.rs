//! Placement: which nodes may run an instance, and which of them should.
//!
//! Pure code: the caller describes the nodes ([`Offer`]: capacity, what is reserved on it
//! already, labels, how many instances of the same role it runs) and what one instance needs
//! ([`Requirements`]); [`plan`] answers where to put each of `count` instances, as many as fit,
//! and why the rest do not. Reserving the resources is the registry's job (an atomic capacity
//! check per node), so a plan may still be refused there when another supervisor placed on the
//! same node meanwhile; the caller then plans again with fresh figures.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How instances are spread over the nodes that can take them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    /// Each instance goes to the node with the fewest instances of its role, then the most
    /// free resources: for availability.
    #[default]
    Spread,
    /// Each instance goes to the node with the most instances of its role already, then the
    /// fewest free resources (that still fit): to keep nodes free for other work.
    Pack,
}

/// What one instance needs from a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Requirements {
    /// Only this node (by name), if set.
    pub node: Option<String>,
    /// Resources reserved for the instance while it runs (e.g. `cpu` in millicores,
    /// `memory_mb`, or any counter a node advertises).
    pub resources: BTreeMap<String, u64>,
    /// Labels the node must have, with these values (e.g. `zone = "a"`).
    pub labels: BTreeMap<String, String>,
    /// At most one instance of the role per node.
    pub anti_affinity: bool,
    /// Spread or pack.
    pub spread: Spread,
}

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// Its name.
    pub node: String,
    /// Resources it advertises.
    pub capacity: BTreeMap<String, u64>,
    /// Resources reserved on it already.
    pub reserved: BTreeMap<String, u64>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Instances of the role being placed that it runs already.
    pub instances: usize,
}

impl Offer {
    fn free(&self, resource: &str) -> u64 {
        let capacity = self.capacity.get(resource).copied().unwrap_or(0);
        capacity.saturating_sub(self.reserved.get(resource).copied().unwrap_or(0))
    }

    /// Why this node cannot take one more instance, if it cannot.
    fn refusal(&self, needs: &Requirements) -> Option<Unfit> {
        if let Some(node) = &needs.node
            && node != &self.node
        {
            return Some(Unfit::OtherNode);
        }
        for (key, wanted) in &needs.labels {
            if self.labels.get(key) != Some(wanted) {
                return Some(Unfit::Label {
                    key: key.clone(),
                    wanted: wanted.clone(),
                    found: self.labels.get(key).cloned(),
                });
            }
        }
        if needs.anti_affinity && self.instances > 0 {
            return Some(Unfit::AntiAffinity);
        }
        for (resource, &need) in &needs.resources {
            let free = self.free(resource);
            if free < need {
                return Some(Unfit::Resource {
                    resource: resource.clone(),
                    need,
                    free,
                });
            }
        }
        None
    }

    /// Free share of the node's resources that the instance uses, averaged (1.0: all free).
    fn free_share(&self, needs: &Requirements) -> f64 {
        if needs.resources.is_empty() {
            return 1.0;
        }
        let shares: f64 = needs
            .resources
            .keys()
            .map(|r| {
                let capacity = self.capacity.get(r).copied().unwrap_or(0).max(1) as f64;
                self.free(r) as f64 / capacity
            })
            .sum();
        shares / needs.resources.len() as f64
    }

    fn take(&mut self, needs: &Requirements) {
        for (resource, need) in &needs.resources {
            *self.reserved.entry(resource.clone()).or_default() += need;
        }
        self.instances += 1;
    }
}

/// Why a node cannot take an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unfit {
    /// The instance must run on another node.
    OtherNode,
    /// The node the instance must run on is not among those that can take work: not in the
    /// cluster, not up, or running no agent.
    Absent,
    /// A label is missing or has another value.
    Label {
        /// The label.
        key: String,
        /// The value required.
        wanted: String,
        /// The node's value.
        found: Option<String>,
    },
    /// The node runs an instance of the role already.
    AntiAffinity,
    /// Not enough of a resource is free.
    Resource {
        /// The resource.
        resource: String,
        /// What one instance needs.
        need: u64,
        /// What is free.
        free: u64,
    },
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::OtherNode => f.write_str("not the node asked for"),
            Unfit::Absent => f.write_str(
                "the node asked for is not up in the cluster with an agent (not joined, down, or left)",
            ),
            Unfit::Label {
                key,
                wanted,
                found: Some(found),
            } => write!(f, "label {key} is {found:?}, not {wanted:?}"),
            Unfit::Label { key, wanted, .. } => write!(f, "no label {key} (wanted {wanted:?})"),
            Unfit::AntiAffinity => f.write_str("runs an instance of the role already"),
            Unfit::Resource {
                resource,
                need,
                free,
            } => write!(f, "{free} {resource} free, {need} needed"),
        }
    }
}

/// Where `count` instances go, as far as they fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The node of each instance placed, in placement order.
    pub nodes: Vec<String>,
    /// Why the others could not be placed, per node (empty if all were placed or there are
    /// no nodes).
    pub unfit: Vec<(String, Unfit)>,
}

impl Plan {
    /// A one-line reason the missing instances could not be placed.
    pub fn reason(&self) -> String {
        if self.unfit.is_empty() {
            return "no node is available".into();
        }
        self.unfit
            .iter()
            .map(|(node, why)| format!("{node}: {why}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Places up to `count` instances needing `needs` on `offers`, one at a time, each on the best
/// node by `needs.spread` given the instances placed before it. Ties go to the node whose name
/// sorts first, so a plan is deterministic.
pub fn plan(offers: &[Offer], needs: &Requirements, count: usize) -> Plan {
    let mut offers: Vec<Offer> = offers.to_vec();
    offers.sort_by(|a, b| a.node.cmp(&b.node));
    // `count` comes from the user: the vector grows with what is placed, not with the ask.
    let mut nodes = Vec::new();
    for _ in 0..count {
        let best = offers
            .iter()
            .enumerate()
            .filter(|(_, o)| o.refusal(needs).is_none())
            .min_by(|(ia, a), (ib, b)| {
                let (ka, kb) = match needs.spread {
                    Spread::Spread => (
                        (a.instances as f64, -a.free_share(needs)),
                        (b.instances as f64, -b.free_share(needs)),
                    ),
                    Spread::Pack => (
                        (-(a.instances as f64), a.free_share(needs)),
                        (-(b.instances as f64), b.free_share(needs)),
                    ),
                };
                ka.partial_cmp(&kb)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(ia.cmp(ib))
            })
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                offers[i].take(needs);
                nodes.push(offers[i].node.clone());
            }
            None => break,
        }
    }
    let unfit = if nodes.len() < count {
        let mut unfit: Vec<(String, Unfit)> = offers
            .iter()
            .filter_map(|o| o.refusal(needs).map(|why| (o.node.clone(), why)))
            .filter(|(_, why)| *why != Unfit::OtherNode)
            .collect();
        // The other nodes are left out as unfit: say that the one asked for is missing.
        if let Some(node) = &needs.node
            && !offers.iter().any(|o| &o.node == node)
        {
            unfit.push((node.clone(), Unfit::Absent));
        }
        unfit
    } else {
        Vec::new()
    };
    Plan { nodes, unfit }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offer(node: &str, cpu: u64, zone: &str) -> Offer {
        Offer {
            node: node.into(),
            capacity: BTreeMap::from([("cpu".into(), cpu)]),
            reserved: BTreeMap::new(),
            labels: BTreeMap::from([("zone".into(), zone.into())]),
            instances: 0,
        }
    }

    fn needs(cpu: u64) -> Requirements {
        Requirements {
            resources: BTreeMap::from([("cpu".into(), cpu)]),
            ..Requirements::default()
        }
    }

    #[test]
    fn spread_puts_instances_on_distinct_nodes_first() {
        let offers = [
            offer("a", 10, "x"),
            offer("b", 10, "x"),
            offer("c", 10, "y"),
        ];
        let plan = plan(&offers, &needs(1), 4);
        assert_eq!(plan.nodes, ["a", "b", "c", "a"]);
        assert!(plan.unfit.is_empty());
    }

    #[test]
    fn pack_fills_one_node_before_the_next() {
        let offers = [offer("a", 2, "x"), offer("b", 2, "x")];
        let needs = Requirements {
            spread: Spread::Pack,
            ..needs(1)
        };
        assert_eq!(plan(&offers, &needs, 3).nodes, ["a", "a", "b"]);
    }

    #[test]
    fn a_missing_node_asked_for_is_named() {
        let needs = Requirements {
            node: Some("n9".into()),
            ..needs(1)
        };
        let plan = plan(&[offer("a", 10, "x"), offer("b", 10, "x")], &needs, 1);
        assert!(plan.nodes.is_empty());
        assert_eq!(
            plan.reason(),
            "n9: the node asked for is not up in the cluster with an agent (not joined, down, or left)"
        );
    }

    #[test]
    fn resources_already_reserved_count() {
        let mut busy = offer("a", 4, "x");
        busy.reserved.insert("cpu".into(), 3);
        let plan = plan(&[busy, offer("b", 1, "x")], &needs(2), 1);
        assert!(plan.nodes.is_empty());
        assert_eq!(
            plan.reason(),
            "a: 1 cpu free, 2 needed; b: 1 cpu free, 2 needed"
        );
    }

    #[test]
    fn labels_node_and_anti_affinity_constrain() {
        let offers = [
            offer("a", 10, "x"),
            offer("b", 10, "y"),
            offer("c", 10, "y"),
        ];
        let zone_y = Requirements {
            labels: BTreeMap::from([("zone".into(), "y".into())]),
            anti_affinity: true,
            ..Requirements::default()
        };
        let plan = plan(&offers, &zone_y, 3);
        assert_eq!(plan.nodes, ["b", "c"]);
        assert_eq!(
            plan.reason(),
            "a: label zone is \"x\", not \"y\"; b: runs an instance of the role already; c: runs an instance of the role already"
        );
        let pinned = Requirements {
            node: Some("c".into()),
            ..Requirements::default()
        };
        assert_eq!(super::plan(&offers, &pinned, 2).nodes, ["c", "c"]);
    }

    #[test]
    fn no_nodes_no_plan() {
        let plan = plan(&[], &needs(1), 2);
        assert!(plan.nodes.is_empty());
        assert_eq!(plan.reason(), "no node is available");
    }

    proptest! {
        /// Whatever the offers, a plan never oversubscribes a node, never breaks anti-affinity,
        /// and places as many instances as a greedy count of the room says fit.
        #[test]
        fn plans_never_oversubscribe(
            caps in proptest::collection::vec((0u64..8, 0u64..8), 0..6),
            need in 0u64..4,
            count in 0usize..20,
            anti in any::<bool>(),
            pack in any::<bool>(),
        ) {
            let offers: Vec<Offer> = caps
                .iter()
                .enumerate()
                .map(|(i, &(cap, used))| {
                    let mut o = offer(&format!("n{i}"), cap, "z");
                    o.reserved.insert("cpu".into(), used.min(cap));
                    o
                })
                .collect();
            let needs = Requirements {
                anti_affinity: anti,
                spread: if pack { Spread::Pack } else { Spread::Spread },
                ..needs(need)
            };
            let plan = plan(&offers, &needs, count);
            let room: usize = offers
                .iter()
                .map(|o| {
                    let free = o.free("cpu");
                    let fits = free.checked_div(need).map_or(count, |n| n as usize);
                    if anti { fits.min(1) } else { fits }
                })
                .sum();
            prop_assert_eq!(plan.nodes.len(), count.min(room));
            for o in &offers {
                let placed = plan.nodes.iter().filter(|n| **n == o.node).count() as u64;
                prop_assert!(o.reserved["cpu"] + placed * need <= o.capacity["cpu"]);
                if anti {
                    prop_assert!(placed <= 1);
                }
            }
        }
    }
}
