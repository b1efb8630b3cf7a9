//! Verified pulls into OCI layouts and archives.
//!
//! Config and layers stream into the destination layout in parallel (bounded); each
//! blob is hashed and counted as it is written to a temporary file beside its final
//! name and renamed only when digest and size match ([`crate::oci::layout::BlobWriter`]),
//! so an error, a tampered or truncated blob, or a Ctrl-C never leaves a half-written
//! blob. Blobs already present are skipped: layouts are content-addressed, so a second
//! pull only rewrites the manifest and index. Memory stays flat in image size: no blob
//! is held in memory except the (small) manifest and config.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::oci::layout::{self as ocilayout, OciLayout};
use crate::oci::manifest::{Descriptor, ImageConfig, OCI_MANIFEST};
use crate::oci::reference::{Digest, ImageRef, RegistryRef};
use crate::registry::client::BlobStreamError;
use crate::registry::{self, BlobSource, RegistryOptions, ResolvedImage};

/// Where `pull --to` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    OciDir { path: PathBuf, tag: Option<String> },
    OciArchive { path: PathBuf, tag: Option<String> },
}

impl std::str::FromStr for Destination {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.parse::<ImageRef>() {
            Ok(ImageRef::OciDir { path, tag }) => Ok(Destination::OciDir { path, tag }),
            Ok(ImageRef::OciArchive { path, tag }) => Ok(Destination::OciArchive { path, tag }),
            Ok(ImageRef::Registry(_)) => bail!(
                "--to '{s}': pull writes oci:DIR[:tag] or oci-archive:FILE[:tag], not a registry"
            ),
            Err(e) => Err(anyhow::Error::new(e).context(format!("--to '{s}'"))),
        }
    }
}

/// What a pull produced.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The OCI layout directory holding the image (for an archive: none; see `archive`).
    pub layout_dir: Option<PathBuf>,
    pub archive: Option<PathBuf>,
    /// `org.opencontainers.image.ref.name` of the image in the layout.
    pub ref_name: String,
    /// The source's manifest digest (what `pinned` names). The layout's may differ:
    /// see [`PullStats::layout_digest`].
    pub manifest_digest: Digest,
    /// For registry sources: `registry/repo@sha256:…`.
    pub pinned: Option<RegistryRef>,
    pub config: ImageConfig,
    pub stats: PullStats,
}

impl PulledImage {
    /// `oci:DIR:REF` for tools that read layouts (skopeo, ostree-ext).
    pub fn oci_ref(&self) -> Option<String> {
        self.layout_dir
            .as_ref()
            .map(|d| format!("oci:{}:{}", d.display(), self.ref_name))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullStats {
    /// Digest of the manifest as stored in the layout: the source's, except for
    /// Docker schema 2 images, whose manifest is stored converted to OCI.
    pub layout_digest: Digest,
    pub blobs_fetched: usize,
    pub blobs_skipped: usize,
    pub bytes_fetched: u64,
    pub elapsed: Duration,
}

/// Pull `image` to `dest`.
pub async fn pull(
    image: &ImageRef,
    dest: &Destination,
    opts: &RegistryOptions,
    quiet: bool,
) -> Result<PulledImage> {
    let resolved = registry::resolve(image, opts).await?;
    let default_tag = |tag: &Option<String>| -> String {
        tag.clone()
            .or_else(|| image.as_registry().and_then(|r| r.tag.clone()))
            .unwrap_or_else(|| "latest".into())
    };
    match dest {
        Destination::OciDir { path, tag } => {
            let ref_name = default_tag(tag);
            if path.exists() {
                let empty_dir = path.is_dir()
                    && std::fs::read_dir(path)
                        .map(|mut d| d.next().is_none())
                        .unwrap_or(false);
                if !empty_dir && !path.join("oci-layout").is_file() {
                    bail!(
                        "--to {}: exists and is not an OCI image layout",
                        path.display()
                    );
                }
                // Adding to a layout: only verified blobs land, index.json is replaced
                // atomically at the end.
                let layout = OciLayout::create(path)?;
                let stats = pull_into(&resolved, &layout, &ref_name, opts, quiet).await?;
                return Ok(pulled(&resolved, Some(path.clone()), None, ref_name, stats));
            }
            // A new layout is staged beside its destination and renamed into place.
            let staging = staging_dir(path)?;
            let layout = OciLayout::create(staging.path())?;
            let stats = pull_into(&resolved, &layout, &ref_name, opts, quiet).await?;
            let staged = staging.keep();
            std::fs::rename(&staged, path)
                .with_context(|| format!("renaming {} to {}", staged.display(), path.display()))?;
            Ok(pulled(&resolved, Some(path.clone()), None, ref_name, stats))
        }
        Destination::OciArchive { path, tag } => {
            // Staged beside the archive so nothing lands at `path` until the end. An
            // existing archive is added to, as a layout is: its other images stay.
            let staging = staging_dir(path)?;
            if path.exists() {
                let (from, into) = (path.clone(), staging.path().to_path_buf());
                let cancel = opts.cancel.clone();
                tokio::task::spawn_blocking(move || {
                    ocilayout::unpack_archive(&from, &into, &cancel)
                })
                .await?
                .with_context(|| {
                    format!(
                        "--to {}: exists and is not an OCI archive to add to",
                        path.display()
                    )
                })?;
            }
            let layout = OciLayout::create(staging.path())?;
            let ref_name = default_tag(tag);
            let stats = pull_into(&resolved, &layout, &ref_name, opts, quiet).await?;
            let dest = path.clone();
            let cancel = opts.cancel.clone();
            tokio::task::spawn_blocking(move || {
                // the staging directory lives until the archive is written (or not)
                let _staging = staging;
                ocilayout::write_archive(&layout, &dest, &cancel)
            })
            .await??;
            Ok(pulled(&resolved, None, Some(path.clone()), ref_name, stats))
        }
    }
}

/// Prefix of pull's staging directories.
const PULL_TMP: &str = ".layerboot-pull.";

/// A temporary directory beside `dest` (same filesystem, so a rename commits it).
fn staging_dir(dest: &std::path::Path) -> Result<tempfile::TempDir> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        bail!(
            "cannot write {}: directory {} does not exist",
            dest.display(),
            parent.display()
        );
    }
    // Named after this process, so that a later pull removes it if a SIGKILL leaves it
    // behind (crate::cancel).
    crate::cancel::sweep_stale(&parent, PULL_TMP);
    tempfile::Builder::new()
        .prefix(&crate::cancel::temp_prefix(PULL_TMP))
        .tempdir_in(&parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))
}

