//! CoreOS images (Fedora CoreOS, RHCOS and images layered on them): what makes an image
//! one, and the facts layerboot takes from it instead of from its own definitions.
//!
//! An image is a CoreOS image when it carries coreos-assembler's platform table,
//! `/usr/share/coreos-assembler/platforms.json` ([`is_coreos`] is the one place that
//! decides). From the image, as CoreOS's own build does (osbuild stage
//! `org.osbuild.coreos.platform`, coreos-assembler `src/osbuild-manifests/
//! coreos.osbuild.x86_64.mpp.yaml`):
//! - `platforms.json`: per platform, `kernel_arguments` (console) and `grub_commands`
//!   (GRUB console settings, written into `/boot/grub2/console.cfg` between the
//!   `# CONSOLE-SETTINGS-START`/`-END` markers that `coreos-installer install --console`
//!   rewrites, coreos-installer `src/install.rs`); the file itself is copied to
//!   `/boot/coreos/platforms.json`, where coreos-installer's `--platform` reads it;
//! - `image.json` (fedora-coreos-config `image-base.yaml` as JSON): `extra-kargs`, and
//!   `platform-compressor` / `compressor` (how coreos-assembler's `cmd-compress` compresses
//!   each artifact: Fedora CoreOS says `xz`, RHCOS says nothing and gets cosa's `gzip`);
//! - the label `com.coreos.osname`: the ostree stateroot (`fedora-coreos`, `rhcos`).
//!
//! Parsing is pure (over bytes, [`from_files`]); `disk::plan` takes the files from the
//! image's layers in its one pass over them (`SourceImage::survey`).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const PLATFORMS_JSON: &str = "usr/share/coreos-assembler/platforms.json";
pub const IMAGE_JSON: &str = "usr/share/coreos-assembler/image.json";
/// The image label naming the ostree stateroot.
pub const OSNAME_LABEL: &str = "com.coreos.osname";
/// Where the platform table goes on the boot filesystem (osbuild's
/// `PLATFORMS_JSON_DEST`, read by coreos-installer as `<boot>/coreos/platforms.json`).
pub const BOOT_PLATFORMS_JSON: &str = "coreos/platforms.json";

/// CoreOS's fixed identifiers, randomized by the node's first boot
/// (coreos-assembler `coreos.osbuild.x86_64.mpp.yaml`: `table.uuid`, `boot_fs_uuid`,
/// `root_fs_uuid`; fedora-coreos-config `05core` `coreos-gpt-setup` /
/// `ignition-ostree-uuid-{boot,root}` replace them).
pub const SENTINEL_DISK_GUID: &str = "00000000-0000-4000-a000-000000000001";
pub const SENTINEL_BOOT_FS_UUID: &str = "96d15588-3596-4b3c-adca-a2ff7279ea63";
pub const SENTINEL_ROOT_FS_UUID: &str = "910678ff-f77e-4a7d-8d53-86f2ac47a823";
/// The ESP's volume id (osbuild `org.osbuild.mkfs.fat` `volid: 7B7795E7`).
pub const ESP_VOLUME_ID: &str = "7B77-95E7";

/// The sentinel filesystem id of a partition role, if CoreOS fixes one.
pub fn sentinel_fs_id(role: crate::bootimage::Role) -> Option<&'static str> {
    use crate::bootimage::Role;
    match role {
        Role::Boot => Some(SENTINEL_BOOT_FS_UUID),
        Role::Root => Some(SENTINEL_ROOT_FS_UUID),
        Role::Esp => Some(ESP_VOLUME_ID),
        Role::BiosBoot => None,
    }
}

/// mkfs options CoreOS builds with (issue #12 row 9): XFS with two allocation groups
/// (growfs on a large disk then adds AGs of the grown size instead of hundreds of small
/// ones), ext4 /boot with `metadata_csum_seed` (coreos-assembler
/// coreos.osbuild.x86_64.mpp.yaml `org.osbuild.mkfs.ext4`), so a later UUID change
/// (first-boot randomization) needs no checksum rewrite.
pub fn mkfs_options(fs: crate::bootimage::Filesystem) -> &'static [&'static str] {
    use crate::bootimage::Filesystem;
    match fs {
        Filesystem::Xfs => &["-d", "agcount=2"],
        Filesystem::Ext4 => &["-O", "metadata_csum_seed"],
        Filesystem::Vfat => &[],
    }
}

/// One platform's entry in `platforms.json` (the keys coreos-installer and osbuild read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grub_commands: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_arguments: Vec<String>,
}

