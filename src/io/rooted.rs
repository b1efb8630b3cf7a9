//! Reading an image's files from its deployed tree without ever leaving it.
//!
//! An image is hostile input: `grub-static-pre.cfg -> /etc/shadow` or
//! `configs.d/x.cfg -> ../../../../../../etc/shadow`, followed by plain `std::fs` calls on
//! `/proc/<helper>/root/…`, resolves against the *build host's* root and puts the host's
//! file into the disk. Every lookup here goes through `openat2(RESOLVE_IN_ROOT)` on a
//! descriptor of the image root, so absolute symlinks and `..` resolve inside the image as
//! they would on the booted node; magic links (`/proc/self/…`) are refused, and only
//! regular files are ever read (a device node in the image is never opened for reading).

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{Mode, OFlags, ResolveFlags};

/// What a path is, after resolving it inside the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    /// Device, FIFO, socket: never read.
    Other,
}

/// A directory tree all of whose lookups stay inside it.
#[derive(Debug)]
pub struct RootedDir {
    fd: OwnedFd,
    /// For messages only.
    root: PathBuf,
}

fn resolve() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// `rel` as openat2 takes it: relative to the root (a leading `/` means the same thing
/// under RESOLVE_IN_ROOT, but "." keeps the empty path valid).
fn rel_arg(rel: &Path) -> &Path {
    let s = rel.as_os_str().as_bytes();
    let trimmed = s
        .iter()
        .position(|&b| b != b'/')
        .map_or(&[][..], |i| &s[i..]);
    if trimmed.is_empty() {
        Path::new(".")
    } else {
        Path::new(OsStr::from_bytes(trimmed))
    }
}

impl RootedDir {
    pub fn open(root: &Path) -> Result<RootedDir> {
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening image root {}", root.display()))?;
        Ok(RootedDir {
            fd,
            root: root.to_path_buf(),
        })
    }

    /// The host path of `rel` (for messages and for tools that only take paths, after
    /// the content was copied out through [`Self::copy_file`]).
    pub fn display(&self, rel: &Path) -> String {
        self.root.join(rel_arg(rel)).display().to_string()
    }

    fn open_at(&self, rel: &Path, flags: OFlags) -> std::io::Result<OwnedFd> {
        Ok(rustix::fs::openat2(
            &self.fd,
            rel_arg(rel),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve(),
        )?)
    }

