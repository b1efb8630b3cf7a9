//! install-config.yaml: read what layerboot needs from it, and patch in the pieces a
//! layered image needs, keeping every other field (and the order of keys) as it was.
//!
//! Pieces: `pullSecret` (merged with the custom registry's credentials by the caller),
//! `additionalTrustBundle` (+ `additionalTrustBundlePolicy: Always`, so nodes trust the
//! registry even without a proxy), `imageDigestSources` (mirrors), and the platform's boot
//! image: `platform.<p>.clusterOSImage` as `URL?sha256=<hex>` on bare metal, OpenStack,
//! vSphere and Nutanix (bare metal also `bootstrapOSImage`), or an image id per pool on AWS
//! and GCP (see [`platform`] for which sha256 each platform checks and what each setting
//! does). YAML comments are not data and are not kept; openshift-install drops the whole
//! file when it consumes it anyway.

pub mod platform;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_yaml_ng::{Mapping, Value};

use crate::cacert::CaBundle;
use crate::oci::reference::RegistryRef;
use crate::registry::auth::{normalize_key, AuthFile};
use platform::{BootPlatform, MachineImage};

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
    /// `platform.<os_image_platform>.clusterOSImage`.
    pub cluster_os_image: Option<String>,
    /// `platform.baremetal.bootstrapOSImage`.
    pub bootstrap_os_image: Option<String>,
    /// The platform the OS images are for; bare metal when unset (what `--cluster-os-image`
    /// always meant).
    pub os_image_platform: Option<BootPlatform>,
    /// An image id for every pool (`platform.<p>.defaultMachinePlatform`).
    pub machine_image: Option<MachineImage>,
}

