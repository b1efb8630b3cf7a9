//! Real ostree-native container images for tests, the demo and the benchmark: a small
//! tree committed with `ostree commit --bootable` (so libostree itself records
//! `ostree.bootable` and `ostree.linux`), encapsulated with ostree-ext's
//! `container::encapsulate` into an OCI layout (it writes the genuine labels:
//! `ostree.commit`, `ostree.final-diffid`, `containers.bootc`, …).
//! Built once per recipe into the fixture cache.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cache::cached_fixture;
use layerboot::cmd;
use layerboot::oci::layout::OciLayout;
use layerboot::oci::manifest::{
    Descriptor, ImageIndex, ImageManifest, Platform, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
};
use layerboot::oci::reference::Digest;

/// The kernel version of the fixture trees.
pub const FIXTURE_KVER: &str = "6.1.0-layerboot-test";
/// The version label of the fixture images.
pub const FIXTURE_VERSION: &str = "42.20240101.0";
/// The tag every fixture layout uses.
pub const FIXTURE_TAG: &str = "latest";

const RECIPE: &[u8] = include_bytes!("ostree_image.rs");

/// Write a small OS tree: `/usr/lib/modules/KVER/{vmlinuz,initramfs.img}` (when
/// `with_kernel`), os-release, a binary's worth of content.
pub fn write_tree(root: &Path, with_kernel: bool) -> Result<()> {
    let files: Vec<(String, Vec<u8>)> = {
        let mut v = vec![
            (
                "usr/lib/os-release".to_string(),
                format!(
                    "NAME=\"layerboot test OS\"\nID=layerboot-test\nVERSION_ID={FIXTURE_VERSION}\n"
                )
                .into_bytes(),
            ),
            (
                "usr/bin/hello".to_string(),
                b"#!/bin/sh\necho hello from a layered image\n".to_vec(),
            ),
            (
                "usr/share/layerboot/payload.bin".to_string(),
                (0..64 * 1024u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
                    .collect(),
            ),
        ];
        if with_kernel {
            v.push((
                format!("usr/lib/modules/{FIXTURE_KVER}/vmlinuz"),
                b"not a real kernel: fixture for layerboot tests\n".to_vec(),
            ));
            v.push((
                format!("usr/lib/modules/{FIXTURE_KVER}/initramfs.img"),
                b"not a real initramfs\n".to_vec(),
            ));
        }
        v
    };
    for (rel, content) in files {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("has parent"))?;
        fs::write(&p, content).with_context(|| format!("writing {}", p.display()))?;
    }
    for d in ["etc", "var", "boot", "sysroot"] {
        fs::create_dir_all(root.join(d))?;
    }
    Ok(())
}

/// Commit `tree` into a fresh repo in `work`, then encapsulate it to `oci:DEST:TAG`.
/// `bootable` adds `--bootable`, which needs the kernel in the tree.
pub fn encapsulate_tree(
    tree: &Path,
    work: &Path,
    dest: &Path,
    tag: &str,
    bootable: bool,
    labels: BTreeMap<String, String>,
) -> Result<Digest> {
    cmd::require("ostree", "ostree")?;
    let repo_path = work.join("repo");
    cmd::run(
        Command::new("ostree")
            .arg(format!("--repo={}", repo_path.display()))
            .args(["init", "--mode=archive"]),
    )?;
    let mut commit = Command::new("ostree");
    commit
        .arg(format!("--repo={}", repo_path.display()))
        .args([
            "commit",
            "--branch=layerboot/fixture",
            "--owner-uid=0",
            "--owner-gid=0",
            "--no-xattrs",
            "--timestamp=2024-01-01 00:00:00 +0000",
        ])
        .arg(format!("--add-metadata-string=version={FIXTURE_VERSION}"))
        .arg(format!("--tree=dir={}", tree.display()));
    if bootable {
        commit.arg("--bootable");
    }
    cmd::run(&mut commit)?;
    let repo_path2 = repo_path.clone();
    let dest2 = dest.to_path_buf();
    let tag = tag.to_string();
    // encapsulate is async; run it on a runtime of its own so callers may or may not
    // be inside one.
    let digest = std::thread::spawn(move || -> Result<String> {
        use ostree_ext::container::{encapsulate, Config, ExportOpts, ImageReference, Transport};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let repo = ostree_ext::ostree::Repo::new_for_path(&repo_path2);
            repo.open(ostree_ext::gio::Cancellable::NONE)
                .context("opening the fixture ostree repo")?;
            let config = Config {
                labels: Some(labels),
                cmd: None,
            };
            let mut opts = ExportOpts::default();
            opts.legacy_version_label = true;
            opts.created = Some("2024-01-01T00:00:00Z".into());
            let dest = ImageReference {
                transport: Transport::OciDir,
                name: format!("{}:{tag}", dest2.display()),
            };
            let d = encapsulate(&repo, "layerboot/fixture", &config, Some(opts), &dest)
                .await
                .context("ostree-ext encapsulate")?;
            Ok(d.to_string())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("encapsulate thread panicked"))??;
    // ostree-ext names the manifest digest; cross-check it against the layout.
    let layout = OciLayout::open(dest)?;
    let entry = layout
        .find_ref(Some(FIXTURE_TAG))
        .or_else(|_| layout.find_ref(None))?;
    if entry.digest.to_string() != digest {
        log::debug!("encapsulate reported {digest}, layout has {}", entry.digest);
    }
    Ok(entry.digest)
}

fn build_image(staging: &Path, bootable: bool) -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix("layerboot-fixture.")
        .tempdir()?;
    let tree = work.path().join("tree");
    write_tree(&tree, bootable)?;
    let dest = staging.join("oci");
    let mut labels = BTreeMap::new();
    labels.insert(
        "org.opencontainers.image.title".into(),
        "layerboot test image".into(),
    );
    encapsulate_tree(&tree, work.path(), &dest, FIXTURE_TAG, bootable, labels)?;
    Ok(())
}

