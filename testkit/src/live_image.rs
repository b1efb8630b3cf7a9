//! A live-capable variant of the example layered image (tag `live`), the image side of
//! `layerboot disk … -p live`: one more derived layer on top of the cached layered image
//! (as `RUN … && ostree container commit` would add it) that
//! - appends to `/usr/lib/modules/<kver>/initramfs.img` a second (uncompressed newc)
//!   archive with a stand-in for CoreOS's `35coreos-live` dracut module, written for the
//!   Debian example (files in `live/`):
//!   `/usr/bin/is-live-image` (exit 0 iff `/etc/coreos-live-initramfs` exists), the
//!   `live-generator` systemd generator (squashfs root from `/root.squashfs` for PXE, or
//!   from the ISO named by `coreos.liveiso=VOLID` at `images/pxeboot/rootfs.img` offset
//!   124; ephemeral tmpfs `/etc` and `/var`; `/run/ostree-live`), `/usr/sbin/ostree-cmdline`
//!   (synthesizes `ostree=` for ostree-prepare-root), and units that load the loop /
//!   squashfs / iso9660 / CD-ROM modules, check the PXE rootfs version, copy `/config.ign`
//!   to Ignition's `/usr/lib/ignition/user.ign` and keep PXE osmet files; and, for disks
//!   installed from it, a unit that takes `/boot/ignition/config.ign` (what
//!   `coreos-installer install --ignition-file` writes) as the user config on first boot;
//!   the initramfs already has every kernel module a live boot needs (`loop`, `squashfs`,
//!   `isofs`, `cdrom`, `sr_mod`), so none is added;
//! - adds `/usr/bin/coreos-installer` (the host's build, see [`coreos_installer_binary`])
//!   and `/usr/share/coreos-installer/example-config.yaml`;
//! - adds a drop-in that keeps the example's first-boot stamp removal from failing on a
//!   live system (its /boot is in the read-only squashfs);
//! - adds a real-root unit that extracts the live ISO's osmet files from `rootfs.img` on
//!   the ISO into `/run/coreos-installer/osmet` with the image's coreos-installer (the
//!   initramfs has no cpio reader), standing in for CoreOS's
//!   `coreos-liveiso-persist-osmet.service`, and a tmpfs `/tmp` as CoreOS has (the live
//!   root is read-only);
//! - replaces the marker, so a boot proves that *this* image booted.
//!
//! Without the live stamp (`/etc/coreos-live-initramfs`, which only the live artifacts'
//! builder appends) the initramfs boots the image's metal disk exactly as before.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cache::{cached_fixture, recipe_hash};
use super::layered_image::{
    append_layer, layered_image, tag_digest, LayerEntry, LAYERED_TAG, MARKER_PATH,
};
use layerboot::cmd;
use layerboot::disk::SourceImage;
use layerboot::io::newc::NewcWriter;

pub const LIVE_TAG: &str = "live";

const RECIPE_VERSION: &[u8] = b"live-image v1";

/// Where the image carries coreos-installer and its example config.
pub const COREOS_INSTALLER_PATH: &str = "usr/bin/coreos-installer";
pub const EXAMPLE_CONFIG_PATH: &str = "usr/share/coreos-installer/example-config.yaml";
const EXAMPLE_CONFIG: &[u8] = include_bytes!("live/example-config.yaml");
/// Drop-in (in the real root) for the example's first-boot stamp removal: the stamp of a
/// live system is in the read-only squashfs.
const FIRSTBOOT_DROPIN_PATH: &str =
    "usr/lib/systemd/system/layerboot-firstboot-complete.service.d/50-layerboot-live.conf";
const FIRSTBOOT_DROPIN: &[u8] = include_bytes!("live/layerboot-firstboot-complete-live.conf");
/// Unit (in the real root) that extracts the live ISO's osmet files for an offline
/// install, and its enablement.
const ISO_OSMET_UNIT_PATH: &str = "usr/lib/systemd/system/layerboot-liveiso-osmet.service";
const ISO_OSMET_UNIT: &[u8] = include_bytes!("live/layerboot-liveiso-osmet.service");
const ISO_OSMET_WANTS: &str =
    "usr/lib/systemd/system/multi-user.target.wants/layerboot-liveiso-osmet.service";
