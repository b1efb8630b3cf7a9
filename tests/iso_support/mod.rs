//! Shared helpers for the `iso_*` integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use layerboot_testkit::liveiso;

/// The cached fixture live ISO (built on first use from Debian packages).
pub fn fixture() -> PathBuf {
    liveiso::live_iso().unwrap_or_else(|e| panic!("building the live ISO fixture failed: {e:#}"))
}

/// A private copy of the fixture in `dir`.
pub fn copy_fixture(dir: &Path, name: &str) -> PathBuf {
    let dest = dir.join(name);
    std::fs::copy(fixture(), &dest).unwrap();
    dest
}

pub fn layerboot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .args(args)
        .output()
        .expect("running layerboot")
}

/// Run layerboot, asserting success; returns stdout.
pub fn layerboot_ok(args: &[&str]) -> Vec<u8> {
    let out = layerboot(args);
    assert!(
        out.status.success(),
        "layerboot {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `iso show --json --show-secrets`: everything embedded, for comparing byte for byte with
/// what coreos-installer reads back (secrets are redacted without the flag).
pub fn show_json_with_secrets(iso: &Path) -> serde_json::Value {
    serde_json::from_slice(&layerboot_ok(&[
        "iso",
        "show",
        "--json",
        "--show-secrets",
        iso.to_str().unwrap(),
    ]))
    .unwrap()
}

pub fn show_json(iso: &Path) -> serde_json::Value {
    serde_json::from_slice(&layerboot_ok(&[
        "iso",
        "show",
        "--json",
        iso.to_str().unwrap(),
    ]))
    .unwrap()
}

/// The real coreos-installer 0.27 (a missing one FAILS the test: it is a declared dependency).
pub fn coreos_installer() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("coreos-installer"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/coreos-installer")),
        );
    for c in candidates {
        if c.is_file() {
            let v = Command::new(&c)
                .arg("--version")
                .output()
                .expect("running coreos-installer --version");
            let v = String::from_utf8_lossy(&v.stdout).to_string();
            assert!(
                v.contains(" 0.27."),
                "{} is {v:?}, need 0.27.x: run .ci/install-deps",
                c.display()
            );
            return c;
        }
    }
    panic!("coreos-installer 0.27 not found on PATH or in ~/.cargo/bin: run .ci/install-deps (it runs `cargo install coreos-installer --version '^0.27' --locked`)");
}

pub fn coreos(args: &[&str]) -> Output {
    Command::new(coreos_installer())
        .args(args)
        .output()
        .expect("running coreos-installer")
}

pub fn coreos_ok(args: &[&str]) -> Vec<u8> {
    let out = coreos(args);
    assert!(
        out.status.success(),
        "coreos-installer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The file's bytes, for before/after comparisons (fixtures are small; a plain memcmp
/// is much faster than hashing in a debug build).
pub fn contents(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Inputs shared by the tests: Ignition configs, a keyfile, a CA.
pub struct Inputs {
    pub dir: PathBuf,
    pub live_ign: PathBuf,
    pub dest_ign: PathBuf,
    pub keyfile: PathBuf,
    pub ca: PathBuf,
}

pub const LIVE_IGN: &str = r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/live-marker","contents":{"source":"data:,live-ok"},"mode":420}]}}"#;
pub const DEST_IGN: &str = r#"{"ignition":{"version":"3.2.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHl0bGF5ZXJib290LXRlc3Qta2V5LW9ubHkAAAAAAAAA test@layerboot"]}]}}"#;
pub const KEYFILE: &str =
    "[connection]\nid=eth0\ntype=ethernet\ninterface-name=eth0\n\n[ipv4]\nmethod=auto\n";

pub fn inputs(dir: &Path) -> Inputs {
    let w = |name: &str, data: &str| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let ca = dir.join("ca.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=layerboot-test-ca",
            "-keyout",
        ])
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("running openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Inputs {
        dir: dir.to_path_buf(),
        live_ign: w("live.ign", LIVE_IGN),
        dest_ign: w("dest.ign", DEST_IGN),
        keyfile: w("eth0.nmconnection", KEYFILE),
        ca,
    }
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
