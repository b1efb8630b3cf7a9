//! A CoreOS-like variant of the example image: what `layerboot disk` reads from a real
//! Fedora CoreOS / RHCOS image, on top of the Debian example (tag `coreos`):
//! - `/usr/share/coreos-assembler/platforms.json` and `image.json` with CoreOS's keys
//!   (values from fedora-coreos-config's `platforms.yaml` and `image-base.yaml`, x86_64);
//! - the label `com.coreos.osname` (the stateroot);
//! - the initramfs with a stand-in for CoreOS's root-by-label logic appended (a second
//!   cpio archive, which the kernel unpacks over the first): without `root=` on the
//!   command line, a systemd generator mounts `/dev/disk/by-label/root` on `/sysroot`,
//!   and a dracut cmdline hook tells dracut where root is, so it does not stop on the
//!   missing argument;
//! - in the same archive, a stand-in for CoreOS's `coreos-ignition-setup-user`: on the
//!   first boot, the Ignition config `coreos-installer install --ignition-file` left in
//!   `/boot/ignition/config.ign` becomes Ignition's `/usr/lib/ignition/user.ign` (Debian's
//!   Ignition ships no such step; without it an installed disk boots without its config);
//! - GRUB 2.14's modules from Debian sid over the image's own (2.06) in
//!   `/usr/lib/grub/{x86_64-efi,i386-pc}`, for the `blscfg` CoreOS's GRUB has: the menu then
//!   comes from the BLS entries at boot, so kernel arguments `coreos-installer install`
//!   writes there reach the kernel. The image's `grub-mkimage` stays 2.06 (sid's needs a
//!   newer C library), and the few 2.06-only modules stay in the directories (no 2.14
//!   module depends on them);
//! - a unit that reports how the booted system mounts the physical root (`/sysroot`), so a
//!   boot shows CoreOS's read-only sysroot took effect;
//! - a marker of its own, so a boot proves this image booted.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::cache::{cached_fixture, recipe_hash};
use super::layered_image::{
    append_layer, layered_image, tag_digest, LayerEntry, LAYERED_TAG, MARKER_PATH,
};
use layerboot::cmd;
use layerboot::disk::SourceImage;
use layerboot::io::newc::NewcWriter;

pub const COREOS_TAG: &str = "coreos";
/// The stateroot the image names.
pub const OSNAME: &str = "fedora-coreos";

const RECIPE_VERSION: &[u8] = b"coreos-image v5";

/// x86_64 entries of fedora-coreos-config's platforms.yaml (qemu, aws, azure, packet).
pub const PLATFORMS_JSON: &str = r#"{
  "aws": {
    "grub_commands": ["serial --speed=115200", "terminal_input serial console", "terminal_output serial console"],
    "kernel_arguments": ["console=tty0", "console=ttyS0,115200n8"]
  },
  "azure": {
    "kernel_arguments": ["console=tty0", "console=ttyS0,115200n8"]
  },
  "packet": {
    "grub_commands": ["serial --unit=1 --speed=115200", "terminal_input serial", "terminal_output serial"],
    "kernel_arguments": ["console=ttyS1,115200n8"]
  },
  "qemu": {
    "grub_commands": ["serial --speed=115200", "terminal_input serial console", "terminal_output serial console"],
    "kernel_arguments": ["console=tty0", "console=ttyS0,115200n8"]
  }
}
"#;

/// fedora-coreos-config's image-base.yaml as the image carries it, with one extra karg of
/// the fixture's own so tests see image.json's `extra-kargs` arrive.
pub const IMAGE_JSON: &str = r#"{
  "size": 10,
  "extra-kargs": ["mitigations=auto,nosmt", "layerboot.fixture=coreos"],
  "ignition-network-kcmdline": [],
  "ostree-remote": "fedora",
  "vmware-os-type": "fedora64Guest",
  "vmware-hw-version": 17,
  "compressor": "xz"
}
"#;

/// Systemd generator (in the initramfs): with no `root=`, mount the filesystem labelled
/// `root` on /sysroot, as CoreOS's initramfs does. Shell builtins plus mkdir/ln only.
const ROOT_GENERATOR: &str = r#"#!/bin/sh
# layerboot test fixture: stands in for CoreOS's root-by-label logic.
read -r cmdline < /proc/cmdline
for a in $cmdline; do
    case "$a" in root=*) exit 0 ;; esac
