//! What the registry's log carries (commands) and what applying them answers (outcomes) and
//! changes (effects).

use std::collections::BTreeMap;

use ensemble_runtime::remote::WireRef;
use ensemble_runtime::{ActorId, NodeId};
use serde::{Deserialize, Serialize};

/// Who holds or waits for a lock: a node's session and a number the node chose, so that one node
/// can hold and wait for several locks, or for one lock from several places.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Holder {
    /// The node whose session the lock is bound to.
    pub node: NodeId,
    /// Told apart by the node.
    pub id: u64,
}

/// One change to the registry, as the log carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Opens (or renews the record of) `node`'s session. A newer incarnation of the same node
    /// name ends the old one's session first, releasing what it held.
    OpenSession {
        /// The node.
        node: NodeId,
        /// How long the session lives without a keepalive.
        ttl_ms: u64,
    },
    /// Ends `node`'s session because it left on purpose; releases what it held.
    CloseSession {
        /// The node.
        node: NodeId,
    },
    /// Ends `node`'s session because no keepalive came in time (proposed by the leader only);
    /// releases what it held and marks the node down.
    ExpireSession {
        /// The node.
        node: NodeId,
    },
    /// Binds a global name to an actor, if the name is free.
    RegisterName {
        /// The name.
        name: String,
        /// The actor; its node's session must be open.
        actor: WireRef,
    },
    /// Frees a name, if `actor` holds it.
    UnregisterName {
        /// The name.
        name: String,
        /// The actor that should hold it.
        actor: ActorId,
    },
    /// Adds an actor to a group.
    JoinGroup {
        /// The group.
        group: String,
        /// The actor; its node's session must be open.
        actor: WireRef,
    },
    /// Removes an actor from a group.
    LeaveGroup {
        /// The group.
        group: String,
        /// The actor.
        actor: ActorId,
    },
    /// Takes a lock if free; otherwise queues behind the other waiters (`wait`) or fails.
    Acquire {
        /// The lock.
        lock: String,
        /// Who wants it; its node's session must be open.
        holder: Holder,
        /// Queue (true) or fail at once (false) when the lock is held.
        wait: bool,
    },
    /// Gives a lock back, or stops waiting for it; the next waiter gets it.
    Release {
        /// The lock.
        lock: String,
        /// Who holds it or waits for it.
        holder: Holder,
    },
    /// Sets a config key.
    Put {
        /// The key.
        key: String,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Removes a config key.
    Delete {
        /// The key.
        key: String,
    },
    /// Sets (or removes, for `None`) a config key if its revision is `expected` (0: absent).
    CompareAndSet {
        /// The key.
        key: String,
        /// The revision of the key's last change the caller saw; 0 if it saw no key.
        expected: u64,
        /// The new value, or `None` to remove the key.
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
    },
    /// Reserves resources on a node for something about to be placed there, if they fit: for
    /// every resource asked for, what the node's reservations hold already plus `need` must not
    /// exceed `capacity` (a resource missing from `capacity` has none; asking for 0 of a
    /// resource always fits). Checked and taken in one step, so two placers racing for the last
    /// of a node's capacity cannot both get it.
    Reserve {
        /// Names the reservation, to release it and to retry the command safely: reserving an
        /// id again for the same node and need changes nothing.
        id: String,
        /// The node the resources are on; its session must be open, and the reservation ends
        /// with it.
        node: NodeId,
        /// How much of each resource, by resource name (`"cpu"`, `"memory"`, custom counters).
        need: BTreeMap<String, u64>,
        /// How much of each resource the node has in all, as the caller knows it (the node
        /// advertises it); the registry keeps no capacities of its own.
        capacity: BTreeMap<String, u64>,
    },
    /// Releases a reservation.
    Unreserve {
        /// The reservation.
        id: String,
    },
    /// Heads the commands of one request of a node to the leader (the `commands` after it), so
    /// that the request takes effect once however often it is sent: a request sent again after
    /// an attempt whose answer was lost (a leader that died, a connection that ended) is
    /// answered with the outcomes of its first commit. It takes no revision and has no outcome
    /// of its own. Remembered while the node's session is open (`RegistryState::apply`).
    Request {
        /// The node that sent it, in the incarnation whose session it is bound to.
        node: NodeId,
        /// Its number on that node, unique for the incarnation.
        id: u64,
        /// The lowest number of a request of the node that may still be sent again: the
        /// outcomes of those before it may be forgotten, and a late copy of one of them
        /// changes nothing.
        below: u64,
        /// How many commands after it are the request's.
        commands: u32,
    },
    /// Sets how many voters the registry's leader keeps ([`crate::Registry::set_voter_count`]),
    /// in place of the `voters` setting the nodes started with. Client and leader refuse a
    /// count outside `1..=MAX_VOTERS` before the log; applying one clamps it all the same.
    SetVoterCount {
        /// How many voters.
        count: u32,
    },
}

