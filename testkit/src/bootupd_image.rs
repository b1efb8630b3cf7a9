//! A bootupd-layout variant of the example layered image, for the disk builder's bootupd
//! path. No RHCOS/FCOS image is reachable from the test machines, so this one is made from
//! Debian's *signed* boot chain, laid out the way RHCOS/FCOS ship bootupd's payload:
//!
//! ```text
//! /usr/lib/bootupd/updates/EFI/BOOT/BOOTX64.EFI    shim (shim-signed)
//! /usr/lib/bootupd/updates/EFI/BOOT/fbx64.efi      shim's fallback (shim-helpers-amd64-signed)
//! /usr/lib/bootupd/updates/EFI/debian/shimx64.efi  shim
//! /usr/lib/bootupd/updates/EFI/debian/grubx64.efi  signed GRUB (grub-efi-amd64-signed)
//! /usr/lib/bootupd/updates/EFI/debian/mmx64.efi    MOK manager
//! /usr/lib/bootupd/updates/EFI/debian/BOOTX64.CSV  fallback's boot entry (UCS-2)
//! /usr/lib/bootupd/updates/{EFI,BIOS}.json         bootupd's content metadata
//! /usr/lib/bootupd/grub2-static/…                  static GRUB configs (pre, efi stub, configs.d)
//! ```
//!
//! It is one more derived layer on top of the cached layered image (tag `bootupd` in a
//! hard-linked copy of its OCI layout), as `RUN apt-get install shim-signed … && ostree
//! container commit` would add it; the layer also replaces the marker, so a boot proves
//! that *this* image booted. The BIOS side uses the base image's own `grub-pc-bin`
//! modules, as bootupd's BIOS component uses the image's i386-pc GRUB.
//!
//! What it cannot be: Debian's GRUB has no `blscfg` (a Fedora patch; upstream GRUB only
//! gained BLS support after bookworm's 2.06), so the image's static config calls a
//! command its GRUB lacks, and layerboot has to stand in for it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::cache::{cached_fixture, recipe_hash};
use super::kernel::{candidate_version, fetch_deb};
use super::layered_image::{
    append_layer, layered_image, tag_digest, LayerEntry, LAYERED_TAG, MARKER_PATH,
};
use layerboot::cmd;

const RECIPE_VERSION: &[u8] = b"bootupd-image v1";
const STATIC_PRE: &[u8] = include_bytes!("bootupd/grub-static-pre.cfg");
const STATIC_EFI: &[u8] = include_bytes!("bootupd/grub-static-efi.cfg");
const STATIC_BLSCFG: &[u8] = include_bytes!("bootupd/configs.d/10_blscfg.cfg");

/// Debian packages of the EFI component.
const PACKAGES: &[&str] = &[
    "shim-signed",
    "shim-helpers-amd64-signed",
    "grub-efi-amd64-signed",
];

/// The EFI vendor directory (Debian's, as its GRUB's built-in prefix is `/EFI/debian`).
pub const VENDOR: &str = "debian";
pub const BOOTUPD_TAG: &str = "bootupd";

#[derive(Debug, Clone)]
pub struct BootupdImage {
    /// OCI layout holding the `bootupd` tag (and the layered image's tags).
    pub oci_dir: PathBuf,
    /// What the image's marker unit prints after `LAYERED-OK `.
    pub marker: String,
    /// Manifest digest of the `bootupd` image.
    pub digest: String,
}

impl BootupdImage {
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{BOOTUPD_TAG}", self.oci_dir.display())
    }
}

/// The bootupd-layout image, built on first use on top of [`layered_image`] and cached.
pub fn bootupd_image() -> Result<BootupdImage> {
    let layered = layered_image()?;
    let versions: Vec<String> = PACKAGES
        .iter()
        .map(|p| candidate_version(p).map(|v| format!("{p}={v}")))
        .collect::<Result<_>>()?;
    let mut parts: Vec<&[u8]> = vec![
        RECIPE_VERSION,
        layered.digest.as_bytes(),
        STATIC_PRE,
        STATIC_EFI,
        STATIC_BLSCFG,
    ];
    parts.extend(versions.iter().map(|v| v.as_bytes()));
    let marker = format!("debian-bootupd-{}", recipe_hash(&parts));
    let dir = cached_fixture("debian-bootupd", &parts, |staging| {
        build(staging, &layered.oci_dir, &versions, &marker)
    })?;
    let oci_dir = dir.join("oci");
    Ok(BootupdImage {
        digest: tag_digest(&oci_dir, BOOTUPD_TAG)?,
        oci_dir,
        marker,
    })
}

