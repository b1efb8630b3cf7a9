//! Fast, parallel, verified import of an ostree-native image's ostree layers into a `bare`
//! ostree repo, laid out exactly as ostree-ext's own pull leaves them: every object of the
//! layer under `objects/`, then the ref `ostree/container/blob/<escaped layer digest>`.
//! `container::deploy` then finds those layers present (ostree-ext's `query_layer`) and
//! imports only the derived layers, writes the merge commit and deploys as usual.
//!
//! Layers, as ostree-ext's `parse_manifest_layout` splits them: the commit layer (always the
//! first: the commit, all metadata objects and the content not in components) and, for
//! chunked images such as RHCOS, the component layers up to the `ostree.final-diffid` one
//! (content objects only; ostree-ext records each as a synthetic commit of a flat tree of
//! them, which is written here with the same libostree calls so the refs agree).
//!
//! Why: ostree-ext imports a layer on one thread through skopeo, GLib's SHA-256 (no SHA-NI)
//! and zlib; for a 876 MB base that was most of `layerboot disk`. Here one thread reads the
//! blob (hashing it against the manifest digest), inflates it (zlib-rs, ~2x system zlib
//! here) and walks the tar; N workers hash (sha2, SHA-NI) and write the objects. At most
//! [`BYTES_IN_FLIGHT`] of content is buffered, so memory stays flat in image size.
//!
//! Every object is verified before it is renamed into place: metadata objects by the sha256
//! of their (normal-form) GVariant bytes, content objects by ostree's content checksum
//! (sha256 of the size-prefixed file header GVariant `(uuuusa(ayay))` followed by the file
//! content). A mismatch is an error naming the object. A layer's ref is written only after
//! every object landed and the blob's own digest matched; on any error the caller discards
//! the staging sysroot.
//!
//! Tar layout read here (ostree-ext's export format): under `sysroot/ostree/repo/`,
//! `objects/xx/<rest>.commit` first, optionally `.commitmeta`, metadata `.dirtree` /
//! `.dirmeta`, and each `.file` content object preceded by its xattrs reference:
//! v1 `.file-xattrs-link` (hard link to a `.file-xattrs` object named by the sha256 of the
//! serialized `a(ayay)`, or a regular file holding it) or v0 `.file.xattrs` (hard link to
//! `xattrs/<sha256>`). Everything else (the hard-linked checkout, config, refs) is ignored.
//!
//! Objects are written as libostree writes them in a bare repo: content as real files or
//! symlinks with the object's owner, mode and xattrs, regular files with mtime 0 (libostree
//! 2022.7 leaves empty ones at their write time; here they get 0 too), metadata as 0644
//! files, detached metadata as `.commitmeta`.
//!
//! Modules: [`format`] (ostree-ext's tar paths, ostree's checksums and GVariants, pure),
//! [`codec`] (the blob's decompression and digest), [`writer`] (objects written
//! fd-relative into the repo), [`pipeline`] (the reader thread, the workers, the budget).

mod codec;
mod format;
mod pipeline;
mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::io::Compression;
pub use format::{
    classify, file_header, fuzz_object, parse_object_path, regfile_checksum, symlink_checksum,
    EntryKind,
};
pub use pipeline::{import_commit_layer, import_layer};

/// ostree-ext's ref prefix for imported layers (`store.rs` `LAYER_PREFIX`).
const LAYER_REF_PREFIX: &str = "ostree/container/blob";
const REPO_PREFIX: &str = "sysroot/ostree/repo";
/// Content bytes buffered between the tar reader and the writers, at most.
pub const BYTES_IN_FLIGHT: usize = 64 << 20;
/// Files up to this size travel as one buffer; larger ones are streamed in chunks of it.
const CHUNK: usize = 1 << 20;
/// Same limits as ostree-ext's importer.
const MAX_XATTR_SIZE: u64 = 1024 * 1024;
const MAX_METADATA_SIZE: u64 = 10 * 1024 * 1024;

