//! The disk image builder: executes a [`crate::bootimage::Plan`] for one layered image.
//!
//! Steps (each a module): size the root filesystem from the layers ([`estimate`]) and
//! resolve the plan before any heavy work; create the sparse disk with an empty root
//! filesystem at its offset ([`fs`]); deploy the image with ostree-ext straight into that
//! filesystem, loop-mounted by the deploy helper in its own mount namespace, with /boot
//! going to a staging directory ([`deploy`]); write the aleph file and the first-boot stamp
//! and stage the bootloader from the image's own files ([`bootloader`]) through the
//! helper's view of the mount; build the ESP and boot filesystems offline ([`fs`]) and
//! assemble the GPT disk ([`assemble`]); convert/compress/hash and describe it in stream
//! metadata ([`output`]). Everything happens in a staging directory beside the destination
//! that is removed on success, failure or cancellation; the artifact appears only by atomic
//! rename at the end.

pub mod assemble;
pub mod bootloader;
pub mod deploy;
pub mod estimate;
pub mod fs;
pub mod ostree_import;
pub mod output;
pub mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::bootimage::{self, Compression, Definition, Firmware, Format, Plan, PlanOptions, Role};
use crate::io::AtomicFile;
pub use source::SourceImage;

/// Cooperative cancellation: the one token of [`crate::cancel`], checked between steps
/// and inside long loops.
pub use crate::cancel::Cancel;

pub fn cancelled_error() -> anyhow::Error {
    crate::cancel::Cancelled { signal: -1 }.into()
}

/// Everything a build needs, validated by the CLI.
#[derive(Debug, Clone)]
pub struct DiskSettings {
    pub image: SourceImage,
    pub bootimage_name: String,
    pub definition: Definition,
    pub size: Option<u64>,
    pub extra_kargs: Vec<String>,
    pub stateroot: String,
    pub output: PathBuf,
    pub stream_metadata: PathBuf,
    pub stream_name: String,
    /// Prefix for `location` in stream metadata (else the bare file name).
    pub base_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub output: PathBuf,
    pub stream_metadata: PathBuf,
    pub stream_format: String,
    pub sha256: String,
    pub size: u64,
    pub uncompressed_sha256: String,
    pub uncompressed_size: u64,
    pub ostree_commit: String,
    /// The deployment's origin: what `ostree admin upgrade` / bootc / the MCO follow.
    pub origin: String,
    pub kargs: Vec<String>,
    pub disk_size: u64,
}

