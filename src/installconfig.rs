//! install-config.yaml: read what layerboot needs from it, and patch in the pieces a
//! layered image needs, keeping every other field (and the order of keys) as it was.
//!
//! Pieces: `pullSecret` (merged with the custom registry's credentials by the caller),
//! `additionalTrustBundle` (+ `additionalTrustBundlePolicy: Always`, so nodes trust the
//! registry even without a proxy), `imageDigestSources` (mirrors), and on bare metal
//! `platform.baremetal.clusterOSImage` / `bootstrapOSImage` as
//! `URL?sha256=<sha256 of the uncompressed image>` (what the installer checks after
//! decompressing). YAML comments are not data and are not kept; openshift-install drops
//! the whole file when it consumes it anyway.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use crate::cacert::CaBundle;

/// A parsed install-config.
#[derive(Debug, Clone)]
pub struct InstallConfig {
    doc: Mapping,
    had_comments: bool,
}

/// The top-level fields of install-config v1 (openshift/installer's InstallConfig type).
const KNOWN_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "additionalTrustBundle",
    "additionalTrustBundlePolicy",
    "sshKey",
    "baseDomain",
    "networking",
    "controlPlane",
    "arbiter",
    "compute",
    "platform",
    "pullSecret",
    "proxy",
    "imageContentSources",
    "imageDigestSources",
    "publish",
    "fips",
    "cpuPartitioningMode",
    "credentialsMode",
    "bootstrapInPlace",
    "capabilities",
    "featureSet",
    "featureGates",
    "operatorPublishingStrategy",
];

/// A mirror for `imageDigestSources`: `source=mirror` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub source: String,
    pub mirror: String,
}

impl std::str::FromStr for Mirror {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once('=') {
            Some((src, m)) if is_canonical_repository(src) && is_canonical_repository(m) => {
                Ok(Mirror { source: src.to_string(), mirror: m.to_string() })
            }
            _ => bail!("invalid mirror '{}': expected SOURCE=MIRROR, each a registry host with an optional repository path and no tag or digest, e.g. quay.io/acme=mirror.example.com:5000/acme", s.escape_debug()),
        }
    }
}

/// A repository as imageDigestSources takes it (openshift-install parses it as a canonical
/// named reference): a registry host (with a dot or a port, or `localhost`), then
/// optional lowercase path components; no tag, no digest, no spaces.
pub fn is_canonical_repository(s: &str) -> bool {
    static PATH: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$").expect("valid regex")
    });
    static HOST: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?$")
            .expect("valid regex")
    });
    let mut parts = s.split('/');
    let host = parts.next().unwrap_or("");
    let qualified = host.contains('.') || host.contains(':') || host == "localhost";
    qualified && HOST.is_match(host) && parts.all(|p| PATH.is_match(p))
}

/// Everything to patch in; `None`/empty leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    /// The complete new `pullSecret` value (compact JSON), already merged by the caller.
    pub pull_secret: Option<String>,
    pub trust_bundle: Option<CaBundle>,
    pub mirrors: Vec<Mirror>,
    pub cluster_os_image: Option<String>,
    pub bootstrap_os_image: Option<String>,
}

impl Patch {
    pub fn is_empty(&self) -> bool {
        self.pull_secret.is_none()
            && self.trust_bundle.is_none()
            && self.mirrors.is_empty()
            && self.cluster_os_image.is_none()
            && self.bootstrap_os_image.is_none()
    }
}

impl InstallConfig {
    pub fn parse(text: &str, what: &str) -> Result<InstallConfig> {
        let v: Value = serde_yaml_ng::from_str(text)
            .map_err(|e| anyhow::anyhow!("{what}: not valid YAML: {e}"))?;
        let Value::Mapping(doc) = v else {
            bail!("{what}: not an install-config (expected a YAML mapping)")
        };
        if doc.get("apiVersion").and_then(Value::as_str) != Some("v1") {
            bail!("{what}: not an install-config (apiVersion must be v1)");
        }
        if doc
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .is_none()
        {
            bail!("{what}: not an install-config (metadata.name missing)");
        }
        let had_comments = text.lines().any(|l| l.trim_start().starts_with('#'));
        Ok(InstallConfig { doc, had_comments })
    }

