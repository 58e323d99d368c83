//! The endpoints: each finds the part of the node it reads (cluster, registry, supervisors,
//! apps), and turns what it reports into the documents of [`api`](super::api). The
//! conversions are pure functions, tested below.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ensemble_registry::state::{Lock, Session};
use ensemble_registry::{MAX_VOTERS, Registry, RegistryError};
use ensemble_runtime::cluster::{Cluster, Member, MemberStatus};
use ensemble_runtime::remote::WireRef;
use ensemble_runtime::{ActorInfo, Node, NodeId};
use ensemble_supervisor::SupervisorRef;
use ensemble_supervisor::app::{APPS_PREFIX, AppError, AppSpec, Apps, is_app_name};

use super::api::{
    ActorEntry, AppChange, AppEntry, LeaseEntry, LockEntry, MemberEntry, NameEntry, NodeStatus,
    RegistryStatus, Trees, VoteMoveRequest, VoteMoved, VoterCountRequest, VoterCountSet,
};
use super::exporter;
use super::failure::Failure;
use super::routes::AdminState;

type Shared = State<Arc<AdminState>>;

/// How long a top-level supervisor has to answer its snapshot; one that does not is left out
/// of `/api/v1/trees` (and logged), so one stuck supervisor does not hide the others.
const TREE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a change (deploying, removing an app) waits for the registry to confirm it; under
/// the CLI's 10 s, so that the CLI shows this answer rather than its own timeout.
const WRITE_TIMEOUT: Duration = Duration::from_secs(8);

