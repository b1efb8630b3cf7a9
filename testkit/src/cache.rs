//! Test fixtures are slow to make (debootstrap, dracut, ISO mastering) and must not be
//! committed, so each is built once into a cache outside the repo, under a directory
//! named by a hash of its recipe: change the recipe and a fresh fixture is built.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};

/// Cache root: `$LAYERBOOT_TEST_CACHE`, else `/var/cache/layerboot-tests` (we run as
/// root on CI), else `$HOME/.cache/layerboot-tests`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("LAYERBOOT_TEST_CACHE") {
        return PathBuf::from(dir);
    }
    let system = PathBuf::from("/var/cache/layerboot-tests");
    if fs::create_dir_all(&system).is_ok() {
        return system;
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache/layerboot-tests")
}

/// Hex sha256 over the recipe parts (scripts, package lists, versions), each length-prefixed
/// so that moving bytes between parts changes the key.
pub fn recipe_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// Return `<root>/<name>-<hash>`, building it first if absent. `build` gets an empty
/// staging directory; it is renamed into place only when `build` succeeds, so a failed or
/// interrupted build is never mistaken for a fixture. Concurrent callers (parallel tests)
/// serialize on a lock file and the losers reuse the winner's result.
pub fn cached_fixture(
    name: &str,
    recipe: &[&[u8]],
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    cached_fixture_in(&cache_root(), name, recipe, build)
}

/// [`cached_fixture`] under an explicit cache root.
pub fn cached_fixture_in(
    root: &Path,
    name: &str,
    recipe: &[&[u8]],
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let key = format!("{name}-{}", recipe_hash(recipe));
    let dest = root.join(&key);
    let lock_path = root.join(format!(".{key}.lock"));
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if dest.is_dir() {
        return Ok(dest);
    }
    let staging = root.join(format!(".{key}.staging"));
    if staging.exists() {
        remove_tree(&staging)?;
    }
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    match build(&staging) {
        Ok(()) => {
            fs::rename(&staging, &dest).with_context(|| {
                format!("renaming {} into {}", staging.display(), dest.display())
            })?;
            Ok(dest)
        }
        Err(e) => {
            let _ = remove_tree(&staging);
            Err(e.context(format!("building test fixture {key}")))
        }
    }
}

/// Remove a tree, first clearing the immutable bit that ostree sets on deployment dirs.
pub fn remove_tree(path: &Path) -> Result<()> {
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return Ok(());
    }
    let _ = std::process::Command::new("chattr")
        .args(["-R", "-i"])
        .arg(path)
        .status();
    fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_hash_depends_on_boundaries() {
        assert_ne!(recipe_hash(&[b"ab", b"c"]), recipe_hash(&[b"a", b"bc"]));
        assert_eq!(recipe_hash(&[b"x"]), recipe_hash(&[b"x"]));
    }

    #[test]
    fn failed_build_leaves_no_fixture_and_success_is_reused() {
        let root = tempfile::tempdir().unwrap();
        let err =
            cached_fixture_in(root.path(), "t", &[b"r1"], |_| anyhow::bail!("nope")).unwrap_err();
        assert!(format!("{err:#}").contains("nope"));
        assert_eq!(
            fs::read_dir(root.path())
                .unwrap()
                .filter(|e| !e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.'))
                .count(),
            0
        );
        let mut builds = 0;
        for _ in 0..2 {
            let p = cached_fixture_in(root.path(), "t", &[b"r1"], |dir| {
                builds += 1;
                Ok(fs::write(dir.join("f"), "x")?)
            })
            .unwrap();
            assert_eq!(fs::read_to_string(p.join("f")).unwrap(), "x");
        }
        assert_eq!(builds, 1);
    }
}
