//! The OCI / Docker schema 2 documents we read: image manifests, indexes (manifest
//! lists), descriptors and the image config. Fields are strings where the specs allow
//! open sets (architectures, media types), so an unusual value is reported by name
//! instead of failing to parse.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::oci::reference::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Media types we ask registries for, manifests and indexes alike.
pub const ACCEPTED_MANIFEST_TYPES: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            annotations: None,
            urls: None,
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// An OS/architecture pair in OCI (Go) naming: `linux/amd64`, `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Platform {
    pub fn linux(arch: &str) -> Self {
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: None,
            os_version: None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The host architecture in OCI naming (`amd64`, `arm64`, `ppc64le`, `s390x`, …).
pub fn host_arch() -> &'static str {
    oci_arch(std::env::consts::ARCH)
}

/// Map a Rust/kernel architecture name to its OCI (Go) name; OCI names pass through.
pub fn oci_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" | "powerpc64le" => "ppc64le",
        "x86" | "i686" | "i386" => "386",
        "riscv64gc" => "riscv64",
        other => other,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A manifest document, told apart by media type (or by shape when the
/// optional `mediaType` field is absent, as OCI allows).
// One per pull, never in a collection: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

impl Manifest {
    /// Parse `bytes`; `content_type` is the registry's header if any.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).context("invalid manifest JSON")?;
        let declared = value
            .get("mediaType")
            .and_then(|v| v.as_str())
            .or(content_type)
            .unwrap_or("");
        let is_index = match declared {
            OCI_INDEX | DOCKER_MANIFEST_LIST => true,
            OCI_MANIFEST | DOCKER_MANIFEST => false,
            "application/vnd.docker.distribution.manifest.v1+json"
            | "application/vnd.docker.distribution.manifest.v1+prettyjws" => {
                bail!("Docker schema 1 manifests are not supported: re-push the image with a current tool")
            }
            _ => value.get("manifests").is_some(),
        };
        let schema = value.get("schemaVersion").and_then(|v| v.as_u64());
        if schema != Some(2) {
            bail!(
                "unsupported manifest schemaVersion {}",
                schema.map_or("(missing)".into(), |s| s.to_string())
            );
        }
        Ok(if is_index {
            Manifest::Index(serde_json::from_value(value).context("invalid image index")?)
        } else {
            Manifest::Image(serde_json::from_value(value).context("invalid image manifest")?)
        })
    }
}

/// The parts of the image config (`application/vnd.oci.image.config.v1+json`) we use;
/// the raw bytes are kept by callers for anything else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RuntimeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<RootFs>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).context("invalid image config JSON")
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        self.config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default()
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.config
            .as_ref()?
            .labels
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            os_version: None,
        }
    }
}

/// The OCI media type for a Docker schema 2 layer or config type; others pass through.
pub fn oci_media_type(docker: &str) -> &str {
    match docker {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        }
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        }
        "application/vnd.docker.container.image.v1+json" => OCI_CONFIG,
        DOCKER_MANIFEST => OCI_MANIFEST,
        other => other,
    }
}

impl ImageManifest {
    /// The same image as an OCI manifest: what an OCI layout must hold for
    /// containers/image (skopeo, ostree-ext) to see it. Blobs are unchanged; only the
    /// manifest (hence its digest) differs. `None` when it is already OCI.
    pub fn to_oci(&self) -> Option<ImageManifest> {
        if self.media_type.as_deref() != Some(DOCKER_MANIFEST) {
            return None;
        }
        let conv = |d: &Descriptor| Descriptor {
            media_type: oci_media_type(&d.media_type).to_string(),
            ..d.clone()
        };
        Some(ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            config: conv(&self.config),
            layers: self.layers.iter().map(conv).collect(),
            annotations: self.annotations.clone(),
        })
    }
}

/// Choose the entry for `os/arch` from an index. The error lists what the index has.
pub fn select_platform<'a>(index: &'a ImageIndex, os: &str, arch: &str) -> Result<&'a Descriptor> {
    let arch = oci_arch(arch);
    let found = index.manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == arch)
    });
    if let Some(d) = found {
        return Ok(d);
    }
    let available: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
        .collect();
    let available = if available.is_empty() {
        "no platform-tagged entries".to_string()
    } else {
        available.join(", ")
    };
    bail!("the image index has no {os}/{arch} image (available: {available}); pick one with --arch")
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn index() -> ImageIndex {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":10,"platform":{{"architecture":"amd64","os":"linux"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":11,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#
        );
        match Manifest::parse(json.as_bytes(), None).unwrap() {
            Manifest::Index(i) => i,
            _ => panic!("not an index"),
        }
    }

    #[test]
    fn selects_platform_by_oci_or_kernel_name() {
        let idx = index();
        let cases = [
            ("amd64", D1),
            ("x86_64", D1),
            ("arm64", D2),
            ("aarch64", D2),
        ];
        for (arch, want) in cases {
            assert_eq!(
                select_platform(&idx, "linux", arch)
                    .unwrap()
                    .digest
                    .to_string(),
                want,
                "{arch}"
            );
        }
        let err = select_platform(&idx, "linux", "s390x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux/s390x")
                && err.contains("linux/amd64, linux/arm64/v8")
                && err.contains("--arch"),
            "{err}"
        );
    }

    #[test]
    fn tells_manifests_from_indexes() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{D1}","size":2}},"layers":[{{"mediaType":"x","digest":"{D2}","size":3}}]}}"#
        );
        assert!(matches!(
            Manifest::parse(m.as_bytes(), None).unwrap(),
            Manifest::Image(_)
        ));
        let l =
            format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[]}}"#);
        assert!(matches!(
            Manifest::parse(l.as_bytes(), None).unwrap(),
            Manifest::Index(_)
        ));
        let bad: &[(&str, &str)] = &[
            ("{not json", "invalid manifest JSON"),
            (
                r#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+json"}"#,
                "schema 1",
            ),
            (r#"{"schemaVersion":3,"layers":[]}"#, "schemaVersion 3"),
            (
                r#"{"schemaVersion":2,"layers":[]}"#,
                "invalid image manifest",
            ),
        ];
        for (input, want) in bad {
            let err = format!("{:#}", Manifest::parse(input.as_bytes(), None).unwrap_err());
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn docker_manifest_converts_to_oci() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D2}","size":3}}]}}"#
        );
        let Manifest::Image(m) = Manifest::parse(docker.as_bytes(), None).unwrap() else {
            panic!()
        };
        let oci = m.to_oci().unwrap();
        assert_eq!(oci.media_type.as_deref(), Some(OCI_MANIFEST));
        assert_eq!(oci.config.media_type, OCI_CONFIG);
        assert_eq!(oci.config.digest, m.config.digest);
        assert_eq!(
            oci.layers[0].media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            (oci.layers[0].digest.clone(), oci.layers[0].size),
            (m.layers[0].digest.clone(), 3)
        );
        assert!(oci.to_oci().is_none());
    }

    #[test]
    fn config_labels_and_platform() {
        let c = ImageConfig::parse(br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","config":{"Labels":{"ostree.bootable":"true"}},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#).unwrap();
        assert_eq!(c.label("ostree.bootable"), Some("true"));
        assert_eq!(c.platform().to_string(), "linux/amd64");
        assert_eq!(c.rootfs.unwrap().diff_ids.len(), 1);
        assert_eq!(oci_arch(std::env::consts::ARCH), host_arch());
    }
}