/// `GET /metrics`.
pub(crate) async fn metrics() -> Response {
    match exporter::handle() {
        Ok(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        Err(why) => Failure::unavailable(why).into_response(),
    }
}

/// `GET /api/v1/status`: answered by every node, with empty cluster and registry parts on a
/// node lacking them.
pub(crate) async fn status(State(state): Shared) -> Json<NodeStatus> {
    let node = &state.node;
    let cluster = node.extension::<Cluster>();
    let registry = node.extension::<Registry>();
    let members = cluster.as_ref().map(Cluster::members).unwrap_or_default();
    let suspect = members
        .iter()
        .filter(|m| m.status == MemberStatus::Suspect)
        .count();
    let voters = voters(registry.as_ref()).await.unwrap_or_default();
    Json(NodeStatus {
        node: node.id().name().to_owned(),
        incarnation: node.id().incarnation(),
        cluster: cluster
            .as_ref()
            .map(|c| c.cluster_name().to_owned())
            .unwrap_or_default(),
        listen: cluster
            .as_ref()
            .map(|c| c.local_addr().to_string())
            .unwrap_or_default(),
        members_up: members.len() - suspect + 1,
        members_suspect: suspect,
        actors: node.actor_count(),
        registry: registry.map_or(
            RegistryStatus {
                leader: None,
                revision: 0,
                synced: false,
                fenced: false,
                voters: Vec::new(),
                voter_count: None,
            },
            |r| RegistryStatus {
                leader: r.leader(),
                revision: r.revision(),
                synced: r.is_synced(),
                fenced: r.is_fenced(),
                voters,
                voter_count: r.voter_count(),
            },
        ),
        uptime_secs: state.started.elapsed().as_secs(),
    })
}

/// `GET /api/v1/members`: a node without a cluster service is a cluster of one.
pub(crate) async fn members(State(state): Shared) -> Json<Vec<MemberEntry>> {
    let node = &state.node;
    let registry = node.extension::<Registry>();
    let sessions = registry.as_ref().map(|r| r.sessions()).unwrap_or_default();
    let voters = voters(registry.as_ref()).await;
    let mut entries = match node.extension::<Cluster>() {
        Some(cluster) => {
            let me = self_entry(
                node.id(),
                cluster.local_addr().to_string(),
                cluster.resources(),
                cluster.labels(),
            );
            member_entries(me, &cluster.members(), &sessions)
        }
        None => {
            let me = self_entry(node.id(), String::new(), &BTreeMap::new(), &BTreeMap::new());
            member_entries(me, &[], &sessions)
        }
    };
    if let Some(voters) = voters {
        for entry in &mut entries {
            entry.voter = Some(voters.contains(&entry.node));
        }
    }
    Json(entries)
}

/// How long the status and members wait for the registry's leader to name the voters: the
/// rest of their answer comes from this node's copy, also without a quorum.
const VOTERS_WAIT: Duration = Duration::from_secs(1);

/// The registry's voters, by name, if the node has a registry and its leader names them
/// within [`VOTERS_WAIT`].
async fn voters(registry: Option<&Registry>) -> Option<Vec<String>> {
    match tokio::time::timeout(VOTERS_WAIT, registry?.voters()).await {
        Ok(Ok(voters)) => Some(voters),
        _ => None,
    }
}

/// `GET /api/v1/actors`.
pub(crate) async fn actors(State(state): Shared) -> Json<Vec<ActorEntry>> {
    Json(state.node.actors().into_iter().map(actor_entry).collect())
}

/// `GET /api/v1/trees`: the top-level supervisors' snapshots, asked for all at once.
pub(crate) async fn trees(State(state): Shared) -> Json<Trees> {
    let supervisors = SupervisorRef::top_level(&state.node);
    let snapshots = futures_util::future::join_all(supervisors.into_iter().map(|supervisor| {
        let supervisor = supervisor.with_timeout(TREE_TIMEOUT);
        async move {
            let answer = tokio::time::timeout(TREE_TIMEOUT, supervisor.snapshot()).await;
            match answer {
                Ok(Ok(tree)) => Some(tree),
                Ok(Err(e)) => {
                    tracing::debug!(supervisor = %supervisor.actor().id(), error = %e, "no snapshot of a supervision tree; left out");
                    None
                }
                Err(_) => {
                    tracing::warn!(supervisor = %supervisor.actor().id(), timeout = ?TREE_TIMEOUT, "a supervisor did not answer its snapshot in time; its tree is left out");
                    None
                }
            }
        }
    }))
    .await;
    Json(snapshots.into_iter().flatten().collect())
}

/// `GET /api/v1/names`.
pub(crate) async fn names(State(state): Shared) -> Result<Json<Vec<NameEntry>>, Failure> {
    let registry = registry(&state.node, "global names")?;
    Ok(Json(name_entries(registry.names_with_prefix(""))))
}

/// `GET /api/v1/locks`.
pub(crate) async fn locks(State(state): Shared) -> Result<Json<Vec<LockEntry>>, Failure> {
    let registry = registry(&state.node, "locks")?;
    Ok(Json(lock_entries(&registry.locks())))
}

/// `GET /api/v1/leases`.
pub(crate) async fn leases(State(state): Shared) -> Result<Json<Vec<LeaseEntry>>, Failure> {
    let registry = registry(&state.node, "member sessions")?;
    Ok(Json(lease_entries(&registry.sessions(), &registry.locks())))
}

/// `GET /api/v1/apps`: from this node's copy of the registry, so it answers without a
/// quorum too.
pub(crate) async fn apps(State(state): Shared) -> Result<Json<Vec<AppEntry>>, Failure> {
    let apps = apps_of(&state.node)?;
    let mut entries = Vec::new();
    for (key, value) in apps.registry().get_prefix_cached(APPS_PREFIX) {
        match AppSpec::from_toml(&String::from_utf8_lossy(&value.value)) {
            Ok(spec) => {
                let status = Some(apps.status_of(&spec));
                entries.push(AppEntry { spec, status });
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "a deployed app spec does not parse; left out of the app list");
            }
        }
    }
    Ok(Json(entries))
}

/// `POST /api/v1/apps`, the body an app spec in TOML: deploys it (or changes the deployed
/// app of that name).
pub(crate) async fn deploy_app(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AppChange>, Failure> {
    let body = body.map_err(|e| {
        let why = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            format!("it is larger than {} bytes", super::MAX_BODY)
        } else {
            e.body_text()
        };
        Failure::new(e.status(), format!("cannot read the app spec: {why}"))
    })?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        Failure::bad_request(format!(
            "the app spec is not UTF-8 text ({e}): send the TOML file as the request body"
        ))
    })?;
    let spec = AppSpec::from_toml(text).map_err(|e| Failure::bad_request(e.to_string()))?;
    let apps = apps_of(&state.node)?;
    let app = spec.name.clone();
    match tokio::time::timeout(WRITE_TIMEOUT, apps.deploy(&spec)).await {
        Ok(Ok(())) => Ok(Json(AppChange { app, changed: true })),
        Ok(Err(e)) => Err(app_failure(&app, "deploying", e)),
        Err(_) => Err(Failure::timeout(format!(
            "the registry did not confirm deploying app {app} within {WRITE_TIMEOUT:?}: does the cluster have a registry quorum? (it may be deployed later; see GET /api/v1/apps)"
        ))),
    }
}

