//! An openshift-install asset directory and the two states layerboot writes into.
//!
//! Rule: a `--dir` is an installer directory if it holds `install-config.yaml` (before
//! `openshift-install create manifests`) or both `manifests/` and `openshift/` (after it;
//! `create manifests` consumes install-config.yaml). Anything else is refused so that
//! manifests never land where the installer will not look.
//!
//! Manifests can only be added after `create manifests`: the installer regenerates
//! `manifests/` and `openshift/` (discarding added files) whenever install-config.yaml is
//! newer input, so install-config.yaml beside those directories is refused too.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::OutputFile;
use crate::io::AtomicFile;

#[derive(Debug, Clone)]
pub struct InstallDir {
    pub root: PathBuf,
    pub has_install_config: bool,
    pub has_manifests: bool,
}

impl InstallDir {
    pub fn open(dir: &Path) -> Result<InstallDir> {
        let md =
            fs::metadata(dir).with_context(|| format!("installer directory {}", dir.display()))?;
        if !md.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        let has_install_config = dir.join("install-config.yaml").is_file();
        let has_manifests = dir.join("manifests").is_dir() && dir.join("openshift").is_dir();
        if !has_install_config && !has_manifests {
            bail!(
                "{} is not an openshift-install directory: it has neither install-config.yaml nor the manifests/ and \
                 openshift/ directories that `openshift-install create manifests` makes",
                dir.display()
            );
        }
        Ok(InstallDir {
            root: dir.to_path_buf(),
            has_install_config,
            has_manifests,
        })
    }

    pub fn install_config(&self) -> PathBuf {
        self.root.join("install-config.yaml")
    }

    /// Fail unless manifests can be added now.
    pub fn require_manifests(&self) -> Result<()> {
        let d = self.root.display();
        if !self.has_manifests {
            bail!(
                "{d}/openshift does not exist: run `openshift-install create manifests --dir {d}` first, \
                 the manifests go into its openshift/ and manifests/ directories"
            );
        }
        if self.has_install_config {
            bail!(
                "{d} has install-config.yaml beside manifests/ and openshift/: openshift-install would regenerate \
                 them and discard added files; run `openshift-install create manifests --dir {d}` again first"
            );
        }
        Ok(())
    }
}

/// Write every file under `root` all-or-nothing as far as the filesystem allows: all
/// contents go to temporary files first and are renamed into place only once every one
/// was written, so an error leaves none of them behind.
pub fn write_files(root: &Path, files: &[OutputFile]) -> Result<()> {
    let mut pending = Vec::with_capacity(files.len());
    for f in files {
        let dest = root.join(&f.rel_path);
        if let Some(parent) = dest.parent() {
            if !parent.is_dir() {
                bail!("{} does not exist", parent.display());
            }
        }
        let mut af = AtomicFile::create(&dest, f.mode)?;
        std::io::Write::write_all(&mut af, &f.contents)
            .with_context(|| format!("writing {}", af.temp_path().display()))?;
        pending.push(af);
    }
    for af in pending {
        af.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        let d = tempfile::tempdir().unwrap();
        let e = InstallDir::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("not an openshift-install directory"), "{e}");
        fs::write(d.path().join("install-config.yaml"), "x").unwrap();
        let dir = InstallDir::open(d.path()).unwrap();
        assert!(dir
            .require_manifests()
            .unwrap_err()
            .to_string()
            .contains("create manifests"));
        fs::create_dir(d.path().join("manifests")).unwrap();
        fs::create_dir(d.path().join("openshift")).unwrap();
        assert!(InstallDir::open(d.path())
            .unwrap()
            .require_manifests()
            .unwrap_err()
            .to_string()
            .contains("discard"));
        fs::remove_file(d.path().join("install-config.yaml")).unwrap();
        InstallDir::open(d.path())
            .unwrap()
            .require_manifests()
            .unwrap();
    }
}
