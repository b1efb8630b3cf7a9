//! Each bad input from the foundation issue: a one-line error naming the culprit, a
//! non-zero exit, and nothing half-written at the destination.

mod common;

use std::fs;
use std::path::Path;

use common::{layerboot, tree};
use layerboot::oci::layout::OciLayout;
use layerboot::oci::manifest::{ImageManifest, OCI_MANIFEST};
use layerboot::oci::reference::Digest;
use layerboot_testkit::ostree_image::{self, FIXTURE_TAG};
use layerboot_testkit::registry::{LocalRegistry, Mode};

/// Run `pull SRC --to oci:OUT/dest` and assert the failure left `OUT` empty.
fn pull_fails(src: &str, extra: &[&str], needles: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}", out.path().join("dest").display());
    let mut args = vec!["pull", src, "--to", &dest];
    args.extend_from_slice(extra);
    layerboot(&args).one_line_error(needles);
    assert_eq!(
        tree(out.path()),
        Vec::<String>::new(),
        "partial output left"
    );
}

fn image_manifest(dir: &Path) -> ImageManifest {
    let l = OciLayout::open(dir).unwrap();
    let e = l.find_ref(Some(FIXTURE_TAG)).unwrap();
    serde_json::from_slice(&l.read_blob(&e.digest, e.size).unwrap()).unwrap()
}

#[test]
fn malformed_reference() {
    pull_fails(
        "quay.io/Acme/Image:latest",
        &[],
        &["quay.io/Acme/Image:latest", "lowercase"],
    );
    layerboot(&["inspect", "rhcos-layered:4.16"])
        .one_line_error(&["rhcos-layered:4.16", "short name"]);
    layerboot(&["inspect", "quay.io/acme/x@sha256:abc"]).one_line_error(&["sha256:abc"]);
}

#[test]
fn unknown_transport() {
    pull_fails("ftp://quay.io/acme/x", &[], &["'ftp'"]);
    layerboot(&["inspect", "containers-storage:quay.io/acme/x"])
        .one_line_error(&["'containers-storage'"]);
    let out = tempfile::tempdir().unwrap();
    layerboot(&[
        "pull",
        "oci:/nonexistent",
        "--to",
        "docker://quay.io/acme/x",
    ])
    .one_line_error(&["--to", "docker://quay.io/acme/x", "oci:DIR"]);
    layerboot(&[
        "pull",
        "oci:/nonexistent",
        "--to",
        &format!("dir:{}", out.path().display()),
    ])
    .one_line_error(&["--to", "'dir'"]);
}

#[test]
fn missing_image_404() {
    let img = ostree_image::bootable_image().unwrap();
    let reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    reg.push_oci_dir(&img, "present/image:v1").unwrap();
    pull_fails(
        &reg.image_ref("present/image:nope"),
        &["--tls-verify=false"],
        &["present/image:nope", "not found"],
    );
    pull_fails(
        &reg.image_ref("absent/image:v1"),
        &["--tls-verify=false"],
        &["absent/image:v1", "not found"],
    );
    layerboot(&["inspect", "oci:/nonexistent/layout"]).one_line_error(&["/nonexistent/layout"]);
}

