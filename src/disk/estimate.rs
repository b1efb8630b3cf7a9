//! What a deployed image allocates on its root filesystem, counted from its layers' tar
//! entries, so the root can be sized (and created) before the deploy. Layers are opened
//! by their magic bytes (gzip, zstd, else a plain tar), not by their media type.
//!
//! The tar length alone cannot bound it: a 100-byte file is 1 KiB of tar but a 4 KiB block and a 512-byte inode on
//! XFS, so an image of many small files needs several times its tar size.

use std::collections::HashMap;
use std::io::{self, Read};

use anyhow::{Context, Result};

/// Filesystem block and inode sizes the footprint is counted in: mkfs.xfs's defaults (v5,
/// 4 KiB blocks, 512-byte inodes) and mke2fs's 4 KiB blocks (its 256-byte inodes fit).
const BLOCK: u64 = 4096;
const INODE: u64 = 512;
/// Per directory entry: XFS dirents are 12 bytes plus the name, 8-byte aligned, and the
/// directory blocks holding them are never full.
const DIRENT_OVERHEAD: u64 = 32;
/// A plain (non-ostree) layer's directory becomes a dirtree and a dirmeta object in the
/// repo (each a small file: a block and an inode), besides the directory itself.
const METADATA_OBJECTS_PER_PLAIN_DIR: u64 = 2;
/// Where an ostree-native layer keeps its repo; everything else in it is the checkout,
/// hard links to those objects.
const OSTREE_REPO_PREFIX: &str = "sysroot/ostree/repo/";

/// What a deployed image allocates on the root filesystem, counted from its layers' tar
/// entries (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Bytes of every inode, data block, directory and dirent the deployment writes.
    pub allocated: u64,
    /// Uncompressed tar bytes, for the logs.
    pub tar_bytes: u64,
    pub regular_files: u64,
    /// Bytes of the regular files that become ostree file objects (an ostree-native
    /// layer's objects, a plain layer's files): what a relabelled merge commit rewrites.
    pub object_bytes: u64,
    /// Some ostree object carries an SELinux label (`security.selinux` in its
    /// `.file-xattrs` or its PAX header).
    pub labelled_objects: bool,
    /// The image ships a compiled SELinux policy (`etc/selinux/<name>/policy/policy.<n>`,
    /// or under `usr/etc` as ostree commits keep it).
    pub selinux_policy: bool,
}

impl Footprint {
    /// Bytes the deployed root holds. ostree-ext labels the merge commit of a derived image
    /// from the image's own policy: when that policy arrives over objects that carry no
    /// labels, every file object is written a second time with its label (measured: an
    /// unlabelled Debian base with a policy layer needs twice its objects).
    pub fn deployed_bytes(&self) -> u64 {
        let relabelled = if self.selinux_policy && !self.labelled_objects {
            self.object_bytes
        } else {
            0
        };
        self.allocated + relabelled
    }
}

impl std::ops::AddAssign for Footprint {
    fn add_assign(&mut self, o: Self) {
        self.allocated += o.allocated;
        self.tar_bytes += o.tar_bytes;
        self.regular_files += o.regular_files;
        self.object_bytes += o.object_bytes;
        self.labelled_objects |= o.labelled_objects;
        self.selinux_policy |= o.selinux_policy;
    }
}

/// What the root filesystem is sized for: the footprint, never less than the layers' tar
/// length + 1/8 + 32 MiB. Measured: the example image's footprint alone left a root with
/// 10% slack that a metal build overran once (ENOSPC moving an object into place while
/// other objects' speculative preallocations were still held); the tar rule has held for
/// plain images since the start.
pub fn root_content(fp: &Footprint) -> u64 {
    fp.deployed_bytes()
        .max(fp.tar_bytes + fp.tar_bytes / 8 + (32 << 20))
}

/// Bytes a regular file of `size` bytes takes: its blocks and its inode.
fn file_cost(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK + INODE
}

