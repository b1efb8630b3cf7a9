//! Image references: what the user typed, parsed and validated.
//!
//! Three transports are understood: registries (`registry[:port]/path[:tag][@sha256:…]`,
//! optionally prefixed `docker://`), OCI image layouts (`oci:DIR[:tag]`) and OCI
//! archives (`oci-archive:FILE[:tag]`). Registry references must be fully qualified:
//! short names resolve through per-host search lists, and a cluster manifest must
//! mean the same image on every node.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use thiserror::Error;

/// Errors from parsing a reference; callers branch on them only to print them.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RefError {
    #[error("empty image reference")]
    Empty,
    #[error("unknown transport '{transport}' in '{input}': use docker://, oci: or oci-archive:")]
    UnknownTransport { transport: String, input: String },
    #[error("image reference '{input}' is a short name: qualify it with a registry, e.g. 'quay.io/{input}'")]
    ShortName { input: String },
    #[error("invalid image reference '{input}': {reason}")]
    Invalid { input: String, reason: String },
    #[error("invalid digest '{input}': expected sha256: followed by 64 lowercase hex digits")]
    Digest { input: String },
}

/// A content digest. Only sha256 is accepted: it is what registries, OCI layouts and
/// OpenShift's `osImageURL` use, and it is the only one we can verify while streaming.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn from_sha256_hex(hex: &str) -> Result<Self, RefError> {
        let valid = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid {
            Ok(Digest {
                hex: hex.to_string(),
            })
        } else {
            Err(RefError::Digest {
                input: format!("sha256:{hex}"),
            })
        }
    }

    /// The 64 hex digits, as used for blob file names in an OCI layout.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

impl FromStr for Digest {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        match s.strip_prefix("sha256:") {
            Some(hex) => Digest::from_sha256_hex(hex),
            None => Err(RefError::Digest {
                input: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A reference to an image in a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryRef {
    /// Host, with port if any (`quay.io`, `127.0.0.1:5000`, `[::1]:5000`).
    pub registry: String,
    /// Repository path inside the registry (`acme/rhcos-layered`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl RegistryRef {
    /// `registry/repository`, the name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The digest-pinned pull spec `registry/repository@sha256:…`. The tag is dropped:
    /// OpenShift wants `osImageURL` by digest only, and a tag beside a digest is ignored
    /// by every consumer anyway.
    pub fn pinned(&self, digest: &Digest) -> RegistryRef {
        RegistryRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.clone()),
        }
    }

    /// The tag used when neither tag nor digest was given.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    pub fn to_oci_reference(&self) -> oci_client::Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                d.to_string(),
            ),
            (None, t) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                t.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Where an image lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageRef {
    Registry(RegistryRef),
    /// An OCI image layout directory; `tag` selects by `org.opencontainers.image.ref.name`.
    OciDir {
        path: PathBuf,
        tag: Option<String>,
    },
    /// A tar archive of an OCI image layout.
    OciArchive {
        path: PathBuf,
        tag: Option<String>,
    },
}

impl ImageRef {
    pub fn as_registry(&self) -> Option<&RegistryRef> {
        match self {
            ImageRef::Registry(r) => Some(r),
            _ => None,
        }
    }

    /// True when the reference names content by digest (a tag alone can move).
    pub fn is_digest_pinned(&self) -> bool {
        matches!(
            self,
            ImageRef::Registry(RegistryRef {
                digest: Some(_),
                ..
            })
        )
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => r.fmt(f),
            ImageRef::OciDir { path, tag } => {
                write!(f, "oci:{}", path.display())?;
                tag.iter().try_for_each(|t| write!(f, ":{t}"))
            }
            ImageRef::OciArchive { path, tag } => {
                write!(f, "oci-archive:{}", path.display())?;
                tag.iter().try_for_each(|t| write!(f, ":{t}"))
            }
        }
    }
}

/// Transports other tools know that we deliberately do not read. Naming them gives a
/// better error than "short name".
const FOREIGN_TRANSPORTS: &[&str] = &[
    "containers-storage",
    "dir",
    "docker-archive",
    "docker-daemon",
    "ostree",
    "sif",
    "tarball",
    "ostree-unverified-registry",
    "ostree-unverified-image",
    "ostree-image-signed",
    "ostree-remote-image",
    "ostree-remote-registry",
];

impl FromStr for ImageRef {
    type Err = RefError;

