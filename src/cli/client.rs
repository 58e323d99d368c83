//! The commands that ask a node's admin API: `status`, `members`, `names`, `locks`,
//! `app deploy|list|remove` and `voters move|count`. Any node answers for the whole cluster (from its copy of the
//! registry), so `--admin` may name any of them.

use std::path::Path;
use std::time::{Duration, Instant};

use ensemble::admin::api::{
    ApiError, AppChange, AppEntry, LockEntry, MemberEntry, NameEntry, NodeStatus, VoteMoveRequest,
    VoteMoved, VoterCountRequest, VoterCountSet,
};
use ensemble::supervisor::app::AppSpec;
use serde::de::DeserializeOwned;

use super::CliResult;
use super::table::render;

/// How to reach a node's admin API.
#[derive(clap::Args, Debug)]
pub(crate) struct AdminArgs {
    /// The admin address of any node of the cluster (as its `admin.listen`).
    #[arg(
        long,
        env = "ENSEMBLE_ADMIN",
        default_value = "127.0.0.1:7070",
        value_name = "HOST:PORT"
    )]
    admin: String,
    /// The admin API's bearer token, if the node requires one.
    #[arg(
        long,
        env = "ENSEMBLE_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Print the API's JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// The most an answer of the admin API may hold. `names` and `apps` list the whole cluster,
/// which outgrows ureq's default of 10 MiB on a large one; the cap only keeps a wrong server
/// from filling the memory.
const MAX_ANSWER: u64 = 256 * 1024 * 1024;

/// How long a request waits for its answer, unless it says otherwise.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking client of one node's admin API.
struct AdminClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl AdminClient {
    fn new(args: &AdminArgs) -> Result<AdminClient, String> {
        Self::waiting(args, ANSWER_TIMEOUT)
    }

    /// A client whose requests wait up to `timeout` for their answers.
    fn waiting(args: &AdminArgs, timeout: Duration) -> Result<AdminClient, String> {
        let address = args.admin.trim().trim_end_matches('/');
        if address.eq_ignore_ascii_case("off") {
            // `off` is what a node takes to run no admin server (ENSEMBLE_ADMIN serves both).
            return Err(
                "--admin off: these commands need the admin API of a running node, HOST:PORT \
                 (127.0.0.1:7070 unless its node was given another); `off` only tells `ensemble \
                 node` to run no admin server, so unset ENSEMBLE_ADMIN or pass --admin HOST:PORT"
                    .to_owned(),
            );
        }
        if let Some(c) = args.token.as_deref().and_then(not_for_a_header) {
            return Err(format!(
                "--token (or ENSEMBLE_ADMIN_TOKEN) holds {c:?}, which an HTTP header cannot carry: \
                 give the node's admin token as it is, printable ASCII"
            ));
        }
        if address
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
        {
            // ureq is built without TLS: refused here rather than failing later as if no
            // node were there.
            return Err(format!(
                "--admin {address}: this ensemble speaks plain HTTP to the admin API, as the admin \
                 server serves it; give HOST:PORT or http://HOST:PORT, and reach a node on \
                 another machine through an SSH tunnel (ssh -L 7070:127.0.0.1:7070 HOST)"
            ));
        }
        let base = if address
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
        {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            // Never through a proxy of the environment (HTTP_PROXY, ALL_PROXY): the requests
            // carry the bearer token, and the admin API is on loopback or a private address.
            .proxy(None)
            .build()
            .into();
        Ok(AdminClient {
            base,
            token: args.token.clone(),
            agent,
        })
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let text = self.call("GET", path, None)?;
        self.decode(path, &text)
    }

    /// Sends a request and returns the body of a successful answer; any failure is an error
    /// naming the URL and, for an error answer, the node's message.
    /// A body goes with its content type.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, String)>,
    ) -> Result<String, String> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("POST", Some((content_type, body))) => {
                let mut request = self.agent.post(&url).header("Content-Type", content_type);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.send(body)
            }
            ("DELETE", _) => {
                let mut request = self.agent.delete(&url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            _ => {
                let mut request = self.agent.get(&url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
        };
        let mut response = result.map_err(|e| {
            format!(
                "cannot reach the admin API at {url}: {e} (is a node running with its admin server there? pass --admin HOST:PORT)"
            )
        })?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(limit) => format!(
                    "{method} {url}: the answer is larger than {} MiB, the most this ensemble reads",
                    limit / (1024 * 1024)
                ),
                e => format!("{method} {url}: cannot read the answer: {e}"),
            })?;
        if status.is_success() {
            return Ok(text);
        }
        let message = serde_json::from_str::<ApiError>(&text)
            .map(|e| e.error)
            .unwrap_or(text);
        if status.as_u16() == 401 {
            return Err(format!(
                "{method} {url}: refused ({status}): {message} (pass --token or set ENSEMBLE_ADMIN_TOKEN)"
            ));
        }
        Err(format!("{method} {url}: {status}: {message}"))
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, text: &str) -> Result<T, String> {
        serde_json::from_str(text).map_err(|e| {
            format!(
                "{}{path} answered a document this ensemble does not understand ({e}); is the node another version?",
                self.base
            )
        })
    }
}

