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

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use sha2::{Digest as _, Sha256};

use rustix::fs;

use crate::io::{Compression, GzipReader, HashingReader};

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

fn valid_sha256(s: &str) -> bool {
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
fn offset_width(body: usize, n: usize) -> usize {
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
struct Xattrs {
    raw: Vec<u8>,
    list: Vec<(CString, Vec<u8>)>,
}

fn parse_xattrs(raw: Vec<u8>) -> Result<Xattrs> {
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
struct Budget {
    used: Mutex<usize>,
    cv: Condvar,
    abort: AtomicBool,
    error: Mutex<Option<anyhow::Error>>,
}

impl Budget {
    /// False once the import is being aborted.
    fn acquire(&self, n: usize) -> bool {
        let mut used = self.used.lock().unwrap();
        while *used > 0 && *used + n > BYTES_IN_FLIGHT && !self.abort.load(Ordering::SeqCst) {
            used = self.cv.wait(used).unwrap();
        }
        if self.abort.load(Ordering::SeqCst) {
            return false;
        }
        *used += n;
        true
    }
    fn release(&self, n: usize) {
        *self.used.lock().unwrap() -= n;
        self.cv.notify_all();
    }
    fn fail(&self, e: anyhow::Error) {
        self.error.lock().unwrap().get_or_insert(e);
        self.abort.store(true, Ordering::SeqCst);
        let _g = self.used.lock().unwrap();
        self.cv.notify_all();
    }
    fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }
    fn take_error(&self) -> anyhow::Error {
        self.error
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| anyhow!("import aborted"))
    }
}

/// A buffer of content counted against the budget until dropped.
struct Chunk {
    data: Vec<u8>,
    budget: Arc<Budget>,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.budget.release(self.data.len());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetaKind {
    DirTree,
    DirMeta,
}

enum Body {
    Symlink(String),
    Regular {
        size: u64,
        first: Chunk,
        rest: Option<Receiver<Chunk>>,
    },
}

enum Job {
    Meta {
        kind: MetaKind,
        checksum: String,
        data: Vec<u8>,
    },
    Content {
        checksum: String,
        uid: u32,
        gid: u32,
        mode: u32,
        xattrs: Arc<Xattrs>,
        body: Body,
    },
}

/// A metadata object's bytes in normal form (what ostree-ext stores), checked against its name.
fn verified_metadata(kind: &str, checksum: &str, data: &[u8]) -> Result<Vec<u8>> {
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

/// The repo's `objects/` directory, and which `xx` subdirectories exist.
struct Objects {
    path: PathBuf,
    fd: OwnedFd,
    made: Vec<AtomicBool>,
}

/// A failed syscall as an error naming what it was doing.
fn sys<T>(r: rustix::io::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    r.map_err(io::Error::from).with_context(what)
}

impl Objects {
    fn open(repo: &Path) -> Result<Objects> {
        let path = repo.join("objects");
        let fd = sys(
            fs::open(
                &path,
                fs::OFlags::RDONLY | fs::OFlags::DIRECTORY | fs::OFlags::CLOEXEC,
                fs::Mode::empty(),
            ),
            || format!("opening {}", path.display()),
        )?;
        Ok(Objects {
            path,
            fd,
            made: (0..256).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    fn ensure_dir(&self, checksum: &str) -> Result<()> {
        let idx = usize::from_str_radix(&checksum[..2], 16).unwrap_or(0);
        if self.made[idx].load(Ordering::Relaxed) {
            return Ok(());
        }
        // Mode as libostree creates them (0777 less the umask).
        match fs::mkdirat(&self.fd, &checksum[..2], fs::Mode::from_raw_mode(0o777)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => sys(Err(e), || {
                format!("creating {}/{}", self.path.display(), &checksum[..2])
            })?,
        }
        self.made[idx].store(true, Ordering::Relaxed);
        Ok(())
    }

    fn rel(checksum: &str, ext: &str) -> String {
        format!("{}/{}.{ext}", &checksum[..2], &checksum[2..])
    }

    fn tmp_rel(checksum: &str, ext: &str, worker: usize) -> String {
        format!("{}/.tmp-{worker}-{}.{ext}", &checksum[..2], &checksum[2..])
    }

    fn create(&self, rel: &str, mode: u32) -> Result<File> {
        let flags = fs::OFlags::WRONLY
            | fs::OFlags::CREATE
            | fs::OFlags::TRUNC
            | fs::OFlags::NOFOLLOW
            | fs::OFlags::CLOEXEC;
        let fd = sys(
            fs::openat(&self.fd, rel, flags, fs::Mode::from_raw_mode(mode)),
            || format!("creating {}/{rel}", self.path.display()),
        )?;
        Ok(File::from(fd))
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        sys(fs::renameat(&self.fd, from, &self.fd, to), || {
            format!("renaming {}/{from} to {to}", self.path.display())
        })
    }

    fn unlink(&self, rel: &str) {
        let _ = fs::unlinkat(&self.fd, rel, fs::AtFlags::empty());
    }

    /// Metadata objects: plain 0644 files.
    fn write_metadata(&self, checksum: &str, ext: &str, data: &[u8], worker: usize) -> Result<()> {
        self.ensure_dir(checksum)?;
        let tmp = Self::tmp_rel(checksum, ext, worker);
        let mut f = self.create(&tmp, 0o644)?;
        f.write_all(data)
            .with_context(|| format!("writing {}/{tmp}", self.path.display()))?;
        sys(fs::fchmod(&f, fs::Mode::from_raw_mode(0o644)), || {
            format!("chmod {}/{tmp}", self.path.display())
        })?;
        drop(f);
        self.rename(&tmp, &Self::rel(checksum, ext))
    }

    fn write_content(&self, job: Job, worker: usize) -> Result<u64> {
        let Job::Content {
            checksum,
            uid,
            gid,
            mode,
            xattrs,
            body,
        } = job
        else {
            unreachable!()
        };
        self.ensure_dir(&checksum)?;
        let tmp = Self::tmp_rel(&checksum, "file", worker);
        let dest = Self::rel(&checksum, "file");
        let full = |rel: &str| self.path.join(rel);
        match body {
            Body::Symlink(target) => {
                let actual = symlink_checksum(uid, gid, &target, &xattrs.raw);
                if actual != checksum {
                    bail!("object {checksum}.file (symlink to {target}) is corrupt: it hashes to {actual}");
                }
                self.unlink(&tmp);
                sys(
                    fs::symlinkat(target.as_str(), &self.fd, tmp.as_str()),
                    || format!("creating symlink {}", full(&tmp).display()),
                )?;
                sys(
                    fs::chownat(
                        &self.fd,
                        tmp.as_str(),
                        Some(fs::Uid::from_raw(uid)),
                        Some(fs::Gid::from_raw(gid)),
                        fs::AtFlags::SYMLINK_NOFOLLOW,
                    ),
                    || format!("chown {}", full(&tmp).display()),
                )?;
                for (name, value) in &xattrs.list {
                    sys(
                        fs::lsetxattr(full(&tmp), name.as_c_str(), value, fs::XattrFlags::empty()),
                        || format!("setting xattr {name:?} on {}", full(&tmp).display()),
                    )?;
                }
                self.rename(&tmp, &dest)?;
                Ok(0)
            }
            Body::Regular { size, first, rest } => {
                let mut h = Sha256::new();
                h.update(file_header(uid, gid, libc::S_IFREG | mode, "", &xattrs.raw));
                let mut f = self.create(&tmp, 0o600)?;
                let result = (|| -> Result<()> {
                    let mut written = 0u64;
                    let mut put = |c: Chunk| -> Result<()> {
                        h.update(&c.data);
                        f.write_all(&c.data)
                            .with_context(|| format!("writing {}", full(&tmp).display()))?;
                        written += c.data.len() as u64;
                        Ok(())
                    };
                    put(first)?;
                    if let Some(rest) = rest {
                        for c in rest.iter() {
                            put(c)?;
                        }
                    }
                    ensure!(written == size, "object {checksum}.file: the layer ended inside it ({written} of {size} bytes)");
                    let actual = hex::encode(h.finalize());
                    if actual != checksum {
                        bail!("object {checksum}.file is corrupt: its content hashes to {actual}");
                    }
                    // chown before chmod: chown clears setuid/setgid bits.
                    sys(
                        fs::fchown(
                            &f,
                            Some(fs::Uid::from_raw(uid)),
                            Some(fs::Gid::from_raw(gid)),
                        ),
                        || format!("chown {}", full(&tmp).display()),
                    )?;
                    sys(
                        fs::fchmod(&f, fs::Mode::from_raw_mode(mode & 0o7777)),
                        || format!("chmod {}", full(&tmp).display()),
                    )?;
                    for (name, value) in &xattrs.list {
                        sys(
                            fs::fsetxattr(&f, name.as_c_str(), value, fs::XattrFlags::empty()),
                            || format!("setting xattr {name:?} on {}", full(&tmp).display()),
                        )?;
                    }
                    // Objects carry mtime 0, as libostree writes them (checkouts hard-link them).
                    let times = fs::Timestamps {
                        last_access: rustix::time::Timespec {
                            tv_sec: 0,
                            tv_nsec: fs::UTIME_OMIT,
                        },
                        last_modification: rustix::time::Timespec {
                            tv_sec: 0,
                            tv_nsec: 0,
                        },
                    };
                    sys(fs::futimens(&f, &times), || {
                        format!("setting mtime of {}", full(&tmp).display())
                    })?;
                    Ok(())
                })();
                drop(f);
                if let Err(e) = result {
                    self.unlink(&tmp);
                    return Err(e);
                }
                self.rename(&tmp, &dest)?;
                Ok(size)
            }
        }
    }
}

/// The decompressed tar stream over a hashing blob reader, and how to finish both.
enum Decoder {
    Gzip(GzipReader<HashingReader<File>>),
    Zstd(zstd::stream::read::Decoder<'static, io::BufReader<HashingReader<File>>>),
    Plain(HashingReader<File>),
}

impl Read for Decoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
            Decoder::Plain(r) => r.read(buf),
        }
    }
}

impl Decoder {
    /// Read the compressed stream to its end (checking its trailer) and the blob to its
    /// end; returns the blob's sha256 and size.
    fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let mut blob = match self {
            Decoder::Gzip(r) => r.into_inner(),
            Decoder::Zstd(r) => r.finish().into_inner(),
            Decoder::Plain(r) => r,
        };
        io::copy(&mut blob, &mut io::sink())?;
        Ok(blob.finish())
    }
}

/// Header fields of a content object entry.
fn owner_mode(h: &tar::Header) -> Result<(u32, u32, u32)> {
    Ok((
        u32::try_from(h.uid()?)?,
        u32::try_from(h.gid()?)?,
        h.mode()?,
    ))
}

/// Which of ostree-ext's two layer kinds a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// The first layer: the commit, all metadata objects, content not in components.
    Commit,
    /// A chunked image's component layer: content objects only ("object set"), recorded by
    /// ostree-ext as a synthetic commit of a flat tree of them.
    ObjectSet,
}

/// Import the ostree commit layer `blob` (media type `media_type`, manifest digest
/// `digest`) into the bare repo `repo` and set its layer ref.
pub fn import_commit_layer(
    repo: &Path,
    blob: &Path,
    media_type: &str,
    digest: &str,
) -> Result<ImportStats> {
    import_layer(repo, blob, media_type, digest, LayerKind::Commit)
}

/// Import one ostree layer of either kind and set its layer ref as ostree-ext would.
pub fn import_layer(
    repo: &Path,
    blob: &Path,
    media_type: &str,
    digest: &str,
    kind: LayerKind,
) -> Result<ImportStats> {
    let start = Instant::now();
    let compression = Compression::of_layer_media_type(media_type)
        .ok_or_else(|| anyhow!("layer {digest}: unsupported media type {media_type}"))?;
    let expected_hex = digest
        .strip_prefix("sha256:")
        .filter(|h| valid_sha256(h))
        .ok_or_else(|| anyhow!("layer digest {digest} is not sha256"))?;
    let file =
        File::open(blob).with_context(|| format!("opening layer blob {}", blob.display()))?;
    let hashing = HashingReader::new(file);
    let decoder = match compression {
        Compression::Gzip => Decoder::Gzip(GzipReader::first_member(hashing)),
        Compression::Zstd => Decoder::Zstd(
            zstd::stream::read::Decoder::new(hashing)
                .with_context(|| format!("layer {digest}: starting zstd"))?,
        ),
        Compression::Uncompressed => Decoder::Plain(hashing),
        Compression::Xz => bail!("layer {digest}: xz-compressed layers are not an OCI media type"),
    };
    let objects = Objects::open(repo)?;
    let budget = Arc::new(Budget {
        used: Mutex::new(0),
        cv: Condvar::new(),
        abort: AtomicBool::new(false),
        error: Mutex::new(None),
    });
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let (tx, rx) = sync_channel::<Job>(1024);
    let rx = Mutex::new(rx);
    let content_bytes = AtomicU64::new(0);
    let content_objects = AtomicU64::new(0);
    let metadata_objects = AtomicU64::new(0);

    let parsed = std::thread::scope(|s| -> Result<Parsed> {
        for id in 0..workers {
            let (rx, objects, budget, content_bytes, content_objects, metadata_objects) = (
                &rx,
                &objects,
                &budget,
                &content_bytes,
                &content_objects,
                &metadata_objects,
            );
            s.spawn(move || loop {
                let job = rx.lock().unwrap().recv();
                let Ok(job) = job else { break };
                if budget.aborted() {
                    continue; // drain: dropping releases the budget and stops the reader's sends
                }
                let r = match job {
                    Job::Meta {
                        kind,
                        checksum,
                        data,
                    } => {
                        let ext = if kind == MetaKind::DirTree {
                            "dirtree"
                        } else {
                            "dirmeta"
                        };
                        verified_metadata(ext, &checksum, &data)
                            .and_then(|d| objects.write_metadata(&checksum, ext, &d, id))
                            .map(|_| metadata_objects.fetch_add(1, Ordering::Relaxed))
                    }
                    job => objects.write_content(job, id).map(|n| {
                        content_bytes.fetch_add(n, Ordering::Relaxed);
                        content_objects.fetch_add(1, Ordering::Relaxed)
                    }),
                };
                if let Err(e) = r {
                    budget.fail(e);
                }
            });
        }
        let parsed = read_layer(decoder, &tx, &budget, digest, kind);
        drop(tx);
        parsed.map_err(|e| {
            budget.fail(e);
            anyhow!("import aborted")
        })
    });
    if budget.aborted() {
        return Err(budget.take_error())
            .with_context(|| format!("importing ostree layer {digest}"));
    }
    let parsed = parsed?;
    let (blob_hex, blob_bytes) = parsed.blob;
    if blob_hex != expected_hex {
        bail!(
            "layer blob {} does not match its digest {digest} (it hashes to sha256:{blob_hex})",
            blob.display()
        );
    }
    let ref_name = layer_ref(digest)?;
    let (commit, extra_meta) = match kind {
        LayerKind::Commit => {
            let (commit, commit_data) = parsed
                .commit
                .ok_or_else(|| anyhow!("layer {digest} holds no ostree commit object"))?;
            // The commit last: it is what makes the objects a commit for ostree.
            if let Some(meta) = &parsed.commitmeta {
                objects.write_metadata(&commit, "commitmeta", meta, 0)?;
            }
            objects.write_metadata(&commit, "commit", &commit_data, 0)?;
            set_ref(repo, &ref_name, &commit)?;
            (commit, 1 + u64::from(parsed.commitmeta.is_some()))
        }
        LayerKind::ObjectSet => (
            write_object_set_commit(repo, &parsed.object_set, &ref_name)?,
            3,
        ),
    };
    Ok(ImportStats {
        commit,
        layer_digest: digest.to_string(),
        ref_name,
        content_objects: content_objects.into_inner(),
        metadata_objects: metadata_objects.into_inner() + extra_meta,
        content_bytes: content_bytes.into_inner(),
        blob_bytes,
        elapsed: start.elapsed(),
    })
}

/// ostree-ext's record of an object-set layer (`Importer::finish_import_object_set`): one
/// directory (root-owned, 0755, no xattrs) holding every content object under its checksum,
/// committed with no parent, subject or metadata at time 0, and the layer ref on it. Written
/// with libostree's own calls so the bytes (and so the commit checksum) are the ones
/// ostree-ext writes.
fn write_object_set_commit(
    repo: &Path,
    objects: &std::collections::BTreeSet<String>,
    ref_name: &str,
) -> Result<String> {
    use ostree_ext::gio::{self, prelude::*};
    use ostree_ext::ostree;
    let r = ostree::Repo::new_for_path(repo);
    r.open(gio::Cancellable::NONE)
        .with_context(|| format!("opening ostree repo {}", repo.display()))?;
    let ctx = || format!("writing the object-set commit for {ref_name}");
    r.prepare_transaction(gio::Cancellable::NONE)
        .with_context(ctx)?;
    let result = (|| -> Result<String> {
        let mtree = ostree::MutableTree::new();
        for c in objects {
            mtree.replace_file(c, c)?;
        }
        let finfo = gio::FileInfo::new();
        finfo.set_attribute_uint32("unix::uid", 0);
        finfo.set_attribute_uint32("unix::gid", 0);
        finfo.set_attribute_uint32("unix::mode", libc::S_IFDIR | 0o755);
        let dirmeta = ostree::create_directory_metadata(&finfo, None);
        let dm = r.write_metadata(
            ostree::ObjectType::DirMeta,
            None,
            &dirmeta,
            gio::Cancellable::NONE,
        )?;
        mtree.set_metadata_checksum(&dm.to_hex());
        let tree = r.write_mtree(&mtree, gio::Cancellable::NONE)?;
        let root = tree
            .downcast_ref::<ostree::RepoFile>()
            .ok_or_else(|| anyhow!("write_mtree returned no repo file"))?;
        let commit =
            r.write_commit_with_time(None, None, None, None, root, 0, gio::Cancellable::NONE)?;
        r.transaction_set_ref(None, ref_name, Some(commit.as_str()));
        r.commit_transaction(gio::Cancellable::NONE)?;
        Ok(commit.to_string())
    })();
    if result.is_err() {
        let _ = r.abort_transaction(gio::Cancellable::NONE);
    }
    result.with_context(ctx)
}

fn set_ref(repo: &Path, ref_name: &str, commit: &str) -> Result<()> {
    use ostree_ext::{gio, ostree};
    let r = ostree::Repo::new_for_path(repo);
    r.open(gio::Cancellable::NONE)
        .with_context(|| format!("opening ostree repo {}", repo.display()))?;
    r.set_ref_immediate(None, ref_name, Some(commit), gio::Cancellable::NONE)
        .with_context(|| format!("setting ref {ref_name} in {}", repo.display()))?;
    Ok(())
}

struct Parsed {
    commit: Option<(String, Vec<u8>)>,
    commitmeta: Option<Vec<u8>>,
    /// Content objects of an object-set layer.
    object_set: std::collections::BTreeSet<String>,
    blob: (String, u64),
}

fn read_small(entry: &mut impl Read, size: u64, max: u64, what: &str) -> Result<Vec<u8>> {
    ensure!(
        size <= max,
        "{what}: {size} bytes exceeds the limit of {max}"
    );
    let mut v = vec![0; size as usize];
    entry
        .read_exact(&mut v)
        .with_context(|| format!("reading {what}"))?;
    Ok(v)
}

/// The reader thread: walk the tar, verify small things inline, hand objects to workers.
fn read_layer(
    decoder: Decoder,
    tx: &std::sync::mpsc::SyncSender<Job>,
    budget: &Arc<Budget>,
    digest: &str,
    layer: LayerKind,
) -> Result<Parsed> {
    let mut archive = tar::Archive::new(decoder);
    let mut object_set = std::collections::BTreeSet::new();
    let mut commit: Option<(String, Vec<u8>)> = None;
    let mut commitmeta = None;
    let mut xattrs: HashMap<String, Arc<Xattrs>> = HashMap::new();
    let mut pending_xattrs: Option<(String, String)> = None;
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    let send = |job: Job| -> Result<()> { tx.send(job).map_err(|_| anyhow!("import aborted")) };
    let cache_xattrs = |data: Vec<u8>,
                        expected: Option<&str>,
                        xattrs: &mut HashMap<String, Arc<Xattrs>>|
     -> Result<String> {
        let actual = hex::encode(Sha256::digest(&data));
        if let Some(e) = expected {
            ensure!(
                e == actual,
                "xattrs object {e} is corrupt: it hashes to {actual}"
            );
        }
        if !xattrs.contains_key(&actual) {
            xattrs.insert(
                actual.clone(),
                Arc::new(parse_xattrs(data).with_context(|| format!("xattrs object {actual}"))?),
            );
        }
        Ok(actual)
    };
    for entry in archive
        .entries()
        .with_context(|| format!("reading layer {digest}"))?
    {
        if budget.aborted() {
            break;
        }
        let mut entry = entry.with_context(|| format!("reading layer {digest}"))?;
        let etype = entry.header().entry_type();
        if etype.is_dir() {
            continue;
        }
        let path = entry
            .path()
            .with_context(|| format!("reading layer {digest}: entry path"))?
            .into_owned();
        ensure!(
            path.to_str().is_some(),
            "layer {digest}: non-UTF-8 path {path:?}"
        );
        let kind = classify(&path)?;
        let size = entry.header().size()?;
        if layer == LayerKind::ObjectSet {
            if let EntryKind::Commit(c)
            | EntryKind::CommitMeta(c)
            | EntryKind::DirTree(c)
            | EntryKind::DirMeta(c) = &kind
            {
                bail!("component layer {digest} holds metadata object {c} ({}); only content objects belong there", path.display());
            }
        }
        match kind {
            EntryKind::Ignored => {}
            EntryKind::Commit(c) => {
                ensure!(
                    commit.is_none(),
                    "layer {digest} holds several commit objects"
                );
                ensure!(etype.is_file(), "commit object {c} is not a regular file");
                let data = read_small(
                    &mut entry,
                    size,
                    MAX_METADATA_SIZE,
                    &format!("commit object {c}"),
                )?;
                let data = verified_metadata("commit", &c, &data)?;
                commit = Some((c, data));
            }
            EntryKind::CommitMeta(c) => {
                ensure!(
                    etype.is_file(),
                    "commitmeta object {c} is not a regular file"
                );
                ensure!(
                    commit.as_ref().is_some_and(|(cc, _)| *cc == c),
                    "commitmeta {c} does not belong to the layer's commit"
                );
                let data = read_small(
                    &mut entry,
                    size,
                    MAX_METADATA_SIZE,
                    &format!("commitmeta object {c}"),
                )?;
                commitmeta = Some(verified_metadata("commitmeta", &c, &data)?);
            }
            EntryKind::DirTree(c) | EntryKind::DirMeta(c) => {
                ensure!(etype.is_file(), "metadata object {c} is not a regular file");
                let mk = if path.extension().is_some_and(|e| e == "dirtree") {
                    MetaKind::DirTree
                } else {
                    MetaKind::DirMeta
                };
                let data = read_small(
                    &mut entry,
                    size,
                    MAX_METADATA_SIZE,
                    &format!("metadata object {c}"),
                )?;
                send(Job::Meta {
                    kind: mk,
                    checksum: c,
                    data,
                })?;
            }
            EntryKind::XattrsObject(c) => {
                ensure!(etype.is_file(), "xattrs object {c} is not a regular file");
                let data = read_small(
                    &mut entry,
                    size,
                    MAX_XATTR_SIZE,
                    &format!("xattrs object {c}"),
                )?;
                cache_xattrs(data, Some(&c), &mut xattrs)?;
            }
            EntryKind::XattrsV0(c) => {
                let data = read_small(
                    &mut entry,
                    size,
                    MAX_XATTR_SIZE,
                    &format!("xattrs object {c}"),
                )?;
                cache_xattrs(data, Some(&c), &mut xattrs)?;
            }
            EntryKind::XattrsLink(file) => {
                ensure!(
                    pending_xattrs.is_none(),
                    "xattrs for object {} are not followed by it",
                    pending_xattrs.as_ref().map(|p| p.0.as_str()).unwrap_or("")
                );
                let x = match etype {
                    tar::EntryType::Link => {
                        let target = entry
                            .link_name()?
                            .ok_or_else(|| anyhow!("xattrs link of {file} has no target"))?
                            .into_owned();
                        parse_object_path(&target)
                            .with_context(|| format!("xattrs link of {file}"))?
                            .0
                    }
                    t if t.is_file() => {
                        let data = read_small(
                            &mut entry,
                            size,
                            MAX_XATTR_SIZE,
                            &format!("xattrs of {file}"),
                        )?;
                        cache_xattrs(data, None, &mut xattrs)?
                    }
                    t => bail!("xattrs link of {file} has unexpected type {t:?}"),
                };
                pending_xattrs = Some((file, x));
            }
            EntryKind::XattrsRefV0(file) => {
                ensure!(
                    pending_xattrs.is_none(),
                    "xattrs for object {} are not followed by it",
                    pending_xattrs.as_ref().map(|p| p.0.as_str()).unwrap_or("")
                );
                ensure!(
                    etype == tar::EntryType::Link,
                    "xattrs reference of {file} is not a hard link"
                );
                let target = entry
                    .link_name()?
                    .ok_or_else(|| anyhow!("xattrs reference of {file} has no target"))?
                    .into_owned();
                let x = target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .filter(|n| valid_sha256(n))
                    .ok_or_else(|| {
                        anyhow!(
                            "xattrs reference of {file}: invalid target {}",
                            target.display()
                        )
                    })?;
                pending_xattrs = Some((file, x.to_string()));
            }
            EntryKind::File(c) => {
                let (xfile, xsum) = pending_xattrs
                    .take()
                    .ok_or_else(|| anyhow!("object {c}.file has no xattrs reference before it"))?;
                ensure!(
                    xfile == c,
                    "xattrs reference for {xfile} precedes object {c}.file"
                );
                let x = xattrs.get(&xsum).cloned().ok_or_else(|| {
                    anyhow!("object {c}.file: xattrs {xsum} not found in the layer")
                })?;
                let mut key = [0u8; 32];
                hex::decode_to_slice(&c, &mut key).expect("validated hex");
                if !seen.insert(key) {
                    ensure!(
                        layer == LayerKind::Commit,
                        "component layer {digest} holds object {c}.file twice"
                    );
                    continue;
                }
                if layer == LayerKind::ObjectSet {
                    object_set.insert(c.clone());
                }
                let (uid, gid, mode) = owner_mode(entry.header())?;
                let body = match etype {
                    tar::EntryType::Symlink => {
                        let target = entry
                            .link_name_bytes()
                            .ok_or_else(|| anyhow!("symlink object {c} has no target"))?;
                        let target = std::str::from_utf8(&target)
                            .map_err(|_| anyhow!("symlink object {c}: non-UTF-8 target"))?
                            .to_string();
                        Body::Symlink(target)
                    }
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        let first_len = size.min(CHUNK as u64) as usize;
                        let first = read_chunk(&mut entry, first_len, budget, &c)?;
                        if size as usize == first_len {
                            Body::Regular {
                                size,
                                first,
                                rest: None,
                            }
                        } else {
                            let (ctx, crx) = channel();
                            send(Job::Content {
                                checksum: c.clone(),
                                uid,
                                gid,
                                mode,
                                xattrs: x,
                                body: Body::Regular {
                                    size,
                                    first,
                                    rest: Some(crx),
                                },
                            })?;
                            let mut left = size - first_len as u64;
                            while left > 0 {
                                let n = left.min(CHUNK as u64) as usize;
                                let chunk = read_chunk(&mut entry, n, budget, &c)?;
                                if ctx.send(chunk).is_err() {
                                    bail!("import aborted");
                                }
                                left -= n as u64;
                            }
                            continue;
                        }
                    }
                    t => bail!("object {c}.file has unexpected tar type {t:?}"),
                };
                send(Job::Content {
                    checksum: c,
                    uid,
                    gid,
                    mode,
                    xattrs: x,
                    body,
                })?;
            }
        }
    }
    if budget.aborted() {
        bail!("import aborted");
    }
    if let Some((f, _)) = pending_xattrs {
        bail!("layer {digest} ends after the xattrs of object {f}");
    }
    let blob = archive
        .into_inner()
        .finish()
        .with_context(|| format!("reading layer {digest} to its end"))?;
    Ok(Parsed {
        commit,
        commitmeta,
        object_set,
        blob,
    })
}

fn read_chunk(
    entry: &mut impl Read,
    n: usize,
    budget: &Arc<Budget>,
    checksum: &str,
) -> Result<Chunk> {
    if !budget.acquire(n) {
        bail!("import aborted");
    }
    let mut chunk = Chunk {
        data: vec![0; n],
        budget: budget.clone(),
    };
    entry
        .read_exact(&mut chunk.data)
        .with_context(|| format!("reading object {checksum}.file"))?;
    Ok(chunk)
}

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
