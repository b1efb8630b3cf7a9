//! The command-line tree. Each subcommand has one `*Args` struct that is resolved into
//! validated settings before anything runs; dispatch is a plain `match`.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub mod boot_test;
pub mod ignition;
pub mod inspect;
pub mod pull;
pub mod registry_args;

#[derive(Debug, Parser)]
#[command(name = "layerboot", version, about = "Boot your custom layered CoreOS/RHCOS image from cluster installation on", long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot an ISO, disk image or kernel in QEMU and check what booted.
    BootTest(boot_test::BootTestArgs),
    /// Ignition configs: OpenShift pointer configs, standalone first-boot rebase.
    Ignition(ignition::IgnitionArgs),
    /// Show what an image is: digest and pinned pull spec, platform, ostree labels,
    /// layers, and whether it can boot a node.
    Inspect(inspect::InspectArgs),
    /// Copy an image into an OCI layout or archive, every blob verified while streaming.
    Pull(pull::PullArgs),
}

/// Run the parsed command line. `Ok(code)` carries a deliberate non-zero exit (e.g. a
/// boot test that failed); `Err` is an error to print on one line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::BootTest(args) => boot_test::run(args).await,
        Command::Ignition(a) => ignition::run(a).map(|()| ExitCode::SUCCESS),
        Command::Inspect(a) => inspect::run(a).await.map(|()| ExitCode::SUCCESS),
        Command::Pull(a) => pull::run(a).await.map(|()| ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
