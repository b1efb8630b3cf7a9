//! The real coreos-installer (0.27) installs the metal and metal4k disks `layerboot disk`
//! builds from the CoreOS-like fixture, and the installed disks boot the layered image.
//!
//! coreos-installer runs inside a QEMU guest (this host's kernel finds no partitions on a
//! loop device when coreos-installer re-reads the table), see
//! `layerboot_testkit::installer_guest`: once with `--image-file` (the raw image is a
//! virtio disk of the guest) and once with `--image-url` (the same image from an HTTP
//! server on the host's loopback, reached through QEMU user networking), each onto its own
//! blank virtio disk with the sector size of the image, with `--console ttyS0,115200n8`,
//! `--append-karg` and `--ignition-file`. Then each installed disk boots under UEFI and
//! the test checks what only the install can have caused: the appended kernel argument
//! (a fresh nonce) on the booted command line, the kernel's own messages on the serial
//! console (the metal image has no console argument of its own), GRUB's serial console
//! in console.cfg, and the file Ignition wrote from the installed config (another nonce).

use std::path::{Path, PathBuf};
use std::time::Duration;

use layerboot::boottest::{Artifact, BootTestSettings, DiskFormat, ExtraDisk};
use layerboot::boottest::{Firmware, Pattern};
use layerboot_testkit::coreos_image::coreos_image;
use layerboot_testkit::http::FileServer;
use layerboot_testkit::installer_guest::installer_initramfs;

use crate::common::{full_os_boot_lock, kernel, nonce};
use crate::disk::{
    build_disk_from, reported, run_boot, settings, slow_machine_args, work_dir,
    write_first_boot_ignition,
};

/// Small enough to keep the guest's copies short under TCG, large enough for the
/// deployment and ostree's free-space reserve.
const DISK_SIZE: &str = "2GiB";

#[test]
#[ignore = "fails: kernel arguments coreos-installer writes into the BLS entries (--append-karg, --console) do not reach the kernel, because Debian's GRUB has no blscfg and layerboot bakes the options into grub.cfg at build time; run with --ignored"]
fn metal_disk_installed_by_coreos_installer_from_file_and_url_boots() {
    install_and_boot("metal-plain", 512, "coreos-metal");
}

#[test]
#[ignore = "fails: kernel arguments coreos-installer writes into the BLS entries (--append-karg, --console) do not reach the kernel, because Debian's GRUB has no blscfg and layerboot bakes the options into grub.cfg at build time; run with --ignored"]
fn metal4k_disk_installed_by_coreos_installer_from_file_and_url_boots() {
    install_and_boot("metal4k-plain", 4096, "coreos-metal4k");
}

