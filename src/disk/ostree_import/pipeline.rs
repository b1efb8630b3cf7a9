//! The import pipeline: one reader thread walks the tar and verifies small objects inline,
//! N workers hash and write content objects, a byte budget bounds what is in flight.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, ensure, Context, Result};
use sha2::{Digest as _, Sha256};

use crate::io::{Compression, GzipReader, HashingReader};

use super::codec::Decoder;
use super::format::{
    classify, parse_object_path, parse_xattrs, valid_sha256, verified_metadata, EntryKind, Xattrs,
};
use super::writer::{set_ref, write_object_set_commit, Objects};
use super::{
    layer_ref, ImportStats, LayerKind, BYTES_IN_FLIGHT, CHUNK, MAX_METADATA_SIZE, MAX_XATTR_SIZE,
};

pub(super) struct Budget {
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
pub(super) struct Chunk {
    pub(super) data: Vec<u8>,
    budget: Arc<Budget>,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.budget.release(self.data.len());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MetaKind {
    DirTree,
    DirMeta,
}

pub(super) enum Body {
    Symlink(String),
    Regular {
        size: u64,
        first: Chunk,
        rest: Option<Receiver<Chunk>>,
    },
}

pub(super) enum Job {
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

/// Header fields of a content object entry.
pub(super) fn owner_mode(h: &tar::Header) -> Result<(u32, u32, u32)> {
    Ok((
        u32::try_from(h.uid()?)?,
        u32::try_from(h.gid()?)?,
        h.mode()?,
    ))
}

/// Which of ostree-ext's two layer kinds a blob is.
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
pub(super) struct Parsed {
    commit: Option<(String, Vec<u8>)>,
    commitmeta: Option<Vec<u8>>,
    /// Content objects of an object-set layer.
    object_set: std::collections::BTreeSet<String>,
    blob: (String, u64),
}

pub(super) fn read_small(
    entry: &mut impl Read,
    size: u64,
    max: u64,
    what: &str,
) -> Result<Vec<u8>> {
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
pub(super) fn read_layer(
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

pub(super) fn read_chunk(
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
