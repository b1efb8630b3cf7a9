//! Deploy the image into a fresh physical root with the ostree-ext crate, exactly as an
//! installed CoreOS system is laid out: `/ostree/repo`, the stateroot, one deployment with
//! its origin pointing at the image's digest reference, BLS entries in `/boot/loader`.
//!
//! The deployment runs in its own process, `layerboot-deploy`, installed beside `layerboot`.
//! libostree brings about 55 shared libraries (glib, gpgme, curl, …) whose loading alone
//! made every layerboot command start ~12 ms slower; out of process it costs only `disk`.
//! Cancelling is then a signal and a reap, instead of ostree-ext writer tasks outliving
//! the future that was dropped.
//!
//! The helper deploys straight into the root filesystem inside the disk image: it enters a
//! private mount namespace first thing, loop-mounts the root partition's region of
//! `disk.raw` (autoclear) and bind-mounts the host's staging boot directory onto its
//! `/boot`, so ostree writes the kernel, initramfs and BLS entries into what becomes the
//! boot filesystem (copied across the mount, as on any system with a separate /boot).
//! After its report it keeps the namespace alive until its stdin closes: layerboot reads
//! and completes the deployed tree through `/proc/<pid>/root/<mountpoint>` meanwhile. Its
//! end, however it comes, unmounts everything with the namespace; a clean end unmounts
//! explicitly and reports a failure to do so.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::source::SourceImage;
use super::Cancel;
use crate::cmd::{self, CancellableChild};

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
    /// Mount this filesystem on `sysroot` (a mount point in the staging directory) first.
    pub mount: Option<MountRequest>,
    /// `ostree config set` pairs for the shipped repo, applied before the deploy.
    pub repo_config: Vec<(String, String)>,
}

/// A filesystem in a region of a disk image, and the directory to become its `/boot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    pub image: PathBuf,
    pub offset: u64,
    pub size: u64,
    pub boot_dir: PathBuf,
    /// Extra mount options for the filesystem (see [`super::fs::deploy_mount_options`]).
    pub options: String,
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
        a.extend(
            self.repo_config
                .iter()
                .map(|(k, v)| format!("--repo-config={k}={v}")),
        );
        if let Some(m) = &self.mount {
            a.extend([
                format!("--mount-image={}", m.image.display()),
                format!("--offset={}", m.offset),
                format!("--sizelimit={}", m.size),
                format!("--boot-dir={}", m.boot_dir.display()),
            ]);
            if !m.options.is_empty() {
                a.push(format!("--mount-options={}", m.options));
            }
        }
        a
    }
}

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

/// A finished deployment inside the helper's namespace, the helper waiting for us.
pub struct Mounted {
    helper: CancellableChild,
    pub deployed: Deployed,
    /// The deployed root filesystem as this process sees it: `/proc/<helper>/root/<mnt>`.
    pub root: PathBuf,
    root_size: u64,
}

impl Mounted {
    /// The helper's process id: its mount namespace holds the mounted root.
    pub fn pid(&self) -> u32 {
        self.helper.pid()
    }

    /// A path in the helper's mount namespace as this process reaches it.
    pub fn host_view(&self, p: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.helper.pid()))
            .join(p.strip_prefix("/").unwrap_or(p))
    }

    /// Let the helper unmount and end; its exit status says whether that worked.
    pub fn finish(mut self, cancel: &Cancel) -> Result<()> {
        let root_size = self.root_size;
        match self.helper.finish(|| cancel.is_cancelled()) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(super::cancelled_error()),
            Err(e) => Err(explain_enospc(e, root_size)).context("finishing the root filesystem"),
        }
    }
}

/// Where `layerboot-deploy` is: `$LAYERBOOT_DEPLOY`, else beside the running executable
/// (for test binaries in `target/*/deps/`, one directory up, where cargo puts the bins).
pub fn helper_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LAYERBOOT_DEPLOY") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let dir = exe
        .parent()
        .context("the running executable has no directory")?;
    let candidates = [
        Some(dir.join(HELPER)),
        dir.parent()
            .filter(|_| dir.ends_with("deps"))
            .map(|d| d.join(HELPER)),
    ];
    for c in candidates.into_iter().flatten() {
        if c.is_file() {
            return Ok(c);
        }
    }
    bail!("{HELPER} not found beside {}: it is part of layerboot (cargo install and cargo build install/build both binaries), or set LAYERBOOT_DEPLOY", exe.display())
}

