//! Customized live ISOs proven in QEMU: the fixture ISO (CoreOS layout, Debian kernel,
//! busybox initramfs that prints what it was given) customized by `layerboot iso
//! customize`, booted under UEFI and BIOS; the console must show exactly the Ignition
//! config, installer config, keyfile and kernel arguments that were embedded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use layerboot::boottest::{run_blocking, Artifact, BootTestSettings, Firmware, Pattern};
use layerboot_testkit::liveiso::{self, GuestReport};

use crate::common::nonce;

const LIVE_IGN: &str = r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/live-marker","contents":{"source":"data:,live-ok"},"mode":420}]}}"#;
const DEST_IGN: &str = r#"{"ignition":{"version":"3.2.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHl0bGF5ZXJib290 qemu"]}]}}"#;
const KEYFILE: &str = "[connection]\nid=eth0\ntype=ethernet\n\n[ipv4]\nmethod=auto\n";

fn layerboot(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "layerboot {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn fixture() -> PathBuf {
    liveiso::live_iso().unwrap_or_else(|e| panic!("live ISO fixture: {e:#}"))
}

struct Expected {
    ignition: String,
    kargs: String,
    installer: String,
}

/// A customized copy of the fixture in `dir`, and what its guest must print.
fn customized(dir: &Path) -> (PathBuf, Expected) {
    let w = |n: &str, d: &str| {
        let p = dir.join(n);
        std::fs::write(&p, d).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (live, dest, key) = (
        w("live.ign", LIVE_IGN),
        w("dest.ign", DEST_IGN),
        w("eth0.nmconnection", KEYFILE),
    );
    let iso = dir.join("custom.iso");
    let marker = format!("layerboot.nonce={}", nonce());
    let iso_s = iso.to_str().unwrap();
    layerboot(&[
        "iso",
        "customize",
        fixture().to_str().unwrap(),
        "-o",
        iso_s,
        "--live-ignition",
        &live,
        "--dest-ignition",
        &dest,
        "--dest-device",
        "/dev/vda",
        "--image-url",
        "https://images.example.com/layered.x86_64.metal.raw.xz",
        "--network-keyfile",
        &key,
        "--live-karg-append",
        &marker,
        "--live-karg-delete",
        "quiet",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&layerboot(&[
        "iso",
        "show",
        "--json",
        "--show-secrets",
        iso_s,
    ]))
    .unwrap();
    let expected = Expected {
        ignition: report["ignition"].as_str().unwrap().to_string(),
        kargs: report["kargs"]["current"].as_str().unwrap().to_string(),
        installer: report["installer_configs"]["/etc/coreos/installer.d/0000-customize.yaml"]
            .as_str()
            .unwrap()
            .to_string(),
    };
    assert!(expected.kargs.ends_with(&marker) && !expected.kargs.contains(" quiet"));
    (iso, expected)
}

fn boot(artifact: Artifact, firmware: Firmware) -> GuestReport {
    let mut s = BootTestSettings::new(artifact);
    s.firmware = firmware;
    s.memory_mib = 768;
    s.timeout = Duration::from_secs(420);
    s.expect = vec![Pattern::parse("LIVEISO-DONE").unwrap()];
    s.fail_on = vec![Pattern::parse("Kernel panic").unwrap()];
    let outcome = run_blocking(&s).expect("running the boot test");
    assert!(outcome.passed, "{}", outcome.report());
    eprintln!(
        "{:?} boot: {:.1}s ({})",
        firmware,
        outcome.duration.as_secs_f64(),
        outcome.accel
    );
    liveiso::parse_guest_report(&outcome.console)
}

fn check(report: &GuestReport, want: &Expected) {
    assert!(report.done, "guest did not finish: {report:?}");
    assert_eq!(
        report.ignition.as_deref(),
        Some(want.ignition.as_str()),
        "config.ign seen by the guest"
    );
    let cmdline = report.cmdline.as_deref().expect("guest printed no cmdline");
    assert!(
        cmdline.ends_with(&format!(" {}", want.kargs)),
        "cmdline {cmdline:?} should end with the embedded kargs {:?}",
        want.kargs
    );
    assert_eq!(
        report.installer,
        vec![(
            "/etc/coreos/installer.d/0000-customize.yaml".to_string(),
            want.installer.clone()
        )]
    );
    assert_eq!(
        report.keyfiles,
        vec![("eth0.nmconnection".to_string(), KEYFILE.to_string())]
    );
}

#[test]
fn customized_iso_boots_with_our_ignition_and_kargs_under_uefi() {
    let dir = tempfile::tempdir().unwrap();
    let (iso, want) = customized(dir.path());
    check(&boot(Artifact::IsoCdrom(iso), Firmware::Uefi), &want);
}

#[test]
fn customized_iso_boots_with_our_ignition_and_kargs_under_bios() {
    let dir = tempfile::tempdir().unwrap();
    let (iso, want) = customized(dir.path());
    check(&boot(Artifact::IsoCdrom(iso), Firmware::Bios), &want);
}

#[test]
fn pristine_iso_as_disk_boots_without_ignition_and_default_kargs() {
    // the hybrid image written to a "USB stick": the GPT ESP path under UEFI
    let report = boot(Artifact::IsoAsDisk(fixture()), Firmware::Uefi);
    assert!(report.done);
    assert_eq!(
        report.ignition, None,
        "a pristine ISO must carry no Ignition config"
    );
    let cmdline = report.cmdline.unwrap();
    assert!(
        cmdline.ends_with(&format!(" {}", liveiso::DEFAULT_KARGS)),
        "{cmdline:?}"
    );
}