#[test]
fn unauthorized_401_without_credentials() {
    let img = ostree_image::bootable_image().unwrap();
    let reg = LocalRegistry::start(Mode::Basic).unwrap();
    let src = reg.push_oci_dir(&img, "private/image:v1").unwrap();
    pull_fails(
        &src,
        &["--tls-verify=false"],
        &["401", "private/image", "--authfile"],
    );
    // issue #15 item 9: an authfile without an entry for the registry is named, instead
    // of "pass --authfile"
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty-auth.json");
    fs::write(&empty, r#"{"auths":{}}"#).unwrap();
    pull_fails(
        &src,
        &["--tls-verify=false", "--authfile", empty.to_str().unwrap()],
        &["401", "empty-auth.json has no credentials for it"],
    );
}

#[test]
fn tampered_blob_is_refused_and_not_kept() {
    let img = ostree_image::layered_image().unwrap();
    let reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    let src = reg.push_oci_dir(&img, "acme/tampered:v1").unwrap();
    let layer = image_manifest(&img).layers[0].digest.clone();
    let path = reg.storage_blob_path(&layer);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    pull_fails(
        &src,
        &["--tls-verify=false"],
        &[&layer.to_string(), "does not match its digest"],
    );
    // Into an existing layout: the good blobs may land, the bad one must not, and the
    // image is not named in index.json.
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("existing");
    OciLayout::create(&dest).unwrap();
    layerboot(&[
        "pull",
        &src,
        "--to",
        &format!("oci:{}", dest.display()),
        "--tls-verify=false",
    ])
    .one_line_error(&["does not match its digest"]);
    let l = OciLayout::open(&dest).unwrap();
    assert!(!l.blob_path(&layer).exists());
    assert!(l.read_index().unwrap().manifests.is_empty());
    assert!(
        tree(&dest).iter().all(|p| !p.contains(".tmp")),
        "{:?}",
        tree(&dest)
    );
}

#[test]
fn truncated_blob_is_refused() {
    let img = ostree_image::layered_image().unwrap();
    let reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    let src = reg.push_oci_dir(&img, "acme/truncated:v1").unwrap();
    let layer = image_manifest(&img).layers[0].digest.clone();
    let path = reg.storage_blob_path(&layer);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    pull_fails(
        &src,
        &["--tls-verify=false"],
        &[&layer.to_string(), "truncated"],
    );
}

#[test]
fn invalid_manifest_json() {
    // A layout whose index names a blob that is not JSON (its digest is right, so
    // only the parse can catch it).
    let dir = tempfile::tempdir().unwrap();
    let l = OciLayout::create(dir.path()).unwrap();
    let bad = l
        .write_blob(OCI_MANIFEST, b"{\"schemaVersion\": 2, \"config\": ")
        .unwrap();
    l.set_ref(Some("v1"), &bad).unwrap();
    let src = format!("oci:{}:v1", dir.path().display());
    pull_fails(
        &src,
        &[],
        &["invalid manifest JSON", &bad.digest.to_string()],
    );
    layerboot(&["inspect", &src]).one_line_error(&["invalid manifest JSON"]);
}

#[test]
fn index_without_requested_arch() {
    let img = ostree_image::multiarch_image().unwrap();
    let reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    let src = reg.push_oci_dir(&img, "multi/image:v1").unwrap();
    pull_fails(
        &src,
        &["--tls-verify=false", "--arch", "s390x"],
        &["linux/s390x", "linux/amd64, linux/arm64", "--arch"],
    );
}

#[test]
fn unreadable_authfile() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-auth.json");
    pull_fails(
        "quay.io/acme/x:v1",
        &["--authfile", missing.to_str().unwrap()],
        &["missing-auth.json"],
    );
    let garbage = dir.path().join("garbage-auth.json");
    fs::write(
        &garbage,
        "{\"auths\": {\"quay.io\": {\"auth\": \"c2VjcmV0OnB3\"}",
    )
    .unwrap();
    pull_fails(
        "quay.io/acme/x:v1",
        &["--authfile", garbage.to_str().unwrap()],
        &["garbage-auth.json", "line"],
    );
    layerboot(&[
        "inspect",
        "quay.io/acme/x:v1",
        "--authfile",
        garbage.to_str().unwrap(),
    ])
    .one_line_error(&["garbage-auth.json"])
    .never_shows(&["c2VjcmV0OnB3"]);
    // A directory is not a file.
    pull_fails(
        "quay.io/acme/x:v1",
        &["--authfile", dir.path().to_str().unwrap()],
        &[dir.path().to_str().unwrap()],
    );
}

#[test]
fn digest_mismatch_of_pinned_reference() {
    // Asking for a digest the registry does not have is a 404, never a silent substitute.
    let img = ostree_image::bootable_image().unwrap();
    let reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    reg.push_oci_dir(&img, "acme/pinned:v1").unwrap();
    let other: Digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
        .parse()
        .unwrap();
    pull_fails(
        &reg.image_ref(&format!("acme/pinned@{other}")),
        &["--tls-verify=false"],
        &["not found"],
    );
}

#[test]
fn destination_that_is_not_a_layout() {
    let img = ostree_image::bootable_image().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let src = format!("oci:{}", img.display());
    layerboot(&[
        "pull",
        &src,
        "--to",
        &format!("oci:{}", dir.path().display()),
    ])
    .one_line_error(&["not an OCI image layout"]);
    assert_eq!(tree(dir.path()), vec!["notes.txt"]);
    layerboot(&["pull", &src, "--to", "oci-archive:/nonexistent-dir/x.tar"])
        .one_line_error(&["/nonexistent-dir"]);
}