/// Whether the deployment holds a second, real copy of `path` besides the repo object:
/// ostree copies the image's /etc (`usr/etc` in the commit) into the deployment's /etc,
/// and the stateroot's /var from the image's /var on first deploy.
fn copied_at_deploy(path: &str) -> bool {
    ["etc/", "usr/etc/", "var/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// The footprint of one layer's tar stream (already decompressed: see [`crate::io::decompressed`]).
/// An ostree-native layer (objects under `sysroot/ostree/repo/`, the checkout as hard
/// links to them) counts each object once and each checkout entry as a dirent; a plain
/// layer, as ostree-ext imports it, counts each file once as an object, its checkout as
/// dirents and per directory the metadata objects of the merge commit.
#[cfg(test)]
pub fn tar_footprint<R: Read>(tar: R) -> Result<Footprint> {
    let mut counted = io::BufReader::with_capacity(1 << 20, CountingReader::new(tar));
    let mut counter = FootprintCounter::default();
    let mut archive = tar::Archive::new(&mut counted);
    for entry in archive.entries().context("reading a layer's tar stream")? {
        let mut entry = entry.context("reading a layer's tar entry")?;
        let path = entry.path().context("a tar entry's path")?;
        let path = path.to_string_lossy().trim_start_matches("./").to_string();
        counter.entry(&mut entry, &path)?;
    }
    // Trailing zero blocks, so tar_bytes is the stream's length as layer_size gives it.
    io::copy(&mut counted, &mut io::sink())?;
    Ok(counter.finish(counted.get_ref().n))
}

/// [`tar_footprint`] entry by entry, for a caller that walks the tar stream itself (and
/// reads other things from it in the same pass: see `SourceImage::survey`).
#[derive(Debug, Default)]
pub struct FootprintCounter {
    fp: Footprint,
    /// Object path → bytes allocated, to count again the checkout entries ostree copies.
    sizes: HashMap<String, u64>,
}

impl FootprintCounter {
    /// Count one entry (`path` relative, without `./`). May read the entry's data (an
    /// object's `.file-xattrs`), so call it before anything else reads the entry.
    pub fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: &str) -> Result<()> {
        let fp = &mut self.fp;
        let sizes = &mut self.sizes;
        let in_repo = path.starts_with(OSTREE_REPO_PREFIX);
        let name_len = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .map_or(0, str::len) as u64;
        fp.selinux_policy |= is_selinux_policy(path);
        if in_repo && !fp.labelled_objects {
            fp.labelled_objects = carries_selinux_label(entry, path)?;
        }
        let header = entry.header();
        let mut cost = name_len + DIRENT_OVERHEAD;
        match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let size = header.size().context("a tar entry's size")?;
                let c = file_cost(size);
                fp.regular_files += 1;
                cost += c;
                if !in_repo || path.ends_with(".file") {
                    fp.object_bytes += c;
                }
                if copied_at_deploy(path) {
                    cost += c;
                }
                if in_repo {
                    sizes.insert(path.to_string(), c);
                }
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .context("a hard link's target")?
                    .map(|t| t.to_string_lossy().trim_start_matches("./").to_string())
                    .unwrap_or_default();
                if copied_at_deploy(path) {
                    cost += sizes.get(&target).copied().unwrap_or(BLOCK + INODE);
                }
            }
            tar::EntryType::Directory => {
                cost += BLOCK + INODE;
                // An ostree-native layer's checkout directories already have their
                // metadata objects in the repo part (counted as files); a plain layer's
                // get them written by the import.
                if !in_repo && sizes.is_empty() {
                    cost += METADATA_OBJECTS_PER_PLAIN_DIR * (BLOCK + INODE);
                }
            }
            tar::EntryType::Symlink => {
                let target_len = entry.link_name_bytes().map_or(0, |t| t.len() as u64);
                // Short targets live in the inode; longer ones take a block.
                cost += INODE + if target_len > 256 { BLOCK } else { 0 };
            }
            _ => cost += INODE,
        }
        fp.allocated += cost;
        Ok(())
    }

    /// The layer's footprint; `tar_bytes` is the length of its whole tar stream.
    pub fn finish(self, tar_bytes: u64) -> Footprint {
        Footprint {
            tar_bytes,
            ..self.fp
        }
    }
}