/// What one import did.
#[derive(Debug, Clone)]
pub struct ImportStats {
    pub commit: String,
    pub layer_digest: String,
    pub ref_name: String,
    pub content_objects: u64,
    pub metadata_objects: u64,
    /// Uncompressed bytes of file content written.
    pub content_bytes: u64,
    pub blob_bytes: u64,
    pub elapsed: Duration,
}

/// Whether the importer ran, and if not, why ostree-ext is left to do it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// One entry per layer imported, the commit layer last.
    Imported(Vec<ImportStats>),
    Skipped(String),
}

/// `ostree-unverified-image:oci:DIR:TAG` → (DIR, TAG); other transports → `None`.
pub fn parse_oci_source(imgref: &str) -> Option<(PathBuf, String)> {
    let rest = imgref.strip_prefix("ostree-unverified-image:oci:")?;
    let (dir, tag) = rest.rsplit_once(':')?;
    if dir.is_empty() || tag.is_empty() || tag.contains('/') {
        return None;
    }
    Some((PathBuf::from(dir), tag.to_string()))
}

/// `mode=` of the `[core]` group of an ostree repo config.
pub fn repo_mode(config: &str) -> Option<&str> {
    let mut in_core = false;
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            in_core = line == "[core]";
        } else if in_core {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "mode" {
                    return Some(v.trim());
                }
            }
        }
    }
    None
}

/// The ref ostree-ext looks up to decide a layer is already imported.
pub fn layer_ref(digest: &str) -> Result<String> {
    ostree_ext::refescape::prefix_escape_for_ref(LAYER_REF_PREFIX, digest)
}

/// What a tar entry is, from its path (and for xattrs links, its link target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// The first layer: the commit, all metadata objects, content not in components.
    Commit,
    /// A chunked image's component layer: content objects only ("object set"), recorded by
    /// ostree-ext as a synthetic commit of a flat tree of them.
    ObjectSet,
}

/// Import the ostree commit layer `blob` (media type `media_type`, manifest digest
pub use super::source::LayerBlob;

/// ostree-ext's `parse_manifest_layout` over layer indices: the commit layer is always the
/// first; component ("chunk") layers are the others up to and including the layer whose
/// diff id is `final_diffid`; the rest are derived layers. Returns the component indices.
pub fn component_layers(
    diff_ids: &[String],
    final_diffid: &str,
) -> std::result::Result<Vec<usize>, String> {
    let target = diff_ids
        .iter()
        .position(|d| d == final_diffid)
        .ok_or_else(|| {
            format!("ostree.final-diffid {final_diffid} is not one of the image's diff ids")
        })?;
    Ok((1..=target).collect())
}

/// The ostree layers of the image tagged `tag` in `oci_dir`: the commit layer, then the
/// component layers; or why the image is left to ostree-ext.
pub fn ostree_layers(
    oci_dir: &Path,
    tag: &str,
) -> Result<std::result::Result<(LayerBlob, Vec<LayerBlob>), String>> {
    let image = super::source::SourceImage::open(oci_dir, Some(tag))?;
    let Some(final_diffid) = image.labels.get("ostree.final-diffid") else {
        return Ok(Err(
            "not an ostree-native image (no ostree.final-diffid label)".into(),
        ));
    };
    if image.layers.is_empty() || image.diff_ids.len() != image.layers.len() {
        return Ok(Err(format!(
            "manifest {} has {} layers for {} diff ids",
            image.digest,
            image.layers.len(),
            image.diff_ids.len()
        )));
    }
    let components = match component_layers(&image.diff_ids, final_diffid) {
        Ok(c) => c,
        Err(why) => return Ok(Err(why)),
    };
    Ok(Ok((
        image.layers[0].clone(),
        components
            .into_iter()
            .map(|i| image.layers[i].clone())
            .collect(),
    )))
}

