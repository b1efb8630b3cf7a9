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
    /// Extra mkfs options ([`super::mkfs::MkfsSettings::options`]).
    pub options: &'a [String],
    /// The image's `mke2fs.conf` (ext4): its feature defaults instead of the host's.
    pub mke2fs_config: Option<&'a Path>,
}

/// mkfs.xfs's arguments for `spec`, all but the target: shared by the root's creation and
/// the dry runs that compare the host's mkfs.xfs with the image's.
pub fn xfs_args(spec: &FsSpec) -> Vec<String> {
    let mut a: Vec<String> = [
        "-q".to_string(),
        "-f".into(),
        "-L".into(),
        spec.label.into(),
        "-m".into(),
        format!("uuid={}", spec.uuid),
        "-s".into(),
        format!("size={}", spec.sector_size),
    ]
    .into();
    a.extend(spec.options.iter().cloned());
    a
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
            c.args(xfs_args(spec)).arg(image);
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
    if let Some(conf) = spec.mke2fs_config {
        c.env("MKE2FS_CONFIG", conf);
    }
    if let Some(src) = src {
        c.arg("-d").arg(src);
    }
    let made = cmd::run(c.arg(image));
    match spec.mke2fs_config {
        Some(conf) => made.with_context(|| {
            format!(
                "making ext4 with the image's mke2fs.conf (staged as {})",
                conf.display()
            )
        })?,
        None => made?,
    };
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

    /// The "Filesystem features:" of an ext4 image, from the real dumpe2fs.
    fn ext4_features(img: &Path) -> Vec<String> {
        let out = Command::new("dumpe2fs")
            .arg("-h")
            .arg(img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Filesystem features:"))
            .expect("a features line")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn ext4_features_follow_the_image_s_mke2fs_conf() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("boot");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("loader.conf"), "x").unwrap();
        // An image whose mke2fs turns on orphan_file and leaves out 64bit, unlike the
        // build host's (Debian 12's mke2fs.conf has 64bit and no orphan_file).
        let conf = dir.path().join("image-mke2fs.conf");
        fs::write(
            &conf,
            "[defaults]\n\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr\n\
             \tblocksize = 4096\n\tinode_size = 256\n\tinode_ratio = 16384\n\
             [fs_types]\n\text4 = {\n\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,dir_nlink,extra_isize,orphan_file\n\t}\n",
        )
        .unwrap();
        let options = ["-O".to_string(), "metadata_csum_seed".to_string()];
        let made = |config: Option<&Path>, name: &str| {
            let img = dir.path().join(name);
            let spec = FsSpec {
                fs: Filesystem::Ext4,
                label: "boot",
                uuid: "96d15588-3596-4b3c-adca-a2ff7279ea63",
                size: 64 << 20,
                sector_size: 512,
                options: &options,
                mke2fs_config: config,
            };
            make_fs(&spec, &src, &img).unwrap();
            ext4_features(&img)
        };
        let image = made(Some(&conf), "image.img");
        let has = |f: &[String], name: &str| f.iter().any(|x| x == name);
        assert!(
            has(&image, "orphan_file") && !has(&image, "64bit"),
            "{image:?}"
        );
        assert!(has(&image, "metadata_csum_seed"), "{image:?}");
        // The control: without the image's configuration the host's defaults apply.
        let host = made(None, "host.img");
        assert_ne!(image, host);
    }

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
                mke2fs_config: None,
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
