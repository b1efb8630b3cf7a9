//! `layerboot install-config`: stream metadata and disk images into
//! platform.baremetal.clusterOSImage/bootstrapOSImage, printed pieces, in-place patching.

mod install_support;
use install_support::*;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

const IC: &str = "apiVersion: v1\nbaseDomain: example.com\nmetadata:\n  name: ocp\nplatform:\n  baremetal:\n    apiVIPs:\n    - 192.0.2.5\npullSecret: '{\"auths\":{}}'\n";

fn stream() -> String {
    repo()
        .join("tests/golden/stream-sample.json")
        .display()
        .to_string()
}

#[test]
fn stream_metadata_sets_both_os_images() {
    let dir = tempfile::tempdir().unwrap();
    let ic = dir.path().join("install-config.yaml");
    std::fs::write(&ic, IC).unwrap();
    let out = layerboot(&[
        "install-config",
        "--stream",
        &stream(),
        "--stream-arch",
        "x86_64",
        "--install-config",
        ic.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&std::fs::read(&ic).unwrap()).unwrap();
    assert_eq!(
        v["platform"]["baremetal"]["clusterOSImage"],
        format!(
            "https://images.example.com/layered/layered-metal.x86_64.raw.xz?sha256={}",
            "2".repeat(64)
        )
    );
    assert_eq!(
        v["platform"]["baremetal"]["bootstrapOSImage"],
        format!(
            "https://images.example.com/layered/layered-qemu.x86_64.qcow2.xz?sha256={}",
            "6".repeat(64)
        )
    );
    assert_eq!(v["platform"]["baremetal"]["apiVIPs"][0], "192.0.2.5");
    assert_eq!(
        std::fs::metadata(&ic).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A chosen format, printed as pieces.
    let out = layerboot(&[
        "install-config",
        "--stream",
        &stream(),
        "--stream-arch",
        "x86_64",
        "--stream-format",
        "4k.raw.xz",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    golden("install-config/pieces-stream-4k.yaml", &out.stdout);

    let out = layerboot(&[
        "install-config",
        "--stream",
        &stream(),
        "--stream-arch",
        "aarch64",
    ]);
    assert_refused(&out, "no architecture 'aarch64'");
    let out = layerboot(&[
        "install-config",
        "--stream",
        &stream(),
        "--stream-arch",
        "x86_64",
        "--stream-platform",
        "openstack",
    ]);
    assert_refused(&out, "no platform 'openstack'");
}

#[test]
fn disk_image_is_hashed_uncompressed() {
    let dir = tempfile::tempdir().unwrap();
    let raw = vec![0x5au8; 3 << 20];
    let want = layerboot::io::sha256_reader(&raw[..]).unwrap().0;
    let disk = dir.path().join("layered-metal.raw.xz");
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&raw).unwrap();
    std::fs::write(&disk, xz.finish().unwrap()).unwrap();
    let url = "http://10.0.0.1:8080/layered-metal.raw.xz";
    let out = layerboot(&[
        "install-config",
        "--cluster-os-image",
        url,
        "--disk",
        disk.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["platform"]["baremetal"]["clusterOSImage"],
        format!("{url}?sha256={want}")
    );
}

#[test]
fn pieces_print_with_trust_bundle_and_mirrors() {
    let out = layerboot(&[
        "install-config",
        "--trust-bundle",
        TEST_CA,
        "--mirror",
        "quay.io/acme=mirror.example.com:5000/acme",
        "--mirror",
        "quay.io/acme=backup.example.com/acme",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    golden("install-config/pieces-trust-mirrors.yaml", &out.stdout);
    let out = layerboot(&["install-config"]);
    assert_refused(&out, "nothing to do");
}
