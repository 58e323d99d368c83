//! The dashboard in a real browser: headless Chromium, driven through chromedriver (WebDriver),
//! opens the admin server of a two-node in-process cluster and must show its members, its
//! supervision trees, its app, names and locks, and follow a change live. A screenshot is kept
//! in `target/test-artifacts/dashboard.png`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`). Without them the test says it is skipped, or fails when
//! `ENSEMBLE_REQUIRE_BROWSER=1` (as CI runs it).

mod browser;
#[allow(dead_code)]
#[path = "../admin/cluster.rs"]
mod cluster;

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::Value;

use browser::{Browser, ChromeDriver};
use cluster::TestCluster;

/// The admin token of the cluster's nodes: the page gets it from its address.
const TOKEN: &str = "dashboard-test-token";

/// How long the page may take to show what is waited for.
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_in_chromium() {
    let Some(browser) = Browser::find() else {
        return;
    };
    let cluster = TestCluster::start(Some(TOKEN)).await;
    let profile = tempfile::Builder::new()
        .prefix("ensemble-dashboard-profile-")
        .tempdir()
        .expect("profile dir");
    let driver = ChromeDriver::start(&browser).expect("chromedriver");
    let client = driver
        .session(&browser, profile.path())
        .await
        .expect("WebDriver session");

    // Whatever happens, the session is closed (and Chromium with it) before judging.
    let outcome = drive(&client, &cluster).await;
    let _ = client.close().await;
    drop(driver);
    cluster.stop().await;
    let screenshot = outcome.unwrap_or_else(|e| panic!("{e}"));
    println!("dashboard screenshot: {}", screenshot.display());
}