/// `image.json`: the settings layerboot uses; the rest is kept for `inspect`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageSettings {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_kargs: Vec<String>,
    /// `xz` (Fedora CoreOS); absent in RHCOS (coreos-assembler's default, `gzip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressor: Option<String>,
    /// Per artifact (coreos-assembler image names: `metal`, `metal4k`, `qemu`, …), over
    /// `compressor`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platform_compressor: BTreeMap<String, String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// What layerboot read from a CoreOS image.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoreosImage {
    /// platforms.json as shipped (copied byte for byte to `/boot/coreos/platforms.json`).
    #[serde(skip)]
    pub platforms_json: Vec<u8>,
    pub platforms: BTreeMap<String, PlatformSpec>,
    pub image: Option<ImageSettings>,
    /// `com.coreos.osname`.
    pub osname: Option<String>,
}

/// For one build's platform: what the image says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformFacts {
    /// platforms.json's `kernel_arguments`, then image.json's `extra-kargs`.
    pub kargs: Vec<String>,
    /// platforms.json's `grub_commands` (empty: GRUB's defaults, as on `metal`).
    pub grub_commands: Vec<String>,
    /// The artifact's compressor as the distribution ships it, and where that was read
    /// ([`CoreosImage::compressor`]).
    pub compressor: Option<(String, String)>,
}

/// The ostree stateroot: `--stateroot` when given, else the image's `com.coreos.osname`
/// (CoreOS deploys into it: `/sysroot/ostree/deploy/rhcos/var` is hard-coded in field
/// tooling), else `default`.
pub fn stateroot(explicit: Option<&str>, labels: &BTreeMap<String, String>) -> Result<String> {
    if let Some(s) = explicit {
        return Ok(s.to_string());
    }
    match labels.get(OSNAME_LABEL).filter(|s| !s.is_empty()) {
        Some(os) => {
            anyhow::ensure!(
                os.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    && !os.starts_with('.'),
                "the image's label {OSNAME_LABEL}={os:?} is not a valid stateroot name (letters, digits, '-', '_', '.'); pass --stateroot"
            );
            Ok(os.clone())
        }
        None => Ok("default".to_string()),
    }
}

/// The one answer to "is this a CoreOS image": it carries coreos-assembler's platform table.
pub fn is_coreos(platforms_json: Option<&[u8]>) -> bool {
    platforms_json.is_some()
}

/// `platforms.json` (pure). The image carries its architecture's table: platform → spec.
pub fn parse_platforms(bytes: &[u8]) -> Result<BTreeMap<String, PlatformSpec>> {
    serde_json::from_slice(bytes)
        .context("parsing platforms.json (platform -> {grub_commands, kernel_arguments})")
}

/// `image.json` (pure).
pub fn parse_image_json(bytes: &[u8]) -> Result<ImageSettings> {
    serde_json::from_slice(bytes).context("parsing image.json")
}

/// Build the description from the files and labels (pure); `None` for other images.
pub fn from_files(
    platforms_json: Option<&[u8]>,
    image_json: Option<&[u8]>,
    labels: &BTreeMap<String, String>,
) -> Result<Option<CoreosImage>> {
    if !is_coreos(platforms_json) {
        return Ok(None);
    }
    let raw = platforms_json.unwrap_or_default();
    Ok(Some(CoreosImage {
        platforms: parse_platforms(raw).with_context(|| format!("/{PLATFORMS_JSON}"))?,
        platforms_json: raw.to_vec(),
        image: image_json
            .map(parse_image_json)
            .transpose()
            .with_context(|| format!("/{IMAGE_JSON}"))?,
        osname: labels.get(OSNAME_LABEL).filter(|s| !s.is_empty()).cloned(),
    }))
}

impl CoreosImage {
    /// The facts for one build (pure): `bootimage` is the definition's name (coreos-assembler
    /// names its artifacts the same: metal, metal4k, qemu), `platform` its Ignition platform.
    pub fn facts(&self, bootimage: &str, platform: &str) -> PlatformFacts {
        let spec = self.platforms.get(platform).cloned().unwrap_or_default();
        let mut kargs = spec.kernel_arguments;
        if let Some(i) = &self.image {
            kargs.extend(i.extra_kargs.iter().cloned());
        }
        PlatformFacts {
            kargs,
            grub_commands: spec.grub_commands,
            compressor: self
                .compressor(bootimage)
                .map(|(c, from)| (c.to_string(), from)),
        }
    }