/// A bootable ostree-native image: OCI layout dir with tag `latest`.
pub fn bootable_image() -> Result<PathBuf> {
    Ok(cached_fixture("ostree-bootable", &[RECIPE], |s| build_image(s, true))?.join("oci"))
}

/// An ostree-native image with no kernel and no `ostree.bootable`.
pub fn non_bootable_image() -> Result<PathBuf> {
    Ok(cached_fixture("ostree-nonbootable", &[RECIPE], |s| build_image(s, false))?.join("oci"))
}

/// The architecture given to the second image of [`multiarch_image`].
pub const OTHER_ARCH: &str = "arm64";

/// An OCI layout whose `latest` is an image index: the bootable image for amd64 and
/// the same layers under an arm64 config (index entries carry their platforms).
pub fn multiarch_image() -> Result<PathBuf> {
    let base = bootable_image()?;
    Ok(cached_fixture("ostree-multiarch", &[RECIPE], |staging| {
        let dest = staging.join("oci");
        copy_dir(&base, &dest)?;
        let layout = OciLayout::open(&dest)?;
        let entry = layout.find_ref(Some(FIXTURE_TAG))?;
        let manifest: ImageManifest =
            serde_json::from_slice(&layout.read_blob(&entry.digest, entry.size)?)?;
        let mut config: serde_json::Value = serde_json::from_slice(
            &layout.read_blob(&manifest.config.digest, manifest.config.size)?,
        )?;
        let base_arch = config["architecture"]
            .as_str()
            .unwrap_or("amd64")
            .to_string();
        if base_arch == OTHER_ARCH {
            bail!("fixture host arch is {OTHER_ARCH}; the multi-arch fixture needs another");
        }
        config["architecture"] = OTHER_ARCH.into();
        let other_config = layout.write_blob(OCI_CONFIG, &serde_json::to_vec(&config)?)?;
        let other_manifest = ImageManifest {
            config: other_config,
            ..manifest.clone()
        };
        let other = layout.write_blob(OCI_MANIFEST, &serde_json::to_vec(&other_manifest)?)?;
        let with_platform = |d: &Descriptor, arch: &str| Descriptor {
            platform: Some(Platform::linux(arch)),
            annotations: None,
            ..d.clone()
        };
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: vec![
                with_platform(&entry, &base_arch),
                with_platform(&other, OTHER_ARCH),
            ],
            annotations: None,
        };
        let index_desc = layout.write_blob(OCI_INDEX, &serde_json::to_vec(&index)?)?;
        layout.set_ref(Some(FIXTURE_TAG), &index_desc)?;
        Ok(())
    })?
    .join("oci"))
}

