//! What an image's config labels say about it, each rule in one place: whether it can boot
//! a node, whether it is a bootc image, its version. `inspect`, `disk`, `manifests` and
//! the install kit all ask here, so no command calls an image bootable that another
//! refuses.

pub mod inspect;

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use crate::oci::reference::{ImageRef, RegistryRef};
use crate::registry::{self, RegistryOptions};

/// Set by ostree-ext's encapsulation (`rpm-ostree compose image`, `ostree container
/// commit`) on an image whose commit has a kernel and initramfs.
pub const OSTREE_BOOTABLE: &str = "ostree.bootable";
/// bootc's "this image is meant to boot" label (bootc documents the value `1`).
pub const BOOTC: &str = "containers.bootc";
/// The ostree commit an encapsulated image carries, and the diff id of its last ostree
/// layer: present on every ostree-native image and inherited by derived ones.
pub const OSTREE_COMMIT: &str = "ostree.commit";
pub const OSTREE_FINAL_DIFFID: &str = "ostree.final-diffid";
/// The kernel version in the image's ostree commit.
pub const OSTREE_LINUX: &str = "ostree.linux";

type Labels = BTreeMap<String, String>;

fn get<'a>(labels: &'a Labels, key: &str) -> Option<&'a str> {
    labels.get(key).map(|v| v.trim())
}

/// `ostree.bootable` as ostree-ext writes it (`true`; `1` from older tools).
pub fn says_ostree_bootable(labels: &Labels) -> bool {
    matches!(get(labels, OSTREE_BOOTABLE), Some("true" | "1"))
}

/// `containers.bootc=1`.
pub fn is_bootc(labels: &Labels) -> bool {
    get(labels, BOOTC) == Some("1")
}

/// The image carries ostree content layerboot can deploy: an encapsulated commit.
pub fn is_ostree_native(labels: &Labels) -> bool {
    says_ostree_bootable(labels)
        || labels.contains_key(OSTREE_COMMIT)
        || labels.contains_key(OSTREE_FINAL_DIFFID)
}

/// Why an image cannot boot a node, or `None` when it can: it says it is bootable
/// (`ostree.bootable` or `containers.bootc`), carries ostree content, and does not declare
/// an empty kernel.
pub fn not_bootable_because(labels: &Labels) -> Option<&'static str> {
    if !(says_ostree_bootable(labels) || is_bootc(labels)) {
        return Some("no ostree.bootable or containers.bootc label");
    }
    if !is_ostree_native(labels) {
        return Some("containers.bootc but no ostree content (no ostree.commit or ostree.final-diffid label)");
    }
    if get(labels, OSTREE_LINUX).is_some_and(str::is_empty) {
        return Some("an empty ostree.linux label: the image carries no kernel");
    }
    None
}

pub fn is_bootable(labels: &Labels) -> bool {
    not_bootable_because(labels).is_none()
}

/// [`not_bootable_because`] as the one-line error every command gives.
pub fn check_bootable(name: &str, labels: &Labels) -> Result<()> {
    if let Some(why) = not_bootable_because(labels) {
        bail!("{name} is not a bootable ostree image ({why}): build it FROM a CoreOS/RHCOS base and end with `ostree container commit`");
    }
    Ok(())
}

/// The image's version: `org.opencontainers.image.version`, else the older `version`.
pub fn version(labels: &Labels) -> Option<&str> {
    labels
        .get("org.opencontainers.image.version")
        .or_else(|| labels.get("version"))
        .map(String::as_str)
}

/// `image` as a registry reference: nodes pull `osImageURL` from a registry, so a local
/// layout or archive is refused.
pub fn registry_ref(image: &str) -> Result<RegistryRef> {
    match image.parse::<ImageRef>()? {
        ImageRef::Registry(r) => Ok(r),
        other => bail!("'{other}' is not a registry image: nodes pull osImageURL from a registry; push it and give registry/repo@sha256:…"),
    }
}

/// The image as nodes must see it: pinned by digest, plus whether it is a bootc image.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub image: RegistryRef,
    pub bootc: bool,
}

/// Pin the image for the cluster: resolve a tag to its digest in the registry (a given
/// digest is checked to exist) and read its labels.
///
/// A tag naming a multi-arch index is pinned to the *index* digest: CRI-O and rpm-ostree
/// pick the node's architecture from it, so one osImageURL serves a multi-arch cluster.
pub async fn pin(image: &RegistryRef, reg: &RegistryOptions, offline: bool) -> Result<Pinned> {
    if offline {
        let Some(d) = &image.digest else {
            bail!("--offline needs the image pinned by digest (registry/repo@sha256:…): a tag cannot be resolved without the registry");
        };
        return Ok(Pinned {
            image: image.pinned(d),
            bootc: false,
        });
    }
    let resolved = registry::resolve(&ImageRef::Registry(image.clone()), reg)
        .await
        .with_context(|| format!("resolving {image}"))?;
    let digest = match (&image.digest, &resolved.index_digest) {
        (Some(d), _) => d.clone(),
        (None, Some(index)) => index.clone(),
        (None, None) => resolved.manifest_digest.clone(),
    };
    let labels = resolved
        .config
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    check_bootable(&image.to_string(), &labels)?;
    let bootc = is_bootc(&labels);
    Ok(Pinned {
        image: image.pinned(&digest),
        bootc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bootable_rule() {
        let cases: &[(&[(&str, &str)], Option<&str>)] = &[
            (
                &[(OSTREE_BOOTABLE, "true"), (OSTREE_LINUX, "6.1.0-50-amd64")],
                None,
            ),
            (&[(OSTREE_BOOTABLE, "1")], None),
            (&[(OSTREE_BOOTABLE, " true ")], None),
            (&[(BOOTC, "1"), (OSTREE_COMMIT, "abc")], None),
            (&[(BOOTC, "1"), (OSTREE_FINAL_DIFFID, "sha256:aa")], None),
            (&[], Some("no ostree.bootable or containers.bootc")),
            (
                &[(OSTREE_BOOTABLE, "false")],
                Some("no ostree.bootable or containers.bootc"),
            ),
            (
                &[(OSTREE_BOOTABLE, "yes")],
                Some("no ostree.bootable or containers.bootc"),
            ),
            (
                &[(BOOTC, "true"), (OSTREE_COMMIT, "abc")],
                Some("no ostree.bootable or containers.bootc"),
            ),
            (&[(BOOTC, "1")], Some("no ostree content")),
            (
                &[(OSTREE_BOOTABLE, "true"), (OSTREE_LINUX, " ")],
                Some("carries no kernel"),
            ),
        ];
        for (labels, want) in cases {
            let labels = l(labels);
            let r = check_bootable("img", &labels);
            assert_eq!(is_bootable(&labels), want.is_none(), "{labels:?}");
            match want {
                None => r.unwrap(),
                Some(w) => {
                    let e = r.unwrap_err().to_string();
                    assert!(e.contains(w), "{labels:?}: {e}");
                    assert!(e.starts_with("img is not a bootable ostree image ("), "{e}");
                }
            }
        }
    }

    #[test]
    fn version_prefers_the_oci_label() {
        assert_eq!(
            version(&l(&[
                ("version", "old"),
                ("org.opencontainers.image.version", "9.6.1")
            ])),
            Some("9.6.1")
        );
        assert_eq!(version(&l(&[("version", "41.1")])), Some("41.1"));
        assert_eq!(version(&l(&[])), None);
    }
}
