//! Network namespaces for real partitions: each node runs in a namespace of its own, joined
//! to the others by a veth pair to a bridge in a hub namespace. Taking a node's veth down in
//! the hub cuts it off from every other node (both directions); bringing it up heals it.
//!
//! The namespaces are private to one test run (their names carry the test's pid), so their
//! addresses never meet the host's, and deleting them removes every link with them. Needs
//! `ip` (iproute2) and the privilege to create namespaces (root or `CAP_SYS_ADMIN` +
//! `CAP_NET_ADMIN`); [`Namespaces::create`] says why when it cannot.

use std::process::Command;

/// The namespaces of one test run.
pub(crate) struct Namespaces {
    tag: String,
    nodes: usize,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Namespaces {
    /// A hub and `nodes` node namespaces, node `i` (from 0) at `10.99.0.(11 + i)`.
    pub(crate) fn create(nodes: usize) -> Result<Namespaces, String> {
        // Dropped on any failure below: whatever was made is deleted again.
        let mut namespaces = Namespaces {
            tag: format!("ens{}", std::process::id()),
            nodes: 0,
        };
        let hub = namespaces.hub();
        // Namespaces carrying this pid are left over from an earlier process that died
        // without cleaning up: nothing of this run uses them yet.
        for i in 0..nodes {
            let _ = ip(&["netns", "del", &namespaces.namespace(i)]);
            let _ = ip(&["link", "del", &namespaces.host_link(i)]);
        }
        let _ = ip(&["netns", "del", &hub]);
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..nodes {
            let ns = namespaces.namespace(i);
            ip(&["netns", "add", &ns])?;
            namespaces.nodes = i + 1;
            let (host, peer) = (namespaces.host_link(i), format!("{}p{i}", namespaces.tag));
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &host, "netns", &hub])?;
            ip(&["link", "set", &peer, "netns", &ns])?;
            ip(&["-n", &hub, "link", "set", &host, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &host, "up"])?;
            let addr = format!("{}/24", namespaces.ip(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &peer])?;
            ip(&["-n", &ns, "link", "set", &peer, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(namespaces)
    }

    fn hub(&self) -> String {
        format!("{}hub", self.tag)
    }

    fn host_link(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }

    fn ip(&self, i: usize) -> String {
        format!("10.99.0.{}", 11 + i)
    }

    /// Node `i`'s namespace.
    pub(crate) fn namespace(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    /// Where node `i` listens (a port of its own choosing).
    pub(crate) fn listen(&self, i: usize) -> String {
        format!("{}:0", self.ip(i))
    }

    /// Cuts node `i` off from every other node.
    pub(crate) fn cut(&self, i: usize) {
        ip(&["-n", &self.hub(), "link", "set", &self.host_link(i), "down"])
            .expect("cut a node off");
    }

    /// Joins node `i` to the others again.
    pub(crate) fn heal(&self, i: usize) {
        ip(&["-n", &self.hub(), "link", "set", &self.host_link(i), "up"]).expect("heal a node");
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.namespace(i)]);
        }
        let _ = ip(&["netns", "del", &self.hub()]);
    }
}
