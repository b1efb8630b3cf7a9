//! The Debian kernel as a test fixture: the `linux-image-<abi>-amd64` package that
//! `linux-image-amd64` currently points at, unpacked (vmlinuz + its modules tree) into
//! the fixture cache. Keyed by package name and version, so a kernel update in the
//! archive gives a fresh fixture instead of a stale one.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cache::cached_fixture;
use layerboot::cmd;

/// Bump to force a rebuild when the unpacking below changes.
const RECIPE: &[u8] = b"debian-kernel v1: apt-get download linux-image-<abi>-amd64=<candidate>; dpkg-deb -x; keep boot/vmlinuz-* and lib/modules";

#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r` of the kernel, e.g. `6.1.0-26-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `…/lib/modules/<release>`.
    pub modules_dir: PathBuf,
}

/// (package, version) that `linux-image-amd64` resolves to in the apt lists.
pub fn resolve_package() -> Result<(String, String)> {
    cmd::require("apt-cache", "apt")?;
    let deps = cmd::run_stdout(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let pkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .context("apt-cache depends linux-image-amd64 names no linux-image-<abi>-amd64 package: run 'apt-get update'")?
        .to_string();
    let version = candidate_version(&pkg)?;
    Ok((pkg, version))
}

/// The version apt would install of a Debian package.
pub fn candidate_version(pkg: &str) -> Result<String> {
    cmd::require("apt-cache", "apt")?;
    let policy = cmd::run_stdout(Command::new("apt-cache").args(["policy", pkg]))?;
    let version = policy
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate: "))
        .map(str::trim)
        .find(|v| *v != "(none)")
        .with_context(|| format!("no installable version of {pkg}: run 'apt-get update'"))?
        .to_string();
    Ok(version)
}

/// The `.deb` of `pkg=version`: from apt's archive cache when there, else downloaded into
/// `download_dir`.
pub fn fetch_deb(pkg: &str, version: &str, download_dir: &Path) -> Result<PathBuf> {
    // Debian's epoch colon is written as %3a in archive file names.
    let deb_name = format!("{pkg}_{}_amd64.deb", version.replace(':', "%3a"));
    let archived = Path::new("/var/cache/apt/archives").join(&deb_name);
    if archived.is_file() {
        return Ok(archived);
    }
    std::fs::create_dir_all(download_dir)
        .with_context(|| format!("creating {}", download_dir.display()))?;
    cmd::run(
        Command::new("apt-get")
            .args(["download", "-q", &format!("{pkg}={version}")])
            .current_dir(download_dir),
    )?;
    let deb = download_dir.join(&deb_name);
    if !deb.is_file() {
        bail!("apt-get download did not produce {}", deb.display());
    }
    Ok(deb)
}

/// The cached Debian kernel, downloaded and unpacked on first use.
pub fn debian_kernel() -> Result<Kernel> {
    let (pkg, version) = resolve_package()?;
    let dir = cached_fixture(
        "debian-kernel",
        &[RECIPE, pkg.as_bytes(), version.as_bytes()],
        |staging| unpack(&pkg, &version, staging),
    )?;
    let release = pkg
        .strip_prefix("linux-image-")
        .expect("checked in resolve_package")
        .to_string();
    let k = Kernel {
        vmlinuz: dir.join(format!("boot/vmlinuz-{release}")),
        modules_dir: dir.join(format!("lib/modules/{release}")),
        release,
    };
    if !k.vmlinuz.is_file() || !k.modules_dir.is_dir() {
        bail!(
            "kernel fixture {} lacks {} or {}",
            dir.display(),
            k.vmlinuz.display(),
            k.modules_dir.display()
        );
    }
    Ok(k)
}

fn unpack(pkg: &str, version: &str, staging: &Path) -> Result<()> {
    cmd::require("dpkg-deb", "dpkg")?;
    let deb = fetch_deb(pkg, version, &staging.join("download"))?;
    let root = staging.join("root");
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    for keep in ["boot", "lib"] {
        let (from, to) = (root.join(keep), staging.join(keep));
        std::fs::rename(&from, &to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    }
    super::cache::remove_tree(&root)?;
    let dl = staging.join("download");
    if dl.exists() {
        super::cache::remove_tree(&dl)?;
    }
    Ok(())
}