done
out="$1"
mkdir -p "$out/initrd-root-fs.target.requires"
printf '%s\n' '[Unit]' 'Description=/sysroot (root found by label, no root= karg)' \
    'Before=initrd-root-fs.target' \
    'Requires=dev-disk-by\x2dlabel-root.device' 'After=dev-disk-by\x2dlabel-root.device' \
    '[Mount]' 'What=/dev/disk/by-label/root' 'Where=/sysroot' 'Options=rw' \
    > "$out/sysroot.mount"
ln -sf ../sysroot.mount "$out/initrd-root-fs.target.requires/sysroot.mount"
"#;

/// dracut cmdline hook: dracut stops on an empty `root=` unless told where root is.
const CMDLINE_HOOK: &str = r#"# layerboot test fixture: root by label when the command line names none.
if [ -z "$root" ]; then
    root=block:/dev/disk/by-label/root
    rootok=1
fi
"#;

/// Initramfs unit: before Ignition fetches its config on the first boot, copy the one
/// coreos-installer wrote to the boot filesystem to where Ignition reads a user config.
const SETUP_USER_UNIT: &str = r#"[Unit]
Description=Ignition config from /boot/ignition (layerboot fixture, as CoreOS's coreos-ignition-setup-user)
DefaultDependencies=no
ConditionKernelCommandLine=ignition.firstboot
Before=ignition-fetch-offline.service
Requires=dev-disk-by\x2dlabel-boot.device
After=dev-disk-by\x2dlabel-boot.device

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/libexec/layerboot-ignition-setup-user
"#;

const SETUP_USER_SCRIPT: &str = r#"#!/bin/sh
# layerboot test fixture: stands in for CoreOS's coreos-ignition-setup-user.
set -eu
mnt=/run/layerboot-ignition-boot
mkdir -p "$mnt"
mount -o ro /dev/disk/by-label/boot "$mnt"
if [ -f "$mnt/ignition/config.ign" ]; then
    mkdir -p /usr/lib/ignition
    cp "$mnt/ignition/config.ign" /usr/lib/ignition/user.ign
    echo "layerboot: Ignition config from /boot/ignition/config.ign" > /dev/kmsg
fi
umount "$mnt"
"#;

/// Reports the mount options of `/sysroot` (CoreOS makes it read-only through ostree's
/// `sysroot.readonly`) and whether `/etc` and `/var` stay writable, before the example's
/// marker ends the boot.
const SYSROOT_REPORT_UNIT: &str = r#"[Unit]
Description=Report how /sysroot is mounted (layerboot fixture)
After=local-fs.target
Before=layered-ok.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo "COREOS-SYSROOT $(grep " /sysroot " /proc/self/mounts | cut -d" " -f4)"'
ExecStart=/bin/sh -c 'for d in /etc /var; do if touch $d/.layerboot-probe; then rm -f $d/.layerboot-probe; echo "COREOS-WRITABLE $d yes"; else echo "COREOS-WRITABLE $d no"; fi; done'
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"#;
const SYSROOT_REPORT_PATH: &str = "usr/lib/systemd/system/layerboot-sysroot-report.service";

#[derive(Debug, Clone)]
pub struct CoreosImage {
    pub oci_dir: PathBuf,
    pub marker: String,
    pub digest: String,
}

impl CoreosImage {
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{COREOS_TAG}", self.oci_dir.display())
    }
}

/// The CoreOS-like image, built on first use on top of the example image and cached.
pub fn coreos_image() -> Result<CoreosImage> {
    let layered = layered_image()?;
    let parts: Vec<&[u8]> = vec![
        RECIPE_VERSION,
        layered.digest.as_bytes(),
        PLATFORMS_JSON.as_bytes(),
        IMAGE_JSON.as_bytes(),
        ROOT_GENERATOR.as_bytes(),
        CMDLINE_HOOK.as_bytes(),
        SETUP_USER_UNIT.as_bytes(),
        SETUP_USER_SCRIPT.as_bytes(),
        super::sid_grub::RECIPE,
        SYSROOT_REPORT_UNIT.as_bytes(),
    ];
    let marker = format!("debian-coreos-{}", recipe_hash(&parts));
    let dir = cached_fixture("debian-coreos", &parts, |staging| {
        build(staging, &layered.oci_dir, &marker)
    })?;
    let oci_dir = dir.join("oci");
    Ok(CoreosImage {
        digest: tag_digest(&oci_dir, COREOS_TAG)?,
        oci_dir,
        marker,
    })
}