    /// The kind of `rel` (symlinks followed inside the root), `None` when absent.
    pub fn kind(&self, rel: impl AsRef<Path>) -> Option<Kind> {
        let fd = self.open_at(rel.as_ref(), OFlags::PATH).ok()?;
        let st = rustix::fs::fstat(&fd).ok()?;
        Some(match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::RegularFile => Kind::File,
            rustix::fs::FileType::Directory => Kind::Dir,
            _ => Kind::Other,
        })
    }

    pub fn is_file(&self, rel: impl AsRef<Path>) -> bool {
        self.kind(rel) == Some(Kind::File)
    }

    pub fn is_dir(&self, rel: impl AsRef<Path>) -> bool {
        self.kind(rel) == Some(Kind::Dir)
    }

    /// Open a regular file for reading; anything else is refused by name.
    pub fn open_file(&self, rel: impl AsRef<Path>) -> Result<File> {
        let rel = rel.as_ref();
        match self.kind(rel) {
            Some(Kind::File) => {}
            Some(k) => bail!("{}: not a regular file ({k:?})", self.display(rel)),
            None => bail!("{}: not found in the image", self.display(rel)),
        }
        let fd = self
            .open_at(rel, OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK)
            .with_context(|| format!("opening {}", self.display(rel)))?;
        let f = File::from(fd);
        // Checked again on the open descriptor: the kind test above was on another open.
        anyhow::ensure!(
            f.metadata()?.is_file(),
            "{}: not a regular file",
            self.display(rel)
        );
        Ok(f)
    }

    pub fn read(&self, rel: impl AsRef<Path>) -> Result<Vec<u8>> {
        let rel = rel.as_ref();
        let mut f = self.open_file(rel)?;
        let len = f.metadata()?.len();
        let mut buf = Vec::with_capacity(len as usize);
        // Bounded by the size it had when opened.
        (&mut f)
            .take(len)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {}", self.display(rel)))?;
        Ok(buf)
    }

    pub fn read_to_string(&self, rel: impl AsRef<Path>) -> Result<String> {
        let rel = rel.as_ref();
        String::from_utf8(self.read(rel)?)
            .with_context(|| format!("{}: not UTF-8", self.display(rel)))
    }

    /// [`Self::read`], `None` when the path does not exist.
    pub fn read_opt(&self, rel: impl AsRef<Path>) -> Result<Option<Vec<u8>>> {
        let rel = rel.as_ref();
        if self.kind(rel).is_none() {
            return Ok(None);
        }
        self.read(rel).map(Some)
    }

    /// Names in directory `rel` with their kinds (symlinks resolved inside the root),
    /// sorted by name.
    pub fn list(&self, rel: impl AsRef<Path>) -> Result<Vec<(String, Kind)>> {
        let rel = rel.as_ref();
        let fd = self
            .open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY)
            .with_context(|| format!("opening directory {}", self.display(rel)))?;
        let dir = rustix::fs::Dir::read_from(&fd)
            .with_context(|| format!("reading directory {}", self.display(rel)))?;
        let mut out = Vec::new();
        for e in dir {
            let e = e.with_context(|| format!("reading directory {}", self.display(rel)))?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = String::from_utf8_lossy(name).into_owned();
            if let Some(k) = self.kind(rel.join(&name)) {
                out.push((name, k));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every regular file under directory `rel`, as paths relative to `rel`, sorted.
    pub fn walk_files(&self, rel: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        self.walk_into(rel.as_ref(), Path::new(""), 0, &mut out)?;
        out.sort();
        Ok(out)
    }

    fn walk_into(&self, base: &Path, sub: &Path, depth: u32, out: &mut Vec<PathBuf>) -> Result<()> {
        // A symlink to an ancestor makes the tree infinite.
        anyhow::ensure!(
            depth < 32,
            "{}: directories nested too deep (a symlink loop?)",
            self.display(&base.join(sub))
        );
        for (name, kind) in self.list(base.join(sub))? {
            let r = sub.join(&name);
            match kind {
                Kind::Dir => self.walk_into(base, &r, depth + 1, out)?,
                Kind::File => out.push(r),
                Kind::Other => {}
            }
        }
        Ok(())
    }

    /// Copy the regular file `rel` to the host path `dest` (created, mode 0644).
    pub fn copy_file(&self, rel: impl AsRef<Path>, dest: &Path) -> Result<()> {
        let rel = rel.as_ref();
        let mut src = self.open_file(rel)?;
        let len = src.metadata()?.len();
        let mut out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
        std::io::copy(&mut (&mut src).take(len), &mut out)
            .with_context(|| format!("copying {} to {}", self.display(rel), dest.display()))?;
        Ok(())
    }

    /// Copy the regular files directly in directory `rel` to host directory `dest`.
    pub fn copy_dir_files(&self, rel: impl AsRef<Path>, dest: &Path) -> Result<()> {
        let rel = rel.as_ref();
        std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
        for (name, kind) in self.list(rel)? {
            if kind == Kind::File {
                self.copy_file(rel.join(&name), &dest.join(&name))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("host-secret");
        std::fs::write(&outside, "HOST").unwrap();
        let root = t.path().join("img");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib/cfg")).unwrap();
        std::fs::write(root.join("etc/shadow"), "IMAGE").unwrap();
        std::fs::write(root.join("host-secret"), "IMAGE-TOO").unwrap();
        // Absolute: the image's own /etc/shadow, never the host's.
        symlink("/etc/shadow", root.join("usr/lib/cfg/abs")).unwrap();
        // Escape by `..`: clamped at the image root.
        symlink(
            "../../../../../host-secret",
            root.join("usr/lib/cfg/dotdot"),
        )
        .unwrap();
        symlink(&outside, root.join("usr/lib/cfg/abs-host-path")).unwrap();
        symlink("/proc/self/root/etc/passwd", root.join("usr/lib/cfg/magic")).unwrap();
        symlink("/dev/null", root.join("usr/lib/cfg/dev")).unwrap();
        symlink("/nowhere", root.join("usr/lib/cfg/dangling")).unwrap();
        let r = RootedDir::open(&root).unwrap();
        let cases: &[(&str, Option<&str>)] = &[
            ("usr/lib/cfg/abs", Some("IMAGE")),
            ("/usr/lib/cfg/abs", Some("IMAGE")),
            ("usr/lib/cfg/dotdot", Some("IMAGE-TOO")),
            ("../../host-secret", Some("IMAGE-TOO")),
            // The host path does not exist inside the image.
            ("usr/lib/cfg/abs-host-path", None),
            ("usr/lib/cfg/magic", None),
            ("usr/lib/cfg/dev", None),
            ("usr/lib/cfg/dangling", None),
        ];
        for (rel, want) in cases {
            let got = r.read_to_string(rel).ok();
            assert_eq!(got.as_deref(), *want, "{rel}");
        }
        assert!(r.is_dir("usr/lib"));
        assert!(!r.is_file("usr/lib/cfg/dangling"));
        let listed = r.list("usr/lib/cfg").unwrap();
        assert_eq!(
            listed,
            [
                ("abs".to_string(), Kind::File),
                ("dotdot".to_string(), Kind::File)
            ]
        );
        assert_eq!(
            r.walk_files("usr").unwrap(),
            [
                PathBuf::from("lib/cfg/abs"),
                PathBuf::from("lib/cfg/dotdot")
            ]
        );
        let out = t.path().join("copy");
        r.copy_dir_files("usr/lib/cfg", &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("abs")).unwrap(), "IMAGE");
        assert!(!out.join("dev").exists());
    }

    #[test]
    fn device_nodes_are_not_read() {
        let r = RootedDir::open(Path::new("/")).unwrap();
        let e = r.read("dev/zero").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn symlink_loops_end() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a")).unwrap();
        symlink("/a", t.path().join("a/loop")).unwrap();
        let r = RootedDir::open(t.path()).unwrap();
        assert!(r.walk_files("a").is_err());
    }
}
