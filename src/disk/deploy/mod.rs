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
