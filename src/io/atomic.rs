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

impl AtomicFile {
    /// Create the temporary file. `mode` applies from creation on, so a file meant to
    /// hold secrets is never readable by others, not even briefly.
    pub fn create(dest: impl AsRef<Path>, mode: u32) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(Permissions::from_mode(mode))
            .tempfile_in(&dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        // The umask may have narrowed the mode; set it exactly.
        fs::set_permissions(tmp.path(), Permissions::from_mode(mode))
            .with_context(|| format!("setting mode on {}", tmp.path().display()))?;
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

/// Write `contents` to `dest` atomically with the given mode (0o600 for secrets).
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