    fn from_str(input: &str) -> Result<Self, RefError> {
        if input.trim().is_empty() {
            return Err(RefError::Empty);
        }
        if let Some(rest) = input.strip_prefix("docker://") {
            return parse_registry_ref(rest, input).map(ImageRef::Registry);
        }
        if let Some((scheme, _)) = input.split_once("://") {
            return Err(RefError::UnknownTransport {
                transport: scheme.to_string(),
                input: input.to_string(),
            });
        }
        if let Some(rest) = input.strip_prefix("oci-archive:") {
            let (path, tag) = split_layout_tag(rest, input)?;
            return Ok(ImageRef::OciArchive { path, tag });
        }
        if let Some(rest) = input.strip_prefix("oci:") {
            let (path, tag) = split_layout_tag(rest, input)?;
            return Ok(ImageRef::OciDir { path, tag });
        }
        if let Some((prefix, rest)) = input.split_once(':') {
            let looks_like_transport = !prefix.contains('/')
                && !prefix.contains('.')
                && !prefix.starts_with('[')
                && prefix != "localhost"
                && !rest.starts_with(|c: char| c.is_ascii_digit());
            if looks_like_transport && (FOREIGN_TRANSPORTS.contains(&prefix) || rest.contains('/'))
            {
                return Err(RefError::UnknownTransport {
                    transport: prefix.to_string(),
                    input: input.to_string(),
                });
            }
        }
        parse_registry_ref(input, input).map(ImageRef::Registry)
    }
}

fn split_layout_tag(rest: &str, input: &str) -> Result<(PathBuf, Option<String>), RefError> {
    let invalid = |reason: &str| RefError::Invalid {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let (path, tag) = match rest.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, Some(t)),
        _ => (rest, None),
    };
    if path.is_empty() {
        return Err(invalid("missing path"));
    }
    if let Some(t) = tag {
        if !is_valid_tag(t) {
            return Err(invalid(&format!("invalid tag '{t}'")));
        }
    }
    Ok((PathBuf::from(path), tag.map(str::to_string)))
}

fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let first_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_');
    first_ok
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// One path component of a repository name, per the distribution reference grammar:
/// lowercase alphanumerics separated by `.`, `_`, `__` or runs of `-`.
fn is_valid_path_component(c: &str) -> bool {
    if c.is_empty() || !c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit()) {
        return false;
    }
    if !c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit()) {
        return false;
    }
    let bytes = c.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        let sep_start = i;
        while i < bytes.len() && !(bytes[i].is_ascii_lowercase() || bytes[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &c[sep_start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_valid_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match tail {
                    "" => return true,
                    t => match t.strip_prefix(':') {
                        Some(p) => ("", Some(p)),
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.parse::<u16>().is_err() {
            return false;
        }
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    }) || (name.is_empty() && host.starts_with('['))
}

fn parse_registry_ref(s: &str, input: &str) -> Result<RegistryRef, RefError> {
    let invalid = |reason: String| RefError::Invalid {
        input: input.to_string(),
        reason,
    };
    if s.is_empty() {
        return Err(invalid("missing registry and repository".into()));
    }
    let (name_and_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d.parse::<Digest>()?)),
        None => (s, None),
    };
    // The tag is after the last ':' that follows the last '/', so a registry port is not
    // mistaken for a tag.
    let last_slash = name_and_tag.rfind('/');
    let (name, tag) = match name_and_tag.rfind(':') {
        Some(colon) if last_slash.is_none_or(|sl| colon > sl) => {
            (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
        }
        _ => (name_and_tag, None),
    };
    if let Some(t) = tag {
        if !is_valid_tag(t) {
            return Err(invalid(format!("invalid tag '{t}'")));
        }
    }
    let Some((first, repository)) = name.split_once('/') else {
        return Err(RefError::ShortName {
            input: input.to_string(),
        });
    };
    let qualified = first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.starts_with('[');
    if !qualified {
        return Err(RefError::ShortName {
            input: input.to_string(),
        });
    }
    if !is_valid_host(first) {
        return Err(invalid(format!("invalid registry host '{first}'")));
    }
    for component in repository.split('/') {
        if !is_valid_path_component(component) {
            let hint = if component.chars().any(|c| c.is_ascii_uppercase()) {
                " (repository names must be lowercase)"
            } else {
                ""
            };
            return Err(invalid(format!(
                "invalid repository path component '{component}'{hint}"
            )));
        }
    }
    if name.len() > 255 {
        return Err(invalid("repository name longer than 255 characters".into()));
    }
    Ok(RegistryRef {
        registry: first.to_string(),
        repository: repository.to_string(),
        tag: tag.map(str::to_string),
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn reg(registry: &str, repo: &str, tag: Option<&str>, digest: Option<&str>) -> ImageRef {
        ImageRef::Registry(RegistryRef {
            registry: registry.into(),
            repository: repo.into(),
            tag: tag.map(Into::into),
            digest: digest.map(|d| d.parse().unwrap()),
        })
    }

    #[test]
    fn parses_valid_references() {
        let cases: Vec<(String, ImageRef)> = vec![
            (
                "quay.io/acme/rhcos-layered".into(),
                reg("quay.io", "acme/rhcos-layered", None, None),
            ),
            (
                "quay.io/acme/rhcos-layered:4.16".into(),
                reg("quay.io", "acme/rhcos-layered", Some("4.16"), None),
            ),
            (
                format!("quay.io/acme/x@{D}"),
                reg("quay.io", "acme/x", None, Some(D)),
            ),
            (
                format!("quay.io/acme/x:v1@{D}"),
                reg("quay.io", "acme/x", Some("v1"), Some(D)),
            ),
            (
                "docker://127.0.0.1:5000/fixture/base:latest".into(),
                reg("127.0.0.1:5000", "fixture/base", Some("latest"), None),
            ),
            ("localhost/foo".into(), reg("localhost", "foo", None, None)),
            (
                "localhost:5000/foo".into(),
                reg("localhost:5000", "foo", None, None),
            ),
            (
                "[::1]:5000/a/b:c".into(),
                reg("[::1]:5000", "a/b", Some("c"), None),
            ),
            (
                "registry.example.com/a__b/c-d.e_f".into(),
                reg("registry.example.com", "a__b/c-d.e_f", None, None),
            ),
            (
                "oci:/tmp/layout".into(),
                ImageRef::OciDir {
                    path: "/tmp/layout".into(),
                    tag: None,
                },
            ),
            (
                "oci:/tmp/layout:v2".into(),
                ImageRef::OciDir {
                    path: "/tmp/layout".into(),
                    tag: Some("v2".into()),
                },
            ),
            (
                "oci:rel/dir".into(),
                ImageRef::OciDir {
                    path: "rel/dir".into(),
                    tag: None,
                },
            ),
            (
                "oci-archive:/tmp/x.tar".into(),
                ImageRef::OciArchive {
                    path: "/tmp/x.tar".into(),
                    tag: None,
                },
            ),
            (
                "oci-archive:/tmp/x.tar:latest".into(),
                ImageRef::OciArchive {
                    path: "/tmp/x.tar".into(),
                    tag: Some("latest".into()),
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                input.parse::<ImageRef>().as_ref(),
                Ok(&want),
                "parsing {input}"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "quay.io/acme/rhcos-layered:4.16",
            &format!("quay.io/acme/x@{D}"),
            "127.0.0.1:5000/fixture/base",
            "oci:/tmp/layout:v2",
            "oci-archive:/tmp/x.tar",
        ] {
            let parsed: ImageRef = input.parse().unwrap();
            assert_eq!(parsed.to_string(), input);
        }
    }

    #[test]
    fn rejects_bad_references() {
        let cases: &[(&str, fn(&RefError) -> bool)] = &[
            ("", |e| matches!(e, RefError::Empty)),
            ("fedora", |e| matches!(e, RefError::ShortName { .. })),
            ("fedora:39", |e| matches!(e, RefError::ShortName { .. })),
            ("acme/rhcos", |e| matches!(e, RefError::ShortName { .. })),
            (
                "http://quay.io/a/b",
                |e| matches!(e, RefError::UnknownTransport { transport, .. } if transport == "http"),
            ),
            ("containers-storage:quay.io/a/b", |e| {
                matches!(e, RefError::UnknownTransport { .. })
            }),
            ("dir:/tmp/x", |e| {
                matches!(e, RefError::UnknownTransport { .. })
            }),
            (
                "quay.io/Acme/x",
                |e| matches!(e, RefError::Invalid { reason, .. } if reason.contains("lowercase")),
            ),
            ("quay.io/a/b:bad tag", |e| {
                matches!(e, RefError::Invalid { .. })
            }),
            ("quay.io/a/b@sha256:abc", |e| {
                matches!(e, RefError::Digest { .. })
            }),
            ("quay.io/a/b@md5:0123", |e| {
                matches!(e, RefError::Digest { .. })
            }),
            ("quay.io/a//b", |e| matches!(e, RefError::Invalid { .. })),
            ("quay.io:99999/a", |e| matches!(e, RefError::Invalid { .. })),
            ("oci:", |e| matches!(e, RefError::Invalid { .. })),
        ];
        for (input, check) in cases {
            let err = input.parse::<ImageRef>().expect_err(input);
            assert!(check(&err), "{input}: unexpected error {err:?}");
        }
    }

    #[test]
    fn short_name_error_says_how_to_qualify() {
        let err = "fedora-coreos".parse::<ImageRef>().unwrap_err().to_string();
        assert!(err.contains("quay.io/fedora-coreos"), "{err}");
    }

    #[test]
    fn pinned_drops_tag_and_keeps_digest() {
        let ImageRef::Registry(r) = "quay.io/acme/x:4.16".parse().unwrap() else {
            panic!()
        };
        let pinned = r.pinned(&D.parse().unwrap());
        assert_eq!(pinned.to_string(), format!("quay.io/acme/x@{D}"));
        assert!(ImageRef::Registry(pinned).is_digest_pinned());
    }
}
