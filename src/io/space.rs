//! Free space on the filesystem holding a path.

use std::path::Path;

use anyhow::{Context, Result};

/// Bytes this process may still write on the filesystem holding `path`: the blocks kept
/// back for root count for root (layerboot disk runs as root).
pub fn free_bytes(path: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path)
        .with_context(|| format!("reading the free space of {}", path.display()))?;
    let blocks = if rustix::process::geteuid().is_root() {
        st.f_bfree
    } else {
        st.f_bavail
    };
    Ok(blocks.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_and_a_missing_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        let missing = dir.path().join("missing");
        let e = free_bytes(&missing).unwrap_err();
        assert!(
            format!("{e:#}").contains(&missing.display().to_string()),
            "{e:#}"
        );
    }
}