    /// Top-level fields openshift-install does not know (a typo such as `pullSecre`):
    /// it rejects such a file, so patching it silently would only delay the error.
    pub fn unknown_fields(&self) -> Vec<String> {
        self.doc
            .keys()
            .map(|k| match k.as_str() {
                Some(s) => s.to_string(),
                None => format!("{k:?}"),
            })
            .filter(|k| !KNOWN_FIELDS.contains(&k.as_str()))
            .collect()
    }

    pub fn load(path: &Path) -> Result<InstallConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading install-config {}", path.display()))?;
        InstallConfig::parse(&text, &path.display().to_string())
    }

    pub fn cluster_name(&self) -> Option<&str> {
        self.doc.get("metadata")?.get("name")?.as_str()
    }

    pub fn base_domain(&self) -> Option<&str> {
        self.doc.get("baseDomain")?.as_str()
    }

    pub fn platform(&self) -> Option<&str> {
        self.doc
            .get("platform")?
            .as_mapping()?
            .keys()
            .next()?
            .as_str()
    }

    /// First API VIP on bare metal (`apiVIPs[0]`, or the older `apiVIP`): where
    /// openshift-install points bare-metal nodes for their Ignition.
    pub fn baremetal_api_vip(&self) -> Option<&str> {
        let bm = self.doc.get("platform")?.get("baremetal")?;
        bm.get("apiVIPs")
            .and_then(|v| v.get(0))
            .or_else(|| bm.get("apiVIP"))?
            .as_str()
    }

    pub fn pull_secret(&self) -> Option<&str> {
        self.doc.get("pullSecret")?.as_str()
    }

    pub fn had_comments(&self) -> bool {
        self.had_comments
    }

    /// Apply `p`; returns one line per change, for the user.
    pub fn apply(&mut self, p: &Patch) -> Result<Vec<String>> {
        let mut changes = Vec::new();
        if let Some(ps) = &p.pull_secret {
            self.doc
                .insert("pullSecret".into(), Value::String(ps.clone()));
            changes.push("pullSecret: merged the image registry's credentials".to_string());
        }
        if let Some(ca) = &p.trust_bundle {
            let existing = self
                .doc
                .get("additionalTrustBundle")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if existing.contains(ca.as_str().trim()) {
                changes.push("additionalTrustBundle: already holds the CA".into());
            } else {
                let mut bundle = existing.clone();
                if !bundle.is_empty() && !bundle.ends_with('\n') {
                    bundle.push('\n');
                }
                bundle.push_str(ca.as_str());
                if !bundle.ends_with('\n') {
                    bundle.push('\n');
                }
                self.doc
                    .insert("additionalTrustBundle".into(), Value::String(bundle));
                changes.push(format!(
                    "additionalTrustBundle: added {} certificate(s)",
                    ca.count()
                ));
            }
            if !self.doc.contains_key("additionalTrustBundlePolicy") {
                self.doc.insert(
                    "additionalTrustBundlePolicy".into(),
                    Value::String("Always".into()),
                );
                changes.push("additionalTrustBundlePolicy: Always (nodes trust the registry without a proxy)".into());
            }
        }
        if !p.mirrors.is_empty() {
            let list = self
                .doc
                .entry("imageDigestSources".into())
                .or_insert_with(|| Value::Sequence(vec![]));
            let Value::Sequence(seq) = list else {
                bail!("install-config imageDigestSources is not a list")
            };
            for m in &p.mirrors {
                let existing = seq
                    .iter_mut()
                    .find(|e| e.get("source").and_then(Value::as_str) == Some(&m.source));
                match existing {
                    Some(e) => {
                        let mirrors = e
                            .as_mapping_mut()
                            .context("imageDigestSources entry is not a mapping")?;
                        let ms = mirrors
                            .entry("mirrors".into())
                            .or_insert_with(|| Value::Sequence(vec![]));
                        let Value::Sequence(ms) = ms else {
                            bail!("imageDigestSources mirrors is not a list")
                        };
                        if !ms.iter().any(|x| x.as_str() == Some(&m.mirror)) {
                            ms.push(Value::String(m.mirror.clone()));
                        }
                    }
                    None => {
                        let mut e = Mapping::new();
                        e.insert("source".into(), Value::String(m.source.clone()));
                        e.insert(
                            "mirrors".into(),
                            Value::Sequence(vec![Value::String(m.mirror.clone())]),
                        );
                        seq.push(Value::Mapping(e));
                    }
                }
                changes.push(format!(
                    "imageDigestSources: {} mirrored at {}",
                    m.source, m.mirror
                ));
            }
        }
        if p.cluster_os_image.is_some() || p.bootstrap_os_image.is_some() {
            let platform = self.platform().unwrap_or("none").to_string();
            if platform != "baremetal" {
                bail!("clusterOSImage/bootstrapOSImage are platform.baremetal settings, but this install-config's platform is '{platform}'");
            }
            let bm = self
                .doc
                .get_mut("platform")
                .and_then(|p| p.get_mut("baremetal"))
                .and_then(Value::as_mapping_mut)
                .context("install-config platform.baremetal is not a mapping")?;
            for (key, val) in [
                ("clusterOSImage", &p.cluster_os_image),
                ("bootstrapOSImage", &p.bootstrap_os_image),
            ] {
                if let Some(v) = val {
                    bm.insert(key.into(), Value::String(v.clone()));
                    changes.push(format!("platform.baremetal.{key}: {v}"));
                }
            }
        }
        Ok(changes)
    }

    pub fn to_yaml(&self) -> Result<String> {
        serde_yaml_ng::to_string(&self.doc).context("serializing install-config")
    }
}

