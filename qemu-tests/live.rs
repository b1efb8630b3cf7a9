//! The live ISO and PXE set `layerboot disk -p live` builds from the live-capable example
//! image, booted as kola's iso scenarios boot CoreOS's: the ISO of the bootupd-layout
//! variant as a CD under UEFI through the image's signed chain (shim, then its GRUB),
//! customized by coreos-installer (its Ignition applied, its kernel argument on the
//! command line); the ISO as a CD under BIOS, customized by layerboot; the PXE kernel with
//! the rootfs appended to the initramfs; the hybrid ISO written to a disk under UEFI,
//! installing the layered image offline onto a blank disk, which then boots. Each reaches
//! the derived layer's marker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use layerboot::boottest::{
    Artifact, BootTestSettings, DiskFormat, ExtraDisk, Firmware, Outcome, Pattern,
};
use layerboot_testkit::live_image::{live_bootupd_image, live_image, LiveImage};

use crate::common::{full_os_boot_lock, Scratch};
use crate::disk::{reported, run_boot, settings, urlencode, work_dir, write_first_boot_ignition};

fn image() -> &'static LiveImage {
    static I: OnceLock<LiveImage> = OnceLock::new();
    I.get_or_init(|| live_image().expect("live example image"))
}

fn bootupd_image() -> &'static LiveImage {
    static I: OnceLock<LiveImage> = OnceLock::new();
    I.get_or_init(|| live_bootupd_image().expect("live bootupd-layout example image"))
}

/// The live artifacts, built once per test process.
struct Live {
    iso: PathBuf,
    kernel: PathBuf,
    initramfs: PathBuf,
    rootfs: PathBuf,
    /// The ISO's default kernel arguments.
    kargs: String,
}

fn live() -> &'static Live {
    static L: OnceLock<Live> = OnceLock::new();
    L.get_or_init(|| build_live(image(), "live"))
}

/// The bootupd-layout variant's live artifacts (its ISO's UEFI boot is shim, then GRUB).
fn live_bootupd() -> &'static Live {
    static L: OnceLock<Live> = OnceLock::new();
    L.get_or_init(|| build_live(bootupd_image(), "live-bootupd"))
}