/// A tmpfs /tmp (real root), as CoreOS has: the live root is read-only.
const TMP_MOUNT_PATH: &str = "usr/lib/systemd/system/tmp.mount";
const TMP_MOUNT: &[u8] = include_bytes!("live/tmp.mount");
const TMP_MOUNT_WANTS: &str = "usr/lib/systemd/system/local-fs.target.wants/tmp.mount";

/// The live module's files in the initramfs: (path, mode, content).
const MODULE_FILES: &[(&str, u32, &[u8])] = &[
    (
        "usr/bin/is-live-image",
        0o755,
        include_bytes!("live/is-live-image"),
    ),
    (
        "usr/sbin/ostree-cmdline",
        0o755,
        include_bytes!("live/ostree-cmdline"),
    ),
    (
        "usr/lib/systemd/system-generators/live-generator",
        0o755,
        include_bytes!("live/live-generator"),
    ),
    (
        "usr/libexec/layerboot-live-etcvar",
        0o755,
        include_bytes!("live/layerboot-live-etcvar"),
    ),
    (
        "usr/libexec/layerboot-live-rootfs",
        0o755,
        include_bytes!("live/layerboot-live-rootfs"),
    ),
    (
        "usr/libexec/layerboot-live-setup-user",
        0o755,
        include_bytes!("live/layerboot-live-setup-user"),
    ),
    (
        "usr/libexec/layerboot-disk-setup-user",
        0o755,
        include_bytes!("live/layerboot-disk-setup-user"),
    ),
    (
        "usr/lib/systemd/system/layerboot-disk-setup-user.service",
        0o644,
        include_bytes!("live/layerboot-disk-setup-user.service"),
    ),
    (
        "usr/libexec/layerboot-live-osmet",
        0o755,
        include_bytes!("live/layerboot-live-osmet"),
    ),
    (
        "usr/lib/systemd/system/layerboot-live-modules.service",
        0o644,
        include_bytes!("live/layerboot-live-modules.service"),
    ),
    (
        "usr/lib/systemd/system/layerboot-live-rootfs.service",
        0o644,
        include_bytes!("live/layerboot-live-rootfs.service"),
    ),
    (
        "usr/lib/systemd/system/layerboot-live-etcvar.service",
        0o644,
        include_bytes!("live/layerboot-live-etcvar.service"),
    ),
    (
        "usr/lib/systemd/system/layerboot-live-setup-user.service",
        0o644,
        include_bytes!("live/layerboot-live-setup-user.service"),
    ),
    (
        "usr/lib/systemd/system/layerboot-live-osmet.service",
        0o644,
        include_bytes!("live/layerboot-live-osmet.service"),
    ),
];

/// Static enablement of the module's units (the mounts are the generator's, written only
/// on a live boot; every unit here is conditioned on `/run/ostree-live`).
const MODULE_LINKS: &[(&str, &str)] = &[
    (
        "usr/lib/systemd/system/ignition-fetch-offline.service.requires/layerboot-live-setup-user.service",
        "../layerboot-live-setup-user.service",
    ),
    (
        "usr/lib/systemd/system/ignition-fetch-offline.service.wants/layerboot-disk-setup-user.service",
        "../layerboot-disk-setup-user.service",
    ),
    (
        "usr/lib/systemd/system/initrd.target.wants/layerboot-live-osmet.service",
        "../layerboot-live-osmet.service",
    ),
];

#[derive(Debug, Clone)]
pub struct LiveImage {
    /// OCI layout holding the `live` tag (and the layered image's tags).
    pub oci_dir: PathBuf,
    /// What the image's marker unit prints after `LAYERED-OK `.
    pub marker: String,
    /// Manifest digest of the `live` image.
    pub digest: String,
}

impl LiveImage {
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{LIVE_TAG}", self.oci_dir.display())
    }
}

/// The coreos-installer the image carries: `$LAYERBOOT_COREOS_INSTALLER`, else
/// `$CARGO_HOME/bin` (default `~/.cargo/bin`, where `cargo install coreos-installer` puts
/// it), else `/root/.cargo/bin`, else `coreos-installer` on `PATH`. A glibc build that runs
/// on Debian 12 (it links libzstd, liblzma and OpenSSL 3, all in the image).
pub fn coreos_installer_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LAYERBOOT_COREOS_INSTALLER") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        candidates.push(PathBuf::from(home).join("bin/coreos-installer"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/coreos-installer"));
    }
    candidates.push(PathBuf::from("/root/.cargo/bin/coreos-installer"));
    if let Some(p) = candidates.into_iter().find(|p| p.is_file()) {
        return Ok(p);
    }
    if let Ok(out) = cmd::run_stdout(Command::new("sh").args(["-c", "command -v coreos-installer"]))
    {
        let p = PathBuf::from(out.trim());
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("no coreos-installer binary for the live image: `cargo install coreos-installer` (or set LAYERBOOT_COREOS_INSTALLER)")
}