    /// The compressor the distribution ships `bootimage`'s artifact with, and where that
    /// was read (pure). As coreos-assembler's `cmd-compress` picks it: image.json's
    /// `platform-compressor.<bootimage>`, then its `compressor`; then, for images whose
    /// image.json does not say, by `com.coreos.osname` (`rhcos`, `scos`: gzip;
    /// `fedora-coreos`: xz); then, if there is an image.json at all, cosa's default, gzip.
    pub fn compressor(&self, bootimage: &str) -> Option<(&str, String)> {
        let image = self.image.as_ref();
        if let Some(c) = image.and_then(|i| i.platform_compressor.get(bootimage)) {
            return Some((c, format!("/{IMAGE_JSON} platform-compressor.{bootimage}")));
        }
        if let Some(c) = image.and_then(|i| i.compressor.as_deref()) {
            return Some((c, format!("/{IMAGE_JSON} compressor")));
        }
        let by_osname = match self.osname.as_deref() {
            Some("rhcos") | Some("scos") => Some("gzip"),
            Some("fedora-coreos") => Some("xz"),
            _ => None,
        };
        if let (Some(c), Some(os)) = (by_osname, &self.osname) {
            return Some((c, format!("label {OSNAME_LABEL}={os}")));
        }
        image.map(|_| {
            (
                "gzip",
                format!("/{IMAGE_JSON} (no compressor: coreos-assembler's default)"),
            )
        })
    }
}

