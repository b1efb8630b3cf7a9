//! The image's own `bootupctl backend install`, as osbuild's `org.osbuild.bootupd` stage
//! runs it on a CoreOS build: `chroot` into the deployment, the physical root as the
//! target. The EFI component then reaches the ESP, and bootupd records its state, exactly
//! as the bootupd *of that image* does it (its version's layout rules, metadata filtering
//! and state format), instead of as layerboot's re-implementation
//! ([`super::bootloader::bootupd`], [`super::bootupd_state`]) guesses them.
//!
//! What bootupctl needs, and how it gets it here without touching the build host:
//! - a vfat filesystem mounted at `<target>/boot/efi` (it refuses anything else): a
//!   scratch filesystem made like the disk's ESP, loop-mounted;
//! - `<target>/boot`: a private tmpfs, not the staged boot directory. bootupd ends its
//!   writes with a freeze/thaw of the filesystem holding them, which for the staged
//!   directory would be the build host's own filesystem;
//! - the physical root where a booted CoreOS has it, the deployment's `/sysroot`, and the
//!   kernel's `/proc`, `/sys`, `/dev` (it reads `/proc/self/exe` for its static-configs
//!   record), as osbuild binds them;
//! - no `--device`: the BIOS component (grub2-install onto a block device whose partitions
//!   this host's kernel may not see) is skipped by bootupctl and stays layerboot's, made
//!   from the image's own GRUB modules; no `--write-uuid`: it reads the UUID of the
//!   filesystem mounted on `/boot`, which here is not yet the boot filesystem, so
//!   layerboot writes the same `bootuuid.cfg` from the UUID it gives that filesystem.
//!
//! Everything happens in a private mount namespace entered from the deploy helper's
//! ([`super::image_exec::ImageExec::private_namespace`]); what bootupctl produced is
//! copied out to a scratch directory before the namespace, and its mounts, go.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::bootloader::bootupd as payload;
use super::fs::FsSpec;
use super::image_exec::{find_tool, ImageExec};
use crate::io::RootedDir;

/// Where bootupd's CLI is in an image (a link to the multi-call `bootupd`).
pub const BOOTUPCTL: &str = "usr/bin/bootupctl";

/// What the image's bootupctl left, copied out of its namespace.
#[derive(Debug, Clone)]
pub struct ImageInstall {
    /// Its version (`bootupctl --version`).
    pub version: String,
    /// The ESP as it filled it (host path).
    pub esp: PathBuf,
    /// `/boot` as it left it: `bootupd-state.json`, `grub2/` (host path).
    pub boot: PathBuf,
}

/// Who installs the EFI component of a bootupd image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installer {
    /// The image's own bootupctl.
    Image,
    /// layerboot's installer: no bootupd payload, no bootupctl the build host can run, or
    /// a disk that does not boot UEFI (bootupctl installs BIOS only onto a device).
    Layerboot,
    /// layerboot's installer, because the build host's kernel cannot mount vfat, and
    /// bootupctl installs only into a mounted vfat ESP.
    HostLacksVfat,
}

/// Who installs the EFI component (pure): `runnable_bootupctl` = the image ships
/// bootupd's payload and a bootupctl the build host can run; `host_filesystems` = the
/// build host's `/proc/filesystems`.
pub fn installer(uefi: bool, runnable_bootupctl: bool, host_filesystems: &str) -> Installer {
    if !(uefi && runnable_bootupctl) {
        Installer::Layerboot
    } else if host_filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("vfat"))
    {
        Installer::Image
    } else {
        Installer::HostLacksVfat
    }
}

/// [`installer`] for `image` on this build host.
pub fn installer_here(image: &RootedDir, uefi: bool) -> Installer {
    let runnable = payload::present(image) && find_tool(image, &[BOOTUPCTL]).is_some();
    // Unreadable (no /proc): taken as no vfat, and said so.
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    installer(uefi, runnable, &filesystems)
}

