//! What an image is, for a human or a script: digest and pinned pull spec, platform,
//! the ostree / bootc labels, layers, and a verdict on whether it can boot a CoreOS /
//! RHCOS node, with warnings for everything that would bite later.
//!
//! The JSON form ([`Report`], `inspect --json`) is a stable interface: fields are only
//! ever added. It is documented in README.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::disk::coreos::CoreosImage;
use crate::disk::SourceImage;
use crate::oci::manifest::Platform;
use crate::oci::reference::ImageRef;
use crate::registry::{RegistryOptions, ResolvedImage};

/// Labels shown in the human summary (all labels are in the JSON).
pub const KEY_LABELS: &[&str] = &[
    "ostree.bootable",
    "containers.bootc",
    "ostree.linux",
    "ostree.commit",
    "ostree.final-diffid",
    "version",
    "org.opencontainers.image.version",
];

/// Version of the JSON shape; bumped only on an incompatible change.
pub const REPORT_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub schema: u32,
    /// The reference as given.
    pub image: String,
    /// `registry`, `oci` or `oci-archive`.
    pub transport: &'static str,
    /// Digest of the image manifest (for a multi-arch image: of the chosen platform's).
    pub digest: String,
    /// `registry/repo@sha256:…`: what cluster manifests must use. Null for local layouts.
    pub pull_spec: Option<String>,
    pub media_type: String,
    /// Digest of the index (manifest list) the platform was chosen from, if any.
    pub index_digest: Option<String>,
    /// Platforms the index offers (empty for a single-platform image).
    pub available_platforms: Vec<String>,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub created: Option<String>,
    /// `org.opencontainers.image.version`, else `version`.
    pub version: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub layers: Vec<LayerInfo>,
    /// Config plus layers, as stored (compressed) bytes.
    pub total_size: u64,
    pub ostree: OstreeInfo,
    pub verdict: Verdict,
    pub warnings: Vec<String>,
    /// What the image's own files say, read from its layers (local layouts always, registry
    /// images with `--content`); null when not read.
    pub content: Option<Content>,
}

/// What an image's files say about how layerboot builds its disks.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    /// `coreos` when the image ships coreos-assembler's `platforms.json` (its disks are
    /// then built the CoreOS way), else `ostree`.
    pub kind: &'static str,
    /// The ostree stateroot its disks deploy into.
    pub stateroot: String,
    /// platforms.json, image.json and `com.coreos.osname`, as read (CoreOS images only).
    pub coreos: Option<CoreosImage>,
    /// The compression the distribution ships its metal artifact with.
    pub metal_compression: Option<String>,
    /// The SELinux policy its `/etc/selinux/config` selects: disks are labelled from it.
    pub selinux_policy: Option<String>,
    /// What its live ISO (`disk -p live`) can do.
    pub live: LiveSupport,
}

/// What an image's live ISO and PXE set can do, from its files.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LiveSupport {
    /// Its initramfs has live-root support (`/usr/bin/is-live-image`, CoreOS's
    /// `35coreos-live`): `disk -p live` builds; else it is refused.
    pub boots_live: bool,
    /// It carries coreos-installer: its live system installs offline (osmet data made by
    /// that coreos-installer) and runs installer configs.
    pub offline_install: bool,
}

