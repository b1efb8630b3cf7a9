//! The image a disk is built from, read from a local OCI layout (the verified pull cache or
//! a user's `oci:` directory): digest, labels, and the bootability checks that must pass
//! before any heavy work starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ostree_ext::oci_spec::image::{ImageIndex, ImageManifest};

use crate::registry::manifest::ImageConfig;

/// An image available in a local OCI layout.
#[derive(Debug, Clone)]
pub struct SourceImage {
    pub oci_dir: PathBuf,
    /// The name the OCI layout knows the image by (`org.opencontainers.image.ref.name`).
    pub oci_ref_name: String,
    /// Manifest digest, `sha256:…`.
    pub digest: String,
    pub labels: BTreeMap<String, String>,
    /// How the deployment's origin names the image, so `ostree admin upgrade` / bootc / the
    /// MCO track it: `ostree-unverified-registry:REPO@sha256:…` for registry images.
    pub target_imgref: String,
    /// Human name for the aleph file (`quay.io/acme/os@sha256:…` or `oci:DIR:tag`).
    pub display_name: String,
    /// The manifest's layers, in order.
    pub layers: Vec<LayerBlob>,
    /// The config's `rootfs.diff_ids`, one per layer.
    pub diff_ids: Vec<String>,
}

/// One layer blob of an image in an OCI layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    pub digest: String,
    pub media_type: String,
    pub path: PathBuf,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn blob(oci_dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    oci_dir.join("blobs").join(alg).join(hex)
}

impl SourceImage {
    /// Open `tag` (or the only image when `None`) in an OCI layout.
    pub fn open(oci_dir: &Path, tag: Option<&str>) -> Result<SourceImage> {
        let index_path = oci_dir.join("index.json");
        let index = ImageIndex::from_file(&index_path)
            .with_context(|| format!("reading OCI layout {}", index_path.display()))?;
        let named = |m: &ostree_ext::oci_spec::image::Descriptor| {
            m.annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .cloned()
        };
        let desc = match tag {
            Some(t) => index
                .manifests()
                .iter()
                .find(|m| named(m).as_deref() == Some(t))
                .with_context(|| format!("no image tagged '{t}' in {}", oci_dir.display()))?,
            None => match index.manifests().as_slice() {
                [one] => one,
                [] => bail!("{}: the OCI layout holds no image", oci_dir.display()),
                _ => bail!(
                    "{}: the OCI layout holds several images; name one as oci:DIR:TAG",
                    oci_dir.display()
                ),
            },
        };
        let oci_ref_name = named(desc).with_context(|| {
            format!(
                "{}: image {} has no ref name; tag it",
                oci_dir.display(),
                desc.digest()
            )
        })?;
        let digest = desc.digest().to_string();
        let manifest = ImageManifest::from_file(blob(oci_dir, &digest))
            .with_context(|| format!("reading manifest {digest} in {}", oci_dir.display()))?;
        let config_digest = manifest.config().digest().to_string();
        let config_path = blob(oci_dir, &config_digest);
        let config_bytes = std::fs::read(&config_path).with_context(|| {
            format!(
                "reading image config {config_digest} in {}",
                oci_dir.display()
            )
        })?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).with_context(|| {
            format!(
                "parsing image config {config_digest} in {}",
                oci_dir.display()
            )
        })?;
        let labels = config.labels();
        let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        let layers = manifest
            .layers()
            .iter()
            .map(|l| LayerBlob {
                digest: l.digest().to_string(),
                media_type: l.media_type().to_string(),
                path: blob(oci_dir, l.digest().as_ref()),
            })
            .collect();
        let display_name = format!("oci:{}:{oci_ref_name}", oci_dir.display());
        Ok(SourceImage {
            target_imgref: format!("ostree-unverified-image:{display_name}"),
            display_name,
            oci_dir: oci_dir.to_path_buf(),
            oci_ref_name,
            digest,
            labels,
            layers,
            diff_ids,
        })
    }

    /// Point the deployment origin and the aleph file at the registry the image came from.
    pub fn with_registry_origin(mut self, pinned_pull_spec: &str) -> SourceImage {
        self.target_imgref = format!("ostree-unverified-registry:{pinned_pull_spec}");
        self.display_name = pinned_pull_spec.to_string();
        self
    }

    /// The source reference ostree-ext reads from (through skopeo's image proxy).
    pub fn source_imgref(&self) -> String {
        format!(
            "ostree-unverified-image:oci:{}:{}",
            self.oci_dir.display(),
            self.oci_ref_name
        )
    }

    pub fn version(&self) -> Option<&str> {
        self.labels
            .get("org.opencontainers.image.version")
            .or_else(|| self.labels.get("version"))
            .map(String::as_str)
    }

    /// What the layers unpack to (tar streams, summed): the root filesystem's content
    /// before deploying (see [`super::estimate`]).
    pub fn unpacked_size(&self) -> Result<u64> {
        let mut total = 0;
        for layer in &self.layers {
            let mut f = std::fs::File::open(&layer.path)
                .with_context(|| format!("opening layer {}", layer.path.display()))?;
            let len = f.metadata()?.len();
            total += super::estimate::layer_size(&mut f, len)
                .with_context(|| format!("measuring layer {}", layer.path.display()))?;
        }
        Ok(total)
    }

    /// Refuse images that cannot boot, naming why, before anything heavy happens.
    pub fn check_bootable(&self) -> Result<()> {
        check_bootable_labels(&self.display_name, &self.labels)
    }
}

/// Pure check over image labels: an ostree-native bootable image says so.
pub fn check_bootable_labels(name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
    let bootable = labels
        .get("ostree.bootable")
        .is_some_and(|v| v == "true" || v == "1")
        || labels.get("containers.bootc").is_some_and(|v| v == "1");
    if !bootable {
        bail!("{name} is not a bootable ostree image (no ostree.bootable or containers.bootc label): build it FROM a CoreOS/RHCOS base and end with `ostree container commit`");
    }
    if let Some(k) = labels.get("ostree.linux") {
        if k.trim().is_empty() {
            bail!("{name} has an empty ostree.linux label: the image carries no kernel");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootability_from_labels() {
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let cases: &[(&[(&str, &str)], Option<&str>)] = &[
            (
                &[
                    ("ostree.bootable", "true"),
                    ("ostree.linux", "6.1.0-50-amd64"),
                ],
                None,
            ),
            (&[("containers.bootc", "1")], None),
            (&[("ostree.bootable", "1")], None),
            (&[], Some("not a bootable ostree image")),
            (
                &[("ostree.bootable", "false")],
                Some("not a bootable ostree image"),
            ),
            (
                &[("ostree.bootable", "true"), ("ostree.linux", " ")],
                Some("carries no kernel"),
            ),
        ];
        for (labels, want) in cases {
            let r = check_bootable_labels("img", &l(labels));
            match want {
                None => r.unwrap(),
                Some(w) => assert!(r.unwrap_err().to_string().contains(w), "{labels:?}"),
            }
        }
    }
}