/// The pieces alone, as a YAML fragment to paste (for printing without a file).
pub fn pieces(p: &Patch, show_secrets: bool) -> Result<String> {
    let mut m = Mapping::new();
    if let Some(ps) = &p.pull_secret {
        let v = if show_secrets {
            ps.clone()
        } else {
            "REDACTED (pass --show-secrets)".into()
        };
        m.insert("pullSecret".into(), Value::String(v));
    }
    if let Some(ca) = &p.trust_bundle {
        m.insert(
            "additionalTrustBundle".into(),
            Value::String(ca.as_str().to_string()),
        );
        m.insert(
            "additionalTrustBundlePolicy".into(),
            Value::String("Always".into()),
        );
    }
    if !p.mirrors.is_empty() {
        let mut by_source: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for mi in &p.mirrors {
            by_source
                .entry(&mi.source)
                .or_default()
                .push(Value::String(mi.mirror.clone()));
        }
        let seq = by_source
            .into_iter()
            .map(|(s, ms)| {
                let mut e = Mapping::new();
                e.insert("source".into(), Value::String(s.into()));
                e.insert("mirrors".into(), Value::Sequence(ms));
                Value::Mapping(e)
            })
            .collect();
        m.insert("imageDigestSources".into(), Value::Sequence(seq));
    }
    if p.cluster_os_image.is_some() || p.bootstrap_os_image.is_some() {
        let mut bm = Mapping::new();
        if let Some(v) = &p.cluster_os_image {
            bm.insert("clusterOSImage".into(), Value::String(v.clone()));
        }
        if let Some(v) = &p.bootstrap_os_image {
            bm.insert("bootstrapOSImage".into(), Value::String(v.clone()));
        }
        let mut plat = Mapping::new();
        plat.insert("baremetal".into(), Value::Mapping(bm));
        m.insert("platform".into(), Value::Mapping(plat));
    }
    serde_yaml_ng::to_string(&m).context("serializing install-config pieces")
}

