//! layerboot-deploy: the ostree deployment step of `layerboot disk`, in a process of its own
//! so that libostree is loaded only when a disk is built (see `layerboot::disk::deploy`).
//! `layerboot disk` runs it; it is not meant to be run by hand. Prints the deployment as JSON.
//!
//! With `--mount-image` it deploys into a filesystem inside the disk image, mounted in a
//! mount namespace of its own, and after the report keeps that namespace (and the mount)
//! alive until its stdin reaches EOF, then unmounts and exits.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use layerboot::disk::deploy::{self, deploy_here, DeployRequest, MountRequest};

#[derive(Parser)]
#[command(
    name = "layerboot-deploy",
    version,
    about = "Deploy a container image into a staged ostree sysroot (internal step of `layerboot disk`)"
)]
struct Args {
    /// Empty directory to become the physical root.
    #[arg(long)]
    sysroot: PathBuf,
    #[arg(long)]
    stateroot: String,
    /// Where ostree-ext reads the image, e.g. ostree-unverified-image:oci:DIR:TAG.
    #[arg(long)]
    source: String,
    /// What the deployment's origin records.
    #[arg(long)]
    target: String,
    /// The image as the user named it (for messages).
    #[arg(long)]
    name: String,
    #[arg(long = "karg")]
    kargs: Vec<String>,
    /// KEY=VALUE for `ostree config set` on the new repo, before the deploy.
    #[arg(long = "repo-config")]
    repo_config: Vec<String>,
    /// Disk image holding the filesystem to mount on --sysroot (in a private mount namespace).
    #[arg(long, requires_all = ["offset", "sizelimit", "boot_dir"])]
    mount_image: Option<PathBuf>,
    /// Byte offset of the filesystem in --mount-image.
    #[arg(long)]
    offset: Option<u64>,
    /// Byte length of the filesystem in --mount-image.
    #[arg(long)]
    sizelimit: Option<u64>,
    /// Directory bind-mounted on <sysroot>/boot.
    #[arg(long)]
    boot_dir: Option<PathBuf>,
    /// Extra mount options for --mount-image.
    #[arg(long, default_value = "")]
    mount_options: String,
}

impl From<Args> for DeployRequest {
    fn from(a: Args) -> Self {
        let mount = match (a.mount_image, a.offset, a.sizelimit, a.boot_dir) {
            (Some(image), Some(offset), Some(size), Some(boot_dir)) => Some(MountRequest {
                image,
                offset,
                size,
                boot_dir,
                options: a.mount_options,
            }),
            _ => None,
        };
        DeployRequest {
            sysroot: a.sysroot,
            stateroot: a.stateroot,
            source_imgref: a.source,
            target_imgref: a.target,
            kargs: a.kargs,
            display_name: a.name,
            mount,
            repo_config: a
                .repo_config
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

fn main() -> ExitCode {
    let req = DeployRequest::from(Args::parse());
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    // Before anything can start a thread (the runtime, glib): unshare needs a single thread.
    let entered = match &req.mount {
        Some(m) => deploy::enter_private_mount_namespace()
            .and_then(|()| deploy::mount_target(m, &req.sysroot))
            .map(|()| true),
        None => Ok(false),
    };
    let result = entered.and_then(|mounted| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let json = rt
            .block_on(deploy_here(&req))
            .and_then(|d| Ok(serde_json::to_string(&d)?));
        // No thread of ours may keep a file open on the filesystem when it is unmounted.
        drop(rt);
        let json = json?;
        println!("{json}");
        if mounted {
            use std::io::Write;
            std::io::stdout().flush()?;
            // The caller works on the tree through /proc/<our pid>/root meanwhile.
            std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())?;
            deploy::unmount_target(&req.sysroot)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent_and_reads_what_layerboot_disk_passes() {
        Args::command().debug_assert();
        let req = DeployRequest {
            sysroot: "/staging/sysroot".into(),
            stateroot: "rhcos".into(),
            source_imgref: "ostree-unverified-image:oci:/cache:layered".into(),
            target_imgref: "ostree-unverified-registry:quay.io/acme/os@sha256:ab".into(),
            kargs: vec!["-dash-first".into(), "console=ttyS0,115200n8".into()],
            display_name: "quay.io/acme/os@sha256:ab".into(),
            mount: Some(MountRequest {
                image: "/staging/disk.raw".into(),
                offset: 538968064,
                size: 1610612736,
                boot_dir: "/staging/boot".into(),
                options: "allocsize=64k".into(),
            }),
            repo_config: vec![("sysroot.bootprefix".into(), "true".into())],
        };
        assert_eq!(
            req.to_args(),
            [
                "--sysroot=/staging/sysroot",
                "--stateroot=rhcos",
                "--source=ostree-unverified-image:oci:/cache:layered",
                "--target=ostree-unverified-registry:quay.io/acme/os@sha256:ab",
                "--name=quay.io/acme/os@sha256:ab",
                "--karg=-dash-first",
                "--karg=console=ttyS0,115200n8",
                "--repo-config=sysroot.bootprefix=true",
                "--mount-image=/staging/disk.raw",
                "--offset=538968064",
                "--sizelimit=1610612736",
                "--boot-dir=/staging/boot",
                "--mount-options=allocsize=64k"
            ]
        );
        let a = Args::try_parse_from(
            std::iter::once("layerboot-deploy".to_string()).chain(req.to_args()),
        )
        .unwrap();
        assert_eq!(DeployRequest::from(a), req);
    }
}
