//! Boot image definitions: the TOML files in `bootimages/` (shipped inside the binary) and
//! in a user directory that adds or overrides them. Parsing is pure; [`Catalog::load`] is
//! the thin I/O wrapper.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The definitions shipped with layerboot (`bootimages/*.toml`), by name.
pub const SHIPPED: &[(&str, &str)] = &[
    ("aws", include_str!("../../bootimages/aws.toml")),
    ("azure", include_str!("../../bootimages/azure.toml")),
    ("gcp", include_str!("../../bootimages/gcp.toml")),
    ("ibmcloud", include_str!("../../bootimages/ibmcloud.toml")),
    ("kubevirt", include_str!("../../bootimages/kubevirt.toml")),
    ("live", include_str!("../../bootimages/live.toml")),
    ("metal", include_str!("../../bootimages/metal.toml")),
    ("metal4k", include_str!("../../bootimages/metal4k.toml")),
    ("nutanix", include_str!("../../bootimages/nutanix.toml")),
    ("openstack", include_str!("../../bootimages/openstack.toml")),
    ("qemu", include_str!("../../bootimages/qemu.toml")),
    ("vmware", include_str!("../../bootimages/vmware.toml")),
];

/// One boot image kind, as written in its TOML file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Definition {
    pub description: String,
    /// Ignition platform id (`ignition.platform.id=`), also the stream-metadata artifact key.
    /// (Not the boot image's name, which `disk --platform` takes, as coreos-assembler names
    /// its artifacts.)
    #[serde(rename = "platform")]
    pub ignition_platform: String,
    pub format: Format,
    /// The stream-metadata format key before the compression suffix (default: the format,
    /// e.g. `raw`; CoreOS calls the 4Kn metal image `4k.raw`).
    #[serde(default)]
    pub stream_format: Option<String>,
    pub compression: CompressionSetting,
    /// xz preset 0-9 or gzip level 1-9 (default: 6 for both, as xz and gzip do); 1-9 with
    /// `compression = "image"`.
    #[serde(default)]
    pub compression_level: Option<u32>,
    pub sector_size: u32,
    /// Firmware the disk must boot under; `bios` needs a `bios-boot` partition and 512-byte sectors.
    pub firmware: Vec<Firmware>,
    /// Kernel consoles, e.g. `ttyS0,115200n8`; a serial one also puts GRUB on that port.
    #[serde(default)]
    pub console: Vec<String>,
    #[serde(default)]
    pub kernel_arguments: Vec<String>,
    /// Disk GUID; derived from the definition name when absent so builds are reproducible.
    #[serde(default)]
    pub disk_guid: Option<Uuid>,
    /// How the converted disk is wrapped for its platform (default: not at all).
    #[serde(default)]
    pub package: Package,
    /// The disk's virtual size is rounded up to a multiple of this (e.g. `1GiB`: GCE
    /// imports only whole-GiB disks).
    #[serde(default)]
    pub size_multiple: Option<String>,
    /// qcow2 with compressed clusters (`qemu-img convert -c`), as CoreOS builds Nutanix's.
    #[serde(default)]
    pub qcow2_compressed: bool,
    /// OVA descriptor defaults, used when the image's `image.json` says nothing
    /// (`vmware-hw-version`, `vmware-os-type`, `vmware-secure-boot` there win).
    #[serde(default)]
    pub vmware_hw_version: Option<u32>,
    #[serde(default)]
    pub vmware_os_type: Option<String>,
    /// Live only: further boot images (raw, e.g. `metal4k`) whose disks the ISO also
    /// installs offline. Each is built from the same image, uncompressed, for its osmet
    /// file in rootfs.img, as CoreOS's live build takes its metal and metal4k disks.
    #[serde(default)]
    pub osmet_images: Vec<String>,
    #[serde(rename = "partition")]
    pub partitions: Vec<PartitionDef>,
}

/// The wrapping a platform's import takes (coreos-assembler's per-platform builds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Package {
    #[default]
    None,
    /// GCE: a GNU (oldgnu) tar holding exactly `disk.raw`, sparse; gzip-compressed.
    GceTar,
    /// VMware: a ustar OVA, the OVF descriptor first, then the streamOptimized vmdk.
    Ova,
    /// KubeVirt: an OCI archive whose one layer holds the qcow2 under `/disk/`.
    ContainerDisk,
    /// The live ISO and PXE set made from the raw metal disk (`crate::disk::live`).
    Live,
}

