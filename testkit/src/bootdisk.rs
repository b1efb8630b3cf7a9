//! A small GPT boot disk for QEMU tests, built without root from Debian's GRUB:
//!
//! - protective MBR whose first 440 bytes are GRUB's `boot.img`, with the LBA of
//!   `core.img` patched in at 0x5c (512-byte-sector disks only: SeaBIOS cannot boot 4Kn);
//! - partition 1 BIOS-BOOT (1 MiB) holding `grub-mkimage -O i386-pc` `core.img`, whose
//!   first sector (GRUB's diskboot) carries a blocklist at 0x1f4 pointing at the rest;
//! - partition 2 EFI-SYSTEM (FAT, label `LBTESTESP`, formatted with the disk's sector
//!   size) holding `EFI/BOOT/BOOTX64.EFI` (`grub-mkimage -O x86_64-efi`), `grub/grub.cfg`,
//!   the kernel and the initramfs.
//!
//! Both GRUB images embed `qemu-tests/fixtures/bootdisk-early.cfg`, which finds the ESP
//! by label and reads `grub.cfg` from it, so one config serves UEFI and BIOS.
//! `with_bootloader: false` gives the same disk with no boot code at all: the
//! deliberately unbootable artifact.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cache::cached_fixture;
use super::kernel::Kernel;
use layerboot::cmd;

const EARLY_CFG: &[u8] = include_bytes!("../../qemu-tests/fixtures/bootdisk-early.cfg");
const GRUB_CFG: &[u8] = include_bytes!("../../qemu-tests/fixtures/bootdisk-grub.cfg");
const RECIPE: &[u8] =
    b"bootdisk v1: pmbr+boot.img, p1 BIOS-BOOT 1MiB core.img, p2 ESP 64MiB fatfs LBTESTESP";

const MIB: u64 = 1 << 20;
const BIOS_START: u64 = MIB;
const BIOS_SIZE: u64 = MIB;
const ESP_START: u64 = 2 * MIB;
const ESP_SIZE: u64 = 64 * MIB;
/// Room after the ESP for the backup GPT.
const DISK_SIZE: u64 = ESP_START + ESP_SIZE + MIB;
const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "search",
    "search_label",
    "normal",
    "linux",
    "configfile",
    "serial",
    "terminal",
    "echo",
    "test",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootDiskSpec {
    /// 512 (UEFI + BIOS bootable) or 4096 (UEFI only).
    pub sector_size: u32,
    pub with_bootloader: bool,
}

/// The cached disk image (raw) for `spec`, booting `kernel` with `initramfs`.
pub fn cached_boot_disk(kernel: &Kernel, initramfs: &Path, spec: BootDiskSpec) -> Result<PathBuf> {
    cmd::require("grub-mkimage", "grub-common")?;
    let grub_versions = cmd::run_stdout(Command::new("dpkg-query").args(["-W", "grub-efi-amd64-bin", "grub-pc-bin"]))
        .context("querying GRUB package versions: install the Debian packages 'grub-efi-amd64-bin' and 'grub-pc-bin'")?;
    let initramfs_sha = layerboot::io::sha256_file(initramfs)?;
    let name = format!(
        "bootdisk-{}{}",
        spec.sector_size,
        if spec.with_bootloader { "" } else { "-noboot" }
    );
    let spec_bytes = format!("{spec:?}");
    let parts: [&[u8]; 7] = [
        RECIPE,
        EARLY_CFG,
        GRUB_CFG,
        spec_bytes.as_bytes(),
        grub_versions.as_bytes(),
        kernel.release.as_bytes(),
        initramfs_sha.0.as_bytes(),
    ];
    let dir = cached_fixture(&name, &parts, |staging| {
        build(kernel, initramfs, spec, staging)
    })?;
    Ok(dir.join("disk.raw"))
}

