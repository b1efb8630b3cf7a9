//! The disk image builder, in two steps. [`plan`] resolves a build once, before any heavy
//! work: one pass over the layers for the root's size ([`estimate`]) and the image's CoreOS
//! files ([`coreos`]), every boot image's layout, the output names. [`build`] executes the
//! plan: create the sparse disk with an empty root filesystem at its offset ([`fs`]);
//! deploy the image with ostree-ext straight into that filesystem, loop-mounted by the
//! deploy helper in its own mount namespace, with /boot going to a staging directory
//! ([`deploy`]); write the aleph file and the first-boot stamp and stage the bootloader
//! from the image's own files ([`bootloader`]) through the helper's view of the mount;
//! build the ESP and boot filesystems offline ([`fs`]) and assemble the GPT disk
//! ([`assemble`]); convert/compress/hash and describe it in stream metadata ([`output`]).
//! Everything happens in a staging directory beside the destination that is removed on
//! success, failure or cancellation; the artifact appears only by atomic rename at the end.

pub(crate) mod assemble;
pub(crate) mod bootloader;
pub(crate) mod bootupd_install;
pub(crate) mod bootupd_state;
pub use bootupd_install::SCRIPT as BOOTUPCTL_INSTALL_SCRIPT;
pub use bootupd_state::own_state as layerboot_bootupd_state;
pub mod coreos;
pub mod deploy;
pub(crate) mod estimate;
pub(crate) mod fs;
pub(crate) mod image_exec;
pub(crate) mod live;
pub(crate) mod mkfs;
pub mod ostree_import;
pub(crate) mod output;
pub(crate) mod package;
pub(crate) mod retarget;
pub(crate) mod selinux;
pub(crate) mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::bootimage::{self, Compression, Definition, Firmware, Format, Plan, PlanOptions, Role};
use crate::io::AtomicFile;
pub use bootloader::grub::blscfg_module;
pub use source::SourceImage;

/// Cooperative cancellation: the one token of [`crate::cancel`], checked between steps
/// and inside long loops.
pub use crate::cancel::Cancel;

pub fn cancelled_error() -> anyhow::Error {
    crate::cancel::Cancelled { signal: -1 }.into()
}

/// What the caller asks for, validated: the inputs of [`plan`].
#[derive(Debug, Clone)]
pub struct DiskSettings {
    /// Checked bootable by the caller (before its layers were fetched, where they were).
    pub image: SourceImage,
    /// The boot images to build (name, definition), at least one. All are made from one
    /// deployment, so they must share a partition layout and firmware (checked by
    /// [`plan`]); the first one's name seeds the identifiers (GUIDs, filesystem UUIDs) they
    /// then share, as CoreOS's platform images share their qemu image's.
    pub bootimages: Vec<(String, Definition)>,
    /// Boot images built only for a live ISO's offline install data (definition
    /// `osmet-images`): each from its own deployment, never published.
    pub osmet_images: Vec<(String, Definition)>,
    pub output: OutputChoice,
    pub size: Option<u64>,
    pub extra_kargs: Vec<String>,
    /// `--stateroot`; else the image's `com.coreos.osname`, else `default`.
    pub stateroot: Option<String>,
    /// `--stream-metadata`; else `stream.json` beside the first artifact.
    pub stream_metadata: Option<PathBuf>,
    pub stream_name: String,
    /// Where the artifact is served (`--base-url`): stream metadata `location` is this
    /// URL + the file name; else the bare file name, which coreos-installer and
    /// openshift-install cannot use (see [`output::artifact_location`]).
    pub base_url: Option<url::Url>,
}

/// Where the artifacts go.
#[derive(Debug, Clone)]
pub enum OutputChoice {
    /// This file (one boot image only).
    File(PathBuf),
    /// CoreOS's file names ([`default_output_name`]) in this directory (empty: the
    /// current one).
    Dir(PathBuf),
}

/// A build resolved once, before any heavy work ([`plan`]): what [`build`] executes.
#[derive(Debug, Clone)]
pub struct DiskPlan {
    pub image: SourceImage,
    /// What the image says as a CoreOS image ([`coreos::from_files`]); `None` for others.
    pub coreos: Option<coreos::CoreosImage>,
    pub stateroot: String,
    pub footprint: estimate::Footprint,
    /// Bytes the deployment allocates in the root filesystem (from the footprint).
    pub root_estimate: u64,
    /// One per boot image, in the order asked for; all share one layout.
    pub targets: Vec<Target>,
    /// The disks built only for a live ISO's offline install data (uncompressed, each
    /// from its own deployment); `output` is a file name in the build's staging directory.
    pub osmet_targets: Vec<Target>,
    pub stream_metadata: PathBuf,
    pub stream_name: String,
    pub base_url: Option<url::Url>,
}

/// One artifact of a build.
#[derive(Debug, Clone)]
pub struct Target {
    pub bootimage_name: String,
    pub definition: Definition,
    /// The image's facts for this boot image's platform (CoreOS images).
    pub facts: Option<coreos::PlatformFacts>,
    pub layout: Plan,
    pub output: PathBuf,
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
    /// The deployment, relative to the root filesystem.
    #[serde(skip)]
    pub deploy_path: PathBuf,
    /// The deployment's origin: what `ostree admin upgrade` / bootc / the MCO follow.
    pub origin: String,
    pub kargs: Vec<String>,
    pub disk_size: u64,
    /// The files published beside `output` (the live ISO's PXE set).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_artifacts: Vec<OtherArtifact>,
    /// Live builds: what the ISO supports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveSummary>,
    /// The version of the image's own bootupctl when it installed the EFI component and
    /// bootupd's state (absent: layerboot's installer did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootupctl: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OtherArtifact {
    pub output: PathBuf,
    pub stream_format: String,
    /// Its key under the stream format (`kernel`, `initramfs`, `rootfs`).
    pub stream_entry: String,
    pub sha256: String,
    pub size: u64,
}

/// The aleph file, `/.aleph-version.json` (+ the `.coreos-aleph-version.json` symlink),
/// as osbuild's `org.osbuild.ostree.aleph` writes it for a container deployment: keys
/// sorted, 4-space indent, `version` and no `build` (bootupd aliases `build` to `version`,
/// so both present fail its parse). Pure.
pub fn aleph_json(image: &SourceImage) -> Result<String> {
    use serde_json::{json, Value};
    let imgref = &image.target_imgref;
    // osbuild strips the transport (`ostree-unverified-registry:` and the like).
    let image_name = imgref
        .strip_prefix("ostree-remote-registry:")
        .or_else(|| imgref.strip_prefix("ostree-remote-image:"))
        .and_then(|r| r.split_once(':').map(|(_, rest)| rest))
        .or_else(|| imgref.strip_prefix("ostree-image-signed:"))
        .or_else(|| imgref.strip_prefix("ostree-unverified-registry:"))
        .or_else(|| imgref.strip_prefix("ostree-unverified-image:"))
        .unwrap_or(imgref);
    let mut data: BTreeMap<&str, Value> = BTreeMap::from([
        (
            "osbuild-version",
            json!(format!("layerboot {}", env!("CARGO_PKG_VERSION"))),
        ),
        ("ref", json!(imgref)),
        // bootupd needs a string here; an image without a version label is named by digest.
        (
            "version",
            json!(image.version().unwrap_or(image.digest.as_str())),
        ),
        (
            "container-image",
            json!({
                "image-name": image_name,
                "image-digest": image.config_digest,
                "image-labels": image.labels,
            }),
        ),
    ]);
    if let Some(c) = image.labels.get("ostree.commit") {
        data.insert("ostree-commit", json!(c));
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(b"    "),
    );
    serde::Serialize::serialize(&data, &mut ser)?;
    Ok(String::from_utf8(out)? + "\n")
}

