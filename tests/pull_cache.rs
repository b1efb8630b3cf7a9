//! `pull::pull_to_cache`: the shared content-addressed cache other subcommands pull
//! through. Its own test binary: it sets $LAYERBOOT_CACHE for the whole process.

use layerboot::oci::layout::OciLayout;
use layerboot::oci::reference::ImageRef;
use layerboot::registry::RegistryOptions;
use layerboot_testkit::ostree_image;
use layerboot_testkit::registry::{LocalRegistry, Mode};

#[tokio::test]
async fn pulls_into_cache_once() {
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("LAYERBOOT_CACHE", cache.path());
    let img = ostree_image::layered_image().unwrap();
    let reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    let src: ImageRef = reg
        .push_oci_dir(&img, "acme/layered:4.16")
        .unwrap()
        .parse()
        .unwrap();
    let opts = RegistryOptions {
        tls_verify: false,
        ..Default::default()
    };
    let first = layerboot::registry::pull::pull_to_cache(&src, &opts, true)
        .await
        .unwrap();
    assert_eq!(first.layout_dir.as_deref(), Some(cache.path()));
    assert_eq!(first.ref_name, first.manifest_digest.hex());
    assert_eq!(
        first.pinned.as_ref().unwrap().digest.as_ref(),
        Some(&first.manifest_digest)
    );
    assert_eq!(first.config.label("ostree.bootable"), Some("true"));
    assert_eq!(first.stats.blobs_fetched, 3);
    let layout = OciLayout::open(cache.path()).unwrap();
    assert_eq!(
        layout.find_ref(Some(&first.ref_name)).unwrap().digest,
        first.manifest_digest
    );
    let again = layerboot::registry::pull::pull_to_cache(&src, &opts, true)
        .await
        .unwrap();
    assert_eq!(
        (again.stats.blobs_fetched, again.stats.blobs_skipped),
        (0, 3)
    );
    assert_eq!(
        again.oci_ref().unwrap(),
        format!(
            "oci:{}:{}",
            cache.path().display(),
            first.manifest_digest.hex()
        )
    );
}