/// `etc/selinux/<name>/policy/policy.<n>`, also below `usr/` (ostree's `/usr/etc`).
fn is_selinux_policy(path: &str) -> bool {
    let rest = path.strip_prefix("usr/").unwrap_or(path);
    let Some(rest) = rest.strip_prefix("etc/selinux/") else {
        return false;
    };
    match rest.split('/').collect::<Vec<_>>()[..] {
        [name, "policy", file] => {
            !name.is_empty()
                && file
                    .strip_prefix("policy.")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        }
        _ => false,
    }
}

/// Whether an ostree repo entry of a layer records an SELinux label: ostree-ext's tar
/// format keeps each object's xattrs in a `.file-xattrs` file (older versions in the
/// object's PAX header).
fn carries_selinux_label<R: Read>(entry: &mut tar::Entry<R>, path: &str) -> Result<bool> {
    const KEY: &[u8] = b"security.selinux";
    if let Some(pax) = entry.pax_extensions().context("a tar entry's PAX header")? {
        for ext in pax {
            let ext = ext.context("a tar entry's PAX header")?;
            if ext.key_bytes().ends_with(KEY) {
                return Ok(true);
            }
        }
    }
    let size = entry.header().size().unwrap_or(0);
    if path.ends_with(".file-xattrs") && size > 0 && size <= 1 << 20 {
        let mut xattrs = Vec::new();
        entry
            .read_to_end(&mut xattrs)
            .context("reading an object's xattrs")?;
        return Ok(xattrs.windows(KEY.len()).any(|w| w == KEY));
    }
    Ok(false)
}

/// Counts the bytes read through it.
pub(crate) struct CountingReader<R> {
    inner: R,
    pub(crate) n: u64,
}

