//! GRUB 2.14's modules for x86_64-efi and i386-pc, from Debian sid, for fixtures that must
//! have `blscfg` as CoreOS's GRUB does. Debian 12's GRUB (2.06) has no such command;
//! upstream GRUB gained it in 2.14, in `blsuki.mod`.
//!
//! The packages come from a private apt configuration (its own sources list, lists and
//! cache under the fixture's staging directory), so the host's apt state is untouched and
//! apt still checks sid's signed Release against the host's archive keys. sid moves on, so
//! the version is whatever sid has when the fixture is built. It must still provide `blscfg`,
//! and the fixture's build fails otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use layerboot::cmd;

/// Part of the cache key of every fixture that carries these modules.
pub const RECIPE: &[u8] = b"sid-grub v1: grub-efi-amd64-bin grub-pc-bin from sid (private apt config), dpkg-deb -x, usr/lib/grub/{x86_64-efi,i386-pc}, blscfg in command.lst";

const SID_SOURCES: &str = "deb [arch=amd64] http://deb.debian.org/debian sid main\n";
const PACKAGES: &[&str] = &["grub-efi-amd64-bin", "grub-pc-bin"];
pub const PLATFORMS: &[&str] = &["x86_64-efi", "i386-pc"];

/// sid's GRUB, unpacked.
#[derive(Debug)]
pub struct SidGrub {
    /// The packages' version, e.g. `2.14-4`.
    pub version: String,
    /// The unpacked packages' root: `usr/lib/grub/<platform>/` under it.
    pub root: PathBuf,
}

/// Download and unpack sid's GRUB module packages under `work` (a fixture's staging).
pub fn fetch(work: &Path) -> Result<SidGrub> {
    let apt = work.join("apt-sid");
    for d in [
        "lists/partial",
        "cache/archives/partial",
        "parts",
        "download",
    ] {
        std::fs::create_dir_all(apt.join(d))
            .with_context(|| format!("creating {}", apt.join(d).display()))?;
    }
    let sources = apt.join("sources.list");
    std::fs::write(&sources, SID_SOURCES)
        .with_context(|| format!("writing {}", sources.display()))?;
    let options: Vec<String> = [
        format!("Dir::Etc::SourceList={}", sources.display()),
        format!("Dir::Etc::SourceParts={}", apt.join("parts").display()),
        format!("Dir::State::Lists={}", apt.join("lists").display()),
        format!("Dir::Cache={}", apt.join("cache").display()),
        "Acquire::Languages=none".into(),
        // Only the package index: no translations, no AppStream metadata.
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
        "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
        "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
        // The download directory is root's; apt's _apt user could not write there.
        "APT::Sandbox::User=root".into(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect();
    cmd::run(
        Command::new("apt-get")
            .args(&options)
            .args(["update", "-q"]),
    )
    .context("reading Debian sid's package index (apt-get update with a sid-only sources list)")?;
    let dl = apt.join("download");
    cmd::run(
        Command::new("apt-get")
            .args(&options)
            .args(["download", "-q"])
            .args(PACKAGES)
            .current_dir(&dl),
    )
    .context("downloading GRUB's module packages from Debian sid")?;
    let root = work.join("sid-grub");
    let mut version = None;
    for p in PACKAGES {
        let deb = std::fs::read_dir(&dl)
            .with_context(|| format!("reading {}", dl.display()))?
            .flatten()
            .map(|e| e.path())
            .find(|d| {
                d.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{p}_")) && n.ends_with(".deb"))
            })
            .with_context(|| format!("apt-get download {p} produced no .deb"))?;
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        let v = cmd::run_stdout(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Version"))?;
        version = Some(v.trim().to_string());
    }
    let version = version.expect("PACKAGES is not empty");
    for platform in PLATFORMS {
        let commands = root.join(format!("usr/lib/grub/{platform}/command.lst"));
        let text = std::fs::read_to_string(&commands)
            .with_context(|| format!("reading {}", commands.display()))?;
        if layerboot::disk::blscfg_module(&text).is_none() {
            bail!("Debian sid's GRUB {version} has no blscfg for {platform} ({}): the fixture needs GRUB 2.14 or later", commands.display());
        }
    }
    Ok(SidGrub { version, root })
}

/// The module directories' files as (path in the image, host file, mode).
pub fn image_files(grub: &SidGrub) -> Result<Vec<(String, PathBuf, u32)>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    for platform in PLATFORMS {
        let rel = format!("usr/lib/grub/{platform}");
        let dir = grub.root.join(&rel);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let mode = e.metadata()?.permissions().mode() & 0o7777;
            out.push((
                format!("{rel}/{}", e.file_name().to_string_lossy()),
                e.path(),
                mode,
            ));
        }
    }
    Ok(out)
}