/// The image's initramfs with the root-by-label stand-ins appended as a second archive.
pub fn extended_initramfs(original: &[u8]) -> Result<Vec<u8>> {
    let mut out = original.to_vec();
    // The kernel finds the next archive only at a 4-byte boundary.
    out.resize(original.len().div_ceil(4) * 4, 0);
    let mut w = NewcWriter::new(Vec::new(), 1);
    // Only directories under usr/: dracut's archive has `lib -> usr/lib` (and bin, sbin,
    // lib64 likewise), and the kernel replaces an existing entry of another type, so a
    // `lib` directory here would hide all of /usr/lib behind an empty /lib (journald,
    // dracut's own hooks, … gone).
    for d in [
        "usr",
        "usr/lib",
        "usr/lib/systemd",
        "usr/lib/systemd/system-generators",
        "usr/lib/dracut",
        "usr/lib/dracut/hooks",
        "usr/lib/dracut/hooks/cmdline",
        "usr/libexec",
        "usr/lib/systemd/system",
        "usr/lib/systemd/system/ignition-fetch-offline.service.requires",
    ] {
        w.dir(d, 0o755)?;
    }
    w.file(
        "usr/lib/systemd/system-generators/layerboot-root-by-label",
        ROOT_GENERATOR.as_bytes(),
        0o755,
    )?;
    w.file(
        "usr/lib/dracut/hooks/cmdline/05-layerboot-root-by-label.sh",
        CMDLINE_HOOK.as_bytes(),
        0o644,
    )?;
    w.file(
        "usr/lib/systemd/system/layerboot-ignition-setup-user.service",
        SETUP_USER_UNIT.as_bytes(),
        0o644,
    )?;
    w.symlink(
        "usr/lib/systemd/system/ignition-fetch-offline.service.requires/layerboot-ignition-setup-user.service",
        "../layerboot-ignition-setup-user.service",
    )?;
    w.file(
        "usr/libexec/layerboot-ignition-setup-user",
        SETUP_USER_SCRIPT.as_bytes(),
        0o755,
    )?;
    out.extend(w.finish()?);
    Ok(out)
}

fn build(staging: &Path, layered_oci: &Path, marker: &str) -> Result<()> {
    let oci = staging.join("oci");
    cmd::run(Command::new("cp").arg("-al").arg(layered_oci).arg(&oci))?;
    let image = SourceImage::open(&oci, Some(LAYERED_TAG))?;
    let kver = image
        .labels
        .get("ostree.linux")
        .context("the example image has no ostree.linux label")?
        .clone();
    let initramfs_path = format!("usr/lib/modules/{kver}/initramfs.img");
    let files = image.read_files_up_to(&[&initramfs_path], 1 << 30)?;
    let initramfs = files
        .get(&initramfs_path)
        .with_context(|| format!("the example image has no /{initramfs_path}"))?;
    let file = |path: &str, content: Vec<u8>, mode: u32| LayerEntry::File {
        path: path.to_string(),
        mode,
        content,
    };
    // Downloads and unpacked packages, removed once the layer holds the modules.
    let grub_work = staging.join("sid-grub-work");
    let grub = super::sid_grub::fetch(&grub_work)?;
    eprintln!(
        "coreos fixture: GRUB {} modules from Debian sid",
        grub.version
    );
    let mut entries = vec![
        file(
            layerboot::disk::coreos::PLATFORMS_JSON,
            PLATFORMS_JSON.as_bytes().to_vec(),
            0o644,
        ),
        file(
            layerboot::disk::coreos::IMAGE_JSON,
            IMAGE_JSON.as_bytes().to_vec(),
            0o644,
        ),
        file(&initramfs_path, extended_initramfs(initramfs)?, 0o600),
        file(MARKER_PATH, format!("{marker}\n").into_bytes(), 0o644),
        file(
            SYSROOT_REPORT_PATH,
            SYSROOT_REPORT_UNIT.as_bytes().to_vec(),
            0o644,
        ),
        LayerEntry::Symlink {
            path: "usr/lib/systemd/system/multi-user.target.wants/layerboot-sysroot-report.service"
                .into(),
            target: "../layerboot-sysroot-report.service".into(),
        },
    ];
    entries.extend(
        super::sid_grub::image_files(&grub)?
            .into_iter()
            .map(|(path, source, mode)| LayerEntry::HostFile { path, mode, source }),
    );
    append_layer(
        &oci,
        LAYERED_TAG,
        COREOS_TAG,
        &entries,
        "COPY platforms.json image.json; RUN (root by label in the initramfs) && (GRUB 2.14 modules from sid) && ostree container commit",
        &[
            ("org.opencontainers.image.title", "debian-coreos"),
            ("io.layerboot.example.marker", marker),
            (layerboot::disk::coreos::OSNAME_LABEL, OSNAME),
        ],
    )?;
    super::cache::remove_tree(&grub_work)?;
    Ok(())
}
