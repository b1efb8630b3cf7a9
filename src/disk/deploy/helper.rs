//! The helper's side (`layerboot-deploy`): a private mount namespace, the root filesystem
//! mounted from its region of the disk image, the deployment by ostree-ext, the report.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{DeployRequest, Deployed, MountRequest};
use crate::cmd;

/// Enter a mount namespace of our own, with every mount private so nothing we mount
/// propagates back to the host. Must run before the process has threads (unshare of the
/// mount namespace fails with EINVAL in a multithreaded process).
pub fn enter_private_mount_namespace() -> Result<()> {
    // SAFETY: unshare has no memory effects; the caller guarantees a single thread.
    #[allow(unsafe_code)]
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNS) (needs root)");
    }
    cmd::run(Command::new("mount").args(["--make-rprivate", "/"]))?;
    Ok(())
}

/// Mount `m`'s filesystem on `at` and its boot directory on `at/boot`. The loop device is
/// autoclear (mount(8) sets it), so it goes away with the last unmount.
pub fn mount_target(m: &MountRequest, at: &Path) -> Result<()> {
    let opts = root_mount_options(m);
    cmd::run(
        Command::new("mount")
            .args(["-o", &opts])
            .arg(&m.image)
            .arg(at),
    )
    .context("mounting the root filesystem of the disk image")?;
    let boot = at.join("boot");
    fs::create_dir_all(&boot).with_context(|| format!("creating {}", boot.display()))?;
    cmd::run(
        Command::new("mount")
            .arg("--bind")
            .arg(&m.boot_dir)
            .arg(&boot),
    )
    .context("bind-mounting the staging boot directory")?;
    Ok(())
}

/// Undo [`mount_target`]; a failure here means the filesystem may not be complete.
pub fn unmount_target(at: &Path) -> Result<()> {
    cmd::run(Command::new("umount").arg(at.join("boot")))?;
    cmd::run(Command::new("umount").arg(at))
        .context("unmounting the root filesystem of the disk image")?;
    Ok(())
}

const STAGING_MIN_FREE_KEY: &str = "core.min-free-space-percent";

fn root_mount_options(m: &MountRequest) -> String {
    let mut opts = format!("loop,offset={},sizelimit={}", m.offset, m.size);
    if !m.options.is_empty() {
        opts.push(',');
        opts.push_str(&m.options);
    }
    opts
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
    cmd::run(Command::new("ostree").arg(&repo_arg).args([
        "config",
        "set",
        "sysroot.bootloader",
        "none",
    ]))?;
    // The repo is a staging copy that ends up inside a filesystem image written and synced
    // later: per-object fsyncs only slow the import. The shipped repo gets the default back.
    cmd::run(
        Command::new("ostree")
            .arg(&repo_arg)
            .args(["config", "set", "core.fsync", "false"]),
    )?;
    for (k, v) in &req.repo_config {
        cmd::run(
            Command::new("ostree")
                .arg(&repo_arg)
                .args(["config", "set", k, v]),
        )?;
    }
    // ostree refuses writes that would leave less than 3% of the filesystem free; the root
    // is sized to its content (`bootimage::plan::fs_min_size`) and grown to the disk at
    // first boot, so the guard only fails builds. The shipped repo gets the default back.
    cmd::run(Command::new("ostree").arg(&repo_arg).args([
        "config",
        "set",
        STAGING_MIN_FREE_KEY,
        "0",
    ]))?;
    cmd::run(Command::new("ostree").args([
        "admin",
        "os-init",
        stateroot,
        &format!("--sysroot={sysroot_s}"),
    ]))?;
    // The base layer through the parallel verified importer; ostree-ext then finds it present.
    crate::disk::ostree_import::prefill_for_source(&repo, &req.source_imgref)?;

    let source = OstreeImageReference::try_from(req.source_imgref.as_str())
        .context("source image reference")?;
    let target = OstreeImageReference::try_from(req.target_imgref.as_str())
        .context("target image reference")?;
    let sys = ostree::Sysroot::new(Some(&gio::File::for_path(sysroot)));
    sys.load(gio::Cancellable::NONE)
        .with_context(|| format!("loading staged sysroot {}", sysroot.display()))?;
    let karg_refs: Vec<&str> = req.kargs.iter().map(String::as_str).collect();
    let mut opts = ostree_ext::container::deploy::DeployOpts::default();
    opts.kargs = Some(&karg_refs);
    opts.target_imgref = Some(&target);
    let state = ostree_ext::container::deploy::deploy(&sys, stateroot, &source, Some(opts))
        .await
        .with_context(|| format!("deploying {} with ostree-ext", req.display_name))?;
    let commit = state.merge_commit.clone();
    drop(sys);
    for key in ["core.fsync", STAGING_MIN_FREE_KEY] {
        cmd::run(
            Command::new("ostree")
                .arg(&repo_arg)
                .args(["config", "unset", key]),
        )?;
    }
    read_back(sysroot, stateroot, &commit, &req.display_name)
}

/// Find the deployment of `commit` and its kernel in the staged sysroot.
fn read_back(
    sysroot: &Path,
    stateroot: &str,
    commit: &str,
    display_name: &str,
) -> Result<Deployed> {
    let deploy_dir = sysroot.join("ostree/deploy").join(stateroot).join("deploy");
    let mut deploy_path = None;
    for e in
        fs::read_dir(&deploy_dir).with_context(|| format!("reading {}", deploy_dir.display()))?
    {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with(commit) && !name.ends_with(".origin") {
            deploy_path = Some(
                PathBuf::from("ostree/deploy")
                    .join(stateroot)
                    .join("deploy")
                    .join(name),
            );
        }
    }
    let deploy_path = deploy_path
        .with_context(|| format!("no deployment of {commit} in {}", deploy_dir.display()))?;
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
        bail!(
            "{} has no kernel: no /usr/lib/modules/<version>/vmlinuz in the image",
            display_name
        );
    }
    Ok(Deployed {
        sysroot: sysroot.to_path_buf(),
        stateroot: stateroot.to_string(),
        commit: commit.to_string(),
        deploy_path,
        kernel_version,
    })
}
