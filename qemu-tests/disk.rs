//! Disk images built by `layerboot disk` from the example layered image, booted with
//! boot-test: the *layered* image boots (its derived layer's marker), under UEFI and BIOS,
//! from a 4096-byte-sector disk, with the expected kernel command line and deployment; an
//! Ignition config passed through fw_cfg is applied on the first boot and not again on
//! the second. Boots are few and disks are shared: TCG boots cost ~40-60 s each.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use layerboot::boottest::{
    run_blocking, Artifact, ArtifactKind, BootTestSettings, Firmware, Outcome, Pattern,
};
use layerboot_testkit::layered_image::{layered_image, LayeredImage};

use crate::common::{full_os_boot_lock, nonce, Scratch};

fn image() -> &'static LayeredImage {
    static I: OnceLock<LayeredImage> = OnceLock::new();
    I.get_or_init(|| {
        layered_image()
            .expect("example layered image (needs root, debootstrap, network to the Debian mirror)")
    })
}

/// One fixed directory, wiped at the start of a run (statics are never dropped, and the
/// disks are large): it holds the last run's disks and console logs for inspection.
pub(crate) fn work_dir() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-disk");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// User definitions that reuse the shipped layouts uncompressed: boot-test needs the disk
/// itself, and compression is covered by the fast suite.
fn definitions() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let dir = work_dir().join("bootimages");
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["qemu", "metal", "metal4k"] {
            let shipped = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("bootimages")
                    .join(format!("{name}.toml")),
            )
            .unwrap();
            let plain: String = shipped
                .lines()
                .filter(|l| !l.starts_with("compression-level"))
                .map(|l| {
                    if l.starts_with("compression =") {
                        "compression = \"none\"\n".to_string()
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            assert_ne!(plain, shipped);
            std::fs::write(dir.join(format!("{name}-plain.toml")), plain).unwrap();
        }
        dir
    })
}

/// Run `layerboot disk` (the CLI, end to end) on the example image; returns the image path.
fn build_disk(platform: &str, extra: &[&str]) -> PathBuf {
    build_disk_from(
        &image().oci_ref(),
        platform,
        &format!("{platform}.img"),
        extra,
    )
}

/// Run `layerboot disk` on `image_ref`, writing `out_name` in the work directory.
pub(crate) fn build_disk_from(
    image_ref: &str,
    platform: &str,
    out_name: &str,
    extra: &[&str],
) -> PathBuf {
    let out = work_dir().join(out_name);
    let t = std::time::Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .arg("disk")
        .arg(image_ref)
        .args(["--platform", platform, "--bootimages"])
        .arg(definitions())
        .arg("-o")
        .arg(&out)
        .args(extra)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "layerboot disk --platform {platform} failed"
    );
    eprintln!("built {platform} disk in {:.1}s", t.elapsed().as_secs_f64());
    out
}

/// Under TCG on a busy machine udev can take minutes to announce a disk, and a unit
/// minutes to start: the default 90 s start timeout and 180 s udev event timeout then fail
/// the boot for no fault of the image. systemd 252 (Debian 12) has no kernel argument for
/// the *device* timeout (`systemd.default_device_timeout_sec=` came later; 252 reads
/// `DefaultDeviceTimeoutSec=` from system.conf only), so that one is raised through the
/// first-boot Ignition config where there is one ([`SLOW_MACHINE_DROPIN`]).
const SLOW_MACHINE_KARGS: &[&str] = &[
    "systemd.default_timeout_start_sec=600",
    "udev.event_timeout=600",
    "rd.udev.event_timeout=600",
];

/// `system.conf.d` drop-in raising the device timeout, written by Ignition on first boot.
pub(crate) const SLOW_MACHINE_DROPIN: &str = "[Manager]\nDefaultDeviceTimeoutSec=600\n";

/// `--karg` arguments for [`SLOW_MACHINE_KARGS`].
pub(crate) fn slow_machine_args() -> Vec<&'static str> {
    SLOW_MACHINE_KARGS
        .iter()
        .flat_map(|k| ["--karg", *k])
        .collect()
}

fn qemu_disk() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| build_disk("qemu-plain", &slow_machine_args()))
}

fn pats(p: &[String]) -> Vec<Pattern> {
    p.iter().map(|s| Pattern::parse(s).unwrap()).collect()
}

fn boot(
    artifact: Artifact,
    firmware: Firmware,
    sector_size: u32,
    expect: &[String],
    ignition: Option<&Path>,
    name: &str,
) -> Outcome {
    run_boot(&settings(
        artifact,
        firmware,
        sector_size,
        expect,
        ignition,
        name,
    ))
}