/// A hybrid ISO from `grub-mkrescue` (BIOS and UEFI El Torito, plus MBR/GPT so it also
/// boots as a disk) with the same `grub.cfg`, kernel and initramfs as the boot disk.
pub fn cached_grub_iso(kernel: &Kernel, initramfs: &Path) -> Result<PathBuf> {
    cmd::require("grub-mkrescue", "grub-common")?;
    cmd::require("xorriso", "xorriso")?;
    cmd::require("mformat", "mtools")?;
    let grub_versions = cmd::run_stdout(Command::new("dpkg-query").args([
        "-W",
        "grub-efi-amd64-bin",
        "grub-pc-bin",
        "xorriso",
    ]))?;
    let initramfs_sha = layerboot::io::sha256_file(initramfs)?;
    let parts: [&[u8]; 5] = [
        b"grub-iso v1: grub-mkrescue -volid LBTESTISO",
        GRUB_CFG,
        grub_versions.as_bytes(),
        kernel.release.as_bytes(),
        initramfs_sha.0.as_bytes(),
    ];
    let dir = cached_fixture("grub-iso", &parts, |staging| {
        let root = staging.join("root");
        std::fs::create_dir_all(root.join("boot/grub"))?;
        std::fs::copy(&kernel.vmlinuz, root.join("vmlinuz"))?;
        std::fs::copy(initramfs, root.join("initramfs.cpio"))?;
        std::fs::write(root.join("boot/grub/grub.cfg"), GRUB_CFG)?;
        cmd::run(
            Command::new("grub-mkrescue")
                .arg("-o")
                .arg(staging.join("test.iso"))
                .arg(&root)
                .args(["--", "-volid", "LBTESTISO"]),
        )?;
        super::cache::remove_tree(&root)
    })?;
    Ok(dir.join("test.iso"))
}

fn grub_image(format: &str, out: &Path, early: &Path) -> Result<()> {
    let mut c = Command::new("grub-mkimage");
    c.args(["-O", format, "-o"])
        .arg(out)
        .arg("-c")
        .arg(early)
        .args(["-p", "/grub"]);
    if format == "i386-pc" {
        c.arg("biosdisk");
    }
    cmd::run(c.args(GRUB_MODULES))?;
    Ok(())
}

fn build(kernel: &Kernel, initramfs: &Path, spec: BootDiskSpec, staging: &Path) -> Result<()> {
    let ss = spec.sector_size as u64;
    if ss != 512 && ss != 4096 {
        bail!("sector size {ss} is not 512 or 4096");
    }
    let work = staging.join("work");
    std::fs::create_dir_all(&work)?;
    let early = work.join("early.cfg");
    std::fs::write(&early, EARLY_CFG)?;

    // The ESP as its own FAT image, copied into the disk afterwards.
    let esp_path = work.join("esp.img");
    let esp = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&esp_path)?;
    esp.set_len(ESP_SIZE)?;
    fatfs::format_volume(
        &esp,
        fatfs::FormatVolumeOptions::new()
            .bytes_per_sector(ss as u16)
            .volume_label(*b"LBTESTESP  "),
    )
    .context("formatting the ESP")?;
    {
        let fs =
            fatfs::FileSystem::new(&esp, fatfs::FsOptions::new()).context("opening the ESP")?;
        let root = fs.root_dir();
        let put = |path: &str, data: &[u8]| -> Result<()> {
            let mut f = root
                .create_file(path)
                .with_context(|| format!("creating {path} on the ESP"))?;
            f.truncate()?;
            f.write_all(data)
                .with_context(|| format!("writing {path} on the ESP"))?;
            Ok(())
        };
        put("vmlinuz", &std::fs::read(&kernel.vmlinuz)?)?;
        put("initramfs.cpio", &std::fs::read(initramfs)?)?;
        root.create_dir("grub")?;
        put("grub/grub.cfg", GRUB_CFG)?;
        if spec.with_bootloader {
            let efi = work.join("BOOTX64.EFI");
            grub_image("x86_64-efi", &efi, &early)?;
            root.create_dir("EFI")?;
            root.create_dir("EFI/BOOT")?;
            put("EFI/BOOT/BOOTX64.EFI", &std::fs::read(&efi)?)?;
        }
        drop(root);
        fs.unmount()?;
    }

    let disk_path = staging.join("disk.raw");
    let mut disk = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&disk_path)?;
    disk.set_len(DISK_SIZE)?;
    let total_lba = DISK_SIZE / ss;
    gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(total_lba - 1).unwrap_or(u32::MAX))
        .overwrite_lba0(&mut disk)
        .context("writing the protective MBR")?;
    let lb = if ss == 512 {
        gpt::disk::LogicalBlockSize::Lb512
    } else {
        gpt::disk::LogicalBlockSize::Lb4096
    };
    // A fixed disk GUID keeps the fixture reproducible.
    let guid = uuid::Uuid::from_u128(0x6c61_7965_7262_6f6f_7400_0000_0000_0001);
    let mut g = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(lb)
        .create_from_device(&mut disk, Some(guid))
        .context("creating the GPT")?;
    if ss == 512 {
        g.add_partition_at(
            "BIOS-BOOT",
            1,
            BIOS_START / ss,
            BIOS_SIZE / ss,
            gpt::partition_types::BIOS,
            0,
        )
        .context("adding BIOS-BOOT")?;
    }
    g.add_partition_at(
        "EFI-SYSTEM",
        2,
        ESP_START / ss,
        ESP_SIZE / ss,
        gpt::partition_types::EFI,
        0,
    )
    .context("adding EFI-SYSTEM")?;
    g.write().context("writing the GPT")?;

    copy_at(&esp_path, &mut disk, ESP_START)?;
    if spec.with_bootloader && ss == 512 {
        let core_path = work.join("core.img");
        grub_image("i386-pc", &core_path, &early)?;
        let mut core = std::fs::read(&core_path)?;
        let core_lba = BIOS_START / 512;
        patch_core_img(&mut core, core_lba)?;
        if core.len() as u64 > BIOS_SIZE {
            bail!(
                "core.img is {} bytes, larger than the BIOS-BOOT partition",
                core.len()
            );
        }
        disk.seek(SeekFrom::Start(BIOS_START))?;
        disk.write_all(&core)?;
        let boot = std::fs::read("/usr/lib/grub/i386-pc/boot.img")
            .context("reading GRUB's boot.img: install the Debian package 'grub-pc-bin'")?;
        let code = boot_code(&boot, core_lba)?;
        disk.seek(SeekFrom::Start(0))?;
        disk.write_all(&code)?;
    }
    disk.sync_all()?;
    super::cache::remove_tree(&work)?;
    Ok(())
}

