//! `layerboot inspect` reads what the image's own files say (issue #12: "reports which
//! kind it is and what it read from the image"): the CoreOS-like fixture is a CoreOS image
//! with its platforms.json, image.json and osname; the example is a plain ostree image;
//! the SELinux fixture names its policy. Local layouts are read without `--content`.

use std::process::Command;

use layerboot_testkit::coreos_image::{coreos_image, OSNAME};
use layerboot_testkit::layered_image::layered_image;
use layerboot_testkit::selinux_image::selinux_image;
use serde_json::Value;

fn inspect(args: &[&str]) -> (Value, String) {
    let json = Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .arg("inspect")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let text = Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap();
    assert!(text.status.success());
    (
        serde_json::from_slice(&json.stdout).unwrap(),
        String::from_utf8(text.stdout).unwrap(),
    )
}

#[test]
fn coreos_image_is_reported_with_what_was_read_from_it() {
    let img = coreos_image().expect("CoreOS-like fixture (needs root)");
    let (report, text) = inspect(&[&img.oci_ref()]);
    let c = &report["content"];
    assert_eq!(c["kind"], "coreos", "{c:#}");
    assert_eq!(c["stateroot"], OSNAME);
    assert_eq!(c["coreos"]["osname"], OSNAME);
    let platforms: Vec<&str> = c["coreos"]["platforms"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(platforms, ["aws", "azure", "packet", "qemu"]);
    assert_eq!(
        c["coreos"]["platforms"]["qemu"]["kernel_arguments"][1],
        "console=ttyS0,115200n8"
    );
    assert_eq!(
        c["coreos"]["image"]["extra-kargs"][1],
        "layerboot.fixture=coreos"
    );
    assert_eq!(c["metalCompression"], "xz");
    assert_eq!(c["selinuxPolicy"], Value::Null);
    assert!(
        text.contains("Kind:       CoreOS image (/usr/share/coreos-assembler/platforms.json)"),
        "{text}"
    );
    assert!(
        text.contains("platforms.json     aws, azure, packet, qemu"),
        "{text}"
    );
    assert!(text.contains("osname             fedora-coreos"), "{text}");
}

#[test]
fn plain_ostree_image_and_selinux_policy() {
    let example = layered_image().expect("example image (needs root)");
    let (report, text) = inspect(&[&example.oci_ref()]);
    let c = &report["content"];
    assert_eq!(c["kind"], "ostree", "{c:#}");
    assert_eq!(c["coreos"], Value::Null);
    assert_eq!(c["stateroot"], "default");
    assert!(text.contains("Kind:       ostree image (no "), "{text}");
    assert!(
        text.contains("SELinux policy     (none: disks stay unlabelled)"),
        "{text}"
    );
    assert_eq!(c["live"]["bootsLive"], false, "{c:#}");
    assert_eq!(c["live"]["offlineInstall"], false, "{c:#}");
    assert!(text.contains("live ISO           no ("), "{text}");

    let selinux = selinux_image().expect("SELinux fixture (needs root, semodule)");
    let (report, text) = inspect(&[&selinux.oci_ref()]);
    assert_eq!(report["content"]["selinuxPolicy"], "default", "{report:#}");
    assert!(text.contains("SELinux policy     default"), "{text}");
}

#[test]
fn content_of_an_unreadable_layout_is_a_warning_or_an_error() {
    let example = layered_image().expect("example image (needs root)");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("oci");
    assert!(Command::new("cp")
        .arg("-al")
        .arg(&example.oci_dir)
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    // The layered image's newest layer, gone: the manifest still resolves, its files do not.
    let manifest: Value = {
        let digest = example.digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(copy.join("blobs/sha256").join(digest)).unwrap())
            .unwrap()
    };
    let layers = manifest["layers"].as_array().unwrap();
    let last = layers.last().unwrap()["digest"].as_str().unwrap();
    std::fs::remove_file(
        copy.join("blobs/sha256")
            .join(last.strip_prefix("sha256:").unwrap()),
    )
    .unwrap();
    let image = format!("oci:{}:layered", copy.display());
    let (report, _) = inspect(&[&image]);
    assert_eq!(report["content"], Value::Null);
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("image files not read: ")),
        "{warnings:?}"
    );
    // Asked for explicitly, it is an error.
    let o = Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .args(["inspect", "--content", &image])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("error: reading the image's files") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn live_capable_image_is_reported_so() {
    let img = layerboot_testkit::live_image::live_image().expect("live example image");
    let (report, text) = inspect(&[&img.oci_ref()]);
    let live = &report["content"]["live"];
    assert_eq!(live["bootsLive"], true, "{live:#}");
    assert_eq!(live["offlineInstall"], true, "{live:#}");
    assert!(
        text.contains("live ISO           boots live; installs offline"),
        "{text}"
    );
}
