//! Local OCI layouts and archives as hostile input and as outputs (issue #15 items 2, 8,
//! 9, 10): small hand-made images, no registry, no fixture.

mod common;

use std::path::Path;

use common::layerboot_env;
use layerboot::cancel::Cancel;
use layerboot::oci::layout::{self as ocilayout, OciLayout};
use layerboot::oci::manifest::{Descriptor, OCI_CONFIG, OCI_MANIFEST};

/// A tiny image (config + one layer) in `layout`; `name` makes its content unique.
fn add_image(layout: &OciLayout, name: &str) -> (Descriptor, Descriptor) {
    let config = layout
        .write_blob(
            OCI_CONFIG,
            format!(r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"name":"{name}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#).as_bytes(),
        )
        .unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":{}}},"layers":[]}}"#,
        config.digest, config.size
    );
    (
        layout
            .write_blob(OCI_MANIFEST, manifest.as_bytes())
            .unwrap(),
        config,
    )
}

fn run(args: &[&str]) -> common::Run {
    layerboot_env(args, &[])
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Item 8: `pull oci-archive:a.tar:x --to oci-archive:a.tar:x` rewrote the archive with
/// only the pulled image; an archive destination is now added to, as a layout is.
#[test]
fn pulling_into_an_existing_archive_keeps_its_other_images() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(&dir.path().join("l")).unwrap();
    let (a, _) = add_image(&layout, "a");
    let (b, _) = add_image(&layout, "b");
    layout.set_ref(Some("x"), &a).unwrap();
    layout.set_ref(Some("y"), &b).unwrap();
    let archive = dir.path().join("a.tar");
    ocilayout::write_archive(&layout, &archive, &Cancel::new()).unwrap();
    let src = format!("oci-archive:{}:x", s(&archive));
    let to_z = format!("oci-archive:{}:z", s(&archive));
    for (i, to) in [&src, &to_z].into_iter().enumerate() {
        run(&["pull", "--quiet", &src, "--to", to]).ok();
        let back = dir.path().join(format!("back-{i}"));
        std::fs::create_dir(&back).unwrap();
        let back = ocilayout::unpack_archive(&archive, &back, &Cancel::new()).unwrap();
        assert_eq!(back.find_ref(Some("x")).unwrap().digest, a.digest, "{to}");
        assert_eq!(back.find_ref(Some("y")).unwrap().digest, b.digest, "{to}");
    }
    // and the new tag was added beside them
    let back = dir.path().join("final");
    std::fs::create_dir(&back).unwrap();
    let back = ocilayout::unpack_archive(&archive, &back, &Cancel::new()).unwrap();
    assert_eq!(back.find_ref(Some("z")).unwrap().digest, a.digest);
    // a file that is not an archive is not replaced
    let not_tar = dir.path().join("notes.txt");
    std::fs::write(&not_tar, "my notes").unwrap();
    run(&[
        "pull",
        "--quiet",
        &src,
        "--to",
        &format!("oci-archive:{}", s(&not_tar)),
    ])
    .one_line_error(&["notes.txt", "not an OCI archive"]);
    assert_eq!(std::fs::read_to_string(&not_tar).unwrap(), "my notes");
}

/// Items 2 and 10 from the command line: the only, unnamed image of a layout is taken;
/// a symlinked blob is refused in one line, without reading it.
#[test]
fn layouts_are_read_by_the_one_rule() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("l");
    let layout = OciLayout::create(&root).unwrap();
    let (m, config) = add_image(&layout, "only");
    layout.set_ref(None, &m).unwrap();
    let oci = format!("oci:{}", s(&root));
    run(&["inspect", &oci]).ok();
    let blob = layout.blob_path(&config.digest);
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &blob).unwrap();
    run(&["inspect", &oci]).one_line_error(&["is a symlink"]);
}

/// Item 9: a broken credentials file found by the default search stopped `inspect
/// oci:DIR`, which needs no credentials.
#[test]
fn a_broken_default_authfile_does_not_stop_local_reads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("l");
    let layout = OciLayout::create(&root).unwrap();
    let (m, _) = add_image(&layout, "only");
    layout.set_ref(Some("v1"), &m).unwrap();
    let config_home = dir.path().join("config");
    std::fs::create_dir_all(config_home.join("containers")).unwrap();
    std::fs::write(config_home.join("containers/auth.json"), "{ not json").unwrap();
    let env = [("XDG_CONFIG_HOME", s(&config_home))];
    layerboot_env(&["inspect", &format!("oci:{}:v1", s(&root))], &env).ok();
    // where credentials are needed, the broken file is named
    layerboot_env(
        &["inspect", "--tls-verify=false", "127.0.0.1:9/acme/os:1"],
        &env,
    )
    .one_line_error(&["auth.json", "not a valid auths JSON file"]);
}

/// Item 9: `disk --list` (as the README writes it) demanded an image, and
/// `--tls-verify IMAGE` took the image as the flag's value.
#[test]
fn flags_do_not_demand_or_swallow_the_image() {
    let out = run(&["disk", "--list"]);
    out.ok();
    assert!(out.stdout.contains("metal4k"), "{}", out.stdout);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("l");
    let layout = OciLayout::create(&root).unwrap();
    let (m, _) = add_image(&layout, "only");
    layout.set_ref(Some("v1"), &m).unwrap();
    run(&["inspect", "--tls-verify", &format!("oci:{}:v1", s(&root))]).ok();
}

/// `pull --json` (issue #16 item 4): the report names what landed, by the same digests the
/// destination's index holds; the global `-q` leaves stderr empty and stdout to the JSON.
#[test]
fn pull_json_reports_what_was_copied() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(&dir.path().join("l")).unwrap();
    let (m, _) = add_image(&layout, "json");
    layout.set_ref(Some("x"), &m).unwrap();
    let src = format!("oci:{}:x", s(&dir.path().join("l")));
    let to = format!("oci:{}:y", s(&dir.path().join("to")));
    let first = run(&["-q", "pull", "--json", &src, "--to", &to]);
    first.ok();
    assert_eq!(first.stderr, "", "-q: nothing on stderr");
    let v: serde_json::Value = serde_json::from_str(&first.stdout).unwrap();
    assert_eq!(v["destination"], to.as_str());
    assert_eq!(v["manifestDigest"], m.digest.to_string().as_str());
    assert_eq!(v["layoutDigest"], m.digest.to_string().as_str());
    assert_eq!(
        v["pinned"],
        serde_json::Value::Null,
        "a local source has no pull spec"
    );
    // blobs are the config and layers (this image has none): fetched the first time,
    // present the second
    assert_eq!(v["blobsFetched"], 1, "{v}");
    assert!(v["bytesFetched"].as_u64().unwrap() > 0, "{v}");
    assert!(v["seconds"].is_number(), "{v}");
    let back = OciLayout::open(&dir.path().join("to")).unwrap();
    assert_eq!(back.find_ref(Some("y")).unwrap().digest, m.digest);
    let again = run(&["pull", "--json", &src, "--to", &to]);
    again.ok();
    let v: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(
        (v["blobsFetched"].as_u64(), v["blobsSkipped"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
}