pub const ALEPH: &str = ".aleph-version.json";
pub const COREOS_ALEPH: &str = ".coreos-aleph-version.json";

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

/// Refuses a build whose deployment alone (`need` bytes, counted from the layers) cannot
/// fit in the `free` bytes of the filesystem holding `out_dir`, where the sparse disk
/// image is written: it would fail midway, as an I/O error from inside the loop device.
fn check_host_space(out_dir: &std::path::Path, free: u64, need: u64) -> Result<()> {
    if free < need {
        bail!(
            "{} has {} free, but the deployment alone writes about {} into the disk image there: free space or write the output to a larger filesystem",
            out_dir.display(),
            crate::units::format_size(free),
            crate::units::format_size(need)
        );
    }
    Ok(())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Default artifact name: `<image>-<version>-<bootimage>.x86_64.<format>[.xz|.gz]`, as
/// CoreOS names its disk images (`compression`: the definition's, resolved for the image).
pub fn default_output_name(
    image_stem: &str,
    version: Option<&str>,
    bootimage_name: &str,
    def: &Definition,
    compression: Compression,
) -> String {
    let v = version.map(|v| format!("-{v}")).unwrap_or_default();
    format!(
        "{image_stem}{v}-{bootimage_name}.x86_64.{}{}",
        bootimage::definition::artifact_extension(def.format, def.package),
        compression.suffix()
    )
}

/// The artifact's file name without its extensions (`x-qemu.x86_64.qcow2.gz` →
/// `x-qemu.x86_64`): what names the disk inside a package.
fn artifact_stem(file_name: &str) -> &str {
    file_name
        .rfind(".x86_64")
        .map_or(file_name.split('.').next().unwrap_or(file_name), |i| {
            &file_name[..i + ".x86_64".len()]
        })
}

/// Resolve a build once, before any heavy work: one pass over the layers (the root's
/// footprint and the image's CoreOS files), the output names, the layouts of every boot
/// image. Bad kernel arguments, a too small `--size`, boot images that cannot share a
/// disk, an unreadable stream file or a missing tool fail here. Blocking.
pub fn plan(s: DiskSettings) -> Result<DiskPlan> {
    let (base_name, base_def) = s.bootimages.first().context("no boot image to build")?;
    let survey = s
        .image
        .survey(&[coreos::PLATFORMS_JSON, coreos::IMAGE_JSON])?;
    let coreos_image = coreos::from_files(
        survey.files.get(coreos::PLATFORMS_JSON).map(Vec::as_slice),
        survey.files.get(coreos::IMAGE_JSON).map(Vec::as_slice),
        &s.image.labels,
    )?;
    if s.bootimages
        .iter()
        .any(|(_, d)| d.package == bootimage::Package::Live)
    {
        // Refused before any heavy work: a live build of an image that cannot boot live.
        let path = survey.initramfs.as_deref().with_context(|| {
            format!(
                "{}: no usr/lib/modules/<kernel>/initramfs.img in the image",
                s.image.display_name
            )
        })?;
        let initramfs = s
            .image
            .read_files_up_to(&[path], live::MAX_INITRAMFS)?
            .remove(path)
            .with_context(|| format!("{}: /{path} could not be read", s.image.display_name))?;
        live::check_live_capable(
            live::initramfs_has_member(&initramfs, live::LIVE_HOOK)
                .with_context(|| format!("reading /{path} of {}", s.image.display_name))?,
        )?;
    }
    let root_estimate = estimate::root_content(&survey.footprint);
    let stateroot = coreos::stateroot(s.stateroot.as_deref(), &s.image.labels)?;
    let base_facts = coreos_image
        .as_ref()
        .map(|c| c.facts(base_name, &base_def.ignition_platform));
    match &coreos_image {
        Some(c) => log::info!(
            "CoreOS image (/{}{}): stateroot {stateroot}, platform {} kernel arguments {:?}, GRUB console {:?}",
            coreos::PLATFORMS_JSON,
            if c.image.is_some() { ", image.json" } else { "" },
            base_def.ignition_platform,
            base_facts.as_ref().map(|f| &f.kargs).unwrap_or(&Vec::new()),
            base_facts.as_ref().map(|f| &f.grub_commands).unwrap_or(&Vec::new()),
        ),
        None => log::info!("not a CoreOS image (no /{}): stateroot {stateroot}", coreos::PLATFORMS_JSON),
    }
    let facts: Vec<_> = s
        .bootimages
        .iter()
        .map(|(name, def)| {
            coreos_image
                .as_ref()
                .map(|c| c.facts(name, &def.ignition_platform))
        })
        .collect();
    let content = bootimage::ContentSizes {
        esp: 0,
        boot: 0,
        root: root_estimate,
    };
    let layouts = target_layouts(&s, &facts, content)?;

    let mut targets = Vec::new();
    for (((name, definition), facts), layout) in s.bootimages.into_iter().zip(facts).zip(layouts) {
        let output = match &s.output {
            OutputChoice::File(f) => f.clone(),
            OutputChoice::Dir(d) => d.join(default_output_name(
                &image_stem(&s.image.display_name),
                s.image.version(),
                &name,
                &definition,
                layout.compression,
            )),
        };
        if output.is_dir() {
            bail!(
                "--output {} is a directory; name the image file, or use --output-dir",
                output.display()
            );
        }
        let suffix = layout.compression.suffix();
        if matches!(s.output, OutputChoice::File(_))
            && !suffix.is_empty()
            && !output.to_string_lossy().ends_with(suffix)
        {
            log::warn!(
                "--output {}: {name} is written {}-compressed; a name ending in {suffix} says so",
                output.display(),
                &suffix[1..]
            );
        }
        targets.push(Target {
            bootimage_name: name,
            definition,
            facts,
            layout,
            output,
        });
    }
    let mut osmet_targets = Vec::new();
    for (name, mut definition) in s.osmet_images {
        definition.compression = bootimage::CompressionSetting::None;
        let facts = coreos_image
            .as_ref()
            .map(|c| c.facts(&name, &definition.ignition_platform));
        let mut layout = bootimage::resolve(
            &name,
            &definition,
            &PlanOptions {
                size: None,
                extra_kargs: s.extra_kargs.clone(),
                content,
                coreos: facts.clone(),
            },
        )
        .with_context(|| format!("boot image {name} (osmet-images)"))?;
        layout.name = name.clone();
        let output = PathBuf::from(default_output_name(
            &image_stem(&s.image.display_name),
            s.image.version(),
            &name,
            &definition,
            layout.compression,
        ));
        osmet_targets.push(Target {
            bootimage_name: name,
            definition,
            facts,
            layout,
            output,
        });
    }
    let stream_metadata = s.stream_metadata.unwrap_or_else(|| {
        targets[0]
            .output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| p.join("stream.json"))
            .unwrap_or_else(|| PathBuf::from("stream.json"))
    });
    // A stream file that would be refused at the end is refused before any work.
    output::read_stream(&stream_metadata)?;
    require_tools(&targets)?;
    Ok(DiskPlan {
        image: s.image,
        coreos: coreos_image,
        stateroot,
        footprint: survey.footprint,
        root_estimate,
        targets,
        osmet_targets,
        stream_metadata,
        stream_name: s.stream_name,
        base_url: s.base_url,
    })
}

