//! Live artifacts from the metal disk a build just assembled, as CoreOS makes them
//! (osbuild's `org.osbuild.coreos.live-artifacts.mono`, formerly coreos-assembler's
//! `cmd-buildextend-live`): the deployment's kernel; its initramfs with a cpio appended
//! that marks it live (`etc/coreos-live-initramfs`), lists the OS features
//! (`etc/coreos/features.json`) and pins the rootfs (`etc/coreos-live-want-rootfs`, a
//! stream hash); `rootfs.img`, an uncompressed cpio whose first member is `root.squashfs`
//! (the metal disk's root filesystem with its /boot and ESP), so the live initramfs can
//! loop-mount it at byte offset 124; and a hybrid ISO holding all three with
//! coreos-installer's embed areas (`coreos/igninfo.json` + `images/ignition.img`,
//! `coreos/kargs.json`, `coreos/miniso.dat`).
//!
//! Pure functions decide the content (kernel arguments, volume ID, embed areas, stream
//! hash, features); [`build`] runs the tools: `mksquashfs` over the disk's filesystems
//! mounted in a private mount namespace, `xorriso` for the ISO.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cancel::Cancel;
use crate::cmd;
use crate::io::newc::NewcWriter;

/// `images/ignition.img`: the Ignition embed area, loaded as a second initrd.
pub const IGNITION_IMG_SIZE: u64 = 256 * 1024;
/// `coreos/miniso.dat`: room for `coreos-installer pack minimal-iso`'s data.
pub const MINISO_DAT_SIZE: u64 = 16 * 1024;
/// Where `root.squashfs`'s data starts in `rootfs.img`: a 110-byte newc header and the
/// name `root.squashfs\0` (14 bytes) padded to 4. The live initramfs mounts it there.
pub const ROOT_SQUASHFS_OFFSET: u64 = 124;
const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";
/// The block size of `rdcore stream-hash` files.
const STREAM_HASH_BLOCK: usize = 2 * 1024 * 1024;
const KARGS_PLACEHOLDER: &str = "@@KERNEL-ARGS@@";
const KARGS_AREA_END: &str = "# COREOS_KARG_EMBED_AREA\n";
/// Where CoreOS images keep their live bootloader templates.
pub const IMAGE_TEMPLATES: &str = "usr/share/coreos-assembler/live";
/// coreos-installer's example config: its keys are the installer-config directives the
/// image's coreos-installer knows.
pub const EXAMPLE_INSTALLER_CONFIG: &str = "usr/share/coreos-installer/example-config.yaml";
pub const IMAGE_COREOS_INSTALLER: &str = "usr/bin/coreos-installer";

/// layerboot's templates, for images without their own (`bootimages/live/`).
const OUR_TEMPLATES: &[(&str, &str)] = &[
    (
        "isolinux/isolinux.cfg",
        include_str!("../../bootimages/live/isolinux/isolinux.cfg"),
    ),
    (
        "EFI/BOOT/grub.cfg",
        include_str!("../../bootimages/live/EFI/BOOT/grub.cfg"),
    ),
];

/// The metal kernel arguments the live bootloaders must not carry: the first-boot
/// variable only GRUB on disk expands, the console (none by default on an ISO), the
/// platform (always `metal`, set by the templates), the tree (the live initramfs finds
/// it) and `root=` (layerboot's non-CoreOS disks name their root partition; a live
/// system has none).
const LIVE_EXCLUDE_KARGS: &[&str] = &[
    "$ignition_firstboot",
    "${ignition_firstboot}",
    "console",
    "ignition.platform.id",
    "ignition.firstboot",
    "ostree",
    "root",
];

/// The live kernel arguments from a metal BLS entry's `options` (pure).
pub fn live_kargs(bls_options: &str) -> Vec<String> {
    bls_options
        .split_whitespace()
        .filter(|a| {
            let key = a.split('=').next().unwrap_or(a);
            !LIVE_EXCLUDE_KARGS.contains(&key)
        })
        .map(str::to_string)
        .collect()
}

/// The ISO's volume ID: `<osname>-<version>`, cut to ISO 9660's 32 bytes (pure).
pub fn volume_id(osname: &str, version: &str) -> String {
    let full = format!("{osname}-{version}");
    let mut end = full.len().min(32);
    while !full.is_char_boundary(end) {
        end -= 1;
    }
    full[..end].to_string()
}

/// `coreos/kargs.json`, as coreos-installer's `iso kargs` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KargsJson {
    pub default: String,
    pub files: Vec<KargsFile>,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KargsFile {
    pub end: String,
    pub offset: u64,
    pub pad: String,
    pub path: String,
}

/// A template with its kernel arguments filled in, and where its embed area lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilledTemplate {
    pub text: String,
    /// (offset, length, default arguments) of the embed area, if the file has one.
    pub area: Option<(u64, u64, String)>,
}

/// Fill `@@KERNEL-ARGS@@` and find the embed area that runs from there to the end of the
/// `#` run before `# COREOS_KARG_EMBED_AREA` (pure; as coreos-assembler computes it).
pub fn fill_template(text: &str, kargs: &str) -> Result<FilledTemplate> {
    let Some(start) = text.find(KARGS_PLACEHOLDER) else {
        return Ok(FilledTemplate {
            text: text.to_string(),
            area: None,
        });
    };
    let filled = text.replacen(KARGS_PLACEHOLDER, kargs, 1);
    let Some(marker) = filled[start..].find(KARGS_AREA_END).map(|i| i + start) else {
        return Ok(FilledTemplate {
            text: filled,
            area: None,
        });
    };
    // The '#' run ends just before the marker's own '#'.
    let run_end = marker;
    let run_start = filled[..run_end]
        .rfind(|c| c != '#')
        .map_or(0, |i| i + 1)
        .max(start);
    ensure!(
        run_start < run_end,
        "the kernel-argument embed area has no '#' padding"
    );
    let default = filled[start..run_start].trim().to_string();
    Ok(FilledTemplate {
        area: Some((start as u64, (run_end - start) as u64, default)),
        text: filled,
    })
}

