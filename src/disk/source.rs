//! The image a disk is built from, read from a local OCI layout (the verified pull cache or
//! a user's `oci:` directory): digest, labels, and the bootability checks that must pass
//! before any heavy work starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::ocilayout::{OciLayout, REF_NAME};
use crate::registry::manifest::{ImageConfig, Manifest};

/// An image available in a local OCI layout.
#[derive(Debug, Clone)]
pub struct SourceImage {
    pub oci_dir: PathBuf,
    /// The name the OCI layout knows the image by (`org.opencontainers.image.ref.name`);
    /// `None` for the layout's only, unnamed image (what `skopeo copy … oci:DIR` writes).
    pub oci_ref_name: Option<String>,
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

impl SourceImage {
    /// Open `tag` (or the only image when `None`, named or not, as skopeo takes it) in an
    /// OCI layout. Every file is read through [`OciLayout`]'s rules (regular files inside
    /// the layout, bounded by their descriptors), and each layer blob is checked the same
    /// way here, because later steps (and skopeo) open them by path.
    pub fn open(oci_dir: &Path, tag: Option<&str>) -> Result<SourceImage> {
        let layout = OciLayout::open(oci_dir)?;
        let desc = layout.find_ref(tag)?;
        let oci_ref_name = desc.annotation(REF_NAME).map(str::to_string);
        let digest = desc.digest.to_string();
        let raw = layout
            .read_blob(&desc.digest, desc.size)
            .with_context(|| format!("reading manifest {digest} in {}", oci_dir.display()))?;
        let manifest = match Manifest::parse(&raw, Some(&desc.media_type))
            .with_context(|| format!("manifest {digest} in {}", oci_dir.display()))?
        {
            Manifest::Image(m) => m,
            Manifest::Index(_) => bail!(
                "{}: {digest} is an image index; pull the platform's image first (layerboot pull … --to oci:DIR)",
                oci_dir.display()
            ),
        };
        let config_digest = manifest.config.digest.to_string();
        let config_bytes = layout
            .read_blob(&manifest.config.digest, manifest.config.size)
            .with_context(|| {
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
        let mut layers = Vec::new();
        for l in &manifest.layers {
            layout.open_blob(&l.digest, l.size)?;
            layers.push(LayerBlob {
                digest: l.digest.to_string(),
                media_type: l.media_type.clone(),
                path: layout.blob_path(&l.digest),
            });
        }
        let display_name = match &oci_ref_name {
            Some(name) => format!("oci:{}:{name}", oci_dir.display()),
            None => format!("oci:{}", oci_dir.display()),
        };
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
        match &self.oci_ref_name {
            Some(name) => format!(
                "ostree-unverified-image:oci:{}:{name}",
                self.oci_dir.display()
            ),
            // skopeo, like us, takes the only image of a layout named without a tag
            None => format!("ostree-unverified-image:oci:{}", self.oci_dir.display()),
        }
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
    use crate::registry::manifest::{OCI_CONFIG, OCI_MANIFEST};

    /// A one-image layout as `skopeo copy … oci:DIR` writes it (no ref name); returns the
    /// config's digest.
    fn unnamed_layout(dir: &Path) -> String {
        let layout = OciLayout::create(dir).unwrap();
        let config = layout
            .write_blob(
                OCI_CONFIG,
                br#"{"architecture":"amd64","os":"linux","config":{"Labels":{"ostree.bootable":"true"}},"rootfs":{"type":"layers","diff_ids":[]}}"#,
            )
            .unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":{}}},"layers":[]}}"#,
            config.digest, config.size
        );
        let m = layout
            .write_blob(OCI_MANIFEST, manifest.as_bytes())
            .unwrap();
        layout.set_ref(None, &m).unwrap();
        config.digest.hex().to_string()
    }

    #[test]
    fn the_only_unnamed_image_of_a_layout_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        unnamed_layout(dir.path());
        let img = SourceImage::open(dir.path(), None).unwrap();
        assert_eq!(img.oci_ref_name, None);
        assert_eq!(
            img.source_imgref(),
            format!("ostree-unverified-image:oci:{}", dir.path().display())
        );
        assert_eq!(img.display_name, format!("oci:{}", dir.path().display()));
        img.check_bootable().unwrap();
    }

    #[test]
    fn a_symlinked_blob_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hex = unnamed_layout(dir.path());
        let blob = dir.path().join("blobs/sha256").join(&hex);
        std::fs::remove_file(&blob).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &blob).unwrap();
        let err = format!("{:#}", SourceImage::open(dir.path(), None).unwrap_err());
        assert!(err.contains("is a symlink"), "{err}");
    }

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