/// The image's own facts, from its layers (thin I/O over the pure parsers of
/// `disk::coreos` and `disk::selinux`).
pub fn read_content(image: &SourceImage) -> anyhow::Result<Content> {
    use crate::disk::coreos::{from_files, IMAGE_JSON, PLATFORMS_JSON};
    use crate::disk::live::{initramfs_has_member, IMAGE_COREOS_INSTALLER, LIVE_HOOK};
    // The deployment's initramfs: where the kernel the label names keeps it.
    let initramfs = image
        .labels
        .get("ostree.linux")
        .map(|k| format!("usr/lib/modules/{k}/initramfs.img"));
    let mut paths = vec![
        PLATFORMS_JSON,
        IMAGE_JSON,
        SELINUX_CONFIG,
        USR_SELINUX_CONFIG,
        IMAGE_COREOS_INSTALLER,
    ];
    paths.extend(initramfs.as_deref());
    // One pass over the layers for every file (an initramfs and a coreos-installer are
    // tens of MiB).
    let files = image.read_files_up_to(&paths, 1 << 30)?;
    let boots_live = match initramfs.as_ref().and_then(|p| files.get(p)) {
        Some(data) => initramfs_has_member(data, LIVE_HOOK).unwrap_or(false),
        None => false,
    };
    let coreos = from_files(
        files.get(PLATFORMS_JSON).map(Vec::as_slice),
        files.get(IMAGE_JSON).map(Vec::as_slice),
        &image.labels,
    )?;
    // A derived layer writes /etc; the ostree base keeps it as /usr/etc.
    let selinux_policy = files
        .get(SELINUX_CONFIG)
        .or_else(|| files.get(USR_SELINUX_CONFIG))
        .and_then(|b| crate::disk::selinux::parse_config(&String::from_utf8_lossy(b)));
    Ok(Content {
        kind: if coreos.is_some() { "coreos" } else { "ostree" },
        stateroot: crate::disk::coreos::stateroot(None, &image.labels)?,
        metal_compression: coreos
            .as_ref()
            .and_then(|c| c.compressor("metal"))
            .map(|(c, _)| c)
            .map(str::to_string),
        coreos,
        selinux_policy,
        live: LiveSupport {
            boots_live,
            offline_install: files.contains_key(IMAGE_COREOS_INSTALLER),
        },
    })
}

