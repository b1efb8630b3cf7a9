//! layerboot's side of the deploy helper: start it, read its report, reach the deployed
//! tree through its mount namespace, let it finish (or stop and reap it).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{DeployRequest, Deployed, DiskSpace, MountRequest, HELPER};
use crate::cmd::CancellableChild;
use crate::disk::source::SourceImage;
use crate::disk::Cancel;

/// A finished deployment inside the helper's namespace, the helper waiting for us.
pub struct Mounted {
    helper: CancellableChild,
    pub deployed: Deployed,
    /// The deployed root filesystem as this process sees it: `/proc/<helper>/root/<mnt>`.
    pub root: PathBuf,
    space: DiskSpace,
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
        let space = self.space.clone();
        match self.helper.finish(|| cancel.is_cancelled()) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(crate::disk::cancelled_error()),
            Err(e) => Err(space.explain(e)).context("finishing the root filesystem"),
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
    let space = DiskSpace {
        root_size: target.size,
        // The disk image is in the build's staging directory, which is in the output
        // directory the user chose: that is the one to name.
        host_dir: target
            .image
            .parent()
            .and_then(Path::parent)
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
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
        Ok(None) => return Err(crate::disk::cancelled_error()),
        Err(e) => {
            return Err(space.explain(e))
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
        space,
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