/// The host tools the build runs, named with their Debian packages when missing.
fn require_tools(targets: &[Target]) -> Result<()> {
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
    if targets[0]
        .layout
        .partitions
        .iter()
        .any(|p| p.filesystem == Some(bootimage::Filesystem::Xfs))
    {
        crate::cmd::require("mkfs.xfs", "xfsprogs")?;
    }
    for t in targets {
        if t.layout.format != Format::Raw {
            crate::cmd::require("qemu-img", "qemu-utils")?;
        }
        if t.layout.package == bootimage::Package::GceTar {
            crate::cmd::require("tar", "tar")?;
        }
    }
    Ok(())
}

/// Build the disk a [`plan`] describes. Blocking: call from `spawn_blocking` in async code.
pub fn build(s: &DiskPlan, cancel: &Cancel) -> Result<Vec<BuildReport>> {
    build_learned(s, cancel, &mkfs::Learned::default())
}

/// [`build`], with the image's mkfs defaults already `learned` (by an earlier build).
fn build_learned(
    s: &DiskPlan,
    cancel: &Cancel,
    learned: &mkfs::Learned,
) -> Result<Vec<BuildReport>> {
    if !is_root() {
        bail!("layerboot disk needs root: deploying sets file ownership and ostree's immutable bits into the root filesystem, which is loop-mounted for that");
    }
    let out_dir = match s.targets[0].output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Before the staging directory: nothing is created when the host cannot hold the
    // deployment anyway.
    let free = crate::io::free_bytes(&out_dir)?;
    check_host_space(&out_dir, free, s.footprint.allocated)?;
    let staging = tempfile::Builder::new()
        .prefix(".layerboot-disk-")
        .tempdir_in(&out_dir)
        .with_context(|| format!("creating a staging directory in {}", out_dir.display()))?
        .keep();
    let staging = Staging(staging);
    // Absolute: the helper's mount point is reached through /proc/<pid>/root/<path>.
    let st = std::path::absolute(&staging.0)?;
    let explain = |e: anyhow::Error| {
        let free = crate::io::free_bytes(&st).ok();
        deploy::explain_host_full(e, &out_dir, free)
    };
    // Explained while the staging directory still holds what filled the host.
    match build_staged(s, &st, cancel, learned) {
        Err(e) if e.downcast_ref::<mkfs::RootMkfsDiffers>().is_some() => {
            let Ok(differs) = e.downcast::<mkfs::RootMkfsDiffers>() else {
                unreachable!("checked above")
            };
            log::warn!("{differs}: building again with the image's (costs a second deploy)");
            clear_dir(&st)?;
            build_staged(s, &st, cancel, &differs.learned).map_err(explain)
        }
        r => r.map_err(explain),
    }
}

