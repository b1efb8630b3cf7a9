//! Boot Loader Specification entries, as ostree writes them into `/boot/loader/entries`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

/// One Boot Loader Specification entry (`/boot/loader/entries/*.conf`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlsEntry {
    pub title: String,
    pub version: String,
    pub linux: String,
    pub initrd: Vec<String>,
    pub options: String,
}

/// Parse a BLS entry (pure).
pub fn parse_bls(text: &str) -> Result<BlsEntry> {
    let mut e = BlsEntry::default();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (k, v) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let v = v.trim().to_string();
        match k {
            "title" => e.title = v,
            "version" => e.version = v,
            "linux" => e.linux = v,
            "initrd" => e.initrd.push(v),
            "options" => e.options = v,
            _ => {}
        }
    }
    ensure!(!e.linux.is_empty(), "BLS entry without a linux line");
    Ok(e)
}

/// Entries sorted as ostree orders them: `ostree-1-*` is the default (newest) deployment.
pub fn read_bls_entries(boot: &Path) -> Result<Vec<BlsEntry>> {
    let dir = boot.join("loader/entries");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            parse_bls(&fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
                .with_context(|| p.display().to_string())
        })
        .collect()
}
