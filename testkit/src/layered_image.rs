//! The example layered image (`examples/debian-layered/`), built from Debian packages and
//! cached by recipe hash: a bootable Debian 12 ostree commit encapsulated to OCI with
//! ostree-ext (the base, tag `base`), plus a derived plain-tar layer the way
//! `RUN … && ostree container commit` adds one (tag `layered`). The derived layer's unit
//! prints `LAYERED-OK <marker>` at boot, proving the *layered* image booted.
//!
//! Building needs root (debootstrap, chroot, ownership in the ostree repo) and network
//! access to the Debian mirror; it takes a few minutes once, then comes from the cache.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ostree_ext::container::{Config, ExportOpts, ImageReference, Transport};
use ostree_ext::oci_spec::image::{
    Descriptor, Digest, HistoryBuilder, ImageConfiguration, ImageIndex, ImageManifest, MediaType,
};

use super::cache::{cached_fixture, recipe_hash};
use layerboot::io::HashingWriter;

const PACKAGES: &[u8] = include_bytes!("../../examples/debian-layered/packages.sh");
const BUILD_BASE: &[u8] = include_bytes!("../../examples/debian-layered/build-base.sh");

/// The derived layer's files: (path in the image, mode, content). Symlinks are in [`LAYER_LINKS`].
const LAYER_FILES: &[(&str, u32, &[u8])] = &[
    (
        "usr/lib/systemd/system/layered-ok.service",
        0o644,
        include_bytes!(
            "../../examples/debian-layered/layer/usr/lib/systemd/system/layered-ok.service"
        ),
    ),
    (
        "usr/libexec/layered-ok",
        0o755,
        include_bytes!("../../examples/debian-layered/layer/usr/libexec/layered-ok"),
    ),
    (
        "etc/layered-ok/layer.conf",
        0o644,
        include_bytes!("../../examples/debian-layered/layer/etc/layered-ok/layer.conf"),
    ),
];
const LAYER_LINKS: &[(&str, &str)] = &[(
    "usr/lib/systemd/system/multi-user.target.wants/layered-ok.service",
    "../layered-ok.service",
)];
/// Where the marker (unique per recipe) lives in the derived layer.
pub const MARKER_PATH: &str = "usr/share/layered-ok/marker";

/// Bumped when the Rust side of the recipe (encapsulation, layer assembly) changes.
const RECIPE_VERSION: &[u8] = b"layered-image v1";

/// OCI tags inside the fixture's layout.
pub const BASE_TAG: &str = "base";
pub const LAYERED_TAG: &str = "layered";

#[derive(Debug, Clone)]
pub struct LayeredImage {
    /// OCI image layout holding both tags.
    pub oci_dir: PathBuf,
    /// The text after `LAYERED-OK ` that the derived layer prints at boot.
    pub marker: String,
    /// Manifest digest (`sha256:…`) of the layered image.
    pub digest: String,
    /// Manifest digest of the base image.
    pub base_digest: String,
}

impl LayeredImage {
    /// `oci:DIR:layered`, as layerboot and skopeo take it.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{LAYERED_TAG}", self.oci_dir.display())
    }

    pub fn base_oci_ref(&self) -> String {
        format!("oci:{}:{BASE_TAG}", self.oci_dir.display())
    }
}

fn recipe_parts() -> Vec<&'static [u8]> {
    let mut parts: Vec<&[u8]> = vec![RECIPE_VERSION, PACKAGES, BUILD_BASE];
    for (path, _, content) in LAYER_FILES {
        parts.push(path.as_bytes());
        parts.push(content);
    }
    for (path, target) in LAYER_LINKS {
        parts.push(path.as_bytes());
        parts.push(target.as_bytes());
    }
    parts
}

/// The example layered image, built on first use (root needed then) and cached.
pub fn layered_image() -> Result<LayeredImage> {
    let parts = recipe_parts();
    let marker = format!("debian-layered-{}", recipe_hash(&parts));
    let dir = cached_fixture("debian-layered", &parts, |staging| build(staging, &marker))?;
    let oci_dir = dir.join("oci");
    Ok(LayeredImage {
        digest: tag_digest(&oci_dir, LAYERED_TAG)?,
        base_digest: tag_digest(&oci_dir, BASE_TAG)?,
        oci_dir,
        marker,
    })
}