/// The artifact's extension before any compression suffix, as CoreOS names its files
/// (`qcow2`, `vhd`, `vmdk`, `ova`, `tar`, `ociarchive`).
pub fn artifact_extension(format: Format, package: Package) -> String {
    match package {
        Package::None => format.to_string(),
        Package::GceTar => "tar".into(),
        Package::Ova => "ova".into(),
        Package::ContainerDisk => "ociarchive".into(),
        Package::Live => "iso".into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PartitionDef {
    /// GPT partition name.
    pub name: String,
    pub role: Role,
    pub type_guid: Uuid,
    /// Unique partition GUID; derived from the definition and partition name when absent.
    #[serde(default)]
    pub guid: Option<Uuid>,
    /// e.g. `384MiB`; absent on the last partition only, which then fills the disk.
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub filesystem: Option<Filesystem>,
    /// Filesystem label.
    #[serde(default)]
    pub label: Option<String>,
    /// Filesystem UUID (for vfat, the `XXXX-XXXX` volume id); derived when absent.
    #[serde(default)]
    pub fs_uuid: Option<String>,
    /// GPT attribute bit 2, "legacy BIOS bootable".
    #[serde(default)]
    pub legacy_bios_bootable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Raw,
    Qcow2,
    /// streamOptimized vmdk (VMware, AWS snapshot import).
    Vmdk,
    /// Fixed VHD (qemu-img's `vpc`), as Azure takes it.
    Vhd,
}

impl Format {
    /// qemu-img's name for the format and its `-o` options, as CoreOS converts
    /// (coreos-assembler `src/osbuild-manifests/platform.*.ipp.yaml`).
    pub fn qemu_img(self) -> (&'static str, Option<&'static str>) {
        match self {
            Format::Raw => ("raw", None),
            Format::Qcow2 => ("qcow2", None),
            Format::Vmdk => (
                "vmdk",
                Some("adapter_type=lsilogic,subformat=streamOptimized,compat6"),
            ),
            Format::Vhd => ("vpc", Some("subformat=fixed,force_size")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    None,
    Xz,
    Gzip,
}

/// `compression` as a definition says it: a fixed one, or `image`: as the image's
/// distribution ships this artifact (coreos-assembler's choice, read from the image:
/// `crate::disk::coreos::CoreosImage::compressor`; Fedora CoreOS xz, RHCOS gzip), xz when
/// the image says nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompressionSetting {
    None,
    Xz,
    Gzip,
    Image,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    Uefi,
    Bios,
}

/// What layerboot puts into a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// GRUB's core image for BIOS boot (no filesystem).
    BiosBoot,
    /// EFI system partition: the UEFI bootloader.
    Esp,
    /// `/boot`: kernels, initramfs, BLS entries, GRUB config, the first-boot stamp.
    Boot,
    /// The physical root: `/ostree`, the stateroot, the aleph file.
    Root,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filesystem {
    Vfat,
    Ext4,
    Xfs,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
        })
    }
}

impl Compression {
    /// File-name suffix, with its dot (`.xz`), empty for none.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Xz => ".xz",
            Compression::Gzip => ".gz",
        }
    }
}

impl CompressionSetting {
    /// The compression for one build (pure): a fixed setting wins; `image` takes
    /// `from_image` (a coreos-assembler compressor name and where it was read), else xz,
    /// what layerboot always wrote and what `coreos-installer install --stream` fetches.
    pub fn resolve(self, from_image: Option<(&str, &str)>) -> Result<Compression> {
        Ok(match self {
            CompressionSetting::None => Compression::None,
            CompressionSetting::Xz => Compression::Xz,
            CompressionSetting::Gzip => Compression::Gzip,
            CompressionSetting::Image => match from_image {
                None | Some(("xz", _)) => Compression::Xz,
                Some(("gzip", _)) => Compression::Gzip,
                Some((other, source)) => bail!(
                    "the image asks for {other} compression ({source}); layerboot writes xz or gzip: set compression in the boot image definition (--bootimages DIR)"
                ),
            },
        })
    }
}

impl fmt::Display for Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Filesystem::Vfat => "vfat",
            Filesystem::Ext4 => "ext4",
            Filesystem::Xfs => "xfs",
        })
    }
}

