//! Running the image's own tools on the build host, as bootc and osbuild do: a CoreOS
//! image's GRUB is made by its own `grub2-mkimage`, matching its modules and the rest of
//! its boot chain, rather than by whatever GRUB the build host happens to have.
//!
//! The tool runs `chroot`ed into the deployment inside the deploy helper's mount namespace
//! (`nsenter --mount`), from a further private namespace (`unshare --mount`) in which a
//! scratch directory of the build is bound onto the deployment's `/run`: its inputs and
//! outputs pass through there, and nothing is written into the deployed tree.
//! Only ELF binaries of the build host's machine are run (an aarch64 image on an x86_64
//! host falls back to the host's tools).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::io::RootedDir;

/// The deployed image, runnable in the deploy helper's mount namespace.
#[derive(Debug, Clone)]
pub struct ImageExec {
    /// The deploy helper, whose mount namespace holds the root filesystem.
    pub pid: u32,
    /// The deployment's path in that namespace.
    pub deployment: PathBuf,
}

/// Where the scratch directory appears inside the image while a tool runs.
pub const SCRATCH_IN_IMAGE: &str = "/run";

/// ELF e_machine of the build host.
fn host_machine() -> u16 {
    if cfg!(target_arch = "x86_64") {
        0x3e
    } else if cfg!(target_arch = "aarch64") {
        0xb7
    } else if cfg!(target_arch = "s390x") {
        0x16
    } else if cfg!(target_arch = "powerpc64") {
        0x15
    } else {
        0
    }
}

/// Whether an ELF header (its first 20 bytes) is for the build host's machine (pure).
pub fn elf_runs_here(head: &[u8]) -> bool {
    head.len() >= 20
        && &head[..4] == b"\x7fELF"
        && u16::from_le_bytes([head[18], head[19]]) == host_machine()
}

/// The first of `candidates` (paths relative to the image root) that the image has as an
/// ELF binary the build host can run; read through `image`, so a link cannot lead out.
pub fn find_tool<'a>(image: &RootedDir, candidates: &[&'a str]) -> Option<&'a str> {
    candidates.iter().copied().find(|rel| {
        let mut head = [0u8; 20];
        image
            .open_file(rel)
            .ok()
            .and_then(|mut f| f.read_exact(&mut head).ok())
            .is_some()
            && elf_runs_here(&head)
    })
}

impl ImageExec {
    /// `program` (an absolute path inside the image) run in the image, with `scratch` (a
    /// path of the build host, also visible in the helper's namespace) as
    /// [`SCRATCH_IN_IMAGE`]. Arguments are added by the caller.
    pub fn command(&self, program: &str, scratch: &Path) -> Command {
        let mut c = self.private_namespace();
        c.args([
                "sh",
                "-ec",
                &format!(
                    "mount --bind \"$1\" \"$2{SCRATCH_IN_IMAGE}\"; root=$2; shift 2; exec chroot \"$root\" \"$@\""
                ),
                "sh",
            ])
            .arg(scratch)
            .arg(&self.deployment)
            .arg(program);
        c
    }
}

impl ImageExec {
    /// A command prefix that runs what follows in a private mount namespace made from the
    /// deploy helper's: mounts made there see the deployed root and vanish with the
    /// process, whatever way it ends.
    pub fn private_namespace(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{}/ns/mnt", self.pid)).args([
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
        ]);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_host_elf_binaries_run() {
        let mut x86 = vec![0u8; 20];
        x86[..4].copy_from_slice(b"\x7fELF");
        x86[18] = 0x3e;
        let mut arm = x86.clone();
        arm[18] = 0xb7;
        let cases: [(&str, &[u8], bool); 4] = [
            ("x86_64 ELF", &x86, cfg!(target_arch = "x86_64")),
            ("aarch64 ELF", &arm, cfg!(target_arch = "aarch64")),
            ("script", b"#!/bin/sh\necho hello there\n", false),
            ("short", b"\x7fELF", false),
        ];
        for (name, head, want) in cases {
            assert_eq!(elf_runs_here(head), want, "{name}");
        }
    }

    #[test]
    fn tools_are_found_inside_the_image_only() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        // A host binary reached through an absolute link resolves inside the image: gone.
        std::os::unix::fs::symlink("/bin/true", bin.join("grub2-mkimage")).unwrap();
        std::fs::write(bin.join("grub-mkimage"), b"#!/bin/sh\n").unwrap();
        let host_true = std::fs::read("/bin/true").unwrap();
        std::fs::write(bin.join("real-tool"), &host_true).unwrap();
        let image = RootedDir::open(t.path()).unwrap();
        assert_eq!(
            find_tool(&image, &["usr/bin/grub2-mkimage", "usr/bin/grub-mkimage"]),
            None
        );
        assert_eq!(
            find_tool(&image, &["usr/bin/grub2-mkimage", "usr/bin/real-tool"]),
            Some("usr/bin/real-tool")
        );
    }
}