/// The live-capable image, built on first use on top of [`layered_image`] and cached.
pub fn live_image() -> Result<LiveImage> {
    let layered = layered_image()?;
    live_image_on(
        "debian-live",
        &layered.oci_dir,
        LAYERED_TAG,
        &layered.digest,
    )
}

/// The same live layer on top of the bootupd-layout image
/// ([`super::bootupd_image::bootupd_image`]): a live ISO whose UEFI boot is the image's
/// own signed chain (shim, then Debian's signed GRUB), as RHCOS's and FCOS's are.
pub fn live_bootupd_image() -> Result<LiveImage> {
    let base = super::bootupd_image::bootupd_image()?;
    live_image_on(
        "debian-live-bootupd",
        &base.oci_dir,
        super::bootupd_image::BOOTUPD_TAG,
        &base.digest,
    )
}

/// The live layer on top of `base_tag` of the OCI layout `base_oci`, cached as `kind`.
fn live_image_on(
    kind: &str,
    base_oci: &Path,
    base_tag: &str,
    base_digest: &str,
) -> Result<LiveImage> {
    let installer = coreos_installer_binary()?;
    let (installer_sha, _) = layerboot::io::sha256_file(&installer)
        .with_context(|| format!("hashing {}", installer.display()))?;
    let mut parts: Vec<&[u8]> = vec![
        RECIPE_VERSION,
        // The base's digest names it (and keeps the example's cache key as it was).
        base_digest.as_bytes(),
        installer_sha.as_bytes(),
        EXAMPLE_CONFIG,
        FIRSTBOOT_DROPIN,
        ISO_OSMET_UNIT,
        TMP_MOUNT,
    ];
    for (path, mode, content) in MODULE_FILES {
        parts.push(path.as_bytes());
        parts.push(if *mode == 0o755 { b"0755" } else { b"0644" });
        parts.push(content);
    }
    for (path, target) in MODULE_LINKS {
        parts.push(path.as_bytes());
        parts.push(target.as_bytes());
    }
    let marker = format!("{kind}-{}", recipe_hash(&parts));
    let dir = cached_fixture(kind, &parts, |staging| {
        build(staging, base_oci, base_tag, &installer, &marker, kind)
    })?;
    let oci_dir = dir.join("oci");
    Ok(LiveImage {
        digest: tag_digest(&oci_dir, LIVE_TAG)?,
        oci_dir,
        marker,
    })
}

