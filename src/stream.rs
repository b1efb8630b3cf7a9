//! CoreOS stream metadata (`stream.json`, the schema Fedora CoreOS publishes at
//! `builds.coreos.fedoraproject.org/streams/<stream>.json`), reduced to disk artifacts: the
//! one schema `disk` writes and `install-config` reads. Fields a stream from elsewhere may
//! lack are defaulted when reading; what layerboot writes always has them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::disk::output::Hashes;

/// CoreOS stream metadata (the schema Fedora CoreOS publishes at
/// `builds.coreos.fedoraproject.org/streams/<stream>.json`), reduced to disk artifacts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    #[serde(default)]
    pub stream: String,
    #[serde(default)]
    pub metadata: StreamMetadata,
    pub architectures: BTreeMap<String, Arch>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMetadata {
    #[serde(rename = "last-modified")]
    pub last_modified: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arch {
    #[serde(default)]
    pub artifacts: BTreeMap<String, PlatformArtifacts>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformArtifacts {
    #[serde(default)]
    pub release: String,
    #[serde(default)]
    pub formats: BTreeMap<String, BTreeMap<String, Artifact>>,
}

/// One artifact, as coreos/stream-metadata-go's `Artifact` and coreos-installer's stream
/// reader (`src/source.rs`) take it: both parse `location` and `signature` as absolute URLs
/// (coreos-installer fails on a relative one or on a missing `signature`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub location: String,
    /// The detached GPG signature's URL, `<location>.sig` as CoreOS streams name it. layerboot
    /// signs nothing: nothing is served there, and coreos-installer needs `--insecure`.
    /// (Absent in stream files of earlier layerboot versions.)
    #[serde(default)]
    pub signature: String,
    pub sha256: String,
    #[serde(
        rename = "uncompressed-sha256",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub uncompressed_sha256: Option<String>,
}

/// Where the artifact `file_name` is served: `base_url` as a directory (a missing trailing
/// slash is added, the name is percent-encoded as one path segment), else the bare file
/// name, which only tools given a base URL of their own can use (`install-config
/// --stream-base-url`; not coreos-installer, not openshift-install). Pure.
pub fn artifact_location(base_url: Option<&url::Url>, file_name: &str) -> String {
    match base_url {
        Some(base) => {
            let mut u = base.clone();
            if let Ok(mut segments) = u.path_segments_mut() {
                segments.pop_if_empty().push(file_name);
            }
            u.to_string()
        }
        None => file_name.to_string(),
    }
}

/// The artifact entry for `location` (its signature URL beside it, as CoreOS streams have).
pub fn artifact(location: String, h: &Hashes) -> Artifact {
    Artifact {
        signature: format!("{location}.sig"),
        location,
        sha256: h.sha256.clone(),
        uncompressed_sha256: Some(h.uncompressed_sha256.clone()),
    }
}

/// `--base-url`, checked before any work: an absolute http(s) URL whose path is a directory.
pub fn parse_base_url(s: &str) -> Result<url::Url> {
    let u = url::Url::parse(s).map_err(|e| {
        anyhow::anyhow!("--base-url '{s}' is not an absolute URL ({e}); e.g. https://images.example.com/streams/")
    })?;
    anyhow::ensure!(
        matches!(u.scheme(), "http" | "https") && u.has_host(),
        "--base-url '{s}' must be an http(s) URL with a host"
    );
    anyhow::ensure!(
        u.query().is_none() && u.fragment().is_none(),
        "--base-url '{s}' must have no query or fragment: the artifact's name is appended to its path"
    );
    Ok(u)
}

/// The stream file of an earlier build, to merge into; `None` if there is none. A file
/// that is there but is not stream metadata is an error naming it (never replaced: it may
/// describe other artifacts).
pub fn read_stream(path: &Path) -> Result<Option<Stream>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        anyhow::anyhow!(
            "{}: not CoreOS stream metadata layerboot can add to ({e}); move it away or pass --stream-metadata FILE",
            path.display()
        )
    })
}

impl Stream {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Stream> {
        serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("{what}: not CoreOS stream metadata: {e}"))
    }

    /// The `disk` artifact of `platform` for `arch` in the first of `formats` the stream
    /// has, and that format; the error (prefixed `what`) says what the stream has instead.
    pub fn disk(
        &self,
        arch: &str,
        platform: &str,
        formats: &[&str],
        what: &str,
    ) -> Result<(String, &Artifact)> {
        let has = |keys: Vec<&str>| {
            if keys.is_empty() {
                "none".to_string()
            } else {
                keys.join(", ")
            }
        };
        let a = self.architectures.get(arch).with_context(|| {
            format!(
                "{what}: no artifacts for architecture '{arch}' (the stream has: {})",
                has(self.architectures.keys().map(String::as_str).collect())
            )
        })?;
        let p = a.artifacts.get(platform).with_context(|| {
            format!(
                "{what}: no '{platform}' artifact for {arch} (build it with `layerboot disk -p {platform}`); the stream has: {}",
                has(a.artifacts.keys().map(String::as_str).collect())
            )
        })?;
        let (fmt, files) = formats
            .iter()
            .find_map(|f| p.formats.get_key_value(*f))
            .with_context(|| {
                format!(
                    "{what}: {platform} for {arch} has no {} format (has: {})",
                    formats.join(" or "),
                    has(p.formats.keys().map(String::as_str).collect())
                )
            })?;
        let disk = files
            .get("disk")
            .with_context(|| format!("{what}: {platform} {fmt} has no 'disk' artifact"))?;
        Ok((fmt.clone(), disk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `disk` writes, `install-config` reads back unchanged; a stream from elsewhere
    /// with fewer fields (no metadata, release or signature) and more (images, rollout)
    /// is read too.
    #[test]
    fn one_schema_for_writer_and_reader() {
        let mut s = Stream {
            stream: "layered".into(),
            metadata: StreamMetadata {
                last_modified: "2026-12-01T00:00:00Z".into(),
            },
            ..Default::default()
        };
        let art = Artifact {
            location: "https://h/x.raw.xz".into(),
            signature: "https://h/x.raw.xz.sig".into(),
            sha256: "a".repeat(64),
            uncompressed_sha256: Some("b".repeat(64)),
        };
        s.architectures
            .entry("x86_64".into())
            .or_default()
            .artifacts
            .entry("metal".into())
            .or_default()
            .formats
            .entry("raw.xz".into())
            .or_default()
            .insert("disk".into(), art.clone());
        let text = serde_json::to_string(&s).unwrap();
        let back = Stream::parse(text.as_bytes(), "stream.json").unwrap();
        assert_eq!(back, s);
        assert_eq!(
            back.disk("x86_64", "metal", &["qcow2", "raw.xz"], "s")
                .unwrap(),
            ("raw.xz".to_string(), &art)
        );

        let foreign = r#"{"architectures":{"x86_64":{"images":{"aws":{}},"artifacts":{"openstack":
            {"formats":{"qcow2.xz":{"disk":{"location":"https://h/o.qcow2.xz","sha256":"cc"}}}}}}}}"#;
        let f = Stream::parse(foreign.as_bytes(), "f.json").unwrap();
        let (fmt, d) = f.disk("x86_64", "openstack", &["qcow2.xz"], "f").unwrap();
        assert_eq!(
            (fmt.as_str(), d.location.as_str(), d.signature.as_str()),
            ("qcow2.xz", "https://h/o.qcow2.xz", "")
        );
        let e = Stream::parse(b"{\"stream\": 1}", "bad.json").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("bad.json: not CoreOS stream metadata"),
            "{e}"
        );
    }
}
