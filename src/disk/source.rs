//! The image a disk is built from, read from a local OCI layout (the verified pull cache or
//! a user's `oci:` directory): digest, labels, and the bootability checks that must pass
//! before any heavy work starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::oci::layout::{OciLayout, REF_NAME};
use crate::oci::manifest::{ImageConfig, Manifest};

/// An image available in a local OCI layout.
#[derive(Debug, Clone)]
pub struct SourceImage {
    pub oci_dir: PathBuf,
    /// The name the OCI layout knows the image by (`org.opencontainers.image.ref.name`);
    /// `None` for the layout's only, unnamed image (what `skopeo copy … oci:DIR` writes).
    pub oci_ref_name: Option<String>,
    /// Manifest digest, `sha256:…`.
    pub digest: String,
    /// Config digest (the image id), `sha256:…`.
    pub config_digest: String,
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
            config_digest,
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
        crate::image::version(&self.labels)
    }

    /// One pass over every layer: what the layers allocate once deployed (see
    /// [`super::estimate::Footprint`]: the root filesystem's content, known before
    /// deploying) and the small files at `paths`, as [`Self::read_files`] reads them.
    /// Each layer is decompressed once.
    pub fn survey(&self, paths: &[&str]) -> Result<Survey> {
        let mut footprint = super::estimate::Footprint::default();
        let mut initramfs = None;
        let files = self.merged_files(paths, MAX_READ, Some((&mut footprint, &mut initramfs)))?;
        Ok(Survey {
            footprint,
            files,
            initramfs,
        })
    }

    /// Read small regular files of the image's filesystem by path (relative to `/`), from
    /// its layers as a container runtime would merge them: the newest layer holding the
    /// path wins, whiteouts hide lower layers. Paths absent from the image are left out.
    /// ostree-ext's layers store files as hardlinks to repo objects; those are followed.
    pub fn read_files(&self, paths: &[&str]) -> Result<BTreeMap<String, Vec<u8>>> {
        self.read_files_up_to(paths, MAX_READ)
    }

    /// [`Self::read_files`] with another size limit per file.
    pub fn read_files_up_to(&self, paths: &[&str], max: u64) -> Result<BTreeMap<String, Vec<u8>>> {
        self.merged_files(paths, max, None)
    }

    /// The layers newest first, merged as a container runtime merges them, for the files
    /// at `paths`; with `footprint`, every layer is also measured in the same pass (else
    /// the walk stops once every path is settled).
    fn merged_files(
        &self,
        paths: &[&str],
        max: u64,
        mut footprint: Option<(&mut super::estimate::Footprint, &mut Option<String>)>,
    ) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut wanted: std::collections::BTreeSet<String> =
            paths.iter().map(|p| normalize(p)).collect();
        let mut out = BTreeMap::new();
        for layer in self.layers.iter().rev() {
            let context = || format!("reading layer {}", layer.digest);
            let mut scan = match &mut footprint {
                None if wanted.is_empty() => break,
                None => scan_tar(open_layer(layer)?, &wanted, &BTreeMap::new(), max)
                    .with_context(context)?,
                Some((total, initramfs)) => {
                    let mut counter = super::estimate::FootprintCounter::default();
                    // Layers come newest first: the first initramfs seen is the one deployed.
                    let mut seen = (**initramfs).clone();
                    let mut counted = std::io::BufReader::with_capacity(
                        1 << 20,
                        super::estimate::CountingReader::new(open_layer(layer)?),
                    );
                    let scan =
                        scan_tar_with(&mut counted, &wanted, &BTreeMap::new(), max, |e, p| {
                            if seen.is_none() && is_kernel_initramfs(p) {
                                seen = Some(p.to_string());
                            }
                            counter.entry(e, p)
                        })
                        .with_context(context)?;
                    **initramfs = seen;
                    // Trailing zero blocks: the footprint counts the whole stream.
                    std::io::copy(&mut counted, &mut std::io::sink()).with_context(context)?;
                    **total += counter.finish(counted.get_ref().n);
                    scan
                }
            };
            if !scan.links.is_empty() {
                // The linked objects came earlier in the stream than we kept: once more.
                let again = scan_tar(open_layer(layer)?, &Default::default(), &scan.links, max)
                    .with_context(context)?;
                scan.found.extend(again.found);
            }
            for p in scan.found.keys().chain(scan.hidden.iter()) {
                wanted.remove(p);
            }
            out.extend(scan.found);
        }
        Ok(out)
    }

    /// Refuse images that cannot boot, naming why, before anything heavy happens.
    pub fn check_bootable(&self) -> Result<()> {
        crate::image::check_bootable(&self.display_name, &self.labels)
    }
}

