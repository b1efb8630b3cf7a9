use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// An output file written beside its destination under a temporary name and renamed
/// into place by [`AtomicFile::commit`]. Dropped without commit, the temporary file is
/// removed, so an error or a signal never leaves a half-written destination.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: Option<tempfile::NamedTempFile>,
}

/// The mode of outputs that embed secrets (credentials, pull secrets): exactly this,
/// whatever the umask.
pub const SECRET_MODE: u32 = 0o600;
/// The mode of ordinary outputs, narrowed by the umask as any program's output is.
pub const ORDINARY_MODE: u32 = 0o644;

impl AtomicFile {
    /// Create the temporary file. `mode` applies from creation on, so a file meant to
    /// hold secrets is never readable by others, not even briefly. The umask narrows
    /// `mode` as it does for any new file; a mode with no group or other bits
    /// ([`SECRET_MODE`]) is then set exactly.
    ///
    /// A `dest` that is a symlink is written through (its target is replaced, the link
    /// stays); a dangling one is refused.
    pub fn create(dest: impl AsRef<Path>, mode: u32) -> Result<Self> {
        let dest = resolve_link(dest.as_ref())?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Named after this process, so that a later run removes it if a SIGKILL leaves
        // it behind (crate::cancel); the sweep looks only at this destination's names.
        let base = format!(".{name}.lbtmp.");
        crate::cancel::sweep_stale(&dir, &base);
        let tmp = tempfile::Builder::new()
            .prefix(&crate::cancel::temp_prefix(&base))
            .suffix(".tmp")
            .permissions(Permissions::from_mode(mode))
            .tempfile_in(&dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        if mode & 0o077 == 0 {
            fs::set_permissions(tmp.path(), Permissions::from_mode(mode))
                .with_context(|| format!("setting mode on {}", tmp.path().display()))?;
        }
        Ok(AtomicFile {
            dest,
            tmp: Some(tmp),
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.tmp.as_mut().expect("not committed").as_file_mut()
    }

    pub fn temp_path(&self) -> &Path {
        self.tmp.as_ref().expect("not committed").path()
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Flush to disk and rename over the destination.
    pub fn commit(mut self) -> Result<()> {
        let tmp = self.tmp.take().expect("not committed");
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("syncing {}", tmp.path().display()))?;
        Self::persist(tmp, &self.dest)
    }

    /// Rename over the destination without waiting for the data to reach the disk: for
    /// GiB-sized artifacts that can be rebuilt (ISOs, disk images), where an fsync would
    /// double the time of the whole command. An interrupted run still never leaves a
    /// half-written destination; only a power loss right after the rename could (as with
    /// coreos-installer's and cp's outputs). Config files and secrets use [`Self::commit`].
    pub fn commit_unsynced(mut self) -> Result<()> {
        let tmp = self.tmp.take().expect("not committed");
        Self::persist(tmp, &self.dest)
    }

    fn persist(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<()> {
        tmp.persist(dest)
            .map_err(|e| e.error)
            .with_context(|| format!("renaming into {}", dest.display()))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

/// `dest`, or for a symlink the file it points to (so the rename replaces the target,
/// not the link).
fn resolve_link(dest: &Path) -> Result<PathBuf> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(dest).with_context(|| {
            format!(
                "{} is a symlink to a missing file; name the output file itself",
                dest.display()
            )
        }),
        _ => Ok(dest.to_path_buf()),
    }
}

/// Refuse to write `output` when it exists and `force` is not given, or when it is one of
/// `inputs` (the same file, through any name), even with `force`: writing it would
/// destroy what is being read.
pub fn check_output(output: &Path, inputs: &[&Path], force: bool) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(out) = fs::metadata(output) else {
        return Ok(());
    };
    for input in inputs {
        if let Ok(m) = fs::metadata(input) {
            if (m.dev(), m.ino()) == (out.dev(), out.ino()) {
                anyhow::bail!(
                    "the output {} is the input {}: name a different output file",
                    output.display(),
                    input.display()
                );
            }
        }
    }
    if out.is_dir() {
        anyhow::bail!(
            "the output {} is a directory; name a file",
            output.display()
        );
    }
    if !force {
        anyhow::bail!(
            "the output {} already exists; pass --force to replace it",
            output.display()
        );
    }
    Ok(())
}

/// Write `contents` to `dest` atomically with the given mode ([`SECRET_MODE`] for secrets).
pub fn write_atomic(dest: impl AsRef<Path>, contents: &[u8], mode: u32) -> Result<()> {
    let mut f = AtomicFile::create(dest.as_ref(), mode)?;
    f.write_all(contents)
        .with_context(|| format!("writing {}", f.temp_path().display()))?;
    f.commit()
}

/// Open an existing file for in-place modification (used where only embed areas change).
pub fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {} for writing", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        {
            let mut f = AtomicFile::create(&dest, 0o644).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert!(!dest.exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp file left behind"
        );
    }

    #[test]
    fn commit_replaces_destination_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("secret.json");
        fs::write(&dest, "old").unwrap();
        write_atomic(&dest, b"new", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "new");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    /// Issue #15 item 8: `-o LINK` replaced the link with a file.
    #[test]
    fn a_symlinked_destination_is_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.iso");
        fs::write(&target, "old").unwrap();
        let link = dir.path().join("link.iso");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new", ORDINARY_MODE).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        let err = format!(
            "{:#}",
            write_atomic(&dangling, b"x", ORDINARY_MODE).unwrap_err()
        );
        assert!(err.contains("symlink to a missing file"), "{err}");
    }

    #[test]
    fn outputs_that_exist_or_are_inputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        fs::write(&a, "a").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let new = dir.path().join("new");
        check_output(&new, &[&a], false).unwrap();
        check_output(&a, &[], true).unwrap();
        let cases: &[(&Path, &[&Path], bool, &str)] = &[
            (&a, &[&new], false, "already exists; pass --force"),
            (&a, &[&new, &a], true, "is the input"),
            (&link, &[&a], true, "is the input"),
            (&a, &[&link], false, "is the input"),
            (dir.path(), &[&a], true, "is a directory"),
        ];
        for (out, inputs, force, want) in cases {
            let err = check_output(out, inputs, *force).unwrap_err().to_string();
            assert!(err.contains(want), "{out:?}: {err}");
        }
    }

    /// Issue #15 item 7: after a SIGKILL, the next write of the same output removes the
    /// temporary file the killed run left.
    #[test]
    fn a_killed_runs_temp_file_is_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".out.bin.lbtmp.4194305.abcdef.tmp");
        fs::write(&stale, "partial").unwrap();
        let unrelated = dir.path().join(".out.bin.4194305.bak");
        fs::write(&unrelated, "mine").unwrap();
        write_atomic(dir.path().join("out.bin"), b"x", ORDINARY_MODE).unwrap();
        assert!(!stale.exists());
        assert!(unrelated.exists());
    }

    #[test]
    fn unsynced_commit_replaces_destination_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("disk.raw");
        fs::write(&dest, "old").unwrap();
        let mut f = AtomicFile::create(&dest, 0o644).unwrap();
        f.write_all(b"new image").unwrap();
        f.commit_unsynced().unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "new image");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left behind"
        );
    }
}
