//! Reading images from where they live: registries (through oci-client), OCI layout
//! directories and OCI archives. [`resolve`] turns a reference into a
//! [`ResolvedImage`]: tag resolved to a digest, platform chosen from an index,
//! manifest and config fetched and verified.

pub mod auth;
pub mod client;
pub mod manifest;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::imageref::{Digest, ImageRef, RegistryRef};
use crate::ocilayout::OciLayout;
pub use client::Connection;
use manifest::{Descriptor, ImageConfig, ImageManifest, Manifest, Platform};

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
        let mut d = Descriptor::new(&self.manifest_media_type, self.manifest_digest.clone(), self.manifest_raw.len() as u64);
        d.platform = Some(self.platform.clone());
        d
    }

    /// The size of config plus layers, as stored (compressed).
    pub fn total_size(&self) -> u64 {
        self.manifest.config.size + self.manifest.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

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
                bail!("OCI archive {} does not exist or is not a file", path.display());
            }
            let tmp = tempfile::Builder::new().prefix("layerboot-oci-archive.").tempdir().context("creating a temporary directory")?;
            let path = path.clone();
            let dest = tmp.path().to_path_buf();
            let layout = tokio::task::spawn_blocking(move || crate::ocilayout::unpack_archive(&path, &dest)).await??;
            resolve_layout(image, layout, Some(Arc::new(tmp)), tag.as_deref(), opts)
        }
    }
}

async fn resolve_registry(image: &ImageRef, r: &RegistryRef, opts: &RegistryOptions) -> Result<ResolvedImage> {
    let conn = Arc::new(Connection::open(opts, r).await?);
    let (raw, digest) = conn.fetch_manifest(opts, None).await?;
    let top = Manifest::parse(&raw, None).with_context(|| format!("manifest of {r}"))?;
    let (raw, digest, media_type, manifest, index_digest, index_platforms, index_platform) = match top {
        Manifest::Image(m) => {
            let mt = m.media_type.clone().unwrap_or_else(|| manifest::OCI_MANIFEST.into());
            (raw, digest, mt, m, None, vec![], None)
        }
        Manifest::Index(idx) => {
            let entry = manifest::select_platform(&idx, &opts.os, &opts.arch).with_context(|| format!("{r}"))?.clone();
            let (child_raw, child_digest) = conn.fetch_manifest(opts, Some(&entry.digest)).await?;
            let m = match Manifest::parse(&child_raw, Some(&entry.media_type)).with_context(|| format!("manifest {} of {r}", entry.digest))? {
                Manifest::Image(m) => m,
                Manifest::Index(_) => bail!("{r}: index entry {} is itself an index; nested indexes are not supported", entry.digest),
            };
            let platforms = idx.manifests.iter().filter_map(|d| d.platform.clone()).collect();
            (child_raw, child_digest, entry.media_type.clone(), m, Some(digest), platforms, entry.platform.clone())
        }
    };
    let config_raw = conn.fetch_small_blob(opts, &manifest.config).await.with_context(|| format!("config of {r}"))?;
    check_blob(&manifest.config, &config_raw)?;
    let config = ImageConfig::parse(&config_raw).with_context(|| format!("config {} of {r}", manifest.config.digest))?;
    let platform = index_platform.unwrap_or_else(|| config.platform());
    Ok(ResolvedImage {
        source_ref: image.clone(),
        pinned: Some(r.pinned(&digest)),
        manifest_digest: digest,
        manifest_media_type: media_type,
        manifest_raw: raw,
        manifest,
        config_raw,
        config,
        platform,
        index_digest,
        index_platforms,
        blobs: BlobSource::Registry(conn),
    })
}

fn check_blob(desc: &Descriptor, bytes: &[u8]) -> Result<()> {
    let (hex, n) = crate::io::sha256_reader(bytes)?;
    if n != desc.size {
        bail!("blob {}: received {n} bytes, expected {} (truncated or oversized)", desc.digest, desc.size);
    }
    if hex != desc.digest.hex() {
        bail!("blob {}: content does not match its digest (got sha256:{hex})", desc.digest);
    }
    Ok(())
}

fn resolve_layout(image: &ImageRef, layout: OciLayout, tmp: Option<Arc<tempfile::TempDir>>, tag: Option<&str>, opts: &RegistryOptions) -> Result<ResolvedImage> {
    let what = image.to_string();
    // index.json is itself an index: with no tag and several platform entries, choose
    // among them as among an index's.
    let top_index = layout.read_index()?;
    let entry = if tag.is_none() && top_index.manifests.len() > 1 && top_index.manifests.iter().all(|d| d.platform.is_some()) {
        manifest::select_platform(&top_index, &opts.os, &opts.arch).with_context(|| what.clone())?.clone()
    } else {
        layout.find_ref(tag)?
    };
    let raw = layout.read_blob(&entry.digest, Some(entry.size)).with_context(|| what.clone())?;
    let parsed = Manifest::parse(&raw, Some(&entry.media_type)).with_context(|| format!("manifest {} in {what}", entry.digest))?;
    let (raw, digest, media_type, manifest, index_digest, index_platforms, index_platform) = match parsed {
        Manifest::Image(m) => (raw, entry.digest.clone(), entry.media_type.clone(), m, None, vec![], entry.platform.clone()),
        Manifest::Index(idx) => {
            let child = manifest::select_platform(&idx, &opts.os, &opts.arch).with_context(|| what.clone())?.clone();
            let child_raw = layout.read_blob(&child.digest, Some(child.size)).with_context(|| what.clone())?;
            let m = match Manifest::parse(&child_raw, Some(&child.media_type)).with_context(|| format!("manifest {} in {what}", child.digest))? {
                Manifest::Image(m) => m,
                Manifest::Index(_) => bail!("{what}: index entry {} is itself an index; nested indexes are not supported", child.digest),
            };
            let platforms = idx.manifests.iter().filter_map(|d| d.platform.clone()).collect();
            (child_raw, child.digest.clone(), child.media_type.clone(), m, Some(entry.digest.clone()), platforms, child.platform.clone())
        }
    };
    let config_raw = layout.read_blob(&manifest.config.digest, Some(manifest.config.size)).with_context(|| format!("config of {what}"))?;
    let config = ImageConfig::parse(&config_raw).with_context(|| format!("config {} in {what}", manifest.config.digest))?;
    let platform = index_platform.unwrap_or_else(|| config.platform());
    Ok(ResolvedImage {
        source_ref: image.clone(),
        pinned: None,
        manifest_digest: digest,
        manifest_media_type: media_type,
        manifest_raw: raw,
        manifest,
        config_raw,
        config,
        platform,
        index_digest,
        index_platforms,
        blobs: BlobSource::Layout(layout, tmp),
    })
}
