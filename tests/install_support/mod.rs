//! Shared helpers of the install_* integration tests: golden files, the real
//! ignition-validate, the CRDs from ../shared/reference, and running the binary.
#![allow(dead_code)]

pub mod crd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const TEST_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/test-ca.crt");
/// A fixed digest-pinned reference so that goldens are deterministic.
pub const IMAGE: &str = "quay.io/acme/rhcos-layered@sha256:5e9c4b1d2f3a7e6b8c0d9f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compare `actual` with `tests/golden/<name>`; `LAYERBOOT_BLESS=1` rewrites the golden.
pub fn golden(name: &str, actual: &[u8]) {
    let path = repo().join("tests/golden").join(name);
    golden_at(&path, actual)
}

pub fn golden_at(path: &Path, actual: &[u8]) {
    if std::env::var_os("LAYERBOOT_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        return;
    }
    let want = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "golden {} missing ({e}); run with LAYERBOOT_BLESS=1 to create it",
            path.display()
        )
    });
    pretty_assertions::assert_eq!(
        String::from_utf8_lossy(&want),
        String::from_utf8_lossy(actual),
        "golden {} differs (LAYERBOOT_BLESS=1 regenerates)",
        path.display()
    );
}

/// Run the real `ignition-validate` (Debian package `ignition`, 2.14). It knows stable
/// specs up to 3.3.0 and 3.4.0 only as `3.4.0-experimental`, so a 3.4.0 config is checked
/// under that name (same schema for every field we write). 3.5.0/3.6.0 are beyond it and
/// are checked by the ignition-config round trip instead (callers do both).
pub fn ignition_validate(bytes: &[u8]) {
    assert!(
        layerboot::cmd::have("ignition-validate"),
        "ignition-validate not found: install the Debian package 'ignition' (see .ci/install-deps)"
    );
    let mut v: serde_json::Value = serde_json::from_slice(bytes).expect("Ignition output is JSON");
    let version = v["ignition"]["version"].as_str().unwrap().to_string();
    match version.as_str() {
        "3.0.0" | "3.1.0" | "3.2.0" | "3.3.0" => {}
        "3.4.0" => v["ignition"]["version"] = "3.4.0-experimental".into(),
        other => panic!("ignition-validate cannot check spec {other}; use the round trip"),
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("config.ign");
    std::fs::write(&f, serde_json::to_vec(&v).unwrap()).unwrap();
    let out = Command::new("ignition-validate").arg(&f).output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "ignition-validate rejected spec {version}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every check we have for an Ignition output: the real validator where it knows the
/// spec, and the typed round trip with no unknown keys always.
pub fn check_ignition(bytes: &[u8]) {
    let cfg =
        layerboot::ignition::check_roundtrip(bytes).expect("round trip through ignition-config");
    let reser = serde_json::to_value(&cfg).unwrap();
    let orig: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(
        strip_nulls(reser),
        orig,
        "re-serializing through ignition-config changes the config"
    );
    let version = orig["ignition"]["version"].as_str().unwrap();
    if version <= "3.4.0" {
        ignition_validate(bytes);
    }
}

fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k, strip_nulls(x)))
                .collect(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(strip_nulls).collect())
        }
        x => x,
    }
}

pub fn layerboot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .args(args)
        .output()
        .unwrap()
}

/// Assert a clean refusal: non-zero exit, one `error:` line naming `culprit`.
pub fn assert_refused(out: &Output, culprit: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "want exactly one error line: {stderr}");
    assert!(!stderr.trim_end().lines().last().unwrap_or("").is_empty());
    let last = stderr.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("error:") && last.contains(culprit),
        "error line does not name '{culprit}': {stderr}"
    );
}

/// Every file under `dir`, relative, sorted (to prove nothing was written).
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}
