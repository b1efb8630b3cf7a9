//! The real coreos-installer (0.27) installs the metal and metal4k disks `layerboot disk`
//! builds from the CoreOS-like fixture, and the installed disks boot the layered image.
//!
//! coreos-installer runs inside a QEMU guest (this host's kernel finds no partitions on a
//! loop device when coreos-installer re-reads the table), see
//! `layerboot_testkit::installer_guest`, onto a blank virtio disk with the sector size of
//! the image: the metal disk with `--image-file` (the raw image is a virtio disk of the
//! guest), the metal4k disk with `--image-url` (the image from an HTTP server on the
//! host's loopback, reached through QEMU user networking); each with
//! `--console ttyS0,115200n8`, `--append-karg` and `--ignition-file`. Then the installed
//! disk boots under UEFI and the test checks what only the install can have caused: the
//! appended kernel argument (a fresh nonce) on the booted command line, the kernel's own
//! messages on the serial console (the metal image has no console argument of its own),
//! GRUB's serial console in console.cfg, and the file Ignition wrote from the installed
//! config (another nonce). The kernel arguments reach the kernel because the fixture's GRUB
//! builds its menu from the BLS entries coreos-installer edited (blscfg), as CoreOS's does.
//! One install per image keeps the suite's time: each image and each way of reading it is
//! installed once.

use std::path::Path;
use std::time::Duration;

use layerboot::boottest::{Artifact, BootTestSettings, DiskFormat, ExtraDisk};
use layerboot::boottest::{Firmware, Pattern};
use layerboot_testkit::coreos_image::coreos_image;
use layerboot_testkit::http::FileServer;
use layerboot_testkit::installer_guest::installer_initramfs;

use crate::common::{full_os_boot_lock, kernel, nonce};
use crate::disk::{
    build_disk_from, coreos_sysroot_problems, reported, run_boot, settings, slow_machine_args,
    work_dir, write_first_boot_ignition, GUEST_CPU,
};

/// Small enough to keep the guest's copies short under TCG, large enough for the
/// deployment and ostree's free-space reserve.
const DISK_SIZE: &str = "2GiB";

#[test]
fn metal_disk_installed_by_coreos_installer_from_a_file_boots() {
    install_and_boot("metal-plain", 512, "coreos-metal", Source::File);
}

#[test]
fn metal4k_disk_installed_by_coreos_installer_from_a_url_boots() {
    install_and_boot("metal4k-plain", 4096, "coreos-metal4k", Source::Url);
}

/// Where coreos-installer reads the image.
#[derive(Clone, Copy)]
enum Source {
    /// `--image-file`: the raw image as a disk of the guest.
    File,
    /// `--image-url`: the raw image from an HTTP server on the host's loopback.
    Url,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Url => "url",
        }
    }
}

fn install_and_boot(definition: &str, sector_size: u32, name: &str, source: Source) {
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

    let how = source.name();
    let image_size = std::fs::metadata(&image).unwrap().len();
    let target = work_dir().join(format!("{name}-installed-from-{how}.raw"));
    std::fs::File::create(&target)
        .and_then(|f| f.set_len(image_size))
        .unwrap();

    let _serial = full_os_boot_lock();
    let (server, url_arg, disks) = match source {
        Source::File => (None, String::new(), vec![&image, &target]),
        Source::Url => {
            let server = FileServer::start(image.parent().unwrap()).expect("HTTP server");
            let url = format!(
                "http://10.0.2.2:{}/{}",
                server.port(),
                image.file_name().unwrap().to_string_lossy()
            );
            (Some(server), format!(" lbinst.url={url}"), vec![&target])
        }
    };
    let mut s = BootTestSettings::new(Artifact::DirectKernel {
        kernel: kernel().vmlinuz.clone(),
        initrd: Some(initramfs),
        append: format!("console=ttyS0 quiet lbinst.karg={karg}{url_arg}"),
    });
    s.name = format!("{name}-coreos-installer");
    s.cpu_model = Some(GUEST_CPU.into());
    s.sector_size = sector_size;
    s.timeout = Duration::from_secs(1800);
    s.ignition = Some(ign.clone());
    s.extra_disks = disks
        .iter()
        .map(|p| ExtraDisk::File {
            path: (*p).clone(),
            format: DiskFormat::Raw,
        })
        .collect();
    s.extra_qemu_args = ["-nic", "user,model=virtio-net-pci"]
        .iter()
        .map(Into::into)
        .collect();
    s.expect = pats(&[&format!("INSTALL-OK {how}"), "INSTALLER-GUEST-DONE"]);
    s.fail_on = pats(&["INSTALL-FAILED", "Kernel panic"]);
    s.wait_for_poweroff = true;
    s.console_log = Some(work_dir().join(format!("{name}-coreos-installer.console.log")));
    let o = run_boot(&s);
    if let Some(server) = &server {
        // The guest has no other copy of the image: the install read it from the server.
        let wanted = format!("/{}", image.file_name().unwrap().to_string_lossy());
        let requests = server.requests();
        assert!(
            requests
                .iter()
                .any(|(path, status)| *path == wanted && *status == 200),
            "coreos-installer fetched {wanted} from the HTTP server: {requests:?}"
        );
    }
    drop(server);
    for i in 1..=disks.len() {
        let serial = format!("extra{i}");
        assert_eq!(
            reported(&o, &format!("INSTALLER-DISK {serial} ")),
            format!("logical_block_size={sector_size}"),
            "the guest's disk {serial}"
        );
    }
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
    // The image was only read: it is the same disk layerboot built.
    let _ = std::fs::remove_file(&image);

    let problems = boot_installed(
        &target,
        sector_size,
        &img.marker,
        &karg,
        &n,
        &format!("{name}-{how}"),
    );
    assert!(
        problems.is_empty(),
        "--image-{how}: {}",
        problems.join("\n")
    );
    // Passed: the 2 GiB disk is not needed for inspection.
    let _ = std::fs::remove_file(&target);
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
    problems.extend(coreos_sysroot_problems(&o));
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