/// `kargs.json` from the filled templates (pure): every embed area must have the same
/// length and default, as coreos-installer rewrites them all alike.
pub fn kargs_json(files: &[(String, FilledTemplate)]) -> Result<Option<KargsJson>> {
    let mut json: Option<KargsJson> = None;
    let mut sorted: Vec<_> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, t) in sorted {
        let Some((offset, len, default)) = &t.area else {
            continue;
        };
        let entry = KargsFile {
            end: "\n".into(),
            offset: *offset,
            pad: "#".into(),
            path: path.clone(),
        };
        match &mut json {
            None => {
                ensure!(
                    (default.len() as u64) < *len,
                    "{path}: the default kernel arguments ({} bytes) do not fit its embed area ({len} bytes)",
                    default.len()
                );
                json = Some(KargsJson {
                    default: default.clone(),
                    files: vec![entry],
                    size: *len,
                })
            }
            Some(j) => {
                ensure!(
                    j.size == *len,
                    "{path}: its kernel-argument embed area is {len} bytes, another's {}",
                    j.size
                );
                ensure!(
                    &j.default == default,
                    "{path}: its default kernel arguments differ from another config's"
                );
                j.files.push(entry);
            }
        }
    }
    Ok(json)
}

/// `rdcore stream-hash` data: a header, then the sha256 of each 2 MiB block (pure over
/// the reader).
pub fn stream_hash(mut r: impl Read) -> io::Result<String> {
    let mut out = format!("stream-hash sha256 {STREAM_HASH_BLOCK}\n");
    let mut buf = vec![0u8; STREAM_HASH_BLOCK];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = r.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        out += &format!("{:x}\n", Sha256::digest(&buf[..filled]));
        if filled < buf.len() {
            break;
        }
    }
    Ok(out)
}

/// `features.json`, which `coreos-installer {iso,pxe} customize` reads (pure): installer
/// configs only where the image has a coreos-installer (its directives are its example
/// config's keys); live network keyfiles only on CoreOS images, whose initramfs copies
/// them.
pub fn features_json(
    has_coreos_installer: bool,
    example_config: Option<&str>,
    coreos: bool,
) -> Result<String> {
    let mut f = serde_json::Map::new();
    f.insert("installer-config".into(), has_coreos_installer.into());
    if has_coreos_installer {
        if let Some(text) = example_config {
            let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
                .with_context(|| format!("parsing the image's /{EXAMPLE_INSTALLER_CONFIG}"))?;
            let mut d = serde_json::Map::new();
            if let serde_yaml_ng::Value::Mapping(m) = doc {
                for k in m.keys().filter_map(|k| k.as_str()) {
                    d.insert(k.to_string(), true.into());
                }
            }
            f.insert("installer-config-directives".into(), d.into());
        }
    }
    f.insert("live-initrd-network".into(), coreos.into());
    Ok(serde_json::to_string_pretty(&serde_json::Value::Object(f))? + "\n")
}

/// The cpio appended to the initramfs (gzip, as CoreOS appends it).
pub fn live_initramfs_cpio(version: &str, features: &str, want_rootfs: &str) -> Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut w = NewcWriter::new(gz, 1);
    w.dir("etc", 0o755)?;
    w.dir("etc/coreos", 0o755)?;
    w.file(
        "etc/coreos-live-initramfs",
        format!("{version}\n").as_bytes(),
        0o644,
    )?;
    w.file("etc/coreos/features.json", features.as_bytes(), 0o644)?;
    w.file("etc/coreos-live-want-rootfs", want_rootfs.as_bytes(), 0o644)?;
    Ok(w.finish()?.finish()?)
}

/// Zero bytes that bring `len` to the 4-byte boundary the kernel needs before an
/// appended archive.
fn align4(len: u64) -> usize {
    ((4 - len % 4) % 4) as usize
}

/// Write `rootfs.img`: `root.squashfs` first, then the rootfs stamp and the osmet files
/// (uncompressed: the ISO's initramfs mounts the squashfs in place).
pub fn write_rootfs_img(
    dest: &Path,
    squashfs: &Path,
    version: &str,
    osmet: &[(String, PathBuf)],
) -> Result<()> {
    let f = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut w = NewcWriter::new(BufWriter::new(f), 1);
    let sq = File::open(squashfs).with_context(|| format!("opening {}", squashfs.display()))?;
    let size = sq.metadata()?.len();
    w.file_from("root.squashfs", 0o644, size, sq)?;
    w.dir("etc", 0o755)?;
    w.file(
        "etc/coreos-live-rootfs",
        format!("{version}\n").as_bytes(),
        0o644,
    )?;
    for (name, path) in osmet {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let size = f.metadata()?.len();
        w.file_from(name, 0o644, size, f)?;
    }
    let mut bw = w.finish()?;
    bw.flush()?;
    check_squashfs_offset(dest)
}

/// The live initramfs finds the squashfs at a fixed offset: check it is there.
pub fn check_squashfs_offset(rootfs_img: &Path) -> Result<()> {
    let mut f =
        File::open(rootfs_img).with_context(|| format!("opening {}", rootfs_img.display()))?;
    f.seek(SeekFrom::Start(ROOT_SQUASHFS_OFFSET))?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)?;
    ensure!(
        &magic == SQUASHFS_MAGIC,
        "{}: root.squashfs is not at byte {ROOT_SQUASHFS_OFFSET}",
        rootfs_img.display()
    );
    Ok(())
}