/// Remove everything in `dir`, keeping it.
fn clear_dir(dir: &std::path::Path) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        let removed = if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        removed.with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// The disk's whole build in the staging directory `st`.
fn build_staged(
    s: &DiskPlan,
    st: &std::path::Path,
    cancel: &Cancel,
    learned: &mkfs::Learned,
) -> Result<Vec<BuildReport>> {
    let base = &s.targets[0];
    let def = &base.definition;
    let plan = &base.layout;
    let facts = &base.facts;
    let coreos_image = &s.coreos;
    let stateroot = &s.stateroot;
    let root_estimate = s.root_estimate;
    let footprint = &s.footprint;
    log::info!(
        "{} compression ({})",
        plan.stream_format,
        match (
            def.compression,
            facts.as_ref().and_then(|f| f.compressor.as_ref())
        ) {
            (bootimage::CompressionSetting::Image, Some((_, from))) =>
                format!("as the image says: {from}"),
            (bootimage::CompressionSetting::Image, None) => "the image says nothing: xz".into(),
            _ => "set by the boot image definition".into(),
        }
    );
    let root_part = plan
        .partition(Role::Root)
        .context("the boot image definition has no root partition")?
        .clone();
    let (Some(root_fs), Some(root_uuid)) = (root_part.filesystem, root_part.fs_uuid.as_deref())
    else {
        bail!("the root partition has no filesystem")
    };

    let started = std::time::Instant::now();
    let step = |what: &str| log::info!("[{:6.1}s] {what}", started.elapsed().as_secs_f64());
    let mkfs = mkfs::MkfsSettings::new(coreos_image.is_some(), learned, st)?;
    log::info!(
        "disk {} bytes, root filesystem {} bytes for an estimated {root_estimate} bytes allocated by {} files ({} bytes of layer tar)",
        plan.disk_size,
        root_part.size,
        footprint.regular_files,
        footprint.tar_bytes
    );
    let raw_path = st.join("disk.raw");
    let mut raw = assemble::create_sparse(&raw_path, plan.disk_size)?;
    step(&format!("creating the {root_fs} root filesystem"));
    let root_img = st.join("root.img");
    let root_options = mkfs.options(root_fs);
    let root_spec = fs::FsSpec {
        fs: root_fs,
        label: root_part.label.as_deref().unwrap_or(""),
        uuid: root_uuid,
        size: root_part.size,
        sector_size: plan.sector_size,
        options: &root_options,
        mke2fs_config: mkfs.mke2fs_config.as_deref(),
    };
    fs::make_empty(&root_spec, &root_img)?;
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
        options: fs::deploy_mount_options(root_fs).to_string(),
    };
    // Dropped after the helper (declared before it): waits for its loop device to go.
    let loop_release = deploy::LoopRelease(raw_path.clone());
    // CoreOS's repo config (coreos-assembler coreos.osbuild.x86_64.mpp.yaml,
    // `org.osbuild.ostree.config`): the physical root read-only once booted (ostree's
    // prepare-root bind-mounts the deployment's /etc and the stateroot's /var writable
    // first), BLS paths under /boot (the boot filesystem carries ostree's `boot -> .`
    // link), `grub_users ""` on non-default entries.
    let repo_config: Vec<(String, String)> = match &coreos_image {
        Some(_) => vec![
            ("sysroot.readonly".into(), "true".into()),
            ("sysroot.bootprefix".into(), "true".into()),
            (
                "sysroot.bls-append-except-default".into(),
                "grub_users=\"\"".into(),
            ),
        ],
        None => vec![],
    };
    let mounted = deploy::deploy(
        &s.image,
        &mountpoint,
        target,
        stateroot,
        &plan.kargs,
        &repo_config,
        cancel,
    )?;
    let deployed = mounted.deployed.clone();
    let root = &mounted.root;
    let image_root = crate::io::RootedDir::open(&root.join(&deployed.deploy_path))?;
    let image_exec = image_exec::ImageExec {
        pid: mounted.pid(),
        deployment: mountpoint.join(&deployed.deploy_path),
    };
    // Before anything more is built on a root the image's tools would have made otherwise.
    let learned = mkfs::learn_from_image(
        &image_root,
        &image_exec,
        &st.join("mkfs-probe"),
        &mkfs::RootAsMade {
            fs: root_fs,
            spec: &root_spec,
            used: learned,
        },
    )?;
    let mkfs = mkfs::MkfsSettings::new(coreos_image.is_some(), &learned, st)?;
    if mkfs.mke2fs_config.is_some() {
        log::info!(
            "ext4 filesystems with the image's /{}",
            mkfs::MKE2FS_CONFIG_IN_IMAGE
        );
    }

    step("deployed; completing the root filesystem and staging the bootloader");
    let aleph_path = root.join(ALEPH);
    std::fs::write(&aleph_path, aleph_json(&s.image)?)
        .map_err(|e| {
            deploy::DiskSpace {
                root_size: root_part.size,
                host_dir: st.parent().unwrap_or(st).to_path_buf(),
            }
            .explain(anyhow::Error::from(e))
        })
        .with_context(|| format!("writing {}", aleph_path.display()))?;
    let compat = root.join(COREOS_ALEPH);
    std::os::unix::fs::symlink(ALEPH, &compat)
        .with_context(|| format!("creating {}", compat.display()))?;
    // The first-boot stamp: GRUB adds ignition.firstboot while it exists.
    std::fs::write(boot_dir.join("ignition.firstboot"), "")
        .context("writing the first-boot stamp")?;

    let boot_label = plan
        .partition(Role::Boot)
        .and_then(|p| p.label.clone())
        .unwrap_or_else(|| "boot".into());
    let work = st.join("work");
    std::fs::create_dir_all(&work)?;
    let uefi = plan.firmware.contains(&Firmware::Uefi);
    let files = bootloader::prepare(&bootloader::Inputs {
        image: &image_root,
        boot_dir: &boot_dir,
        boot_label: &boot_label,
        boot_uuid: plan
            .partition(Role::Boot)
            .and_then(|p| p.fs_uuid.as_deref()),
        serial: plan.grub_serial,
        console_commands: plan.console_commands.as_deref(),
        uefi,
        bios: plan.firmware.contains(&Firmware::Bios),
        work: &work,
        image_exec: Some(&image_exec),
    })?;
    let image_bootupctl = run_image_bootupctl(
        &image_root,
        &image_exec,
        &mountpoint,
        plan,
        &mkfs,
        &work,
        &step,
    )?;
    let wants_live = s
        .targets
        .iter()
        .any(|t| t.layout.package == bootimage::Package::Live);
    let live_files = if wants_live {
        let options = coreos_image
            .as_ref()
            .and_then(|c| c.image.as_ref())
            .and_then(|i| i.other.get("live-rootfs-fsoptions"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        Some(live::ImageLiveFiles::read(&image_root, options)?)
    } else {
        None
    };
    // Its descriptor would keep the root filesystem busy at the unmount.
    drop(image_root);
    let esp_dir = st.join("esp");
    stage_esp(&esp_dir, &files.esp, image_bootupctl.as_ref(), &boot_dir)?;
    if let Some(c) = &coreos_image {
        // coreos-installer's --platform reads the table from the boot filesystem.
        let dest = boot_dir.join(coreos::BOOT_PLATFORMS_JSON);
        std::fs::create_dir_all(dest.parent().expect("has a parent"))?;
        std::fs::write(&dest, &c.platforms_json)
            .with_context(|| format!("writing {}", dest.display()))?;
        // With sysroot.bootprefix the image's ostree writes `/boot/ostree/…` paths into
        // later BLS entries; the boot filesystem resolves them through `boot -> .`, as
        // CoreOS's has. (The build host's libostree may predate bootprefix: this disk's
        // own entries can then be unprefixed, which the same link also serves.)
        let link = boot_dir.join("boot");
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(".", &link)
                .with_context(|| format!("creating {}", link.display()))?;
        }
    }
    let deployment = root.join(&deployed.deploy_path);
    bootupd_state::write(&bootupd_state::Inputs {
        deployment: &deployment,
        boot_dir: &boot_dir,
        uefi,
        bios: plan.firmware.contains(&Firmware::Bios),
        image_state: image_bootupctl
            .as_ref()
            .map(|b| b.boot.join(bootupd_state::STATE_FILE))
            .as_deref(),
    })?;
    // Last: labels every file the steps above wrote into /boot and the root.
    if let Some(policy) = selinux::find_policy(&deployment)? {
        step(&format!(
            "labelling for SELinux from the image's policy {}",
            policy.name
        ));
        // mke2fs -d makes lost+found unless the source has one, and copies its xattrs.
        let lnf = boot_dir.join("lost+found");
        std::fs::create_dir_all(&lnf).with_context(|| format!("creating {}", lnf.display()))?;
        std::fs::set_permissions(&lnf, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let spec = selinux::stage_spec(&policy, &work.join("selinux"))?;
        let bare = work.join("selinux/root");
        let runs = selinux::plan(
            &mountpoint,
            &bare,
            stateroot,
            std::slice::from_ref(&deployed.deploy_path),
        );
        selinux::label(&runs, &spec, mounted.pid(), &mountpoint, &bare, |p| {
            mounted.host_view(p)
        })?;
    }
    if coreos_image.is_some() {
        // The physical root's top directory immutable, as CoreOS ships it (osbuild
        // `org.osbuild.chattr` in coreos.osbuild.x86_64.mpp.yaml): nothing but ostree
        // creates entries there. Last change to the root before it is unmounted (after the labelling: an immutable inode takes no xattrs).
        crate::cmd::run(std::process::Command::new("chattr").arg("+i").arg(root))
            .context("making the physical root immutable (chattr +i)")?;
    }
    log_root_usage(root, root_part.size, root_estimate);
    cancel.check()?;
    mounted.finish(cancel)?;
    drop(loop_release);
    cancel.check()?;

    step("root filesystem unmounted; building the ESP and boot filesystems");
    // The fixed partitions must hold what was staged for them.
    bootimage::check_staged_content(
        def,
        &bootimage::ContentSizes {
            esp: fs::tree_size(&esp_dir)?,
            boot: fs::tree_size(&boot_dir)?,
            root: root_estimate,
        },
    )?;
    let mut raw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&raw_path)
        .with_context(|| format!("opening {}", raw_path.display()))?;
    for p in &plan.partitions {
        let src = match p.role {
            Role::Esp => &esp_dir,
            Role::Boot => &boot_dir,
            Role::Root | Role::BiosBoot => continue,
        };
        step(&format!(
            "building {} filesystem for partition {} ({})",
            p.filesystem.map(|f| f.to_string()).unwrap_or_default(),
            p.number,
            p.name
        ));
        write_filesystem(&mut raw, p, src, st, plan.sector_size, &mkfs, cancel)?;
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
    drop(assemble::write_partition_table(plan, raw, bootcode)?);
    cancel.check()?;

    step("disk assembled");
    let live_context = live_files.as_ref().map(|image| LiveContext {
        root_partition: root_part.number,
        deploy_path: deployed.deploy_path.clone(),
        root_offset: root_part.offset,
        root_size: root_part.size,
        root_mount_options: match root_fs {
            // A CoreOS root has a fixed UUID another build may have mounted.
            bootimage::Filesystem::Xfs => "nouuid",
            _ => "",
        },
        boot_dir: boot_dir.clone(),
        esp_dir: esp_dir.clone(),
        image,
        efi: match &files.configs {
            bootloader::GrubConfigs::Bootupd { .. } => live::EfiBoot::Chain {
                esp: esp_dir.clone(),
                vendor: efi_vendor(&esp_dir).unwrap_or_else(|| "BOOT".into()),
            },
            bootloader::GrubConfigs::Plain { .. } => live::EfiBoot::Grub {
                modules: [
                    work.join("image-grub-x86_64-efi"),
                    "/usr/lib/grub/x86_64-efi".into(),
                ]
                .into_iter()
                .find(|d| d.join("kernel.img").is_file())
                .unwrap_or_else(|| "/usr/lib/grub/x86_64-efi".into()),
            },
        },
        coreos: coreos_image.is_some(),
        osname: coreos_image
            .as_ref()
            .and_then(|c| c.osname.clone())
            .unwrap_or_else(|| stateroot.clone()),
        osmet_disks: Vec::new(),
    });
    // The further disks the live ISO installs offline, each from a deployment of its own
    // (their sector size differs), made only where the image can pack their osmet data.
    let live_context = match live_context {
        Some(mut l) if l.image.has_coreos_installer => {
            for t in &s.osmet_targets {
                step(&format!(
                    "building {} for the live ISO's offline install data",
                    t.bootimage_name
                ));
                l.osmet_disks
                    .push(build_osmet_disk(s, t, st, &learned, cancel)?);
            }
            Some(l)
        }
        other => other,
    };
    // The other platforms first, each from a copy of this disk with its own /boot; the
    // first platform's conversion then consumes the disk itself.
    let mut published = Vec::new();
    for t in s.targets.iter().skip(1) {
        step(&format!("retargeting a copy for {}", t.bootimage_name));
        let raw_t = retargeted_copy(
            &RetargetInputs {
                raw: &raw_path,
                boot_dir: &boot_dir,
                configs: &files.configs,
                from: plan,
                mkfs: &mkfs,
                st,
            },
            t,
            cancel,
        )?;
        published.push(publish(
            s,
            t,
            &raw_t,
            st,
            live_context.as_ref(),
            &step,
            cancel,
        )?);
    }
    published.insert(
        0,
        publish(s, base, &raw_path, st, live_context.as_ref(), &step, cancel)?,
    );
    cancel.check()?;
    // Read before the artifacts appear: if the stream file went bad meanwhile, nothing is
    // written.
    let mut stream = output::read_stream(&s.stream_metadata)?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut reports = Vec::new();
    for (t, artifacts) in s.targets.iter().zip(published) {
        let p = &t.layout;
        let mut main = None;
        let mut others = Vec::new();
        let mut live = None;
        for a in artifacts {
            live = live.or(a.live);
            let dest = a.out.dest().to_path_buf();
            a.out.commit_unsynced()?;
            let file_name = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let artifact = output::artifact(
                output::artifact_location(s.base_url.as_ref(), &file_name),
                &a.hashes,
            );
            stream = Some(output::add_to_stream(
                stream,
                &s.stream_name,
                &now,
                output::StreamKey {
                    arch: "x86_64",
                    platform: &p.ignition_platform,
                    release: s.image.version().unwrap_or(s.image.digest.as_str()),
                    format: &a.stream_format,
                    entry: a.stream_entry,
                },
                artifact,
            ));
            if main.is_none() {
                main = Some(a.hashes);
            } else {
                others.push(OtherArtifact {
                    output: dest,
                    stream_format: a.stream_format,
                    stream_entry: a.stream_entry.to_string(),
                    sha256: a.hashes.sha256,
                    size: a.hashes.size,
                });
            }
        }
        let mut r = report(s, t, &deployed, main.context("a build published nothing")?);
        r.other_artifacts = others;
        r.live = live;
        r.bootupctl = image_bootupctl.as_ref().map(|b| b.version.clone());
        reports.push(r);
    }
    crate::io::write_atomic(
        &s.stream_metadata,
        (serde_json::to_string_pretty(&stream)? + "\n").as_bytes(),
        0o644,
    )?;
    step("done");
    Ok(reports)
}

/// The image's own `bootupctl backend install` for this disk, where it can run
/// ([`bootupd_install::installer`]); `None` where layerboot's installer does the work.
fn run_image_bootupctl(
    image: &crate::io::RootedDir,
    exec: &image_exec::ImageExec,
    sysroot: &std::path::Path,
    plan: &Plan,
    mkfs: &mkfs::MkfsSettings,
    work: &std::path::Path,
    step: &dyn Fn(&str),
) -> Result<Option<bootupd_install::ImageInstall>> {
    let uefi = plan.firmware.contains(&Firmware::Uefi);
    match bootupd_install::installer_here(image, uefi) {
        bootupd_install::Installer::Layerboot => return Ok(None),
        bootupd_install::Installer::HostLacksVfat => {
            log::info!("the image's bootupctl installs only into a mounted vfat ESP, which the build host's kernel cannot mount (no vfat in /proc/filesystems): layerboot's installer places the EFI component and records bootupd's state");
            return Ok(None);
        }
        bootupd_install::Installer::Image => {}
    }
    let esp = plan
        .partition(Role::Esp)
        .context("the boot image definition boots UEFI but has no ESP")?;
    let options = mkfs.options(bootimage::Filesystem::Vfat);
    let spec = fs::FsSpec {
        fs: bootimage::Filesystem::Vfat,
        label: esp.label.as_deref().unwrap_or(""),
        uuid: esp
            .fs_uuid
            .as_deref()
            .context("the ESP has no filesystem id")?,
        size: esp.size,
        sector_size: plan.sector_size,
        options: &options,
        mke2fs_config: None,
    };
    step("installing the EFI component with the image's own bootupctl");
    let done = bootupd_install::install(image, exec, sysroot, &spec, work)?;
    log::info!(
        "the image's bootupctl {} installed the EFI component and recorded bootupd's state",
        done.version
    );
    Ok(Some(done))
}

/// Fill `esp_dir` with the ESP's files: what the image's bootupctl installed when it ran,
/// plus those `planned` that it did not write; else `planned` alone.
fn stage_esp(
    esp_dir: &std::path::Path,
    planned: &[(String, PathBuf)],
    from_bootupctl: Option<&bootupd_install::ImageInstall>,
    boot_dir: &std::path::Path,
) -> Result<()> {
    let Some(b) = from_bootupctl else {
        std::fs::create_dir_all(esp_dir)?;
        for (rel, src) in planned {
            let dest = esp_dir.join(rel);
            std::fs::create_dir_all(dest.parent().expect("relative path has a parent"))?;
            std::fs::copy(src, &dest).with_context(|| format!("staging {rel} for the ESP"))?;
        }
        return Ok(());
    };
    std::fs::rename(&b.esp, esp_dir)
        .with_context(|| format!("moving {} to {}", b.esp.display(), esp_dir.display()))?;
    let m = bootupd_install::merge_esp(esp_dir, planned)?;
    if !m.differing.is_empty() {
        log::warn!(
            "the image's bootupctl installed {} with other content than layerboot planned: bootupctl's kept",
            m.differing.join(", ")
        );
    }
    if !m.added.is_empty() {
        log::info!(
            "on the ESP beside bootupctl's files: {}",
            m.added.join(", ")
        );
    }
    let cfg = std::path::Path::new(bootloader::bootupd::GRUB2_DIR).join("grub.cfg");
    let theirs = std::fs::read(b.boot.join(&cfg)).ok();
    if theirs.is_some() && theirs != std::fs::read(boot_dir.join(&cfg)).ok() {
        log::info!("/boot/{}: the image's static configs as bootupctl assembles them, with layerboot's additions (Ignition, timeout or BLS menu) where the image lacks them", cfg.display());
    }
    Ok(())
}

/// The layouts of all boot images: one partition layout, the disk size the largest any of
/// them needs (each rounded to its own size multiple, until they agree), identifiers
/// seeded by the first one's name. Pure but for the error naming the odd one out.
fn target_layouts(
    s: &DiskSettings,
    facts: &[Option<coreos::PlatformFacts>],
    content: bootimage::ContentSizes,
) -> Result<Vec<Plan>> {
    let base_name = &s.bootimages[0].0;
    let resolve_all = |size: Option<u64>| -> Result<Vec<Plan>> {
        s.bootimages
            .iter()
            .zip(facts)
            .map(|((name, def), facts)| {
                let mut p = bootimage::resolve(
                    base_name,
                    def,
                    &PlanOptions {
                        size: size.or(s.size),
                        extra_kargs: s.extra_kargs.clone(),
                        content,
                        coreos: facts.clone(),
                    },
                )
                .with_context(|| format!("boot image {name}"))?;
                p.name = name.clone();
                Ok(p)
            })
            .collect()
    };
    let mut plans = resolve_all(None)?;
    for _ in 0..8 {
        let largest = plans.iter().map(|p| p.disk_size).max().unwrap_or(0);
        if plans.iter().all(|p| p.disk_size == largest) {
            break;
        }
        plans = resolve_all(Some(largest))?;
    }
    for ((name, _), p) in s.bootimages.iter().zip(&plans).skip(1) {
        let first = &plans[0];
        if p.partitions != first.partitions || p.disk_size != first.disk_size {
            bail!(
                "boot images {base_name} and {name} have different disk layouts (sector size, partitions or size multiple): build them in separate runs"
            );
        }
        if p.firmware != first.firmware {
            bail!(
                "boot images {base_name} and {name} boot under different firmware: build them in separate runs"
            );
        }
    }
    Ok(plans)
}

/// What every further platform's disk is made from.
struct RetargetInputs<'a> {
    /// The first platform's assembled disk.
    raw: &'a std::path::Path,
    /// Its staged /boot (labelled).
    boot_dir: &'a std::path::Path,
    configs: &'a bootloader::GrubConfigs,
    from: &'a Plan,
    mkfs: &'a mkfs::MkfsSettings,
    st: &'a std::path::Path,
}