fn install_and_boot(definition: &str, sector_size: u32, name: &str) {
    let img = coreos_image().expect("CoreOS-like fixture");
    let mut build_args = vec!["--size", DISK_SIZE];
    build_args.extend(slow_machine_args());
    let image = build_disk_from(
        &img.oci_ref(),
        definition,
        &format!("{name}.raw"),
        &build_args,
    );
    let initramfs = installer_initramfs(kernel()).expect("installer guest initramfs");

    let n = nonce();
    let karg = format!("layerboot.installer={n}");
    let ign = work_dir().join(format!("{name}.ign"));
    write_first_boot_ignition(&ign, &n);
    let ign_sha256 = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(std::fs::read(&ign).unwrap()))
    };

    let image_size = std::fs::metadata(&image).unwrap().len();
    let target = |how: &str| -> PathBuf {
        let p = work_dir().join(format!("{name}-installed-from-{how}.raw"));
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(image_size).unwrap();
        p
    };
    let (file_target, url_target) = (target("file"), target("url"));

    let _serial = full_os_boot_lock();
    let server = FileServer::start(image.parent().unwrap()).expect("HTTP server");
    let url = format!(
        "http://10.0.2.2:{}/{}",
        server.port(),
        image.file_name().unwrap().to_string_lossy()
    );
    let mut s = BootTestSettings::new(Artifact::DirectKernel {
        kernel: kernel().vmlinuz.clone(),
        initrd: Some(initramfs),
        append: format!("console=ttyS0 quiet lbinst.karg={karg} lbinst.url={url}"),
    });
    s.name = format!("{name}-coreos-installer");
    s.sector_size = sector_size;
    s.timeout = Duration::from_secs(1800);
    s.ignition = Some(ign.clone());
    s.extra_disks = [&image, &file_target, &url_target]
        .into_iter()
        .map(|p| ExtraDisk::File {
            path: p.clone(),
            format: DiskFormat::Raw,
        })
        .collect();
    s.extra_qemu_args = ["-nic", "user,model=virtio-net-pci"]
        .iter()
        .map(Into::into)
        .collect();
    s.expect = pats(&["INSTALL-OK file", "INSTALL-OK url", "INSTALLER-GUEST-DONE"]);
    s.fail_on = pats(&["INSTALL-FAILED", "Kernel panic"]);
    s.wait_for_poweroff = true;
    s.console_log = Some(work_dir().join(format!("{name}-coreos-installer.console.log")));
    let o = run_boot(&s);
    drop(server);
    for serial in ["extra1", "extra2", "extra3"] {
        assert_eq!(
            reported(&o, &format!("INSTALLER-DISK {serial} ")),
            format!("logical_block_size={sector_size}"),
            "the guest's disk {serial}"
        );
    }
    for how in ["file", "url"] {
        eprintln!(
            "coreos-installer --image-{how}: {}s in the guest",
            reported(&o, &format!("INSTALL-OK {how} "))
        );
        let console_cfg: Vec<&str> = o
            .console
            .lines()
            .filter_map(|l| l.split_once(&format!("INSTALLED-CONSOLE-CFG {how} ")))
            .map(|(_, v)| v.trim())
            .collect();
        assert!(
            console_cfg
                .iter()
                .any(|l| l.starts_with("serial --unit=0 --speed=115200"))
                && console_cfg.contains(&"terminal_output serial"),
            "--console ttyS0,115200n8 not in console.cfg ({how}): {console_cfg:?}"
        );
        let bls = reported(&o, &format!("INSTALLED-BLS {how} "));
        assert!(
            bls.contains(&karg) && bls.contains("console=ttyS0,115200n8"),
            "kernel arguments not in the installed BLS entry ({how}): {bls}"
        );
        assert_eq!(
            reported(&o, &format!("INSTALLED-IGNITION {how} ")),
            ign_sha256,
            "the installed Ignition config ({how})"
        );
    }
    // The image was only read: it is the same disk layerboot built.
    let _ = std::fs::remove_file(&image);

    // Both installed disks boot before the verdict, so one run shows both.
    let mut problems = Vec::new();
    for (how, disk) in [("file", &file_target), ("url", &url_target)] {
        let found = boot_installed(
            disk,
            sector_size,
            &img.marker,
            &karg,
            &n,
            &format!("{name}-{how}"),
        );
        if found.is_empty() {
            // Passed: the 2 GiB disk is not needed for inspection.
            let _ = std::fs::remove_file(disk);
        }
        problems.extend(found.into_iter().map(|p| format!("--image-{how}: {p}")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Boots an installed disk to the layered marker and the installed Ignition config's file
/// (a failure there panics); returns what is wrong with the kernel arguments and console.
fn boot_installed(
    disk: &Path,
    sector_size: u32,
    marker: &str,
    karg: &str,
    n: &str,
    name: &str,
) -> Vec<String> {
    let s = settings(
        Artifact::RawDisk(disk.to_path_buf()),
        Firmware::Uefi,
        sector_size,
        &[
            format!("LAYERED-OK {marker}"),
            format!("LAYERED-IGNITION IGN-{n}"),
            "LAYERED-DONE".into(),
        ],
        None,
        &format!("{name}-uefi"),
    );
    let o = run_boot(&s);
    let cmdline = reported(&o, "LAYERED-CMDLINE ");
    let mut problems = Vec::new();
    // coreos-installer writes kernel arguments into the BLS entries (checked in the guest
    // above); they reach the kernel only if GRUB builds its menu from those entries at
    // boot (blscfg), not from a grub.cfg generated when the disk was built.
    for k in [
        karg,
        "console=ttyS0,115200n8",
        "ignition.platform.id=metal",
        "ignition.firstboot",
    ] {
        if !cmdline.split_whitespace().any(|a| a == k) {
            problems.push(format!("{k} not on the booted command line (the installed BLS entry has it; does GRUB read the BLS entries?): {cmdline}"));
        }
    }
    if cmdline.contains("root=") {
        problems.push(format!("root= on the command line: {cmdline}"));
    }
    // The kernel's own messages reach ttyS0 only through the console argument (the
    // metal image has none of its own; the LAYERED lines also arrive over the port).
    // GRUB's serial terminal is checked in console.cfg above: under OVMF its menu reaches
    // ttyS0 through the firmware's console either way.
    if !o
        .console
        .lines()
        .any(|l| l.contains("Kernel command line:") && l.contains(karg))
    {
        problems.push("the kernel did not log to the serial console".into());
    }
    problems
}

fn pats(p: &[&str]) -> Vec<Pattern> {
    p.iter().map(|s| Pattern::parse(s).unwrap()).collect()
}