const SELINUX_CONFIG: &str = "etc/selinux/config";
const USR_SELINUX_CONFIG: &str = "usr/etc/selinux/config";

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LayerInfo {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OstreeInfo {
    /// `ostree.bootable` label is true.
    pub bootable: bool,
    /// `containers.bootc` label is 1.
    pub bootc: bool,
    /// Kernel version from `ostree.linux`.
    pub linux: Option<String>,
    pub commit: Option<String>,
    pub final_diff_id: Option<String>,
    /// Layers after the one `ostree.final-diffid` names: what a Containerfile added on
    /// top of the ostree base. Null when that label is absent or not found.
    pub derived_layers: Option<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// Usable as a node's OS image: a bootable ostree-native container.
    pub bootable: bool,
    /// The image carries ostree content (a commit, or the chunked ostree layers).
    pub ostree_native: bool,
    pub kernel: Option<String>,
    /// One line for humans.
    pub summary: String,
}

/// Build the report for a resolved image; `requested_arch` is what `--arch` (or the
/// host) asked for.
pub fn report(image: &ImageRef, resolved: &ResolvedImage, opts: &RegistryOptions) -> Report {
    let labels = resolved.config.labels();
    let label = |k: &str| labels.get(k).cloned();
    let diff_ids = resolved
        .config
        .rootfs
        .as_ref()
        .map(|r| r.diff_ids.clone())
        .unwrap_or_default();
    let final_diff_id = label("ostree.final-diffid");
    let derived_layers = final_diff_id
        .as_ref()
        .and_then(|f| diff_ids.iter().position(|d| d == f))
        .map(|i| diff_ids.len() - 1 - i);
    let ostree = OstreeInfo {
        bootable: crate::image::says_ostree_bootable(&labels),
        bootc: crate::image::is_bootc(&labels),
        linux: label("ostree.linux"),
        commit: label("ostree.commit"),
        final_diff_id,
        derived_layers,
    };
    let ostree_native = crate::image::is_ostree_native(&labels);
    let bootable = crate::image::is_bootable(&labels);
    let platform: &Platform = &resolved.platform;
    let os = if resolved.config.os.is_empty() {
        platform.os.clone()
    } else {
        resolved.config.os.clone()
    };
    let arch = if resolved.config.architecture.is_empty() {
        platform.architecture.clone()
    } else {
        resolved.config.architecture.clone()
    };

    let mut warnings = Vec::new();
    if !bootable {
        if ostree_native {
            warnings.push("ostree content but no ostree.bootable/containers.bootc label: this image cannot boot a node".to_string());
        } else {
            warnings.push("not a bootable ostree-native image (no ostree.bootable, containers.bootc or ostree.commit label): it cannot be a node's OS image".to_string());
        }
    }
    if bootable && ostree.linux.is_none() {
        warnings.push("no ostree.linux label: the kernel version is unknown".to_string());
    }
    if let ImageRef::Registry(r) = image {
        if r.digest.is_none() {
            let spec = resolved.pinned_pull_spec().unwrap_or_default();
            warnings.push(format!(
                "reference by tag '{}' can move: use the digest pull spec {spec}",
                r.tag_or_latest()
            ));
        }
    }
    if os != "linux" {
        warnings.push(format!("image OS is '{os}', not linux"));
    }
    if arch != opts.arch {
        warnings.push(format!(
            "architecture mismatch: the image is {os}/{arch} but {}/{} was requested (--arch)",
            opts.os, opts.arch
        ));
    }
    if ostree.final_diff_id.is_some() && ostree.derived_layers.is_none() {
        warnings.push("ostree.final-diffid names a layer the image does not have".to_string());
    }

    let kernel = ostree.linux.clone();
    let summary = match (bootable, &kernel) {
        (true, Some(k)) => format!("bootable ostree-native image, kernel {k}"),
        (true, None) => "bootable ostree-native image, kernel unknown".to_string(),
        (false, _) if ostree_native => "ostree-native but NOT bootable".to_string(),
        (false, _) => "NOT a bootable ostree-native image".to_string(),
    };
    Report {
        schema: REPORT_SCHEMA,
        image: image.to_string(),
        transport: match image {
            ImageRef::Registry(_) => "registry",
            ImageRef::OciDir { .. } => "oci",
            ImageRef::OciArchive { .. } => "oci-archive",
        },
        digest: resolved.manifest_digest.to_string(),
        pull_spec: resolved.pinned_pull_spec(),
        media_type: resolved.manifest_media_type.clone(),
        index_digest: resolved.index_digest.as_ref().map(|d| d.to_string()),
        available_platforms: resolved
            .index_platforms
            .iter()
            .map(|p| p.to_string())
            .collect(),
        os,
        architecture: arch,
        variant: resolved
            .config
            .variant
            .clone()
            .or_else(|| platform.variant.clone()),
        created: resolved.config.created.clone(),
        version: crate::image::version(&labels).map(str::to_string),
        labels: labels.clone(),
        layers: resolved
            .manifest
            .layers
            .iter()
            .map(|l| LayerInfo {
                digest: l.digest.to_string(),
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect(),
        total_size: resolved.total_size(),
        ostree,
        verdict: Verdict {
            bootable,
            ostree_native,
            kernel,
            summary,
        },
        warnings,
        content: None,
    }
}

/// Bytes as `12.3 MiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The human-readable form.
pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(s, "{:<11} {v}", format!("{k}:"));
    };
    line("Image", &r.image);
    line("Digest", &r.digest);
    line(
        "Pull spec",
        r.pull_spec
            .as_deref()
            .unwrap_or("(local layout: push it to a registry to get one)"),
    );
    let mut platform = format!("{}/{}", r.os, r.architecture);
    if let Some(v) = &r.variant {
        platform.push('/');
        platform.push_str(v);
    }
    if let Some(i) = &r.index_digest {
        platform.push_str(&format!(
            " (chosen from index {i}: {})",
            r.available_platforms.join(", ")
        ));
    }
    line("Platform", &platform);
    line("Created", r.created.as_deref().unwrap_or("(unknown)"));
    line("Version", r.version.as_deref().unwrap_or("(none)"));
    let _ = writeln!(s, "Labels:");
    for k in KEY_LABELS {
        let _ = writeln!(
            s,
            "  {:<34} {}",
            k,
            r.labels.get(*k).map(String::as_str).unwrap_or("-")
        );
    }
    let others = r
        .labels
        .keys()
        .filter(|k| !KEY_LABELS.contains(&k.as_str()))
        .count();
    if others > 0 {
        let _ = writeln!(s, "  (+{others} more labels; see --json)");
    }
    let _ = writeln!(
        s,
        "Layers:     {} ({} total)",
        r.layers.len(),
        human_size(r.total_size)
    );
    for (i, l) in r.layers.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {:>3}  {}  {:>10}",
            i + 1,
            l.digest,
            human_size(l.size)
        );
    }
    if let Some(n) = r.ostree.derived_layers {
        let _ = writeln!(s, "Derived:    {n} layer(s) on top of the ostree base");
    }
    let _ = writeln!(s, "Verdict:    {}", r.verdict.summary);
    match &r.content {
        None => {
            let _ = writeln!(
                s,
                "Kind:       (image files not read; --content reads them from the layers)"
            );
        }
        Some(c) => render_content(&mut s, c),
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

fn render_content(s: &mut String, c: &Content) {
    match &c.coreos {
        Some(co) => {
            let _ = writeln!(
                s,
                "Kind:       CoreOS image (/{}): disks are built the CoreOS way",
                crate::disk::coreos::PLATFORMS_JSON
            );
            let names: Vec<&str> = co.platforms.keys().map(String::as_str).collect();
            let _ = writeln!(s, "  {:<18} {}", "platforms.json", names.join(", "));
            match &co.image {
                Some(i) => {
                    let mut keys: Vec<&str> = i.other.keys().map(String::as_str).collect();
                    if !i.extra_kargs.is_empty() {
                        keys.push("extra-kargs");
                    }
                    if i.compressor.is_some() {
                        keys.push("compressor");
                    }
                    keys.sort_unstable();
                    let _ = writeln!(s, "  {:<18} {}", "image.json", keys.join(", "));
                }
                None => {
                    let _ = writeln!(s, "  {:<18} (none)", "image.json");
                }
            }
            let _ = writeln!(
                s,
                "  {:<18} {}",
                "osname",
                co.osname
                    .as_deref()
                    .unwrap_or("(no com.coreos.osname label)")
            );
        }
        None => {
            let _ = writeln!(
                s,
                "Kind:       ostree image (no /{}): disks follow the boot image definitions",
                crate::disk::coreos::PLATFORMS_JSON
            );
        }
    }
    let _ = writeln!(s, "  {:<18} {}", "stateroot", c.stateroot);
    if let Some(m) = &c.metal_compression {
        let _ = writeln!(s, "  {:<18} {m}", "metal compression");
    }
    let _ = writeln!(
        s,
        "  {:<18} {}",
        "SELinux policy",
        c.selinux_policy
            .as_deref()
            .unwrap_or("(none: disks stay unlabelled)")
    );
    let _ = writeln!(
        s,
        "  {:<18} {}",
        "live ISO",
        match (c.live.boots_live, c.live.offline_install) {
            (true, true) => "boots live; installs offline (the image's coreos-installer)",
            (true, false) => "boots live; installs with --image-url only (no coreos-installer)",
            (false, _) => "no (its initramfs has no live-root support: disk -p live refuses it)",
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (5 << 20, "5.0 MiB"),
            (3 << 30, "3.0 GiB"),
        ];
        for (n, want) in cases {
            assert_eq!(human_size(n), want);
        }
    }

    fn resolved(
        labels: &[(&str, &str)],
        arch: &str,
        diff_ids: &[&str],
    ) -> (ResolvedImage, tempfile::TempDir) {
        use crate::oci::manifest::*;
        let dir = tempfile::tempdir().unwrap();
        let d = |c: char| -> crate::oci::reference::Digest {
            format!("sha256:{}", c.to_string().repeat(64))
                .parse()
                .unwrap()
        };
        let config = ImageConfig {
            architecture: arch.into(),
            os: "linux".into(),
            created: Some("2024-01-01T00:00:00Z".into()),
            config: Some(RuntimeConfig {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            rootfs: Some(RootFs {
                kind: "layers".into(),
                diff_ids: diff_ids.iter().map(|s| s.to_string()).collect(),
            }),
            ..Default::default()
        };
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            config: Descriptor::new(OCI_CONFIG, d('c'), 10),
            layers: vec![Descriptor::new(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                d('a'),
                1 << 20,
            )],
            annotations: None,
        };
        let r = ResolvedImage {
            source_ref: "quay.io/acme/x:v1".parse().unwrap(),
            pinned: Some(match "quay.io/acme/x@sha256:1111111111111111111111111111111111111111111111111111111111111111".parse().unwrap() {
                ImageRef::Registry(r) => r,
                _ => unreachable!(),
            }),
            manifest_digest: d('1'),
            manifest_media_type: OCI_MANIFEST.into(),
            manifest_raw: vec![],
            manifest,
            config_raw: vec![],
            config,
            platform: Platform::linux(arch),
            index_digest: None,
            index_platforms: vec![],
            blobs: crate::registry::BlobSource::Layout(crate::oci::layout::OciLayout::create(dir.path()).unwrap(), None),
        };
        (r, dir)
    }

    #[test]
    fn verdicts_and_warnings() {
        struct Case {
            name: &'static str,
            image: &'static str,
            labels: &'static [(&'static str, &'static str)],
            arch: &'static str,
            diff_ids: &'static [&'static str],
            bootable: bool,
            summary: &'static str,
            warnings: &'static [&'static str],
            derived: Option<usize>,
        }
        let rhcos: &[(&str, &str)] = &[
            ("ostree.bootable", "true"),
            ("containers.bootc", "1"),
            ("ostree.linux", "5.14.0-427.el9.x86_64"),
            ("ostree.commit", "abc"),
            ("ostree.final-diffid", "sha256:b"),
        ];
        let cases = [
            Case { name: "layered rhcos by digest", image: "quay.io/acme/x@sha256:1111111111111111111111111111111111111111111111111111111111111111", labels: rhcos, arch: "amd64", diff_ids: &["sha256:a", "sha256:b", "sha256:c"], bootable: true, summary: "bootable ostree-native image, kernel 5.14.0-427.el9.x86_64", warnings: &[], derived: Some(1) },
            Case { name: "by tag", image: "quay.io/acme/x:v1", labels: rhcos, arch: "amd64", diff_ids: &["sha256:b"], bootable: true, summary: "kernel 5.14", warnings: &["tag 'v1' can move: use the digest pull spec quay.io/acme/x@sha256:1111"], derived: Some(0) },
            Case { name: "wrong arch", image: "oci:/x", labels: rhcos, arch: "arm64", diff_ids: &["sha256:b"], bootable: true, summary: "bootable", warnings: &["architecture mismatch: the image is linux/arm64 but linux/amd64"], derived: Some(0) },
            Case { name: "plain container", image: "oci:/x", labels: &[("maintainer", "me")], arch: "amd64", diff_ids: &["sha256:a"], bootable: false, summary: "NOT a bootable", warnings: &["not a bootable ostree-native image"], derived: None },
            Case { name: "ostree but not bootable", image: "oci:/x", labels: &[("ostree.commit", "abc")], arch: "amd64", diff_ids: &[], bootable: false, summary: "ostree-native but NOT bootable", warnings: &["cannot boot a node"], derived: None },
            Case { name: "bootc without kernel label", image: "oci:/x", labels: &[("containers.bootc", "1"), ("ostree.final-diffid", "sha256:zz")], arch: "amd64", diff_ids: &["sha256:a"], bootable: true, summary: "kernel unknown", warnings: &["no ostree.linux label", "final-diffid names a layer the image does not have"], derived: None },
        ];
        let opts = RegistryOptions {
            arch: "amd64".into(),
            ..Default::default()
        };
        for c in cases {
            let (r, _dir) = resolved(c.labels, c.arch, c.diff_ids);
            let image: ImageRef = c.image.parse().unwrap();
            let rep = report(&image, &r, &opts);
            assert_eq!(rep.verdict.bootable, c.bootable, "{}", c.name);
            assert!(
                rep.verdict.summary.contains(c.summary),
                "{}: {}",
                c.name,
                rep.verdict.summary
            );
            assert_eq!(
                rep.warnings.len(),
                c.warnings.len(),
                "{}: {:?}",
                c.name,
                rep.warnings
            );
            for w in c.warnings {
                assert!(
                    rep.warnings.iter().any(|x| x.contains(w)),
                    "{}: no warning with '{w}' in {:?}",
                    c.name,
                    rep.warnings
                );
            }
            assert_eq!(rep.ostree.derived_layers, c.derived, "{}", c.name);
        }
    }

    #[test]
    fn json_shape_is_stable() {
        let (r, _dir) = resolved(
            &[
                ("ostree.bootable", "true"),
                ("ostree.linux", "6.1"),
                ("ostree.commit", "abc"),
            ],
            "amd64",
            &["sha256:a"],
        );
        let opts = RegistryOptions {
            arch: "amd64".into(),
            ..Default::default()
        };
        let rep = report(&"quay.io/acme/x:v1".parse().unwrap(), &r, &opts);
        let got = serde_json::to_string_pretty(&rep).unwrap();
        let text = render_text(&rep);
        if std::env::var_os("LAYERBOOT_UPDATE_GOLDEN").is_some() {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/inspect");
            std::fs::write(dir.join("golden-report.json"), format!("{got}\n")).unwrap();
            std::fs::write(dir.join("golden-report.txt"), &text).unwrap();
        }
        let golden = include_str!("../../tests/golden/inspect/golden-report.json");
        pretty_assertions::assert_eq!(got.trim(), golden.trim());
        let golden_text = include_str!("../../tests/golden/inspect/golden-report.txt");
        pretty_assertions::assert_eq!(text.trim(), golden_text.trim());
    }
}