fn build_live(image: &LiveImage, dir: &str) -> Live {
    {
        let out = work_dir().join(dir);
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_layerboot"))
            .args(["-q", "disk", &image.oci_ref(), "-p", "live", "--json"])
            .arg("--output-dir")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let other = |entry: &str| {
            r["other_artifacts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["stream_entry"] == entry)
                .map(|a| PathBuf::from(a["output"].as_str().unwrap()))
                .unwrap()
        };
        Live {
            iso: PathBuf::from(r["output"].as_str().unwrap()),
            kernel: other("kernel"),
            initramfs: other("initramfs"),
            rootfs: other("rootfs"),
            kargs: r["live"]["kernel_arguments"].as_str().unwrap().to_string(),
        }
    }
}

const CONSOLE: &str = "console=ttyS0,115200n8";

fn expect_marker_and_ignition(n: Option<&str>) -> Vec<String> {
    expect_marker_and_ignition_of(image(), n)
}

fn expect_marker_and_ignition_of(image: &LiveImage, n: Option<&str>) -> Vec<String> {
    let mut e = vec![format!("LAYERED-OK {}", image.marker)];
    if let Some(n) = n {
        e.push(format!("LAYERED-IGNITION IGN-{n}"));
    }
    e
}

fn copy(iso: &Path, name: &str) -> PathBuf {
    let dest = work_dir().join(name);
    std::fs::copy(iso, &dest).unwrap();
    dest
}

fn ok(c: &mut Command) {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// UEFI, as a CD, through the image's own signed chain: the bootupd-layout variant's ISO
/// (its El Torito image holds shim as `EFI/BOOT/BOOTX64.EFI` and Debian's signed GRUB
/// beside it, as CoreOS lays out removable media) customized by the real coreos-installer
/// (Ignition embedded, console appended) boots live and applies that Ignition; the live
/// system installs itself offline onto a 4Kn disk (metal4k osmet data), which then boots
/// under UEFI with 4096-byte sectors and the Ignition config the install was given.
#[test]
fn live_iso_customized_by_coreos_installer_boots_uefi_cd_through_shim_and_installs_onto_4kn() {
    let l = live_bootupd();
    // No other test boots the bootupd variant.
    let _scratch = Scratch(vec![work_dir().join("live-bootupd")]);
    // The El Torito image holds the image's chain only, laid out as CoreOS's.
    let efiboot = work_dir().join("live-shim-efiboot.img");
    let _ = std::fs::remove_file(&efiboot);
    ok(Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(&l.iso)
        .args(["-extract", "/images/efiboot.img"])
        .arg(&efiboot));
    let listing = Command::new("mdir")
        .args(["-/", "-b", "-i"])
        .arg(&efiboot)
        .arg("::")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_lowercase();
    for want in [
        "::/efi/boot/bootx64.efi",
        "::/efi/boot/grubx64.efi",
        "::/efi/boot/grub.cfg",
    ] {
        assert!(
            listing.contains(want),
            "efiboot.img lacks {want}: {listing}"
        );
    }
    assert!(
        !listing.contains("fbx64.efi") && !listing.contains(".csv"),
        "shim's fallback would create boot entries from removable media: {listing}"
    );
    std::fs::remove_file(&efiboot).unwrap();
    let _serial = full_os_boot_lock();
    let iso = copy(&l.iso, "live-ci.iso");
    let n = crate::common::nonce();
    let ign = work_dir().join("live-ci.ign");
    write_first_boot_ignition(&ign, &n);
    // The live system also installs itself offline onto the 4Kn disk beside it, which
    // coreos-installer does from the ISO's metal4k osmet data (it picks the osmet file by
    // the target's sector size), with an Ignition config of its own for the installed system.
    let n_installed = crate::common::nonce();
    let dest_ign = work_dir().join("live-ci-dest.ign");
    write_first_boot_ignition(&dest_ign, &n_installed);
    let live_ign = installing_live_ignition(&ign, &dest_ign);
    std::fs::write(&ign, live_ign.to_string()).unwrap();
    ok(Command::new("coreos-installer")
        .args(["iso", "ignition", "embed", "-i"])
        .arg(&ign)
        .arg(&iso));
    ok(Command::new("coreos-installer")
        .args(["iso", "kargs", "modify", "-a", CONSOLE])
        .arg(&iso));
    let target = work_dir().join("live-installed-4kn.raw");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    let mut expected = expect_marker_and_ignition_of(bootupd_image(), Some(&n));
    expected.push("LIVE-INSTALL-OK".into());
    // The CD has 2048-byte blocks whatever the disks have: the extra disk is 4Kn.
    let s = settings(
        Artifact::IsoCdrom(iso.clone()),
        Firmware::Uefi,
        4096,
        &expected,
        None,
        "live-iso-uefi-shim",
    );
    let o = run_offline_install_boot(s, &target);
    let cmdline = reported(&o, "Kernel command line:");
    assert!(cmdline.contains(CONSOLE), "{cmdline}");
    assert!(cmdline.contains("coreos.liveiso="), "{cmdline}");
    std::fs::remove_file(&iso).unwrap();

    // The metal4k image was written: its GPT header sits in the second 4096-byte sector,
    // where nothing made for 512-byte sectors has one.
    let head = {
        let mut b = vec![0u8; 8192];
        std::io::Read::read_exact(&mut std::fs::File::open(&target).unwrap(), &mut b).unwrap();
        b
    };
    assert_eq!(&head[4096..4104], b"EFI PART", "no GPT header at 4096");
    assert_ne!(
        &head[512..520],
        b"EFI PART",
        "a 512-byte-sector GPT on the 4Kn disk"
    );
    let s = settings(
        Artifact::RawDisk(target.clone()),
        Firmware::Uefi,
        4096,
        &expect_marker_and_ignition_of(bootupd_image(), Some(&n_installed)),
        None,
        "live-installed-4kn-disk",
    );
    run_boot(&s);
    std::fs::remove_file(&target).unwrap();
}

/// Boot `s`, a live system whose Ignition came from [`installing_live_ignition`], with
/// `target` as its one extra disk, until it powers off after the install; fails unless
/// coreos-installer completed.
fn run_offline_install_boot(mut s: BootTestSettings, target: &Path) -> Outcome {
    s.memory_mib = 3072;
    s.extra_disks = vec![ExtraDisk::File {
        path: target.to_path_buf(),
        format: DiskFormat::Raw,
    }];
    s.wait_for_poweroff = true;
    s.fail_on
        .push(Pattern::parse("LIVE-INSTALL-FAILED").unwrap());
    let o = run_boot(&s);
    assert!(
        o.console.contains("Install complete."),
        "coreos-installer did not complete"
    );
    o
}

/// The live system's Ignition: `live` (its own config) plus a unit that installs the live
/// image offline onto the first extra disk with `dest` as the installed system's Ignition,
/// reports LIVE-INSTALL-OK or LIVE-INSTALL-FAILED and powers off.
fn installing_live_ignition(live: &Path, dest: &Path) -> serde_json::Value {
    let unit = "[Unit]\nDescription=Install the live image offline\n\
        After=layerboot-liveiso-osmet.service\nRequires=layerboot-liveiso-osmet.service\n\
        [Service]\nType=oneshot\nStandardOutput=journal+console\nStandardError=journal+console\n\
        ExecStart=/bin/sh -c 'if coreos-installer install --offline --ignition-file /etc/dest.ign /dev/disk/by-id/virtio-extra1; then echo LIVE-INSTALL-OK; else echo LIVE-INSTALL-FAILED; fi > /dev/kmsg; systemctl --no-block poweroff'\n\
        [Install]\nWantedBy=multi-user.target\n";
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(live).unwrap()).unwrap();
    config["storage"]["files"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "path": "/etc/dest.ign", "mode": 420,
            "contents": {"source": format!("data:,{}", urlencode(&std::fs::read_to_string(dest).unwrap()))}
        }));
    config["systemd"] = serde_json::json!({"units": [{"name": "live-install.service", "enabled": true, "contents": unit}]});
    config
}