/// The PXE files beside the ISO, named as CoreOS names them: `X-live.x86_64.iso` →
/// `X-live-kernel.x86_64`, `X-live-initramfs.x86_64.img`, `X-live-rootfs.x86_64.img`
/// (pure).
pub fn pxe_outputs(iso: &Path) -> PxeOutputs {
    let name = iso
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".iso")
        .unwrap_or(&name)
        .trim_end_matches(".x86_64");
    let at = |n: String| iso.with_file_name(n);
    PxeOutputs {
        kernel: at(format!("{stem}-kernel.x86_64")),
        initramfs: at(format!("{stem}-initramfs.x86_64.img")),
        rootfs: at(format!("{stem}-rootfs.x86_64.img")),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxeOutputs {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
}

/// What the image contributes, read while its deployment was mounted.
#[derive(Debug, Clone, Default)]
pub struct ImageLiveFiles {
    /// The image's live bootloader templates (relative path, text); empty: ours.
    pub templates: Vec<(String, String)>,
    pub example_config: Option<String>,
    pub has_coreos_installer: bool,
    /// `mksquashfs` options from `image.json` (`live-rootfs-fsoptions`).
    pub squashfs_options: Option<String>,
    /// os-release's `PRETTY_NAME`: the osmet files' description, as CoreOS's.
    pub pretty_name: Option<String>,
}

impl ImageLiveFiles {
    /// Read what the live build needs from the deployed tree.
    pub fn read(image: &crate::io::RootedDir, squashfs_options: Option<String>) -> Result<Self> {
        let mut templates = Vec::new();
        if image.is_dir(IMAGE_TEMPLATES) {
            collect_templates(image, Path::new(IMAGE_TEMPLATES), "", &mut templates)?;
        }
        let example_config = image
            .read_opt(EXAMPLE_INSTALLER_CONFIG)?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let pretty_name = image
            .read_opt("usr/lib/os-release")?
            .and_then(|b| os_release_value(&String::from_utf8_lossy(&b), "PRETTY_NAME"));
        Ok(ImageLiveFiles {
            templates,
            example_config,
            has_coreos_installer: image.is_file(IMAGE_COREOS_INSTALLER),
            squashfs_options,
            pretty_name,
        })
    }
}

/// One os-release value, unquoted (pure).
pub fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix(key)?.strip_prefix('=')?;
        Some(v.trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

fn collect_templates(
    image: &crate::io::RootedDir,
    dir: &Path,
    rel: &str,
    out: &mut Vec<(String, String)>,
) -> Result<()> {
    use crate::io::rooted::Kind;
    for (name, kind) in image.list(dir)? {
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        match kind {
            Kind::Dir => collect_templates(image, &dir.join(&name), &r, out)?,
            Kind::File if name != "README-devel.md" => {
                let text = String::from_utf8(image.read(dir.join(&name))?)
                    .with_context(|| format!("/{}: not text", dir.join(&name).display()))?;
                out.push((r, text));
            }
            _ => {}
        }
    }
    Ok(())
}

/// How the UEFI side of the ISO boots.
#[derive(Debug, Clone)]
pub enum EfiBoot {
    /// A GRUB EFI image made for the ISO (it finds the ISO by volume ID and reads
    /// `EFI/BOOT/grub.cfg` there), from these GRUB modules.
    Grub { modules: PathBuf },
    /// The image's own signed chain (bootupd's payload, as staged for the ESP), laid out
    /// by [`removable_efi_layout`]: a stub `grub.cfg` beside its GRUB hands over to
    /// `EFI/<vendor>/grub.cfg` on the ISO.
    Chain { esp: PathBuf, vendor: String },
}

/// Everything [`build`] needs.
pub struct Inputs<'a> {
    pub raw: &'a Path,
    /// The root partition's number (`<loop device>p<N>`).
    pub root_partition: u32,
    pub root_offset: u64,
    pub root_size: u64,
    pub root_mount_options: &'a str,
    pub boot_dir: &'a Path,
    pub esp_dir: &'a Path,
    pub image: &'a ImageLiveFiles,
    pub efi: EfiBoot,
    pub coreos: bool,
    pub osname: &'a str,
    pub version: &'a str,
    pub work: &'a Path,
    /// The deployment, relative to the root filesystem (where the image's
    /// coreos-installer runs).
    pub deploy_path: &'a Path,
    /// The metal image's file name, which names its osmet file.
    pub metal_name: &'a str,
    /// Further disks of the same deployment (metal4k) to pack osmet data for.
    pub osmet_disks: &'a [OsmetDisk],
}

impl Inputs<'_> {
    /// The live set's own (512-byte) metal disk.
    fn metal_disk(&self) -> OsmetDisk {
        OsmetDisk {
            raw: self.raw.to_path_buf(),
            name: self.metal_name.to_string(),
            sector_size: 512,
            root_partition: self.root_partition,
            deploy_path: self.deploy_path.to_path_buf(),
        }
    }
}

/// A raw disk of the same image and stateroot as the live one, for offline installs onto
/// disks of its sector size (CoreOS packs its metal and metal4k images).
#[derive(Debug, Clone)]
pub struct OsmetDisk {
    pub raw: PathBuf,
    /// Its file name, which names its osmet file (`<name>.osmet`).
    pub name: String,
    pub sector_size: u64,
    pub root_partition: u32,
    /// Its deployment, relative to its root filesystem.
    pub deploy_path: PathBuf,
}

/// The staged live artifacts.
#[derive(Debug, Clone)]
pub struct Staged {
    pub iso: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
    pub volume_id: String,
    pub kargs: KargsJson,
    /// rootfs.img carries osmet data: the live system installs with no network.
    pub offline_install: bool,
    /// `coreos/miniso.dat` is filled: `coreos-installer iso extract minimal-iso` works.
    pub minimal_iso: bool,
}