/// `DELETE /api/v1/apps/{name}`: removes the app; `changed` says whether it was deployed.
pub(crate) async fn remove_app(
    State(state): Shared,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<AppChange>, Failure> {
    let Path(app) = name.map_err(|e| {
        Failure::bad_request(format!(
            "the app's name in the path is not valid: {}",
            e.body_text()
        ))
    })?;
    if !is_app_name(&app) {
        return Err(Failure::bad_request(format!(
            "{app:?} is not an app name: app names are 1 or more ASCII letters, digits, '-', '_' or '.' (see GET /api/v1/apps)"
        )));
    }
    let apps = apps_of(&state.node)?;
    match tokio::time::timeout(WRITE_TIMEOUT, apps.remove(&app)).await {
        Ok(Ok(changed)) => Ok(Json(AppChange { app, changed })),
        Ok(Err(e)) => Err(app_failure(&app, "removing", e)),
        Err(_) => Err(Failure::timeout(format!(
            "the registry did not confirm removing app {app} within {WRITE_TIMEOUT:?}: does the cluster have a registry quorum? (it may be removed later; see GET /api/v1/apps)"
        ))),
    }
}

/// `POST /api/v1/voters/move` (body: [`VoteMoveRequest`] as JSON): moves a registry vote by
/// hand and answers once it moved, with the voters after it. A request that names no two
/// nodes answers `400`; a move the leader refuses, `409` naming why; one tried that failed
/// (the node to take the vote did not catch up, say), `503`; one not done within the
/// registry's bound for it or this server's request timeout, whichever is shorter, `504`.
pub(crate) async fn move_vote(
    State(state): Shared,
    body: Result<Json<VoteMoveRequest>, JsonRejection>,
) -> Result<Json<VoteMoved>, Failure> {
    let Json(VoteMoveRequest { from, to }) = body.map_err(|e| {
        Failure::new(
            e.status(),
            format!(
                "cannot read the vote move: {}; send {{\"from\": NODE, \"to\": NODE}} as JSON \
                 (Content-Type: application/json)",
                e.body_text()
            ),
        )
    })?;
    if from.is_empty() || to.is_empty() || from == to {
        return Err(Failure::bad_request(format!(
            "a vote move names two nodes, the voter to move from and the node to move to; \
             this one names {from:?} and {to:?}"
        )));
    }
    let registry = registry(&state.node, "voters")?;
    // Answered before the guard's request timeout would answer 408 in its place.
    let limit = registry
        .move_vote_timeout()
        .min(state.request_timeout.saturating_sub(MOVE_MARGIN));
    let not_moved =
        |why: String| format!("the registry vote of node {from} was not moved to node {to}: {why}");
    match tokio::time::timeout(limit, registry.move_vote(&from, &to)).await {
        Ok(Ok(())) => {}
        Ok(Err(RegistryError::VoteNotMoved { why, tried: false })) => {
            return Err(Failure::new(StatusCode::CONFLICT, not_moved(why)));
        }
        Ok(Err(RegistryError::VoteNotMoved { why, tried: true })) => {
            return Err(Failure::unavailable(format!(
                "{}; the voters are as they were, and another try may work",
                not_moved(why)
            )));
        }
        Ok(Err(e @ RegistryError::Timeout { .. })) => {
            return Err(Failure::timeout(format!(
                "{e} (the move may still finish; see GET /api/v1/status)"
            )));
        }
        Ok(Err(e)) => return Err(Failure::unavailable(not_moved(e.to_string()))),
        Err(_) => {
            return Err(Failure::timeout(format!(
                "moving the registry vote of node {from} to node {to} did not finish within \
                 {limit:?} (this admin server's request timeout, less a margin); it may still \
                 finish: see GET /api/v1/status"
            )));
        }
    }
    // The move is made: a failed read of the voters does not make it look failed.
    let voters = registry.voters().await.ok();
    Ok(Json(VoteMoved { from, to, voters }))
}

/// `POST /api/v1/voters/count` (body: [`VoterCountRequest`] as JSON): sets how many voters
/// the registry keeps, and answers once that is committed, with the voters as they were then;
/// the leader adds or removes voters from then on (see GET /api/v1/status). A count outside 1
/// to 9 answers `400`; a registry that does not confirm the count in time, `503`.
pub(crate) async fn set_voter_count(
    State(state): Shared,
    body: Result<Json<VoterCountRequest>, JsonRejection>,
) -> Result<Json<VoterCountSet>, Failure> {
    let Json(VoterCountRequest { count }) = body.map_err(|e| {
        Failure::new(
            e.status(),
            format!(
                "cannot read the voter count: {}; send {{\"count\": N}} as JSON \
                 (Content-Type: application/json), N from 1 to {MAX_VOTERS}",
                e.body_text()
            ),
        )
    })?;
    let registry = registry(&state.node, "voters")?;
    match tokio::time::timeout(WRITE_TIMEOUT, registry.set_voter_count(count)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e @ RegistryError::BadVoterCount { .. })) => {
            return Err(Failure::bad_request(e.to_string()));
        }
        Ok(Err(e @ (RegistryError::Unknown { .. } | RegistryError::Timeout { .. }))) => {
            return Err(Failure::unavailable(format!(
                "{e} (the voter count of {count} may be set all the same; see GET /api/v1/status)"
            )));
        }
        Ok(Err(e)) => {
            return Err(Failure::unavailable(format!(
                "the registry's voter count was not set to {count}: {e}"
            )));
        }
        Err(_) => {
            return Err(Failure::unavailable(format!(
                "the registry did not confirm a voter count of {count} within {WRITE_TIMEOUT:?}: \
                 does the cluster have a registry quorum? (it may be set later; see GET \
                 /api/v1/status)"
            )));
        }
    }
    let voters = voters(Some(&registry)).await;
    Ok(Json(VoterCountSet { count, voters }))
}

