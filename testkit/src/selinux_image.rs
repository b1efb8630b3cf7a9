//! An SELinux + bootupd variant of the example image, for the disk builder's labelling
//! and bootupd state: the bootupd-layout image ([`super::bootupd_image`]) plus one derived
//! layer carrying
//!
//! - Debian's `selinux-policy-default`, compiled as its maintainer script does it
//!   (`semodule -X 100 -s default -i <every module of .modules>`), but into a staging root
//!   (`semodule -p`) with the host's policycoreutils/semodule-utils, since the image has no
//!   policy tools: `/etc/selinux/default/{policy/policy.33,contexts/…}`;
//! - `/etc/selinux/config` selecting it (`SELINUX=permissive`, `SELINUXTYPE=default`);
//! - the real bootupd (`cargo install bootupd`, the host's `bootupd` binary, which links
//!   only glibc and OpenSSL 3 like the image's curl does) as `/usr/libexec/bootupd` with
//!   `/usr/bin/bootupctl` linking to it, as Fedora ships it, and Fedora's name for GRUB's
//!   environment tool, `/usr/bin/grub2-editenv`, which bootupd runs for its static configs;
//! - a unit that, once booted, reports what the QEMU test checks: the SELinux state, every
//!   file on `/boot`, the physical root (minus ostree's objects and the deployments'
//!   trees) and `/etc` that predates the boot (so the build wrote it) whose context is
//!   `unlabeled_t`, the AVC denials about those files, and `bootupctl status`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::bootupd_image::{bootupd_image, BOOTUPD_TAG};
use super::cache::{cached_fixture, recipe_hash};
use super::kernel::candidate_version;
use super::layered_image::{append_layer, tag_digest, LayerEntry, MARKER_PATH};
use layerboot::cmd;

const RECIPE_VERSION: &[u8] = b"selinux-image v3";
pub const SELINUX_TAG: &str = "selinux";
const POLICY_PACKAGE: &str = "selinux-policy-default";