/// The CPU model of the suite's full-OS guests (see [`settings`]).
pub(crate) const GUEST_CPU: &str = "qemu64";

pub(crate) fn settings(
    artifact: Artifact,
    firmware: Firmware,
    sector_size: u32,
    expect: &[String],
    ignition: Option<&Path>,
    name: &str,
) -> BootTestSettings {
    let mut s = BootTestSettings::new(artifact);
    s.name = name.to_string();
    s.firmware = firmware;
    s.sector_size = sector_size;
    s.timeout = Duration::from_secs(900);
    // The least for TCG to emulate: the same full-OS boot took 69 s on qemu64, 85 s on
    // Nehalem and 126 s on max (docs/boot-test.md). x86-64-v1 is all the Debian fixtures
    // need; RHEL 9 images need Nehalem or later.
    s.cpu_model = Some(GUEST_CPU.into());
    s.persist_writes = true;
    s.ignition = ignition.map(Path::to_path_buf);
    s.expect = pats(expect);
    s.fail_on = pats(&[
        "Kernel panic".into(),
        "Entering emergency mode".into(),
        "You are in emergency mode".into(),
        "re:Failed to start .*(layered-ok|[Ii]gnition|OSTree|ostree)".into(),
    ]);
    s.console_log = Some(work_dir().join(format!("{name}.console.log")));
    s
}

pub(crate) fn run_boot(s: &BootTestSettings) -> Outcome {
    let t = std::time::Instant::now();
    let o = run_blocking(s).unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!("{}: {secs:.1}s, {}", s.name, o.reason);
    // Where the suite's time goes: .ci/run prints this table at the end.
    let times = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-boot-times.tsv");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&times)
    {
        let _ = std::io::Write::write_all(&mut f, format!("{secs:.1}\t{}\n", s.name).as_bytes());
    }
    assert!(o.passed, "{}", o.report());
    o
}

/// Percent-encoding for a `data:` URL (RFC 2397): everything but unreserved characters.
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The line the guest reported with `prefix` (console or port).
pub(crate) fn reported(o: &Outcome, prefix: &str) -> String {
    o.port_lines
        .iter()
        .chain(
            o.console
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
                .iter(),
        )
        .find_map(|l| {
            l.find(prefix)
                .map(|i| l[i + prefix.len()..].trim().to_string())
        })
        .unwrap_or_else(|| panic!("guest never reported {prefix}"))
}

/// First boot under UEFI with an Ignition config via fw_cfg, then a second boot of the same
/// disk under BIOS: Ignition's file is there, marked by the first boot and not rewritten,
/// the first-boot stamp is gone and `ignition.firstboot` no longer on the command line.
#[test]
fn qemu_disk_first_boot_uefi_ignition_then_bios_second_boot() {
    let _serial = full_os_boot_lock();
    let img = image();
    // Both boots write to the built disk itself (it is used by this test only).
    first_boot_uefi_then_second_boot_bios(
        qemu_disk(),
        &img.marker,
        &format!("{}:layered", img.oci_dir.display()),
        "disk-qemu",
    );
}