/// What [`SourceImage::survey`] found.
#[derive(Debug, Default)]
pub struct Survey {
    pub footprint: super::estimate::Footprint,
    /// The wanted paths present in the image, newest layer's copy.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Where the image keeps the initramfs ostree deploys (`usr/lib/modules/<kver>/
    /// initramfs.img`), newest layer's.
    pub initramfs: Option<String>,
}

/// Whether a layer path is a kernel's initramfs as ostree finds it
/// (`usr/lib/modules/<kver>/initramfs.img`).
pub fn is_kernel_initramfs(path: &str) -> bool {
    path.strip_prefix("usr/lib/modules/")
        .and_then(|rest| rest.strip_suffix("/initramfs.img"))
        .is_some_and(|kver| !kver.is_empty() && !kver.contains('/'))
}

/// A layer's tar stream, decompressed as its bytes say.
fn open_layer(layer: &LayerBlob) -> Result<impl std::io::Read> {
    let f = std::fs::File::open(&layer.path)
        .with_context(|| format!("opening layer {}", layer.path.display()))?;
    crate::io::decompressed(std::io::BufReader::with_capacity(1 << 20, f))
        .with_context(|| format!("opening layer {}", layer.path.display()))
}

/// Largest file [`SourceImage::read_files`] reads (they are small JSON tables).
const MAX_READ: u64 = 16 << 20;

fn normalize(p: &str) -> String {
    let p = p.trim_start_matches("./").trim_start_matches('/');
    p.trim_end_matches('/').to_string()
}

/// A layer's tar stream, whatever its compression (sniffed from the magic bytes).
/// What one layer says about the wanted paths.
#[derive(Debug, Default)]
pub struct TarScan {
    pub found: BTreeMap<String, Vec<u8>>,
    /// Wanted paths that are hardlinks to an entry not kept (path → link target).
    pub links: BTreeMap<String, String>,
    /// Wanted paths a whiteout (or an opaque parent) hides below this layer.
    pub hidden: std::collections::BTreeSet<String>,
}

/// Scan one layer's tar for `wanted` paths, and for `targets` (path → hardlink target,
/// from an earlier scan) (pure over the stream). ostree-ext writes each repo object just
/// before the first hardlink to it, so the last regular entry is kept to resolve a link
/// in one pass; other links are returned for a second pass.
pub fn scan_tar<R: std::io::Read>(
    r: R,
    wanted: &std::collections::BTreeSet<String>,
    targets: &BTreeMap<String, String>,
    max: u64,
) -> Result<TarScan> {
    scan_tar_with(r, wanted, targets, max, |_, _| Ok(()))
}

