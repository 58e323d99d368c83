//! A small supervision tree surviving crashes.
//!
//! ```text
//! root (one-for-one)
//! ├── cache            worker
//! └── db (rest-for-one)
//!     ├── connection   worker
//!     └── queries      worker, depends on the connection
//! ```
//!
//! The connection crashes: rest-for-one restarts it and the queries after it. Then the cache
//! crashes: one-for-one restarts the cache alone. The tree is printed before and after.
//!
//! Run: `cargo run --example supervision`

use std::time::Duration;

use ensemble::prelude::*;
use ensemble::supervisor::{ChildSpec, Strategy, SupervisorRef, SupervisorSpec, TreeSnapshot};

/// A worker that crashes when told to.
struct Component(&'static str);

enum Cmd {
    Crash,
}

impl Actor for Component {
    type Msg = Cmd;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        println!("  {} started as {}", self.0, ctx.id());
        Ok(())
    }

    async fn handle(&mut self, Cmd::Crash: Cmd, _ctx: &mut Context<Self>) -> ActorResult {
        Err(ActorError::new(format!("{} lost its socket", self.0)))
    }
}

fn print_tree(tree: &TreeSnapshot, depth: usize) {
    let indent = "  ".repeat(depth);
    println!(
        "{indent}{} ({:?}, {})",
        tree.name, tree.strategy, tree.actor
    );
    for child in &tree.children {
        println!(
            "{indent}  - {} {:?} restarts={} {}",
            child.id,
            child.state,
            child.restarts,
            child.actor.as_deref().unwrap_or("-")
        );
        if let Some(sub) = &child.tree {
            print_tree(sub, depth + 2);
        }
    }
}

async fn crash(sup: &SupervisorRef, id: &str) -> Result<(), Box<dyn std::error::Error>> {
    let children = sup.which_children().await?;
    let child = children
        .iter()
        .find(|c| c.id == id)
        .ok_or("no such child")?;
    let actor = child.actor.as_ref().ok_or("not running")?;
    println!("crashing {id} ({})", actor.id());
    actor
        .downcast::<Cmd>()
        .ok_or("not a component")?
        .tell(Cmd::Crash)
        .await?;
    actor.wait_for_exit().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = Node::new(NodeConfig::new("example"))?;
    let db = SupervisorSpec::new("db")
        .strategy(Strategy::RestForOne)
        .intensity(3, Duration::from_secs(10))
        .child(ChildSpec::worker("connection", || Component("connection")))
        .child(ChildSpec::worker("queries", || Component("queries")));
    let root_spec = SupervisorSpec::new("root")
        .intensity(3, Duration::from_secs(10))
        .child(ChildSpec::worker("cache", || Component("cache")))
        .child(ChildSpec::supervisor("db", db));

    println!("starting the tree:");
    let root = SupervisorRef::start(&node, root_spec).await?;
    print_tree(&root.snapshot().await?, 0);

    let db = SupervisorRef::from_untyped(
        root.which_children().await?[1]
            .actor
            .as_ref()
            .ok_or("db is not running")?,
    )
    .ok_or("db is not a supervisor")?;
    crash(&db, "connection").await?;
    crash(&root, "cache").await?;

    // Requests queue behind the restarts, so this shows the tree after them.
    println!("the tree after two crashes:");
    print_tree(&root.snapshot().await?, 0);

    node.shutdown().await;
    Ok(())
}
