//! The `ensemble` command: run a node, run the demo, look at a cluster, deploy apps, make
//! certificates. See `ensemble --help`, and `docs/operations.md` of the repository.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
