//! `ensemble cert init` and `ensemble cert issue NODE`: the cluster's CA and its nodes'
//! certificates, as files (see [`ensemble::transport::certs`]).

use std::path::PathBuf;

use ensemble::transport::certs::ClusterCa;

use super::CliResult;

/// `ensemble cert init`.
#[derive(clap::Args)]
pub(crate) struct InitArgs {
    /// The cluster's name, written into the CA certificate.
    #[arg(long, default_value = "ensemble", value_name = "NAME")]
    cluster: String,
    /// Where to write ca.pem and ca.key.
    #[arg(long, default_value = "certs", value_name = "DIR")]
    dir: PathBuf,
    /// Replace a CA that is there already (every node certificate it issued stops being
    /// trusted by nodes given the new ca.pem).
    #[arg(long)]
    force: bool,
}

/// `ensemble cert issue`.
#[derive(clap::Args)]
pub(crate) struct IssueArgs {
    /// The node's name, as it will be started with `ensemble node --name`.
    node: String,
    /// The directory holding the CA (ca.pem and ca.key).
    #[arg(long, default_value = "certs", value_name = "DIR")]
    ca_dir: PathBuf,
    /// Where to write NODE.pem, NODE.key and ca.pem (default: the CA's directory).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub(crate) fn init(args: &InitArgs) -> CliResult {
    let cert = args.dir.join("ca.pem");
    for file in [&cert, &args.dir.join("ca.key")] {
        if file.exists() && !args.force {
            return Err(format!(
                "{} exists already: a cluster keeps one CA; pass --force to replace it, or pick another --dir",
                file.display()
            ));
        }
    }
    eprintln!("generating a CA for cluster {:?}…", args.cluster);
    let ca = ClusterCa::generate(&args.cluster).map_err(|e| e.to_string())?;
    ca.save(&args.dir).map_err(|e| e.to_string())?;
    println!(
        "wrote {} and {} (keep ca.key off the nodes; issue node certificates with `ensemble cert issue NODE --ca-dir {}`)",
        cert.display(),
        args.dir.join("ca.key").display(),
        args.dir.display()
    );
    Ok(())
}

pub(crate) fn issue(args: &IssueArgs) -> CliResult {
    let ca = ClusterCa::load(&args.ca_dir).map_err(|e| e.to_string())?;
    let cert = ca.issue(&args.node).map_err(|e| e.to_string())?;
    let out = args.out.as_ref().unwrap_or(&args.ca_dir);
    cert.save(out).map_err(|e| e.to_string())?;
    println!(
        "wrote {0}/{1}.pem, {0}/{1}.key and {0}/ca.pem: start the node with `ensemble node --name {1} --certs {0}`",
        out.display(),
        args.node
    );
    Ok(())
}
