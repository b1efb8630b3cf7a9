//! layerboot-deploy: the ostree deployment step of `layerboot disk`, in a process of its own
//! so that libostree is loaded only when a disk is built (see `layerboot::disk::deploy`).
//! `layerboot disk` runs it; it is not meant to be run by hand. Prints the deployment as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use layerboot::disk::deploy::{deploy_here, DeployRequest};

#[derive(Parser)]
#[command(name = "layerboot-deploy", version, about = "Deploy a container image into a staged ostree sysroot (internal step of `layerboot disk`)")]
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
}

impl From<Args> for DeployRequest {
    fn from(a: Args) -> Self {
        DeployRequest { sysroot: a.sysroot, stateroot: a.stateroot, source_imgref: a.source, target_imgref: a.target, kargs: a.kargs, display_name: a.name }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).format_timestamp(None).init();
    let req = DeployRequest::from(Args::parse());
    let result = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(deploy_here(&req))).and_then(|d| Ok(serde_json::to_string(&d)?));
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
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
                "--karg=console=ttyS0,115200n8"
            ]
        );
        let a = Args::try_parse_from(std::iter::once("layerboot-deploy".to_string()).chain(req.to_args())).unwrap();
        assert_eq!(DeployRequest::from(a), req);
    }
}