/// Prints the raw JSON when asked for it, and reports whether it did.
fn print_json(args: &AdminArgs, client: &AdminClient, path: &str) -> Result<bool, String> {
    if args.json {
        println!("{}", client.call("GET", path, None)?);
    }
    Ok(args.json)
}

pub(crate) fn status(args: &AdminArgs) -> CliResult {
    let client = AdminClient::new(args)?;
    if print_json(args, &client, "/api/v1/status")? {
        return Ok(());
    }
    let status: NodeStatus = client.get("/api/v1/status")?;
    println!(
        "node      {} (incarnation {})",
        status.node, status.incarnation
    );
    println!(
        "cluster   {} (listening on {})",
        status.cluster, status.listen
    );
    println!(
        "members   {} up, {} suspect",
        status.members_up, status.members_suspect
    );
    let mut voters = if status.registry.voters.is_empty() {
        "unknown".to_owned()
    } else {
        status.registry.voters.join(",")
    };
    if let Some(count) = status.registry.voter_count {
        voters.push_str(&format!(
            " ({count} kept, as set by `ensemble voters count`)"
        ));
    }
    println!(
        "registry  leader {}, voters {voters}, revision {}{}{}",
        status.registry.leader.as_deref().unwrap_or("unknown"),
        status.registry.revision,
        if status.registry.synced {
            ""
        } else {
            ", catching up"
        },
        if status.registry.fenced {
            ", FENCED (session may have expired)"
        } else {
            ""
        }
    );
    println!("actors    {}", status.actors);
    println!("uptime    {} s", status.uptime_secs);
    Ok(())
}

pub(crate) fn members(args: &AdminArgs) -> CliResult {
    let client = AdminClient::new(args)?;
    if print_json(args, &client, "/api/v1/members")? {
        return Ok(());
    }
    let members: Vec<MemberEntry> = client.get("/api/v1/members")?;
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                m.node.clone(),
                m.status.clone(),
                if m.session { "open" } else { "none" }.to_owned(),
                match m.voter {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "unknown",
                }
                .to_owned(),
                m.listen.clone(),
                join_map(m.resources.iter().map(|(k, v)| format!("{k}={v}"))),
                join_map(m.labels.iter().map(|(k, v)| format!("{k}={v}"))),
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &[
                "NODE",
                "STATUS",
                "SESSION",
                "VOTER",
                "ADDRESS",
                "RESOURCES",
                "LABELS"
            ],
            &rows
        )
    );
    Ok(())
}

