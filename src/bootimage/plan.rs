//! A definition resolved against one build: exact partition offsets and sizes in sectors,
//! GUIDs, filesystems, kernel arguments. Plain data, computed by a pure function, so the
//! whole layout is unit-tested and snapshotted without writing a byte.

use anyhow::{bail, ensure, Result};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::definition::{
    format_size, parse_size, parse_vfat_id, Compression, Definition, Filesystem, Firmware, Format,
    Role,
};

const MIB: u64 = 1 << 20;
/// GPT partition entry array as every partitioning tool writes it: 128 entries of 128 bytes.
const GPT_ENTRIES_BYTES: u64 = 128 * 128;
/// Automatic disk sizes are rounded up to this, so images of similar content get equal sizes.
const AUTO_SIZE_GRANULE: u64 = 256 * MIB;

/// How much each filesystem must hold, measured from the staged sysroot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentSizes {
    pub esp: u64,
    pub boot: u64,
    pub root: u64,
}

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Requested disk size; the smallest size that fits the content when absent.
    pub size: Option<u64>,
    /// Extra kernel arguments (`--karg`), appended after the definition's.
    pub extra_kargs: Vec<String>,
    pub content: ContentSizes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Plan {
    pub name: String,
    pub platform: String,
    pub format: Format,
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

impl Plan {
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
pub fn fs_min_size(fs: Filesystem, content: u64) -> u64 {
    let raw = match fs {
        Filesystem::Vfat => content + content / 20 + 4 * MIB,
        Filesystem::Ext4 => content + content / 8 + 16 * MIB,
        Filesystem::Xfs => (content + content / 5 + 128 * MIB).max(300 * MIB),
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

/// Resolve `def` (named `name`) for one build.
pub fn resolve(name: &str, def: &Definition, opts: &PlanOptions) -> Result<Plan> {
    let sector = u64::from(def.sector_size);
    let align = MIB / sector;
    let entries_sectors = GPT_ENTRIES_BYTES.div_ceil(sector);
    // Protective MBR, header, entries at the front; entries and header again at the back.
    let tail_sectors = 1 + entries_sectors;

    let content_of = |role: Role| match role {
        Role::Esp => opts.content.esp,
        Role::Boot => opts.content.boot,
        Role::Root => opts.content.root,
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
    let min_bytes = min_sectors * sector;

    let disk_size = match opts.size {
        Some(requested) => {
            let rounded = requested.div_ceil(MIB) * MIB;
            if rounded < min_bytes {
                let suggest = min_bytes.div_ceil(AUTO_SIZE_GRANULE) * AUTO_SIZE_GRANULE;
                let content = if opts.content.root > 0 {
                    format!(" ({} of root content)", format_size(opts.content.root))
                } else {
                    String::new()
                };
                bail!("disk size {} is too small for this image: it needs at least {}{content}; use --size {} or more", format_size(requested), format_size(min_bytes), format_size(suggest));
            }
            rounded
        }
        None => min_bytes.div_ceil(AUTO_SIZE_GRANULE) * AUTO_SIZE_GRANULE,
    };
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
        let fs_uuid = match (&p.fs_uuid, p.filesystem) {
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
    let mut kargs = vec![format!("root=LABEL={root_label}"), "rw".to_string()];
    kargs.extend(def.console.iter().map(|c| format!("console={c}")));
    kargs.extend(def.kernel_arguments.iter().cloned());
    kargs.push(format!("ignition.platform.id={}", def.platform));
    kargs.extend(opts.extra_kargs.iter().cloned());
    check_kargs(&kargs)?;

    let mut firmware = def.firmware.clone();
    firmware.sort();
    firmware.dedup();
    Ok(Plan {
        name: name.to_string(),
        platform: def.platform.clone(),
        format: def.format,
        compression: def.compression,
        compression_level: def.compression_level.unwrap_or(6),
        stream_format: format!(
            "{}{}",
            def.stream_format
                .clone()
                .unwrap_or_else(|| def.format.to_string()),
            def.compression.suffix()
        ),
        firmware,
        sector_size: sector,
        disk_size,
        disk_sectors,
        disk_guid: def
            .disk_guid
            .unwrap_or_else(|| derived_uuid(&[name, "disk"])),
        kargs,
        grub_serial: serial_console(&def.console),
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
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/bootimage/snapshots")
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
