//! The raw disk: a sparse file of the planned size, partition images copied in at their
//! offsets, the GPT (primary and backup) written with the gpt crate, and a protective MBR
//! that carries GRUB's boot code when the disk boots under BIOS.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};
use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::partition::Partition;
use gpt::partition_types::Type;

use crate::bootimage::Plan;

pub fn create_sparse(path: &Path, size: u64) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size)?;
    Ok(f)
}

/// Write the GPT for `plan` (and the protective MBR with `bootcode`) onto `disk`.
pub fn write_partition_table(plan: &Plan, disk: File, bootcode: Option<[u8; 440]>) -> Result<File> {
    let lb = if plan.sector_size == 4096 {
        LogicalBlockSize::Lb4096
    } else {
        LogicalBlockSize::Lb512
    };
    let mut gdisk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(lb)
        .change_partition_count(true)
        .create_from_device(disk, Some(plan.disk_guid))
        .context("initializing the GPT")?;
    let mut parts = BTreeMap::new();
    for p in &plan.partitions {
        parts.insert(
            p.number,
            Partition {
                part_type_guid: Type {
                    guid: p.type_guid,
                    os: gpt::partition_types::OperatingSystem::None,
                },
                part_guid: p.guid,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                flags: p.attributes,
                name: p.name.clone(),
            },
        );
    }
    gdisk
        .update_partitions(parts)
        .context("laying out GPT partitions")?;
    let mut disk = gdisk.write().context("writing the GPT")?;
    let mut mbr =
        ProtectiveMBR::with_lb_size(u32::try_from(plan.disk_sectors - 1).unwrap_or(u32::MAX));
    if let Some(code) = bootcode {
        mbr.set_bootcode(code);
    }
    mbr.overwrite_lba0(&mut disk)
        .context("writing the protective MBR")?;
    disk.flush()?;
    Ok(disk)
}

/// Write `bytes` at `offset` (the BIOS core image into BIOS-BOOT).
pub fn write_at(disk: &mut File, offset: u64, bytes: &[u8]) -> Result<()> {
    disk.seek(SeekFrom::Start(offset))?;
    disk.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::bootimage::{resolve, Catalog, PlanOptions};

    /// Read back `len` bytes at `offset`.
    fn read_at(disk: &mut File, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0; len];
        disk.seek(SeekFrom::Start(offset))?;
        disk.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// The table the gpt crate writes reads back identically at both sector sizes, and
    /// sfdisk (util-linux) agrees on it.
    #[test]
    fn gpt_round_trip_512_and_4096() {
        let cat = Catalog::shipped().unwrap();
        for name in ["metal", "metal4k"] {
            let plan = resolve(
                name,
                cat.get(name).unwrap(),
                &PlanOptions {
                    size: Some(2 << 30),
                    ..Default::default()
                },
            )
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("disk.raw");
            let f = create_sparse(&path, plan.disk_size).unwrap();
            let mut code = [0u8; 440];
            code[0] = 0xeb;
            let mut f = write_partition_table(&plan, f, Some(code)).unwrap();
            let lba0 = read_at(&mut f, 0, 512).unwrap();
            assert_eq!(&lba0[510..512], &[0x55, 0xaa]);
            assert_eq!(lba0[0], 0xeb, "boot code kept");
            assert_eq!(lba0[446 + 4], 0xee, "protective partition");
            let sig = read_at(&mut f, plan.sector_size, 8).unwrap();
            assert_eq!(&sig, b"EFI PART", "{name}: primary header at LBA 1");
            let backup = read_at(&mut f, plan.disk_size - plan.sector_size, 8).unwrap();
            assert_eq!(
                &backup, b"EFI PART",
                "{name}: backup header in the last LBA"
            );

            let lb = if plan.sector_size == 4096 {
                LogicalBlockSize::Lb4096
            } else {
                LogicalBlockSize::Lb512
            };
            let back = gpt::GptConfig::new()
                .logical_block_size(lb)
                .open(&path)
                .unwrap();
            assert_eq!(*back.guid(), plan.disk_guid);
            for p in &plan.partitions {
                let got = &back.partitions()[&p.number];
                assert_eq!(
                    (
                        got.first_lba,
                        got.last_lba,
                        got.part_guid,
                        got.flags,
                        got.name.as_str()
                    ),
                    (
                        p.first_lba,
                        p.last_lba,
                        p.guid,
                        p.attributes,
                        p.name.as_str()
                    ),
                    "{name}"
                );
                assert_eq!(got.part_type_guid.guid, p.type_guid);
            }
            // bookworm's sfdisk reads 512-byte sectors only from a file.
            if plan.sector_size == 512 {
                let mut c = std::process::Command::new("sfdisk");
                c.arg("--json").arg(&path);
                let out = crate::cmd::run_stdout(&mut c).unwrap();
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                let parts = v["partitiontable"]["partitions"].as_array().unwrap();
                assert_eq!(parts.len(), 4);
                assert_eq!(parts[3]["name"], "root");
                assert_eq!(parts[1]["start"], plan.partitions[1].first_lba);
            }
        }
    }
}