/// How much sooner than the admin server's request timeout a vote move gives up, so that its
/// own answer, not the guard's, reaches the caller.
const MOVE_MARGIN: Duration = Duration::from_secs(1);

/// The node's registry, or `503` saying the node has none (so it knows no `what`). The
/// dashboard tells this 503 from others by the words "has no registry".
fn registry(node: &Node, what: &str) -> Result<Registry, Failure> {
    node.extension::<Registry>().ok_or_else(|| {
        Failure::unavailable(format!(
            "node {} has no registry, so it knows no {what}: start it with a registry (as the ensemble node command does)",
            node.id()
        ))
    })
}

/// The apps API of the node, or `503` saying what the node lacks for it.
fn apps_of(node: &Node) -> Result<Apps, Failure> {
    registry(node, "apps")?;
    Apps::new(node).map_err(|e| Failure::unavailable(e.to_string()))
}

fn app_failure(app: &str, doing: &str, error: AppError) -> Failure {
    match error {
        AppError::Spec(e) => Failure::bad_request(e.to_string()),
        AppError::Registry(e) => {
            Failure::unavailable(format!("{doing} app {app}: the registry refused: {e}"))
        }
        AppError::Setup(e) => Failure::unavailable(format!("{doing} app {app}: {e}")),
    }
}

/// The answering node as a member, before its session is looked up.
pub(crate) fn self_entry(
    id: &NodeId,
    listen: String,
    resources: &BTreeMap<String, u64>,
    labels: &BTreeMap<String, String>,
) -> MemberEntry {
    MemberEntry {
        node: id.name().to_owned(),
        incarnation: id.incarnation(),
        listen,
        status: "self".to_owned(),
        session: false,
        voter: None,
        resources: resources.clone(),
        labels: labels.clone(),
    }
}

/// The answering node and the members it sees, by name, each with whether its incarnation
/// holds an open session.
pub(crate) fn member_entries(
    me: MemberEntry,
    members: &[Member],
    sessions: &[Session],
) -> Vec<MemberEntry> {
    let has_session = |name: &str, incarnation: u64| {
        sessions
            .iter()
            .any(|s| s.node.name() == name && s.node.incarnation() == incarnation)
    };
    let mut entries: Vec<MemberEntry> = std::iter::once(me)
        .chain(members.iter().map(|m| {
            MemberEntry {
                node: m.node.name().to_owned(),
                incarnation: m.node.incarnation(),
                listen: m.listen.to_string(),
                status: match m.status {
                    MemberStatus::Up => "up",
                    MemberStatus::Suspect => "suspect",
                }
                .to_owned(),
                session: false,
                voter: None,
                resources: m.resources.clone(),
                labels: m.labels.clone(),
            }
        }))
        .map(|mut entry| {
            entry.session = has_session(&entry.node, entry.incarnation);
            entry
        })
        .collect();
    entries.sort_by(|a, b| a.node.cmp(&b.node));
    entries
}

pub(crate) fn actor_entry(info: ActorInfo) -> ActorEntry {
    ActorEntry {
        id: info.id.to_string(),
        type_name: info.type_name.to_owned(),
        parent: info.parent.map(|p| p.to_string()),
        names: info.names,
        mailbox_len: info.mailbox_len,
    }
}

pub(crate) fn name_entries(names: Vec<(String, WireRef)>) -> Vec<NameEntry> {
    names
        .into_iter()
        .map(|(name, wire)| NameEntry {
            name,
            actor: wire.id.to_string(),
            node: wire.id.node().to_string(),
        })
        .collect()
}

