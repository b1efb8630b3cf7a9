//! A definition resolved against one build: exact partition offsets and sizes in sectors,
//! GUIDs, filesystems, kernel arguments. Plain data, computed by a pure function, so the
//! whole layout is unit-tested and snapshotted without writing a byte.

use anyhow::{bail, ensure, Result};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::definition::{
    format_size, parse_size, parse_vfat_id, Compression, Definition, Filesystem, Firmware, Format,
    Package, Role,
};

const MIB: u64 = 1 << 20;
/// GPT partition entry array as every partitioning tool writes it: 128 entries of 128 bytes.
const GPT_ENTRIES_BYTES: u64 = 128 * 128;
/// Automatic disk sizes are rounded up to this, so images of similar content get equal sizes.
const AUTO_SIZE_GRANULE: u64 = 256 * MIB;

/// The root's margin over its footprint: 1/5 (see [`fs_min_size`]). 1/16 was measured to
/// be enough once the deploy is done, but not while it runs: the CoreOS fixture (a 64 MiB
/// derived layer over 779 MiB of objects) failed with ENOSPC in ostree-ext's `fallocate`
/// of a new object, and the plain example once in a rename, with 1/16.
const XFS_MARGIN_DIVISOR: u64 = 5;

/// How much each filesystem must hold, measured from the staged sysroot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentSizes {
    pub esp: u64,
    pub boot: u64,
    /// Bytes the deployment allocates (from the layers, before deploying).
    pub root: u64,
}

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Requested disk size; the smallest size that fits the content when absent.
    pub size: Option<u64>,
    /// Extra kernel arguments (`--karg`), appended after the definition's.
    pub extra_kargs: Vec<String>,
    pub content: ContentSizes,
    /// A CoreOS image's own facts for this platform (`crate::disk::coreos`): then the
    /// kernel arguments and GRUB console come from the image, there is no `root=`, and
    /// identifiers the definition leaves open take CoreOS's sentinel values.
    pub coreos: Option<crate::disk::coreos::PlatformFacts>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Plan {
    pub name: String,
    /// The Ignition platform id (the definition's `platform`).
    #[serde(rename = "platform")]
    pub ignition_platform: String,
    pub format: Format,
    #[serde(skip_serializing_if = "is_unpackaged")]
    pub package: Package,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub qcow2_compressed: bool,
    pub compression: Compression,
    pub compression_level: u32,
    /// Key under `formats` in stream metadata, e.g. `qcow2.xz` or `4k.raw.xz`.
    pub stream_format: String,
    pub firmware: Vec<Firmware>,
    pub sector_size: u64,
    pub disk_size: u64,
    pub disk_sectors: u64,
    pub disk_guid: Uuid,
    /// Kernel arguments for the deployment (ostree adds `ostree=`).
    pub kargs: Vec<String>,
    /// Serial port GRUB talks on, when a console is serial.
    pub grub_serial: Option<SerialConsole>,
    /// CoreOS images: the GRUB console commands for `console.cfg` (from the image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_commands: Option<Vec<String>>,
    pub partitions: Vec<PlannedPartition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SerialConsole {
    pub unit: u32,
    pub speed: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PlannedPartition {
    /// GPT entry number, from 1.
    pub number: u32,
    pub name: String,
    pub role: Role,
    pub type_guid: Uuid,
    pub guid: Uuid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub offset: u64,
    pub size: u64,
    /// GPT attribute bits.
    pub attributes: u64,
    pub filesystem: Option<Filesystem>,
    pub label: Option<String>,
    pub fs_uuid: Option<String>,
}

fn is_unpackaged(p: &Package) -> bool {
    *p == Package::None
}

impl Plan {
    /// The artifact's extension before the compression suffix (`qcow2`, `vhd`, `ova`,
    /// `tar`, `ociarchive`), as CoreOS names its files.
    pub fn extension(&self) -> String {
        super::definition::artifact_extension(self.format, self.package)
    }

    pub fn partition(&self, role: Role) -> Option<&PlannedPartition> {
        self.partitions.iter().find(|p| p.role == role)
    }

    /// Label of the root filesystem (validated present).
    pub fn root_label(&self) -> &str {
        self.partition(Role::Root)
            .and_then(|p| p.label.as_deref())
            .unwrap_or("root")
    }
}

/// A stable v4-shaped UUID from a name, so a definition builds the same disk every time.
pub fn derived_uuid(parts: &[&str]) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"layerboot-bootimage");
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The smallest filesystem of `fs` that holds `content` bytes of files, with room for
/// metadata and some growth. XFS refuses filesystems under 300 MiB.
///
/// For the root, `content` is what the files allocate (blocks, inodes, dirents: see
/// `disk::estimate::Footprint`), so only the filesystem's own overhead is added. XFS
/// (xfsprogs 6.1, measured from 300 MiB to 8 GiB, 512- and 4096-byte sectors, default and
/// 2 AGs alike) keeps from the user: a 64 MiB internal log, the reserve pool (5% up to
/// 8192 blocks, 32 MiB) and per-AG btree reservations (under 1% of the size); bounded
/// here by 96 MiB plus 1/99 of the result. [`XFS_MARGIN_DIVISOR`] covers what the
/// footprint does not count exactly (directory block fill, inode chunk allocation) and
/// what the importer holds while it writes (preallocations not yet trimmed).
pub fn fs_min_size(fs: Filesystem, content: u64) -> u64 {
    let raw = match fs {
        Filesystem::Vfat => content + content / 20 + 4 * MIB,
        Filesystem::Ext4 => content + content / 8 + 16 * MIB,
        Filesystem::Xfs => {
            let need = content + content / XFS_MARGIN_DIVISOR + 96 * MIB;
            (need * 100 / 99).max(300 * MIB)
        }
    };
    raw.div_ceil(MIB) * MIB
}

fn serial_console(consoles: &[String]) -> Option<SerialConsole> {
    consoles.iter().find_map(|c| {
        let rest = c.strip_prefix("ttyS")?;
        let (unit, opts) = rest.split_once(',').unwrap_or((rest, ""));
        let unit = unit.parse().ok()?;
        let speed_digits: String = opts.chars().take_while(|c| c.is_ascii_digit()).collect();
        Some(SerialConsole {
            unit,
            speed: speed_digits.parse().unwrap_or(115200),
        })
    })
}

fn check_kargs(kargs: &[String]) -> Result<()> {
    for k in kargs {
        ensure!(
            !k.is_empty() && !k.chars().any(char::is_whitespace),
            "kernel argument '{k}' must be one non-empty word (pass --karg once per argument)"
        );
        ensure!(
            !k.starts_with("ostree="),
            "kernel argument '{k}': ostree= is set by the deployment"
        );
    }
    Ok(())
}

/// The compression of `def`'s artifact for an image with these CoreOS facts (see
/// [`super::CompressionSetting::resolve`]).
pub fn compression(
    def: &Definition,
    coreos: Option<&crate::disk::coreos::PlatformFacts>,
) -> Result<Compression> {
    def.compression.resolve(
        coreos
            .and_then(|f| f.compressor.as_ref())
            .map(|(c, from)| (c.as_str(), from.as_str())),
    )
}

/// Where the partitions up to the filling one start (sectors), and the smallest disk the
/// layout fits for `content` (bytes). Fails when a fixed-size partition is too small for
/// its content. Pure.
struct FixedLayout {
    starts: Vec<u64>,
    min_bytes: u64,
}

fn fixed_layout(def: &Definition, content: &ContentSizes) -> Result<FixedLayout> {
    let sector = u64::from(def.sector_size);
    let align = MIB / sector;
    let entries_sectors = GPT_ENTRIES_BYTES.div_ceil(sector);
    // Protective MBR, header, entries at the front; entries and header again at the back.
    let tail_sectors = 1 + entries_sectors;
    let content_of = |role: Role| match role {
        Role::Esp => content.esp,
        Role::Boot => content.boot,
        Role::Root => content.root,
        Role::BiosBoot => 0,
    };

    // Fixed partitions first: their sizes do not depend on the disk size.
    let mut starts = Vec::new();
    let mut next = align; // first partition at 1 MiB, as every modern tool does
    for p in &def.partitions {
        starts.push(next);
        let size = match &p.size {
            Some(s) => parse_size(s)?.div_ceil(sector),
            None => break,
        };
        if let Some(fs) = p.filesystem {
            let need = fs_min_size(fs, content_of(p.role));
            if size * sector < need {
                bail!(
                    "partition '{}' ({}) is too small for its {} of content: it needs at least {}; raise its size in the boot image definition",
                    p.name,
                    format_size(size * sector),
                    format_size(content_of(p.role)),
                    format_size(need)
                );
            }
        }
        next = (next + size).div_ceil(align) * align;
    }
    let fill = def.partitions.last().filter(|p| p.size.is_none());

    // The smallest disk: everything fixed, the filling partition's minimum, the backup GPT.
    let fill_min_sectors = fill
        .map(|p| {
            p.filesystem
                .map_or(align, |fs| fs_min_size(fs, content_of(p.role)))
                .div_ceil(sector)
        })
        .unwrap_or(0);
    let min_sectors = (next + fill_min_sectors).div_ceil(align) * align + align.max(tail_sectors);
    Ok(FixedLayout {
        starts,
        min_bytes: min_sectors * sector,
    })
}

/// `requested` rounded to whole MiB, or the error naming the smallest size that fits.
fn check_disk_size(requested: u64, min_bytes: u64, root_content: u64) -> Result<u64> {
    let rounded = requested.div_ceil(MIB) * MIB;
    if rounded < min_bytes {
        let suggest = min_bytes.div_ceil(AUTO_SIZE_GRANULE) * AUTO_SIZE_GRANULE;
        let content = if root_content > 0 {
            format!(" ({} of root content)", format_size(root_content))
        } else {
            String::new()
        };
        bail!("disk size {} is too small for this image: it needs at least {}{content}; use --size {} or more", format_size(requested), format_size(min_bytes), format_size(suggest));
    }
    Ok(rounded)
}

/// What can be checked of a build request before the image is read: the extra kernel
/// arguments, and a `--size` below what the layout needs even with no content. Pure.
pub fn check_request(def: &Definition, size: Option<u64>, extra_kargs: &[String]) -> Result<()> {
    check_kargs(extra_kargs)?;
    if let Some(requested) = size {
        let layout = fixed_layout(def, &ContentSizes::default())?;
        check_disk_size(requested, layout.min_bytes, 0)?;
    }
    Ok(())
}

/// Whether the fixed-size partitions hold what was staged for them (checked once /boot
/// and the ESP are staged, against the plan made before). Pure.
pub fn check_staged_content(def: &Definition, content: &ContentSizes) -> Result<()> {
    fixed_layout(def, content).map(drop)
}

/// Resolve `def` (named `name`) for one build.
pub fn resolve(name: &str, def: &Definition, opts: &PlanOptions) -> Result<Plan> {
    let sector = u64::from(def.sector_size);
    let entries_sectors = GPT_ENTRIES_BYTES.div_ceil(sector);
    let tail_sectors = 1 + entries_sectors;
    let FixedLayout { starts, min_bytes } = fixed_layout(def, &opts.content)?;

    // Whole MiB at least (the GPT is aligned to it), or the definition's multiple.
    let granule = match &def.size_multiple {
        Some(m) => parse_size(m)?,
        None => MIB,
    };
    let disk_size = match opts.size {
        Some(requested) => check_disk_size(requested, min_bytes, opts.content.root)?,
        None => min_bytes.div_ceil(AUTO_SIZE_GRANULE) * AUTO_SIZE_GRANULE,
    }
    .div_ceil(granule)
        * granule;
    let disk_sectors = disk_size / sector;
    let last_usable = disk_sectors - 1 - tail_sectors;

    let mut partitions = Vec::new();
    for (i, (p, &first)) in def.partitions.iter().zip(&starts).enumerate() {
        let last = match &p.size {
            Some(s) => first + parse_size(s)?.div_ceil(sector) - 1,
            None => last_usable,
        };
        ensure!(
            last <= last_usable,
            "partition '{}' does not fit a disk of {}",
            p.name,
            format_size(disk_size)
        );
        let sentinel = opts
            .coreos
            .as_ref()
            .and_then(|_| crate::disk::coreos::sentinel_fs_id(p.role))
            .map(str::to_string);
        let fs_uuid = match (p.fs_uuid.as_ref().or(sentinel.as_ref()), p.filesystem) {
            (Some(u), Some(Filesystem::Vfat)) => Some(vfat_id_string(parse_vfat_id(u)?)),
            (Some(u), _) => Some(Uuid::parse_str(u)?.hyphenated().to_string()),
            (None, Some(Filesystem::Vfat)) => {
                let b = derived_uuid(&[name, &p.name, "fs"]).into_bytes();
                Some(vfat_id_string(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
            }
            (None, Some(_)) => Some(
                derived_uuid(&[name, &p.name, "fs"])
                    .hyphenated()
                    .to_string(),
            ),
            (None, None) => None,
        };
        partitions.push(PlannedPartition {
            number: i as u32 + 1,
            name: p.name.clone(),
            role: p.role,
            type_guid: p.type_guid,
            guid: p
                .guid
                .unwrap_or_else(|| derived_uuid(&[name, &p.name, "partition"])),
            first_lba: first,
            last_lba: last,
            offset: first * sector,
            size: (last - first + 1) * sector,
            attributes: if p.legacy_bios_bootable { 1 << 2 } else { 0 },
            filesystem: p.filesystem,
            label: p.label.clone(),
            fs_uuid,
        });
    }

    let root_label = def
        .partitions
        .iter()
        .find(|p| p.role == Role::Root)
        .and_then(|p| p.label.clone())
        .unwrap_or_default();
    let mut kargs = Vec::new();
    match &opts.coreos {
        // CoreOS's initramfs finds the root by label; `root=` would stop `rdcore rootmap`
        // (coreos-installer src/bin/rdcore/rootmap.rs) from ever writing the real one.
        // Deployed with `rw` (coreos-assembler coreos.osbuild.x86_64.mpp.yaml
        // `kernel_opts`), the console as the image's platforms.json says.
        Some(facts) => {
            kargs.push("rw".to_string());
            kargs.extend(facts.kargs.iter().cloned());
        }
        None => {
            kargs.push(format!("root=LABEL={root_label}"));
            kargs.push("rw".to_string());
            kargs.extend(def.console.iter().map(|c| format!("console={c}")));
        }
    }
    kargs.extend(def.kernel_arguments.iter().cloned());
    kargs.push(format!("ignition.platform.id={}", def.ignition_platform));
    kargs.extend(opts.extra_kargs.iter().cloned());
    check_kargs(&kargs)?;

    let mut firmware = def.firmware.clone();
    firmware.sort();
    firmware.dedup();
    let compression = compression(def, opts.coreos.as_ref())?;
    Ok(Plan {
        name: name.to_string(),
        ignition_platform: def.ignition_platform.clone(),
        format: def.format,
        package: def.package,
        qcow2_compressed: def.qcow2_compressed,
        compression,
        compression_level: def.compression_level.unwrap_or(6),
        stream_format: format!(
            "{}{}",
            def.stream_format.clone().unwrap_or_else(|| {
                super::definition::artifact_extension(def.format, def.package)
            }),
            compression.suffix()
        ),
        firmware,
        sector_size: sector,
        disk_size,
        disk_sectors,
        disk_guid: def.disk_guid.unwrap_or_else(|| match &opts.coreos {
            Some(_) => {
                Uuid::parse_str(crate::disk::coreos::SENTINEL_DISK_GUID).expect("a valid UUID")
            }
            None => derived_uuid(&[name, "disk"]),
        }),
        kargs,
        // CoreOS: GRUB's console is console.cfg's business (console_commands).
        grub_serial: match &opts.coreos {
            Some(_) => None,
            None => serial_console(&def.console),
        },
        console_commands: opts.coreos.as_ref().map(|f| f.grub_commands.clone()),
        partitions,
    })
}

fn vfat_id_string(id: u32) -> String {
    format!("{:04X}-{:04X}", id >> 16, id & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootimage::definition::{Catalog, SHIPPED};
    use std::path::PathBuf;

    fn snapshot_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/bootimage")
    }

    /// Every shipped definition, resolved at the size CoreOS builds (10 GiB) and at the
    /// automatic size for a typical image, matches its snapshot. `LAYERBOOT_UPDATE_GOLDEN=1`
    /// rewrites the snapshots.
    #[test]
    fn shipped_plans_match_snapshots() {
        let cat = Catalog::shipped().unwrap();
        let update = std::env::var_os("LAYERBOOT_UPDATE_GOLDEN").is_some();
        for (name, _) in SHIPPED {
            let def = cat.get(name).unwrap();
            let fixed = resolve(
                name,
                def,
                &PlanOptions {
                    size: Some(10 << 30),
                    ..Default::default()
                },
            )
            .unwrap();
            let auto = resolve(
                name,
                def,
                &PlanOptions {
                    content: ContentSizes {
                        esp: 5 * MIB,
                        boot: 90 * MIB,
                        root: 1500 * MIB,
                    },
                    extra_kargs: vec!["quiet".into()],
                    size: None,
                    coreos: None,
                },
            )
            .unwrap();
            let text =
                serde_json::to_string_pretty(&serde_json::json!({"10GiB": fixed, "auto": auto}))
                    .unwrap()
                    + "\n";
            let path = snapshot_dir().join(format!("{name}.json"));
            if update {
                std::fs::create_dir_all(snapshot_dir()).unwrap();
                std::fs::write(&path, &text).unwrap();
            }
            let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run with LAYERBOOT_UPDATE_GOLDEN=1)",
                    path.display()
                )
            });
            pretty_assertions::assert_eq!(want, text, "{name}");
        }
    }

    #[test]
    fn coreos_layout_offsets() {
        let cat = Catalog::shipped().unwrap();
        // (definition, sector size, expected (first_lba, last_lba) of partitions 1-3)
        let cases: &[(&str, u64, [(u64, u64); 3])] = &[
            (
                "metal",
                512,
                [(2048, 4095), (4096, 264191), (264192, 1050623)],
            ),
            ("metal4k", 4096, [(256, 511), (512, 33023), (33024, 131327)]),
        ];
        for (name, sector, want) in cases {
            let plan = resolve(
                name,
                cat.get(name).unwrap(),
                &PlanOptions {
                    size: Some(8 << 30),
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(plan.sector_size, *sector);
            let got: Vec<(u64, u64)> = plan.partitions[..3]
                .iter()
                .map(|p| (p.first_lba, p.last_lba))
                .collect();
            assert_eq!(got, want, "{name}");
            let sizes: Vec<u64> = plan.partitions[..3].iter().map(|p| p.size).collect();
            assert_eq!(sizes, [MIB, 127 * MIB, 384 * MIB]);
            let root = &plan.partitions[3];
            assert_eq!(root.offset, 513 * MIB);
            // Root ends right before the backup GPT entries.
            assert_eq!(root.last_lba, plan.disk_sectors - 2 - 16384 / sector);
            assert_eq!(
                plan.partitions[0].attributes, 4,
                "BIOS-BOOT is legacy-BIOS-bootable"
            );
            for p in &plan.partitions {
                assert_eq!(p.offset % MIB, 0, "{} not 1 MiB aligned", p.name);
            }
        }
    }

    /// A CoreOS image: kargs and console from the image, no `root=`, sentinel ids where
    /// the definition fixes none.
    #[test]
    fn coreos_images_take_the_image_facts() {
        use crate::disk::coreos::{self, PlatformFacts};
        let cat = Catalog::shipped().unwrap();
        let facts = PlatformFacts {
            kargs: vec![
                "console=ttyS0,115200n8".into(),
                "mitigations=auto,nosmt".into(),
            ],
            grub_commands: vec!["serial --speed=115200".into()],
            compressor: None,
        };
        for name in ["qemu", "metal", "metal4k"] {
            let plan = resolve(
                name,
                cat.get(name).unwrap(),
                &PlanOptions {
                    size: Some(4 << 30),
                    extra_kargs: vec!["quiet".into()],
                    coreos: Some(facts.clone()),
                    ..Default::default()
                },
            )
            .unwrap();
            let platform = cat.get(name).unwrap().ignition_platform.clone();
            assert_eq!(
                plan.kargs,
                [
                    "rw".to_string(),
                    "console=ttyS0,115200n8".into(),
                    "mitigations=auto,nosmt".into(),
                    format!("ignition.platform.id={platform}"),
                    "quiet".into()
                ],
                "{name}"
            );
            assert!(!plan.kargs.iter().any(|k| k.starts_with("root=")));
            assert_eq!(plan.grub_serial, None);
            assert_eq!(
                plan.console_commands.as_deref(),
                Some(&facts.grub_commands[..])
            );
            assert_eq!(plan.disk_guid.to_string(), coreos::SENTINEL_DISK_GUID);
            let fs_id = |role| plan.partition(role).unwrap().fs_uuid.clone().unwrap();
            assert_eq!(fs_id(Role::Boot), coreos::SENTINEL_BOOT_FS_UUID);
            assert_eq!(fs_id(Role::Root), coreos::SENTINEL_ROOT_FS_UUID);
            assert_eq!(fs_id(Role::Esp), coreos::ESP_VOLUME_ID);
        }
    }

    /// The metal artifacts' compression and stream format key: from the image unless the
    /// definition fixes one.
    #[test]
    fn metal_compression_as_the_distribution_ships_it() {
        use crate::disk::coreos::PlatformFacts;
        let cat = Catalog::shipped().unwrap();
        let from = |c: &str| Some((c.to_string(), "image.json compressor".to_string()));
        // (definition, compression override in the definition, image's compressor) ->
        // (compression, stream format key)
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<Option<(String, String)>>,
            Compression,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                "metal",
                None,
                Some(from("gzip")),
                Compression::Gzip,
                "raw.gz",
            ),
            (
                "metal4k",
                None,
                Some(from("gzip")),
                Compression::Gzip,
                "4k.raw.gz",
            ),
            ("metal", None, Some(from("xz")), Compression::Xz, "raw.xz"),
            (
                "metal4k",
                None,
                Some(from("xz")),
                Compression::Xz,
                "4k.raw.xz",
            ),
            // A CoreOS image that says nothing, and a non-CoreOS image: xz.
            ("metal", None, Some(None), Compression::Xz, "raw.xz"),
            ("metal4k", None, None, Compression::Xz, "4k.raw.xz"),
            // An explicit compression in the definition wins over the image.
            (
                "metal",
                Some("xz"),
                Some(from("gzip")),
                Compression::Xz,
                "raw.xz",
            ),
            (
                "metal4k",
                Some("gzip"),
                Some(from("xz")),
                Compression::Gzip,
                "4k.raw.gz",
            ),
            (
                "metal",
                Some("none"),
                Some(from("gzip")),
                Compression::None,
                "raw",
            ),
            // qemu is fixed (gzip level 1, as RHCOS's qcow2.gz), whatever the image says.
            (
                "qemu",
                None,
                Some(from("xz")),
                Compression::Gzip,
                "qcow2.gz",
            ),
        ];
        for (name, fixed, image, want, key) in cases {
            let mut def = cat.get(name).unwrap().clone();
            if let Some(f) = fixed {
                def = crate::bootimage::definition::parse(
                    "t.toml",
                    &SHIPPED
                        .iter()
                        .find(|(n, _)| *n == name)
                        .unwrap()
                        .1
                        .replace("compression = \"image\"", &format!("compression = \"{f}\"")),
                )
                .unwrap();
            }
            let plan = resolve(
                name,
                &def,
                &PlanOptions {
                    size: Some(4 << 30),
                    coreos: image.clone().map(|compressor| PlatformFacts {
                        compressor,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(
                (plan.compression, plan.stream_format.as_str()),
                (want, key),
                "{name} {fixed:?} {image:?}"
            );
        }
        let err = resolve(
            "metal",
            cat.get("metal").unwrap(),
            &PlanOptions {
                size: Some(4 << 30),
                coreos: Some(PlatformFacts {
                    compressor: Some((
                        "zstd".into(),
                        "/usr/share/coreos-assembler/image.json compressor".into(),
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "the image asks for zstd compression (/usr/share/coreos-assembler/image.json compressor); layerboot writes xz or gzip: set compression in the boot image definition (--bootimages DIR)");
    }

    #[test]
    fn kargs_and_console() {
        let cat = Catalog::shipped().unwrap();
        let plan = resolve(
            "qemu",
            cat.get("qemu").unwrap(),
            &PlanOptions {
                size: Some(4 << 30),
                extra_kargs: vec!["enforcing=0".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            plan.kargs,
            [
                "root=LABEL=root",
                "rw",
                "console=tty0",
                "console=ttyS0,115200n8",
                "ignition.platform.id=qemu",
                "enforcing=0"
            ]
        );
        assert_eq!(
            plan.grub_serial,
            Some(SerialConsole {
                unit: 0,
                speed: 115200
            })
        );
        assert_eq!(plan.stream_format, "qcow2.gz");
        let metal4k = resolve(
            "metal4k",
            cat.get("metal4k").unwrap(),
            &PlanOptions {
                size: Some(4 << 30),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(metal4k.stream_format, "4k.raw.xz");
        assert_eq!(metal4k.grub_serial, None);
        for bad in ["two words", "ostree=/x", ""] {
            let err = resolve(
                "qemu",
                cat.get("qemu").unwrap(),
                &PlanOptions {
                    size: Some(4 << 30),
                    extra_kargs: vec![bad.into()],
                    ..Default::default()
                },
            )
            .unwrap_err();
            assert!(err.to_string().contains("kernel argument"), "{err}");
        }
    }

    #[test]
    fn sizes_too_small_name_what_is_needed() {
        let cat = Catalog::shipped().unwrap();
        let def = cat.get("qemu").unwrap();
        let content = ContentSizes {
            esp: 5 * MIB,
            boot: 90 * MIB,
            root: 1500 * MIB,
        };
        let auto = resolve(
            "qemu",
            def,
            &PlanOptions {
                content,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(auto.disk_size % AUTO_SIZE_GRANULE, 0);
        let root = auto.partition(Role::Root).unwrap();
        assert!(root.size >= fs_min_size(Filesystem::Xfs, content.root));

        let err = resolve(
            "qemu",
            def,
            &PlanOptions {
                size: Some(1 << 30),
                content,
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("disk size 1GiB is too small for this image: it needs at least "),
            "{err}"
        );
        assert!(err.ends_with("use --size 2560MiB or more"), "{err}");
        // Exactly the minimum named works, one MiB less does not.
        let min = parse_size(
            err.split("at least ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap(),
        )
        .unwrap();
        resolve(
            "qemu",
            def,
            &PlanOptions {
                size: Some(min),
                content,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(resolve(
            "qemu",
            def,
            &PlanOptions {
                size: Some(min - MIB),
                content,
                ..Default::default()
            }
        )
        .is_err());
        let err = resolve(
            "qemu",
            def,
            &PlanOptions {
                size: None,
                content: ContentSizes {
                    boot: 500 * MIB,
                    ..content
                },
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("partition 'boot' (384MiB) is too small"),
            "{err}"
        );
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(derived_uuid(&["a", "b"]), derived_uuid(&["a", "b"]));
        assert_ne!(derived_uuid(&["ab", ""]), derived_uuid(&["a", "b"]));
        assert_eq!(derived_uuid(&["x"]).get_version_num(), 4);
    }
}