/// A size in a definition or on `disk --size`: the crate's one size grammar ([`crate::units`]),
/// bare numbers in bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    crate::units::parse_size_or_zero(s, 1)
}

pub use crate::units::format_size;

/// Parse and validate one definition. `origin` names the file in errors.
pub fn parse(origin: &str, text: &str) -> Result<Definition> {
    let def: Definition = toml::from_str(text)
        .map_err(|e| anyhow::anyhow!("{origin}: {}", e.to_string().trim().replace('\n', " ")))?;
    validate(&def).with_context(|| origin.to_string())?;
    Ok(def)
}

fn validate(def: &Definition) -> Result<()> {
    ensure!(
        matches!(def.sector_size, 512 | 4096),
        "sector-size must be 512 or 4096, not {}",
        def.sector_size
    );
    ensure!(
        !def.ignition_platform.is_empty()
            && def
                .ignition_platform
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "platform '{}' is not a valid Ignition platform id",
        def.ignition_platform
    );
    ensure!(
        !def.firmware.is_empty(),
        "firmware must list uefi and/or bios"
    );
    if let Some(level) = def.compression_level {
        match def.compression {
            CompressionSetting::Xz => ensure!(
                level <= 9,
                "compression-level for xz must be 0-9, not {level}"
            ),
            CompressionSetting::Gzip => ensure!(
                (1..=9).contains(&level),
                "compression-level for gzip must be 1-9, not {level}"
            ),
            CompressionSetting::Image => ensure!(
                (1..=9).contains(&level),
                "compression-level with compression \"image\" (xz or gzip) must be 1-9, not {level}"
            ),
            CompressionSetting::None => {
                bail!("compression-level is set but compression is none")
            }
        }
    }
    let compressed = !matches!(def.compression, CompressionSetting::None);
    match def.package {
        Package::None => {}
        Package::GceTar => ensure!(
            def.format == Format::Raw && def.compression == CompressionSetting::Gzip,
            "package gce-tar holds a raw disk and is gzip-compressed: set format = \"raw\" and compression = \"gzip\""
        ),
        Package::Ova => ensure!(
            def.format == Format::Vmdk && !compressed,
            "package ova holds a vmdk and is not compressed (its vmdk is): set format = \"vmdk\" and compression = \"none\""
        ),
        Package::ContainerDisk => ensure!(
            def.format == Format::Qcow2 && !compressed,
            "package container-disk holds a qcow2 and is not compressed: set format = \"qcow2\" and compression = \"none\""
        ),
        Package::Live => ensure!(
            def.format == Format::Raw && !compressed,
            "package live is made from a raw disk and is not compressed: set format = \"raw\" and compression = \"none\""
        ),
    }
    ensure!(
        def.osmet_images.is_empty() || def.package == Package::Live,
        "osmet-images is for package = \"live\" only"
    );
    ensure!(
        !def.qcow2_compressed || def.format == Format::Qcow2,
        "qcow2-compressed needs format = \"qcow2\""
    );
    if let Some(m) = &def.size_multiple {
        let m = parse_size(m).context("size-multiple")?;
        ensure!(
            m >= 1 << 20 && m % (1 << 20) == 0,
            "size-multiple must be a whole number of MiB"
        );
    }
    ensure!(!def.partitions.is_empty(), "no [[partition]] tables");
    ensure!(
        def.partitions.len() <= 128,
        "at most 128 partitions fit the GPT"
    );
    for role in [Role::Esp, Role::Boot, Role::Root] {
        let n = def.partitions.iter().filter(|p| p.role == role).count();
        ensure!(
            n == 1,
            "exactly one partition must have role {role:?}, found {n}"
        );
    }
    let bios_boot = def
        .partitions
        .iter()
        .filter(|p| p.role == Role::BiosBoot)
        .count();
    ensure!(
        bios_boot <= 1,
        "at most one partition may have role bios-boot"
    );
    if def.firmware.contains(&Firmware::Bios) {
        ensure!(
            bios_boot == 1,
            "firmware bios needs a partition with role bios-boot"
        );
        ensure!(
            def.sector_size == 512,
            "firmware bios needs 512-byte sectors: BIOS cannot boot 4096-byte sector disks"
        );
    }
    for (i, p) in def.partitions.iter().enumerate() {
        let what = format!("partition {} ('{}')", i + 1, p.name);
        ensure!(
            p.name.encode_utf16().count() <= 36,
            "{what}: GPT names hold at most 36 UTF-16 units"
        );
        let expected_fs: &[Filesystem] = match p.role {
            Role::BiosBoot => &[],
            Role::Esp => &[Filesystem::Vfat],
            Role::Boot | Role::Root => &[Filesystem::Ext4, Filesystem::Xfs],
        };
        match p.filesystem {
            None => ensure!(
                expected_fs.is_empty(),
                "{what}: role {:?} needs a filesystem ({})",
                p.role,
                list(expected_fs)
            ),
            Some(fs) => ensure!(
                expected_fs.contains(&fs),
                "{what}: filesystem {fs} is not possible for role {:?}{}",
                p.role,
                if expected_fs.is_empty() {
                    String::new()
                } else {
                    format!(" (use {})", list(expected_fs))
                }
            ),
        }
        match &p.size {
            Some(s) => {
                let bytes = parse_size(s).with_context(|| what.clone())?;
                ensure!(bytes > 0, "{what}: size must be positive");
            }
            None => ensure!(
                i + 1 == def.partitions.len(),
                "{what}: only the last partition may omit its size (it fills the disk)"
            ),
        }
        if let Some(label) = &p.label {
            ensure!(p.filesystem.is_some(), "{what}: a label needs a filesystem");
            let max = match p.filesystem {
                Some(Filesystem::Vfat) => 11,
                Some(Filesystem::Xfs) => 12,
                _ => 16,
            };
            ensure!(
                !label.is_empty() && label.len() <= max && label.is_ascii(),
                "{what}: label '{label}' must be 1-{max} ASCII characters"
            );
        }
        if let Some(u) = &p.fs_uuid {
            match p.filesystem {
                Some(Filesystem::Vfat) => {
                    parse_vfat_id(u).with_context(|| what.clone())?;
                }
                Some(_) => {
                    Uuid::parse_str(u)
                        .with_context(|| format!("{what}: fs-uuid '{u}' is not a UUID"))?;
                }
                None => bail!("{what}: fs-uuid needs a filesystem"),
            }
        }
    }
    let root = def
        .partitions
        .iter()
        .find(|p| p.role == Role::Root)
        .expect("validated");
    ensure!(
        root.label.is_some(),
        "the root partition needs a label: the kernel finds it by root=LABEL="
    );
    let boot = def
        .partitions
        .iter()
        .find(|p| p.role == Role::Boot)
        .expect("validated");
    ensure!(
        boot.label.is_some(),
        "the boot partition needs a label: GRUB and fstab find it by label"
    );
    Ok(())
}

