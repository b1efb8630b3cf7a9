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

//!
//! This module is the protocol both sides share (the request on the helper's command line,
//! its one-line JSON report); [`client`] is layerboot's side, [`helper`] the helper's.

mod client;
mod helper;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use client::{deploy, helper_path, LoopRelease, Mounted};
pub use helper::{deploy_here, enter_private_mount_namespace, mount_target, unmount_target};

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

/// Where a deploy's bytes land: the root filesystem (`root_size` bytes) inside the sparse
/// disk image in `host_dir`. Either can run out, and the two look alike from inside.
#[derive(Debug, Clone)]
pub struct DiskSpace {
    pub root_size: u64,
    pub host_dir: PathBuf,
}

/// Below this many free bytes the host filesystem counts as full: the sparse disk image
/// grows there as the deploy writes through its loop device, and the loop device reports
/// the host's ENOSPC to the filesystem inside as an I/O error (`syncfs: Input/output
/// error` from ostree), not as ENOSPC.
pub const HOST_FULL_BELOW: u64 = 64 << 20;

impl DiskSpace {
    /// `e`, explained if it came from running out of space (see [`explain_space`]).
    pub fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let free = crate::io::free_bytes(&self.host_dir).ok();
        explain_space(e, self.root_size, &self.host_dir, free)
    }
}

/// A write that failed for want of space names the filesystem that ran out and the way
/// out: the host's (`free` bytes left in `host_dir`, seen as an I/O error or ENOSPC), else
/// the root filesystem of `root_size` bytes (ENOSPC). Anything else passes unchanged.
pub fn explain_space(
    e: anyhow::Error,
    root_size: u64,
    host_dir: &std::path::Path,
    free: Option<u64>,
) -> anyhow::Error {
    let text = format!("{e:#}");
    if host_is_full(&text, free) {
        return explain_host_full(e, host_dir, free);
    }
    if is_enospc(&text) {
        let size = crate::units::format_size(root_size);
        return e.context(format!(
            "the root filesystem of {size} was too small for the deployment: pass a larger --size"
        ));
    }
    e
}

fn is_enospc(text: &str) -> bool {
    text.contains("No space left on device") || text.contains("os error 28")
}

/// An ENOSPC or I/O error while the host has less than [`HOST_FULL_BELOW`] free.
fn host_is_full(text: &str, free: Option<u64>) -> bool {
    let eio = text.contains("Input/output error") || text.contains("os error 5)");
    free.is_some_and(|f| f < HOST_FULL_BELOW) && (is_enospc(text) || eio)
}

/// `e`, naming the host filesystem holding `host_dir` as the one that ran out (it has
/// `free` bytes left) where that explains it and nothing has said so yet.
pub fn explain_host_full(
    e: anyhow::Error,
    host_dir: &std::path::Path,
    free: Option<u64>,
) -> anyhow::Error {
    let text = format!("{e:#}");
    match free {
        Some(f) if host_is_full(&text, free) && !text.contains(HOST_FULL_MESSAGE) => {
            e.context(format!(
                "the filesystem holding {} {HOST_FULL_MESSAGE} ({} free), where the disk image is written: free space there or write the output to a larger filesystem",
                host_dir.display(),
                crate::units::format_size(f)
            ))
        }
        _ => e,
    }
}

const HOST_FULL_MESSAGE: &str = "ran out of space";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_space_names_the_filesystem_that_ran_out_and_the_way_out() {
        const ROOT: &str = "the root filesystem of 1300MiB was too small for the deployment: pass a larger --size: ";
        const HOST: &str = "the filesystem holding /out/.layerboot-disk-x ran out of space (1MiB free), where the disk image is written: free space there or write the output to a larger filesystem: ";
        let enospc = "command failed (exit status: 1): layerboot-deploy …: error: deploying: Importing: writing object: No space left on device";
        let syncfs = "error: deploying with ostree-ext: Performing deployment: Full sync: syncfs(sysroot): Input/output error";
        let cases: &[(&str, Option<u64>, &str)] = &[
            (enospc, Some(20 << 30), ROOT),
            (enospc, None, ROOT),
            ("writing /x/.coreos-aleph-version.json: No space left on device (os error 28)", Some(20 << 30), ROOT),
            // The loop device turns the host's ENOSPC into EIO.
            (syncfs, Some(1 << 20), HOST),
            (enospc, Some(1 << 20), HOST),
            // An I/O error with room on the host is not about space.
            (syncfs, Some(20 << 30), ""),
            (syncfs, None, ""),
            ("command failed (exit status: 1): layerboot-deploy …: error: Permission denied (os error 13)", Some(1 << 20), ""),
        ];
        for &(text, free, prefix) in cases {
            let e = explain_space(
                anyhow::anyhow!("{text}"),
                1300 << 20,
                std::path::Path::new("/out/.layerboot-disk-x"),
                free,
            );
            let shown = format!("{e:#}");
            assert_eq!(shown, format!("{prefix}{text}"), "{free:?}");
        }
        // Said once, however many layers see the error go by.
        let host = std::path::Path::new("/out/.layerboot-disk-x");
        let once = explain_space(anyhow::anyhow!("{syncfs}"), 1 << 30, host, Some(1 << 20));
        let again = format!("{:#}", explain_host_full(once, host, Some(1 << 20)));
        assert_eq!(again.matches("ran out of space").count(), 1, "{again}");
        // Through the std::io::Error layout the aleph write produces.
        let io = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(format!(
            "{:#}",
            explain_space(io, 1 << 30, std::path::Path::new("/o"), None)
        )
        .starts_with("the root filesystem of 1GiB was too small"));
    }
}