/// A sparse copy of the assembled disk whose /boot filesystem is rebuilt from a copy of
/// the staged /boot retargeted to `plan` ([`retarget::apply`]); its path.
fn retargeted_copy(r: &RetargetInputs, t: &Target, cancel: &Cancel) -> Result<PathBuf> {
    let plan = &t.layout;
    let copy = |flag: &str, from: &std::path::Path, to: &std::path::Path, what: &str| {
        crate::cmd::run(std::process::Command::new("cp").arg(flag).arg(from).arg(to))
            .with_context(|| format!("copying {what}"))
    };
    let raw_t = r.st.join(format!("disk-{}.raw", t.bootimage_name));
    if !retarget::needed(r.from, plan) {
        copy("--sparse=always", r.raw, &raw_t, "the assembled disk")?;
        return Ok(raw_t);
    }
    let boot_t = r.st.join(format!("boot-{}", t.bootimage_name));
    copy("-a", r.boot_dir, &boot_t, "the staged /boot (labels kept)")?;
    retarget::apply(&boot_t, r.from, plan, r.configs)
        .with_context(|| format!("retargeting /boot for {}", t.bootimage_name))?;
    copy("--sparse=always", r.raw, &raw_t, "the assembled disk")?;
    let mut raw = std::fs::OpenOptions::new()
        .write(true)
        .open(&raw_t)
        .with_context(|| format!("opening {}", raw_t.display()))?;
    let boot_part = plan.partition(Role::Boot).context("no boot partition")?;
    write_filesystem(
        &mut raw,
        boot_part,
        &boot_t,
        r.st,
        plan.sector_size,
        r.mkfs,
        cancel,
    )?;
    drop(raw);
    std::fs::remove_dir_all(&boot_t).with_context(|| format!("removing {}", boot_t.display()))?;
    Ok(raw_t)
}

