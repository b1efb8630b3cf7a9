//! Deploy the image into a fresh physical root with the ostree-ext crate, exactly as an
//! installed CoreOS system is laid out: `/ostree/repo`, the stateroot, one deployment with
//! its origin pointing at the image's digest reference, BLS entries in `/boot/loader`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use ostree_ext::container::OstreeImageReference;
use ostree_ext::gio;
use ostree_ext::ostree;

use super::source::SourceImage;
use super::Cancel;
use crate::cmd;

/// What the deployment produced, read back from the staged sysroot.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub sysroot: PathBuf,
    pub stateroot: String,
    /// ostree commit of the merged (layered) image.
    pub commit: String,
    /// `/ostree/deploy/<stateroot>/deploy/<commit>.<serial>`, relative to the sysroot.
    pub deploy_path: PathBuf,
    pub kernel_version: Option<String>,
}

/// Deploy `image` into `sysroot` (an empty directory) with kernel arguments `kargs`.
pub fn deploy(image: &SourceImage, sysroot: &Path, stateroot: &str, kargs: &[String], cancel: &Cancel) -> Result<Deployed> {
    let sysroot_s = sysroot.to_str().context("non-UTF-8 staging path")?;
    cmd::run(Command::new("ostree").args(["admin", "init-fs", "--modern", sysroot_s]))?;
    let repo = sysroot.join("ostree/repo");
    // No bootloader integration: layerboot writes the bootloader config from the BLS entries.
    cmd::run(Command::new("ostree").arg(format!("--repo={}", repo.display())).args(["config", "set", "sysroot.bootloader", "none"]))?;
    cmd::run(Command::new("ostree").args(["admin", "os-init", stateroot, &format!("--sysroot={sysroot_s}")]))?;
    cancel.check()?;

    let source = OstreeImageReference::try_from(image.source_imgref().as_str()).context("source image reference")?;
    let target = OstreeImageReference::try_from(image.target_imgref.as_str()).context("target image reference")?;
    let sys = ostree::Sysroot::new(Some(&gio::File::for_path(sysroot)));
    sys.load(gio::Cancellable::NONE).with_context(|| format!("loading staged sysroot {}", sysroot.display()))?;
    let karg_refs: Vec<&str> = kargs.iter().map(String::as_str).collect();
    let mut opts = ostree_ext::container::deploy::DeployOpts::default();
    opts.kargs = Some(&karg_refs);
    opts.target_imgref = Some(&target);

    let handle = tokio::runtime::Handle::current();
    let state = handle.block_on(async {
        tokio::select! {
            r = ostree_ext::container::deploy::deploy(&sys, stateroot, &source, Some(opts)) => r.map_err(anyhow::Error::from),
            _ = cancel.cancelled() => Err(super::cancelled_error()),
        }
    }).with_context(|| format!("deploying {} with ostree-ext", image.display_name))?;
    let commit = state.merge_commit.clone();
    drop(sys);

    let deploy_dir = sysroot.join("ostree/deploy").join(stateroot).join("deploy");
    let mut deploy_path = None;
    for e in fs::read_dir(&deploy_dir).with_context(|| format!("reading {}", deploy_dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with(&commit) && !name.ends_with(".origin") {
            deploy_path = Some(PathBuf::from("ostree/deploy").join(stateroot).join("deploy").join(name));
        }
    }
    let deploy_path = deploy_path.with_context(|| format!("no deployment of {commit} in {}", deploy_dir.display()))?;
    let modules = sysroot.join(&deploy_path).join("usr/lib/modules");
    let mut kernel_version = None;
    if let Ok(rd) = fs::read_dir(&modules) {
        for e in rd.flatten() {
            if e.path().join("vmlinuz").is_file() {
                kernel_version = Some(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    if kernel_version.is_none() {
        bail!("{} has no kernel: no /usr/lib/modules/<version>/vmlinuz in the image", image.display_name);
    }
    Ok(Deployed { sysroot: sysroot.to_path_buf(), stateroot: stateroot.to_string(), commit, deploy_path, kernel_version })
}
