//! The live ISO fixture: a small hybrid ISO with the CoreOS live layout (recipe
//! `qemu-tests/fixtures/liveiso/build.sh`), booting the Debian kernel with a busybox
//! initramfs whose script (`init.sh`) prints the embedded `config.ign`, the installer
//! configs it carries, network keyfiles and `/proc/cmdline`, then powers off.
//!
//! Console markers (one per line): `LIVEISO-CMDLINE: <cmdline>`, `LIVEISO-IGNITION-BEGIN`
//! … `LIVEISO-IGNITION-END` (or `LIVEISO-NO-IGNITION`), `LIVEISO-INSTALLER-BEGIN <path>`
//! … `LIVEISO-INSTALLER-END`, `LIVEISO-KEYFILE-BEGIN <name>` … `LIVEISO-KEYFILE-END`,
//! `LIVEISO-DONE`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::cache::cached_fixture;
use super::initramfs::{cached_initramfs, InitramfsSpec};
use super::kernel::debian_kernel;
use layerboot::cmd;

pub const BUILD_SCRIPT: &[u8] = include_bytes!("../../qemu-tests/fixtures/liveiso/build.sh");
pub const INIT_SCRIPT: &str = include_str!("../../qemu-tests/fixtures/liveiso/init.sh");
/// The fixture's default live kernel arguments (as written by build.sh).
pub const DEFAULT_KARGS: &str = "coreos.liveiso=LAYERBOOT-LIVE ignition.firstboot ignition.platform.id=metal quiet loglevel=4 console=ttyS0,115200n8";
pub const VOLUME_ID: &str = "LAYERBOOT-LIVE";
/// The file name of the ISO inside the fixture directory.
pub const ISO_NAME: &str = "live.iso";

/// Fail early, naming the Debian packages, if a mastering tool is missing.
pub fn require_tools() -> Result<()> {
    for (tool, pkg) in [
        ("xorriso", "xorriso"),
        ("grub-mkimage", "grub-common"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("bash", "bash"),
    ] {
        cmd::require(tool, pkg)?;
    }
    for (file, pkg) in [
        ("/usr/lib/ISOLINUX/isolinux.bin", "isolinux"),
        ("/usr/lib/ISOLINUX/isohdpfx.bin", "isolinux"),
        (
            "/usr/lib/syslinux/modules/bios/ldlinux.c32",
            "syslinux-common",
        ),
        ("/usr/lib/grub/x86_64-efi/linux.mod", "grub-efi-amd64-bin"),
    ] {
        anyhow::ensure!(
            Path::new(file).is_file(),
            "{file} not found: install the Debian package '{pkg}' (see .ci/install-deps)"
        );
    }
    Ok(())
}

/// Master a live ISO at `out` from a kernel and initramfs with the fixture recipe;
/// `pad` (optional) is added as `images/pxeboot/rootfs.img` to make the ISO large.
pub fn build_iso(out: &Path, kernel: &Path, initrd: &Path, pad: Option<&Path>) -> Result<()> {
    require_tools()?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let script = dir.path().join("build.sh");
    std::fs::write(&script, BUILD_SCRIPT)
        .with_context(|| format!("writing {}", script.display()))?;
    let mut c = Command::new("bash");
    c.arg(&script).arg(out).arg(kernel).arg(initrd);
    if let Some(p) = pad {
        c.arg(p);
    }
    cmd::run(&mut c)?;
    Ok(())
}

/// The cached fixture ISO (bootable under BIOS and UEFI, as CD-ROM or disk). Copy it
/// before modifying it.
pub fn live_iso() -> Result<PathBuf> {
    let kernel = debian_kernel()?;
    let initrd = cached_initramfs(
        "liveiso-initramfs",
        &kernel,
        &InitramfsSpec::new(INIT_SCRIPT),
    )?;
    let initrd_id = initrd.to_string_lossy().into_owned();
    let dir = cached_fixture(
        "liveiso",
        &[
            BUILD_SCRIPT,
            kernel.release.as_bytes(),
            initrd_id.as_bytes(),
        ],
        |staging| build_iso(&staging.join(ISO_NAME), &kernel.vmlinuz, &initrd, None),
    )?;
    Ok(dir.join(ISO_NAME))
}

/// What the fixture guest printed, parsed from its console log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestReport {
    pub cmdline: Option<String>,
    /// `config.ign` as the guest saw it (`None`: the guest found none).
    pub ignition: Option<String>,
    /// Installer configs by path.
    pub installer: Vec<(String, String)>,
    /// Network keyfiles by name.
    pub keyfiles: Vec<(String, String)>,
    pub done: bool,
}

/// Parse the fixture's console markers (serial line endings normalized).
pub fn parse_guest_report(console: &str) -> GuestReport {
    let mut r = GuestReport::default();
    let text = console.replace("\r\n", "\n").replace('\r', "");
    let mut lines = text.lines();
    let block = |lines: &mut std::str::Lines, end: &str| -> String {
        let mut out = String::new();
        for l in lines.by_ref() {
            if l == end {
                break;
            }
            out.push_str(l);
            out.push('\n');
        }
        out
    };
    while let Some(line) = lines.next() {
        if let Some(c) = line.strip_prefix("LIVEISO-CMDLINE: ") {
            r.cmdline = Some(c.trim_end().to_string());
        } else if line == "LIVEISO-IGNITION-BEGIN" {
            r.ignition = Some(block(&mut lines, "LIVEISO-IGNITION-END"));
        } else if let Some(p) = line.strip_prefix("LIVEISO-INSTALLER-BEGIN ") {
            let body = block(&mut lines, "LIVEISO-INSTALLER-END");
            r.installer.push((p.to_string(), body));
        } else if let Some(n) = line.strip_prefix("LIVEISO-KEYFILE-BEGIN ") {
            let body = block(&mut lines, "LIVEISO-KEYFILE-END");
            r.keyfiles.push((n.to_string(), body));
        } else if line == "LIVEISO-DONE" {
            r.done = true;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_report_parses_markers() {
        let log = "noise\r\nLIVEISO-CMDLINE: BOOT_IMAGE=/x a=1 \r\nLIVEISO-IGNITION-BEGIN\r\n{\"a\":1}\r\nLIVEISO-IGNITION-END\r\nLIVEISO-INSTALLER-BEGIN /etc/coreos/installer.d/0000-customize.yaml\r\ndest-device: /dev/vda\r\nLIVEISO-INSTALLER-END\r\nLIVEISO-DONE\r\n";
        let r = parse_guest_report(log);
        assert_eq!(r.cmdline.as_deref(), Some("BOOT_IMAGE=/x a=1"));
        assert_eq!(r.ignition.as_deref(), Some("{\"a\":1}\n"));
        assert_eq!(
            r.installer,
            vec![(
                "/etc/coreos/installer.d/0000-customize.yaml".to_string(),
                "dest-device: /dev/vda\n".to_string()
            )]
        );
        assert!(r.done && r.keyfiles.is_empty());
        assert_eq!(parse_guest_report("LIVEISO-NO-IGNITION\n").ignition, None);
    }

    #[test]
    fn default_kargs_match_the_recipe() {
        let script = std::str::from_utf8(BUILD_SCRIPT).unwrap();
        let line = script.lines().find(|l| l.starts_with("kargs=")).unwrap();
        assert_eq!(
            line.trim_start_matches("kargs=\"")
                .trim_end_matches('"')
                .replace("$volid", VOLUME_ID),
            DEFAULT_KARGS
        );
    }
}