/// Goes through the page; answers where the screenshot is.
async fn drive(client: &Client, cluster: &TestCluster) -> Result<PathBuf, String> {
    let base = cluster.first().url();

    // Without the token, the page says how to pass it.
    client
        .goto(&format!("{base}/"))
        .await
        .map_err(|e| format!("cannot open {base}/: {e}"))?;
    wait_for(
        client,
        "the page to ask for the token",
        &[
            "#connection[data-state=\"refused\"]",
            "#notice:not([hidden])",
        ],
    )
    .await?;
    let notice = text(client, "#notice").await?;
    if !notice.contains("#token=") {
        return Err(format!(
            "the notice does not say how to pass the token: {notice:?}"
        ));
    }

    // A token with a stray % (not percent-encoding): the page still runs, and says how to
    // write it.
    client
        .goto(&format!("{base}/#token=50%off"))
        .await
        .map_err(|e| format!("cannot open the dashboard with a malformed token: {e}"))?;
    client
        .refresh()
        .await
        .map_err(|e| format!("cannot reload the page: {e}"))?;
    wait_for(
        client,
        "the page to say the token in its address is malformed",
        &[
            "#connection[data-state=\"refused\"]",
            "#notice:not([hidden])",
        ],
    )
    .await?;
    let notice = text(client, "#notice").await?;
    if !(notice.contains("percent-encoding") && notice.contains("%25")) {
        return Err(format!(
            "the notice does not say the token is malformed: {notice:?}"
        ));
    }

    // With it (in the address's fragment), the cluster.
    client
        .goto(&format!("{base}/#token={TOKEN}"))
        .await
        .map_err(|e| format!("cannot open the dashboard with its token: {e}"))?;
    client
        .refresh()
        .await
        .map_err(|e| format!("cannot reload the page: {e}"))?;
    let everything = [
        "#connection[data-state=\"live\"]",
        "#notice[hidden]",
        "#node[data-node=\"n1\"]",
        "#members tr[data-node=\"n1\"][data-status=\"self\"][data-session=\"open\"][data-voter=\"yes\"]",
        "#members tr[data-node=\"n2\"][data-status=\"up\"][data-session=\"open\"][data-voter=\"yes\"]",
        "#trees .tree[data-supervisor=\"services\"] > .children > li[data-child=\"cache\"][data-state=\"running\"]",
        "#trees .tree[data-supervisor=\"services\"] li[data-child=\"storage\"] .tree[data-supervisor=\"storage\"] li[data-child=\"writer\"][data-state=\"running\"]",
        "#apps [data-app=\"probe\"] tr[data-role=\"main\"][data-state=\"ok\"]",
        "#apps [data-app=\"probe\"] tr[data-role=\"worker\"][data-state=\"ok\"]",
        "#names tr[data-name=\"probe.main\"]",
        "#locks tr[data-lock=\"jobs.lock\"][data-held=\"yes\"]",
    ];
    wait_for(client, "the page to show the cluster", &everything).await?;

    // What a reader sees, not only the markup.
    let n2 = text(client, "#members tr[data-node=\"n2\"]").await?;
    if !(n2.contains("n2") && n2.contains("up") && n2.contains("open") && n2.contains("voter")) {
        return Err(format!("member n2 reads {n2:?}"));
    }
    let trees = text(client, "#trees").await?;
    for word in ["services", "cache", "storage", "writer", "running"] {
        if !trees.contains(word) {
            return Err(format!("the trees do not show {word:?}: {trees:?}"));
        }
    }
    let (n1, n2) = (cluster.nodes[0].node.id(), cluster.nodes[1].node.id());
    let lock =
        format!("#locks tr[data-lock=\"jobs.lock\"][data-holder=\"{n2}\"] [data-waiter=\"{n1}\"]");
    wait_for(client, "the lock's holder and waiter", &[&lock]).await?;
    let lock = text(client, "#locks tr[data-lock=\"jobs.lock\"]").await?;
    if !(lock.contains("n2") && lock.contains("n1")) {
        return Err(format!("the lock's row reads {lock:?}"));
    }

    // The voters, and an operator's count of them once set (live too).
    wait_for(
        client,
        "two voters at the count of the node settings",
        &["#voters[data-voters=\"2\"][data-count=\"settings\"]"],
    )
    .await?;
    cluster.nodes[0]
        .registry
        .set_voter_count(2)
        .await
        .map_err(|e| format!("cannot set the voter count: {e}"))?;
    wait_for(
        client,
        "two voters at the count set",
        &["#voters[data-voters=\"2\"][data-count=\"2\"]"],
    )
    .await?;
    let voters = text(client, "#voters").await?;
    if !voters.contains("count 2 set") {
        return Err(format!("the voters read {voters:?}"));
    }

    // Live: a child stopped and started again shows without reloading the page.
    cluster
        .supervisor
        .terminate_child("cache")
        .await
        .map_err(|e| format!("cannot stop child cache: {e}"))?;
    wait_for(
        client,
        "child cache to show stopped",
        &["#trees li[data-child=\"cache\"][data-state=\"stopped\"]"],
    )
    .await?;
    cluster
        .supervisor
        .restart_child("cache")
        .await
        .map_err(|e| format!("cannot restart child cache: {e}"))?;
    wait_for(client, "the cluster again", &everything).await?;

    let png = client
        .screenshot()
        .await
        .map_err(|e| format!("cannot take a screenshot: {e}"))?;
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("dashboard.png");
    std::fs::write(&path, png).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Waits until every selector matches an element, polling; the error lists those that never
/// did and what the page said.
async fn wait_for(client: &Client, what: &str, selectors: &[&str]) -> Result<(), String> {
    const MISSING: &str = "return arguments[0].filter((s) => !document.querySelector(s));";
    let wanted = Value::from(selectors.to_vec());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let missing = client
            .execute(MISSING, vec![wanted.clone()])
            .await
            .map_err(|e| format!("cannot run a script in the page: {e}"))?;
        if missing.as_array().is_some_and(Vec::is_empty) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            let notice = client
                .execute(
                    "return [document.getElementById('notice').textContent, document.body.dataset.refreshes];",
                    vec![],
                )
                .await
                .unwrap_or_default();
            return Err(format!(
                "timed out after {DEADLINE:?} waiting for {what}: no element matches {missing}; page notice and refreshes: {notice}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text an element shows.
async fn text(client: &Client, selector: &str) -> Result<String, String> {
    client
        .find(Locator::Css(selector))
        .await
        .map_err(|e| format!("no element {selector}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("cannot read the text of {selector}: {e}"))
}

/// `target/test-artifacts` (under `CARGO_TARGET_DIR` when set).
fn artifacts_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| manifest.join("target"), |dir| manifest.join(dir));
    target.join("test-artifacts")
}
