//! A QEMU guest that runs the real `coreos-installer install` onto virtio disks, and a
//! loopback HTTP server for its `--image-url`.
//!
//! The install cannot target a host loop device: this host's kernel finds no partitions
//! when coreos-installer re-reads the partition table (BLKRRPART), so it fails before
//! writing Ignition. The guest is the Debian test kernel with an initramfs carrying the
//! host's coreos-installer (the 0.27 that `.ci/install-deps` builds) and what it runs:
//! util-linux's `lsblk` and `blkid`, and udev (`systemd-udevd` and `udevadm settle`; it
//! refuses to run without udev's control socket, and reads partition labels through
//! lsblk, which takes them from udev's database), each with the shared libraries `ldd`
//! names. The modules: virtio disks and network, ext4 (coreos-installer mounts the
//! installed `/boot` to write Ignition, console and kernel arguments), fw_cfg (the
//! Ignition config to install arrives that way). The guest script is
//! `qemu-tests/fixtures/installer-guest.sh`; it takes its instructions from the kernel
//! command line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::initramfs::{cached_initramfs, InitramfsSpec};
use super::kernel::Kernel;
use layerboot::cmd;

const GUEST_SCRIPT: &str = include_str!("../../qemu-tests/fixtures/installer-guest.sh");

/// Where the guest finds the programs below (first on its PATH, before busybox's applets
/// of the same names, e.g. its much smaller `blkid`).
const GUEST_BIN: &str = "/opt/installer/bin";

/// Kernel modules of the installer guest (dependencies are resolved by the builder).
/// ext4 checksums its metadata with crc32c, which the kernel loads on demand through
/// the crypto API: there is no modprobe index here, so it is listed explicitly.
const MODULES: &[&str] = &[
    "qemu_fw_cfg",
    "virtio_pci",
    "virtio_console",
    "virtio_blk",
    "virtio_net",
    "crc32c_generic",
    "ext4",
];

/// udev rules the guest needs: the persistent-storage rules import blkid's properties
/// (LABEL, UUID, PARTLABEL) into udev's database, where lsblk reads them.
const UDEV_RULES: &[&str] = &[
    "/usr/lib/udev/rules.d/50-udev-default.rules",
    "/usr/lib/udev/rules.d/60-persistent-storage.rules",
];

/// The host's coreos-installer 0.27: on PATH or in `~/.cargo/bin` (where `cargo install`
/// puts it).
pub fn coreos_installer() -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("coreos-installer"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    for c in on_path
        .into_iter()
        .chain(cargo_home.map(|h| h.join("bin/coreos-installer")))
    {
        if !c.is_file() {
            continue;
        }
        let version = cmd::run_stdout(Command::new(&c).arg("--version"))?;
        if version.starts_with("coreos-installer 0.27.") {
            return Ok(c);
        }
    }
    bail!("coreos-installer 0.27 not found on PATH or in ~/.cargo/bin: run .ci/install-deps")
}

/// The installer guest's initramfs (cached by recipe: the script, every file's content,
/// the modules, the kernel).
pub fn installer_initramfs(kernel: &Kernel) -> Result<PathBuf> {
    cmd::require("udevadm", "udev")?;
    cmd::require("lsblk", "util-linux")?;
    cmd::require("blkid", "util-linux")?;
    let installer = coreos_installer()?;
    let udevadm = which("udevadm")?;
    let programs: Vec<(PathBuf, &str)> = vec![
        (installer, "coreos-installer"),
        (which("lsblk")?, "lsblk"),
        (which("blkid")?, "blkid"),
        (udevadm.clone(), "udevadm"),
        // udevadm runs as the daemon when invoked by this name (one binary in Debian).
        (udevadm, "systemd-udevd"),
    ];
    let mut spec = InitramfsSpec::new(GUEST_SCRIPT);
    for m in MODULES {
        spec = spec.module(m);
    }
    let mut libs = BTreeSet::new();
    for (host, name) in &programs {
        let content = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        spec = spec.file(&format!("{GUEST_BIN}/{name}"), content, 0o755);
        libs.extend(shared_libraries(host)?);
    }
    for lib in libs {
        // The guest loader looks in the same directories as the host's (the paths ldd
        // printed), with symlinks resolved: the file goes where the name points.
        let content = std::fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
        spec = spec.file(&lib.to_string_lossy(), content, 0o755);
    }
    for rules in UDEV_RULES {
        let content = std::fs::read(rules)
            .with_context(|| format!("reading {rules}: install the Debian package 'udev'"))?;
        spec = spec.file(rules, content, 0o644);
    }
    cached_initramfs("installer-initramfs", kernel, &spec)
}

fn which(program: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .with_context(|| format!("'{program}' not found on PATH"))
}

/// The shared objects `ldd` resolves for `binary`, including the dynamic loader.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = cmd::run_stdout(Command::new("ldd").arg(binary))?;
    let mut libs = Vec::new();
    for line in out.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        match path {
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            Some("not") => bail!("ldd {}: {}", binary.display(), line.trim()),
            _ => {} // linux-vdso.so.1: in the kernel
        }
    }
    Ok(libs)
}