pub(crate) fn names(args: &AdminArgs) -> CliResult {
    let client = AdminClient::new(args)?;
    if print_json(args, &client, "/api/v1/names")? {
        return Ok(());
    }
    let names: Vec<NameEntry> = client.get("/api/v1/names")?;
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|n| vec![n.name.clone(), n.node.clone(), n.actor.clone()])
        .collect();
    print!("{}", render(&["NAME", "NODE", "ACTOR"], &rows));
    Ok(())
}

pub(crate) fn locks(args: &AdminArgs) -> CliResult {
    let client = AdminClient::new(args)?;
    if print_json(args, &client, "/api/v1/locks")? {
        return Ok(());
    }
    let locks: Vec<LockEntry> = client.get("/api/v1/locks")?;
    let rows: Vec<Vec<String>> = locks
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.holder.clone().unwrap_or_else(|| "-".into()),
                l.token.to_string(),
                if l.waiters.is_empty() {
                    "-".into()
                } else {
                    l.waiters.join(", ")
                },
            ]
        })
        .collect();
    print!("{}", render(&["LOCK", "HOLDER", "TOKEN", "WAITERS"], &rows));
    Ok(())
}

/// The first character of `token` that an HTTP header cannot carry (it carries visible ASCII
/// and spaces), where the admin token travels.
pub(crate) fn not_for_a_header(token: &str) -> Option<char> {
    token.chars().find(|c| !c.is_ascii_graphic() && *c != ' ')
}

