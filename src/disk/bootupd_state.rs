//! `/boot/bootupd-state.json` and `/boot/efi`, as `bootupctl backend install
//! --with-static-configs` leaves them on a CoreOS disk, so that bootupd on the node finds
//! the components installed (`bootupctl status`, `update`) instead of offering to adopt
//! them, and finds `/boot/efi` to mount the ESP on rather than mounting it over `/boot`.
//!
//! The state file is bootupd's `SavedState` serialized the way bootupd serializes it
//! (`serde_json::to_vec`: compact, fields in declaration order, `null` for absent
//! options, chrono's RFC 3339 timestamps):
//!
//! - `installed.EFI`: `meta` = the image's `usr/lib/bootupd/updates/EFI.json` as bootupd
//!   reads it, `filetree.children` = every file of the component's source directory keyed
//!   by its path below the ESP's `EFI/` (`BOOT/BOOTX64.EFI`), with `source`, `size` and
//!   `sha512` (`sha512:<hex>`), `adopted-from` null. Only when the disk boots UEFI.
//! - `installed.BIOS`: `meta` = `BIOS.json`, no file tree (the core image is written to
//!   the BIOS boot partition, not to files). Only when the disk boots BIOS.
//! - `static-configs`: present when the image ships `grub2-static/` (layerboot installs
//!   those configs, as `--with-static-configs` does) *and* a bootupd binary: bootupd
//!   records its own version and its binary's modification time there; the image's own
//!   binary is asked for its version (`--version`) when the build host can run it.
//! - `pending`: null.
//!
//! A component without its `<name>.json` in the image is skipped, as bootupd skips a
//! component "without update metadata". Images without a bootupd payload get only
//! `/boot/efi`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::io::RootedDir;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use super::bootloader::bootupd as payload;

/// bootupd's state file, relative to `/boot`.
pub const STATE_FILE: &str = "bootupd-state.json";

/// bootupd's `ContentMetadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Meta {
    pub timestamp: DateTime<Utc>,
    pub version: String,
    #[serde(default)]
    pub versions: Option<serde_json::Value>,
    #[serde(default)]
    pub default_bootloader: Option<serde_json::Value>,
}

/// bootupd's `FileMetadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FileMeta {
    pub source: Option<String>,
    pub size: u64,
    pub sha512: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileTree {
    pub children: BTreeMap<String, FileMeta>,
}

/// bootupd's `InstalledContent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Installed {
    pub meta: Meta,
    pub filetree: Option<FileTree>,
    pub adopted_from: Option<Meta>,
}

/// bootupd's `SavedState`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SavedState {
    pub installed: BTreeMap<String, Installed>,
    pub pending: Option<BTreeMap<String, Meta>>,
    pub static_configs: Option<Meta>,
}

/// What goes into the state, read from the image.
#[derive(Debug, Clone, Default)]
pub struct Components {
    /// EFI's metadata and its files (key below the ESP's `EFI/`, source, size, sha512).
    pub efi: Option<(Meta, Vec<(String, FileMeta)>)>,
    pub bios: Option<Meta>,
    pub static_configs: Option<Meta>,
}

/// The state bootupd would record for `c`. Pure.
pub fn state(c: &Components) -> SavedState {
    let mut installed = BTreeMap::new();
    if let Some((meta, files)) = &c.efi {
        installed.insert(
            "EFI".to_string(),
            Installed {
                meta: meta.clone(),
                filetree: Some(FileTree {
                    children: files.iter().cloned().collect(),
                }),
                adopted_from: None,
            },
        );
    }
    if let Some(meta) = &c.bios {
        installed.insert(
            "BIOS".to_string(),
            Installed {
                meta: meta.clone(),
                filetree: None,
                adopted_from: None,
            },
        );
    }
    SavedState {
        installed,
        pending: None,
        static_configs: c.static_configs.clone(),
    }
}

/// Where a disk's bootloader state comes from.
pub struct Inputs<'a> {
    /// The deployed image (host path).
    pub deployment: &'a Path,
    /// The staged `/boot`.
    pub boot_dir: &'a Path,
    pub uefi: bool,
    pub bios: bool,
    /// The state the image's own `bootupctl backend install` wrote, when it ran
    /// ([`super::bootupd_install`]): used instead of layerboot's, completed with the BIOS
    /// component it was not asked to install.
    pub image_state: Option<&'a Path>,
}

