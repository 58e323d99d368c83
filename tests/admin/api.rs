//! Every endpoint against a cluster of two nodes.

use ensemble::admin::api::{
    ActorEntry, AppChange, AppEntry, LeaseEntry, LockEntry, MemberEntry, NameEntry, NodeStatus,
    Trees, VoterCountSet,
};
use ensemble::supervisor::ChildKind;
use ensemble::supervisor::ChildState;

use crate::cluster::{CLUSTER, LOCK, TestCluster, until};
use crate::http::Request;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_for_the_cluster() {
    let cluster = TestCluster::start(None).await;
    let n1 = cluster.first();
    let base = n1.url();
    let n1_id = n1.node.id().to_string();
    let n2_id = cluster.nodes[1].node.id().to_string();

    // status
    let answer = Request::get(format!("{base}/api/v1/status")).send().await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let status: NodeStatus = answer.json();
    assert_eq!(status.node, "n1");
    assert_eq!(status.incarnation, n1.node.id().incarnation());
    assert_eq!(status.cluster, CLUSTER);
    assert_eq!(status.listen, n1.cluster.local_addr().to_string());
    assert_eq!((status.members_up, status.members_suspect), (2, 0));
    assert!(status.actors > 0);
    assert!(status.registry.leader.is_some(), "{status:?}");
    assert!(status.registry.revision > 0 && status.registry.synced);
    assert!(!status.registry.fenced);

    // members, from either node: itself as `self`, the other `up`, both with sessions
    for (i, node) in cluster.nodes.iter().enumerate() {
        let members: Vec<MemberEntry> = Request::get(format!("{}/api/v1/members", node.url()))
            .send()
            .await
            .json();
        let view: Vec<(&str, &str, bool)> = members
            .iter()
            .map(|m| (m.node.as_str(), m.status.as_str(), m.session))
            .collect();
        let expected = if i == 0 {
            [("n1", "self", true), ("n2", "up", true)]
        } else {
            [("n1", "up", true), ("n2", "self", true)]
        };
        assert_eq!(view, expected);
        let n2 = &members[1];
        assert_eq!(n2.incarnation, cluster.nodes[1].node.id().incarnation());
        assert_eq!(n2.listen, cluster.nodes[1].cluster.local_addr().to_string());
        assert_eq!(n2.resources.get("cpu"), Some(&1000));
        assert_eq!(n2.labels.get("zone").map(String::as_str), Some("zone-n2"));
    }

    // voters: both nodes, as the leader names them, in the status and in the members
    until("both nodes named voters in the status", || async {
        let status: NodeStatus = Request::get(format!("{base}/api/v1/status"))
            .send()
            .await
            .json();
        status.registry.voters == ["n1", "n2"]
    })
    .await;
    let members: Vec<MemberEntry> = Request::get(format!("{base}/api/v1/members"))
        .send()
        .await
        .json();
    let voters: Vec<Option<bool>> = members.iter().map(|m| m.voter).collect();
    assert_eq!(voters, [Some(true), Some(true)], "{members:?}");

    // actors: the supervisor and its children among them
    let actors: Vec<ActorEntry> = Request::get(format!("{base}/api/v1/actors"))
        .send()
        .await
        .json();
    let supervisor_id = cluster.supervisor.actor().id().to_string();
    let supervisor = actors
        .iter()
        .find(|a| a.id == supervisor_id)
        .unwrap_or_else(|| panic!("no actor {supervisor_id} in {actors:?}"));
    assert!(
        supervisor.type_name.contains("Supervisor"),
        "{supervisor:?}"
    );
    assert!(
        actors
            .iter()
            .any(|a| a.parent.as_deref() == Some(supervisor_id.as_str())),
        "no child of the supervisor in {actors:?}"
    );

    // trees: services > cache, storage > writer
    let trees: Trees = Request::get(format!("{base}/api/v1/trees"))
        .send()
        .await
        .json();
    let services = trees
        .iter()
        .find(|t| t.name == "services")
        .unwrap_or_else(|| panic!("no tree services in {trees:?}"));
    assert_eq!(services.actor, supervisor_id);
    let ids: Vec<&str> = services.children.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["cache", "storage"]);
    assert!(
        services
            .children
            .iter()
            .all(|c| c.state == ChildState::Running)
    );
    let storage = services.children[1]
        .tree
        .as_ref()
        .expect("the nested supervisor's tree");
    assert_eq!(services.children[1].kind, ChildKind::Supervisor);
    assert_eq!(storage.name, "storage");
    assert_eq!(storage.children[0].id, "writer");
    assert_eq!(storage.children[0].state, ChildState::Running);

    // names: the app's singleton registered its name
    let names: Vec<NameEntry> = Request::get(format!("{base}/api/v1/names"))
        .send()
        .await
        .json();
    let main = names
        .iter()
        .find(|n| n.name == "probe.main")
        .unwrap_or_else(|| panic!("no name probe.main in {names:?}"));
    assert!(main.node == n1_id || main.node == n2_id, "{main:?}");
    assert!(main.actor.contains(&main.node), "{main:?}");

    // locks: n2 holds jobs.lock, n1 waits; the singleton's lease is held too
    let locks: Vec<LockEntry> = Request::get(format!("{base}/api/v1/locks"))
        .send()
        .await
        .json();
    let jobs = locks
        .iter()
        .find(|l| l.name == LOCK)
        .unwrap_or_else(|| panic!("no lock {LOCK} in {locks:?}"));
    assert_eq!(jobs.holder.as_deref(), Some(n2_id.as_str()));
    assert!(jobs.token > 0);
    assert_eq!(jobs.waiters, std::slice::from_ref(&n1_id));
    let singleton = locks
        .iter()
        .find(|l| l.name.contains("probe") && l.name.contains("main"))
        .unwrap_or_else(|| panic!("no lease of the singleton role in {locks:?}"));
    assert!(singleton.holder.is_some() && singleton.token > 0);

    // leases: both sessions; n2's holds jobs.lock
    let leases: Vec<LeaseEntry> = Request::get(format!("{base}/api/v1/leases"))
        .send()
        .await
        .json();
    let nodes: Vec<&str> = leases.iter().map(|l| l.node.as_str()).collect();
    assert_eq!(nodes, ["n1", "n2"]);
    assert!(leases.iter().all(|l| l.ttl_ms > 0));
    assert!(leases[1].locks.iter().any(|l| l == LOCK), "{leases:?}");
    assert!(!leases[0].locks.iter().any(|l| l == LOCK), "{leases:?}");

    // apps: probe, every role at its count
    let apps: Vec<AppEntry> = Request::get(format!("{base}/api/v1/apps"))
        .send()
        .await
        .json();
    assert_eq!(apps.len(), 1, "{apps:?}");
    assert_eq!(apps[0].spec.name, "probe");
    let status = apps[0].status.as_ref().expect("the app's status");
    let roles: Vec<(&str, usize, usize)> = status
        .roles
        .iter()
        .map(|r| (r.name.as_str(), r.wanted, r.running_total()))
        .collect();
    assert_eq!(roles, [("main", 1, 1), ("worker", 2, 2)]);

    // metrics: Prometheus text with the runtime's metrics and the admin server's own
    until("the registry's metrics on /metrics", || async {
        let answer = Request::get(format!("{base}/metrics")).send().await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.content_type.starts_with("text/plain"));
        answer.body.contains("ensemble_registry_batch_commands")
    })
    .await;
    let text = Request::get(format!("{base}/metrics")).send().await.body;
    assert!(
        text.contains("# TYPE ensemble_admin_requests_total counter"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ensemble_admin_requests_total{")
                && l.contains("endpoint=\"/api/v1/status\"")
                && l.contains("status=\"200\"")),
        "{text}"
    );

    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_are_deployed_and_removed_over_http() {
    let cluster = TestCluster::start(None).await;
    let base = cluster.first().url();
    let apps_url = format!("{base}/api/v1/apps");

    // A bad spec is refused with the key at fault, and nothing is deployed.
    let bad = "name = \"extra\"\n[[roles]]\nname = \"one\"\nmodule = \"test.probe\"\nsingleton = true\ninstances = 2\n";
    let answer = Request::post(&apps_url, bad).send().await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let error = answer.error();
    assert!(error.contains("roles[one].instances"), "{error}");
    assert!(error.contains("extra"), "{error}");

    let answer = Request::post(&apps_url, "name = \"extra\"\n[[roles]]\nnmae = \"x\"\n")
        .send()
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.error().contains("nmae"), "{}", answer.error());

    let answer = Request::post(&apps_url, vec![0xff, 0xfe]).send().await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.error().contains("UTF-8"), "{}", answer.error());

    let apps: Vec<AppEntry> = Request::get(&apps_url).send().await.json();
    assert!(apps.iter().all(|a| a.spec.name != "extra"));

    // A change from another web origin is refused (a page in the operator's browser).
    let good = "name = \"extra\"\n[[roles]]\nname = \"one\"\nmodule = \"test.probe\"\n";
    let answer = Request::post(&apps_url, good)
        .header("Origin", "http://evil.example")
        .send()
        .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(
        answer.error().contains("evil.example"),
        "{}",
        answer.error()
    );

    // A good one is deployed, shows at once and runs.
    let answer = Request::post(&apps_url, good).send().await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let change: AppChange = answer.json();
    assert_eq!(
        change,
        AppChange {
            app: "extra".into(),
            changed: true
        }
    );
    let apps: Vec<AppEntry> = Request::get(&apps_url).send().await.json();
    assert!(apps.iter().any(|a| a.spec.name == "extra"), "{apps:?}");
    until("app extra to run", || async {
        let apps: Vec<AppEntry> = Request::get(&apps_url).send().await.json();
        apps.iter()
            .find(|a| a.spec.name == "extra")
            .and_then(|a| a.status.as_ref())
            .is_some_and(|s| s.roles.iter().all(|r| r.running_total() == 1))
    })
    .await;

    // A name no app can have is refused, not answered "not deployed".
    let answer = Request::delete(format!("{apps_url}/%20")).send().await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("not an app name"), "{}", answer.body);
    // Removed, then removing again changes nothing.
    let answer = Request::delete(format!("{apps_url}/extra")).send().await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.json::<AppChange>().changed);
    let apps: Vec<AppEntry> = Request::get(&apps_url).send().await.json();
    let names: Vec<&str> = apps.iter().map(|a| a.spec.name.as_str()).collect();
    assert_eq!(names, ["probe"]);
    let answer = Request::delete(format!("{apps_url}/extra")).send().await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json::<AppChange>(),
        AppChange {
            app: "extra".into(),
            changed: false
        }
    );

    cluster.stop().await;
}