const CHECK_SCRIPT: &str = r#"#!/bin/sh
# What the QEMU test checks, one line each on the console and the virtio-serial ports.
set -u
report() {
  echo "$1"
  for port in /dev/virtio-ports/*; do
    [ -c "$port" ] && echo "$1" > "$port" 2>/dev/null
  done
}
report "SELINUX-ENFORCE $(cat /sys/fs/selinux/enforce 2>/dev/null || echo no-selinuxfs)"
for p in / /boot /boot/loader /sysroot /sysroot/ostree /sysroot/.coreos-aleph-version.json /boot/bootupd-state.json /etc/layered-ok/layer.conf; do
  report "SELINUX-LABEL $p $(stat -c %C "$p" 2>/dev/null || echo missing)"
done
# Written by the build: older than this boot (the guest clock is the host's).
bt=$(awk '/^btime/ {print $2}' /proc/stat)
out=/run/selinux-check
mkdir -p $out
: > $out/files
for t in /boot /sysroot /etc; do
  dev=$(findmnt -nro SOURCE --target "$t" | sed 's/\[.*//; s|.*/||')
  find "$t" -xdev \( -path /sysroot/ostree/repo/objects -o -path '/sysroot/ostree/deploy/*/deploy/*.[0-9]' \) -prune \
    -o ! -newermt "@$bt" -print0 | xargs -0 -r stat -c "$dev %i %C %n" >> $out/files
done
files=$(wc -l < $out/files)
awk '$3 ~ /unlabeled_t/ || $3 == "?"' $out/files > $out/unlabeled
journalctl -k -b -o cat 2>/dev/null | grep 'avc: *denied' > $out/avc
dmesg 2>/dev/null | grep 'avc: *denied' >> $out/avc
# A denial is about one of those files when its dev="…" ino=… is one of theirs.
awk 'NR == FNR { ours[$1 " " $2] = 1; next }
     { d = ""; i = ""
       if (match($0, /dev="[^"]*"/)) d = substr($0, RSTART + 5, RLENGTH - 6)
       if (match($0, /ino=[0-9]+/)) i = substr($0, RSTART + 4, RLENGTH - 4)
       if ((d " " i) in ours) print }' $out/files $out/avc | sort -u > $out/avc-ours
report "SELINUX-CHECK files=$files unlabeled=$(wc -l < $out/unlabeled) avc-ours=$(wc -l < $out/avc-ours) avc-all=$(sort -u $out/avc | wc -l)"
head -n 20 $out/unlabeled | while read -r line; do report "SELINUX-UNLABELED $line"; done
head -n 20 $out/avc-ours | while read -r line; do report "SELINUX-AVC $line"; done
bootupctl status > $out/status 2>&1; rc=$?
while read -r line; do report "BOOTUPD-STATUS $line"; done < $out/status
report "BOOTUPD-STATUS-RC $rc"
json=$(bootupctl status --json 2>&1); rc=$?
report "BOOTUPD-JSON $(echo "$json" | tr -d '\n')"
report "BOOTUPD-JSON-RC $rc"
# layerboot's own `bootupctl backend install` step (the script it runs in the deploy
# helper's namespace), here where the kernel mounts vfat, into a scratch ESP and a private
# /boot: what the image's bootupctl records and installs, to set beside what the build wrote.
b=/run/bootupctl
mkdir -p $b/out/esp $b/out/boot $b/real-esp
cp /usr/share/layerboot-test/esp.img $b/esp.img
dep=$(ls -d /sysroot/ostree/deploy/*/deploy/*.[0-9] | head -n 1)
unshare --mount --propagation private sh -ec "$(cat /usr/share/layerboot-test/bootupctl-install.sh)" sh \
  $b/esp.img /sysroot "$dep" $b/out /usr/bin/bootupctl backend install --with-static-configs /sysroot > $b/log 2>&1; rc=$?
while read -r line; do report "BOOTUPCTL-LOG $line"; done < $b/log
report "BOOTUPCTL-RC $rc"
report "BOOTUPCTL-STATE $(cat $b/out/boot/bootupd-state.json 2>/dev/null | tr -d '\n')"
report "LAYERBOOT-STATE $(tr -d '\n' < /boot/bootupd-state.json)"
cmp -s $b/out/boot/grub2/grubenv /boot/grub2/grubenv && report "BOOTUPCTL-GRUBENV same" || report "BOOTUPCTL-GRUBENV differs"
mount -o ro LABEL=EFI-SYSTEM $b/real-esp && (cd $b && diff -r out/esp real-esp) > $b/esp-diff 2>&1
report "BOOTUPCTL-ESP-DIFF-RC $?"
while read -r line; do report "BOOTUPCTL-ESP-DIFF $line"; done < $b/esp-diff
umount $b/real-esp
report "SELINUX-DONE"
"#;

/// An empty 16 MiB FAT (the image path goes last).
const ESP_IMAGE_MKFS: &[&str] = &["mkfs.fat", "-C", "-n", "SCRATCH-ESP"];
const ESP_IMAGE_KIB: &str = "16384";

const CHECK_UNIT: &str = "[Unit]
Description=Report SELinux labels and bootupd status (layerboot SELinux fixture)
After=layered-ok.service
RequiresMountsFor=/boot /sysroot

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/libexec/layerboot-selinux-check
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
";

#[derive(Debug, Clone)]
pub struct SelinuxImage {
    /// OCI layout holding the `selinux` tag (and the bootupd and layered images' tags).
    pub oci_dir: PathBuf,
    pub marker: String,
    pub digest: String,
    /// bootupd's version in the image (the crate installed on the host).
    pub bootupd_version: String,
}

impl SelinuxImage {
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{SELINUX_TAG}", self.oci_dir.display())
    }
}

/// The host's `bootupd` (`cargo install bootupd`, see `.ci/install-deps`).
pub fn host_bootupd() -> Result<PathBuf> {
    let mut candidates = vec![];
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/bootupd"));
    }
    candidates.push(PathBuf::from("/usr/local/bin/bootupd"));
    candidates.into_iter().find(|p| p.is_file()).context(
        "bootupd is not installed on this host: run .ci/install-deps (cargo install bootupd)",
    )
}

/// The SELinux + bootupd image, built on first use on top of [`bootupd_image`] and cached.
pub fn selinux_image() -> Result<SelinuxImage> {
    let base = bootupd_image()?;
    let bootupd = host_bootupd()?;
    let bootupd_bytes =
        std::fs::read(&bootupd).with_context(|| format!("reading {}", bootupd.display()))?;
    let bootupd_version = cmd::run_stdout(Command::new(&bootupd).arg("--version"))?
        .split_whitespace()
        .last()
        .context("bootupd --version printed nothing")?
        .to_string();
    let policy_version = candidate_version(POLICY_PACKAGE)?;
    let esp_mkfs = ESP_IMAGE_MKFS.join(" ");
    let parts: Vec<&[u8]> = vec![
        RECIPE_VERSION,
        base.digest.as_bytes(),
        policy_version.as_bytes(),
        &bootupd_bytes,
        CHECK_SCRIPT.as_bytes(),
        CHECK_UNIT.as_bytes(),
        layerboot::disk::BOOTUPCTL_INSTALL_SCRIPT.as_bytes(),
        esp_mkfs.as_bytes(),
        ESP_IMAGE_KIB.as_bytes(),
    ];
    let marker = format!("debian-selinux-{}", recipe_hash(&parts));
    let dir = cached_fixture("debian-selinux", &parts, |staging| {
        build(staging, &base.oci_dir, &policy_version, &bootupd, &marker)
    })?;
    let oci_dir = dir.join("oci");
    Ok(SelinuxImage {
        digest: tag_digest(&oci_dir, SELINUX_TAG)?,
        oci_dir,
        marker,
        bootupd_version,
    })
}

/// Compile the policy package into `root` (its `/etc/selinux/default`), as its postinst does.
fn compile_policy(staging: &Path, version: &str, root: &Path) -> Result<()> {
    cmd::require("semodule", "policycoreutils")?;
    cmd::require("setfiles", "policycoreutils")?;
    let dl = staging.join("download");
    std::fs::create_dir_all(&dl)?;
    cmd::run(
        Command::new("apt-get")
            .args(["download", "-q", &format!("{POLICY_PACKAGE}={version}")])
            .current_dir(&dl),
    )?;
    let deb = std::fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {POLICY_PACKAGE} produced no .deb"))?;
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root))?;
    let share = root.join("usr/share/selinux/default");
    let list = std::fs::read_to_string(share.join(".modules"))
        .with_context(|| format!("reading {}", share.join(".modules").display()))?;
    std::fs::create_dir_all(root.join("var/lib/selinux"))?;
    std::fs::copy(
        "/etc/selinux/semanage.conf",
        root.join("etc/selinux/semanage.conf"),
    )
    .context("copying the host's /etc/selinux/semanage.conf (package libsemanage-common)")?;
    let mut c = Command::new("semodule");
    c.arg("-p")
        .arg(root)
        .args(["-s", "default", "-n", "-X", "100"]);
    for m in list.split_whitespace() {
        c.arg("-i").arg(share.join(format!("{m}.pp.bz2")));
    }
    cmd::run(&mut c)?;
    let fc = root.join("etc/selinux/default/contexts/files/file_contexts");
    if !fc.is_file() || !root.join("etc/selinux/default/policy/policy.33").is_file() {
        bail!("semodule left no {} or policy.33", fc.display());
    }
    Ok(())
}

fn build(
    staging: &Path,
    base_oci: &Path,
    policy_version: &str,
    bootupd: &Path,
    marker: &str,
) -> Result<()> {
    cmd::require("dpkg-deb", "dpkg")?;
    let oci = staging.join("oci");
    cmd::run(Command::new("cp").arg("-al").arg(base_oci).arg(&oci))?;
    let root = staging.join("policy-root");
    compile_policy(staging, policy_version, &root)?;
    let policy_dir = root.join("etc/selinux/default");
    let mut policy_files = vec![];
    walk(&policy_dir, Path::new(""), &mut policy_files)?;
    policy_files.sort();
    // cargo install keeps bootupd's debug info (85 MB): the image gets what a package would.
    cmd::require("strip", "binutils")?;
    let stripped = staging.join("bootupd");
    cmd::run(Command::new("strip").arg("-o").arg(&stripped).arg(bootupd))?;
    // The scratch ESP for the guest's bootupctl run (the image has no mkfs.fat).
    let esp_image = staging.join("esp.img");
    cmd::require("mkfs.fat", "dosfstools")?;
    cmd::run(
        Command::new(ESP_IMAGE_MKFS[0])
            .args(&ESP_IMAGE_MKFS[1..])
            .arg(&esp_image)
            .arg(ESP_IMAGE_KIB),
    )?;
    let mut entries: Vec<LayerEntry> = policy_files
        .into_iter()
        .map(|(rel, source)| LayerEntry::HostFile {
            path: format!("etc/selinux/default/{}", rel.display()),
            mode: 0o644,
            source,
        })
        .collect();
    let file = |path: &str, mode: u32, content: &[u8]| LayerEntry::File {
        path: path.into(),
        mode,
        content: content.to_vec(),
    };
    entries.extend([
        file(
            "etc/selinux/config",
            0o644,
            b"SELINUX=permissive\nSELINUXTYPE=default\n",
        ),
        LayerEntry::HostFile {
            path: "usr/libexec/bootupd".into(),
            mode: 0o755,
            source: stripped.clone(),
        },
        LayerEntry::Symlink {
            path: "usr/bin/bootupctl".into(),
            target: "../libexec/bootupd".into(),
        },
        // bootupd installs its static configs' grubenv with Fedora's name for the tool.
        LayerEntry::Symlink {
            path: "usr/bin/grub2-editenv".into(),
            target: "grub-editenv".into(),
        },
        file(
            "usr/share/layerboot-test/bootupctl-install.sh",
            0o644,
            layerboot::disk::BOOTUPCTL_INSTALL_SCRIPT.as_bytes(),
        ),
        LayerEntry::HostFile {
            path: "usr/share/layerboot-test/esp.img".into(),
            mode: 0o644,
            source: esp_image,
        },
        file(
            "usr/libexec/layerboot-selinux-check",
            0o755,
            CHECK_SCRIPT.as_bytes(),
        ),
        file(
            "usr/lib/systemd/system/layerboot-selinux-check.service",
            0o644,
            CHECK_UNIT.as_bytes(),
        ),
        LayerEntry::Symlink {
            path: "usr/lib/systemd/system/multi-user.target.wants/layerboot-selinux-check.service"
                .into(),
            target: "../layerboot-selinux-check.service".into(),
        },
        file(MARKER_PATH, 0o644, format!("{marker}\n").as_bytes()),
    ]);
    append_layer(
        &oci,
        BOOTUPD_TAG,
        SELINUX_TAG,
        &entries,
        "RUN apt-get install selinux-policy-default && cp bootupd /usr/libexec/ && ostree container commit",
        &[
            ("org.opencontainers.image.title", "debian-selinux"),
            ("io.layerboot.example.marker", marker),
        ],
    )?;
    std::fs::remove_file(&stripped)?;
    for d in [root, staging.join("download")] {
        if d.exists() {
            super::cache::remove_tree(&d)?;
        }
    }
    Ok(())
}

/// Regular files below `dir`, with their paths relative to it.
fn walk(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, PathBuf)>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let (path, rel) = (e.path(), rel.join(e.file_name()));
        let t = e.file_type()?;
        if t.is_dir() {
            walk(&path, &rel, out)?;
        } else if t.is_file() {
            out.push((rel, path));
        }
    }
    Ok(())
}