fn pulled(
    r: &ResolvedImage,
    layout_dir: Option<PathBuf>,
    archive: Option<PathBuf>,
    ref_name: String,
    stats: PullStats,
) -> PulledImage {
    PulledImage {
        layout_dir,
        archive,
        ref_name,
        manifest_digest: r.manifest_digest.clone(),
        pinned: r.pinned.clone(),
        config: r.config.clone(),
        stats,
    }
}

/// The shared image cache: `$LAYERBOOT_CACHE`, else `~/.cache/layerboot/oci`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LAYERBOOT_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("layerboot/oci")
}

/// Pull into the shared, content-addressed cache layout; the image's ref name there is
/// its manifest digest's hex, so pulls of different images never clash and a repeat
/// pull fetches nothing.
pub async fn pull_to_cache(
    image: &ImageRef,
    opts: &RegistryOptions,
    quiet: bool,
) -> Result<PulledImage> {
    let resolved = registry::resolve(image, opts).await?;
    pull_resolved_to_cache(&resolved, opts, quiet).await
}

/// [`pull_to_cache`] for an image already resolved.
pub async fn pull_resolved_to_cache(
    resolved: &ResolvedImage,
    opts: &RegistryOptions,
    quiet: bool,
) -> Result<PulledImage> {
    let dir = cache_dir();
    let layout = OciLayout::create(&dir)?;
    let ref_name = resolved.manifest_digest.hex().to_string();
    let stats = pull_into(resolved, &layout, &ref_name, opts, quiet).await?;
    Ok(pulled(resolved, Some(dir), None, ref_name, stats))
}