/// [`scan_tar`], with `each` called first on every entry (with its normalized path).
fn scan_tar_with<R: std::io::Read>(
    r: R,
    wanted: &std::collections::BTreeSet<String>,
    targets: &BTreeMap<String, String>,
    max: u64,
    mut each: impl FnMut(&mut tar::Entry<'_, R>, &str) -> Result<()>,
) -> Result<TarScan> {
    let mut scan = TarScan::default();
    let mut last: Option<(String, Vec<u8>)> = None;
    let mut ar = tar::Archive::new(r);
    for e in ar.entries()? {
        let mut e = e?;
        let path = normalize(&String::from_utf8_lossy(&e.path_bytes()));
        each(&mut e, &path)?;
        let kind = e.header().entry_type();
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if let Some(hidden) = name.strip_prefix(".wh.") {
            for w in wanted {
                let under = |d: &str| d.is_empty() || w.starts_with(&format!("{d}/"));
                let gone = if hidden == ".wh..opq" {
                    under(dir)
                } else {
                    let p = if dir.is_empty() {
                        hidden.to_string()
                    } else {
                        format!("{dir}/{hidden}")
                    };
                    *w == p || w.starts_with(&format!("{p}/"))
                };
                if gone {
                    scan.hidden.insert(w.clone());
                }
            }
            continue;
        }
        let read = |e: &mut tar::Entry<R>, path: &str| -> Result<Vec<u8>> {
            let size = e.header().size()?;
            anyhow::ensure!(
                size <= max,
                "/{path}: {size} bytes, more than the {max} layerboot reads from an image file"
            );
            let mut buf = Vec::with_capacity(size as usize);
            std::io::Read::read_to_end(&mut std::io::Read::take(e, size), &mut buf)?;
            Ok(buf)
        };
        let is_target = targets.values().any(|t| *t == path);
        if kind.is_file() {
            if wanted.contains(&path) {
                scan.found.insert(path.clone(), read(&mut e, &path)?);
            } else if is_target {
                let data = read(&mut e, &path)?;
                for (w, t) in targets {
                    if *t == path {
                        scan.found.insert(w.clone(), data.clone());
                    }
                }
            } else if !wanted.is_empty()
                && e.header().size()? <= MAX_READ
                && path.starts_with("sysroot/ostree/repo/objects/")
                && path.ends_with(".file")
            {
                let data = read(&mut e, &path)?;
                last = Some((path, data));
            } else {
                last = None;
            }
        } else if kind.is_hard_link() && wanted.contains(&path) {
            let target = e
                .link_name_bytes()
                .map(|t| normalize(&String::from_utf8_lossy(&t)))
                .unwrap_or_default();
            match &last {
                Some((p, data)) if *p == target => {
                    scan.found.insert(path, data.clone());
                }
                _ => {
                    scan.links.insert(path, target);
                }
            }
        }
    }
    for w in scan.found.keys() {
        scan.links.remove(w);
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::manifest::{OCI_CONFIG, OCI_MANIFEST};

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

    enum E<'a> {
        File(&'a str, &'a str),
        Link(&'a str, &'a str),
    }

    fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            match e {
                E::File(p, data) => {
                    h.set_size(data.len() as u64);
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    b.append_data(&mut h, p, data.as_bytes()).unwrap();
                }
                E::Link(p, target) => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Link);
                    b.append_link(&mut h, p, target).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn files_from_layer_tars() {
        const OBJ: &str = "sysroot/ostree/repo/objects/ab/cd.file";
        const OBJ2: &str = "sysroot/ostree/repo/objects/ef/01.file";
        const P: &str = "usr/share/coreos-assembler/platforms.json";
        let wanted = std::collections::BTreeSet::from([P.to_string()]);
        type Case<'a> = (&'a str, Vec<E<'a>>, Option<&'a str>, Option<&'a str>, bool);
        let cases: Vec<Case> = vec![
            (
                "plain file",
                vec![E::File(P, "plain")],
                Some("plain"),
                None,
                false,
            ),
            (
                "leading ./",
                vec![E::File(
                    "./usr/share/coreos-assembler/platforms.json",
                    "dot",
                )],
                Some("dot"),
                None,
                false,
            ),
            (
                "ostree object just before its link",
                vec![E::File(OBJ, "obj"), E::Link(P, OBJ)],
                Some("obj"),
                None,
                false,
            ),
            (
                "object seen earlier: second pass",
                vec![E::File(OBJ, "obj"), E::File(OBJ2, "other"), E::Link(P, OBJ)],
                None,
                Some(OBJ),
                false,
            ),
            (
                "whiteout",
                vec![E::File("usr/share/coreos-assembler/.wh.platforms.json", "")],
                None,
                None,
                true,
            ),
            (
                "parent whiteout",
                vec![E::File("usr/share/.wh.coreos-assembler", "")],
                None,
                None,
                true,
            ),
            (
                "opaque parent",
                vec![E::File("usr/share/coreos-assembler/.wh..wh..opq", "")],
                None,
                None,
                true,
            ),
            (
                "other files only",
                vec![E::File("usr/share/x", "x")],
                None,
                None,
                false,
            ),
        ];
        for (name, entries, found, link, hidden) in cases {
            let scan =
                scan_tar(&tar_of(&entries)[..], &wanted, &BTreeMap::new(), MAX_READ).unwrap();
            assert_eq!(
                scan.found.get(P).map(|v| std::str::from_utf8(v).unwrap()),
                found,
                "{name}"
            );
            assert_eq!(scan.links.get(P).map(String::as_str), link, "{name}");
            assert_eq!(scan.hidden.contains(P), hidden, "{name}");
            if let Some(t) = link {
                let targets = BTreeMap::from([(P.to_string(), t.to_string())]);
                let again = scan_tar(
                    &tar_of(&entries)[..],
                    &Default::default(),
                    &targets,
                    MAX_READ,
                )
                .unwrap();
                assert_eq!(again.found[P], b"obj", "{name}: second pass");
            }
        }
        let big = "x".repeat(MAX_READ as usize + 1);
        let e = scan_tar(
            &tar_of(&[E::File(P, &big)])[..],
            &wanted,
            &BTreeMap::new(),
            MAX_READ,
        )
        .unwrap_err();
        assert!(e.to_string().contains(P), "{e}");
    }
}
