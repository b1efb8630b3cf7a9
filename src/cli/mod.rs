//! The command-line tree. Each subcommand has one `*Args` struct that is resolved into
//! validated settings before anything runs; dispatch is a plain `match`.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::cancel::Cancel;
use crate::disk::SourceImage;
use crate::oci::reference::ImageRef;
use crate::registry::{RegistryOptions, ResolvedImage};

pub(crate) mod boot_test;
pub(crate) mod disk;
pub(crate) mod ignition;
pub(crate) mod inspect;
pub(crate) mod install_config;
pub(crate) mod install_kit;
pub(crate) mod iso;
pub(crate) mod manifests;
pub(crate) mod pull;
pub(crate) mod registry_args;
pub(crate) mod shell;

#[derive(Debug, Parser)]
#[command(name = "layerboot", version, about = "Boot your custom layered CoreOS/RHCOS image from cluster installation on", long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Quiet: no progress bars and no informational lines (what was written, notes, next
    /// steps); warnings, errors and the requested output still appear.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a first-boot disk image (qemu qcow2, metal, metal4k) from the layered image itself.
    Disk(disk::DiskArgs),
    /// Customize, show and reset CoreOS live ISOs (coreos-installer compatible)
    Iso(iso::IsoArgs),
    /// Boot an ISO, disk image or kernel in QEMU and check what booted.
    BootTest(boot_test::BootTestArgs),
    /// Ignition configs: OpenShift pointer configs, standalone first-boot rebase.
    Ignition(ignition::IgnitionArgs),
    /// Install-time manifests (MachineConfig or MachineOSConfig, MachineConfigPools) that put
    /// the layered image on the nodes of the given pools.
    Manifests(manifests::ManifestsArgs),
    /// The install-config.yaml pieces the layered image needs (pullSecret, trust bundle,
    /// mirrors, bare-metal OS images): printed, or patched into the file in place.
    InstallConfig(install_config::InstallConfigArgs),
    /// Manifests, install-config pieces and pointer configs into an installer directory
    /// in one go (as far as its stage allows), with a summary and the next commands.
    InstallKit(install_kit::InstallKitArgs),
    /// Show what an image is: digest and pinned pull spec, platform, ostree labels,
    /// layers, and whether it can boot a node.
    Inspect(inspect::InspectArgs),
    /// Copy an image into an OCI layout or archive, every blob verified while streaming.
    Pull(pull::PullArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(shell::CompletionArgs),
    /// Write the man pages (layerboot.1 and one per subcommand) into a directory.
    Man(shell::ManArgs),
}

/// Run the parsed command line. `Ok(code)` carries a deliberate non-zero exit (e.g. a
/// boot test that failed); `Err` is an error to print on one line.
///
/// `cancel` is the process's one cancellation token ([`crate::cancel`]). Commands with
/// long blocking work (disk, iso, boot-test) take it and stop themselves, cleaning up
/// first; the others are async throughout and are dropped at the signal, which removes
/// their temporary files (blocking pieces they started check the token too).
pub async fn run(cli: Cli, cancel: &Cancel) -> Result<ExitCode> {
    let done = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    let reg_cancel = cancel.clone();
    let quiet = cli.quiet;
    crate::output::set_quiet(quiet);
    match cli.command {
        Command::Disk(mut args) => {
            args.quiet = quiet;
            disk::run(args, cancel).await
        }
        Command::Iso(args) => iso::run(args, cancel).await,
        Command::BootTest(args) => boot_test::run(args, cancel).await,
        Command::Ignition(a) => cancel
            .run(ignition::run(a))
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Manifests(a) => cancel
            .run(manifests::run(a))
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::InstallConfig(a) => done(install_config::run(a)),
        Command::InstallKit(a) => done(cancel.run(install_kit::run(a)).await),
        Command::Inspect(mut a) => {
            a.quiet = quiet;
            done(cancel.run(inspect::run(a)).await)
        }
        Command::Pull(mut a) => {
            a.quiet = quiet;
            done(cancel.run(pull::run(a, reg_cancel)).await)
        }
        Command::Completion(a) => done(shell::run_completion(a)),
        Command::Man(a) => done(shell::run_man(a)),
    }
}

/// The image as a local layout whose files can be read: an `oci:` layout in place,
/// anything else pulled (verified) into the shared cache.
pub(crate) async fn local_source(
    image: &ImageRef,
    resolved: &ResolvedImage,
    opts: &RegistryOptions,
    quiet: bool,
) -> Result<SourceImage> {
    use anyhow::Context;
    if let ImageRef::OciDir { path, tag } = image {
        return SourceImage::open(path, tag.as_deref());
    }
    let pulled = crate::registry::pull::pull_resolved_to_cache(resolved, opts, quiet).await?;
    let dir = pulled
        .layout_dir
        .as_deref()
        .context("the image cache is a directory layout")?;
    let source = SourceImage::open(dir, Some(&pulled.ref_name))?;
    Ok(match &pulled.pinned {
        Some(pinned) => source.with_registry_origin(&pinned.to_string()),
        None => source,
    })
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