/// Create `/boot/efi` and, for images with a bootupd payload, `/boot/bootupd-state.json`.
/// Returns whether the state file was written.
pub fn write(i: &Inputs) -> Result<bool> {
    let efi_dir = i.boot_dir.join("efi");
    std::fs::create_dir_all(&efi_dir).with_context(|| format!("creating {}", efi_dir.display()))?;
    let image = RootedDir::open(i.deployment)?;
    if !payload::present(&image) {
        return Ok(false);
    }
    let path = i.boot_dir.join(STATE_FILE);
    if let Some(theirs) = i.image_state {
        let raw = std::fs::read(theirs).with_context(|| format!("reading {}", theirs.display()))?;
        let bios = if i.bios {
            read_meta(&image, "BIOS")?
        } else {
            None
        };
        let bytes = match with_bios(&raw, bios) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("{e:#}: the image's bootupctl state is kept as it wrote it, without the BIOS component (bootupd on the node can adopt it)");
                raw
            }
        };
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        return Ok(true);
    }
    let c = read_components(i.deployment, i.uefi, i.bios, &image)?;
    if c.efi.is_none() && c.bios.is_none() {
        log::warn!("the image's bootupd payload has no EFI.json/BIOS.json for this disk's firmware: no {STATE_FILE} written");
        return Ok(false);
    }
    std::fs::write(&path, serde_json::to_vec(&state(&c))?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

/// The state layerboot's own installer records for the image deployed at `deployment`
/// on a disk booting `uefi`/`bios` (what [`write`] writes when the image's bootupctl does
/// not run), serialized as bootupd serializes it.
pub fn own_state(deployment: &Path, uefi: bool, bios: bool) -> Result<Vec<u8>> {
    let image = RootedDir::open(deployment)?;
    Ok(serde_json::to_vec(&state(&read_components(
        deployment, uefi, bios, &image,
    )?))?)
}

/// `raw` (a state bootupd wrote) with the BIOS component recorded as bootupd's BIOS
/// install records it (`bios`: the image's `BIOS.json`; no file tree), in bootupd's own
/// serialization. Pure. A state of a newer schema than [`SavedState`] is an error, never
/// rewritten with fields lost.
pub fn with_bios(raw: &[u8], bios: Option<Meta>) -> Result<Vec<u8>> {
    const OTHER_SCHEMA: &str =
        "the image's bootupctl wrote a state of another schema than bootupd 0.3's";
    let mut s: SavedState = serde_json::from_slice(raw).context(OTHER_SCHEMA)?;
    // Unknown fields nested deeper would be dropped silently by the round trip.
    let as_read: serde_json::Value = serde_json::from_slice(raw)?;
    if serde_json::to_value(&s)? != as_read {
        bail!("{OTHER_SCHEMA}: it has fields layerboot does not know");
    }
    if let Some(meta) = bios {
        s.installed.entry("BIOS".into()).or_insert(Installed {
            meta,
            filetree: None,
            adopted_from: None,
        });
    }
    Ok(serde_json::to_vec(&s)?)
}

fn read_meta(image: &RootedDir, component: &str) -> Result<Option<Meta>> {
    let p = Path::new(payload::UPDATES_DIR).join(format!("{component}.json"));
    match image.read_opt(&p)? {
        Some(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
            format!("reading the image's {}", image.display(&p))
        })?)),
        None => Ok(None),
    }
}

fn read_components(d: &Path, uefi: bool, bios: bool, image: &RootedDir) -> Result<Components> {
    let mut c = Components::default();
    if uefi {
        if let Some(meta) = read_meta(image, "EFI")? {
            let scanned = payload::scan(image)?;
            let updates = Path::new(payload::UPDATES_DIR).join("EFI");
            let efi_lib = Path::new(payload::EFI_LIB_DIR);
            let mut files = Vec::new();
            for (rel, path) in &scanned.efi_files {
                let key = rel.strip_prefix("EFI/").unwrap_or(rel).to_string();
                // bootupd names each file's source below the directory it walked.
                let source = path
                    .strip_prefix(&updates)
                    .or_else(|_| path.strip_prefix(efi_lib))
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| key.clone());
                files.push((key, file_meta(image, path, source)?));
            }
            c.efi = Some((meta, files));
        }
    }
    if bios {
        c.bios = read_meta(image, "BIOS")?;
    }
    if image.is_dir(payload::STATIC_DIR) {
        c.static_configs = image_bootupd_meta(image, d);
    }
    Ok(c)
}

