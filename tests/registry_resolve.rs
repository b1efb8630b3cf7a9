//! `registry::resolve` against a real docker-registry on loopback, in each auth/TLS mode,
//! with real ostree-native images made by ostree-ext.

use layerboot::oci::layout::OciLayout;
use layerboot::oci::reference::ImageRef;
use layerboot::registry::{self, auth::AuthStore, RegistryOptions};
use layerboot_testkit::ostree_image::{self, FIXTURE_KVER, FIXTURE_TAG, OTHER_ARCH};
use layerboot_testkit::registry::{LocalRegistry, Mode};

fn opts() -> RegistryOptions {
    RegistryOptions {
        arch: "amd64".into(),
        ..Default::default()
    }
}

fn layout_digest(dir: &std::path::Path) -> String {
    OciLayout::open(dir)
        .unwrap()
        .find_ref(Some(FIXTURE_TAG))
        .unwrap()
        .digest
        .to_string()
}

#[tokio::test]
async fn resolves_oci_dir_with_genuine_ostree_labels() {
    let dir = ostree_image::bootable_image().unwrap();
    let r = registry::resolve(
        &format!("oci:{}:{FIXTURE_TAG}", dir.display())
            .parse()
            .unwrap(),
        &opts(),
    )
    .await
    .unwrap();
    assert_eq!(r.manifest_digest.to_string(), layout_digest(&dir));
    assert_eq!(r.config.label("ostree.bootable"), Some("true"));
    assert_eq!(r.config.label("containers.bootc"), Some("1"));
    assert_eq!(r.config.label("ostree.linux"), Some(FIXTURE_KVER));
    assert!(r
        .config
        .label("ostree.commit")
        .is_some_and(|c| c.len() == 64));
    assert!(r.config.label("ostree.final-diffid").is_some());
    assert!(r.pinned.is_none());
    assert!(!r.manifest.layers.is_empty());

    let nb = ostree_image::non_bootable_image().unwrap();
    let r = registry::resolve(&format!("oci:{}", nb.display()).parse().unwrap(), &opts())
        .await
        .unwrap();
    assert_eq!(r.config.label("ostree.bootable"), None);
    assert_eq!(r.config.label("ostree.linux"), None);
}

#[tokio::test]
async fn anonymous_registry_resolves_tag_to_digest() {
    let dir = ostree_image::bootable_image().unwrap();
    let reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    reg.push_oci_dir(&dir, "fixture/bootable:v1").unwrap();
    let o = RegistryOptions {
        tls_verify: false,
        ..opts()
    };
    let r = registry::resolve(&reg.image_ref("fixture/bootable:v1").parse().unwrap(), &o)
        .await
        .unwrap();
    let pinned = r.pinned.clone().unwrap();
    assert_eq!(
        pinned.to_string(),
        format!("{}/fixture/bootable@{}", reg.addr(), r.manifest_digest)
    );
    assert_eq!(r.config.label("ostree.bootable"), Some("true"));
    // By digest, the same answer.
    let by_digest: ImageRef = pinned.to_string().parse().unwrap();
    let r2 = registry::resolve(&by_digest, &o).await.unwrap();
    assert_eq!(r2.manifest_digest, r.manifest_digest);
    // With TLS verification on, a plain-HTTP registry is refused.
    let err = format!(
        "{:#}",
        registry::resolve(&by_digest, &opts()).await.unwrap_err()
    );
    assert!(err.contains(&reg.addr()), "{err}");
}

#[tokio::test]
async fn basic_auth_needs_credentials() {
    let dir = ostree_image::bootable_image().unwrap();
    let reg = LocalRegistry::start(Mode::Basic).unwrap();
    reg.push_oci_dir(&dir, "fixture/private:v1").unwrap();
    let image: ImageRef = reg.image_ref("fixture/private:v1").parse().unwrap();
    let anon = RegistryOptions {
        tls_verify: false,
        ..opts()
    };
    let err = format!("{:#}", registry::resolve(&image, &anon).await.unwrap_err());
    assert!(err.contains("401") && err.contains("--authfile"), "{err}");
    let authfile = reg.authfile().unwrap().unwrap();
    let o = RegistryOptions {
        tls_verify: false,
        auth: AuthStore::from_file(&authfile).unwrap(),
        ..opts()
    };
    let r = registry::resolve(&image, &o).await.unwrap();
    assert_eq!(r.manifest_digest.to_string(), layout_digest(&dir));
}

#[tokio::test]
async fn tls_with_private_ca() {
    let dir = ostree_image::bootable_image().unwrap();
    let reg = LocalRegistry::start(Mode::Tls).unwrap();
    reg.push_oci_dir(&dir, "fixture/tls:v1").unwrap();
    let image: ImageRef = reg.image_ref("fixture/tls:v1").parse().unwrap();
    let err = format!(
        "{:#}",
        registry::resolve(&image, &opts()).await.unwrap_err()
    );
    assert!(err.contains("--ca-file"), "{err}");
    for o in [
        RegistryOptions {
            ca_files: vec![reg.ca_path().unwrap()],
            ..opts()
        },
        RegistryOptions {
            cert_dir: reg.cert_dir(),
            ..opts()
        },
        RegistryOptions {
            tls_verify: false,
            ..opts()
        },
    ] {
        let r = registry::resolve(&image, &o).await.unwrap();
        assert_eq!(r.manifest_digest.to_string(), layout_digest(&dir));
    }
}

#[tokio::test]
async fn multiarch_index_picks_arch() {
    let dir = ostree_image::multiarch_image().unwrap();
    let reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    reg.push_oci_dir(&dir, "fixture/multi:v1").unwrap();
    let image: ImageRef = reg.image_ref("fixture/multi:v1").parse().unwrap();
    let base = RegistryOptions {
        tls_verify: false,
        ..opts()
    };
    let amd = registry::resolve(&image, &base).await.unwrap();
    let arm = registry::resolve(
        &image,
        &RegistryOptions {
            arch: OTHER_ARCH.into(),
            ..base.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(amd.config.architecture, "amd64");
    assert_eq!(arm.config.architecture, OTHER_ARCH);
    assert_ne!(amd.manifest_digest, arm.manifest_digest);
    assert!(amd.index_digest.is_some() && amd.index_digest == arm.index_digest);
    assert_eq!(arm.platform.architecture, OTHER_ARCH);
    let err = format!(
        "{:#}",
        registry::resolve(
            &image,
            &RegistryOptions {
                arch: "s390x".into(),
                ..base.clone()
            }
        )
        .await
        .unwrap_err()
    );
    assert!(
        err.contains("linux/s390x") && err.contains("linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );
    // Same from the layout itself.
    let local = registry::resolve(
        &format!("oci:{}", dir.display()).parse().unwrap(),
        &RegistryOptions {
            arch: OTHER_ARCH.into(),
            ..opts()
        },
    )
    .await
    .unwrap();
    assert_eq!(local.manifest_digest, arm.manifest_digest);
}