/// Build one filesystem from `src` and write it into the disk at its partition.
fn write_filesystem(
    raw: &mut std::fs::File,
    p: &bootimage::PlannedPartition,
    src: &std::path::Path,
    st: &std::path::Path,
    sector_size: u64,
    mkfs: &mkfs::MkfsSettings,
    cancel: &Cancel,
) -> Result<()> {
    let (Some(fs_kind), Some(uuid)) = (p.filesystem, p.fs_uuid.as_deref()) else {
        return Ok(());
    };
    let img = st.join(format!("part{}.img", p.number));
    fs::make_fs(
        &fs::FsSpec {
            fs: fs_kind,
            label: p.label.as_deref().unwrap_or(""),
            uuid,
            size: p.size,
            sector_size,
            options: &mkfs.options(fs_kind),
            mke2fs_config: mkfs.mke2fs_config.as_deref(),
        },
        src,
        &img,
    )?;
    cancel.check()?;
    fs::copy_sparse(&img, raw, p.offset, cancel)?;
    std::fs::remove_file(&img)?;
    Ok(())
}

/// Convert, package and compress one target's disk into its (uncommitted) output file;
/// `raw` is consumed.
/// What the live artifacts are made from, besides the assembled disk.
struct LiveContext<'a> {
    root_partition: u32,
    deploy_path: PathBuf,
    root_offset: u64,
    root_size: u64,
    root_mount_options: &'static str,
    boot_dir: PathBuf,
    esp_dir: PathBuf,
    image: &'a live::ImageLiveFiles,
    efi: live::EfiBoot,
    coreos: bool,
    osname: String,
    /// Further disks (metal4k) whose osmet files go into rootfs.img.
    osmet_disks: Vec<live::OsmetDisk>,
}

/// One of [`DiskPlan::osmet_targets`], built uncompressed into the staging directory `st`
/// by a build of its own (its stream metadata kept there, unpublished) that starts from
/// what this build `learned` of the image's mkfs defaults.
fn build_osmet_disk(
    s: &DiskPlan,
    t: &Target,
    st: &std::path::Path,
    learned: &mkfs::Learned,
    cancel: &Cancel,
) -> Result<live::OsmetDisk> {
    let mut t = t.clone();
    let name = t.output.to_string_lossy().into_owned();
    t.output = st.join(&name);
    let sub = DiskPlan {
        targets: vec![t.clone()],
        osmet_targets: Vec::new(),
        stream_metadata: st.join(format!("{}-stream.json", t.bootimage_name)),
        ..s.clone()
    };
    let report = build_learned(&sub, cancel, learned)
        .with_context(|| format!("building {} for osmet", t.bootimage_name))?
        .pop()
        .context("the build reported nothing")?;
    Ok(live::OsmetDisk {
        // Its own import: the ostree commit (and so the deployment's directory) can differ.
        deploy_path: report.deploy_path,
        raw: t.output.clone(),
        name,
        sector_size: t.layout.sector_size,
        root_partition: t
            .layout
            .partition(Role::Root)
            .context("no root partition")?
            .number,
    })
}