impl<R> CountingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        CountingReader { inner, n: 0 }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A tar of `entries`: (path, kind, size or link target).
    fn tar_of(entries: &[(&str, char, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for &(path, kind, arg) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            match kind {
                'f' => {
                    let n: usize = arg.parse().unwrap();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(n as u64);
                    b.append_data(&mut h, path, &vec![7u8; n][..]).unwrap();
                }
                // A regular file holding `arg` itself.
                'c' => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(arg.len() as u64);
                    b.append_data(&mut h, path, arg.as_bytes()).unwrap();
                }
                'd' => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, path, io::empty()).unwrap();
                }
                'h' | 'l' => {
                    h.set_entry_type(if kind == 'h' {
                        tar::EntryType::Link
                    } else {
                        tar::EntryType::Symlink
                    });
                    h.set_size(0);
                    b.append_link(&mut h, path, arg).unwrap();
                }
                _ => unreachable!(),
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn footprint_counts_blocks_inodes_and_copies() {
        const OBJ: &str = "sysroot/ostree/repo/objects/ab/cdef.file";
        let dirent = |name: &str| name.len() as u64 + DIRENT_OVERHEAD;
        let cases: Vec<(&str, Vec<(&str, char, &str)>, u64)> = vec![
            // A small file takes a whole block and an inode: 4x its tar size.
            (
                "one tiny file",
                vec![("usr/a", 'f', "100")],
                dirent("a") + 4096 + 512,
            ),
            (
                "block rounding",
                vec![("usr/big", 'f', "4097")],
                dirent("big") + 8192 + 512,
            ),
            // A plain layer's directory: itself plus its dirtree and dirmeta objects.
            (
                "plain directory",
                vec![("usr/", 'd', "")],
                dirent("usr") + 3 * 4608,
            ),
            // /etc and /var are copied by the deploy: twice.
            (
                "etc file",
                vec![("etc/x", 'f', "10")],
                dirent("x") + 2 * 4608,
            ),
            // ostree-native: the object once, its checkout link as a dirent, its
            // directory once (its metadata objects are files of the layer).
            (
                "ostree object and checkout link",
                vec![
                    (OBJ, 'f', "5000"),
                    ("usr/bin/sh", 'h', OBJ),
                    ("usr/", 'd', ""),
                ],
                dirent("cdef.file") + 8192 + 512 + dirent("sh") + dirent("usr") + 4608,
            ),
            // ...unless the link is in usr/etc: the deployment's /etc holds a copy.
            (
                "ostree object linked from usr/etc",
                vec![(OBJ, 'f', "5000"), ("usr/etc/passwd", 'h', OBJ)],
                dirent("cdef.file") + 2 * (8192 + 512) + dirent("passwd"),
            ),
            (
                "short symlink",
                vec![("usr/l", 'l', "target")],
                dirent("l") + 512,
            ),
        ];
        for (name, entries, want) in cases {
            let tar = tar_of(&entries);
            let fp = tar_footprint(Cursor::new(&tar)).unwrap();
            assert_eq!(fp.allocated, want, "{name}");
            assert_eq!(fp.tar_bytes, tar.len() as u64, "{name}");
        }
    }

    #[test]
    fn layers_are_opened_by_their_magic() {
        let tar = tar_of(&[("usr/a", 'f', "3000"), ("usr/b", 'f', "10")]);
        let want = tar_footprint(Cursor::new(&tar)).unwrap();
        assert_eq!(want.regular_files, 2);
        for blob in [
            gzip(&tar),
            zstd::bulk::compress(&tar, 3).unwrap(),
            tar.clone(),
        ] {
            let got = tar_footprint(crate::io::decompressed(Cursor::new(blob)).unwrap()).unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_policy_over_unlabelled_objects_counts_them_twice() {
        const OBJ: &str = "sysroot/ostree/repo/objects/ab/cdef.file";
        const XATTRS: &str = "sysroot/ostree/repo/objects/e3/b0c4.file-xattrs";
        const POLICY: &str = "usr/etc/selinux/default/policy/policy.33";
        // (name, layers, policy seen, objects labelled, relabelled bytes added)
        let cases: Vec<(&str, Vec<Vec<(&str, char, &str)>>, bool, bool, bool)> = vec![
            (
                "no policy",
                vec![vec![(OBJ, 'f', "5000")]],
                false,
                false,
                false,
            ),
            (
                "policy in a derived layer over an unlabelled base",
                vec![
                    vec![(OBJ, 'f', "5000"), (XATTRS, 'f', "0")],
                    vec![("etc/selinux/default/policy/policy.33", 'f', "100")],
                ],
                true,
                false,
                true,
            ),
            (
                "policy in the base, objects labelled in .file-xattrs",
                vec![vec![
                    (OBJ, 'f', "5000"),
                    (
                        XATTRS,
                        'c',
                        "\0security.selinux\0system_u:object_r:bin_t:s0",
                    ),
                    (POLICY, 'h', OBJ),
                ]],
                true,
                true,
                false,
            ),
            (
                "not a policy: a module store file",
                vec![vec![
                    (OBJ, 'f', "5000"),
                    ("etc/selinux/default/modules/active/policy.kern", 'f', "10"),
                ]],
                false,
                false,
                false,
            ),
        ];
        for (name, layers, policy, labelled, doubled) in cases {
            let mut fp = Footprint::default();
            for l in &layers {
                fp += tar_footprint(Cursor::new(tar_of(l))).unwrap();
            }
            assert_eq!(fp.selinux_policy, policy, "{name}");
            assert_eq!(fp.labelled_objects, labelled, "{name}");
            assert!(fp.object_bytes >= 8192 + 512, "{name}");
            let want = fp.allocated + if doubled { fp.object_bytes } else { 0 };
            assert_eq!(fp.deployed_bytes(), want, "{name}");
        }
    }

    #[test]
    fn selinux_policy_paths() {
        for (path, want) in [
            ("etc/selinux/targeted/policy/policy.33", true),
            ("usr/etc/selinux/default/policy/policy.31", true),
            ("etc/selinux/targeted/policy/policy.", false),
            ("etc/selinux/targeted/policy/policy.33.bak", false),
            ("etc/selinux/config", false),
            ("usr/share/selinux/targeted/policy/policy.33", false),
            ("etc/selinux//policy/policy.33", false),
        ] {
            assert_eq!(is_selinux_policy(path), want, "{path}");
        }
    }

    #[test]
    fn root_content_is_the_larger_rule() {
        let many_small = Footprint {
            allocated: 4 << 30,
            tar_bytes: 1 << 30,
            ..Default::default()
        };
        assert_eq!(root_content(&many_small), 4 << 30);
        let few_large = Footprint {
            allocated: 1 << 30,
            tar_bytes: 1 << 30,
            ..Default::default()
        };
        assert_eq!(root_content(&few_large), (1 << 30) + (1 << 27) + (32 << 20));
    }
}