fn build(staging: &Path, marker: &str) -> Result<()> {
    for (tool, pkg) in [
        ("debootstrap", "debootstrap"),
        ("ostree", "ostree"),
        ("skopeo", "skopeo"),
        ("unshare", "util-linux"),
    ] {
        layerboot::cmd::require(tool, pkg)?;
    }
    if !nix_is_root() {
        bail!("building the example layered image needs root (debootstrap, chroot, file ownership): run the tests as root once to fill the fixture cache");
    }
    // The package download is the slow, rarely changing part: cached on its own.
    let packages = cached_fixture("debian-layered-rootfs", &[PACKAGES], |dir| {
        let script = dir.join("packages.sh");
        fs::write(&script, PACKAGES)?;
        layerboot::cmd::run(
            std::process::Command::new("bash")
                .arg(&script)
                .arg(dir.join("rootfs")),
        )?;
        Ok(())
    })?;
    let work = staging.join("work");
    fs::create_dir_all(&work)?;
    layerboot::cmd::run(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(packages.join("rootfs"))
            .arg(work.join("rootfs")),
    )?;
    let script = staging.join("build-base.sh");
    fs::write(&script, BUILD_BASE)?;
    let out = layerboot::cmd::run_stdout(
        std::process::Command::new("bash")
            .arg(&script)
            .arg(work.join("rootfs"))
            .arg(work.join("repo")),
    )?;
    let commit = out.lines().last().unwrap_or_default().trim().to_string();
    log::info!("example base commit {commit}");

    let oci_dir = staging.join("oci");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let repo = ostree_ext::ostree::Repo::new_for_path(work.join("repo"));
        repo.open(ostree_ext::gio::Cancellable::NONE)
            .context("opening the example's ostree repo")?;
        let mut labels = BTreeMap::new();
        labels.insert(
            "org.opencontainers.image.title".to_string(),
            "debian-layered base".to_string(),
        );
        let config = Config {
            labels: Some(labels),
            cmd: None,
        };
        let mut opts = ExportOpts::default();
        opts.legacy_version_label = true;
        let dest = ImageReference {
            transport: Transport::OciDir,
            name: format!("{}:{BASE_TAG}", oci_dir.display()),
        };
        ostree_ext::container::encapsulate(&repo, "debian-layered/base", &config, Some(opts), &dest)
            .await
            .context("encapsulating the base commit with ostree-ext")
    })?;
    add_derived_layer(&oci_dir, BASE_TAG, LAYERED_TAG, marker)?;
    // Only the OCI layout is the fixture; the rootfs and repo were means to it.
    super::cache::remove_tree(&work)?;
    Ok(())
}

