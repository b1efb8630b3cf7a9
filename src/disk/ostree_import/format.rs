//! ostree-ext's export format and ostree's object checksums (pure): what a tar path is,
//! the content checksum's file header, xattrs, normal-form metadata.

use std::collections::HashMap;
use std::ffi::CString;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Result};
use sha2::{Digest as _, Sha256};

use super::REPO_PREFIX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Commit(String),
    CommitMeta(String),
    DirTree(String),
    DirMeta(String),
    File(String),
    /// `objects/xx/<sha256 of the xattrs>.file-xattrs` (v1).
    XattrsObject(String),
    /// `objects/xx/<file checksum>.file-xattrs-link` (v1).
    XattrsLink(String),
    /// `objects/xx/<file checksum>.file.xattrs` (v0).
    XattrsRefV0(String),
    /// `xattrs/<sha256>` (v0).
    XattrsV0(String),
    Ignored,
}

pub(super) fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `xx/<62 hex>.<ext>` (only the last two components count, as in ostree-ext) →
/// (checksum, extension). For `.file.xattrs` the extension is `xattrs`.
pub fn parse_object_path(p: &Path) -> Result<(String, String)> {
    let parent = p
        .parent()
        .and_then(Path::file_name)
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("invalid object path {}", p.display()))?;
    let name = p
        .file_name()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("invalid object path {}", p.display()))?;
    let (stem, ext) = name
        .rsplit_once('.')
        .ok_or_else(|| anyhow!("invalid object path {} (no type)", p.display()))?;
    let rest = stem.strip_suffix(".file").unwrap_or(stem);
    let checksum = format!("{parent}{rest}");
    ensure!(
        parent.len() == 2 && rest.len() == 62 && valid_sha256(&checksum),
        "invalid object checksum in {}",
        p.display()
    );
    Ok((checksum, ext.to_string()))
}

/// Classify a tar entry path (directories are filtered out before).
pub fn classify(path: &Path) -> Result<EntryKind> {
    let Ok(rel) = path.strip_prefix(REPO_PREFIX) else {
        return Ok(EntryKind::Ignored);
    };
    if rel.file_name().is_some_and(|n| n == "config") || rel.starts_with("refs") {
        return Ok(EntryKind::Ignored);
    }
    if let Ok(obj) = rel.strip_prefix("objects") {
        let (checksum, ext) = parse_object_path(obj)?;
        return Ok(match ext.as_str() {
            "commit" => EntryKind::Commit(checksum),
            "commitmeta" => EntryKind::CommitMeta(checksum),
            "dirtree" => EntryKind::DirTree(checksum),
            "dirmeta" => EntryKind::DirMeta(checksum),
            "file" => EntryKind::File(checksum),
            "file-xattrs" => EntryKind::XattrsObject(checksum),
            "file-xattrs-link" => EntryKind::XattrsLink(checksum),
            "xattrs" => EntryKind::XattrsRefV0(checksum),
            other => bail!("invalid object type '{other}' in {}", path.display()),
        });
    }
    if let Ok(x) = rel.strip_prefix("xattrs") {
        let name = x
            .to_str()
            .filter(|n| valid_sha256(n))
            .ok_or_else(|| anyhow!("invalid xattrs entry {}", path.display()))?;
        return Ok(EntryKind::XattrsV0(name.to_string()));
    }
    Ok(EntryKind::Ignored)
}

/// GVariant framing-offset width for a container whose body is `body` bytes with `n` offsets.
pub(super) fn offset_width(body: usize, n: usize) -> usize {
    if body + n <= 0xff {
        1
    } else if body + 2 * n <= 0xffff {
        2
    } else if body + 4 * n <= 0xffff_ffff {
        4
    } else {
        8
    }
}