/// BIOS, as a CD: the ISO customized by `layerboot iso customize`.
#[test]
fn live_iso_customized_by_layerboot_boots_bios_cd() {
    let l = live();
    let _serial = full_os_boot_lock();
    let iso = work_dir().join("live-lb.iso");
    let _ = std::fs::remove_file(&iso);
    let n = crate::common::nonce();
    let ign = work_dir().join("live-lb.ign");
    write_first_boot_ignition(&ign, &n);
    ok(Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .args(["-q", "iso", "customize", "--live-karg-append", CONSOLE])
        .arg("--live-ignition")
        .arg(&ign)
        .arg("-o")
        .arg(&iso)
        .arg(&l.iso));
    let mut s = settings(
        Artifact::IsoCdrom(iso.clone()),
        Firmware::Bios,
        512,
        &expect_marker_and_ignition(Some(&n)),
        None,
        "live-iso-bios",
    );
    s.memory_mib = 3072;
    let o = run_boot(&s);
    let cmdline = reported(&o, "LAYERED-CMDLINE ");
    assert!(cmdline.contains(CONSOLE), "{cmdline}");
    std::fs::remove_file(&iso).unwrap();
}

/// PXE: the kernel, with the rootfs image appended to the initramfs (as a second initrd
/// is), and the ISO's kernel arguments but the ISO's own.
#[test]
fn live_pxe_set_boots() {
    let l = live();
    let _serial = full_os_boot_lock();
    let initrd = work_dir().join("live-pxe-initrd.img");
    {
        let mut out = std::fs::File::create(&initrd).unwrap();
        for p in [&l.initramfs, &l.rootfs] {
            std::io::copy(&mut std::fs::File::open(p).unwrap(), &mut out).unwrap();
        }
    }
    let append: Vec<&str> = l
        .kargs
        .split_whitespace()
        .filter(|a| !a.starts_with("coreos.liveiso="))
        .chain([CONSOLE])
        .collect();
    let mut s = settings(
        Artifact::DirectKernel {
            kernel: l.kernel.clone(),
            initrd: Some(initrd.clone()),
            append: append.join(" "),
        },
        Firmware::Bios,
        512,
        &expect_marker_and_ignition(None),
        None,
        "live-pxe",
    );
    s.memory_mib = 3072;
    run_boot(&s);
    std::fs::remove_file(&initrd).unwrap();
}

/// iso-as-disk and iso-offline-install: the hybrid ISO written to a disk (a USB stick)
/// boots under UEFI, and the live system (no network) installs the layered image onto a blank disk with `coreos-installer install --offline`
/// from the osmet data in the ISO's rootfs; that disk then boots under BIOS to the marker,
/// with the Ignition config the install was given.
#[test]
fn live_iso_installs_offline_then_the_installed_disk_boots() {
    let l = live();
    let iso = copy(&l.iso, "live-install.iso");
    let n = crate::common::nonce();
    let dest_ign = work_dir().join("live-install-dest.ign");
    write_first_boot_ignition(&dest_ign, &n);
    let live_ign_path = work_dir().join("live-install.ign");
    std::fs::write(
        &live_ign_path,
        serde_json::json!({"ignition": {"version": "3.3.0"}, "storage": {"files": []}}).to_string(),
    )
    .unwrap();
    let live_ign = installing_live_ignition(&live_ign_path, &dest_ign);
    std::fs::write(&live_ign_path, live_ign.to_string()).unwrap();
    ok(Command::new("coreos-installer")
        .args(["iso", "ignition", "embed", "-i"])
        .arg(&live_ign_path)
        .arg(&iso));
    ok(Command::new("coreos-installer")
        .args(["iso", "kargs", "modify", "-a", CONSOLE])
        .arg(&iso));
    let target = work_dir().join("live-installed.raw");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();

    let _serial = full_os_boot_lock();
    // The ISO written to a disk (iso-as-disk) under UEFI, the install target beside it.
    let s = settings(
        Artifact::IsoAsDisk(iso.clone()),
        Firmware::Uefi,
        512,
        &["LIVE-INSTALL-OK".into()],
        None,
        "live-offline-install",
    );
    run_offline_install_boot(s, &target);
    std::fs::remove_file(&iso).unwrap();

    let s = settings(
        Artifact::RawDisk(target.clone()),
        Firmware::Bios,
        512,
        &expect_marker_and_ignition(Some(&n)),
        None,
        "live-installed-disk",
    );
    run_boot(&s);
    std::fs::remove_file(&target).unwrap();
}
