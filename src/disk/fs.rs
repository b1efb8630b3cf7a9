//! Filesystem images, populated offline wherever the tools allow: ext4 with `mke2fs -d`,
//! the ESP with the fatfs crate. XFS has no directory-population mode in Debian 12's
//! xfsprogs (only protofiles, which lose hardlinks and xattrs), so the root filesystem is
//! created empty ([`make_empty`]) and the deploy writes into it through a loop mount in
//! the deploy helper's own mount namespace (see [`super::deploy`]).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::Cancel;
use crate::bootimage::definition::parse_vfat_id;
use crate::bootimage::Filesystem;
use crate::cmd;

/// Bytes the files under `dir` occupy (4 KiB blocks, hardlinks once).
pub fn tree_size(dir: &Path) -> Result<u64> {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) -> Result<()> {
        for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let md = e.metadata()?;
            *total += 4096; // inode/dirent share, roughly
            if md.is_dir() {
                walk(&e.path(), seen, total)?;
            } else if md.nlink() == 1 || seen.insert((md.dev(), md.ino())) {
                *total += md.len().div_ceil(4096) * 4096;
            }
        }
        Ok(())
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    walk(dir, &mut seen, &mut total)?;
    Ok(total)
}

pub struct FsSpec<'a> {
    pub fs: Filesystem,
    pub label: &'a str,
    pub uuid: &'a str,
    pub size: u64,
    pub sector_size: u64,
    /// Extra mkfs options (CoreOS's, `crate::disk::coreos::mkfs_options`).
    pub options: &'a [&'a str],
}

/// Create `image` holding a filesystem with the content of `src`.
pub fn make_fs(spec: &FsSpec, src: &Path, image: &Path) -> Result<()> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(image)
        .with_context(|| format!("creating {}", image.display()))?;
    f.set_len(spec.size)?;
    match spec.fs {
        Filesystem::Ext4 => {
            drop(f);
            mke2fs(spec, Some(src), image)
        }
        Filesystem::Xfs => bail!(
            "XFS filesystems cannot be populated offline: create them empty and deploy into them"
        ),
        Filesystem::Vfat => make_vfat(spec, src, f),
    }
}

/// Mount options for a filesystem the deploy writes into. XFS: `allocsize` replaces the
/// dynamic speculative preallocation (which grows with file size and is trimmed only on
/// close or by a background scan) with a fixed 64 KiB per file, so the parallel
/// importer's open files hold no space the root's footprint does not count. `nouuid`:
/// builds running side by side may make roots with one UUID (CoreOS's sentinel, or the
/// same definition and image), which XFS otherwise refuses to mount twice.
pub fn deploy_mount_options(fs: Filesystem) -> &'static str {
    match fs {
        Filesystem::Xfs => "allocsize=64k,nouuid",
        Filesystem::Ext4 | Filesystem::Vfat => "",
    }
}

/// Create `image` (sparse, `spec.size` bytes) holding an empty filesystem, as the deploy
/// expects the root: XFS with the layout's sector size, or ext4.
pub fn make_empty(spec: &FsSpec, image: &Path) -> Result<()> {
    let f = File::create(image).with_context(|| format!("creating {}", image.display()))?;
    f.set_len(spec.size)?;
    drop(f);
    match spec.fs {
        Filesystem::Xfs => {
            cmd::require("mkfs.xfs", "xfsprogs")?;
            let mut c = Command::new("mkfs.xfs");
            c.args([
                "-q",
                "-f",
                "-L",
                spec.label,
                "-m",
                &format!("uuid={}", spec.uuid),
                "-s",
                &format!("size={}", spec.sector_size),
            ])
            .args(spec.options)
            .arg(image);
            cmd::run(&mut c)?;
            Ok(())
        }
        Filesystem::Ext4 => mke2fs(spec, None, image),
        Filesystem::Vfat => bail!("the root filesystem cannot be vfat"),
    }
}

fn mke2fs(spec: &FsSpec, src: Option<&Path>, image: &Path) -> Result<()> {
    cmd::require("mke2fs", "e2fsprogs")?;
    let mut c = Command::new("mke2fs");
    c.args([
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        "4096",
        "-L",
        spec.label,
        "-U",
        spec.uuid,
        "-E",
        "root_owner=0:0",
    ]);
    c.args(spec.options);
    if let Some(src) = src {
        c.arg("-d").arg(src);
    }
    cmd::run(c.arg(image))?;
    Ok(())
}