/// The most voters the registry may be asked to keep. Every write waits for a majority of
/// them, and each one more is one more copy of the log to send: past seven (three may be
/// lost) a vote buys no safety a cluster of this kind needs, and nine leaves room.
pub const MAX_VOTERS: u32 = 9;

impl Command {
    /// About how many bytes the command takes encoded: its strings and values, plus a margin
    /// for its fields of fixed size. Keeps requests, log entries and the messages that carry
    /// them under the transport's frame limit without encoding anything twice.
    pub(crate) fn approx_bytes(&self) -> usize {
        const FIXED: usize = 64;
        let node = |node: &NodeId| node.name().len();
        let actor = |actor: &WireRef| node(actor.id.node()) + actor.msg_type.len();
        let map = |map: &BTreeMap<String, u64>| map.keys().map(|k| k.len() + 9).sum::<usize>();
        FIXED
            + match self {
                Command::OpenSession { node: n, .. }
                | Command::CloseSession { node: n }
                | Command::ExpireSession { node: n } => node(n),
                Command::RegisterName { name, actor: a } => name.len() + actor(a),
                Command::UnregisterName { name, actor: a } => name.len() + node(a.node()),
                Command::JoinGroup { group, actor: a } => group.len() + actor(a),
                Command::LeaveGroup { group, actor: a } => group.len() + node(a.node()),
                Command::Acquire { lock, holder, .. } | Command::Release { lock, holder } => {
                    lock.len() + node(&holder.node)
                }
                Command::Put { key, value } => key.len() + value.len(),
                Command::Delete { key } => key.len(),
                Command::CompareAndSet { key, value, .. } => {
                    key.len() + value.as_ref().map_or(0, Vec::len)
                }
                Command::Reserve {
                    id,
                    node: n,
                    need,
                    capacity,
                } => id.len() + node(n) + map(need) + map(capacity),
                Command::Unreserve { id } => id.len(),
                Command::Request { node: n, .. } => node(n),
                Command::SetVoterCount { .. } => 0,
            }
    }

    /// The command as error messages name it: its debug form, cut short after a few hundred
    /// characters (a config value of a megabyte must not fill a log line).
    pub(crate) fn brief(&self) -> String {
        const MAX: usize = 200;
        struct Capped(String);
        impl std::fmt::Write for Capped {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                let room = MAX.saturating_sub(self.0.len());
                if s.len() <= room {
                    self.0.push_str(s);
                    return Ok(());
                }
                let mut cut = room;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                self.0.push_str(&s[..cut]);
                Err(std::fmt::Error)
            }
        }
        let mut out = Capped(String::new());
        if std::fmt::write(&mut out, format_args!("{self:?}")).is_err() {
            out.0
                .push_str(&format!("… (about {} bytes)", self.approx_bytes()));
        }
        out.0
    }

    /// `commands` as one request of `node`, numbered `id`, from a node that sends none of its
    /// requests numbered below `below` again: headed by a [`Command::Request`].
    pub fn request(node: &NodeId, id: u64, below: u64, commands: &[Command]) -> Vec<Command> {
        let mut sent = Vec::with_capacity(commands.len() + 1);
        sent.push(Command::Request {
            node: node.clone(),
            id,
            below,
            commands: commands.len() as u32,
        });
        sent.extend_from_slice(commands);
        sent
    }

    /// How many outcomes applying `commands` answers: one for each but the heads of requests.
    pub fn outcomes(commands: &[Command]) -> usize {
        commands
            .iter()
            .filter(|c| !matches!(c, Command::Request { .. }))
            .count()
    }

    /// A batch's commands as they are applied: each request (its head and the commands it
    /// heads, which stop short of the next head) together, every other command alone.
    pub fn units(commands: &[Command]) -> impl Iterator<Item = &[Command]> {
        let mut rest = commands;
        std::iter::from_fn(move || {
            let (first, after) = rest.split_first()?;
            let len = match first {
                Command::Request { commands, .. } => {
                    1 + after
                        .iter()
                        .take(*commands as usize)
                        .take_while(|c| !matches!(c, Command::Request { .. }))
                        .count()
                }
                _ => 1,
            };
            let (unit, next) = rest.split_at(len);
            rest = next;
            Some(unit)
        })
    }

    /// The session the command needs open, if any.
    pub(crate) fn session(&self) -> Option<&NodeId> {
        match self {
            Command::RegisterName { actor, .. } | Command::JoinGroup { actor, .. } => {
                Some(actor.id.node())
            }
            Command::Acquire { holder, .. } => Some(&holder.node),
            Command::Reserve { node, .. } => Some(node),
            _ => None,
        }
    }
}