/// Build the live artifacts into `inp.work`.
pub fn build(inp: &Inputs, cancel: &Cancel) -> Result<Staged> {
    for (tool, pkg) in [
        ("mksquashfs", "squashfs-tools"),
        ("xorriso", "xorriso"),
        ("unshare", "util-linux"),
    ] {
        cmd::require(tool, pkg)?;
    }
    let tree = inp.work.join("iso");
    let pxe = tree.join("images/pxeboot");
    for d in [&pxe, &tree.join("coreos"), &tree.join("isolinux")] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let entries = super::bootloader::read_bls_entries(inp.boot_dir)?;
    let entry = entries
        .first()
        .context("the metal disk has no BLS entry to take the kernel from")?;
    let in_boot = |p: &str| inp.boot_dir.join(p.trim_start_matches('/'));
    let kernel = pxe.join("vmlinuz");
    fs::copy(in_boot(&entry.linux), &kernel)
        .with_context(|| format!("copying the kernel {}", entry.linux))?;
    let initrd_src = entry
        .initrd
        .first()
        .context("the BLS entry names no initramfs")?;

    // root.squashfs from the disk's filesystems, as they are on a booted node.
    let squashfs = inp.work.join("root.squashfs");
    let options = inp
        .image
        .squashfs_options
        .clone()
        .unwrap_or_else(|| "-comp zstd".into());
    make_squashfs(inp, &squashfs, &options)?;
    cancel.check()?;
    // Offline install data, made by the image's own coreos-installer (as CoreOS does),
    // where it has one.
    let mut osmet = Vec::new();
    if inp.image.has_coreos_installer {
        let metal = inp.metal_disk();
        for disk in std::iter::once(&metal).chain(inp.osmet_disks) {
            let (sha256, _) = crate::io::sha256_file(&disk.raw)?;
            let dest = inp.work.join(format!("{}.osmet", disk.name));
            pack_osmet(
                inp,
                disk,
                &sha256,
                inp.image.pretty_name.as_deref().unwrap_or(inp.osname),
                &dest,
            )?;
            osmet.push((format!("{}.osmet", disk.name), dest));
            cancel.check()?;
        }
    }
    let rootfs = pxe.join("rootfs.img");
    write_rootfs_img(&rootfs, &squashfs, inp.version, &osmet)?;
    fs::remove_file(&squashfs)?;
    for (_, p) in &osmet {
        fs::remove_file(p)?;
    }
    let want_rootfs =
        stream_hash(File::open(&rootfs).with_context(|| format!("reading {}", rootfs.display()))?)?;
    cancel.check()?;

    let features = features_json(
        inp.image.has_coreos_installer,
        inp.image.example_config.as_deref(),
        inp.coreos,
    )?;
    let initramfs = pxe.join("initrd.img");
    {
        let mut out = File::create(&initramfs)
            .with_context(|| format!("creating {}", initramfs.display()))?;
        let mut src = File::open(in_boot(initrd_src))
            .with_context(|| format!("opening the initramfs {initrd_src}"))?;
        let n = io::copy(&mut src, &mut out)?;
        out.write_all(&[0u8; 3][..align4(n)])?;
        let cpio = live_initramfs_cpio(inp.version, &features, &want_rootfs)?;
        out.write_all(&cpio)?;
        out.write_all(&[0u8; 3][..align4(cpio.len() as u64)])?;
    }

    // The bootloader configs, kernel arguments filled in.
    let volid = volume_id(inp.osname, inp.version);
    let mut kargs = live_kargs(&entry.options);
    kargs.push(format!("coreos.liveiso={volid}"));
    let kargs = kargs.join(" ");
    let mut templates: Vec<(String, String)> = if inp.image.templates.is_empty() {
        OUR_TEMPLATES
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    } else {
        inp.image.templates.clone()
    };
    if let EfiBoot::Chain { vendor, .. } = &inp.efi {
        // The templates' GRUB config goes where the image's GRUB looks (osbuild renames
        // the template's EFI directory to the vendor's).
        for (p, _) in templates.iter_mut() {
            if let Some(rest) = p.strip_prefix("EFI/") {
                if let Some((_, file)) = rest.split_once('/') {
                    *p = format!("EFI/{vendor}/{file}");
                }
            }
        }
    }
    let mut filled = Vec::new();
    for (p, t) in &templates {
        if p == "zipl.prm" {
            continue; // s390x only
        }
        let f = fill_template(t, &kargs)?;
        let dest = tree.join(p);
        fs::create_dir_all(dest.parent().expect("has a parent"))?;
        fs::write(&dest, &f.text).with_context(|| format!("writing {}", dest.display()))?;
        filled.push((p.clone(), f));
    }
    let kargs_json = kargs_json(&filled)?
        .context("the live bootloader templates have no kernel-argument embed area")?;
    fs::write(
        tree.join("coreos/kargs.json"),
        serde_json::to_string_pretty(&kargs_json)? + "\n",
    )?;
    fs::write(
        tree.join("coreos/igninfo.json"),
        "{\n  \"file\": \"images/ignition.img\"\n}\n",
    )?;
    fs::write(tree.join("coreos/features.json"), &features)?;
    zero_file(&tree.join("images/ignition.img"), IGNITION_IMG_SIZE)?;
    zero_file(&tree.join("coreos/miniso.dat"), MINISO_DAT_SIZE)?;

    // BIOS: the build host's isolinux (CoreOS takes it from its build root too).
    for f in [
        "/usr/lib/ISOLINUX/isolinux.bin",
        "/usr/lib/syslinux/modules/bios/ldlinux.c32",
        "/usr/lib/syslinux/modules/bios/libcom32.c32",
        "/usr/lib/syslinux/modules/bios/libutil.c32",
        "/usr/lib/syslinux/modules/bios/vesamenu.c32",
    ] {
        let name = Path::new(f).file_name().expect("file name");
        fs::copy(f, tree.join("isolinux").join(name)).with_context(|| {
            format!("copying {f} (install the Debian packages isolinux and syslinux-common)")
        })?;
    }
    // UEFI: an El Torito FAT image.
    let efi_tree = inp.work.join("efiboot");
    stage_efi(inp, &volid, &efi_tree)?;
    let efiboot = tree.join("images/efiboot.img");
    let size = (super::fs::tree_size(&efi_tree)? + (1 << 20)).next_multiple_of(1 << 20);
    super::fs::make_fs(
        &super::fs::FsSpec {
            fs: crate::bootimage::Filesystem::Vfat,
            label: "EFIBOOT",
            uuid: "7B77-95E7",
            size,
            sector_size: 512,
            options: &[],
            mke2fs_config: None,
        },
        &efi_tree,
        &efiboot,
    )?;
    cancel.check()?;

    let iso = inp.work.join("live.iso");
    let mut c = master_iso(&tree, &iso, &volid, inp);
    cmd::run(&mut c).context("mastering the live ISO with xorriso")?;
    cancel.check()?;

    // `iso extract minimal-iso` data, as CoreOS's build makes it: the same tree mastered
    // the same way without rootfs.img and miniso.dat, packed into the full ISO's
    // miniso.dat by the image's coreos-installer (which also verifies it).
    let minimal_iso = inp.image.has_coreos_installer;
    let rootfs = inp.work.join("rootfs.img");
    fs::rename(pxe.join("rootfs.img"), &rootfs).context("moving rootfs.img out of the ISO tree")?;
    if minimal_iso {
        fs::remove_file(tree.join("coreos/miniso.dat"))?;
        let minimal = inp.work.join("live.iso.minimal");
        cmd::run(&mut master_iso(&tree, &minimal, &volid, inp))
            .context("mastering the minimal ISO with xorriso")?;
        pack_minimal_iso(inp, inp.work, "live.iso", "live.iso.minimal")?;
    }
    Ok(Staged {
        iso,
        kernel,
        initramfs,
        rootfs,
        volume_id: volid,
        kargs: kargs_json,
        offline_install: !osmet.is_empty(),
        minimal_iso,
    })
}

/// The xorriso run that masters `tree` as a hybrid BIOS/UEFI ISO at `iso`.
fn master_iso(tree: &Path, iso: &Path, volid: &str, inp: &Inputs) -> Command {
    let mut c = Command::new("xorriso");
    c.args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(iso)
        .args([
            "-V",
            volid,
            "-volset",
            &format!("{}-{}", inp.osname, inp.version),
        ])
        .args(["-r", "-J", "-joliet-long"])
        .args([
            "-b",
            "isolinux/isolinux.bin",
            "-c",
            "isolinux/boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
        ])
        .args([
            "-eltorito-alt-boot",
            "-e",
            "images/efiboot.img",
            "-no-emul-boot",
        ])
        // Hybrid: an MBR and a GPT with the ESP, so the ISO also boots written to a disk.
        .args([
            "-isohybrid-mbr",
            "/usr/lib/ISOLINUX/isohdpfx.bin",
            "-isohybrid-gpt-basdat",
        ])
        .arg(tree);
    c
}

fn zero_file(path: &Path, size: u64) -> Result<()> {
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size)?;
    Ok(())
}

