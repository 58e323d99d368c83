//! The protocol of the actor each child node runs under the name `echo`.

use ensemble::prelude::*;
use serde::{Deserialize, Serialize};

/// What the echo actor does.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum EchoMsg {
    /// Reply with the text.
    Echo(String, ReplyTo<String>),
    /// Send `Item(0..count)` to `to`, in order.
    Flood { count: u64, to: ActorRef<SinkMsg> },
    /// End with this error.
    Crash(String),
    /// Keep the reply handle and never answer.
    Hang(ReplyTo<String>),
    /// Reply with the text repeated this many times.
    Repeat(String, usize, ReplyTo<String>),
    /// Reply with the handles kept by `Hang` so far (and keep them no longer).
    GiveBack(ReplyTo<Vec<ReplyTo<String>>>),
}

/// What a sink takes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum SinkMsg {
    Item(u64),
}

/// Some other protocol, to be refused.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum OtherMsg {
    Hello(ReplyTo<String>),
}

pub(crate) struct Echo {
    /// Put in front of every echoed text.
    pub(crate) prefix: String,
    pub(crate) hung: Vec<ReplyTo<String>>,
}

impl Echo {
    pub(crate) fn new(prefix: String) -> Self {
        Self {
            prefix,
            hung: Vec::new(),
        }
    }
}

impl Actor for Echo {
    type Msg = EchoMsg;

    async fn handle(&mut self, msg: EchoMsg, _ctx: &mut Context<Self>) -> ActorResult {
        match msg {
            EchoMsg::Echo(text, reply) => {
                let _ = reply.send(format!("{}{text}", self.prefix));
            }
            EchoMsg::Flood { count, to } => {
                for i in 0..count {
                    to.tell(SinkMsg::Item(i)).await?;
                }
            }
            EchoMsg::Crash(why) => return Err(ActorError::new(why)),
            EchoMsg::Hang(reply) => self.hung.push(reply),
            EchoMsg::Repeat(text, times, reply) => {
                let _ = reply.send(text.repeat(times));
            }
            EchoMsg::GiveBack(reply) => {
                let _ = reply.send(std::mem::take(&mut self.hung));
            }
        }
        Ok(())
    }
}