/// A vote move with `body`, sent as JSON.
fn vote_move(base: &str, body: &str) -> Request {
    post_json(format!("{base}/api/v1/voters/move"), body)
}

/// A POST of `body` to `url`, sent as JSON.
fn post_json(url: String, body: &str) -> Request {
    Request {
        method: "POST",
        url,
        body: Some(body.as_bytes().to_vec()),
        headers: vec![("Content-Type", "application/json".into())],
        ..Request::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voter_count_is_set_over_http_and_counts_not_kept_are_refused() {
    let cluster = TestCluster::start(None).await;
    let base = cluster.first().url();
    let status_url = format!("{base}/api/v1/status");
    let count_url = format!("{base}/api/v1/voters/count");
    let voters = || async {
        let status: NodeStatus = Request::get(&status_url).send().await.json();
        (status.registry.voters, status.registry.voter_count)
    };
    until("both nodes to vote", || async {
        voters().await.0.len() == 2
    })
    .await;
    assert_eq!(voters().await.1, None, "no count set yet");

    for (body, status, says) in [
        (
            r#"{"count": 0}"#,
            400,
            "cannot keep 0 voters: ask for 1 to 9",
        ),
        (r#"{"count": 10}"#, 400, "cannot keep 10 voters"),
        (r#"{"count": -1}"#, 422, "cannot read the voter count"),
        (r#"{"voters": 3}"#, 422, "missing field `count`"),
        ("three", 400, "cannot read the voter count"),
    ] {
        let answer = post_json(count_url.clone(), body).send().await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert!(answer.error().contains(says), "{body}: {}", answer.error());
    }
    assert_eq!(voters().await.1, None, "nothing set by the refused counts");

    let answer = post_json(count_url.clone(), r#"{"count": 1}"#).send().await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let set: VoterCountSet = answer.json();
    assert_eq!(set.count, 1);
    until("one voter", || async {
        let (now, count) = voters().await;
        now.len() == 1 && count == Some(1)
    })
    .await;
    let answer = post_json(count_url, r#"{"count": 2}"#).send().await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    until("two voters again", || async { voters().await.0.len() == 2 }).await;
    assert_eq!(voters().await.1, Some(2));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vote_moves_that_cannot_be_made_are_refused_over_http_naming_why() {
    let cluster = TestCluster::start(None).await;
    let base = cluster.first().url();
    let status_url = format!("{base}/api/v1/status");
    until("both nodes to vote", || async {
        let status: NodeStatus = Request::get(&status_url).send().await.json();
        status.registry.voters.len() == 2
    })
    .await;
    let status: NodeStatus = Request::get(&status_url).send().await.json();
    let voters = status.registry.voters.clone();

    // Both nodes vote: neither can take the other's vote.
    let body = format!(r#"{{"from": "{}", "to": "{}"}}"#, voters[0], voters[1]);
    let answer = vote_move(&base, &body).send().await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert!(
        answer.error().contains("votes in the registry already"),
        "{}",
        answer.error()
    );
    let answer = vote_move(&base, r#"{"from": "nobody", "to": "n1"}"#)
        .send()
        .await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert!(
        answer.error().contains("node nobody does not vote"),
        "{}",
        answer.error()
    );
    // Not a move at all.
    let answer = vote_move(&base, r#"{"from": "n1", "to": "n1"}"#)
        .send()
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.error().contains("two nodes"), "{}", answer.error());
    let answer = vote_move(&base, r#"{"from": "n1"}"#).send().await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert!(answer.error().contains("to"), "{}", answer.error());
    let answer = vote_move(&base, "n1 -> n2").send().await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer.error().contains("cannot read the vote move"),
        "{}",
        answer.error()
    );
    let answer = Request::post(format!("{base}/api/v1/voters/move"), "{}")
        .send()
        .await;
    assert_eq!(answer.status, 415, "{}", answer.body);
    assert!(
        answer.error().contains("application/json"),
        "{}",
        answer.error()
    );

    let after: NodeStatus = Request::get(&status_url).send().await.json();
    assert_eq!(after.registry.voters, voters);
    cluster.stop().await;
}