/// The GRUB config that finds the ISO by its volume ID and reads `dir/grub.cfg` there.
pub fn iso_grub_stub(volid: &str, dir: &str) -> String {
    format!("search --no-floppy --label \"{volid}\" --set root\nset prefix=($root)/{dir}\nconfigfile $prefix/grub.cfg\nboot\n")
}

fn stage_efi(inp: &Inputs, volid: &str, dest: &Path) -> Result<()> {
    let boot = dest.join("EFI/BOOT");
    fs::create_dir_all(&boot).with_context(|| format!("creating {}", boot.display()))?;
    match &inp.efi {
        EfiBoot::Grub { modules } => {
            cmd::require("grub-mkimage", "grub-common")?;
            let early = inp.work.join("iso-early.cfg");
            fs::write(&early, iso_grub_stub(volid, "EFI/BOOT"))?;
            let mut c = Command::new("grub-mkimage");
            c.arg("-d")
                .arg(modules)
                .arg("-c")
                .arg(&early)
                .arg("-o")
                .arg(boot.join("BOOTX64.EFI"))
                .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT"])
                .args(super::bootloader::EFI_MODULES)
                // The disk image's modules, and ISO 9660 to read the ISO.
                .arg("iso9660");
            cmd::run(&mut c).context("making the live ISO's GRUB EFI image")?;
        }
        EfiBoot::Chain { esp, vendor } => {
            let mut files = Vec::new();
            list_files(&esp.join("EFI"), "", &mut files)?;
            for (from, to) in removable_efi_layout(&files, vendor) {
                let src = esp.join("EFI").join(&from);
                fs::copy(&src, boot.join(&to))
                    .with_context(|| format!("copying {}", src.display()))?;
            }
            fs::write(
                boot.join("grub.cfg"),
                iso_grub_stub(volid, &format!("EFI/{vendor}")),
            )?;
        }
    }
    Ok(())
}

/// Regular files under `dir`, as `/`-separated paths relative to it.
fn list_files(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let ft = e.file_type()?;
        if ft.is_dir() {
            list_files(&e.path(), &r, out)?;
        } else if ft.is_file() {
            out.push(r);
        }
    }
    Ok(())
}

/// Where the files of a bootupd ESP (paths under `EFI/`) go in the ISO's El Torito image,
/// all in `EFI/BOOT` as CoreOS's build lays out removable media (osbuild's
/// `makeefi.mkefidir`): shim's fallback (`BOOT/fb*.efi`) and its `BOOT*.CSV` are left
/// out, since they would create firmware boot entries and reset; so are the vendor's
/// copies of shim (`BOOTX64.EFI` is shim) and its `grub.cfg` (the stub replaces it); the
/// rest of the vendor directory (GRUB, MOK manager) moves beside shim, which loads GRUB
/// from its own directory. Returns (from, file name in `EFI/BOOT`), sorted (pure).
pub fn removable_efi_layout(files: &[String], vendor: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = files
        .iter()
        .filter_map(|f| {
            let (dir, name) = f.split_once('/')?;
            if name.contains('/') {
                return None;
            }
            let lower = name.to_ascii_lowercase();
            let keep = if dir.eq_ignore_ascii_case("BOOT") {
                !(lower.starts_with("fb") && lower.ends_with(".efi")) && lower != "grub.cfg"
            } else if dir == vendor {
                let fallback_csv = lower.starts_with("boot") && lower.ends_with(".csv");
                let shim_copy = lower.starts_with("shim") && lower.ends_with(".efi");
                !fallback_csv && !shim_copy && lower != "grub.cfg"
            } else {
                false
            };
            keep.then(|| (f.clone(), name.to_string()))
        })
        .collect();
    out.sort();
    out
}

/// mksquashfs's cache bound, unless the options set one: its default is a quarter of the
/// machine's memory, which its caches fill as the image grows; bounded, the build's peak
/// memory stays flat in image size.
pub const SQUASHFS_MEM: &str = "512M";

/// The mksquashfs options: the image's (or the default), with [`SQUASHFS_MEM`] (pure).
pub fn squashfs_args(options: &str) -> Vec<String> {
    let mut args: Vec<String> = options.split_whitespace().map(str::to_string).collect();
    if !args.iter().any(|a| a == "-mem") {
        args.extend(["-mem".into(), SQUASHFS_MEM.into()]);
    }
    args
}

/// `mksquashfs` of the disk's root filesystem with its /boot and ESP bound in, as a node
/// booted from it sees them; in a private mount namespace, read-only.
fn make_squashfs(inp: &Inputs, dest: &Path, options: &str) -> Result<()> {
    let mnt = inp.work.join("squashfs-root");
    fs::create_dir_all(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
    let mut mount_opts = format!(
        "ro,loop,offset={},sizelimit={}",
        inp.root_offset, inp.root_size
    );
    if !inp.root_mount_options.is_empty() {
        mount_opts += ",";
        mount_opts += inp.root_mount_options;
    }
    // The ESP goes to /boot/efi where the boot filesystem has that directory (CoreOS's
    // have it for bootupd).
    const SCRIPT: &str = r#"set -eu
mnt=$1 raw=$2 opts=$3 boot=$4 esp=$5 out=$6; shift 6
mount -o "$opts" "$raw" "$mnt"
mount --bind "$boot" "$mnt/boot"
if [ -d "$mnt/boot/efi" ]; then mount --bind "$esp" "$mnt/boot/efi"; fi
mksquashfs "$mnt" "$out" -noappend -no-progress "$@" >/dev/null
"#;
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        SCRIPT,
        "sh",
    ])
    .arg(&mnt)
    .arg(inp.raw)
    .arg(&mount_opts)
    .arg(inp.boot_dir)
    .arg(inp.esp_dir)
    .arg(dest)
    .args(squashfs_args(options));
    cmd::run(&mut c).context("making the live root squashfs (mksquashfs)")?;
    Ok(())
}

/// The file CoreOS's live dracut module installs (`is-live-image`), by which the image's
/// initramfs is known to boot live.
pub const LIVE_HOOK: &str = "usr/bin/is-live-image";

/// Largest initramfs the live check reads from an image (CoreOS's are about 100 MiB).
pub const MAX_INITRAMFS: u64 = 1 << 30;