/// `original` (the image's dracut initramfs) with the live module appended as a second,
/// uncompressed newc archive starting at a 4-byte boundary.
pub fn live_initramfs(original: &[u8]) -> Result<Vec<u8>> {
    let mut out = original.to_vec();
    out.resize(original.len().div_ceil(4) * 4, 0);
    let mut w = NewcWriter::new(Vec::new(), 1);
    // Directories under usr/ only: dracut's archive has `bin -> usr/bin` (and lib, sbin,
    // lib64), and the kernel replaces an entry of another type, so a `bin` directory here
    // would hide /usr/bin.
    let mut dirs: Vec<String> = Vec::new();
    let all_paths = MODULE_FILES
        .iter()
        .map(|(p, _, _)| *p)
        .chain(MODULE_LINKS.iter().map(|(p, _)| *p));
    for p in all_paths {
        let mut parent = Path::new(p).parent();
        let mut chain = Vec::new();
        while let Some(d) = parent.filter(|d| !d.as_os_str().is_empty()) {
            chain.push(d.to_string_lossy().into_owned());
            parent = d.parent();
        }
        for d in chain.into_iter().rev() {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    for d in &dirs {
        anyhow::ensure!(d == "usr" || d.starts_with("usr/"), "{d} is outside usr/");
        w.dir(d, 0o755)?;
    }
    for (path, mode, content) in MODULE_FILES {
        w.file(path, content, *mode)?;
    }
    for (path, target) in MODULE_LINKS {
        w.symlink(path, target)?;
    }
    out.extend(w.finish()?);
    Ok(out)
}

/// Kernel modules a live boot needs: loop and squashfs for the root image, isofs, cdrom
/// and sr_mod for the ISO.
pub const LIVE_MODULES: &[&str] = &[
    "drivers/block/loop",
    "fs/squashfs/squashfs",
    "fs/isofs/isofs",
    "drivers/cdrom/cdrom",
    "drivers/scsi/sr_mod",
];

/// Fail unless the image's initramfs has every module of [`LIVE_MODULES`] (as a file, in
/// any compression, or built into the kernel per modules.builtin). The example's dracut
/// run (`--no-hostonly`) includes them; the appended archive would have to carry them
/// (with a modules.dep naming them) if it ever stopped doing so. An uncompressed
/// early-microcode archive in front is skipped.
fn check_live_modules(initramfs: &[u8], kver: &str) -> Result<()> {
    use layerboot::io::newc::{parse_regular_files, MAGIC};
    use std::io::Read;
    let mut rest = initramfs;
    let mut members = std::collections::BTreeMap::new();
    while rest.starts_with(MAGIC) {
        let n = parse_regular_files(rest, &mut members)?;
        rest = &rest[n..];
        while rest.first() == Some(&0) {
            rest = &rest[1..];
        }
    }
    let mut main = Vec::new();
    layerboot::io::decompressed(std::io::BufReader::new(rest))?
        .read_to_end(&mut main)
        .context("decompressing the example's initramfs")?;
    let mut at = 0;
    while at + 6 <= main.len() && &main[at..at + 6] == MAGIC {
        at += parse_regular_files(&main[at..], &mut members)?;
        while main.get(at) == Some(&0) {
            at += 1;
        }
    }
    let dir = format!("usr/lib/modules/{kver}");
    let builtin = members
        .get(&format!("{dir}/modules.builtin"))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let missing: Vec<&str> = LIVE_MODULES
        .iter()
        .copied()
        .filter(|m| {
            let base = format!("{dir}/kernel/{m}.ko");
            let in_archive = ["", ".xz", ".zst", ".gz"]
                .iter()
                .any(|ext| members.contains_key(&format!("{base}{ext}")));
            !in_archive && !builtin.lines().any(|l| l == format!("kernel/{m}.ko"))
        })
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "the example's initramfs lacks kernel modules a live boot needs: {}",
        missing.join(", ")
    );
    Ok(())
}

fn build(
    staging: &Path,
    base_oci: &Path,
    base_tag: &str,
    installer: &Path,
    marker: &str,
    title: &str,
) -> Result<()> {
    let oci = staging.join("oci");
    // Blobs are immutable and named by digest: share them with the base fixture.
    cmd::run(Command::new("cp").arg("-al").arg(base_oci).arg(&oci))?;
    let image = SourceImage::open(&oci, Some(base_tag))?;
    let kver = image
        .labels
        .get("ostree.linux")
        .context("the example image has no ostree.linux label")?
        .clone();
    let initramfs_path = format!("usr/lib/modules/{kver}/initramfs.img");
    let files = image.read_files_up_to(&[&initramfs_path], 1 << 30)?;
    let initramfs = files
        .get(&initramfs_path)
        .with_context(|| format!("the example image has no /{initramfs_path}"))?;
    check_live_modules(initramfs, &kver)?;
    let entries = vec![
        LayerEntry::File {
            path: initramfs_path.clone(),
            mode: 0o600,
            content: live_initramfs(initramfs)?,
        },
        LayerEntry::HostFile {
            path: COREOS_INSTALLER_PATH.into(),
            mode: 0o755,
            source: installer.to_path_buf(),
        },
        LayerEntry::File {
            path: EXAMPLE_CONFIG_PATH.into(),
            mode: 0o644,
            content: EXAMPLE_CONFIG.to_vec(),
        },
        LayerEntry::File {
            path: FIRSTBOOT_DROPIN_PATH.into(),
            mode: 0o644,
            content: FIRSTBOOT_DROPIN.to_vec(),
        },
        LayerEntry::File {
            path: ISO_OSMET_UNIT_PATH.into(),
            mode: 0o644,
            content: ISO_OSMET_UNIT.to_vec(),
        },
        LayerEntry::Symlink {
            path: ISO_OSMET_WANTS.into(),
            target: "../layerboot-liveiso-osmet.service".into(),
        },
        LayerEntry::File {
            path: TMP_MOUNT_PATH.into(),
            mode: 0o644,
            content: TMP_MOUNT.to_vec(),
        },
        LayerEntry::Symlink {
            path: TMP_MOUNT_WANTS.into(),
            target: "../tmp.mount".into(),
        },
        LayerEntry::File {
            path: MARKER_PATH.into(),
            mode: 0o644,
            content: format!("{marker}\n").into_bytes(),
        },
    ];
    append_layer(
        &oci,
        base_tag,
        LIVE_TAG,
        &entries,
        "COPY coreos-installer example-config.yaml; RUN (live dracut module appended to the initramfs) && ostree container commit",
        &[
            ("org.opencontainers.image.title", title),
            ("io.layerboot.example.marker", marker),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerboot::io::newc::{MAGIC, TRAILER};

    #[test]
    fn appended_archive_is_aligned_and_under_usr() {
        let original = b"0707010123456789abc"; // 19 bytes: not a multiple of 4
        let out = live_initramfs(original).unwrap();
        assert_eq!(&out[..19], original);
        assert_eq!(&out[19..20], &[0]);
        assert_eq!(&out[20..26], MAGIC);
        let text = String::from_utf8_lossy(&out[20..]);
        for (path, _, _) in MODULE_FILES {
            assert!(text.contains(path), "{path} missing");
        }
        assert!(text.contains(TRAILER));
        assert!(!text.contains("\0bin\0") && !text.contains("\0lib\0"));
        assert_eq!(out.len() % 4, 0);
    }

    /// Builds (or finds in the cache) the live image and prints where it is: the hand-made
    /// live artifacts (`live/hand-pxe.sh`) start from it. Root and a built layered image
    /// are needed, so it is not part of the default run.
    #[test]
    #[ignore]
    fn build_live_image() {
        let image = live_image().unwrap();
        println!(
            "LIVE-IMAGE {} {} {}",
            image.oci_ref(),
            image.marker,
            image.digest
        );
    }

    fn gz_cpio(files: &[(&str, &[u8])]) -> Vec<u8> {
        use std::io::Write;
        let mut w = NewcWriter::new(Vec::new(), 1);
        for (p, c) in files {
            w.file(p, c, 0o644).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&w.finish().unwrap()).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn live_modules_checked_in_archive_and_builtin() {
        let k = "6.1.0-x";
        let lacking = gz_cpio(&[(
            "usr/lib/modules/6.1.0-x/kernel/fs/squashfs/squashfs.ko",
            b"m",
        )]);
        let err = check_live_modules(&lacking, k).unwrap_err().to_string();
        assert!(
            err.contains("drivers/block/loop") && !err.contains("squashfs"),
            "{err}"
        );
        let builtin = b"kernel/drivers/block/loop.ko\nkernel/fs/isofs/isofs.ko\n";
        let complete = gz_cpio(&[
            ("usr/lib/modules/6.1.0-x/modules.builtin", builtin),
            (
                "usr/lib/modules/6.1.0-x/kernel/fs/squashfs/squashfs.ko.xz",
                b"m",
            ),
            (
                "usr/lib/modules/6.1.0-x/kernel/drivers/cdrom/cdrom.ko",
                b"m",
            ),
            (
                "usr/lib/modules/6.1.0-x/kernel/drivers/scsi/sr_mod.ko.zst",
                b"m",
            ),
        ]);
        check_live_modules(&complete, k).unwrap();
        // An uncompressed early archive (microcode) in front is skipped over.
        let mut early = NewcWriter::new(Vec::new(), 1);
        early
            .file("kernel/x86/microcode/GenuineIntel.bin", b"u", 0o644)
            .unwrap();
        let mut both = early.finish().unwrap();
        both.resize(both.len() + 512, 0);
        both.extend(complete);
        check_live_modules(&both, k).unwrap();
    }

    /// The example image's own initramfs has every module a live boot needs.
    #[test]
    #[ignore]
    fn example_initramfs_has_live_modules() {
        let layered = layered_image().unwrap();
        let image = SourceImage::open(&layered.oci_dir, Some(LAYERED_TAG)).unwrap();
        let kver = image.labels["ostree.linux"].clone();
        let path = format!("usr/lib/modules/{kver}/initramfs.img");
        let files = image.read_files_up_to(&[&path], 1 << 30).unwrap();
        check_live_modules(&files[&path], &kver).unwrap();
    }
}
