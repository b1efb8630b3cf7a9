//! Reading images from where they live: registries (through oci-client), OCI layout
//! directories and OCI archives. [`resolve`] turns a reference into a
//! [`ResolvedImage`]: tag resolved to a digest, platform chosen from an index,
//! manifest and config fetched and verified.

pub mod auth;
pub(crate) mod client;
pub mod pull;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::oci::layout::OciLayout;
use crate::oci::manifest::{self, Descriptor, ImageConfig, ImageManifest, Manifest, Platform};
use crate::oci::reference::{Digest, ImageRef, RegistryRef};
pub use client::Connection;

/// Validated registry settings, shared by every subcommand that reads images.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    pub auth: auth::AuthStore,
    /// Extra PEM CA files to trust.
    pub ca_files: Vec<PathBuf>,
    /// A directory of `*.crt` CA files; replaces the per-host certs.d defaults.
    pub cert_dir: Option<PathBuf>,
    /// Off: accept any certificate and fall back to plain HTTP (podman's meaning).
    pub tls_verify: bool,
    /// Platform to pick from an index, OCI naming.
    pub os: String,
    pub arch: String,
    /// Retries for transient network errors, and the first back-off delay.
    pub retries: u32,
    pub retry_delay: Duration,
    /// Blobs transferred at once.
    pub max_parallel: usize,
    /// Stops long blocking work (archive unpacking and writing, local blob copies); see
    /// [`crate::cancel`]. The default is never cancelled.
    pub cancel: crate::cancel::Cancel,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            auth: auth::AuthStore::anonymous(),
            ca_files: vec![],
            cert_dir: None,
            tls_verify: true,
            os: "linux".into(),
            arch: manifest::host_arch().into(),
            retries: 4,
            retry_delay: Duration::from_millis(250),
            max_parallel: 4,
            cancel: Default::default(),
        }
    }
}

/// Where the blobs of a resolved image are read from.
#[derive(Debug, Clone)]
pub enum BlobSource {
    Registry(Arc<Connection>),
    /// A layout directory; for an archive, the unpacked copy (removed on drop).
    Layout(OciLayout, Option<Arc<tempfile::TempDir>>),
}

/// An image, pinned and verified: what [`resolve`] returns.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference as given.
    pub source_ref: ImageRef,
    /// For registry images: `registry/repo@sha256:…` of the platform manifest.
    pub pinned: Option<RegistryRef>,
    /// Digest of the image manifest (for an index: of the chosen entry).
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    /// The manifest exactly as served (its digest is `manifest_digest`).
    pub manifest_raw: Vec<u8>,
    pub manifest: ImageManifest,
    pub config_raw: Vec<u8>,
    pub config: ImageConfig,
    /// The platform of the image (from the index entry, else the config).
    pub platform: Platform,
    /// Set when the reference named an index: its digest and its platforms.
    pub index_digest: Option<Digest>,
    pub index_platforms: Vec<Platform>,
    pub blobs: BlobSource,
}

impl ResolvedImage {
    /// The pull spec to write into cluster manifests: digest-pinned.
    pub fn pinned_pull_spec(&self) -> Option<String> {
        self.pinned.as_ref().map(|r| r.to_string())
    }

    pub fn manifest_descriptor(&self) -> Descriptor {
        let mut d = Descriptor::new(
            &self.manifest_media_type,
            self.manifest_digest.clone(),
            self.manifest_raw.len() as u64,
        );
        d.platform = Some(self.platform.clone());
        d
    }