fn make_vfat(spec: &FsSpec, src: &Path, mut file: File) -> Result<()> {
    let mut label = [b' '; 11];
    for (d, s) in label.iter_mut().zip(spec.label.bytes()) {
        *d = s;
    }
    let opts = fatfs::FormatVolumeOptions::new()
        .volume_label(label)
        .volume_id(parse_vfat_id(spec.uuid)?)
        .bytes_per_sector(spec.sector_size as u16);
    fatfs::format_volume(&mut file, opts).context("formatting the EFI system partition")?;
    file.seek(SeekFrom::Start(0))?;
    let fat = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new())
        .context("opening the new EFI system partition")?;
    copy_into_fat(&fat.root_dir(), src)?;
    fat.unmount()?;
    Ok(())
}

fn copy_into_fat<T: fatfs::ReadWriteSeek>(dir: &fatfs::Dir<T>, src: &Path) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type()?.is_dir() {
            let sub = dir.create_dir(&name)?;
            copy_into_fat(&sub, &e.path())?;
        } else {
            let mut out = dir.create_file(&name)?;
            out.truncate()?;
            let mut input = File::open(e.path())?;
            io::copy(&mut input, &mut out)
                .with_context(|| format!("copying {} to the ESP", e.path().display()))?;
            out.flush()?;
        }
    }
    Ok(())
}

/// Copy `image` into `disk` at `offset`, skipping holes and zero blocks so the disk stays
/// sparse.
pub fn copy_sparse(image: &Path, disk: &mut File, offset: u64, cancel: &Cancel) -> Result<()> {
    let mut input = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let len = input.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        cancel.check()?;
        // Jump over holes.
        let data = seek_data(&input, pos).unwrap_or(pos);
        if data >= len {
            break;
        }
        pos = data;
        input.seek(SeekFrom::Start(pos))?;
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            disk.seek(SeekFrom::Start(offset + pos))?;
            disk.write_all(&buf[..n])
                .with_context(|| format!("copying {} into the disk image", image.display()))?;
        }
        pos += n as u64;
    }
    Ok(())
}

fn seek_data(f: &File, from: u64) -> Option<u64> {
    match rustix::fs::seek(f, rustix::fs::SeekFrom::Data(from)) {
        Ok(at) => Some(at),
        // No data after `from`.
        Err(rustix::io::Errno::NXIO) => Some(u64::MAX),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vfat_image_holds_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("esp");
        fs::create_dir_all(src.join("EFI/BOOT")).unwrap();
        fs::write(src.join("EFI/BOOT/BOOTX64.EFI"), vec![7u8; 100_000]).unwrap();
        for sector in [512u64, 4096] {
            let img = dir.path().join(format!("esp-{sector}.img"));
            let spec = FsSpec {
                fs: Filesystem::Vfat,
                label: "EFI-SYSTEM",
                uuid: "ABCD-1234",
                size: 127 << 20,
                sector_size: sector,
                options: &[],
            };
            make_fs(&spec, &src, &img).unwrap();
            let f = File::open(&img).unwrap();
            let fat = fatfs::FileSystem::new(f, fatfs::FsOptions::new()).unwrap();
            assert_eq!(fat.volume_id(), 0xABCD1234);
            assert_eq!(fat.volume_label().trim_end(), "EFI-SYSTEM");
            let mut data = Vec::new();
            fat.root_dir()
                .open_file("EFI/BOOT/BOOTX64.EFI")
                .unwrap()
                .read_to_end(&mut data)
                .unwrap();
            assert_eq!(data, vec![7u8; 100_000]);
        }
    }

    #[test]
    fn sparse_copy_lands_at_offset() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("part.img");
        let mut f = File::create(&img).unwrap();
        f.set_len(8 << 20).unwrap();
        f.seek(SeekFrom::Start(5 << 20)).unwrap();
        f.write_all(b"hello").unwrap();
        let disk_path = dir.path().join("disk.img");
        let mut disk = fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&disk_path)
            .unwrap();
        disk.set_len(16 << 20).unwrap();
        copy_sparse(&img, &mut disk, 1 << 20, &Cancel::default()).unwrap();
        let all = fs::read(&disk_path).unwrap();
        assert_eq!(&all[(6 << 20)..(6 << 20) + 5], b"hello");
        assert_eq!(all.iter().filter(|&&b| b != 0).count(), 5);
        assert!(
            fs::metadata(&disk_path).unwrap().blocks() * 512 < 4 << 20,
            "disk stayed sparse"
        );
    }
}