fn nix_is_root() -> bool {
    layerboot::cmd::run_stdout(std::process::Command::new("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

fn blob_path(oci_dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    oci_dir.join("blobs").join(alg).join(hex)
}

/// The manifest digest a tag points at in an OCI layout's `index.json`.
pub fn tag_digest(oci_dir: &Path, tag: &str) -> Result<String> {
    let index = ImageIndex::from_file(oci_dir.join("index.json"))
        .with_context(|| format!("reading {}/index.json", oci_dir.display()))?;
    index
        .manifests()
        .iter()
        .find(|m| {
            m.annotations()
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                .is_some_and(|n| n == tag)
        })
        .map(|m| m.digest().to_string())
        .with_context(|| format!("no tag '{tag}' in {}", oci_dir.display()))
}

/// Write `bytes` as a blob; returns its digest and size.
fn write_blob(oci_dir: &Path, bytes: &[u8]) -> Result<(String, u64)> {
    let (hex, n) = layerboot::io::sha256_reader(bytes)?;
    let digest = format!("sha256:{hex}");
    fs::write(blob_path(oci_dir, &digest), bytes)?;
    Ok((digest, n))
}

/// One entry of a derived layer.
#[derive(Debug, Clone)]
pub enum LayerEntry {
    File {
        path: String,
        mode: u32,
        content: Vec<u8>,
    },
    /// A regular file whose content is streamed from `source` on the host (large content).
    HostFile {
        path: String,
        mode: u32,
        source: PathBuf,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl LayerEntry {
    fn path(&self) -> &str {
        match self {
            LayerEntry::File { path, .. }
            | LayerEntry::HostFile { path, .. }
            | LayerEntry::Symlink { path, .. } => path,
        }
    }
}

/// Append the example's derived layer to the image tagged `from`, tagging the result `to`.
fn add_derived_layer(oci_dir: &Path, from: &str, to: &str, marker: &str) -> Result<()> {
    let mut entries: Vec<LayerEntry> = LAYER_FILES
        .iter()
        .map(|(p, m, c)| LayerEntry::File {
            path: p.to_string(),
            mode: *m,
            content: c.to_vec(),
        })
        .collect();
    entries.push(LayerEntry::File {
        path: MARKER_PATH.into(),
        mode: 0o644,
        content: format!("{marker}\n").into_bytes(),
    });
    entries.extend(LAYER_LINKS.iter().map(|(p, t)| LayerEntry::Symlink {
        path: p.to_string(),
        target: t.to_string(),
    }));
    append_layer(
        oci_dir,
        from,
        to,
        &entries,
        "RUN install layered-ok && ostree container commit (layerboot example derived layer)",
        &[
            ("org.opencontainers.image.title", "debian-layered"),
            ("io.layerboot.example.marker", marker),
        ],
    )
}

/// A copy of the OCI layout `src` (blobs hard-linked: they are immutable and named by
/// digest) in which image `from` gets one more layer holding `filler_mib` MiB of random,
/// incompressible bytes, tagged `to`: the same image, bigger, for benchmarks.
pub fn grow_image(src: &Path, from: &str, dest: &Path, to: &str, filler_mib: u64) -> Result<()> {
    if dest.exists() {
        bail!("{} already exists", dest.display());
    }
    layerboot::cmd::run(
        std::process::Command::new("cp")
            .arg("-al")
            .arg(src)
            .arg(dest),
    )?;
    let filler = dest.join(".filler");
    let mut out = BufWriter::new(
        File::create(&filler).with_context(|| format!("creating {}", filler.display()))?,
    );
    let mut random = File::open("/dev/urandom")
        .context("opening /dev/urandom")?
        .take(filler_mib << 20);
    std::io::copy(&mut random, &mut out).context("writing the filler")?;
    out.flush()?;
    drop(out);
    let entries = [LayerEntry::HostFile {
        path: "usr/share/layerboot-bench/filler.bin".into(),
        mode: 0o644,
        source: filler.clone(),
    }];
    append_layer(
        dest,
        from,
        to,
        &entries,
        &format!("layerboot bench: {filler_mib} MiB filler"),
        &[],
    )?;
    fs::remove_file(&filler).with_context(|| format!("removing {}", filler.display()))?;
    Ok(())
}

/// Append a plain tar layer (gzip), as `RUN … && ostree container commit` adds one, to the
/// image tagged `from` in an OCI layout, tagging the result `to`; `labels` are set on the
/// new image's config. Parent directories are created (0755, root) before the entries.
pub fn append_layer(
    oci_dir: &Path,
    from: &str,
    to: &str,
    entries: &[LayerEntry],
    created_by: &str,
    labels: &[(&str, &str)],
) -> Result<()> {
    // The layer, streamed: tar → hash (diff id) → gzip → hash (blob digest) → file.
    let tmp = oci_dir.join("blobs/sha256/.layer.tmp");
    let file = BufWriter::new(File::create(&tmp)?);
    let blob_hasher = HashingWriter::new(file);
    let gz = flate2::write::GzEncoder::new(blob_hasher, flate2::Compression::default());
    let diff_hasher = HashingWriter::new(gz);
    let mut tar = tar::Builder::new(diff_hasher);
    let mut dirs: Vec<String> = Vec::new();
    // Files first, then links: the order the example layer has always had.
    let ordered: Vec<&LayerEntry> = entries
        .iter()
        .filter(|e| !matches!(e, LayerEntry::Symlink { .. }))
        .chain(
            entries
                .iter()
                .filter(|e| matches!(e, LayerEntry::Symlink { .. })),
        )
        .collect();
    for path in ordered.iter().map(|e| e.path()) {
        let mut p = Path::new(path).parent();
        let mut chain = Vec::new();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            chain.push(d.to_string_lossy().into_owned());
            p = d.parent();
        }
        for d in chain.into_iter().rev() {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h
    };
    for d in &dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, format!("{d}/"), std::io::empty())?;
    }
    for e in &ordered {
        match e {
            LayerEntry::File {
                path,
                mode,
                content,
            } => {
                let mut h = header(tar::EntryType::Regular, *mode, content.len() as u64);
                tar.append_data(&mut h, path, content.as_slice())?;
            }
            LayerEntry::HostFile { path, mode, source } => {
                let f =
                    File::open(source).with_context(|| format!("opening {}", source.display()))?;
                let mut h = header(tar::EntryType::Regular, *mode, f.metadata()?.len());
                tar.append_data(&mut h, path, BufReader::with_capacity(1 << 20, f))?;
            }
            LayerEntry::Symlink { path, target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut h, path, target)?;
            }
        }
    }
    let diff_hasher = tar.into_inner()?;
    let (gz, diff_hex, _) = diff_hasher.finish();
    let blob_hasher = gz.finish()?;
    let (mut file, blob_hex, blob_size) = blob_hasher.finish();
    file.flush()?;
    drop(file);
    let layer_digest = format!("sha256:{blob_hex}");
    fs::rename(&tmp, blob_path(oci_dir, &layer_digest))?;

    let base_digest = tag_digest(oci_dir, from)?;
    let mut manifest = ImageManifest::from_file(blob_path(oci_dir, &base_digest))?;
    let mut config =
        ImageConfiguration::from_file(blob_path(oci_dir, manifest.config().digest().as_ref()))?;
    config
        .rootfs_mut()
        .diff_ids_mut()
        .push(format!("sha256:{diff_hex}"));
    let mut history = config.history().clone();
    history.push(HistoryBuilder::default().created_by(created_by).build()?);
    config.set_history(history);
    if let Some(mut cfg) = config.config().clone() {
        let mut all = cfg.labels().clone().unwrap_or_default();
        for (k, v) in labels {
            all.insert(k.to_string(), v.to_string());
        }
        cfg.set_labels(Some(all));
        config.set_config(Some(cfg));
    }
    let (config_digest, config_size) = write_blob(oci_dir, config.to_string()?.as_bytes())?;
    manifest.set_config(Descriptor::new(
        MediaType::ImageConfig,
        config_size,
        Digest::try_from(config_digest.as_str())?,
    ));
    manifest.layers_mut().push(Descriptor::new(
        MediaType::ImageLayerGzip,
        blob_size,
        Digest::try_from(layer_digest.as_str())?,
    ));
    let (manifest_digest, manifest_size) = write_blob(oci_dir, manifest.to_string()?.as_bytes())?;

    let mut index = ImageIndex::from_file(oci_dir.join("index.json"))?;
    let mut desc = Descriptor::new(
        MediaType::ImageManifest,
        manifest_size,
        Digest::try_from(manifest_digest.as_str())?,
    );
    let mut ann = std::collections::HashMap::new();
    ann.insert(
        "org.opencontainers.image.ref.name".to_string(),
        to.to_string(),
    );
    desc.set_annotations(Some(ann));
    let mut manifests = index.manifests().clone();
    manifests.retain(|m| {
        m.annotations()
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.ref.name"))
            .is_none_or(|n| n != to)
    });
    manifests.push(desc);
    index.set_manifests(manifests);
    layerboot::io::write_atomic(
        oci_dir.join("index.json"),
        index.to_string()?.as_bytes(),
        0o644,
    )?;
    Ok(())
}