/// CoreOS's `/.coreos-aleph-version.json`: what the disk was built from.
#[derive(Debug, Clone, Serialize)]
pub struct Aleph {
    pub build: String,
    #[serde(rename = "ref")]
    pub reference: String,
    #[serde(rename = "ostree-commit")]
    pub ostree_commit: String,
    pub imgid: String,
    #[serde(rename = "container-image")]
    pub container_image: AlephImage,
    pub version: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub builder: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlephImage {
    pub image: String,
    pub digest: String,
    pub transport: String,
}

/// Removes the staging tree on drop, whatever happened.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        // The deploy helper has been reaped before we get here (it is dropped first), so
        // nothing writes into the tree any more and nothing is mounted in it.
        match std::fs::remove_dir_all(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => log::warn!(
                "could not remove staging directory {}: {e}",
                self.0.display()
            ),
            _ => {}
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Default artifact name: `<image>-<version>-<bootimage>.x86_64.<format>[.xz|.gz]`, as
/// CoreOS names its disk images.
pub fn default_output_name(
    image_stem: &str,
    version: Option<&str>,
    bootimage_name: &str,
    def: &Definition,
) -> String {
    let v = version.map(|v| format!("-{v}")).unwrap_or_default();
    format!(
        "{image_stem}{v}-{bootimage_name}.x86_64.{}{}",
        def.format,
        def.compression.suffix()
    )
}

/// Build the disk. Blocking: call from `spawn_blocking` in async code.
pub fn build(s: &DiskSettings, cancel: &Cancel) -> Result<BuildReport> {
    if !is_root() {
        bail!("layerboot disk needs root: deploying sets file ownership and ostree's immutable bits into the root filesystem, which is loop-mounted for that");
    }
    s.image.check_bootable()?;
    let def = &s.definition;
    for (tool, pkg) in [
        ("ostree", "ostree"),
        ("skopeo", "skopeo"),
        ("mke2fs", "e2fsprogs"),
        ("grub-mkimage", "grub-common"),
        ("mount", "mount"),
        ("umount", "mount"),
    ] {
        crate::cmd::require(tool, pkg)?;
    }
    if def
        .partitions
        .iter()
        .any(|p| p.filesystem == Some(bootimage::Filesystem::Xfs))
    {
        crate::cmd::require("mkfs.xfs", "xfsprogs")?;
    }
    if def.format == Format::Qcow2 {
        crate::cmd::require("qemu-img", "qemu-utils")?;
    }
    // The root's content is known from the layers: the whole layout is fixed, and a bad
    // definition, bad kargs or a too small --size fail here, before anything heavy.
    let root_estimate = s.image.unpacked_size()?;
    let opts = |esp: u64, boot: u64| PlanOptions {
        size: s.size,
        extra_kargs: s.extra_kargs.clone(),
        content: bootimage::ContentSizes {
            esp,
            boot,
            root: root_estimate,
        },
    };
    let plan = bootimage::resolve(&s.bootimage_name, def, &opts(0, 0))?;
    let root_part = plan
        .partition(Role::Root)
        .context("the boot image definition has no root partition")?
        .clone();
    let (Some(root_fs), Some(root_uuid)) = (root_part.filesystem, root_part.fs_uuid.as_deref())
    else {
        bail!("the root partition has no filesystem")
    };

    let out_dir = match s.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".layerboot-disk-")
        .tempdir_in(&out_dir)
        .with_context(|| format!("creating a staging directory in {}", out_dir.display()))?
        .keep();
    let staging = Staging(staging);
    // Absolute: the helper's mount point is reached through /proc/<pid>/root/<path>.
    let st = &std::path::absolute(&staging.0)?;

    let started = std::time::Instant::now();
    let step = |what: &str| log::info!("[{:6.1}s] {what}", started.elapsed().as_secs_f64());
    log::info!(
        "disk {} bytes, root filesystem {} bytes for an estimated {root_estimate} bytes of content",
        plan.disk_size,
        root_part.size
    );
    let raw_path = st.join("disk.raw");
    let mut raw = assemble::create_sparse(&raw_path, plan.disk_size)?;
    step(&format!("creating the {root_fs} root filesystem"));
    let root_img = st.join("root.img");
    fs::make_empty(
        &fs::FsSpec {
            fs: root_fs,
            label: root_part.label.as_deref().unwrap_or(""),
            uuid: root_uuid,
            size: root_part.size,
            sector_size: plan.sector_size,
        },
        &root_img,
    )?;
    fs::copy_sparse(&root_img, &mut raw, root_part.offset, cancel)?;
    std::fs::remove_file(&root_img)?;
    // The helper writes through its loop device while this handle stays unused.
    drop(raw);
    cancel.check()?;

    step(&format!(
        "deploying {} into the root filesystem",
        s.image.display_name
    ));
    let mountpoint = st.join("root");
    let boot_dir = st.join("boot");
    for d in [&mountpoint, &boot_dir] {
        std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let target = deploy::MountRequest {
        image: raw_path.clone(),
        offset: root_part.offset,
        size: root_part.size,
        boot_dir: boot_dir.clone(),
    };
    // Dropped after the helper (declared before it): waits for its loop device to go.
    let loop_release = deploy::LoopRelease(raw_path.clone());
    let mounted = deploy::deploy(
        &s.image,
        &mountpoint,
        target,
        &s.stateroot,
        &plan.kargs,
        cancel,
    )?;
    let deployed = mounted.deployed.clone();
    let root = &mounted.root;

    step("deployed; completing the root filesystem and staging the bootloader");
    let file_name = s
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let aleph = Aleph {
        build: s
            .image
            .version()
            .map(str::to_string)
            .unwrap_or_else(|| s.image.digest.clone()),
        reference: s.image.target_imgref.clone(),
        ostree_commit: deployed.commit.clone(),
        imgid: file_name.clone(),
        container_image: AlephImage {
            image: s.image.display_name.clone(),
            digest: s.image.digest.clone(),
            transport: if s.image.target_imgref.contains("-registry:") {
                "registry".into()
            } else {
                "oci".into()
            },
        },
        version: s.image.version().map(str::to_string),
        labels: s.image.labels.clone(),
        builder: format!("layerboot {}", env!("CARGO_PKG_VERSION")),
    };
    let aleph_path = root.join(".coreos-aleph-version.json");
    std::fs::write(&aleph_path, serde_json::to_string_pretty(&aleph)? + "\n")
        .map_err(|e| deploy::explain_enospc(anyhow::Error::from(e), root_part.size))
        .with_context(|| format!("writing {}", aleph_path.display()))?;
    // The first-boot stamp: GRUB adds ignition.firstboot while it exists.
    std::fs::write(boot_dir.join("ignition.firstboot"), "")
        .context("writing the first-boot stamp")?;

    let boot_label = plan
        .partition(Role::Boot)
        .and_then(|p| p.label.clone())
        .unwrap_or_else(|| "boot".into());
    let work = st.join("work");
    std::fs::create_dir_all(&work)?;
    let files = bootloader::prepare(&bootloader::Inputs {
        deployment: &root.join(&deployed.deploy_path),
        boot_dir: &boot_dir,
        boot_label: &boot_label,
        boot_uuid: plan
            .partition(Role::Boot)
            .and_then(|p| p.fs_uuid.as_deref()),
        serial: plan.grub_serial,
        uefi: plan.firmware.contains(&Firmware::Uefi),
        bios: plan.firmware.contains(&Firmware::Bios),
        work: &work,
    })?;
    let esp_dir = st.join("esp");
    std::fs::create_dir_all(&esp_dir)?;
    for (rel, src) in &files.esp {
        let dest = esp_dir.join(rel);
        std::fs::create_dir_all(dest.parent().expect("relative path has a parent"))?;
        std::fs::copy(src, &dest).with_context(|| format!("staging {rel} for the ESP"))?;
    }
    log_root_usage(root, root_part.size, root_estimate);
    cancel.check()?;
    mounted.finish(cancel)?;
    drop(loop_release);
    cancel.check()?;

    step("root filesystem unmounted; building the ESP and boot filesystems");
    // The fixed partitions must hold what was staged for them.
    let checked = bootimage::resolve(
        &s.bootimage_name,
        def,
        &opts(fs::tree_size(&esp_dir)?, fs::tree_size(&boot_dir)?),
    )?;
    anyhow::ensure!(
        checked.partitions == plan.partitions,
        "the layout changed once /boot and the ESP were staged"
    );
    let mut raw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&raw_path)
        .with_context(|| format!("opening {}", raw_path.display()))?;
    for p in &plan.partitions {
        let (Some(fs_kind), Some(uuid)) = (p.filesystem, p.fs_uuid.as_deref()) else {
            continue;
        };
        let src = match p.role {
            Role::Esp => &esp_dir,
            Role::Boot => &boot_dir,
            Role::Root | Role::BiosBoot => continue,
        };
        let img = st.join(format!("part{}.img", p.number));
        step(&format!(
            "building {} filesystem for partition {} ({})",
            fs_kind, p.number, p.name
        ));
        fs::make_fs(
            &fs::FsSpec {
                fs: fs_kind,
                label: p.label.as_deref().unwrap_or(""),
                uuid,
                size: p.size,
                sector_size: plan.sector_size,
            },
            src,
            &img,
        )?;
        cancel.check()?;
        fs::copy_sparse(&img, &mut raw, p.offset, cancel)?;
        std::fs::remove_file(&img)?;
    }
    let bootcode = match (&files.bios, plan.partition(Role::BiosBoot)) {
        (Some((boot_img, core)), Some(bb)) if plan.firmware.contains(&Firmware::Bios) => {
            // GRUB's blocklists count 512-byte sectors (BIOS is 512-only, validated).
            let core = bootloader::patch_core_img(core, bb.first_lba, bb.size)?;
            assemble::write_at(&mut raw, bb.offset, &core)?;
            Some(bootloader::patch_boot_img(boot_img, bb.first_lba)?)
        }
        _ => None,
    };
    // No sync: the raw image is staging, read back from the page cache by the next step.
    drop(assemble::write_partition_table(&plan, raw, bootcode)?);
    cancel.check()?;

    step("disk assembled");
    let mut out = AtomicFile::create(&s.output, 0o644)?;
    let hashes = match (plan.format, plan.compression) {
        // Nothing to compress: qemu-img writes the artifact itself, read once to hash it.
        (Format::Qcow2, Compression::None) => {
            step(&format!("writing {}", s.output.display()));
            output::to_qcow2(&raw_path, out.temp_path())?;
            std::fs::remove_file(&raw_path)?;
            cancel.check()?;
            let (sha256, size) = crate::io::sha256_file(out.temp_path())?;
            output::Hashes {
                uncompressed_sha256: sha256.clone(),
                uncompressed_size: size,
                sha256,
                size,
            }
        }
        (format, compression) => {
            let uncompressed = match format {
                Format::Raw => raw_path.clone(),
                Format::Qcow2 => {
                    let q = st.join("disk.qcow2");
                    output::to_qcow2(&raw_path, &q)?;
                    std::fs::remove_file(&raw_path)?;
                    q
                }
            };
            cancel.check()?;
            step(&format!("writing {}", s.output.display()));
            output::compress(
                &uncompressed,
                &mut out,
                compression,
                plan.compression_level,
                cancel,
            )?
        }
    };
    cancel.check()?;
    out.commit_unsynced()?;

    let location = match &s.base_url {
        Some(u) => format!("{}/{}", u.trim_end_matches('/'), file_name),
        None => file_name.clone(),
    };
    let existing = std::fs::read(&s.stream_metadata)
        .ok()
        .and_then(|b| serde_json::from_slice::<output::Stream>(&b).ok());
    let artifact = output::Artifact {
        location,
        sha256: hashes.sha256.clone(),
        uncompressed_sha256: Some(hashes.uncompressed_sha256.clone()),
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let stream = output::add_to_stream(
        existing,
        &s.stream_name,
        &now,
        "x86_64",
        &plan.platform,
        &aleph.build,
        &plan.stream_format,
        artifact,
    );
    crate::io::write_atomic(
        &s.stream_metadata,
        (serde_json::to_string_pretty(&stream)? + "\n").as_bytes(),
        0o644,
    )?;

    step("done");
    Ok(report(s, &plan, &deployed, hashes))
}

/// How full the deploy left the root filesystem, against the estimate it was sized from.
fn log_root_usage(root: &std::path::Path, fs_size: u64, estimate: u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(root.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 {
        let used = (st.f_blocks - st.f_bfree) * st.f_frsize;
        log::info!("root filesystem: {used} bytes used of {fs_size} after the deploy ({estimate} bytes estimated from the layers)");
    }
}

fn report(
    s: &DiskSettings,
    plan: &Plan,
    deployed: &deploy::Deployed,
    h: output::Hashes,
) -> BuildReport {
    BuildReport {
        output: s.output.clone(),
        stream_metadata: s.stream_metadata.clone(),
        stream_format: plan.stream_format.clone(),
        sha256: h.sha256,
        size: h.size,
        uncompressed_sha256: h.uncompressed_sha256,
        uncompressed_size: h.uncompressed_size,
        ostree_commit: deployed.commit.clone(),
        origin: s.image.target_imgref.clone(),
        kargs: plan.kargs.clone(),
        disk_size: plan.disk_size,
    }
}

/// The stem used in default file names: last path component of the image name, without tag.
pub fn image_stem(display_name: &str) -> String {
    let name = display_name.split('@').next().unwrap_or(display_name);
    let last = name.rsplit('/').next().unwrap_or(name);
    let stem = last.split(':').next().unwrap_or(last);
    if stem.is_empty() {
        "layered".into()
    } else {
        stem.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names() {
        let cat = bootimage::Catalog::shipped().unwrap();
        let cases: &[(&str, Option<&str>, &str, &str)] = &[
            (
                "quay.io/acme/rhcos-layered@sha256:abcd",
                Some("418.94"),
                "qemu",
                "rhcos-layered-418.94-qemu.x86_64.qcow2.gz",
            ),
            (
                "quay.io/acme/os:latest",
                None,
                "metal",
                "os-metal.x86_64.raw.xz",
            ),
            (
                "quay.io/acme/os:latest",
                None,
                "metal4k",
                "os-metal4k.x86_64.raw.xz",
            ),
        ];
        for (img, ver, bi, want) in cases {
            assert_eq!(
                default_output_name(&image_stem(img), *ver, bi, cat.get(bi).unwrap()),
                *want
            );
        }
    }
}
