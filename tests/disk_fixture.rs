//! The example layered image (examples/debian-layered) is a genuine ostree-native container
//! with the derived layer on top. Builds the fixture on first run (root, a few minutes).

use std::collections::HashMap;
use std::io::Read;

use layerboot_testkit::layered_image::{layered_image, MARKER_PATH};
use ostree_ext::oci_spec::image::{ImageConfiguration, ImageManifest};

fn blob(dir: &std::path::Path, digest: &str) -> std::path::PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

#[test]
fn example_image_is_bootable_ostree_with_derived_layer() {
    let img = layered_image().expect("building the example layered image");
    let base = ImageManifest::from_file(blob(&img.oci_dir, &img.base_digest)).unwrap();
    let layered = ImageManifest::from_file(blob(&img.oci_dir, &img.digest)).unwrap();
    assert_eq!(
        layered.layers().len(),
        base.layers().len() + 1,
        "exactly one derived layer"
    );
    assert_eq!(
        &layered.layers()[..base.layers().len()],
        base.layers().as_slice(),
        "base layers shared"
    );

    let config =
        ImageConfiguration::from_file(blob(&img.oci_dir, layered.config().digest().as_ref()))
            .unwrap();
    let labels: HashMap<String, String> = config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert_eq!(
        labels.get("ostree.bootable").map(String::as_str),
        Some("true"),
        "{labels:?}"
    );
    assert!(
        labels
            .get("ostree.linux")
            .is_some_and(|k| k.ends_with("-amd64")),
        "{labels:?}"
    );
    assert!(labels.contains_key("ostree.commit"), "{labels:?}");
    assert_eq!(config.rootfs().diff_ids().len(), layered.layers().len());

    // The derived layer carries the marker and the unit that prints it.
    let last = layered.layers().last().unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(blob(&img.oci_dir, last.digest().as_ref())).unwrap(),
    ));
    let mut found = HashMap::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut s = String::new();
        if entry.header().entry_type().is_file() {
            entry.read_to_string(&mut s).unwrap();
        }
        found.insert(path, s);
    }
    assert_eq!(
        found.get(MARKER_PATH).map(|s| s.trim()),
        Some(img.marker.as_str())
    );
    assert!(found
        .get("usr/libexec/layered-ok")
        .is_some_and(|s| s.contains("LAYERED-OK")));
    assert!(found.contains_key("usr/lib/systemd/system/multi-user.target.wants/layered-ok.service"));
}