fn file_meta(image: &RootedDir, path: &Path, source: String) -> Result<FileMeta> {
    let mut f = image.open_file(path)?;
    let mut h = Sha512::new();
    let size = std::io::copy(&mut f, &mut h)
        .with_context(|| format!("reading {}", image.display(path)))?;
    Ok(FileMeta {
        source: Some(source),
        size,
        sha512: format!("sha512:{}", hex::encode(h.finalize())),
    })
}

/// bootupd's binaries in an image (`bootupctl` is a link to the multi-call `bootupd`).
const BOOTUPD_BINARIES: &[&str] = &[
    "usr/libexec/bootupd",
    "usr/bin/bootupd",
    "usr/bin/bootupctl",
];

/// The static-configs entry bootupd records: its version and its binary's mtime. The
/// binary is found and its header read inside the image ([`RootedDir`]).
fn image_bootupd_meta(image: &RootedDir, deployment: &Path) -> Option<Meta> {
    let rel = *BOOTUPD_BINARIES.iter().find(|rel| image.is_file(rel))?;
    let inside = Path::new("/").join(rel);
    if super::image_exec::find_tool(image, &[rel]).is_none() {
        log::warn!("the image's {} is for another architecture: static-configs not recorded in {STATE_FILE}", inside.display());
        return None;
    }
    let version = match ask_version(Command::new("chroot").arg(deployment).arg(&inside)) {
        Ok(v) => v,
        Err(e) => {
            log::warn!("running the image's {} --version: {e:#}; static-configs not recorded in {STATE_FILE}", inside.display());
            return None;
        }
    };
    let mtime = image
        .open_file(rel)
        .ok()?
        .metadata()
        .and_then(|m| m.modified())
        .ok()?;
    Some(Meta {
        timestamp: mtime.into(),
        version,
        versions: None,
        default_bootloader: None,
    })
}

/// The version a bootupd binary (`c`, run in its image) prints for `--version`.
pub(crate) fn ask_version(c: &mut Command) -> Result<String> {
    let out = crate::cmd::run_stdout(c.arg("--version"))?;
    parse_version(&out).with_context(|| format!("no version in bootupd's {out:?}"))
}