/// Pre-fill `repo` (bare) with the ostree layers (component layers, then the commit layer)
/// of the image tagged `tag` in `oci_dir`. Layers already present are left alone.
pub fn prefill_from_oci(repo: &Path, oci_dir: &Path, tag: &str) -> Result<Outcome> {
    let config = std::fs::read_to_string(repo.join("config"))
        .with_context(|| format!("reading {}/config", repo.display()))?;
    match repo_mode(&config) {
        Some("bare") => {}
        m => {
            return Ok(Outcome::Skipped(format!(
                "repo mode is {}, not bare",
                m.unwrap_or("unset")
            )))
        }
    }
    let (commit, components) = match ostree_layers(oci_dir, tag)? {
        Ok(l) => l,
        Err(why) => return Ok(Outcome::Skipped(why)),
    };
    let todo: Vec<(LayerBlob, LayerKind)> = components
        .into_iter()
        .map(|l| (l, LayerKind::ObjectSet))
        .chain([(commit, LayerKind::Commit)])
        .collect();
    if let Some((l, _)) = todo
        .iter()
        .find(|(l, _)| Compression::of_layer_media_type(&l.media_type).is_none())
    {
        return Ok(Outcome::Skipped(format!(
            "layer {} has media type {}, not handled here",
            l.digest, l.media_type
        )));
    }
    let mut done = Vec::new();
    for (l, kind) in todo {
        if repo.join("refs/heads").join(layer_ref(&l.digest)?).exists() {
            continue;
        }
        done.push(import_layer(repo, &l.path, &l.media_type, &l.digest, kind)?);
    }
    if done.is_empty() {
        return Ok(Outcome::Skipped(
            "every ostree layer is already in the repo".into(),
        ));
    }
    Ok(Outcome::Imported(done))
}