impl Patch {
    pub fn is_empty(&self) -> bool {
        self.pull_secret.is_none()
            && self.trust_bundle.is_none()
            && self.mirrors.is_empty()
            && self.cluster_os_image.is_none()
            && self.bootstrap_os_image.is_none()
            && self.machine_image.is_none()
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

    /// `controlPlane.architecture` (Go naming, `amd64` when absent as the installer defaults).
    pub fn architecture(&self) -> &str {
        self.doc
            .get("controlPlane")
            .and_then(|c| c.get("architecture"))
            .and_then(Value::as_str)
            .unwrap_or("amd64")
    }

    /// The mapping under `platform.<key>`, which must be the install-config's platform.
    fn platform_mapping_mut(&mut self, want: BootPlatform, what: &str) -> Result<&mut Mapping> {
        let platform = self.platform().unwrap_or("none").to_string();
        if platform != want.key() {
            bail!("{what} is for platform '{want}', but this install-config's platform is '{platform}'");
        }
        let v = self
            .doc
            .get_mut("platform")
            .and_then(|p| p.get_mut(want.key()))
            .context("install-config platform is not a mapping")?;
        if v.is_null() {
            *v = Value::Mapping(Mapping::new());
        }
        v.as_mapping_mut()
            .with_context(|| format!("install-config platform.{want} is not a mapping"))
    }

    /// Pools (`compute[]`, `controlPlane`) that set their own `platform.<p>.<field>`, which
    /// wins over `defaultMachinePlatform`.
    fn pools_with_own(&self, p: BootPlatform, field: &str) -> Vec<String> {
        let mut pools: Vec<&Value> = Vec::new();
        if let Some(Value::Sequence(c)) = self.doc.get("compute") {
            pools.extend(c.iter());
        }
        if let Some(cp) = self.doc.get("controlPlane") {
            pools.push(cp);
        }
        pools
            .into_iter()
            .filter(|pool| {
                pool.get("platform")
                    .and_then(|x| x.get(p.key()))
                    .and_then(|x| x.get(field))
                    .is_some()
            })
            .map(|pool| {
                pool.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string()
            })
            .collect()
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
            let target = p.os_image_platform.unwrap_or(BootPlatform::BareMetal);
            if p.bootstrap_os_image.is_some() && target != BootPlatform::BareMetal {
                bail!("bootstrapOSImage is a platform.baremetal setting, not platform.{target}");
            }
            let m = self.platform_mapping_mut(target, "the boot image")?;
            for (key, val) in [
                ("clusterOSImage", &p.cluster_os_image),
                ("bootstrapOSImage", &p.bootstrap_os_image),
            ] {
                if let Some(v) = val {
                    m.insert(key.into(), Value::String(v.clone()));
                    changes.push(format!("platform.{target}.{key}: {v}"));
                }
            }
        }
        if let Some(mi) = &p.machine_image {
            let target = mi.platform();
            let (field, value, shown) = match mi {
                MachineImage::AwsAmi(id) => ("amiID", Value::String(id.clone()), id.clone()),
                MachineImage::GcpImage { project, name } => {
                    let mut o = Mapping::new();
                    o.insert("name".into(), Value::String(name.clone()));
                    o.insert("project".into(), Value::String(project.clone()));
                    ("osImage", Value::Mapping(o), format!("{project}/{name}"))
                }
            };
            let own = self.pools_with_own(target, field);
            let m = self.platform_mapping_mut(target, "the machine image")?;
            let dmp = m
                .entry("defaultMachinePlatform".into())
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            if dmp.is_null() {
                *dmp = Value::Mapping(Mapping::new());
            }
            dmp.as_mapping_mut()
                .with_context(|| {
                    format!(
                        "install-config platform.{target}.defaultMachinePlatform is not a mapping"
                    )
                })?
                .insert(field.into(), value);
            changes.push(format!(
                "platform.{target}.defaultMachinePlatform.{field}: {shown}"
            ));
            for pool in own {
                changes.push(format!("note: pool '{pool}' sets its own platform.{target}.{field}, which wins over defaultMachinePlatform"));
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
    let mut plat = Mapping::new();
    if p.cluster_os_image.is_some() || p.bootstrap_os_image.is_some() {
        let target = p.os_image_platform.unwrap_or(BootPlatform::BareMetal);
        let mut bm = Mapping::new();
        if let Some(v) = &p.cluster_os_image {
            bm.insert("clusterOSImage".into(), Value::String(v.clone()));
        }
        if let Some(v) = &p.bootstrap_os_image {
            bm.insert("bootstrapOSImage".into(), Value::String(v.clone()));
        }
        plat.insert(target.key().into(), Value::Mapping(bm));
    }
    if let Some(mi) = &p.machine_image {
        let mut dmp = Mapping::new();
        match mi {
            MachineImage::AwsAmi(id) => {
                dmp.insert("amiID".into(), Value::String(id.clone()));
            }
            MachineImage::GcpImage { project, name } => {
                let mut o = Mapping::new();
                o.insert("name".into(), Value::String(name.clone()));
                o.insert("project".into(), Value::String(project.clone()));
                dmp.insert("osImage".into(), Value::Mapping(o));
            }
        }
        let mut pm = Mapping::new();
        pm.insert("defaultMachinePlatform".into(), Value::Mapping(dmp));
        plat.insert(mi.platform().key().into(), Value::Mapping(pm));
    }
    if !plat.is_empty() {
        m.insert("platform".into(), Value::Mapping(plat));
    }
    serde_yaml_ng::to_string(&m).context("serializing install-config pieces")
}

pub use crate::stream::{Artifact as StreamArtifact, Stream};

/// Merge the image's credentials into an install-config `pullSecret`.
///
/// The OpenShift pull secret already holds an entry for `quay.io` (release images); a
/// host-level key for a custom image on the same host would replace it and break the
/// install. When the host is taken, the entry is filed under `host/repository`, which
/// CRI-O and rpm-ostree (containers-image rules: most specific key wins) both honour.
pub fn merge_pull_secret(
    existing: Option<&str>,
    image: &RegistryRef,
    creds: &AuthFile,
) -> Result<Option<String>> {
    let mut secret = match existing {
        Some(s) => AuthFile::parse(s).context("install-config pullSecret")?,
        None => AuthFile::default(),
    };
    let Some((key, entry)) = creds.single_entry_for(image) else {
        return Ok(None);
    };
    let entry = entry.auths.into_values().next().expect("one entry");
    let host = normalize_key(&image.registry);
    let host_taken = secret
        .auths
        .iter()
        .any(|(k, v)| normalize_key(k) == host && *v != entry);
    let key = if normalize_key(&key) == host && host_taken {
        format!("{host}/{}", image.repository)
    } else {
        normalize_key(&key)
    };
    let mut add = AuthFile::default();
    add.auths.insert(key, entry);
    secret.merge(&add);
    Ok(Some(secret.to_json()))
}

/// Complete `patch` with the image's credentials merged into the pull secret; the message
/// says when the authfile has none for the image (fine for a public image).
pub fn complete_patch(
    mut patch: Patch,
    image: Option<&RegistryRef>,
    creds: &AuthFile,
    existing_pull_secret: Option<&str>,
) -> Result<(Patch, Option<String>)> {
    let mut message = None;
    if let Some(image) = image {
        patch.pull_secret = merge_pull_secret(existing_pull_secret, image, creds)?;
        if patch.pull_secret.is_none() {
            message = Some(format!("warning: no credentials for {} in the authfile: pullSecret left as is (fine if the image is public)", image.registry));
        }
    }
    Ok((patch, message))
}

/// What [`patch_file`] changed, and what the user should be told (warnings and notes,
/// one line each).
#[derive(Debug, Default)]
pub struct PatchOutcome {
    pub changes: Vec<String>,
    pub messages: Vec<String>,
}

/// Patch the install-config file at `path` (loaded as `ic`) with `base` completed by
/// [`complete_patch`]. Writes atomically, 0600 (it holds the pull secret).
pub fn patch_file(
    path: &Path,
    mut ic: InstallConfig,
    base: Patch,
    image: Option<&RegistryRef>,
    creds: &AuthFile,
) -> Result<PatchOutcome> {
    let mut messages = Vec::new();
    let unknown = ic.unknown_fields();
    if !unknown.is_empty() {
        messages.push(format!(
            "warning: {} has fields openshift-install does not know: {} (a typo? it would reject the file)",
            path.display(),
            unknown.join(", ")
        ));
    }
    let (patch, message) = complete_patch(base, image, creds, ic.pull_secret())
        .with_context(|| path.display().to_string())?;
    messages.extend(message);
    let changes = ic
        .apply(&patch)
        .with_context(|| path.display().to_string())?;
    if ic.had_comments() {
        messages.push(format!(
            "note: comments in {} are not kept (openshift-install discards the file on use anyway)",
            path.display()
        ));
    }
    crate::io::write_atomic(path, ic.to_yaml()?.as_bytes(), 0o600)?;
    Ok(PatchOutcome { changes, messages })
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

/// sha256 of a disk image after decompression (gzip, xz, zstd or none, as its first bytes
/// say), streamed.
pub fn uncompressed_sha256(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("opening disk image {}", path.display()))?;
    let reader = crate::io::decompressed(std::io::BufReader::with_capacity(1 << 20, f))
        .with_context(|| format!("reading disk image {}", path.display()))?;
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

#[cfg(test)]
mod pull_secret_tests {
    use super::*;

    fn r(s: &str) -> RegistryRef {
        crate::image::registry_ref(s).unwrap()
    }

    #[test]
    fn pull_secret_merge_never_clobbers_the_release_credentials() {
        let release = r#"{"auths":{"quay.io":{"auth":"cmVsZWFzZTpyZWxlYXNl","email":"a@b"},"registry.redhat.io":{"auth":"eDp5"}}}"#;
        let host_creds =
            AuthFile::parse(r#"{"auths":{"quay.io":{"auth":"YWNtZTphY21l"}}}"#).unwrap();
        let repo_creds =
            AuthFile::parse(r#"{"auths":{"quay.io/acme":{"auth":"YWNtZTphY21l"}}}"#).unwrap();
        let cases: &[(Option<&str>, &AuthFile, &str, Option<&[&str]>)] = &[
            // host taken by other credentials: file under host/repository
            (
                Some(release),
                &host_creds,
                "quay.io/acme/os",
                Some(&["quay.io", "quay.io/acme/os", "registry.redhat.io"]),
            ),
            // a repository-scoped authfile key is kept as is
            (
                Some(release),
                &repo_creds,
                "quay.io/acme/os",
                Some(&["quay.io", "quay.io/acme", "registry.redhat.io"]),
            ),
            // free host: the host key
            (None, &host_creds, "quay.io/acme/os", Some(&["quay.io"])),
            (
                Some(r#"{"auths":{"quay.io":{"auth":"YWNtZTphY21l"}}}"#),
                &host_creds,
                "quay.io/acme/os",
                Some(&["quay.io"]),
            ),
            // nothing for that registry
            (
                Some(release),
                &host_creds,
                "registry.example.com/acme/os",
                None,
            ),
        ];
        for (existing, creds, image, want) in cases {
            let got = merge_pull_secret(*existing, &r(image), creds).unwrap();
            let keys = got.map(|j| {
                AuthFile::parse(&j)
                    .unwrap()
                    .auths
                    .into_keys()
                    .collect::<Vec<_>>()
            });
            assert_eq!(
                keys,
                want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
                "{existing:?} {image}"
            );
        }
        let merged = merge_pull_secret(Some(release), &r("quay.io/acme/os"), &host_creds)
            .unwrap()
            .unwrap();
        assert!(
            merged.contains("\"email\":\"a@b\""),
            "other fields kept: {merged}"
        );
        assert!(merge_pull_secret(Some("{not json"), &r("quay.io/a/b"), &host_creds).is_err());
    }
}