/// `bootupd 0.3.2` → `0.3.2`.
pub(crate) fn parse_version(out: &str) -> Option<String> {
    out.lines()
        .next()?
        .split_whitespace()
        .last()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ts: &str, v: &str) -> Meta {
        Meta {
            timestamp: ts.parse().unwrap(),
            version: v.into(),
            versions: None,
            default_bootloader: None,
        }
    }

    #[test]
    fn state_is_serialized_as_bootupd_writes_it() {
        let c = Components {
            efi: Some((
                meta("2024-05-01T10:00:00Z", "shim-15.8,grub2-2.12"),
                vec![(
                    "BOOT/BOOTX64.EFI".into(),
                    FileMeta {
                        source: Some("BOOT/BOOTX64.EFI".into()),
                        size: 3,
                        sha512: "sha512:ab".into(),
                    },
                )],
            )),
            bios: Some(meta("2024-05-01T10:00:00.5Z", "grub2-2.12")),
            static_configs: Some(meta("1970-01-01T00:00:00Z", "0.3.2")),
        };
        let json = String::from_utf8(serde_json::to_vec(&state(&c)).unwrap()).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"installed":{"BIOS":{"meta":{"timestamp":"2024-05-01T10:00:00.500Z","version":"grub2-2.12","versions":null,"default-bootloader":null},"filetree":null,"adopted-from":null},"#,
                r#""EFI":{"meta":{"timestamp":"2024-05-01T10:00:00Z","version":"shim-15.8,grub2-2.12","versions":null,"default-bootloader":null},"#,
                r#""filetree":{"children":{"BOOT/BOOTX64.EFI":{"source":"BOOT/BOOTX64.EFI","size":3,"sha512":"sha512:ab"}}},"adopted-from":null}},"#,
                r#""pending":null,"static-configs":{"timestamp":"1970-01-01T00:00:00Z","version":"0.3.2","versions":null,"default-bootloader":null}}"#
            )
        );
        let back: SavedState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state(&c));
        let none = state(&Components::default());
        assert_eq!(
            serde_json::to_string(&none).unwrap(),
            r#"{"installed":{},"pending":null,"static-configs":null}"#
        );
    }

    #[test]
    fn metadata_as_images_ship_it() {
        // EFI.json as CoreOS's generate-update-metadata writes it, with package versions.
        let m: Meta = serde_json::from_str(r#"{"timestamp":"2024-03-20T09:00:00Z","version":"grub2-efi-x64-1:2.06-121.el9,shim-x64-15.8-1.el9","versions":[{"name":"grub2","rpm-evr":"1:2.06-121.el9"}]}"#).unwrap();
        assert_eq!(
            m.version,
            "grub2-efi-x64-1:2.06-121.el9,shim-x64-15.8-1.el9"
        );
        assert!(m.versions.is_some());
        assert!(serde_json::from_str::<Meta>(r#"{"version":"x"}"#).is_err());
    }

    #[test]
    fn the_image_s_state_gains_the_bios_component_and_nothing_else() {
        let efi_only = concat!(
            r#"{"installed":{"EFI":{"meta":{"timestamp":"2024-05-01T10:00:00Z","version":"grub2-2.12,shim-15.8","versions":[{"name":"grub2","rpm_evr":"2.12"}],"default-bootloader":null},"#,
            r#""filetree":{"children":{"BOOT/BOOTX64.EFI":{"source":"BOOT/BOOTX64.EFI","size":3,"sha512":"sha512:ab"}}},"adopted-from":null}},"#,
            r#""pending":null,"static-configs":{"timestamp":"1970-01-01T00:00:00Z","version":"0.3.2","versions":null,"default-bootloader":null}}"#
        );
        let bios = meta("2024-05-01T10:00:00Z", "grub2-2.12");
        let with =
            String::from_utf8(with_bios(efi_only.as_bytes(), Some(bios.clone())).unwrap()).unwrap();
        assert_eq!(
            with,
            efi_only.replace(
                r#"{"installed":{"#,
                r#"{"installed":{"BIOS":{"meta":{"timestamp":"2024-05-01T10:00:00Z","version":"grub2-2.12","versions":null,"default-bootloader":null},"filetree":null,"adopted-from":null},"#
            )
        );
        // Unchanged when the disk has no BIOS boot, or bootupctl recorded BIOS itself.
        assert_eq!(
            with_bios(efi_only.as_bytes(), None).unwrap(),
            efi_only.as_bytes()
        );
        let other = meta("2030-01-01T00:00:00Z", "other");
        assert_eq!(
            with_bios(with.as_bytes(), Some(other)).unwrap(),
            with.as_bytes()
        );
        // A newer bootupd's state is never rewritten with its fields lost.
        for newer in [
            efi_only.replace(
                r#""pending":null,"#,
                r#""pending":null,"bootloader":"grub","#,
            ),
            efi_only.replace(r#""size":3,"#, r#""size":3,"mode":420,"#),
            "not json".to_string(),
        ] {
            let e = with_bios(newer.as_bytes(), Some(bios.clone())).unwrap_err();
            assert!(format!("{e:#}").contains("another schema"), "{e:#}");
        }
    }

    #[test]
    fn version_line() {
        assert_eq!(parse_version("bootupd 0.3.2\n").as_deref(), Some("0.3.2"));
        assert_eq!(parse_version("").as_deref(), None);
    }

    #[test]
    fn files_are_hashed_with_sha512() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"").unwrap();
        let image = RootedDir::open(t.path()).unwrap();
        let m = file_meta(&image, Path::new("f"), "BOOT/f".into()).unwrap();
        assert_eq!(m.size, 0);
        assert_eq!(m.sha512, "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e");
    }
}