/// Copy `resolved`'s config and layers into `layout` and point `ref_name` at it.
pub async fn pull_into(
    resolved: &ResolvedImage,
    layout: &OciLayout,
    ref_name: &str,
    opts: &RegistryOptions,
    quiet: bool,
) -> Result<PullStats> {
    let start = Instant::now();
    let mut blobs: Vec<Descriptor> = Vec::new();
    for d in std::iter::once(&resolved.manifest.config).chain(&resolved.manifest.layers) {
        if !blobs.iter().any(|b| b.digest == d.digest) {
            blobs.push(d.clone());
        }
    }
    let (present, missing): (Vec<_>, Vec<_>) = blobs.into_iter().partition(|d| layout.has_blob(d));
    let show = !quiet && std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if show {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    let bytes_fetched: u64 = missing.iter().map(|d| d.size).sum();
    let fetched = missing.len();
    let results = stream::iter(missing.into_iter().map(|desc| {
        let bar = multi.add(
            ProgressBar::new(desc.size)
                .with_style(style.clone())
                .with_prefix(desc.digest.hex()[..12].to_string()),
        );
        let layout = layout.clone();
        let source = resolved.blobs.clone();
        async move {
            let r = fetch_blob(&source, &layout, &desc, opts, &bar).await;
            bar.finish_and_clear();
            r
        }
    }))
    .buffer_unordered(opts.max_parallel.max(1));
    results.try_collect::<Vec<()>>().await?;
    // The manifest goes in last: a layout never names an image whose blobs are missing.
    // containers/image (skopeo, ostree-ext) only sees OCI manifests in a layout, so a
    // Docker schema 2 image is stored with its manifest converted, as skopeo does.
    let manifest_desc = match resolved.manifest.to_oci() {
        None => {
            let d = resolved.manifest_descriptor();
            if !layout.has_blob(&d) {
                let mut w = layout.blob_writer(&d)?;
                w.write_all(&resolved.manifest_raw)
                    .context("writing the manifest")?;
                w.commit()?;
            }
            d
        }
        Some(oci) => {
            let mut d = layout.write_blob(
                OCI_MANIFEST,
                &serde_json::to_vec(&oci).context("serializing the manifest")?,
            )?;
            d.platform = Some(resolved.platform.clone());
            d
        }
    };
    layout.set_ref(Some(ref_name), &manifest_desc)?;
    let stats = PullStats {
        blobs_fetched: fetched,
        blobs_skipped: present.len(),
        bytes_fetched,
        elapsed: start.elapsed(),
        layout_digest: manifest_desc.digest.clone(),
    };
    log::info!(
        "pulled {} into {}: {stats:?}",
        resolved.manifest_digest,
        layout.root().display()
    );
    Ok(stats)
}

/// Fetch one blob into the layout. A transfer cut short by a transport failure is
/// resumed from where it stopped (the hash state carries on), with backoff; a registry
/// that will not resume gets the blob asked again from the start.
async fn fetch_blob(
    source: &BlobSource,
    layout: &OciLayout,
    desc: &Descriptor,
    opts: &RegistryOptions,
    bar: &ProgressBar,
) -> Result<()> {
    let conn = match source {
        BlobSource::Registry(conn) => conn,
        BlobSource::Layout(src, _) => {
            return copy_local_blob(
                src.clone(),
                layout.clone(),
                desc.clone(),
                bar.clone(),
                opts.cancel.clone(),
            )
            .await
        }
    };
    let mut delay = opts.retry_delay;
    let mut attempt = 0;
    let mut w = layout.blob_writer(desc)?;
    loop {
        let offset = w.written();
        let streamed = conn
            .stream_blob(opts, desc, offset, |chunk| {
                w.write_all(chunk)
                    .with_context(|| format!("writing blob {}", desc.digest))?;
                bar.inc(chunk.len() as u64);
                Ok(())
            })
            .await;
        match streamed {
            Ok(_) => return w.commit(),
            Err(e) if attempt < opts.retries && e.downcast_ref::<BlobStreamError>().is_some() => {
                attempt += 1;
                if matches!(
                    e.downcast_ref::<BlobStreamError>(),
                    Some(BlobStreamError::RangeIgnored)
                ) {
                    w = layout.blob_writer(desc)?;
                    bar.set_position(0);
                } else {
                    log::info!(
                        "blob {}: {e:#}; resuming at byte {} (retry {attempt}/{}) in {delay:?}",
                        desc.digest,
                        w.written(),
                        opts.retries
                    );
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

async fn copy_local_blob(
    src: OciLayout,
    dest: OciLayout,
    desc: Descriptor,
    bar: ProgressBar,
    cancel: crate::cancel::Cancel,
) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        let mut from = bar.wrap_read(std::io::BufReader::with_capacity(
            1 << 20,
            crate::cancel::CheckedReader::new(
                src.open_blob(&desc.digest, desc.size)?,
                cancel.clone(),
            ),
        ));
        let mut w = dest.blob_writer(&desc)?;
        std::io::copy(&mut from, &mut w).with_context(|| {
            format!("copying blob {} from {}", desc.digest, src.root().display())
        })?;
        cancel.check()?;
        w.commit()
            .with_context(|| format!("in {}", src.root().display()))
    })
    .await?
}