/// bootupctl's arguments: static configs when the image ships them (as CoreOS builds
/// install them), the physical root as bootupd sees it on a booted CoreOS.
pub fn install_args(static_configs: bool) -> Vec<&'static str> {
    let mut a = vec!["backend", "install"];
    if static_configs {
        a.push("--with-static-configs");
    }
    a.push(SYSROOT_IN_IMAGE);
    a
}

const SYSROOT_IN_IMAGE: &str = "/sysroot";

/// Positional: ESP image, physical root, deployment, output directory; then the command
/// to run chrooted. `-e`: the first failing step ends it (and the namespace undoes the
/// mounts).
pub const SCRIPT: &str = r#"esp=$1 sysroot=$2 dep=$3 out=$4; shift 4
mount -t tmpfs -o mode=0755 layerboot-boot "$sysroot/boot"
mkdir -m 0755 "$sysroot/boot/efi"
mount -o loop "$esp" "$sysroot/boot/efi"
mount --rbind "$sysroot" "$dep/sysroot"
for d in dev proc sys; do mount --rbind "/$d" "$dep/$d"; done
for d in run tmp; do if [ -d "$dep/$d" ]; then mount -t tmpfs layerboot-scratch "$dep/$d"; fi; done
chroot "$dep" "$@"
cp -r "$sysroot/boot/efi/." "$out/esp"
umount -R "$dep/sysroot"
umount "$sysroot/boot/efi"
rmdir "$sysroot/boot/efi"
cp -a "$sysroot/boot/." "$out/boot"
"#;

/// Run the image's `bootupctl backend install` for a disk whose ESP is `esp` (its
/// filesystem: size, label, id, sector size), with `work` as scratch space.
pub fn install(
    image: &RootedDir,
    exec: &ImageExec,
    sysroot: &Path,
    esp: &FsSpec,
    work: &Path,
) -> Result<ImageInstall> {
    if !image.is_dir("sysroot") {
        bail!("the image has no /sysroot, where bootupctl expects the physical root (every bootable ostree image has one)");
    }
    let out = work.join("bootupctl");
    let (esp_out, boot_out) = (out.join("esp"), out.join("boot"));
    for d in [&esp_out, &boot_out] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let empty = out.join("empty");
    std::fs::create_dir_all(&empty)?;
    let esp_img = out.join("esp.img");
    super::fs::make_fs(esp, &empty, &esp_img)?;

    let version = image_version(exec, &out)?;
    let static_configs = image.is_file(Path::new(payload::STATIC_DIR).join("grub-static-pre.cfg"));
    let mut c = exec.private_namespace();
    c.args(["sh", "-ec", SCRIPT, "sh"])
        .arg(&esp_img)
        .arg(sysroot)
        .arg(&exec.deployment)
        .arg(&out)
        .arg(Path::new("/").join(BOOTUPCTL))
        .args(install_args(static_configs));
    let output = crate::cmd::run(&mut c)
        .with_context(|| format!("running the image's bootupctl {version} backend install"))?;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        log::debug!("bootupctl: {line}");
    }
    std::fs::remove_file(&esp_img).ok();
    let state = boot_out.join(super::bootupd_state::STATE_FILE);
    if !state.is_file() {
        bail!(
            "the image's bootupctl {version} backend install wrote no /boot/{}",
            super::bootupd_state::STATE_FILE
        );
    }
    Ok(ImageInstall {
        version,
        esp: esp_out,
        boot: boot_out,
    })
}

fn image_version(exec: &ImageExec, scratch: &Path) -> Result<String> {
    let inside = Path::new("/").join(BOOTUPCTL);
    super::bootupd_state::ask_version(&mut exec.command(&inside.to_string_lossy(), scratch))
        .context("asking the image's bootupctl its version")
}

/// How the ESP layerboot planned and the one the image's bootupctl filled compare: files
/// only layerboot plans (`bootuuid.cfg`) are added; a file both have with other content is
/// reported (bootupctl's is kept: it is the image's own rule).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EspMerge {
    pub added: Vec<String>,
    pub differing: Vec<String>,
}