fn list(fs: &[Filesystem]) -> String {
    fs.iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A FAT volume id written as `XXXX-XXXX`.
pub fn parse_vfat_id(s: &str) -> Result<u32> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    ensure!(
        s.len() == 9 && s.as_bytes()[4] == b'-' && hex.len() == 8,
        "vfat fs-uuid '{s}' must look like ABCD-1234"
    );
    u32::from_str_radix(&hex, 16).with_context(|| format!("vfat fs-uuid '{s}' must be hexadecimal"))
}

/// The shipped definitions plus those of a user directory (`NAME.toml`; same name overrides).
#[derive(Debug, Clone)]
pub struct Catalog {
    entries: BTreeMap<String, (String, Definition)>,
}

impl Catalog {
    pub fn shipped() -> Result<Catalog> {
        let mut entries = BTreeMap::new();
        for (name, text) in SHIPPED {
            let origin = format!("bootimages/{name}.toml (built in)");
            entries.insert(name.to_string(), (origin.clone(), parse(&origin, text)?));
        }
        Ok(Catalog { entries })
    }

    /// Shipped definitions, then every `*.toml` in `user_dir` (if given).
    pub fn load(user_dir: Option<&Path>) -> Result<Catalog> {
        let mut cat = Catalog::shipped()?;
        if let Some(dir) = user_dir {
            let rd = std::fs::read_dir(dir).with_context(|| {
                format!("reading boot image definitions from {}", dir.display())
            })?;
            let mut files: Vec<PathBuf> = Vec::new();
            for entry in rd {
                let path = entry
                    .with_context(|| format!("reading {}", dir.display()))?
                    .path();
                if path.extension().is_some_and(|e| e == "toml") {
                    files.push(path);
                }
            }
            files.sort();
            for path in files {
                let name = path
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                ensure!(
                    valid_name(&name),
                    "{}: definition names are lowercase letters, digits and '-'",
                    path.display()
                );
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let origin = path.display().to_string();
                let def = parse(&origin, &text)?;
                cat.entries.insert(name, (origin, def));
            }
        }
        Ok(cat)
    }