    /// The size of config plus layers, as stored (compressed).
    pub fn total_size(&self) -> u64 {
        self.manifest.config.size + self.manifest.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

/// Prefix of the temporary directory an `oci-archive:` is unpacked into.
const ARCHIVE_TMP: &str = "layerboot-oci-archive.";

/// Resolve `image` per `opts`: see the module docs.
pub async fn resolve(image: &ImageRef, opts: &RegistryOptions) -> Result<ResolvedImage> {
    match image {
        ImageRef::Registry(r) => resolve_registry(image, r, opts).await,
        ImageRef::OciDir { path, tag } => {
            let layout = OciLayout::open(path)?;
            resolve_layout(image, layout, None, tag.as_deref(), opts)
        }
        ImageRef::OciArchive { path, tag } => {
            if !path.is_file() {
                bail!(
                    "OCI archive {} does not exist or is not a file",
                    path.display()
                );
            }
            // Named after this process, so that a later run removes it if a SIGKILL
            // leaves it behind (crate::cancel).
            crate::cancel::sweep_stale(&std::env::temp_dir(), ARCHIVE_TMP);
            let tmp = tempfile::Builder::new()
                .prefix(&crate::cancel::temp_prefix(ARCHIVE_TMP))
                .tempdir()
                .context("creating a temporary directory")?;
            let path = path.clone();
            let cancel = opts.cancel.clone();
            // The blocking task owns the directory: dropped mid-way (a signal), it is
            // removed when the task ends, never while it still writes into it.
            let (layout, tmp) = tokio::task::spawn_blocking(move || {
                crate::oci::layout::unpack_archive(&path, tmp.path(), &cancel).map(|l| (l, tmp))
            })
            .await??;
            resolve_layout(image, layout, Some(Arc::new(tmp)), tag.as_deref(), opts)
        }
    }
}

/// The image manifest chosen for the requested platform, before its config is read.
struct Picked {
    raw: Vec<u8>,
    digest: Digest,
    media_type: String,
    manifest: ImageManifest,
    index_digest: Option<Digest>,
    index_platforms: Vec<Platform>,
    index_platform: Option<Platform>,
}

impl Picked {
    fn single(
        raw: Vec<u8>,
        digest: Digest,
        manifest: ImageManifest,
        platform: Option<Platform>,
    ) -> Self {
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| manifest::OCI_MANIFEST.into());
        Picked {
            raw,
            digest,
            media_type,
            manifest,
            index_digest: None,
            index_platforms: vec![],
            index_platform: platform,
        }
    }

    /// `child` was selected from `index` (digest `index_digest`) and fetched as `raw`.
    fn from_index(
        index: &manifest::ImageIndex,
        index_digest: Digest,
        child: &Descriptor,
        raw: Vec<u8>,
        what: &str,
    ) -> Result<Self> {
        let manifest = match Manifest::parse(&raw, Some(&child.media_type))
            .with_context(|| format!("manifest {} of {what}", child.digest))?
        {
            Manifest::Image(m) => m,
            Manifest::Index(_) => bail!(
                "{what}: index entry {} is itself an index; nested indexes are not supported",
                child.digest
            ),
        };
        Ok(Picked {
            raw,
            digest: child.digest.clone(),
            media_type: child.media_type.clone(),
            manifest,
            index_digest: Some(index_digest),
            index_platforms: index
                .manifests
                .iter()
                .filter_map(|d| d.platform.clone())
                .collect(),
            index_platform: child.platform.clone(),
        })
    }

    fn finish(
        self,
        image: &ImageRef,
        pinned: Option<RegistryRef>,
        config_raw: Vec<u8>,
        blobs: BlobSource,
    ) -> Result<ResolvedImage> {
        let config = ImageConfig::parse(&config_raw)
            .with_context(|| format!("config {} of {image}", self.manifest.config.digest))?;
        let platform = self.index_platform.unwrap_or_else(|| config.platform());
        Ok(ResolvedImage {
            source_ref: image.clone(),
            pinned,
            manifest_digest: self.digest,
            manifest_media_type: self.media_type,
            manifest_raw: self.raw,
            manifest: self.manifest,
            config_raw,
            config,
            platform,
            index_digest: self.index_digest,
            index_platforms: self.index_platforms,
            blobs,
        })
    }
}

async fn resolve_registry(
    image: &ImageRef,
    r: &RegistryRef,
    opts: &RegistryOptions,
) -> Result<ResolvedImage> {
    let conn = Arc::new(Connection::open(opts, r).await?);
    let (raw, digest) = conn.fetch_manifest(opts, None).await?;
    let what = r.to_string();
    let picked = match Manifest::parse(&raw, None).with_context(|| format!("manifest of {r}"))? {
        Manifest::Image(m) => Picked::single(raw, digest, m, None),
        Manifest::Index(idx) => {
            let child = manifest::select_platform(&idx, &opts.os, &opts.arch)
                .with_context(|| what.clone())?
                .clone();
            let (child_raw, _) = conn.fetch_manifest(opts, Some(&child.digest)).await?;
            Picked::from_index(&idx, digest, &child, child_raw, &what)?
        }
    };
    let config_raw = conn
        .fetch_small_blob(opts, &picked.manifest.config)
        .await
        .with_context(|| format!("config of {r}"))?;
    check_blob(&picked.manifest.config, &config_raw)?;
    let pinned = r.pinned(&picked.digest);
    picked.finish(image, Some(pinned), config_raw, BlobSource::Registry(conn))
}

fn check_blob(desc: &Descriptor, bytes: &[u8]) -> Result<()> {
    let (hex, n) = crate::io::sha256_reader(bytes)?;
    if n != desc.size {
        bail!(
            "blob {}: received {n} bytes, expected {} (truncated or oversized)",
            desc.digest,
            desc.size
        );
    }
    if hex != desc.digest.hex() {
        bail!(
            "blob {}: content does not match its digest (got sha256:{hex})",
            desc.digest
        );
    }
    Ok(())
}

fn resolve_layout(
    image: &ImageRef,
    layout: OciLayout,
    tmp: Option<Arc<tempfile::TempDir>>,
    tag: Option<&str>,
    opts: &RegistryOptions,
) -> Result<ResolvedImage> {
    let what = image.to_string();
    // index.json is itself an index: with no tag and several platform entries, choose
    // among them as among an index's.
    let top_index = layout.read_index()?;
    let entry = if tag.is_none()
        && top_index.manifests.len() > 1
        && top_index.manifests.iter().all(|d| d.platform.is_some())
    {
        manifest::select_platform(&top_index, &opts.os, &opts.arch)
            .with_context(|| what.clone())?
            .clone()
    } else {
        layout.find_ref(tag)?
    };
    let raw = layout
        .read_blob(&entry.digest, entry.size)
        .with_context(|| what.clone())?;
    let picked = match Manifest::parse(&raw, Some(&entry.media_type))
        .with_context(|| format!("manifest {} in {what}", entry.digest))?
    {
        Manifest::Image(m) => Picked {
            media_type: entry.media_type.clone(),
            ..Picked::single(raw, entry.digest.clone(), m, entry.platform.clone())
        },
        Manifest::Index(idx) => {
            let child = manifest::select_platform(&idx, &opts.os, &opts.arch)
                .with_context(|| what.clone())?
                .clone();
            let child_raw = layout
                .read_blob(&child.digest, child.size)
                .with_context(|| what.clone())?;
            Picked::from_index(&idx, entry.digest.clone(), &child, child_raw, &what)?
        }
    };
    let config_raw = layout
        .read_blob(&picked.manifest.config.digest, picked.manifest.config.size)
        .with_context(|| format!("config of {what}"))?;
    picked.finish(image, None, config_raw, BlobSource::Layout(layout, tmp))
}