/// `/boot/grub2/console.cfg` as CoreOS writes it (osbuild `org.osbuild.coreos.platform`),
/// with the markers `coreos-installer install --console` substitutes between (pure).
pub fn console_cfg(grub_commands: &[String]) -> String {
    let mut body = grub_commands.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    format!("\n# Any non-default console settings will be inserted here.\n# CONSOLE-SETTINGS-START\n{body}# CONSOLE-SETTINGS-END\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FCOS_PLATFORMS: &str = r#"{
      "aws": {"grub_commands": ["serial --speed=115200", "terminal_input serial console", "terminal_output serial console"],
              "kernel_arguments": ["console=tty0", "console=ttyS0,115200n8"]},
      "azure": {"kernel_arguments": ["console=tty0", "console=ttyS0,115200n8"]},
      "packet": {"grub_commands": ["serial --unit=1 --speed=115200", "terminal_input serial", "terminal_output serial"],
                 "kernel_arguments": ["console=ttyS1,115200n8"]},
      "qemu": {"grub_commands": ["serial --speed=115200", "terminal_input serial console", "terminal_output serial console"],
               "kernel_arguments": ["console=tty0", "console=ttyS0,115200n8"]}
    }"#;
    const FCOS_IMAGE: &str = r#"{"size": 10, "extra-kargs": ["mitigations=auto,nosmt"],
      "ignition-network-kcmdline": [], "ostree-remote": "fedora",
      "vmware-os-type": "fedora64Guest", "vmware-hw-version": 17, "compressor": "xz"}"#;

    fn labels(osname: Option<&str>) -> BTreeMap<String, String> {
        osname
            .map(|o| BTreeMap::from([(OSNAME_LABEL.to_string(), o.to_string())]))
            .unwrap_or_default()
    }

    #[test]
    fn platform_facts_from_the_image() {
        let img = from_files(
            Some(FCOS_PLATFORMS.as_bytes()),
            Some(FCOS_IMAGE.as_bytes()),
            &labels(Some("fedora-coreos")),
        )
        .unwrap()
        .unwrap();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "qemu",
                &[
                    "console=tty0",
                    "console=ttyS0,115200n8",
                    "mitigations=auto,nosmt",
                ],
                &[
                    "serial --speed=115200",
                    "terminal_input serial console",
                    "terminal_output serial console",
                ],
            ),
            (
                "azure",
                &[
                    "console=tty0",
                    "console=ttyS0,115200n8",
                    "mitigations=auto,nosmt",
                ],
                &[],
            ),
            (
                "packet",
                &["console=ttyS1,115200n8", "mitigations=auto,nosmt"],
                &[
                    "serial --unit=1 --speed=115200",
                    "terminal_input serial",
                    "terminal_output serial",
                ],
            ),
            // metal has no entry: GRUB's and the kernel's defaults.
            ("metal", &["mitigations=auto,nosmt"], &[]),
        ];
        for (platform, kargs, grub) in cases {
            let f = img.facts(platform, platform);
            assert_eq!(f.kargs, s(kargs), "{platform}");
            assert_eq!(f.grub_commands, s(grub), "{platform}");
        }
        assert_eq!(img.osname.as_deref(), Some("fedora-coreos"));
        assert_eq!(
            img.facts("metal", "metal").compressor,
            Some(("xz".into(), format!("/{IMAGE_JSON} compressor")))
        );
        let settings = img.image.as_ref().unwrap();
        assert_eq!(settings.other["ostree-remote"], "fedora");
        assert_eq!(img.platforms_json, FCOS_PLATFORMS.as_bytes());
    }

    #[test]
    fn stateroot_from_label_unless_given() {
        let cases: &[(Option<&str>, Option<&str>, Result<&str, &str>)] = &[
            (None, None, Ok("default")),
            (None, Some("rhcos"), Ok("rhcos")),
            (None, Some("fedora-coreos"), Ok("fedora-coreos")),
            (Some("mine"), Some("rhcos"), Ok("mine")),
            (None, Some(""), Ok("default")),
            (None, Some("../etc"), Err("not a valid stateroot")),
        ];
        for (explicit, osname, want) in cases {
            let got = stateroot(*explicit, &labels(*osname));
            match want {
                Ok(w) => assert_eq!(got.unwrap(), *w),
                Err(e) => assert!(got.unwrap_err().to_string().contains(e)),
            }
        }
    }

    #[test]
    fn kind_and_compressor() {
        assert!(
            from_files(None, Some(FCOS_IMAGE.as_bytes()), &labels(Some("rhcos")))
                .unwrap()
                .is_none()
        );
        // (image.json, osname) -> compressor for metal and metal4k, and where it was read.
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            [Option<&'a str>; 2],
            &'a str,
        );
        let cases: &[Case] = &[
            (
                Some(r#"{"compressor": "gzip"}"#),
                Some("fedora-coreos"),
                [Some("gzip"); 2],
                "image.json compressor",
            ),
            (
                Some(r#"{"compressor": "xz", "platform-compressor": {"metal4k": "zstd"}}"#),
                None,
                [Some("xz"), Some("zstd")],
                "image.json compressor",
            ),
            // RHCOS's image.json names no compressor: its osname decides.
            (
                Some(r#"{"size": 16}"#),
                Some("rhcos"),
                [Some("gzip"); 2],
                "label com.coreos.osname=rhcos",
            ),
            (
                None,
                Some("scos"),
                [Some("gzip"); 2],
                "label com.coreos.osname=scos",
            ),
            (
                None,
                Some("fedora-coreos"),
                [Some("xz"); 2],
                "label com.coreos.osname=fedora-coreos",
            ),
            // image.json without a compressor nor a known osname: coreos-assembler's default.
            (
                Some("{}"),
                Some("mine"),
                [Some("gzip"); 2],
                "coreos-assembler's default",
            ),
            (None, Some("mine"), [None; 2], ""),
            (None, None, [None; 2], ""),
            (None, Some(""), [None; 2], ""),
        ];
        for (image, osname, want, from) in cases {
            let img = from_files(Some(b"{}"), image.map(str::as_bytes), &labels(*osname))
                .unwrap()
                .unwrap();
            for (bootimage, want) in ["metal", "metal4k"].iter().zip(want) {
                let got = img.compressor(bootimage);
                assert_eq!(
                    got.as_ref().map(|g| g.0),
                    *want,
                    "{image:?} {osname:?} {bootimage}"
                );
                if let Some((_, source)) = got {
                    let from = if *want == Some("zstd") {
                        "platform-compressor.metal4k"
                    } else {
                        from
                    };
                    assert!(source.contains(from), "{image:?} {osname:?}: {source}");
                }
            }
        }
    }

    #[test]
    fn bad_tables_are_named() {
        let e = from_files(Some(b"[1]"), None, &labels(None)).unwrap_err();
        assert!(format!("{e:#}").contains(PLATFORMS_JSON), "{e:#}");
        let e = from_files(Some(b"{}"), Some(b"{\"extra-kargs\": 3}"), &labels(None)).unwrap_err();
        assert!(format!("{e:#}").contains(IMAGE_JSON), "{e:#}");
    }

    #[test]
    fn console_cfg_has_the_markers_coreos_installer_rewrites() {
        let re = regex::Regex::new(
            r"(?P<prefix>\n# CONSOLE-SETTINGS-START\n)(?P<commands>([^\n]*\n)*)(?P<suffix># CONSOLE-SETTINGS-END\n)",
        )
        .unwrap();
        for cmds in [
            vec![],
            vec![
                "serial --speed=115200".to_string(),
                "terminal_input serial console".into(),
            ],
        ] {
            let cfg = console_cfg(&cmds);
            let c = re.captures(&cfg).expect("markers");
            assert_eq!(
                c.name("commands")
                    .unwrap()
                    .as_str()
                    .lines()
                    .collect::<Vec<_>>(),
                cmds
            );
        }
    }
}