/// The bootable image plus one derived layer (`/usr/share/acme/agent.conf`,
/// `/usr/bin/acme-agent`), the shape a `FROM base … RUN …` Containerfile build gives:
/// the ostree labels are inherited and `ostree.final-diffid` still names the base's
/// last layer.
pub fn layered_image() -> Result<PathBuf> {
    let base = bootable_image()?;
    Ok(cached_fixture("ostree-layered", &[RECIPE], |staging| {
        let dest = staging.join("oci");
        copy_dir(&base, &dest)?;
        let layout = OciLayout::open(&dest)?;
        let entry = layout.find_ref(Some(FIXTURE_TAG))?;
        let mut manifest: ImageManifest = serde_json::from_slice(&layout.read_blob(&entry.digest, entry.size)?)?;
        let mut config: serde_json::Value = serde_json::from_slice(&layout.read_blob(&manifest.config.digest, manifest.config.size)?)?;
        let mut tar_bytes = Vec::new();
        {
            let mut tar = tar::Builder::new(&mut tar_bytes);
            let files: [(&str, &[u8], u32); 2] = [
                ("usr/share/acme/agent.conf", b"endpoint = https://acme.example.com\n", 0o644),
                ("usr/bin/acme-agent", b"#!/bin/sh\necho acme agent\n", 0o755),
            ];
            for (path, content, mode) in files {
                let mut h = tar::Header::new_gnu();
                h.set_size(content.len() as u64);
                h.set_mode(mode);
                h.set_mtime(1_704_067_200);
                h.set_cksum();
                tar.append_data(&mut h, path, content)?;
            }
            tar.finish()?;
        }
        let diff_id = format!("sha256:{}", layerboot::io::sha256_reader(&tar_bytes[..])?.0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar_bytes)?;
        let layer = layout.write_blob("application/vnd.oci.image.layer.v1.tar+gzip", &gz.finish()?)?;
        config["rootfs"]["diff_ids"].as_array_mut().context("config without rootfs.diff_ids")?.push(diff_id.into());
        if let Some(h) = config["history"].as_array_mut() {
            h.push(serde_json::json!({ "created": "2024-01-01T00:00:00Z", "created_by": "RUN install acme-agent (layerboot fixture)" }));
        }
        manifest.config = layout.write_blob(OCI_CONFIG, &serde_json::to_vec(&config)?)?;
        manifest.layers.push(layer);
        let m = layout.write_blob(OCI_MANIFEST, &serde_json::to_vec(&manifest)?)?;
        layout.set_ref(Some(FIXTURE_TAG), &m)?;
        Ok(())
    })?
    .join("oci"))
}

/// Copy a directory tree of plain files (a layout).
pub fn copy_dir(src: &Path, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest)?;
    for e in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        let to = dest.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to)?;
        } else {
            fs::copy(e.path(), &to).with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// A plain (non-ostree) image of `layers` uncompressed tar layers of random,
/// incompressible content, `size_mib` MiB in total, written to `oci:DEST:latest`.
/// For the pull benchmark: big, cheap to make, honest to transfer.
pub fn make_bench_image(dest: &Path, size_mib: u64, layers: u32) -> Result<Digest> {
    if layers == 0 {
        bail!("--layers must be at least 1");
    }
    let layout = OciLayout::create(dest)?;
    let per_layer = (size_mib << 20) / layers as u64;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ size_mib ^ ((layers as u64) << 32);
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..layers {
        let tmp = dest.join(format!("blobs/sha256/.layer{i}.tmp"));
        let f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w =
            layerboot::io::HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, f));
        {
            let mut tar = tar::Builder::new(&mut w);
            let mut header = tar::Header::new_gnu();
            header.set_size(per_layer);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_cksum();
            let data = XorShiftReader {
                state: &mut seed,
                left: per_layer,
            };
            tar.append_data(&mut header, format!("bench/layer{i}.bin"), data)?;
            tar.finish()?;
        }
        let (inner, hex, n) = w.finish();
        inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let digest = Digest::from_sha256_hex(&hex).expect("sha256");
        fs::rename(&tmp, layout.blob_path(&digest))?;
        descs.push(Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar",
            digest.clone(),
            n,
        ));
        diff_ids.push(digest.to_string());
    }
    let config = serde_json::json!({
        "architecture": layerboot::oci::manifest::host_arch(),
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": { "Labels": { "org.opencontainers.image.title": "layerboot pull benchmark" } },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = layout.write_blob(OCI_CONFIG, &serde_json::to_vec(&config)?)?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config,
        layers: descs,
        annotations: None,
    };
    let m = layout.write_blob(OCI_MANIFEST, &serde_json::to_vec(&manifest)?)?;
    layout.set_ref(Some(FIXTURE_TAG), &m)?;
    Ok(m.digest)
}

/// xorshift64 bytes: incompressible enough for gzip/zstd, and fast.
struct XorShiftReader<'a> {
    state: &'a mut u64,
    left: u64,
}

impl std::io::Read for XorShiftReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        let n = n - n % 8;
        let n = if n == 0 {
            (self.left as usize).min(buf.len())
        } else {
            n
        };
        for chunk in buf[..n].chunks_mut(8) {
            let mut x = *self.state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *self.state = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}