/// Merge layerboot's planned ESP files (`planned`: ESP-relative path, host source) into
/// `esp`, the tree bootupctl filled.
pub fn merge_esp(esp: &Path, planned: &[(String, PathBuf)]) -> Result<EspMerge> {
    let mut m = EspMerge::default();
    for (rel, src) in planned {
        let dest = esp.join(rel);
        match std::fs::read(&dest) {
            Ok(theirs) => {
                let ours =
                    std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
                if ours != theirs {
                    m.differing.push(rel.clone());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dest.parent().expect("relative path has a parent"))?;
                std::fs::copy(src, &dest).with_context(|| format!("staging {rel} for the ESP"))?;
                m.added.push(rel.clone());
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", dest.display())),
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_s_bootupctl_installs_where_it_can() {
        const WITH_VFAT: &str = "nodev\tsysfs\n\text4\n\tvfat\n\txfs\n";
        // This project's CI host: a kernel built without FAT.
        const WITHOUT: &str =
            "nodev\tsysfs\nnodev\ttmpfs\n\text4\n\tsquashfs\nnodev\tfuse\n\txfs\n";
        let cases = [
            (true, true, WITH_VFAT, Installer::Image),
            (true, true, WITHOUT, Installer::HostLacksVfat),
            (true, true, "", Installer::HostLacksVfat),
            (true, false, WITH_VFAT, Installer::Layerboot),
            (false, true, WITH_VFAT, Installer::Layerboot),
            (true, true, "\tmsdos\n\tfuseblk\n", Installer::HostLacksVfat),
        ];
        for (uefi, runnable, fs, want) in cases {
            assert_eq!(
                installer(uefi, runnable, fs),
                want,
                "{uefi} {runnable} {fs:?}"
            );
        }
    }

    #[test]
    fn arguments_follow_the_image() {
        let cases: [(bool, &[&str]); 2] = [
            (
                true,
                &["backend", "install", "--with-static-configs", "/sysroot"],
            ),
            (false, &["backend", "install", "/sysroot"]),
        ];
        for (static_configs, want) in cases {
            assert_eq!(install_args(static_configs), want, "{static_configs}");
        }
    }

    #[test]
    fn planned_files_fill_what_bootupctl_left_out_and_differences_are_reported() {
        let t = tempfile::tempdir().unwrap();
        let esp = t.path().join("esp");
        let src = t.path().join("src");
        for d in [esp.join("EFI/fedora"), src.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(esp.join("EFI/fedora/grub.cfg"), "theirs\n").unwrap();
        std::fs::write(esp.join("EFI/fedora/shimx64.efi"), "shim").unwrap();
        for (name, text) in [
            ("cfg", "ours\n"),
            ("shim", "shim"),
            ("uuid", "set BOOT_UUID=x\n"),
        ] {
            std::fs::write(src.join(name), text).unwrap();
        }
        let planned = [
            ("EFI/fedora/grub.cfg".to_string(), src.join("cfg")),
            ("EFI/fedora/shimx64.efi".to_string(), src.join("shim")),
            ("EFI/fedora/bootuuid.cfg".to_string(), src.join("uuid")),
        ];
        let m = merge_esp(&esp, &planned).unwrap();
        assert_eq!(
            m,
            EspMerge {
                added: vec!["EFI/fedora/bootuuid.cfg".into()],
                differing: vec!["EFI/fedora/grub.cfg".into()],
            }
        );
        assert_eq!(
            std::fs::read_to_string(esp.join("EFI/fedora/grub.cfg")).unwrap(),
            "theirs\n",
            "bootupctl's file is kept"
        );
        assert_eq!(
            std::fs::read_to_string(esp.join("EFI/fedora/bootuuid.cfg")).unwrap(),
            "set BOOT_UUID=x\n"
        );
    }
}