/// `shimx64.efi,<label>,,<description>` in UCS-2 with a byte-order mark, as shim's fallback
/// reads `BOOTX64.CSV` to create the firmware boot entry.
pub fn boot_csv(vendor: &str) -> Vec<u8> {
    let line = format!("shimx64.efi,{vendor},,This is the boot entry for {vendor}\n");
    let mut out = vec![0xff, 0xfe];
    for u in line.encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out
}

fn build(staging: &Path, layered_oci: &Path, versions: &[String], marker: &str) -> Result<()> {
    cmd::require("dpkg-deb", "dpkg")?;
    let oci = staging.join("oci");
    // Blobs are immutable and named by digest: share them with the layered fixture.
    cmd::run(Command::new("cp").arg("-al").arg(layered_oci).arg(&oci))?;
    let x = staging.join("x");
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for v in versions {
        let (pkg, version) = v.split_once('=').expect("pkg=version");
        let deb = fetch_deb(pkg, version, &staging.join("download"))?;
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    }
    let read = |rel: &str| -> Result<Vec<u8>> {
        let p = x.join(rel);
        std::fs::read(&p)
            .with_context(|| format!("reading {} (from {})", p.display(), PACKAGES.join(", ")))
    };
    let shim = read("usr/lib/shim/shimx64.efi.signed")?;
    let grub = read("usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")?;
    for rel in [
        "usr/lib/shim/shimx64.efi.signed",
        "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
    ] {
        newest = newest.max(std::fs::metadata(x.join(rel))?.modified()?);
    }
    // bootupd's metadata: a timestamp (the newest payload file, as generate-update-metadata
    // takes the packages' build times) and a human-readable version.
    let timestamp = chrono::DateTime::<chrono::Utc>::from(newest)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let efi_json = serde_json::json!({"timestamp": timestamp, "version": versions.join(",")});
    let bios_json = serde_json::json!({"timestamp": timestamp, "version": format!("grub-pc-bin={}", candidate_version("grub-pc-bin")?)});

    let u = "usr/lib/bootupd/updates";
    let s = "usr/lib/bootupd/grub2-static";
    let file = |path: String, content: Vec<u8>| LayerEntry::File {
        path,
        mode: 0o644,
        content,
    };
    let entries = vec![
        file(format!("{u}/EFI/BOOT/BOOTX64.EFI"), shim.clone()),
        file(
            format!("{u}/EFI/BOOT/fbx64.efi"),
            read("usr/lib/shim/fbx64.efi.signed")?,
        ),
        file(format!("{u}/EFI/{VENDOR}/shimx64.efi"), shim),
        file(format!("{u}/EFI/{VENDOR}/grubx64.efi"), grub),
        file(
            format!("{u}/EFI/{VENDOR}/mmx64.efi"),
            read("usr/lib/shim/mmx64.efi.signed")?,
        ),
        file(format!("{u}/EFI/{VENDOR}/BOOTX64.CSV"), boot_csv(VENDOR)),
        file(format!("{u}/EFI.json"), serde_json::to_vec(&efi_json)?),
        file(format!("{u}/BIOS.json"), serde_json::to_vec(&bios_json)?),
        file(format!("{s}/grub-static-pre.cfg"), STATIC_PRE.to_vec()),
        file(format!("{s}/grub-static-efi.cfg"), STATIC_EFI.to_vec()),
        file(
            format!("{s}/configs.d/10_blscfg.cfg"),
            STATIC_BLSCFG.to_vec(),
        ),
        file(MARKER_PATH.to_string(), format!("{marker}\n").into_bytes()),
    ];
    append_layer(
        &oci,
        LAYERED_TAG,
        BOOTUPD_TAG,
        &entries,
        "RUN apt-get install shim-signed shim-helpers-amd64-signed grub-efi-amd64-signed && (bootupd payload layout) && ostree container commit",
        &[("org.opencontainers.image.title", "debian-bootupd"), ("io.layerboot.example.marker", marker)],
    )?;
    super::cache::remove_tree(&x)?;
    let dl = staging.join("download");
    if dl.exists() {
        super::cache::remove_tree(&dl)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_csv_is_ucs2_with_bom() {
        let b = boot_csv("debian");
        assert_eq!(&b[..4], &[0xff, 0xfe, b's', 0]);
        let units: Vec<u16> = b[2..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(
            String::from_utf16(&units).unwrap(),
            "shimx64.efi,debian,,This is the boot entry for debian\n"
        );
    }
}