pub(crate) fn lock_entries(locks: &[(String, Lock)]) -> Vec<LockEntry> {
    locks
        .iter()
        .map(|(name, lock)| LockEntry {
            name: name.clone(),
            holder: lock.holder.as_ref().map(|(h, _)| h.node.to_string()),
            token: lock.holder.as_ref().map_or(0, |(_, token)| *token),
            waiters: lock.waiters.iter().map(|w| w.node.to_string()).collect(),
        })
        .collect()
}

pub(crate) fn lease_entries(sessions: &[Session], locks: &[(String, Lock)]) -> Vec<LeaseEntry> {
    let mut entries: Vec<LeaseEntry> = sessions
        .iter()
        .map(|session| LeaseEntry {
            node: session.node.name().to_owned(),
            incarnation: session.node.incarnation(),
            ttl_ms: session.ttl_ms,
            locks: locks
                .iter()
                .filter(|(_, lock)| {
                    lock.holder.as_ref().is_some_and(|(h, _)| {
                        h.node.name() == session.node.name()
                            && h.node.incarnation() == session.node.incarnation()
                    })
                })
                .map(|(name, _)| name.clone())
                .collect(),
        })
        .collect();
    entries.sort_by(|a, b| a.node.cmp(&b.node));
    entries
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use ensemble_registry::state::Holder;
    use ensemble_runtime::ActorId;

    use super::*;

    fn member(name: &str, incarnation: u64, status: MemberStatus) -> Member {
        Member {
            node: NodeId::new(name, incarnation),
            listen: "127.0.0.1:4000".parse().unwrap(),
            status,
            resources: BTreeMap::from([("cpu".to_owned(), 1000)]),
            labels: BTreeMap::new(),
        }
    }

    fn session(name: &str, incarnation: u64) -> Session {
        Session {
            node: NodeId::new(name, incarnation),
            ttl_ms: 1000,
        }
    }

    fn holder(name: &str, incarnation: u64) -> Holder {
        Holder {
            node: NodeId::new(name, incarnation),
            id: 1,
        }
    }

    #[test]
    fn members_with_self_first_by_name_and_sessions_by_incarnation() {
        let me = self_entry(
            &NodeId::new("b", 2),
            "127.0.0.1:1".into(),
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        let members = [
            member("c", 3, MemberStatus::Suspect),
            member("a", 1, MemberStatus::Up),
        ];
        // a's session is an older incarnation's: a's current one has none.
        let sessions = [session("b", 2), session("a", 0), session("c", 3)];
        let entries = member_entries(me, &members, &sessions);
        let view: Vec<(&str, &str, bool)> = entries
            .iter()
            .map(|e| (e.node.as_str(), e.status.as_str(), e.session))
            .collect();
        assert_eq!(
            view,
            [
                ("a", "up", false),
                ("b", "self", true),
                ("c", "suspect", true)
            ]
        );
        assert_eq!(entries[0].resources["cpu"], 1000);
    }

    #[test]
    fn locks_with_holder_token_and_waiters() {
        let locks = vec![
            (
                "held".to_owned(),
                Lock {
                    holder: Some((holder("a", 1), 42)),
                    waiters: VecDeque::from([holder("b", 2), holder("c", 3)]),
                },
            ),
            (
                "waited".to_owned(),
                Lock {
                    holder: None,
                    waiters: VecDeque::from([holder("b", 2)]),
                },
            ),
        ];
        let entries = lock_entries(&locks);
        assert_eq!(entries[0].holder.as_deref(), Some("a#1"));
        assert_eq!(entries[0].token, 42);
        assert_eq!(entries[0].waiters, ["b#2", "c#3"]);
        assert_eq!(entries[1].holder, None);
        assert_eq!(entries[1].token, 0);

        let leases = lease_entries(&[session("b", 2), session("a", 1)], &locks);
        assert_eq!(leases[0].node, "a");
        assert_eq!(leases[0].locks, ["held"]);
        assert!(leases[1].locks.is_empty(), "waiting is not holding");
    }

    #[test]
    fn names_with_their_actor_and_node() {
        let wire = WireRef {
            id: ActorId::new(NodeId::new("a", 7), 12),
            msg_type: "Msg".into(),
        };
        let entries = name_entries(vec![("svc".into(), wire)]);
        assert_eq!(entries[0].name, "svc");
        assert_eq!(entries[0].node, "a#7");
        assert_eq!(
            entries[0].actor,
            ActorId::new(NodeId::new("a", 7), 12).to_string()
        );
    }
}
