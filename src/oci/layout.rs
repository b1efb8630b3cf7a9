//! OCI image layouts (`oci:DIR`) and archives (`oci-archive:FILE`): content-addressed
//! blobs under `blobs/sha256/`, an `index.json` naming the images by
//! `org.opencontainers.image.ref.name`, and the `oci-layout` marker.
//!
//! Every blob is written to a temporary file beside its final name while its sha256
//! and size are checked, and renamed only when both match; so a blob present under its
//! digest name is complete and verified, and a second pull can skip it.
//!
//! A layout may come from anyone (an unpacked archive, a user's directory): every file of
//! it is opened through [`OciLayout::open_file`], which resolves beneath the layout root
//! without following any symlink, accepts only regular files, and never blocks on a FIFO;
//! reads are bounded by the size the descriptor declares.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::cancel::Cancel;
use crate::io::{HashingReader, HashingWriter};
use crate::oci::manifest::{Descriptor, ImageIndex, OCI_INDEX};
use crate::oci::reference::Digest;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_MARKER: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
/// index.json beyond this is not an index but an attack on our memory.
const MAX_INDEX: u64 = 4 << 20;

#[derive(Debug, Clone)]
pub struct OciLayout {
    root: PathBuf,
    /// How messages name the layout: its path, or for an unpacked archive the archive's
    /// (never our temporary directory).
    name: String,
}