/// The first 440 bytes of GRUB's `boot.img` (the rest of the MBR holds the disk
/// signature and partition table) with core.img's first sector at 0x5c.
pub fn boot_code(boot_img: &[u8], core_lba: u64) -> Result<[u8; 440]> {
    if boot_img.len() != 512 || boot_img[510..] != [0x55, 0xaa] {
        bail!("boot.img is not a 512-byte boot sector");
    }
    let mut code = [0u8; 440];
    code.copy_from_slice(&boot_img[..440]);
    code[0x5c..0x64].copy_from_slice(&core_lba.to_le_bytes());
    Ok(code)
}

/// Point diskboot's blocklist (0x1f4: u64 start, u16 sector count, u16 segment) at the
/// sectors following core.img's first one.
pub fn patch_core_img(core: &mut Vec<u8>, core_lba: u64) -> Result<()> {
    if core.len() < 1024 {
        bail!("core.img is implausibly small ({} bytes)", core.len());
    }
    core.resize(core.len().div_ceil(512) * 512, 0);
    let rest = u16::try_from(core.len() / 512 - 1)
        .context("core.img too large for one blocklist entry")?;
    core[0x1f4..0x1fc].copy_from_slice(&(core_lba + 1).to_le_bytes());
    core[0x1fc..0x1fe].copy_from_slice(&rest.to_le_bytes());
    Ok(())
}

fn copy_at(src: &Path, dst: &mut File, offset: u64) -> Result<()> {
    let mut s = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    dst.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        dst.write_all(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_code_and_blocklist_patches() {
        let mut boot = vec![0xeeu8; 512];
        boot[510] = 0x55;
        boot[511] = 0xaa;
        let code = boot_code(&boot, 2048).unwrap();
        assert_eq!(&code[0x5c..0x64], &2048u64.to_le_bytes());
        assert_eq!(code[0x5b], 0xee);
        assert_eq!(code[0x64], 0xee);
        assert!(boot_code(&boot[..400], 1).is_err());

        let mut core = vec![0u8; 146536];
        core[0x1fe..0x200].copy_from_slice(&0x0820u16.to_le_bytes());
        patch_core_img(&mut core, 2048).unwrap();
        assert_eq!(core.len(), 287 * 512);
        assert_eq!(&core[0x1f4..0x1fc], &2049u64.to_le_bytes());
        assert_eq!(&core[0x1fc..0x1fe], &286u16.to_le_bytes());
        assert_eq!(
            &core[0x1fe..0x200],
            &0x0820u16.to_le_bytes(),
            "segment untouched"
        );
    }
}