/// ostree's content-object file header as it is checksummed: a 4-byte big-endian length,
/// 4 zero bytes, then the GVariant `(uuuusa(ayay))` (uid, gid, mode, rdev = 0, each stored
/// big-endian; the symlink target or ""; the serialized xattrs).
pub fn file_header(uid: u32, gid: u32, mode: u32, symlink_target: &str, xattrs: &[u8]) -> Vec<u8> {
    let body_len = 16 + symlink_target.len() + 1 + xattrs.len();
    let w = offset_width(body_len, 1);
    let total = body_len + w;
    let mut out = Vec::with_capacity(8 + total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    for v in [uid, gid, mode, 0] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(symlink_target.as_bytes());
    out.push(0);
    out.extend_from_slice(xattrs);
    // The one framing offset: where the string (the only non-last variable member) ends.
    let str_end = (16 + symlink_target.len() + 1) as u64;
    out.extend_from_slice(&str_end.to_le_bytes()[..w]);
    out
}

/// The checksum of a symlink content object.
pub fn symlink_checksum(uid: u32, gid: u32, target: &str, xattrs: &[u8]) -> String {
    hex::encode(Sha256::digest(file_header(
        uid,
        gid,
        libc::S_IFLNK | 0o777,
        target,
        xattrs,
    )))
}

/// The checksum of a regular-file content object with content `data`.
pub fn regfile_checksum(uid: u32, gid: u32, mode: u32, xattrs: &[u8], data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(file_header(uid, gid, libc::S_IFREG | mode, "", xattrs));
    h.update(data);
    hex::encode(h.finalize())
}

/// Serialized `a(ayay)` xattrs and their parsed form (names without the trailing NUL).
#[derive(Debug)]
pub(super) struct Xattrs {
    pub(super) raw: Vec<u8>,
    pub(super) list: Vec<(CString, Vec<u8>)>,
}

pub(super) fn parse_xattrs(raw: Vec<u8>) -> Result<Xattrs> {
    use ostree_ext::glib;
    let v = glib::Variant::from_data::<Vec<(Vec<u8>, Vec<u8>)>, _>(raw.clone());
    let pairs: Vec<(Vec<u8>, Vec<u8>)> =
        v.get().ok_or_else(|| anyhow!("xattrs are not a(ayay)"))?;
    let mut list = Vec::with_capacity(pairs.len());
    for (mut name, value) in pairs {
        if name.last() == Some(&0) {
            name.pop();
        }
        list.push((
            CString::new(name).map_err(|_| anyhow!("xattr name with an embedded NUL"))?,
            value,
        ));
    }
    Ok(Xattrs { raw, list })
}

/// Bytes of content in flight; a reader waits while the budget is spent.
/// A metadata object's bytes in normal form (what ostree-ext stores), checked against its name.
pub(super) fn verified_metadata(kind: &str, checksum: &str, data: &[u8]) -> Result<Vec<u8>> {
    use ostree_ext::glib;
    let bytes = glib::Bytes::from(data);
    let v = match kind {
        "dirtree" => glib::Variant::from_bytes::<ostree_ext::ostree::TreeVariantType>(&bytes),
        "dirmeta" => glib::Variant::from_bytes::<ostree_ext::ostree::DirmetaVariantType>(&bytes),
        "commit" => glib::Variant::from_bytes::<ostree_ext::ostree::CommitVariantType>(&bytes),
        _ => glib::Variant::from_bytes::<HashMap<String, glib::Variant>>(&bytes),
    };
    let normal = if v.is_normal_form() {
        data.to_vec()
    } else {
        v.normal_form().data().to_vec()
    };
    if kind != "commitmeta" {
        let actual = hex::encode(Sha256::digest(&normal));
        if actual != checksum {
            bail!("object {checksum}.{kind} is corrupt: its content hashes to {actual}");
        }
    }
    Ok(normal)
}

/// For `crate::fuzz_api`: one object's bytes through the parser the importer uses for its
/// kind (`xattrs`, `dirtree`, `dirmeta`, `commit`, `commitmeta`).
#[doc(hidden)]
pub fn fuzz_object(kind: &str, data: &[u8]) {
    if kind == "xattrs" {
        let _ = parse_xattrs(data.to_vec());
    } else {
        let _ = verified_metadata(kind, &"0".repeat(64), data);
    }
}