/// Reads an app spec, at most as large as the admin API takes.
fn read_spec(file: &Path) -> Result<String, String> {
    use std::io::Read;
    let max = ensemble::admin::MAX_BODY;
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(max as u64 + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read app spec {}: {e}", file.display()))?;
    if text.len() > max {
        return Err(format!(
            "app spec {} is larger than the {max} bytes the admin API takes; nothing was deployed",
            file.display()
        ));
    }
    Ok(text)
}

pub(crate) fn app_deploy(args: &AdminArgs, file: &Path, wait: Option<u64>) -> CliResult {
    let text = read_spec(file)?;
    // Checked here first, so a mistake in the file is reported as one whether or not a node
    // is reachable. The node parses the body the same way, so this is also the spec as it
    // stores it, to know when its copy of the registry shows this deployment rather than the
    // one before it.
    let deployed = AppSpec::from_toml(&text).map_err(|e| {
        format!(
            "app spec {}: {e}; nothing was deployed (checked by this ensemble, version {}: a \
             field it does not know may be one of a later version)",
            file.display(),
            env!("CARGO_PKG_VERSION")
        )
    })?;
    let client = AdminClient::new(args)?;
    let answer = client
        .call(
            "POST",
            "/api/v1/apps",
            Some(("application/toml", text.clone())),
        )
        .map_err(|e| format!("app spec {}: {e}", file.display()))?;
    let change: AppChange = client.decode("/api/v1/apps", &answer)?;
    eprintln!("deployed app {} from {}", change.app, file.display());
    let Some(wait_secs) = wait else {
        return Ok(());
    };
    // Wait until every role runs its count, saying what changed as it goes.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(wait_secs);
    let mut last = String::new();
    loop {
        let apps: Vec<AppEntry> = client.get("/api/v1/apps")?;
        let entry = apps.iter().find(|a| a.spec.name == change.app);
        let (line, done) = progress(entry, &deployed, &client.base);
        if line != last {
            eprintln!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
            last = line;
        }
        if done {
            println!(
                "app {} running ({last}) after {:.1} s",
                change.app,
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "app {} did not reach its instance counts in {wait_secs} s: {last} (see `ensemble app list`; the app stays deployed)",
                change.app
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How far the deployment of `deployed` has come, as `entry` (the node's listing of the app)
/// shows it: a line to print, and whether it is done. It is done once the node lists the
/// deployed spec itself (not the one it replaced) and every role runs exactly its wanted
/// count, or, where the controller reports it cannot place them all, at least the role's
/// `min_instances`.
fn progress(entry: Option<&AppEntry>, deployed: &AppSpec, node: &str) -> (String, bool) {
    let Some(entry) = entry else {
        return (
            format!(
                "waiting for the node at {node} to list app {}",
                deployed.name
            ),
            false,
        );
    };
    if entry.spec != *deployed {
        return (
            format!(
                "waiting for the node at {node} to list the new spec of app {} (it lists the one before)",
                deployed.name
            ),
            false,
        );
    }
    let Some(status) = &entry.status else {
        return ("waiting for the app controller".to_owned(), false);
    };
    let mut done = !status.roles.is_empty();
    let parts: Vec<String> = status
        .roles
        .iter()
        .map(|r| {
            let running = r.running_total();
            let min = deployed
                .roles
                .iter()
                .find(|spec| spec.name == r.name)
                .map_or(r.wanted, |spec| spec.min());
            let accepted = running < r.wanted && running >= min && r.lacks_room();
            done &= running == r.wanted || accepted;
            let problem = r
                .problem
                .as_ref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default();
            format!("{} {running}/{}{problem}", r.name, r.wanted)
        })
        .collect();
    (parts.join(", "), done)
}

pub(crate) fn app_list(args: &AdminArgs) -> CliResult {
    let client = AdminClient::new(args)?;
    if print_json(args, &client, "/api/v1/apps")? {
        return Ok(());
    }
    let apps: Vec<AppEntry> = client.get("/api/v1/apps")?;
    let mut rows = Vec::new();
    for app in &apps {
        for role in &app.spec.roles {
            let status = app
                .status
                .as_ref()
                .and_then(|s| s.roles.iter().find(|r| r.name == role.name));
            rows.push(vec![
                app.spec.name.clone(),
                role.name.clone(),
                status.map_or("-".into(), |s| {
                    format!("{}/{}", s.running_total(), s.wanted)
                }),
                status.map_or(String::new(), |s| {
                    join_map(s.running.iter().map(|(node, n)| format!("{node}:{n}")))
                }),
                status.and_then(|s| s.problem.clone()).unwrap_or_default(),
            ]);
        }
    }
    print!(
        "{}",
        render(&["APP", "ROLE", "RUNNING", "NODES", "PROBLEM"], &rows)
    );
    Ok(())
}

pub(crate) fn app_remove(args: &AdminArgs, name: &str) -> CliResult {
    if !ensemble::supervisor::app::is_app_name(name) {
        return Err(format!(
            "{name:?} is not an app name: app names are 1 or more ASCII letters, digits, '-', '_' or '.' (see `ensemble app list`)"
        ));
    }
    let client = AdminClient::new(args)?;
    let path = format!("/api/v1/apps/{name}");
    let answer = client.call("DELETE", &path, None)?;
    let change: AppChange = client.decode(&path, &answer)?;
    if change.changed {
        println!("removed app {name}: its instances are being stopped");
        Ok(())
    } else {
        Err(format!(
            "no app named {name} is deployed (see `ensemble app list`)"
        ))
    }
}

/// How long `voters move` waits for the node's answer. The node answers first: it bounds
/// the move by the registry's bound for it (a new voter's catch-up, 10 s, and a request
/// timeout, 5 s by default) and its admin server's request timeout (30 s by default), both
/// configurable; this only keeps the command from waiting for ever on a node that hangs.
const MOVE_TIMEOUT: Duration = Duration::from_secs(300);

/// How often `voters move` says it is still waiting.
const MOVE_PROGRESS: Duration = Duration::from_secs(2);

pub(crate) fn voters_move(args: &AdminArgs, from: &str, to: &str) -> CliResult {
    if from == to {
        return Err(format!(
            "node {from} was named as both the voter to move from and the node to move to: name \
             two nodes (see `ensemble status` for the voters)"
        ));
    }
    let client = AdminClient::waiting(args, MOVE_TIMEOUT)?;
    let path = "/api/v1/voters/move";
    let body = serde_json::to_string(&VoteMoveRequest {
        from: from.to_owned(),
        to: to.to_owned(),
    })
    .expect("two strings encode as JSON");
    eprintln!("moving the registry vote of node {from} to node {to}");
    let started = Instant::now();
    let (done, answered) = std::sync::mpsc::channel();
    let base = client.base.clone();
    std::thread::spawn(move || {
        let _ = done.send(client.call("POST", path, Some(("application/json", body))));
    });
    let answer = loop {
        match answered.recv_timeout(MOVE_PROGRESS) {
            Ok(answer) => break answer,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => eprintln!(
                "[{:>5.1}s] still moving: node {to} is caught up with the registry's log before \
                 it takes the vote (or the move waits for another change of the voters)",
                started.elapsed().as_secs_f64()
            ),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(format!(
                    "POST {base}{path}: the request ended without an answer"
                ));
            }
        }
    }
    .map_err(|e| {
        format!(
            "{e} (if the node took the request, the move may still finish: see `ensemble status`)"
        )
    })?;
    let moved: VoteMoved = serde_json::from_str(&answer).map_err(|e| {
        format!(
            "{base}{path} answered a document this ensemble does not understand ({e}); is the node \
             another version?"
        )
    })?;
    let voters = moved.voters.map_or_else(
        || "could not be read after it (see `ensemble status`)".to_owned(),
        |voters| format!("are {}", voters.join(", ")),
    );
    println!(
        "the registry vote of node {} moved to node {} in {:.1} s; the voters {voters}",
        moved.from,
        moved.to,
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}

/// How long `voters count` waits, for each voter to add or remove, until the voters number
/// what was asked: a new voter's catch-up (10 s by default) and its change.
const COUNT_WAIT_PER_CHANGE: Duration = Duration::from_secs(15);

/// How often `voters count` reads the voters while it waits.
const COUNT_POLL: Duration = Duration::from_millis(250);

pub(crate) fn voters_count(args: &AdminArgs, count: usize) -> CliResult {
    let client = AdminClient::new(args)?;
    let path = "/api/v1/voters/count";
    let body = serde_json::to_string(&VoterCountRequest { count }).expect("a number encodes");
    eprintln!("setting the registry's voter count to {count}");
    if count % 2 == 0 {
        eprintln!(
            "note: {count} voters survive no more lost voters than {} (a majority of {count} is \
             {}){}",
            count - 1,
            count / 2 + 1,
            if count == 2 {
                "; with two, neither may be lost"
            } else {
                ""
            }
        );
    }
    let started = Instant::now();
    let answer = client.call("POST", path, Some(("application/json", body)))?;
    let set: VoterCountSet = client.decode(path, &answer)?;
    let mut voters = set.voters.unwrap_or_default();
    // One change per voter to add or remove; unknown voters: as many as could be asked.
    let changes = if voters.is_empty() {
        ensemble::registry::MAX_VOTERS as usize
    } else {
        voters.len().abs_diff(count)
    };
    let deadline = Instant::now() + COUNT_WAIT_PER_CHANGE * (changes as u32 + 1);
    let mut said = Instant::now();
    // Read twice in a row at the count: while a change is half made, the voters of both
    // configurations count, and growing to the count shows it a moment before it is done.
    let mut at_count = 0;
    loop {
        if voters.len() == count {
            at_count += 1;
            if at_count == 2 {
                break;
            }
        } else {
            at_count = 0;
        }
        let growing = voters.len() < count;
        if at_count == 0 && Instant::now() >= deadline {
            let now = format!("{} voters now ({})", voters.len(), voters.join(", "));
            if growing {
                println!(
                    "the registry's voter count is set to {count}; it has {now}: the leader \
                     gives votes only to members that are up, have a session and are not \
                     labelled registry.voter=no, and goes on as such nodes join (see \
                     `ensemble members` and `ensemble status`)"
                );
                return Ok(());
            }
            return Err(format!(
                "the registry's voter count is set to {count}, but it still has {now} after \
                 {:.0} s: a voter gives its vote up only once a majority of the voters before \
                 and after the change answer; are voters down? (see `ensemble status`)",
                started.elapsed().as_secs_f64()
            ));
        }
        if at_count == 0 && said.elapsed() >= MOVE_PROGRESS {
            said = Instant::now();
            let how = if growing {
                "adds one at a time, each caught up with the log first"
            } else {
                "removes one at a time"
            };
            eprintln!(
                "[{:>5.1}s] {} of {count} voters ({}): the leader {how}",
                started.elapsed().as_secs_f64(),
                voters.len(),
                voters.join(", ")
            );
        }
        std::thread::sleep(COUNT_POLL);
        // A status whose read of the voters failed (an election) shows none: read again.
        let status: NodeStatus = client.get("/api/v1/status")?;
        if !status.registry.voters.is_empty() {
            voters = status.registry.voters;
        }
    }
    println!(
        "the registry keeps {count} voter{}: {} ({:.1} s)",
        if count == 1 { "" } else { "s" },
        voters.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn join_map(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ensemble::supervisor::app::{AppStatus, RoleStatus};

    use super::*;

    const SPEC: &str = "name = \"kv\"\n[[roles]]\nname = \"worker\"\nmodule = \"kv.worker\"\n\
                        instances = 4\nmin_instances = 2\n";

    fn entry(spec: &AppSpec, running: usize, problem: Option<&str>) -> AppEntry {
        AppEntry {
            spec: spec.clone(),
            status: Some(AppStatus {
                name: spec.name.clone(),
                roles: vec![RoleStatus {
                    name: "worker".into(),
                    wanted: spec.roles[0].instances,
                    running: BTreeMap::from([("n1".to_owned(), running)]),
                    problem: problem.map(str::to_owned),
                }],
            }),
        }
    }

    #[test]
    fn a_deployment_is_done_at_its_count_or_at_its_minimum_when_no_more_can_be_placed() {
        let spec = AppSpec::from_toml(SPEC).unwrap();
        let node = "http://127.0.0.1:7070";
        assert!(progress(Some(&entry(&spec, 4, None)), &spec, node).1);
        // More than wanted: instances still stopping after a scale-down.
        assert!(!progress(Some(&entry(&spec, 5, None)), &spec, node).1);
        // At the minimum while the rest are still being started: not yet.
        assert!(!progress(Some(&entry(&spec, 2, None)), &spec, node).1);
        // At the minimum and the controller says no more fit: accepted.
        let short = entry(&spec, 2, Some("2 of 4 instances cannot be placed"));
        assert!(progress(Some(&short), &spec, node).1);
        // Under the minimum: never.
        let under = entry(&spec, 1, Some("3 of 4 instances cannot be placed"));
        assert!(!progress(Some(&under), &spec, node).1);
        // At the minimum for another reason than room: not done, whatever the count.
        for other in [
            "gave up: more than 3 restarts within 60 s (the last because ...)",
            "2 of 4 instances wait for their global name (2 placed, at least 2 wanted): ...",
            "gave up: more than 3 restarts within 60 s (the last because 1 of 2 instances cannot be placed)",
        ] {
            let stuck = entry(&spec, 2, Some(other));
            assert!(!progress(Some(&stuck), &spec, node).1, "{other}");
        }
        // Another spec listed (the one before), whatever its counts.
        let before = AppSpec::from_toml(&SPEC.replace("instances = 4", "instances = 2")).unwrap();
        let (line, done) = progress(Some(&entry(&before, 2, None)), &spec, node);
        assert!(!done && line.contains(node), "{line}");
        let (line, done) = progress(None, &spec, node);
        assert!(!done && line.contains("app kv"), "{line}");
    }
}