/// Deploy `image` with kernel arguments `kargs` into the filesystem `target` describes,
/// mounted by the helper on `mountpoint` (an empty directory, absolute path). Returns the
/// cancellation error if `cancel` fires meanwhile; the helper is stopped and reaped first.
/// Dropping the result unfinished also stops and reaps it (the mounts go with it).
pub fn deploy(
    image: &SourceImage,
    mountpoint: &Path,
    target: MountRequest,
    stateroot: &str,
    kargs: &[String],
    repo_config: &[(String, String)],
    cancel: &Cancel,
) -> Result<Mounted> {
    let root_size = target.size;
    let req = DeployRequest {
        sysroot: mountpoint.to_path_buf(),
        stateroot: stateroot.to_string(),
        source_imgref: image.source_imgref(),
        target_imgref: image.target_imgref.clone(),
        kargs: kargs.to_vec(),
        display_name: image.display_name.clone(),
        mount: Some(target),
        repo_config: repo_config.to_vec(),
    };
    let mut c = Command::new(helper_path()?);
    c.args(req.to_args());
    if std::env::var_os("RUST_LOG").is_none() {
        c.env("RUST_LOG", log::max_level().to_string().to_lowercase());
    }
    let mut helper = CancellableChild::spawn(&mut c, true, Duration::from_secs(10))?;
    let line = match helper.read_line(|| cancel.is_cancelled()) {
        Ok(Some(line)) => line,
        Ok(None) => return Err(super::cancelled_error()),
        Err(e) => {
            return Err(explain_enospc(e, root_size))
                .with_context(|| format!("deploying {}", image.display_name))
        }
    };
    let deployed: Deployed =
        serde_json::from_slice(&line).with_context(|| format!("reading {HELPER}'s report"))?;
    let rel = mountpoint
        .strip_prefix("/")
        .context("the mount point must be an absolute path")?;
    let root = PathBuf::from(format!("/proc/{}/root", helper.pid())).join(rel);
    Ok(Mounted {
        helper,
        deployed,
        root,
        root_size,
    })
}

/// Waits, when dropped, until no loop device is backed by the disk image any more. When the
/// helper dies, the kernel unmounts its filesystems with its namespace, but the final
/// unmount (XFS writing back) and the autoclear of the loop device finish asynchronously
/// after the reap: layerboot must not report "done" or "cleaned up" before that.
pub struct LoopRelease(pub PathBuf);

impl LoopRelease {
    fn held(&self) -> bool {
        let Ok(dir) = fs::read_dir("/sys/block") else {
            return false;
        };
        dir.flatten()
            .filter_map(|e| fs::read_to_string(e.path().join("loop/backing_file")).ok())
            .any(|b| {
                let b = b.trim_end_matches('\n');
                Path::new(b.strip_suffix(" (deleted)").unwrap_or(b)) == self.0
            })
    }
}

impl Drop for LoopRelease {
    fn drop(&mut self) {
        let t = std::time::Instant::now();
        while self.held() {
            if t.elapsed() > Duration::from_secs(120) {
                log::warn!("a loop device still uses {} after 120 s", self.0.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A deploy that ran out of space names the filesystem that was too small and the way out.
pub fn explain_enospc(e: anyhow::Error, root_size: u64) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("No space left on device") || text.contains("os error 28") {
        let size = crate::bootimage::definition::format_size(root_size);
        return e.context(format!(
            "the root filesystem of {size} was too small for the deployment: pass a larger --size"
        ));
    }
    e
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
    super::ostree_import::prefill_for_source(&repo, &req.source_imgref)?;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_space_names_the_root_size_and_the_way_out() {
        let cases: &[(&str, bool)] = &[
            ("command failed (exit status: 1): layerboot-deploy …: error: deploying: Importing: writing object: No space left on device", true),
            ("writing /x/.coreos-aleph-version.json: No space left on device (os error 28)", true),
            ("command failed (exit status: 1): layerboot-deploy …: error: Permission denied (os error 13)", false),
        ];
        for &(text, enospc) in cases {
            let e = explain_enospc(anyhow::anyhow!("{text}"), 1300 << 20);
            let shown = format!("{e:#}");
            assert!(shown.ends_with(text), "the cause is kept: {shown}");
            assert_eq!(shown.starts_with("the root filesystem of 1300MiB was too small for the deployment: pass a larger --size: "), enospc, "{shown}");
        }
        // Through the std::io::Error layout the aleph write produces.
        let io = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(format!("{:#}", explain_enospc(io, 1 << 30))
            .starts_with("the root filesystem of 1GiB was too small"));
    }
}
