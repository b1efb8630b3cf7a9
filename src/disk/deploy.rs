//! Deploy the image into a fresh physical root with the ostree-ext crate, exactly as an
//! installed CoreOS system is laid out: `/ostree/repo`, the stateroot, one deployment with
//! its origin pointing at the image's digest reference, BLS entries in `/boot/loader`.
//!
//! The deployment runs in its own process, `layerboot-deploy`, installed beside `layerboot`.
//! libostree brings about 55 shared libraries (glib, gpgme, curl, …) whose loading alone
//! made every layerboot command start ~12 ms slower; out of process it costs only `disk`.
//! Cancelling is then a signal and a reap, instead of ostree-ext writer tasks outliving
//! the future that was dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::source::SourceImage;
use super::Cancel;
use crate::cmd;

/// File name of the deploy helper binary.
pub const HELPER: &str = "layerboot-deploy";

/// What the deployment produced, read back from the staged sysroot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployed {
    pub sysroot: PathBuf,
    pub stateroot: String,
    /// ostree commit of the merged (layered) image.
    pub commit: String,
    /// `/ostree/deploy/<stateroot>/deploy/<commit>.<serial>`, relative to the sysroot.
    pub deploy_path: PathBuf,
    pub kernel_version: Option<String>,
}

/// One deployment, as the helper process receives it on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    pub sysroot: PathBuf,
    pub stateroot: String,
    /// Where ostree-ext reads the image (`ostree-unverified-image:oci:DIR:TAG`).
    pub source_imgref: String,
    /// What the deployment's origin records, so updates track the image.
    pub target_imgref: String,
    pub kargs: Vec<String>,
    /// For messages: the image as the user named it.
    pub display_name: String,
}

impl DeployRequest {
    /// The helper's arguments (`--karg=` form: kargs may start with a dash).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            format!("--sysroot={}", self.sysroot.display()),
            format!("--stateroot={}", self.stateroot),
            format!("--source={}", self.source_imgref),
            format!("--target={}", self.target_imgref),
            format!("--name={}", self.display_name),
        ];
        a.extend(self.kargs.iter().map(|k| format!("--karg={k}")));
        a
    }
}

/// Where `layerboot-deploy` is: `$LAYERBOOT_DEPLOY`, else beside the running executable
/// (for test binaries in `target/*/deps/`, one directory up, where cargo puts the bins).
pub fn helper_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LAYERBOOT_DEPLOY") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let dir = exe.parent().context("the running executable has no directory")?;
    let candidates = [Some(dir.join(HELPER)), dir.parent().filter(|_| dir.ends_with("deps")).map(|d| d.join(HELPER))];
    for c in candidates.into_iter().flatten() {
        if c.is_file() {
            return Ok(c);
        }
    }
    bail!("{HELPER} not found beside {}: it is part of layerboot (cargo install and cargo build install/build both binaries), or set LAYERBOOT_DEPLOY", exe.display())
}

/// Deploy `image` into `sysroot` (an empty directory) with kernel arguments `kargs`, in the
/// helper process. Returns the cancellation error if `cancel` fires meanwhile; the helper is
/// stopped and reaped first, so the caller can remove the sysroot right away.
pub fn deploy(image: &SourceImage, sysroot: &Path, stateroot: &str, kargs: &[String], cancel: &Cancel) -> Result<Deployed> {
    let req = DeployRequest {
        sysroot: sysroot.to_path_buf(),
        stateroot: stateroot.to_string(),
        source_imgref: image.source_imgref(),
        target_imgref: image.target_imgref.clone(),
        kargs: kargs.to_vec(),
        display_name: image.display_name.clone(),
    };
    let mut c = Command::new(helper_path()?);
    c.args(req.to_args());
    if std::env::var_os("RUST_LOG").is_none() {
        c.env("RUST_LOG", log::max_level().to_string().to_lowercase());
    }
    let out = cmd::run_cancellable(&mut c, || cancel.is_cancelled(), Duration::from_secs(10)).with_context(|| format!("deploying {}", image.display_name))?;
    let Some(out) = out else { return Err(super::cancelled_error()) };
    serde_json::from_slice(&out.stdout).with_context(|| format!("reading {HELPER}'s report"))
}

/// The deployment itself; runs inside `layerboot-deploy`.
pub async fn deploy_here(req: &DeployRequest) -> Result<Deployed> {
    use ostree_ext::container::OstreeImageReference;
    use ostree_ext::gio;
    use ostree_ext::ostree;

    let sysroot = req.sysroot.as_path();
    let stateroot = req.stateroot.as_str();
    let sysroot_s = sysroot.to_str().context("non-UTF-8 staging path")?;
    cmd::run(Command::new("ostree").args(["admin", "init-fs", "--modern", sysroot_s]))?;
    let repo = sysroot.join("ostree/repo");
    let repo_arg = format!("--repo={}", repo.display());
    // No bootloader integration: layerboot writes the bootloader config from the BLS entries.
    cmd::run(Command::new("ostree").arg(&repo_arg).args(["config", "set", "sysroot.bootloader", "none"]))?;
    // The repo is a staging copy that ends up inside a filesystem image written and synced
    // later: per-object fsyncs only slow the import. The shipped repo gets the default back.
    cmd::run(Command::new("ostree").arg(&repo_arg).args(["config", "set", "core.fsync", "false"]))?;
    cmd::run(Command::new("ostree").args(["admin", "os-init", stateroot, &format!("--sysroot={sysroot_s}")]))?;
    // The base layer through the parallel verified importer; ostree-ext then finds it present.
    super::ostree_import::prefill_for_source(&repo, &req.source_imgref)?;

    let source = OstreeImageReference::try_from(req.source_imgref.as_str()).context("source image reference")?;
    let target = OstreeImageReference::try_from(req.target_imgref.as_str()).context("target image reference")?;
    let sys = ostree::Sysroot::new(Some(&gio::File::for_path(sysroot)));
    sys.load(gio::Cancellable::NONE).with_context(|| format!("loading staged sysroot {}", sysroot.display()))?;
    let karg_refs: Vec<&str> = req.kargs.iter().map(String::as_str).collect();
    let mut opts = ostree_ext::container::deploy::DeployOpts::default();
    opts.kargs = Some(&karg_refs);
    opts.target_imgref = Some(&target);
    let state = ostree_ext::container::deploy::deploy(&sys, stateroot, &source, Some(opts)).await.with_context(|| format!("deploying {} with ostree-ext", req.display_name))?;
    let commit = state.merge_commit.clone();
    drop(sys);
    cmd::run(Command::new("ostree").arg(&repo_arg).args(["config", "unset", "core.fsync"]))?;
    read_back(sysroot, stateroot, &commit, &req.display_name)
}

/// Find the deployment of `commit` and its kernel in the staged sysroot.
fn read_back(sysroot: &Path, stateroot: &str, commit: &str, display_name: &str) -> Result<Deployed> {
    let deploy_dir = sysroot.join("ostree/deploy").join(stateroot).join("deploy");
    let mut deploy_path = None;
    for e in fs::read_dir(&deploy_dir).with_context(|| format!("reading {}", deploy_dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with(commit) && !name.ends_with(".origin") {
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
        bail!("{} has no kernel: no /usr/lib/modules/<version>/vmlinuz in the image", display_name);
    }
    Ok(Deployed { sysroot: sysroot.to_path_buf(), stateroot: stateroot.to_string(), commit: commit.to_string(), deploy_path, kernel_version })
}
