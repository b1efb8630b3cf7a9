//! Objects written into the bare repo as libostree writes them, fd-relative beneath
//! `objects/`; object-set commits and refs through libostree.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, bail, ensure, Context, Result};
use sha2::{Digest as _, Sha256};

use rustix::fs;

use super::format::{file_header, symlink_checksum};
use super::pipeline::{Body, Chunk, Job};

/// The repo's `objects/` directory, and which `xx` subdirectories exist.
pub(super) struct Objects {
    path: PathBuf,
    fd: OwnedFd,
    made: Vec<AtomicBool>,
}

/// A failed syscall as an error naming what it was doing.
pub(super) fn sys<T>(r: rustix::io::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    r.map_err(io::Error::from).with_context(what)
}

impl Objects {
    pub(super) fn open(repo: &Path) -> Result<Objects> {
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

    pub(super) fn ensure_dir(&self, checksum: &str) -> Result<()> {
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

    pub(super) fn rel(checksum: &str, ext: &str) -> String {
        format!("{}/{}.{ext}", &checksum[..2], &checksum[2..])
    }

    pub(super) fn tmp_rel(checksum: &str, ext: &str, worker: usize) -> String {
        format!("{}/.tmp-{worker}-{}.{ext}", &checksum[..2], &checksum[2..])
    }

    pub(super) fn create(&self, rel: &str, mode: u32) -> Result<File> {
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

    pub(super) fn rename(&self, from: &str, to: &str) -> Result<()> {
        sys(fs::renameat(&self.fd, from, &self.fd, to), || {
            format!("renaming {}/{from} to {to}", self.path.display())
        })
    }

    pub(super) fn unlink(&self, rel: &str) {
        let _ = fs::unlinkat(&self.fd, rel, fs::AtFlags::empty());
    }

    /// Metadata objects: plain 0644 files.
    pub(super) fn write_metadata(
        &self,
        checksum: &str,
        ext: &str,
        data: &[u8],
        worker: usize,
    ) -> Result<()> {
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

    pub(super) fn write_content(&self, job: Job, worker: usize) -> Result<u64> {
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

/// committed with no parent, subject or metadata at time 0, and the layer ref on it. Written
/// with libostree's own calls so the bytes (and so the commit checksum) are the ones
/// ostree-ext writes.
pub(super) fn write_object_set_commit(
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

pub(super) fn set_ref(repo: &Path, ref_name: &str, commit: &str) -> Result<()> {
    use ostree_ext::{gio, ostree};
    let r = ostree::Repo::new_for_path(repo);
    r.open(gio::Cancellable::NONE)
        .with_context(|| format!("opening ostree repo {}", repo.display()))?;
    r.set_ref_immediate(None, ref_name, Some(commit), gio::Cancellable::NONE)
        .with_context(|| format!("setting ref {ref_name} in {}", repo.display()))?;
    Ok(())
}