    pub fn get(&self, name: &str) -> Result<&Definition> {
        match self.entries.get(name) {
            Some((_, d)) => Ok(d),
            None => bail!(
                "unknown boot image '{name}': known are {}",
                self.names().join(", ")
            ),
        }
    }

    /// Where a definition came from (a path, or the built-in file).
    pub fn origin(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(|(o, _)| o.as_str())
    }

    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(|s| s.as_str()).collect()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let ok: &[(&str, u64)] = &[
            ("1MiB", 1 << 20),
            ("127MiB", 127 << 20),
            ("10GiB", 10 << 30),
            ("10G", 10 << 30),
            ("512", 512),
            ("4 KiB", 4096),
        ];
        for (s, want) in ok {
            assert_eq!(parse_size(s).unwrap(), *want, "{s}");
        }
        for bad in ["", "MiB", "10 parsecs", "-1", "99999999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad} should fail");
        }
        let fmt: &[(u64, &str)] = &[
            (1 << 20, "1MiB"),
            (3 << 30, "3GiB"),
            ((5 << 29) + 7, "2.5GiB"),
            (100, "100B"),
        ];
        for (n, want) in fmt {
            assert_eq!(format_size(*n), *want);
        }
    }

    fn shipped_text(name: &str) -> &'static str {
        SHIPPED.iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn platform_definitions_convert_and_package_as_coreos_ships_them() {
        let cat = Catalog::shipped().unwrap();
        for (name, format, package, compression, ext) in [
            (
                "aws",
                Format::Vmdk,
                Package::None,
                CompressionSetting::Image,
                "vmdk",
            ),
            (
                "azure",
                Format::Vhd,
                Package::None,
                CompressionSetting::Image,
                "vhd",
            ),
            (
                "gcp",
                Format::Raw,
                Package::GceTar,
                CompressionSetting::Gzip,
                "tar",
            ),
            (
                "ibmcloud",
                Format::Qcow2,
                Package::None,
                CompressionSetting::Image,
                "qcow2",
            ),
            (
                "kubevirt",
                Format::Qcow2,
                Package::ContainerDisk,
                CompressionSetting::None,
                "ociarchive",
            ),
            (
                "live",
                Format::Raw,
                Package::Live,
                CompressionSetting::None,
                "iso",
            ),
            (
                "nutanix",
                Format::Qcow2,
                Package::None,
                CompressionSetting::None,
                "qcow2",
            ),
            (
                "openstack",
                Format::Qcow2,
                Package::None,
                CompressionSetting::Image,
                "qcow2",
            ),
            (
                "vmware",
                Format::Vmdk,
                Package::Ova,
                CompressionSetting::None,
                "ova",
            ),
        ] {
            let d = cat.get(name).unwrap();
            // The live ISO and PXE set boot bare metal.
            let platform = if name == "live" { "metal" } else { name };
            assert_eq!(d.ignition_platform, platform);
            assert_eq!(
                (d.format, d.package, d.compression),
                (format, package, compression),
                "{name}"
            );
            assert_eq!(artifact_extension(d.format, d.package), ext, "{name}");
            assert_eq!(d.sector_size, 512, "{name}");
        }
        assert!(cat.get("nutanix").unwrap().qcow2_compressed);
        assert_eq!(
            cat.get("gcp").unwrap().size_multiple.as_deref(),
            Some("1GiB")
        );
    }

    #[test]
    fn shipped_definitions_load() {
        let cat = Catalog::shipped().unwrap();
        assert_eq!(
            cat.names(),
            [
                "aws",
                "azure",
                "gcp",
                "ibmcloud",
                "kubevirt",
                "live",
                "metal",
                "metal4k",
                "nutanix",
                "openstack",
                "qemu",
                "vmware"
            ]
        );
        assert_eq!(cat.get("metal4k").unwrap().sector_size, 4096);
        // metal as the image's distribution ships it; qemu fixed.
        for (name, want) in [
            ("metal", CompressionSetting::Image),
            ("metal4k", CompressionSetting::Image),
            ("qemu", CompressionSetting::Gzip),
        ] {
            assert_eq!(cat.get(name).unwrap().compression, want, "{name}");
        }
        assert!(cat
            .get("nope")
            .unwrap_err()
            .to_string()
            .contains("known are aws, azure, gcp,"));
    }

    fn with(edit: impl Fn(&str) -> String) -> Result<Definition> {
        parse("test.toml", &edit(shipped_text("qemu")))
    }

    #[test]
    fn bad_definitions_are_named() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "sector-size = 512",
                "sector-size = 1024",
                "sector-size must be 512 or 4096",
            ),
            (
                "platform = \"qemu\"",
                "platform = \"qemu\"\nbogus = 1",
                "unknown field `bogus`",
            ),
            (
                "sector-size = 512",
                "sector-size = 4096",
                "BIOS cannot boot 4096-byte sector disks",
            ),
            (
                "filesystem = \"xfs\"",
                "filesystem = \"vfat\"",
                "filesystem vfat is not possible for role Root",
            ),
            (
                "size = \"384MiB\"",
                "",
                "only the last partition may omit its size",
            ),
            (
                "size = \"127MiB\"",
                "size = \"127 furlongs\"",
                "unknown unit",
            ),
            (
                "role = \"boot\"",
                "role = \"root\"",
                "exactly one partition must have role Boot",
            ),
            (
                "label = \"EFI-SYSTEM\"",
                "label = \"EFI-SYSTEM-PARTITION\"",
                "must be 1-11 ASCII characters",
            ),
            (
                "compression = \"gzip\"",
                "compression = \"zstd\"",
                "unknown variant `zstd`",
            ),
            (
                "compression-level = 1",
                "compression-level = 0",
                "compression-level for gzip must be 1-9",
            ),
            ("label = \"root\"", "", "root partition needs a label"),
            (
                "format = \"qcow2\"",
                "format = \"qcow2\"\npackage = \"ova\"",
                "package ova holds a vmdk",
            ),
            (
                "format = \"qcow2\"",
                "format = \"vmdk\"\nqcow2-compressed = true",
                "qcow2-compressed needs format = \"qcow2\"",
            ),
            (
                "compression = \"gzip\"\ncompression-level = 1",
                "package = \"gce-tar\"\ncompression = \"xz\"",
                "package gce-tar holds a raw disk and is gzip-compressed",
            ),
            (
                "format = \"qcow2\"",
                "format = \"qcow2\"\npackage = \"container-disk\"",
                "package container-disk holds a qcow2 and is not compressed",
            ),
            (
                "format = \"qcow2\"",
                "format = \"qcow2\"\nsize-multiple = \"1000KiB\"",
                "size-multiple must be a whole number of MiB",
            ),
            (
                "compression = \"gzip\"\ncompression-level = 1",
                "compression = \"image\"\ncompression-level = 0",
                "compression-level with compression \"image\" (xz or gzip) must be 1-9",
            ),
        ];
        for (from, to, want) in cases {
            let err = with(|t| t.replacen(from, to, 1)).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(want), "{from} -> {to}: {msg}");
            assert!(msg.starts_with("test.toml"), "{msg}");
            assert!(!msg.contains('\n'), "multi-line error: {msg}");
        }
    }

    #[test]
    fn user_directory_adds_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("qemu.toml"),
            shipped_text("qemu").replace("QEMU qcow2 disk (UEFI and BIOS)", "mine"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("azure-ish.toml"),
            shipped_text("metal").replace("platform = \"metal\"", "platform = \"azure\""),
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), "ignored").unwrap();
        let cat = Catalog::load(Some(dir.path())).unwrap();
        assert!(cat.names().contains(&"azure-ish"));
        assert_eq!(cat.get("qemu").unwrap().description, "mine");
        assert_eq!(cat.get("azure-ish").unwrap().ignition_platform, "azure");
        assert!(cat.origin("qemu").unwrap().ends_with("qemu.toml"));
        std::fs::write(dir.path().join("broken.toml"), "description = 1").unwrap();
        let err = format!("{:#}", Catalog::load(Some(dir.path())).unwrap_err());
        assert!(err.contains("broken.toml"), "{err}");
    }
}
