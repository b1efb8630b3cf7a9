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

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).format_timestamp(None).init();
    let a = Args::parse();
    let req = DeployRequest { sysroot: a.sysroot, stateroot: a.stateroot, source_imgref: a.source, target_imgref: a.target, kargs: a.kargs, display_name: a.name };
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