/// The bootupd path: an image carrying bootupd's payload (Debian's signed shim and GRUB in
/// `/usr/lib/bootupd/updates/EFI`, static GRUB configs in `grub2-static/`) boots under UEFI
/// through shim (the ESP's only loader is shim as `EFI/BOOT/BOOTX64.EFI`, its fallback
/// and the signed GRUB reading `EFI/debian/grub.cfg`), Ignition runs through the static
/// config's `$ignition_firstboot`, and the same disk boots under BIOS from the image's
/// i386-pc GRUB with `/boot/grub2` as prefix; then under UEFI Secure Boot with
/// Microsoft's keys, the chain verified end to end. The marker is the bootupd layer's own.
#[test]
fn bootupd_image_disk_boots_through_shim_uefi_bios_and_secure_boot() {
    let _serial = full_os_boot_lock();
    let img = layerboot_testkit::bootupd_image::bootupd_image().expect("bootupd-layout image (needs root, network to the Debian mirror for the signed shim/GRUB packages)");
    let disk = build_disk_from(
        &img.oci_ref(),
        "qemu-plain",
        "bootupd-qemu.img",
        &slow_machine_args(),
    );
    let _scratch = Scratch(vec![disk.clone()]);
    first_boot_uefi_then_second_boot_bios(
        &disk,
        &img.marker,
        &format!("{}:bootupd", img.oci_dir.display()),
        "disk-bootupd",
    );

    // Then under Secure Boot (OVMF with Microsoft's keys enrolled): shim is verified by
    // the firmware, the signed GRUB by shim, the kernel by GRUB through shim. Boot-test
    // offers only OVMF's plain build, so with its own firmware off (`Bios`: no pflash) the
    // secure build goes in through extra QEMU arguments: SMM on, secure pflash.
    let code = Path::new("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd");
    let vars_template = Path::new("/usr/share/OVMF/OVMF_VARS_4M.ms.fd");
    assert!(
        code.is_file() && vars_template.is_file(),
        "Secure Boot OVMF images missing: install the Debian package 'ovmf'"
    );
    let vars = work_dir().join("secboot-vars.fd");
    std::fs::copy(vars_template, &vars).unwrap();
    let mut s = settings(
        Artifact::Qcow2(disk.clone()),
        Firmware::Bios,
        512,
        &[
            "secureboot: Secure boot enabled".into(),
            format!("LAYERED-OK {}", img.marker),
            "LAYERED-DONE".into(),
        ],
        None,
        "disk-bootupd-uefi-secureboot",
    );
    s.fail_on.extend(pats(&[
        "Verification failed".into(),
        "Security Violation".into(),
        "bad shim signature".into(),
    ]));
    s.extra_qemu_args = [
        "-machine",
        "q35,smm=on",
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
        "-drive",
    ]
    .iter()
    .map(Into::into)
    .chain([
        format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            code.display()
        )
        .into(),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", vars.display()).into(),
    ])
    .collect();
    let o = run_boot(&s);
    assert!(
        o.console.contains("GNU GRUB"),
        "GRUB's menu was on the console"
    );
}

/// The first-boot Ignition config of these tests: `/etc/layered-ok/ignition` = `IGN-<n>`
/// (the example layer reports it as `LAYERED-IGNITION`) and [`SLOW_MACHINE_DROPIN`].
pub(crate) fn write_first_boot_ignition(path: &Path, n: &str) {
    let config = serde_json::json!({
        "ignition": {"version": "3.3.0"},
        "storage": {"files": [
            {"path": "/etc/layered-ok/ignition", "mode": 420, "overwrite": true, "contents": {"source": format!("data:,IGN-{n}")}},
            {"path": "/etc/systemd/system.conf.d/50-slow-tcg-host.conf", "mode": 420, "overwrite": true, "contents": {"source": format!("data:,{}", urlencode(SLOW_MACHINE_DROPIN))}}
        ]}
    });
    std::fs::write(path, config.to_string()).unwrap();
}

fn first_boot_uefi_then_second_boot_bios(
    disk: &Path,
    marker: &str,
    origin_suffix: &str,
    name: &str,
) {
    let n = nonce();
    let ign = work_dir().join(format!("{name}-first-boot.ign"));
    write_first_boot_ignition(&ign, &n);

    let marker = format!("LAYERED-OK {marker}");
    let o = boot(
        Artifact::Qcow2(disk.to_path_buf()),
        Firmware::Uefi,
        512,
        &[
            marker.clone(),
            "LAYERED-CMDLINE".into(),
            "LAYERED-DEPLOYMENT".into(),
            "LAYERED-ETC from-the-derived-layer".into(),
            format!("LAYERED-IGNITION IGN-{n}"),
            "LAYERED-DONE".into(),
        ],
        Some(&ign),
        &format!("{name}-uefi-firstboot"),
    );
    let cmdline = reported(&o, "LAYERED-CMDLINE ");
    for karg in [
        "root=LABEL=root",
        "rw",
        "console=ttyS0,115200n8",
        "ignition.platform.id=qemu",
        "ignition.firstboot",
        "ostree=/ostree/boot.",
    ] {
        assert!(
            cmdline
                .split_whitespace()
                .any(|a| a == karg || (karg.ends_with('.') && a.starts_with(karg))),
            "{karg} missing from {cmdline}"
        );
    }
    assert!(
        !cmdline.contains("ignition_firstboot"),
        "GRUB left the variable unexpanded: {cmdline}"
    );
    let deployment = reported(&o, "LAYERED-DEPLOYMENT ");
    let (deploy, origin) = deployment.split_once(' ').unwrap();
    assert!(
        deploy.starts_with("default/") && deploy.ends_with(".0"),
        "{deployment}"
    );
    assert!(
        origin.ends_with(origin_suffix),
        "origin tracks the image: {deployment}"
    );

    let o = boot(
        Artifact::Qcow2(disk.to_path_buf()),
        Firmware::Bios,
        512,
        &[
            marker,
            format!("LAYERED-IGNITION IGN-{n}+seen"),
            "LAYERED-FIRSTBOOT-STAMP absent".into(),
            "LAYERED-DONE".into(),
        ],
        Some(&ign),
        &format!("{name}-bios-secondboot"),
    );
    let cmdline = reported(&o, "LAYERED-CMDLINE ");
    assert!(
        !cmdline
            .split_whitespace()
            .any(|a| a == "ignition.firstboot"),
        "second boot still first boot: {cmdline}"
    );
    assert_eq!(
        reported(&o, "LAYERED-DEPLOYMENT "),
        deployment,
        "same deployment on the second boot"
    );
}

