//! Two actors play ping-pong; then one crashes and the other, monitoring it, hears why.
//!
//! Run: `cargo run --example ping_pong`

use std::time::Duration;

use ensemble::prelude::*;

/// Answers every ping with a pong; crashes on request.
struct Pong;

enum PongMsg {
    Ping { n: u32, from: ActorRef<PingMsg> },
    Crash,
}

impl Actor for Pong {
    type Msg = PongMsg;

    async fn handle(&mut self, msg: PongMsg, _ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            PongMsg::Ping { n, from } => {
                println!("pong: got ping {n}");
                from.tell(PingMsg::Pong(n)).await?;
            }
            PongMsg::Crash => return Err(ActorError::new("asked to crash")),
        }
        Ok(())
    }
}

/// Serves `rounds` pings to a `Pong` it spawns and monitors, then reports.
struct Ping {
    rounds: u32,
    pong: Option<ActorRef<PongMsg>>,
    done: Option<ReplyTo<String>>,
}

enum PingMsg {
    Play(ReplyTo<String>),
    Pong(u32),
}

impl Actor for Ping {
    type Msg = PingMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> ActorResult {
        let pong = ctx.spawn(Pong)?;
        ctx.monitor(&pong);
        self.pong = Some(pong);
        Ok(())
    }

    async fn handle(&mut self, msg: PingMsg, ctx: &mut Context<Self>) -> ActorResult {
        let pong = self.pong.as_ref().expect("spawned in started");
        match msg {
            PingMsg::Play(done) => {
                self.done = Some(done);
                pong.tell(PongMsg::Ping {
                    n: 1,
                    from: ctx.myself().clone(),
                })
                .await?;
            }
            PingMsg::Pong(n) if n < self.rounds => {
                println!("ping: got pong {n}");
                pong.tell(PongMsg::Ping {
                    n: n + 1,
                    from: ctx.myself().clone(),
                })
                .await?;
            }
            PingMsg::Pong(n) => {
                println!("ping: got pong {n}; asking pong to crash");
                pong.tell(PongMsg::Crash).await?;
            }
        }
        Ok(())
    }

    async fn on_down(&mut self, down: Down, _ctx: &mut Context<Self>) -> ActorResult {
        let report = format!("pong {} ended: {}", down.actor, down.reason);
        if let Some(done) = self.done.take() {
            let _ = done.send(report);
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = Node::new(NodeConfig::new("example"))?;
    let ping = node
        .start(Ping {
            rounds: 3,
            pong: None,
            done: None,
        })
        .await?;
    let report = ping.ask(PingMsg::Play, Duration::from_secs(5)).await?;
    println!("ping: {report}");
    let shutdown = node.shutdown().await;
    println!(
        "node shut down: {} actors stopped, {} killed",
        shutdown.stopped, shutdown.killed
    );
    Ok(())
}
