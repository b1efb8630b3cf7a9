//! examples/autofs: run the README's commands and compare with the checked-in expected
//! outputs (LAYERBOOT_BLESS=1 regenerates them); every output also passes its validator.

mod install_support;
use install_support::*;

use std::path::Path;

const EXAMPLE_IMAGE: &str = "registry.example.com:5000/acme/rhcos-autofs@sha256:3f1c9a7e5b2d4c6f8a0b1c3d5e7f9a2b4c6d8e0f1a3b5c7d9e2f4a6b8c0d1e3f";

fn ex(p: &str) -> String {
    repo().join("examples/autofs").join(p).display().to_string()
}

fn ok(args: &[&str]) -> std::process::Output {
    let out = layerboot(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn expect(rel: &str, actual_path: &Path) {
    golden_at(
        &repo().join("examples/autofs/expected").join(rel),
        &std::fs::read(actual_path).unwrap(),
    );
}

#[test]
fn autofs_example_reproduces_its_expected_outputs() {
    let readme = std::fs::read_to_string(ex("README.md")).unwrap();
    assert!(
        readme.contains(&EXAMPLE_IMAGE[..80]),
        "README and test disagree on the image"
    );
    let containerfile = std::fs::read_to_string(ex("Containerfile")).unwrap();
    for needle in [
        "FROM quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:",
        "dnf install -y autofs libsss_autofs openldap-clients",
        "ostree container commit",
    ] {
        assert!(
            containerfile.contains(needle),
            "Containerfile lacks {needle}"
        );
    }

    let work = tempfile::tempdir().unwrap();
    let ocp = work.path().join("ocp");
    std::fs::create_dir(&ocp).unwrap();
    std::fs::copy(ex("install-config.yaml"), ocp.join("install-config.yaml")).unwrap();
    let d = ocp.to_str().unwrap();

    // 2. install-config pieces
    let out = ok(&[
        "install-config",
        EXAMPLE_IMAGE,
        "--dir",
        d,
        "--authfile",
        &ex("auth.json"),
        "--trust-bundle",
        &ex("registry-ca.crt"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("YWNtZS1wdWxs"), "secret printed: {stderr}");
    expect("install-config.yaml", &ocp.join("install-config.yaml"));

    // 3. after `openshift-install create manifests`: install-config consumed, dirs made
    std::fs::remove_file(ocp.join("install-config.yaml")).unwrap();
    std::fs::create_dir(ocp.join("manifests")).unwrap();
    std::fs::create_dir(ocp.join("openshift")).unwrap();
    ok(&[
        "manifests",
        EXAMPLE_IMAGE,
        "--pool",
        "worker-automount",
        "--dir",
        d,
        "--offline",
        "--authfile",
        &ex("auth.json"),
    ]);
    let written = tree(&ocp);
    assert_eq!(
        written,
        [
            "manifests/99_openshift-machineconfigpool_worker-automount.yaml",
            "openshift/99_openshift-machineconfig_99-worker-automount-layered-image.yaml"
        ]
    );
    for f in &written {
        crd::assert_valid(
            &serde_yaml_ng::from_slice(&std::fs::read(ocp.join(f)).unwrap()).unwrap(),
        );
        expect(f, &ocp.join(f));
    }

    // 4. pointer Ignition for the pool
    let ign = work.path().join("worker-automount.ign");
    ok(&[
        "ignition",
        "pointer",
        "--pool",
        "worker-automount",
        "--api-vip",
        "192.0.2.5",
        "--ca",
        &ex("root-ca.crt"),
        "-o",
        ign.to_str().unwrap(),
    ]);
    check_ignition(&std::fs::read(&ign).unwrap());
    expect("worker-automount.ign", &ign);

    // Nothing in expected/ that the commands no longer produce.
    let mut want = vec![
        "install-config.yaml".to_string(),
        "worker-automount.ign".to_string(),
    ];
    want.extend(written);
    want.sort();
    if std::env::var_os("LAYERBOOT_BLESS").is_none() {
        assert_eq!(tree(&repo().join("examples/autofs/expected")), want);
    }
}