/// The deploy helper's hook: for `ostree-unverified-image:oci:DIR:TAG` sources, import the
/// ostree layers into `repo` ahead of ostree-ext; anything else is left to ostree-ext.
pub fn prefill_for_source(repo: &Path, source_imgref: &str) -> Result<Outcome> {
    let Some((dir, tag)) = parse_oci_source(source_imgref) else {
        return Ok(Outcome::Skipped(format!(
            "source {source_imgref} is not an oci: layout"
        )));
    };
    let start = Instant::now();
    let outcome = prefill_from_oci(repo, &dir, &tag)?;
    match &outcome {
        Outcome::Imported(layers) => {
            let secs = start.elapsed().as_secs_f64();
            let mib = layers.iter().map(|s| s.content_bytes).sum::<u64>() as f64 / 1048576.0;
            let commit = layers.last().map(|s| s.commit.as_str()).unwrap_or("");
            for s in layers {
                log::debug!(
                    "layer {} → {}: {} content objects, {} metadata objects, {:.2} s",
                    s.layer_digest,
                    s.commit,
                    s.content_objects,
                    s.metadata_objects,
                    s.elapsed.as_secs_f64()
                );
            }
            log::info!(
                "imported {} ostree layer(s) (commit {commit}): {} content objects ({mib:.0} MiB), {} metadata objects in {secs:.2} s ({:.0} MiB/s)",
                layers.len(),
                layers.iter().map(|s| s.content_objects).sum::<u64>(),
                layers.iter().map(|s| s.metadata_objects).sum::<u64>(),
                mib / secs.max(1e-9)
            );
        }
        Outcome::Skipped(why) => {
            log::info!("fast layer import skipped ({why}); ostree-ext imports the ostree layers")
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    use super::format::{parse_xattrs, verified_metadata};
    use super::*;
    use ostree_ext::glib::prelude::*;

    #[test]
    fn entry_paths() {
        let c = "a86d80a3e9ff77c2e3144c787b7769b300f91ffd770221aac27bab854960b964";
        let obj = |ext: &str| format!("sysroot/ostree/repo/objects/a8/{}.{ext}", &c[2..]);
        let cases: Vec<(String, std::result::Result<EntryKind, &str>)> = vec![
            (obj("commit"), Ok(EntryKind::Commit(c.into()))),
            (obj("commitmeta"), Ok(EntryKind::CommitMeta(c.into()))),
            (obj("dirtree"), Ok(EntryKind::DirTree(c.into()))),
            (obj("dirmeta"), Ok(EntryKind::DirMeta(c.into()))),
            (obj("file"), Ok(EntryKind::File(c.into()))),
            (obj("file-xattrs"), Ok(EntryKind::XattrsObject(c.into()))),
            (obj("file-xattrs-link"), Ok(EntryKind::XattrsLink(c.into()))),
            (obj("file.xattrs"), Ok(EntryKind::XattrsRefV0(c.into()))),
            (
                format!("sysroot/ostree/repo/xattrs/{c}"),
                Ok(EntryKind::XattrsV0(c.into())),
            ),
            ("sysroot/ostree/repo/config".into(), Ok(EntryKind::Ignored)),
            (
                "sysroot/ostree/repo/refs/heads/x".into(),
                Ok(EntryKind::Ignored),
            ),
            ("sysroot/ostree/repo/state/x".into(), Ok(EntryKind::Ignored)),
            ("usr/bin/bash".into(), Ok(EntryKind::Ignored)),
            ("./usr/bin/bash".into(), Ok(EntryKind::Ignored)),
            (obj("blah"), Err("invalid object type")),
            (
                format!("sysroot/ostree/repo/objects/a8/{}.commit", &c[3..]),
                Err("invalid object checksum"),
            ),
            (
                format!("sysroot/ostree/repo/objects/A8/{}.commit", &c[2..]),
                Err("invalid object checksum"),
            ),
            (
                "sysroot/ostree/repo/objects/a8".into(),
                Err("invalid object"),
            ),
            (
                "sysroot/ostree/repo/xattrs/1234".into(),
                Err("invalid xattrs entry"),
            ),
        ];
        for (p, want) in cases {
            let got = classify(Path::new(&p));
            match want {
                Ok(k) => assert_eq!(got.unwrap(), k, "{p}"),
                Err(w) => assert!(
                    got.as_ref().unwrap_err().to_string().contains(w),
                    "{p}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn layout_split_like_ostree_ext() {
        let ids: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let cases: &[(&str, Result<Vec<usize>, &str>)] = &[
            ("a", Ok(vec![])),        // plain encapsulation (+ derived layers b c d)
            ("c", Ok(vec![1, 2])),    // chunked: b c are components, d derived
            ("d", Ok(vec![1, 2, 3])), // chunked, nothing derived
            ("x", Err("not one of the image's diff ids")),
        ];
        for (target, want) in cases {
            match (component_layers(&ids, target), want) {
                (Ok(got), Ok(w)) => assert_eq!(&got, w, "{target}"),
                (Err(got), Err(w)) => assert!(got.contains(w), "{target}: {got}"),
                (got, w) => panic!("{target}: {got:?} vs {w:?}"),
            }
        }
    }

    #[test]
    fn oci_sources_and_repo_modes() {
        assert_eq!(
            parse_oci_source("ostree-unverified-image:oci:/var/cache/x/oci:layered"),
            Some((PathBuf::from("/var/cache/x/oci"), "layered".into()))
        );
        assert_eq!(
            parse_oci_source("ostree-unverified-image:oci:/a:b/c:tag"),
            Some((PathBuf::from("/a:b/c"), "tag".into()))
        );
        assert_eq!(
            parse_oci_source("ostree-unverified-image:oci:/no/tag"),
            None
        );
        assert_eq!(
            parse_oci_source("ostree-unverified-registry:quay.io/x/y:tag"),
            None
        );
        assert_eq!(
            parse_oci_source("ostree-unverified-image:docker://quay.io/x:1"),
            None
        );
        assert_eq!(
            repo_mode("[core]\nrepo_version=1\nmode=bare\n"),
            Some("bare")
        );
        assert_eq!(
            repo_mode("[core]\nmode = archive-z2\n[sysroot]\nmode=bare\n"),
            Some("archive-z2")
        );
        assert_eq!(repo_mode("[sysroot]\nmode=bare\n"), None);
        assert_eq!(
            layer_ref("sha256:0123abc").unwrap(),
            "ostree/container/blob/sha256_3A_0123abc"
        );
    }

    /// The hand-written header serialization is byte-identical to GLib's for the same
    /// tuple, across the framing-offset width boundaries.
    #[test]
    fn file_header_matches_glib() {
        let xattr = |n: usize, len: usize| -> Vec<(Vec<u8>, Vec<u8>)> {
            (0..n)
                .map(|i| (format!("user.k{i}\0").into_bytes(), vec![b'v'; len + i]))
                .collect()
        };
        let long_target = "t".repeat(300);
        let cases: Vec<(u32, u32, u32, &str, Vec<(Vec<u8>, Vec<u8>)>)> = vec![
            (0, 0, libc::S_IFREG | 0o644, "", vec![]),
            (1000, 1000, libc::S_IFREG | 0o4755, "", xattr(1, 10)),
            (0, 0, libc::S_IFLNK | 0o777, "../lib/x", vec![]),
            (0, 5, libc::S_IFREG | 0o600, "", xattr(3, 70)),
            (0, 0, libc::S_IFLNK | 0o777, &long_target, xattr(3, 5)),
            (7, 7, libc::S_IFREG | 0o644, "", xattr(2, 40_000)),
        ];
        for (uid, gid, mode, target, xs) in cases {
            let xv = xs.to_variant();
            let mine = file_header(uid, gid, mode, target, xv.data());
            let theirs = (
                uid.to_be(),
                gid.to_be(),
                mode.to_be(),
                0u32,
                target.to_string(),
                xs.clone(),
            )
                .to_variant();
            let theirs = theirs.data();
            assert_eq!(
                &mine[..4],
                &(theirs.len() as u32).to_be_bytes(),
                "length prefix"
            );
            assert_eq!(&mine[4..8], &[0; 4]);
            assert_eq!(
                &mine[8..],
                theirs,
                "uid {uid} mode {mode:o} target {} xattrs {}",
                target.len(),
                xs.len()
            );
        }
    }

    #[test]
    fn xattrs_parse_strips_the_name_nul() {
        let xs: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (
                b"security.selinux\0".to_vec(),
                b"system_u:object_r:bin_t:s0\0".to_vec(),
            ),
            (b"user.a\0".to_vec(), vec![1, 2]),
        ];
        let x = parse_xattrs(xs.to_variant().data().to_vec()).unwrap();
        assert_eq!(x.list.len(), 2);
        assert_eq!(x.list[0].0.as_bytes(), b"security.selinux");
        assert_eq!(x.list[0].1, b"system_u:object_r:bin_t:s0\0");
        assert_eq!(x.list[1].0.as_bytes(), b"user.a");
        assert!(parse_xattrs(
            Vec::<(Vec<u8>, Vec<u8>)>::new()
                .to_variant()
                .data()
                .to_vec()
        )
        .unwrap()
        .list
        .is_empty());
    }

    #[test]
    fn metadata_checksums_are_verified() {
        let data = (
            0u32,
            0u32,
            (libc::S_IFDIR | 0o755).to_be(),
            Vec::<(Vec<u8>, Vec<u8>)>::new(),
        )
            .to_variant()
            .data()
            .to_vec();
        let sum = hex::encode(Sha256::digest(&data));
        assert_eq!(verified_metadata("dirmeta", &sum, &data).unwrap(), data);
        let mut bad = data.clone();
        bad[11] ^= 1;
        let e = verified_metadata("dirmeta", &sum, &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("object {sum}.dirmeta is corrupt")),
            "{e}"
        );
    }
}