/// What applying one command answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Done, at this revision.
    Done {
        /// The registry's revision after the command.
        revision: u64,
    },
    /// The command changed nothing (already so, or nothing to do).
    Unchanged,
    /// The name is held by another actor.
    NameTaken {
        /// The actor holding it.
        holder: WireRef,
    },
    /// The lock was granted.
    Granted {
        /// The fencing token of the grant, strictly greater than every earlier grant's of
        /// this lock.
        token: u64,
    },
    /// The lock is held; the holder waits in line and is granted it later.
    Queued {
        /// Waiters ahead of this one, the holder not counted.
        ahead: usize,
    },
    /// The lock is held and the caller did not want to wait.
    Busy {
        /// Who holds it.
        holder: Holder,
    },
    /// The caller neither holds the lock nor waits for it.
    NotHeld,
    /// The key's revision is not the expected one.
    RevisionMismatch {
        /// The key's revision (0: absent).
        current: u64,
    },
    /// The node has no open session (never opened, closed, or expired).
    NoSession {
        /// The node.
        node: NodeId,
    },
    /// A newer incarnation of this node already has a session.
    StaleIncarnation {
        /// The incarnation with the session.
        current: u64,
    },
    /// The node has not enough of a resource free for a reservation; nothing was reserved.
    Insufficient {
        /// The first resource (in name order) that does not fit.
        resource: String,
        /// How much of it was asked for.
        need: u64,
        /// How much of it is free: the capacity given less what the node's reservations hold.
        free: u64,
    },
    /// The reservation id is taken by a reservation for another node or another need.
    ReservationTaken {
        /// The node of the reservation holding the id.
        node: NodeId,
        /// What that reservation holds.
        need: BTreeMap<String, u64>,
    },
    /// A request sent again ([`Command::Request`]) that the registry no longer remembers: it
    /// changed nothing now, and whether an earlier attempt took effect is not known. Only a
    /// request that waited behind more than [`REMEMBERED`] outcomes of its node's later
    /// requests, or whose node said it was over, is answered so.
    Forgotten,
}

/// How many outcomes of a node's requests the registry remembers at most
/// ([`Command::Request`]): beyond that, those of its oldest requests are forgotten first. A
/// node's requests under way hold a few dozen as a rule; the bound is for a request that
/// hangs while the node's others go on.
pub const REMEMBERED: usize = 65_536;

/// A change that applying a command made, for watchers: the local copy of every node derives
/// its notifications (lock granted, lock lost, node down, key changed) from these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// A session was opened.
    SessionOpened(NodeId),
    /// A session ended because its node left.
    SessionClosed(NodeId),
    /// A session expired: its node is down.
    SessionExpired(NodeId),
    /// A name now resolves to this actor, or to nothing.
    Name {
        /// The name.
        name: String,
        /// Its actor, if any.
        actor: Option<WireRef>,
    },
    /// A lock was granted.
    Granted {
        /// The lock.
        lock: String,
        /// The new holder.
        holder: Holder,
        /// The grant's fencing token.
        token: u64,
    },
    /// A lock's holder lost it because its session ended (not by its own release).
    Revoked {
        /// The lock.
        lock: String,
        /// The holder that lost it.
        holder: Holder,
        /// The token of the grant that ended.
        token: u64,
    },
    /// A config key changed.
    Key {
        /// The key.
        key: String,
        /// Its value, or `None` if removed.
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        /// The revision of the change.
        revision: u64,
    },
    /// A reservation was made, or released (`None`): unreserved, or its node's session ended.
    Reservation {
        /// The reservation's id.
        id: String,
        /// What it reserves, if it still exists.
        reservation: Option<Reservation>,
    },
}

/// Resources set aside on a node, bound to that node's session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The node (with the incarnation whose session holds the reservation).
    pub node: NodeId,
    /// How much of each resource, by resource name.
    pub need: BTreeMap<String, u64>,
}
