//! The `ensemble` command line.
//!
//! - `node`: run a node ([`node`]), configured by a TOML file, environment variables and
//!   flags ([`config`]).
//! - `demo`: the guided tour: a local three-node cluster, the example app, a node killed
//!   ([`demo`]).
//! - `status`, `members`, `names`, `locks`, `app deploy|list|remove`: ask a node's admin API
//!   ([`client`]).
//! - `cert init|issue`: the cluster CA and node certificates ([`cert`]).
//!
//! Every command prints what it is doing on standard error as it goes and its result on
//! standard output; failures print one `error:` paragraph naming the thing they are about and
//! exit with status 1 (2 for a command line clap refuses).

mod cert;
mod client;
mod config;
mod demo;
mod node;
mod progress;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// What a command failed with: one message, naming what it is about and what to do.
pub(crate) type CliResult = Result<(), String>;

#[derive(Parser)]
#[command(
    name = "ensemble",
    version,
    about = "Ensemble: a distributed actor runtime in the spirit of Erlang/OTP and Akka",
    long_about = "Ensemble: a distributed actor runtime in the spirit of Erlang/OTP and Akka.\n\n\
        Start here: `ensemble demo` runs a three-node cluster on this machine, deploys the \
        example key-value app, kills the node running its master with kill -9, and shows \
        how the cluster recovers.\n\n\
        A real cluster: make a CA and node certificates (`ensemble cert init`, `ensemble cert \
        issue NODE`), start one node per machine (`ensemble node --name n1 ...`), the first \
        without --join and the others joining it, then deploy apps (`ensemble app deploy \
        FILE`) and look at it (`ensemble status`, `members`, `names`, `locks`, or the \
        dashboard on the admin address). `ensemble voters move` moves a registry vote by hand, `ensemble voters count` sets how many there are.",
    after_help = "Each command has its own --help. Docs: docs/operations.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: join (or start) a cluster and serve until Ctrl-C or SIGTERM.
    Node(Box<config::NodeArgs>),
    /// Run the demo: a local 3-node cluster, the kv app, the master's node killed with kill -9.
    Demo(demo::DemoArgs),
    /// Show a node's view of the cluster: itself, the registry, members.
    Status(client::AdminArgs),
    /// List the cluster's members, their liveness and sessions.
    Members(client::AdminArgs),
    /// List the cluster-wide registered names and the actors holding them.
    Names(client::AdminArgs),
    /// List locks and leases: holders, fencing tokens, waiters.
    Locks(client::AdminArgs),
    /// Deploy, list or remove apps.
    #[command(subcommand)]
    App(AppCommand),
    /// Change the registry's voters by hand.
    #[command(subcommand)]
    Voters(VotersCommand),
    /// Make the cluster's CA and node certificates.
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Subcommand)]
enum VotersCommand {
    /// Move the registry vote of one node to another, and wait until it moved (up to about
    /// 15 s: the node that takes it is caught up first). The voters are shown by `ensemble
    /// status`; the node that loses its vote keeps running.
    Move {
        /// The node that votes now, by name.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        from: String,
        /// The node to take its vote, by name: up, with a session, not voting yet, and not
        /// labelled registry.voter=no.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        to: String,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Set how many voters the registry keeps, for the running cluster and its restarts (in
    /// place of each node's registry.voters setting), and wait while the leader adds or
    /// removes them one at a time. Votes go only to members that are up, have a session and
    /// are not labelled registry.voter=no.
    Count {
        /// How many voters: 1 to 9 (3 keep writes going with one voter lost, 5 with two).
        #[arg(value_parser = clap::value_parser!(u32).range(1..=i64::from(ensemble::registry::MAX_VOTERS)))]
        count: u32,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
}

#[derive(Subcommand)]
enum AppCommand {
    /// Deploy an app from its TOML spec (or change a deployed one), and wait until it runs.
    Deploy {
        /// The app spec (TOML; see docs/apps.md).
        file: PathBuf,
        /// Return once the spec is stored, without waiting for the instances.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for every role to reach its instance count, in seconds (1 to a
        /// day; --no-wait not to wait).
        #[arg(long, default_value_t = 60, value_name = "SECONDS",
              value_parser = clap::value_parser!(u64).range(1..=86_400))]
        wait_secs: u64,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// List deployed apps and how many instances of each role run.
    List(client::AdminArgs),
    /// Remove an app: its instances are stopped.
    Remove {
        /// The app's name.
        name: String,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Create the cluster's CA (ca.pem and ca.key) in a directory.
    Init(cert::InitArgs),
    /// Issue a node's certificate (NODE.pem, NODE.key, and a copy of ca.pem) signed by the CA.
    Issue(cert::IssueArgs),
}

/// Runs the command line and returns the exit status.
pub(crate) fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Node(args) => {
            let sub = matches
                .subcommand_matches("node")
                .expect("the node subcommand was parsed");
            node::run(*args, sub)
        }
        Command::Demo(args) => demo::run(args),
        Command::Status(admin) => client::status(&admin),
        Command::Members(admin) => client::members(&admin),
        Command::Names(admin) => client::names(&admin),
        Command::Locks(admin) => client::locks(&admin),
        Command::App(AppCommand::Deploy {
            file,
            no_wait,
            wait_secs,
            admin,
        }) => client::app_deploy(&admin, &file, (!no_wait).then_some(wait_secs)),
        Command::App(AppCommand::List(admin)) => client::app_list(&admin),
        Command::App(AppCommand::Remove { name, admin }) => client::app_remove(&admin, &name),
        Command::Voters(VotersCommand::Move { from, to, admin }) => {
            client::voters_move(&admin, &from, &to)
        }
        Command::Voters(VotersCommand::Count { count, admin }) => {
            client::voters_count(&admin, count as usize)
        }
        Command::Cert(CertCommand::Init(args)) => cert::init(&args),
        Command::Cert(CertCommand::Issue(args)) => cert::issue(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