/// The EFI vendor directory of a staged ESP (`EFI/<vendor>`, not `EFI/BOOT`).
fn efi_vendor(esp: &std::path::Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(esp.join("EFI"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.eq_ignore_ascii_case("BOOT"))
        .collect();
    names.sort();
    names.into_iter().next()
}

/// One file a target publishes and its place in stream metadata.
struct Published {
    out: AtomicFile,
    hashes: output::Hashes,
    stream_format: String,
    /// `disk`, or for PXE `kernel`, `initramfs`, `rootfs`.
    stream_entry: &'static str,
    live: Option<LiveSummary>,
}

/// What a live ISO supports, for the build summary.
#[derive(Debug, Clone, Serialize)]
pub struct LiveSummary {
    pub volume_id: String,
    /// The ISO's default kernel arguments (`coreos-installer iso kargs show --default`).
    pub kernel_arguments: String,
    /// `coreos-installer install` without `--image-url`/`--image-file` from the live
    /// system: rootfs.img carries osmet data for 512-byte-sector disks, made by the
    /// image's own coreos-installer.
    pub offline_install: bool,
    /// `coreos-installer iso extract minimal-iso` works on the ISO (its `coreos/miniso.dat`
    /// was packed by the image's coreos-installer).
    pub minimal_iso: bool,
    /// The image has a coreos-installer, so installer configs (`iso customize
    /// --dest-device` and the like) run on the live system.
    pub installer_config: bool,
}

/// Move a finished file into its atomic output and hash it.
fn publish_file(
    src: &std::path::Path,
    dest: &std::path::Path,
) -> Result<(AtomicFile, output::Hashes)> {
    let out = AtomicFile::create(dest, 0o644)?;
    std::fs::rename(src, out.temp_path())
        .with_context(|| format!("moving {} to {}", src.display(), out.temp_path().display()))?;
    let (sha256, size) = crate::io::sha256_file(out.temp_path())?;
    Ok((
        out,
        output::Hashes {
            uncompressed_sha256: sha256.clone(),
            uncompressed_size: size,
            sha256,
            size,
        },
    ))
}

/// The live ISO and PXE set from the assembled metal disk (which it consumes).
fn publish_live(
    s: &DiskPlan,
    t: &Target,
    raw_path: &std::path::Path,
    st: &std::path::Path,
    live: &LiveContext,
    step: &dyn Fn(&str),
    cancel: &Cancel,
) -> Result<Vec<Published>> {
    let tag = &t.bootimage_name;
    step(&format!(
        "{tag}: making the live root squashfs, initramfs and ISO"
    ));
    let work = st.join(format!("{tag}-live"));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // The osmet file is named for the metal image of this deployment.
    let metal_name = format!(
        "{}{}-metal.x86_64.raw",
        image_stem(&s.image.display_name),
        s.image
            .version()
            .map(|v| format!("-{v}"))
            .unwrap_or_default()
    );
    let staged = live::build(
        &live::Inputs {
            raw: raw_path,
            root_partition: live.root_partition,
            deploy_path: &live.deploy_path,
            metal_name: &metal_name,
            root_offset: live.root_offset,
            root_size: live.root_size,
            root_mount_options: live.root_mount_options,
            boot_dir: &live.boot_dir,
            esp_dir: &live.esp_dir,
            image: live.image,
            efi: live.efi.clone(),
            coreos: live.coreos,
            osname: &live.osname,
            version: s.image.version().unwrap_or(s.image.digest.as_str()),
            work: &work,
            osmet_disks: &live.osmet_disks,
        },
        cancel,
    )?;
    std::fs::remove_file(raw_path)?;
    for d in &live.osmet_disks {
        std::fs::remove_file(&d.raw).with_context(|| format!("removing {}", d.raw.display()))?;
    }
    cancel.check()?;
    let pxe = live::pxe_outputs(&t.output);
    let summary = LiveSummary {
        volume_id: staged.volume_id.clone(),
        kernel_arguments: staged.kargs.default.clone(),
        offline_install: staged.offline_install,
        minimal_iso: staged.minimal_iso,
        installer_config: live.image.has_coreos_installer,
    };
    let mut out = Vec::new();
    for (src, dest, format, entry) in [
        (&staged.iso, &t.output, "iso", "disk"),
        (&staged.kernel, &pxe.kernel, "pxe", "kernel"),
        (&staged.initramfs, &pxe.initramfs, "pxe", "initramfs"),
        (&staged.rootfs, &pxe.rootfs, "pxe", "rootfs"),
    ] {
        step(&format!("{tag}: writing {}", dest.display()));
        let (o, hashes) = publish_file(src, dest)?;
        out.push(Published {
            out: o,
            hashes,
            stream_format: format.into(),
            stream_entry: entry,
            live: (entry == "disk").then(|| summary.clone()),
        });
    }
    log::info!(
        "live ISO volume ID {}, kernel arguments {:?}",
        staged.volume_id,
        staged.kargs.default
    );
    Ok(out)
}

fn publish(
    s: &DiskPlan,
    t: &Target,
    raw_path: &std::path::Path,
    st: &std::path::Path,
    live: Option<&LiveContext>,
    step: &dyn Fn(&str),
    cancel: &Cancel,
) -> Result<Vec<Published>> {
    let tag = &t.bootimage_name;
    let plan = &t.layout;
    if plan.package == bootimage::Package::Live {
        let live = live.context("a live build without the image's live files")?;
        return publish_live(s, t, raw_path, st, live, step, cancel);
    }
    let file_name = t
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = AtomicFile::create(&t.output, 0o644)?;
    let converted = match plan.format {
        Format::Raw => raw_path.to_path_buf(),
        format => {
            step(&format!("{tag}: converting to {format}"));
            let dest = st.join(format!("{tag}.{format}"));
            output::convert(raw_path, &dest, format, plan.qcow2_compressed)?;
            std::fs::remove_file(raw_path)?;
            dest
        }
    };
    cancel.check()?;
    let packaged = match plan.package {
        bootimage::Package::None => converted,
        package => {
            step(&format!("{tag}: packaging as {}", plan.extension()));
            let dest = st.join(format!("{tag}.{}", plan.extension()));
            package::write(
                package,
                &package::Inputs {
                    disk: &converted,
                    disk_name: &format!("{}.{}", artifact_stem(&file_name), plan.format),
                    capacity: plan.disk_size,
                    version: s.image.version().unwrap_or(s.image.digest.as_str()),
                    product: &s.image.display_name,
                    vmware: package::vmware_settings(&t.definition, s.coreos.as_ref()),
                },
                &dest,
                cancel,
            )?;
            std::fs::remove_file(&converted)?;
            dest
        }
    };
    cancel.check()?;
    step(&format!("{tag}: writing {}", t.output.display()));
    let hashes = match plan.compression {
        // Nothing to compress: the artifact is renamed into place, read once to hash it.
        Compression::None => {
            std::fs::rename(&packaged, out.temp_path()).with_context(|| {
                format!(
                    "moving {} to {}",
                    packaged.display(),
                    out.temp_path().display()
                )
            })?;
            let (sha256, size) = crate::io::sha256_file(out.temp_path())?;
            output::Hashes {
                uncompressed_sha256: sha256.clone(),
                uncompressed_size: size,
                sha256,
                size,
            }
        }
        compression => {
            let h = output::compress(
                &packaged,
                &mut out,
                compression,
                plan.compression_level,
                cancel,
            )?;
            std::fs::remove_file(&packaged)?;
            h
        }
    };
    cancel.check()?;
    Ok(vec![Published {
        out,
        hashes,
        stream_format: plan.stream_format.clone(),
        stream_entry: "disk",
        live: None,
    }])
}

/// How full the deploy left the root filesystem, against the estimate it was sized from.
fn log_root_usage(root: &std::path::Path, fs_size: u64, estimate: u64) {
    if let Ok(st) = rustix::fs::statvfs(root) {
        let used = (st.f_blocks - st.f_bfree) * st.f_frsize;
        log::info!("root filesystem: {used} bytes used of {fs_size} after the deploy ({estimate} bytes estimated from the layers)");
    }
}

fn report(s: &DiskPlan, t: &Target, deployed: &deploy::Deployed, h: output::Hashes) -> BuildReport {
    let plan = &t.layout;
    BuildReport {
        output: t.output.clone(),
        stream_metadata: s.stream_metadata.clone(),
        stream_format: plan.stream_format.clone(),
        sha256: h.sha256,
        size: h.size,
        uncompressed_sha256: h.uncompressed_sha256,
        uncompressed_size: h.uncompressed_size,
        ostree_commit: deployed.commit.clone(),
        deploy_path: deployed.deploy_path.clone(),
        origin: s.image.target_imgref.clone(),
        kargs: plan.kargs.clone(),
        disk_size: plan.disk_size,
        other_artifacts: Vec::new(),
        live: None,
        bootupctl: None,
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
    fn a_host_without_room_for_the_deployment_is_refused_naming_the_directory() {
        let dir = std::path::Path::new("/srv/out");
        assert!(check_host_space(dir, 2 << 30, 1 << 30).is_ok());
        assert!(check_host_space(dir, 1 << 30, 1 << 30).is_ok());
        let e = check_host_space(dir, 512 << 20, 1 << 30).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/srv/out has 512MiB free, but the deployment alone writes about 1GiB into the disk image there: free space or write the output to a larger filesystem"
        );
    }
    use crate::oci::layout::OciLayout;
    use crate::oci::manifest::{OCI_CONFIG, OCI_MANIFEST};

    /// A one-layer image in an OCI layout: a gzip tar holding `files`, with `labels`.
    fn image_with(dir: &std::path::Path, files: &[(&str, &str)], labels: &str) -> SourceImage {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, text.as_bytes()).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let layout = OciLayout::create(dir).unwrap();
        let layer = layout
            .write_blob(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                &gz.finish().unwrap(),
            )
            .unwrap();
        let diff_id = format!("sha256:{}", crate::io::sha256_reader(&tar[..]).unwrap().0);
        let config = layout
            .write_blob(
                OCI_CONFIG,
                format!(
                    r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{labels}}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
                )
                .as_bytes(),
            )
            .unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
            config.digest, config.size, layer.digest, layer.size
        );
        let m = layout
            .write_blob(OCI_MANIFEST, manifest.as_bytes())
            .unwrap();
        layout.set_ref(Some("os"), &m).unwrap();
        SourceImage::open(dir, Some("os")).unwrap()
    }

    fn settings(
        image: SourceImage,
        names: &[&str],
        size: Option<u64>,
        out: &std::path::Path,
    ) -> DiskSettings {
        let cat = bootimage::Catalog::shipped().unwrap();
        DiskSettings {
            image,
            bootimages: names
                .iter()
                .map(|n| (n.to_string(), cat.get(n).unwrap().clone()))
                .collect(),
            osmet_images: Vec::new(),
            output: OutputChoice::Dir(out.to_path_buf()),
            size,
            extra_kargs: vec!["quiet".into()],
            stateroot: None,
            stream_metadata: None,
            stream_name: "layered".into(),
            base_url: None,
        }
    }

    /// `plan` reads the image once and settles everything `build` needs: the CoreOS facts
    /// (stateroot, kargs, compression from image.json), the output names and stream file,
    /// one layout; and refuses what cannot be built before any work.
    #[test]
    fn plan_settles_the_build_from_the_image() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let image = image_with(
            &d.path().join("layout"),
            &[
                (
                    coreos::PLATFORMS_JSON,
                    r#"{"metal":{"kernel_arguments":["console=ttyS0,115200n8"],"grub_commands":["serial --speed=115200","terminal_input serial console","terminal_output serial console"]},"qemu":{"kernel_arguments":["console=tty0"]}}"#,
                ),
                (coreos::IMAGE_JSON, r#"{"compressor":"gzip"}"#),
                ("usr/bin/tool", "#!/bin/sh\n"),
            ],
            r#"{"ostree.bootable":"true","com.coreos.osname":"rhcos","org.opencontainers.image.version":"418.94"}"#,
        );
        let p = plan(settings(image.clone(), &["metal"], None, &out)).unwrap();
        assert_eq!(p.stateroot, "rhcos");
        assert_eq!(p.footprint.regular_files, 3);
        assert_eq!(p.targets.len(), 1);
        let t = &p.targets[0];
        assert_eq!(
            t.output,
            out.join(format!(
                "{}-418.94-metal.x86_64.raw.gz",
                image_stem(&image.display_name)
            ))
        );
        assert_eq!(p.stream_metadata, out.join("stream.json"));
        assert!(
            t.layout
                .kargs
                .contains(&"console=ttyS0,115200n8".to_string())
                && t.layout.kargs.last() == Some(&"quiet".to_string())
                && !t.layout.kargs.iter().any(|k| k.starts_with("root=")),
            "{:?}",
            t.layout.kargs
        );

        let e = plan(settings(image.clone(), &["metal", "metal4k"], None, &out)).unwrap_err();
        assert!(
            e.to_string().contains("have different disk layouts"),
            "{e:#}"
        );
        let e = plan(settings(image, &["metal"], Some(64 << 20), &out)).unwrap_err();
        assert!(
            format!("{e:#}").contains("is too small for this image"),
            "{e:#}"
        );
    }

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
            let def = cat.get(bi).unwrap();
            let compression = def.compression.resolve(None).unwrap();
            assert_eq!(
                default_output_name(&image_stem(img), *ver, bi, def, compression),
                *want
            );
        }
        // An RHCOS image's metal: gzip, as RHCOS ships it.
        let def = cat.get("metal").unwrap();
        let gz = def.compression.resolve(Some(("gzip", "osname"))).unwrap();
        assert_eq!(
            default_output_name("rhcos-layered", Some("418.94"), "metal", def, gz),
            "rhcos-layered-418.94-metal.x86_64.raw.gz"
        );
    }
}