/// metal4k: 4096-byte logical sectors, UEFI. The metal definition has no console karg
/// (as CoreOS); like a coreos-installer user we add the serial console with --karg.
#[test]
fn metal4k_disk_boots_from_4096_byte_sectors() {
    let _serial = full_os_boot_lock();
    let img = image();
    let mut args = vec!["--karg", "console=ttyS0,115200n8"];
    args.extend(slow_machine_args());
    let disk = build_disk("metal4k-plain", &args);
    let _scratch = Scratch(vec![disk.clone()]);
    let mut head = vec![0u8; 4096 + 8];
    std::io::Read::read_exact(&mut std::fs::File::open(&disk).unwrap(), &mut head).unwrap();
    assert_eq!(
        &head[4096..4104],
        b"EFI PART",
        "GPT header in LBA 1 of a 4096-byte sector disk"
    );
    let o = boot(
        Artifact::RawDisk(disk),
        Firmware::Uefi,
        4096,
        &[format!("LAYERED-OK {}", img.marker), "LAYERED-DONE".into()],
        None,
        "disk-metal4k-uefi",
    );
    let cmdline = reported(&o, "LAYERED-CMDLINE ");
    assert!(
        cmdline.contains("ignition.platform.id=metal")
            && cmdline.contains("console=ttyS0,115200n8"),
        "{cmdline}"
    );
}

/// A CoreOS image (the CoreOS-like fixture): its qemu disk has no `root=` (the image's
/// initramfs finds root by label, as CoreOS's does), the console and extra kernel
/// arguments come from the image's platforms.json/image.json, GRUB's console from
/// console.cfg, the stateroot from com.coreos.osname; it boots under UEFI to the image's
/// own marker.
#[test]
fn coreos_image_disk_boots_without_root_karg() {
    use layerboot_testkit::coreos_image::{coreos_image, OSNAME};
    let _serial = full_os_boot_lock();
    let img = coreos_image().expect("CoreOS-like fixture");
    let disk = build_disk_from(
        &img.oci_ref(),
        "qemu-plain",
        "coreos-qemu.img",
        &slow_machine_args(),
    );
    let _scratch = Scratch(vec![disk.clone()]);
    // qemu-plain writes qcow2; the artifact is named by what the file holds.
    let artifact = ArtifactKind::detect(&disk).unwrap().artifact(disk);
    let o = boot(
        artifact,
        Firmware::Uefi,
        512,
        &[format!("LAYERED-OK {}", img.marker), "LAYERED-DONE".into()],
        None,
        "disk-coreos-qemu-uefi",
    );
    let cmdline = reported(&o, "LAYERED-CMDLINE ");
    assert!(!cmdline.contains("root="), "no root=: {cmdline}");
    for k in [
        "console=ttyS0,115200n8",
        "mitigations=auto,nosmt",
        "layerboot.fixture=coreos",
        "ignition.platform.id=qemu",
        &format!("ostree=/ostree/boot.1/{OSNAME}/"),
    ] {
        assert!(cmdline.contains(k), "{k} not in {cmdline}");
    }
    let problems = coreos_sysroot_problems(&o);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// What is wrong with how a booted CoreOS-like disk mounts its roots (the fixture reports
/// it): CoreOS's `sysroot.readonly` makes the physical root read-only, and ostree's
/// prepare-root keeps the deployment's /etc and the stateroot's /var writable.
pub(crate) fn coreos_sysroot_problems(o: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    let sysroot = reported(o, "COREOS-SYSROOT ");
    if sysroot.split(',').next() != Some("ro") {
        problems.push(format!("/sysroot is not mounted read-only: {sysroot:?}"));
    }
    for d in ["/etc", "/var"] {
        let w = reported(o, &format!("COREOS-WRITABLE {d} "));
        if w != "yes" {
            problems.push(format!("{d} is not writable: {w:?}"));
        }
    }
    problems
}