impl OciLayout {
    /// Open an existing layout; errors say what is missing.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            bail!(
                "OCI layout {} does not exist or is not a directory",
                root.display()
            );
        }
        if !root.join("oci-layout").is_file() || !root.join("index.json").is_file() {
            bail!(
                "{} is not an OCI image layout (no oci-layout or index.json)",
                root.display()
            );
        }
        Ok(OciLayout {
            root: root.to_path_buf(),
            name: root.display().to_string(),
        })
    }

    /// The same layout, named `name` in messages.
    pub fn named(self, name: String) -> Self {
        OciLayout { name, ..self }
    }

    /// Open a layout, creating the directory and its skeleton if needed.
    pub fn create(root: &Path) -> Result<Self> {
        fs::create_dir_all(root.join("blobs/sha256"))
            .with_context(|| format!("creating OCI layout {}", root.display()))?;
        if !root.join("oci-layout").exists() {
            crate::io::write_atomic(root.join("oci-layout"), LAYOUT_MARKER.as_bytes(), 0o644)?;
        }
        let layout = OciLayout {
            root: root.to_path_buf(),
            name: root.display().to_string(),
        };
        if !root.join("index.json").exists() {
            layout.write_index(&ImageIndex {
                schema_version: 2,
                media_type: Some(OCI_INDEX.into()),
                manifests: vec![],
                annotations: None,
            })?;
        }
        Ok(layout)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    /// True if the blob is present with the expected size. Blobs only ever appear
    /// under their digest name after verification, so the size check guards only
    /// against layouts written by other tools and truncated since.
    pub fn has_blob(&self, desc: &Descriptor) -> bool {
        fs::symlink_metadata(self.blob_path(&desc.digest))
            .is_ok_and(|m| m.is_file() && m.len() == desc.size)
    }

    /// Open `rel` (relative to the root) for reading: resolved beneath the root with no
    /// symlink anywhere on the way (openat2 `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), and
    /// only if it is a regular file. Returns the file and its size.
    pub fn open_file(&self, rel: &Path) -> Result<(File, u64)> {
        // for messages
        let path = Path::new(&self.name).join(rel);
        let root =
            File::open(&self.root).with_context(|| format!("opening OCI layout {}", self.name))?;
        // O_NONBLOCK: a FIFO planted in the layout must not hang the open.
        let opened = rustix::fs::openat2(
            &root,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        );
        let file = match opened {
            Ok(fd) => File::from(fd),
            Err(Errno::LOOP | Errno::XDEV) => bail!(
                "{} is a symlink or lies behind one; an OCI layout's files must be regular files inside it",
                path.display()
            ),
            Err(Errno::NOENT) => bail!("{} does not exist", path.display()),
            Err(e) => {
                return Err(anyhow::Error::new(io::Error::from(e))
                    .context(format!("opening {}", path.display())))
            }
        };
        let meta = file
            .metadata()
            .with_context(|| format!("reading the metadata of {}", path.display()))?;
        if !meta.is_file() {
            bail!(
                "{} is not a regular file; an OCI layout's files must be regular files inside it",
                path.display()
            );
        }
        Ok((file, meta.len()))
    }

    /// The blob's path relative to the root.
    fn blob_rel(digest: &Digest) -> PathBuf {
        Path::new("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = Path::new(&self.name).join("index.json");
        let (f, len) = self.open_file(Path::new("index.json"))?;
        if len > MAX_INDEX {
            bail!(
                "{} is {len} bytes: larger than any image index ({MAX_INDEX} bytes at most)",
                path.display()
            );
        }
        let mut bytes = Vec::new();
        f.take(MAX_INDEX)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("invalid JSON in {}", path.display()))
    }

    pub fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let json = serde_json::to_vec(index).expect("index serializes");
        crate::io::write_atomic(self.root.join("index.json"), &json, 0o644)
    }

    /// Read a whole (small) blob of `size` bytes, checking digest and size; no more than
    /// `size` bytes are ever read.
    pub fn read_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>> {
        let path = Path::new(&self.name).join(Self::blob_rel(digest));
        let f = self.open_blob(digest, size)?;
        let mut r = HashingReader::new(f);
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        let (hex, n) = r.finish();
        if n != size {
            bail!(
                "blob {digest} in {} has {n} bytes, expected {size}",
                self.name
            );
        }
        if hex != digest.hex() {
            bail!(
                "blob {digest} in {} does not match its digest (content is sha256:{hex})",
                self.name
            );
        }
        Ok(buf)
    }

    /// Open the blob for reading at most `size` bytes: a regular file inside the layout
    /// (see [`Self::open_file`]) of exactly `size` bytes.
    pub fn open_blob(&self, digest: &Digest, size: u64) -> Result<io::Take<File>> {
        let (f, len) = self
            .open_file(&Self::blob_rel(digest))
            .with_context(|| format!("blob {digest} of {}", self.name))?;
        if len != size {
            bail!(
                "blob {digest} in {} has {len} bytes, expected {size}",
                self.name
            );
        }
        Ok(f.take(size))
    }

    /// Start writing the blob `expected` describes.
    pub fn blob_writer(&self, expected: &Descriptor) -> Result<BlobWriter> {
        let dest = self.blob_path(&expected.digest);
        let dir = dest.parent().expect("blob path has a parent");
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = crate::io::AtomicFile::create(&dest, 0o644)?;
        Ok(BlobWriter {
            expected: expected.clone(),
            inner: HashingWriter::new(BufWriter::with_capacity(256 << 10, file)),
        })
    }

    /// Write a small blob from memory, returning its descriptor.
    pub fn write_blob(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
        let digest =
            Digest::from_sha256_hex(&crate::io::sha256_reader(bytes)?.0).expect("sha256 hex");
        let desc = Descriptor::new(media_type, digest, bytes.len() as u64);
        if !self.has_blob(&desc) {
            let mut w = self.blob_writer(&desc)?;
            w.write_all(bytes)?;
            w.commit()?;
        }
        Ok(desc)
    }

    /// Point `name` (or, with `None`, an unnamed entry) at `desc` in index.json,
    /// replacing what the name pointed to before.
    pub fn set_ref(&self, name: Option<&str>, desc: &Descriptor) -> Result<()> {
        // Several processes may share a layout (the pull cache): serialize the
        // read-modify-write of index.json so no one's entry is lost.
        let lock_path = self.root.join(".index.json.lock");
        let lock = File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        let mut index = self.read_index()?;
        let mut entry = desc.clone();
        let mut annotations = entry.annotations.take().unwrap_or_default();
        annotations.remove(REF_NAME);
        if let Some(n) = name {
            annotations.insert(REF_NAME.into(), n.into());
        }
        entry.annotations = (!annotations.is_empty()).then_some(annotations);
        index.manifests.retain(|d| match name {
            Some(n) => d.annotation(REF_NAME) != Some(n),
            None => !(d.annotation(REF_NAME).is_none() && d.digest == entry.digest),
        });
        index.manifests.push(entry);
        self.write_index(&index)
    }

    /// The index.json entry for `tag`, or the only entry when no tag is given.
    pub fn find_ref(&self, tag: Option<&str>) -> Result<Descriptor> {
        let index = self.read_index()?;
        match tag {
            Some(t) => index
                .manifests
                .iter()
                .find(|d| d.annotation(REF_NAME) == Some(t))
                .cloned()
                .with_context(|| {
                    let names: Vec<&str> = index
                        .manifests
                        .iter()
                        .filter_map(|d| d.annotation(REF_NAME))
                        .collect();
                    format!(
                        "no image tagged '{t}' in {} (tags: {})",
                        self.name,
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    )
                }),
            None => match index.manifests.as_slice() {
                [one] => Ok(one.clone()),
                [] => bail!("OCI layout {} holds no images", self.name),
                many => {
                    let names: Vec<&str> =
                        many.iter().filter_map(|d| d.annotation(REF_NAME)).collect();
                    bail!(
                        "OCI layout {} holds {} images: name one as oci:DIR:TAG (tags: {})",
                        self.name,
                        many.len(),
                        names.join(", ")
                    )
                }
            },
        }
    }
}