/// Whether `member` is among an initramfs's entries (pure over its bytes). An initramfs
/// is a run of segments, as the kernel unpacks it: uncompressed newc archives (early
/// microcode), compressed ones (gzip, zstd, xz), with zero padding between them.
pub fn initramfs_has_member(data: &[u8], member: &str) -> Result<bool> {
    use crate::io::decompress::Compression;
    use crate::io::newc::{hex_field, pad4, CRC_MAGIC, HEADER_LEN, MAGIC};
    let mut pos = 0usize;
    loop {
        while data.get(pos) == Some(&0) {
            pos += 1;
        }
        if pos >= data.len() {
            return Ok(false);
        }
        let rest = &data[pos..];
        if rest.starts_with(MAGIC) || rest.starts_with(CRC_MAGIC) {
            // One uncompressed entry at a time.
            let header = rest.get(..HEADER_LEN).context("truncated cpio header")?;
            let size = hex_field(header, 6)? as usize;
            let namesize = hex_field(header, 11)? as usize;
            let name = rest
                .get(HEADER_LEN..HEADER_LEN + namesize.saturating_sub(1))
                .context("truncated cpio member name")?;
            let name = String::from_utf8_lossy(name);
            if name.trim_start_matches("./").trim_start_matches('/') == member {
                return Ok(true);
            }
            let data_start = HEADER_LEN + namesize + pad4(HEADER_LEN + namesize);
            pos += data_start
                .checked_add(size)
                .map(|p| p + pad4(size))
                .context("cpio member size overflows")?;
            continue;
        }
        // A compressed segment: decoded alone, so the next one starts where it ended.
        let (found, left) = match Compression::sniff(rest) {
            Compression::Gzip => {
                let mut d = flate2::bufread::GzDecoder::new(rest);
                let found = scan_names(&mut d, member)?;
                (found, d.into_inner().len())
            }
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(rest)?.single_frame();
                let found = scan_names(&mut d, member)?;
                (found, d.finish().len())
            }
            Compression::Xz => {
                let mut d = xz2::bufread::XzDecoder::new(rest);
                let found = scan_names(&mut d, member)?;
                (found, d.into_inner().len())
            }
            Compression::Uncompressed => {
                bail!("an initramfs segment at byte {pos} is neither cpio nor gzip, zstd or xz")
            }
        };
        if found {
            return Ok(true);
        }
        pos = data.len() - left;
    }
}