/// CoreOS stream metadata (the public schema of `stream.json`), the parts we read.
#[derive(Debug, Clone, Deserialize)]
pub struct Stream {
    #[serde(default)]
    pub stream: Option<String>,
    pub architectures: BTreeMap<String, StreamArch>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamArch {
    #[serde(default)]
    pub artifacts: BTreeMap<String, StreamPlatform>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamPlatform {
    #[serde(default)]
    pub release: Option<String>,
    #[serde(default)]
    pub formats: BTreeMap<String, BTreeMap<String, StreamArtifact>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamArtifact {
    pub location: String,
    pub sha256: String,
    #[serde(rename = "uncompressed-sha256", default)]
    pub uncompressed_sha256: Option<String>,
}

impl Stream {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Stream> {
        serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("{what}: not CoreOS stream metadata: {e}"))
    }

    /// The disk artifact of `platform` for `arch`, by format preference (or `format`).
    pub fn disk(
        &self,
        arch: &str,
        platform: &str,
        format: Option<&str>,
        what: &str,
    ) -> Result<(&str, &StreamArtifact)> {
        let a = self.architectures.get(arch).with_context(|| {
            format!(
                "{what}: no architecture '{arch}' (has: {})",
                self.architectures
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let p = a.artifacts.get(platform).with_context(|| {
            format!(
                "{what}: no platform '{platform}' for {arch} (has: {})",
                a.artifacts.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        let preference = ["raw.xz", "raw.gz", "qcow2.xz", "qcow2.gz", "raw", "qcow2"];
        let chosen = match format {
            Some(f) => p.formats.get_key_value(f).map(|(k, v)| (k.as_str(), v)),
            None => preference
                .iter()
                .find_map(|f| p.formats.get_key_value(*f))
                .or_else(|| p.formats.iter().next())
                .map(|(k, v)| (k.as_str(), v)),
        };
        let (fmt, files) = chosen.with_context(|| {
            format!(
                "{what}: platform '{platform}' has no {} format",
                format.unwrap_or("disk")
            )
        })?;
        let disk = files
            .get("disk")
            .with_context(|| format!("{what}: {platform} {fmt} has no 'disk' artifact"))?;
        Ok((fmt, disk))
    }
}

/// `URL?sha256=<uncompressed sha256>` as openshift-install wants for clusterOSImage.
pub fn os_image_url(location: &str, uncompressed_sha256: &str, what: &str) -> Result<String> {
    if !(uncompressed_sha256.len() == 64
        && uncompressed_sha256
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    {
        bail!("{what}: uncompressed-sha256 '{uncompressed_sha256}' is not 64 lowercase hex digits");
    }
    if !(location.starts_with("http://") || location.starts_with("https://")) {
        bail!("{what}: location '{location}' is not an http(s) URL the installer can download (serve the file and pass --stream-base-url URL)");
    }
    if location.contains('?') {
        bail!("{what}: location '{location}' already has a query string");
    }
    Ok(format!("{location}?sha256={uncompressed_sha256}"))
}

/// A stream `location` made absolute: bare file names are joined to `base_url`.
pub fn absolute_location(location: &str, base_url: Option<&str>) -> String {
    match base_url {
        Some(base) if !location.contains("://") => format!(
            "{}/{}",
            base.trim_end_matches('/'),
            location.trim_start_matches('/')
        ),
        _ => location.to_string(),
    }
}

/// sha256 of a disk image after decompression (by extension: .xz, .gz, else raw), streamed.
pub fn uncompressed_sha256(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("opening disk image {}", path.display()))?;
    let buf = std::io::BufReader::with_capacity(1 << 20, f);
    let name = path.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".xz") {
        Box::new(xz2::read::XzDecoder::new_multi_decoder(buf))
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(buf))
    } else {
        Box::new(buf)
    };
    let (hex, _) = crate::io::sha256_reader(reader)
        .with_context(|| format!("reading disk image {}", path.display()))?;
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IC: &str = "apiVersion: v1\nbaseDomain: example.com\nmetadata:\n  name: ocp\ncompute:\n- name: worker\n  replicas: 3\nplatform:\n  baremetal:\n    apiVIPs:\n    - 192.0.2.5\n    ingressVIPs:\n    - 192.0.2.6\npullSecret: '{\"auths\":{}}'\nsshKey: ssh-ed25519 AAAA x\n";

    #[test]
    fn reads_and_refuses() {
        let ic = InstallConfig::parse(IC, "ic").unwrap();
        assert_eq!(
            (
                ic.cluster_name(),
                ic.base_domain(),
                ic.platform(),
                ic.baremetal_api_vip()
            ),
            (
                Some("ocp"),
                Some("example.com"),
                Some("baremetal"),
                Some("192.0.2.5")
            )
        );
        for (bad, msg) in [
            ("a: [", "not valid YAML"),
            ("- 1\n", "mapping"),
            ("apiVersion: v2\n", "apiVersion"),
            ("apiVersion: v1\n", "metadata.name"),
        ] {
            let e = InstallConfig::parse(bad, "ic.yaml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("ic.yaml: ") && e.contains(msg), "{e}");
        }
    }

    #[test]
    fn patch_keeps_other_fields_and_order() {
        let mut ic = InstallConfig::parse(IC, "ic").unwrap();
        let patch = Patch {
            mirrors: vec!["quay.io/acme=mirror.example.com/acme".parse().unwrap()],
            cluster_os_image: Some("https://h/x.raw.xz?sha256=aa".into()),
            ..Default::default()
        };
        ic.apply(&patch).unwrap();
        ic.apply(&patch).unwrap(); // idempotent
        let out = ic.to_yaml().unwrap();
        let v: Value = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(v["compute"][0]["replicas"], 3);
        assert_eq!(v["sshKey"], "ssh-ed25519 AAAA x");
        assert_eq!(v["platform"]["baremetal"]["ingressVIPs"][0], "192.0.2.6");
        assert_eq!(
            v["imageDigestSources"][0]["mirrors"]
                .as_sequence()
                .unwrap()
                .len(),
            1
        );
        let keys: Vec<_> = v
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "apiVersion",
                "baseDomain",
                "metadata",
                "compute",
                "platform",
                "pullSecret",
                "sshKey",
                "imageDigestSources"
            ]
        );
    }

    #[test]
    fn os_images_only_on_baremetal() {
        let mut ic = InstallConfig::parse(
            "apiVersion: v1\nmetadata: {name: x}\nplatform: {aws: {region: us-east-1}}\n",
            "ic",
        )
        .unwrap();
        let e = ic
            .apply(&Patch {
                cluster_os_image: Some("https://h/x".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.to_string().contains("'aws'"));
    }

    #[test]
    fn os_image_urls() {
        let h = "a".repeat(64);
        assert_eq!(
            os_image_url("https://h/d.raw.xz", &h, "s").unwrap(),
            format!("https://h/d.raw.xz?sha256={h}")
        );
        assert!(os_image_url("file:///d", &h, "s").is_err());
        assert_eq!(
            absolute_location("d.raw.xz", Some("http://h:8080/img/")),
            "http://h:8080/img/d.raw.xz"
        );
        assert_eq!(
            absolute_location("https://x/d", Some("http://h")),
            "https://x/d"
        );
        assert!(os_image_url("https://h/d", "abc", "s").is_err());
        assert!("nodelim".parse::<Mirror>().is_err());
    }

    /// Issue #15 item 9: a typo'd field was patched silently.
    #[test]
    fn unknown_top_level_fields_are_named() {
        let ic = InstallConfig::parse(IC, "ic").unwrap();
        assert_eq!(ic.unknown_fields(), Vec::<String>::new());
        let typo = IC.replace("pullSecret:", "pullSecre:") + "extraThing: 1\n";
        let ic = InstallConfig::parse(&typo, "ic").unwrap();
        assert_eq!(ic.unknown_fields(), vec!["pullSecre", "extraThing"]);
    }

    /// Issue #15 item 9: `quay.io/acme=Bad Mirror` and `a=b` were accepted and made an
    /// invalid imageDigestSources.
    #[test]
    fn mirrors_are_canonical_repositories() {
        for ok in [
            "quay.io/acme=mirror.example.com:5000/acme",
            "quay.io=localhost:5000",
            "registry.redhat.io/rhel9/os=m.example.com/a__b/c-d.e",
        ] {
            ok.parse::<Mirror>().unwrap();
        }
        for bad in [
            "quay.io/acme=Bad Mirror",
            "a=b",
            "quay.io/acme=m.example.com/Acme",
            "quay.io/acme:v1=m.example.com/acme",
            "quay.io/acme=m.example.com/acme@sha256:00",
            "=m.example.com",
            "quay.io/acme=m.example.com/",
            "quay.io/acme=m.example.com\n/x",
        ] {
            let err = bad.parse::<Mirror>().unwrap_err().to_string();
            assert!(err.starts_with("invalid mirror"), "{bad}: {err}");
        }
    }

    #[test]
    fn uncompressed_hash_sees_through_xz_and_gzip() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 100_000];
        let want = crate::io::sha256_reader(&data[..]).unwrap().0;
        let raw = dir.path().join("d.raw");
        std::fs::write(&raw, &data).unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&data).unwrap();
        std::fs::write(dir.path().join("d.raw.xz"), xz.finish().unwrap()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        std::fs::write(dir.path().join("d.raw.gz"), gz.finish().unwrap()).unwrap();
        for f in ["d.raw", "d.raw.xz", "d.raw.gz"] {
            assert_eq!(
                uncompressed_sha256(&dir.path().join(f)).unwrap(),
                want,
                "{f}"
            );
        }
    }
}