/// A blob being written; [`BlobWriter::commit`] checks digest and size and renames it
/// into place. Dropped without commit, nothing remains.
pub struct BlobWriter {
    expected: Descriptor,
    inner: HashingWriter<BufWriter<crate::io::AtomicFile>>,
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.inner.count()
    }

    pub fn commit(self) -> Result<()> {
        let (buf, hex, n) = self.inner.finish();
        let d = &self.expected.digest;
        if n != self.expected.size {
            bail!(
                "blob {d}: received {n} bytes, expected {} (truncated or oversized)",
                self.expected.size
            );
        }
        if hex != d.hex() {
            bail!("blob {d}: content does not match its digest (got sha256:{hex})");
        }
        let file = buf
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing blob {d}"))?;
        file.commit()
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Refuse to grow past the declared size: a hostile server cannot fill the disk.
        if self.inner.count() + buf.len() as u64 > self.expected.size {
            return Err(io::Error::other(format!(
                "blob {}: more than the expected {} bytes",
                self.expected.digest, self.expected.size
            )));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Unpack an `oci-archive` tar into `dest` (an empty directory), refusing entries that
/// would land outside it. Checks `cancel` between entries.
pub fn unpack_archive(archive: &Path, dest: &Path, cancel: &Cancel) -> Result<OciLayout> {
    let f = File::open(archive)
        .with_context(|| format!("cannot open OCI archive {}", archive.display()))?;
    let mut tar = tar::Archive::new(io::BufReader::with_capacity(1 << 20, f));
    tar.set_preserve_permissions(false);
    for entry in tar
        .entries()
        .with_context(|| format!("reading OCI archive {}", archive.display()))?
    {
        cancel.check()?;
        let mut entry =
            entry.with_context(|| format!("reading OCI archive {}", archive.display()))?;
        // Only files and directories: a link would point reads outside the layout.
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            bail!(
                "OCI archive {} has a {kind:?} entry {}; only regular files and directories are accepted",
                archive.display(),
                String::from_utf8_lossy(&entry.path_bytes()).escape_debug()
            );
        }
        if !entry
            .unpack_in(dest)
            .with_context(|| format!("unpacking OCI archive {}", archive.display()))?
        {
            bail!(
                "OCI archive {} has an entry outside the archive root",
                archive.display()
            );
        }
    }
    Ok(OciLayout::open(dest)
        .with_context(|| format!("OCI archive {}", archive.display()))?
        .named(archive.display().to_string()))
}

/// Write the layout at `src` as a tar archive to `dest`, atomically: cancelled (checked
/// between blobs and last before the rename), nothing is left at `dest`.
pub fn write_archive(src: &OciLayout, dest: &Path, cancel: &Cancel) -> Result<()> {
    let mut out = crate::io::AtomicFile::create(dest, 0o644)?;
    {
        let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, &mut out));
        tar.mode(tar::HeaderMode::Deterministic);
        tar.follow_symlinks(false);
        for name in ["oci-layout", "index.json"] {
            tar.append_path_with_name(src.root.join(name), name)
                .with_context(|| format!("archiving {}", src.root.join(name).display()))?;
        }
        let blobs = src.root.join("blobs/sha256");
        let mut entries: Vec<_> = fs::read_dir(&blobs)
            .with_context(|| format!("listing {}", blobs.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| !n.to_string_lossy().starts_with('.'))
            .collect();
        entries.sort();
        tar.append_dir("blobs", &blobs)?;
        tar.append_dir("blobs/sha256", &blobs)?;
        for name in entries {
            cancel.check()?;
            let path = blobs.join(&name);
            tar.append_path_with_name(&path, Path::new("blobs/sha256").join(&name))
                .with_context(|| format!("archiving {}", path.display()))?;
        }
        tar.into_inner()
            .with_context(|| format!("writing {}", dest.display()))?
            .flush()
            .with_context(|| format!("writing {}", dest.display()))?;
    }
    cancel.check()?;
    out.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_writer_verifies_before_commit() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(dir.path()).unwrap();
        let good = layout.write_blob("x", b"hello").unwrap();
        assert!(layout.has_blob(&good));
        assert_eq!(layout.read_blob(&good.digest, 5).unwrap(), b"hello");

        // Wrong content, short content and excess content all leave nothing behind.
        let cases: &[(&[u8], &str)] = &[
            (b"hellO", "does not match"),
            (b"hell", "truncated"),
            (b"hello!", "more than"),
        ];
        let other = Descriptor::new(
            "x",
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
                .parse()
                .unwrap(),
            5,
        );
        let other = Descriptor {
            digest: "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                .parse()
                .unwrap(),
            ..other
        };
        for (content, want) in cases {
            let mut w = layout.blob_writer(&other).unwrap();
            let res = w
                .write_all(content)
                .map_err(anyhow::Error::from)
                .and_then(|_| w.commit());
            let err = format!("{:#}", res.unwrap_err());
            assert!(err.contains(want), "{err}");
            assert!(!layout.blob_path(&other.digest).exists());
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    /// Issue #15 item 2: nothing of a layout is read through a symlink or beyond the size
    /// its descriptor declares, and nothing blocks on a FIFO.
    #[test]
    fn layout_files_are_regular_files_inside_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("l");
        let layout = OciLayout::create(&root).unwrap();
        let good = layout.write_blob("x", b"hello").unwrap();
        let outside = dir.path().join("secret");
        fs::write(&outside, b"hello").unwrap();
        let blob = layout.blob_path(&good.digest);
        let redo = |make: &dyn Fn(&Path)| {
            fs::remove_file(&blob).ok();
            make(&blob);
        };
        type Make<'a> = Box<dyn Fn(&Path) + 'a>;
        let cases: Vec<(&str, Make, &str)> = vec![
            (
                "symlink to /dev/zero",
                Box::new(|p| std::os::unix::fs::symlink("/dev/zero", p).unwrap()),
                "is a symlink",
            ),
            (
                "symlink to a host file",
                Box::new(|p| std::os::unix::fs::symlink(&outside, p).unwrap()),
                "is a symlink",
            ),
            (
                "FIFO",
                Box::new(|p| {
                    rustix::fs::mknodat(
                        rustix::fs::CWD,
                        p,
                        rustix::fs::FileType::Fifo,
                        Mode::from_raw_mode(0o600),
                        0,
                    )
                    .unwrap();
                }),
                "not a regular file",
            ),
            (
                "longer than declared",
                Box::new(|p| fs::write(p, b"hello, and more").unwrap()),
                "has 15 bytes, expected 5",
            ),
        ];
        for (what, make, want) in &cases {
            redo(make.as_ref());
            let err = format!("{:#}", layout.read_blob(&good.digest, 5).unwrap_err());
            assert!(err.contains(want), "{what}: {err}");
            assert!(!err.contains("secret"), "{what}: {err}");
            let err = format!("{:#}", layout.open_blob(&good.digest, 5).unwrap_err());
            assert!(err.contains(want), "{what}: {err}");
        }
        // a symlinked directory on the way, and a symlinked index.json
        fs::remove_file(&blob).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join(good.digest.hex()), b"hello").unwrap();
        fs::remove_dir(root.join("blobs/sha256")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("blobs/sha256")).unwrap();
        let err = format!("{:#}", layout.read_blob(&good.digest, 5).unwrap_err());
        assert!(err.contains("is a symlink or lies behind one"), "{err}");
        fs::rename(root.join("index.json"), dir.path().join("index.json")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("index.json"), root.join("index.json")).unwrap();
        let err = format!("{:#}", layout.read_index().unwrap_err());
        assert!(err.contains("index.json is a symlink"), "{err}");
    }

    #[test]
    fn archives_with_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar");
        let mut b = tar::Builder::new(File::create(&archive).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "index.json", "/etc/shadow").unwrap();
        b.finish().unwrap();
        drop(b);
        let out = dir.path().join("x");
        fs::create_dir(&out).unwrap();
        let err = format!(
            "{:#}",
            unpack_archive(&archive, &out, &Cancel::new()).unwrap_err()
        );
        assert!(err.contains("Symlink entry index.json"), "{err}");
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
    }

    #[test]
    fn refs_and_archive_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(&dir.path().join("l")).unwrap();
        let a = layout
            .write_blob(crate::oci::manifest::OCI_MANIFEST, b"{}")
            .unwrap();
        let b = layout
            .write_blob(crate::oci::manifest::OCI_MANIFEST, b"[]")
            .unwrap();
        assert!(layout.find_ref(None).is_err());
        layout.set_ref(Some("v1"), &a).unwrap();
        assert_eq!(layout.find_ref(None).unwrap().digest, a.digest);
        layout.set_ref(Some("v2"), &b).unwrap();
        layout.set_ref(Some("v1"), &b).unwrap();
        assert_eq!(layout.read_index().unwrap().manifests.len(), 2);
        assert_eq!(layout.find_ref(Some("v1")).unwrap().digest, b.digest);
        let err = format!("{:#}", layout.find_ref(None).unwrap_err());
        assert!(err.contains("oci:DIR:TAG") && err.contains("v1"), "{err}");
        let err = format!("{:#}", layout.find_ref(Some("nope")).unwrap_err());
        assert!(err.contains("'nope'"), "{err}");

        let archive = dir.path().join("a.tar");
        write_archive(&layout, &archive, &Cancel::new()).unwrap();
        let out = dir.path().join("x");
        fs::create_dir(&out).unwrap();
        let back = unpack_archive(&archive, &out, &Cancel::new()).unwrap();
        // cancelled: no archive
        let cancelled = Cancel::new();
        cancelled.cancel();
        let never = dir.path().join("never.tar");
        assert!(write_archive(&layout, &never, &cancelled).is_err());
        assert!(!never.exists());
        assert_eq!(back.read_blob(&a.digest, 2).unwrap(), b"{}");
        assert_eq!(back.find_ref(Some("v2")).unwrap().digest, b.digest);
    }
}