/// Read a decompressed newc stream to its end; whether a member is named `member` (its
/// name is searched after a header, bare or with a leading `./` or `/`).
fn scan_names(r: &mut impl Read, member: &str) -> Result<bool> {
    use crate::io::newc::HEADER_LEN;
    let needle = format!("/{member}\0");
    let bare = format!("{member}\0");
    let mut buf = vec![0u8; 1 << 20];
    let mut carry: Vec<u8> = Vec::new();
    let mut found = false;
    loop {
        let n = r.read(&mut buf).context("decompressing the initramfs")?;
        if n == 0 {
            return Ok(found);
        }
        if found {
            continue;
        }
        carry.extend_from_slice(&buf[..n]);
        if find(&carry, needle.as_bytes()) || find_after_header(&carry, bare.as_bytes()) {
            found = true;
            continue;
        }
        let keep = needle.len() + HEADER_LEN;
        if carry.len() > keep {
            carry.drain(..carry.len() - keep);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `needle` directly after a newc header (the header's magic 110 bytes before it).
fn find_after_header(hay: &[u8], needle: &[u8]) -> bool {
    use crate::io::newc::{HEADER_LEN, MAGIC};
    hay.windows(needle.len())
        .enumerate()
        .any(|(i, w)| w == needle && i >= HEADER_LEN && hay[i - HEADER_LEN..].starts_with(MAGIC))
}

/// `coreos-installer pack osmet` of the metal disk, by the image's own coreos-installer
/// (as CoreOS's build does): the tool mounts the disk's boot and root partitions itself,
/// by label, from the loop device it is given.
fn pack_osmet(
    inp: &Inputs,
    disk: &OsmetDisk,
    sha256: &str,
    description: &str,
    dest: &Path,
) -> Result<()> {
    let out = inp.work.join("osmet-out");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    run_image_coreos_installer(
        inp,
        disk,
        &out,
        &[
            "pack",
            "osmet",
            LOOP_DEVICE_ARG,
            "--description",
            description,
            "--checksum",
            sha256,
            "--output",
            "/run/layerboot/metal.osmet",
        ],
    )
    .with_context(|| {
        format!(
            "making the offline install data for {} with the image's coreos-installer (pack osmet)",
            disk.name
        )
    })?;
    let made = out.join("metal.osmet");
    fs::rename(&made, dest).with_context(|| format!("moving {}", made.display()))?;
    Ok(())
}

/// `coreos-installer pack minimal-iso FULL MINIMAL --consume`, by the image's own
/// coreos-installer: writes into the full ISO's `coreos/miniso.dat` what `iso extract
/// minimal-iso` rebuilds the minimal ISO from (both files in `dir`).
fn pack_minimal_iso(inp: &Inputs, dir: &Path, full: &str, minimal: &str) -> Result<()> {
    let full = format!("/run/layerboot/{full}");
    let minimal = format!("/run/layerboot/{minimal}");
    run_image_coreos_installer(
        inp,
        &inp.metal_disk(),
        dir,
        &["pack", "minimal-iso", &full, &minimal, "--consume"],
    )
    .context("packing the minimal ISO into the live ISO with the image's coreos-installer (pack minimal-iso)")
}

/// Stands for the metal disk's loop device in [`run_image_coreos_installer`]'s arguments.
const LOOP_DEVICE_ARG: &str = "@LOOP-DEVICE@";

/// Run the image's `/usr/bin/coreos-installer` with `args`: `disk` on a read-only loop
/// device of its sector size with its partitions added (`partx`: this kernel does not
/// scan GPT on loop devices), the deployment from its root partition as the tool's root,
/// in a private mount namespace; `dir` is bound at `/run/layerboot` inside it.
///
/// The device is attached with `--partscan` although the scan finds nothing here: the
/// kernel keeps `partx`-added partitions of a loop device without that flag after it is
/// detached, and whoever gets the device next then fails with "error adding partition"
/// (a CI run failed so). With the flag, attaching drops partitions another user left
/// and detaching drops ours; `partx -u` adds only what a scanning kernel has not.
fn run_image_coreos_installer(
    inp: &Inputs,
    disk: &OsmetDisk,
    dir: &Path,
    args: &[&str],
) -> Result<()> {
    for (tool, pkg) in [
        ("losetup", "mount"),
        ("partx", "util-linux"),
        ("chroot", "coreutils"),
        ("bash", "bash"),
    ] {
        cmd::require(tool, pkg)?;
    }
    let mnt = inp.work.join("image-tool-root");
    fs::create_dir_all(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
    const SCRIPT: &str = r#"set -euo pipefail
raw=$1 mnt=$2 deploy=$3 dir=$4 root_part=$5 placeholder=$6 sector=$7
shift 7
dev=$(losetup --find --show --read-only --partscan --sector-size "$sector" "$raw")
cleanup() {
    umount -R "$mnt" 2>/dev/null || true
    partx -d "$dev" 2>/dev/null || true
    losetup -d "$dev"
}
trap cleanup EXIT
partx -u "$dev"
mount -o ro,nouuid "${dev}p$root_part" "$mnt" 2>/dev/null || mount -o ro "${dev}p$root_part" "$mnt"
d=$mnt/$deploy
mount -t tmpfs tmpfs "$d/run"
mount -t tmpfs tmpfs "$d/tmp"
mount --rbind /dev "$d/dev"
mount -t proc proc "$d/proc"
mount -t sysfs sysfs "$d/sys"
mkdir "$d/run/layerboot"
mount --bind "$dir" "$d/run/layerboot"
args=()
for a in "$@"; do
    if [[ $a == "$placeholder" ]]; then args+=("$dev"); else args+=("$a"); fi
done
chroot "$d" /usr/bin/coreos-installer "${args[@]}"
"#;
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "bash",
        "-c",
        SCRIPT,
        "bash",
    ])
    .arg(&disk.raw)
    .arg(&mnt)
    .arg(&disk.deploy_path)
    .arg(dir)
    .arg(disk.root_partition.to_string())
    .arg(LOOP_DEVICE_ARG)
    .arg(disk.sector_size.to_string())
    .args(args);
    cmd::run(&mut c)?;
    Ok(())
}

/// Bail with the one line that says why an image cannot boot live (pure over what the
/// deployed initramfs holds).
pub fn check_live_capable(initramfs_has_live_hook: bool) -> Result<()> {
    if !initramfs_has_live_hook {
        bail!("the image cannot boot live: its initramfs has no live-root support (CoreOS's 35coreos-live dracut module, which installs /usr/bin/is-live-image)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_kargs_drop_what_a_live_boot_cannot_use() {
        let cases = [
            (
                "$ignition_firstboot ostree=/ostree/boot.1/fedora-coreos/ab/0 ignition.platform.id=metal console=tty0 console=ttyS0,115200n8 mitigations=auto,nosmt",
                vec!["mitigations=auto,nosmt"],
            ),
            (
                "root=LABEL=root rw ostree=/ostree/boot.1/default/cd/0 rd.neednet=1 ip=dhcp ignition.firstboot",
                vec!["rw", "rd.neednet=1", "ip=dhcp"],
            ),
            ("", vec![]),
        ];
        for (options, want) in cases {
            assert_eq!(live_kargs(options), want, "{options}");
        }
    }

    #[test]
    fn volume_id_is_cut_to_32_bytes() {
        assert_eq!(volume_id("rhcos", "9.6.20250101-0"), "rhcos-9.6.20250101-0");
        let long = volume_id("fedora-coreos", "41.20241027.3.0.dev.extra");
        assert_eq!(long, "fedora-coreos-41.20241027.3.0.de");
        assert_eq!(long.len(), 32);
        // never inside a character
        assert_eq!(volume_id(&"é".repeat(20), "1").len(), 32);
    }

    #[test]
    fn template_embed_area_matches_coreos_assembler() {
        let t = "linux /v @@KERNEL-ARGS@@ ignition.firstboot\n########################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################################## COREOS_KARG_EMBED_AREA\ninitrd /i\n";
        let f = fill_template(t, "a=1 coreos.liveiso=X").unwrap();
        let (offset, len, default) = f.area.clone().unwrap();
        assert_eq!(offset, 9);
        assert_eq!(default, "a=1 coreos.liveiso=X ignition.firstboot");
        let area = &f.text[offset as usize..(offset + len) as usize];
        // The area covers the arguments, their newline and the '#' run but the marker's
        // own '#'.
        assert!(area.starts_with("a=1 coreos.liveiso=X ignition.firstboot\n#"));
        assert!(area.ends_with('#'));
        assert_eq!(
            &f.text[(offset + len) as usize..],
            "# COREOS_KARG_EMBED_AREA\ninitrd /i\n"
        );
        // No placeholder: copied as is.
        assert_eq!(fill_template("x\n", "k").unwrap().area, None);
    }

    #[test]
    fn kargs_json_needs_equal_areas() {
        let area = |len: u64, d: &str| FilledTemplate {
            text: String::new(),
            area: Some((5, len, d.into())),
        };
        let j = kargs_json(&[
            ("isolinux/isolinux.cfg".into(), area(900, "a b")),
            ("EFI/BOOT/grub.cfg".into(), area(900, "a b")),
            (
                "isolinux/boot.msg".into(),
                FilledTemplate {
                    text: "m".into(),
                    area: None,
                },
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(j.size, 900);
        assert_eq!(j.default, "a b");
        let paths: Vec<_> = j.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["EFI/BOOT/grub.cfg", "isolinux/isolinux.cfg"]);
        assert!(kargs_json(&[("a".into(), area(900, "x")), ("b".into(), area(800, "x"))]).is_err());
        assert!(kargs_json(&[("a".into(), area(900, "x")), ("b".into(), area(900, "y"))]).is_err());
        assert!(kargs_json(&[("a".into(), area(2, "xyz"))]).is_err());
    }

    #[test]
    fn our_templates_have_one_embed_area_each() {
        let filled: Vec<_> = OUR_TEMPLATES
            .iter()
            .map(|(p, t)| {
                (
                    p.to_string(),
                    fill_template(t, "k=v coreos.liveiso=L").unwrap(),
                )
            })
            .collect();
        let j = kargs_json(&filled).unwrap().unwrap();
        assert_eq!(j.files.len(), 2);
        assert_eq!(
            j.default,
            "k=v coreos.liveiso=L ignition.firstboot ignition.platform.id=metal"
        );
        assert!(j.size > 1000);
    }

    #[test]
    fn stream_hash_is_per_2mib_block() {
        let data = vec![7u8; STREAM_HASH_BLOCK + 10];
        let h = stream_hash(&data[..]).unwrap();
        let lines: Vec<_> = h.lines().collect();
        assert_eq!(lines[0], "stream-hash sha256 2097152");
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[1],
            format!("{:x}", Sha256::digest(&data[..STREAM_HASH_BLOCK]))
        );
        assert_eq!(
            lines[2],
            format!("{:x}", Sha256::digest(&data[STREAM_HASH_BLOCK..]))
        );
        assert_eq!(stream_hash(&b""[..]).unwrap().lines().count(), 1);
    }

    #[test]
    fn features_follow_the_image() {
        let f: serde_json::Value = serde_json::from_str(
            &features_json(true, Some("image-url: x\ndest-device: /dev/sda\n"), true).unwrap(),
        )
        .unwrap();
        assert_eq!(f["installer-config"], true);
        assert_eq!(f["installer-config-directives"]["dest-device"], true);
        assert_eq!(f["live-initrd-network"], true);
        let f: serde_json::Value =
            serde_json::from_str(&features_json(false, None, false).unwrap()).unwrap();
        assert_eq!(f["installer-config"], false);
        assert!(f.get("installer-config-directives").is_none());
    }

    #[test]
    fn rootfs_img_puts_the_squashfs_at_124() {
        let dir = tempfile::tempdir().unwrap();
        let sq = dir.path().join("root.squashfs");
        fs::write(&sq, b"hsqs and the rest").unwrap();
        let img = dir.path().join("rootfs.img");
        write_rootfs_img(&img, &sq, "1.0", &[]).unwrap();
        let bytes = fs::read(&img).unwrap();
        assert_eq!(&bytes[124..128], b"hsqs");
        let mut members = std::collections::BTreeMap::new();
        crate::io::newc::parse_regular_files(&bytes, &mut members).unwrap();
        assert_eq!(members["etc/coreos-live-rootfs"], b"1.0\n");
        fs::write(&sq, b"nope").unwrap();
        assert!(write_rootfs_img(&img, &sq, "1.0", &[]).is_err());
    }

    #[test]
    fn appended_cpio_carries_the_live_stamps() {
        let gz = live_initramfs_cpio("42", "{}\n", "stream-hash sha256 2097152\n").unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        let mut members = std::collections::BTreeMap::new();
        crate::io::newc::parse_regular_files(&raw, &mut members).unwrap();
        assert_eq!(members["etc/coreos-live-initramfs"], b"42\n");
        assert_eq!(members["etc/coreos/features.json"], b"{}\n");
        assert!(members.contains_key("etc/coreos-live-want-rootfs"));
    }

    #[test]
    fn live_hook_is_found_in_every_part_of_an_initramfs() {
        let cpio = |names: &[&str]| {
            let mut w = NewcWriter::new(Vec::new(), 1);
            for n in names {
                w.file(n, b"x", 0o755).unwrap();
            }
            w.finish().unwrap()
        };
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        };
        let early = cpio(&["kernel/x86/microcode/GenuineIntel.bin"]);
        let with = cpio(&["usr/bin/bash", "usr/bin/is-live-image"]);
        let dotted = cpio(&["./usr/bin/is-live-image"]);
        let without = cpio(&["usr/bin/bash", "usr/bin/is-live-image-not"]);
        let cases: Vec<(Vec<u8>, bool)> = vec![
            (with.clone(), true),
            ([early.clone(), gz(&with)].concat(), true),
            ([early.clone(), gz(&dotted)].concat(), true),
            ([early.clone(), gz(&without)].concat(), false),
            (gz(&without), false),
            ([gz(&without), gz(&with)].concat(), true),
        ];
        let padded = [gz(&without), vec![0; 3], with.clone()].concat();
        let xz = {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&with).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&without[..], 1).unwrap();
        let cases = [
            cases,
            vec![
                (padded, true),
                ([zst.clone(), xz].concat(), true),
                (zst, false),
                (b"junk".to_vec(), false),
            ],
        ]
        .concat();
        for (i, (data, want)) in cases.into_iter().enumerate() {
            if i == 9 {
                assert!(initramfs_has_member(&data, LIVE_HOOK).is_err());
                continue;
            }
            assert_eq!(
                initramfs_has_member(&data, LIVE_HOOK).unwrap(),
                want,
                "case {i}"
            );
        }
        assert!(check_live_capable(false)
            .unwrap_err()
            .to_string()
            .contains("cannot boot live"));
    }

    #[test]
    fn removable_media_efi_layout_is_coreos_s() {
        let esp: Vec<String> = [
            "BOOT/BOOTX64.EFI",
            "BOOT/fbx64.efi",
            "debian/shimx64.efi",
            "debian/grubx64.efi",
            "debian/mmx64.efi",
            "debian/BOOTX64.CSV",
            "debian/grub.cfg",
            "debian/fonts/unicode.pf2",
            "other/x.efi",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got = removable_efi_layout(&esp, "debian");
        let want: Vec<(String, String)> = [
            ("BOOT/BOOTX64.EFI", "BOOTX64.EFI"),
            ("debian/grubx64.efi", "grubx64.efi"),
            ("debian/mmx64.efi", "mmx64.efi"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
        // Fedora's names.
        let esp: Vec<String> = [
            "BOOT/BOOTX64.EFI",
            "BOOT/fbx64.efi",
            "fedora/shim.efi",
            "fedora/shimx64.efi",
            "fedora/grubx64.efi",
            "fedora/BOOTX64.CSV",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let names: Vec<String> = removable_efi_layout(&esp, "fedora")
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(names, ["BOOTX64.EFI", "grubx64.efi"]);
    }

    #[test]
    fn squashfs_memory_is_bounded_unless_the_image_says() {
        assert_eq!(
            squashfs_args("-comp zstd"),
            ["-comp", "zstd", "-mem", SQUASHFS_MEM]
        );
        assert_eq!(
            squashfs_args("-comp xz -mem 2G"),
            ["-comp", "xz", "-mem", "2G"]
        );
    }

    #[test]
    fn os_release_values_are_unquoted() {
        let t = "NAME=\"Fedora Linux\"\nPRETTY_NAME=\"Fedora CoreOS 41.20241027.3.0\"\nID=fedora\nVARIANT_ID='coreos'\n";
        assert_eq!(
            os_release_value(t, "PRETTY_NAME").unwrap(),
            "Fedora CoreOS 41.20241027.3.0"
        );
        assert_eq!(os_release_value(t, "ID").unwrap(), "fedora");
        assert_eq!(os_release_value(t, "VARIANT_ID").unwrap(), "coreos");
        assert_eq!(os_release_value(t, "NAM"), None);
    }

    #[test]
    fn pxe_names_follow_the_iso() {
        let p = pxe_outputs(Path::new("/o/layered-1.0-live.x86_64.iso"));
        assert_eq!(p.kernel, Path::new("/o/layered-1.0-live-kernel.x86_64"));
        assert_eq!(
            p.initramfs,
            Path::new("/o/layered-1.0-live-initramfs.x86_64.img")
        );
        assert_eq!(p.rootfs, Path::new("/o/layered-1.0-live-rootfs.x86_64.img"));
        let p = pxe_outputs(Path::new("x.iso"));
        assert_eq!(p.kernel, Path::new("x-kernel.x86_64"));
    }
}
