//! Registry credentials: the `{"auths": {...}}` files that docker (`config.json`),
//! podman/skopeo (`auth.json`) and OpenShift (the pull secret) all share, looked up the
//! way podman does, merged and written back.
//!
//! Nothing here prints a secret: every type holding one has a redacting `Debug`, and
//! error messages name files and registries, never their contents.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::oci::reference::RegistryRef;

/// One parsed auths file. Fields we do not interpret (`credHelpers`, `credsStore`,
/// per-entry `email`, …) are kept so a merge writes them back unchanged.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthFile {
    #[serde(default)]
    pub auths: BTreeMap<String, AuthEntry>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// One `auths` entry. `auth` is base64(`user:password`); some writers store
/// `username`/`password` separately instead; `identitytoken` is an OAuth token.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identitytoken: Option<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// Credentials for one registry, decoded.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// Sent as a bearer token as is.
    IdentityToken(String),
}

impl fmt::Debug for AuthFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthFile")
            .field("registries", &self.auths.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthEntry(<redacted>)")
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credentials {
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    pub fn to_registry_auth(&self) -> oci_client::secrets::RegistryAuth {
        match self {
            Credentials::Basic { username, password } => {
                oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::IdentityToken(t) => oci_client::secrets::RegistryAuth::Bearer(t.clone()),
        }
    }
}

impl AuthEntry {
    pub fn from_credentials(creds: &Credentials) -> Self {
        match creds {
            Credentials::Basic { username, password } => AuthEntry {
                auth: Some(
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}")),
                ),
                ..Default::default()
            },
            Credentials::IdentityToken(t) => AuthEntry {
                identitytoken: Some(t.clone()),
                ..Default::default()
            },
        }
    }

    /// Decode the entry. `key` only names the entry in errors.
    pub fn credentials(&self, key: &str) -> Result<Option<Credentials>> {
        if let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .with_context(|| {
                    format!("the 'auth' value for '{key}' is not base64 of 'user:password'")
                })?;
            let Some((user, pass)) = raw.split_once(':') else {
                bail!("the 'auth' value for '{key}' does not decode to 'user:password'");
            };
            return Ok(Some(Credentials::basic(user, pass)));
        }
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            return Ok(Some(Credentials::basic(u.clone(), p.clone())));
        }
        if let Some(t) = self.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials::IdentityToken(t.to_string())));
        }
        Ok(None)
    }
}

/// Docker Hub answers to several names, and docker writes its key as a URL.
const DOCKER_HUB_ALIASES: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];

/// Normalize an `auths` key to `host[/path]`: docker's legacy keys are URLs
/// (`https://index.docker.io/v1/`), which name a host only.
pub fn normalize_key(key: &str) -> String {
    let key = key.trim();
    let (had_scheme, rest) = match key.split_once("://") {
        Some((_, rest)) => (true, rest),
        None => (false, key),
    };
    let rest = if had_scheme {
        rest.split('/').next().unwrap_or(rest)
    } else {
        rest.trim_end_matches('/')
    };
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let host = if DOCKER_HUB_ALIASES.contains(&host) {
        "docker.io"
    } else {
        host
    };
    match path {
        Some(p) => format!("{host}/{p}"),
        None => host.to_string(),
    }
}

/// The keys that may hold credentials for `r`, most specific first:
/// `registry/ns/repo`, `registry/ns`, `registry`.
pub fn candidate_keys(r: &RegistryRef) -> Vec<String> {
    let host = normalize_key(&r.registry);
    let mut keys = Vec::new();
    let parts: Vec<&str> = r.repository.split('/').collect();
    for n in (1..=parts.len()).rev() {
        keys.push(format!("{host}/{}", parts[..n].join("/")));
    }
    keys.push(host);
    keys
}

impl AuthFile {
    pub fn parse(json: &str) -> Result<Self> {
        // The serde error names a position, never the secret around it.
        serde_json::from_str(json).map_err(|e| {
            anyhow::anyhow!(
                "not a valid auths JSON file (line {}, column {})",
                e.line(),
                e.column()
            )
        })
    }

    /// Read and parse a file; errors name the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read authfile {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("authfile {}", path.display()))
    }

    /// The entry that applies to `r`, with its key: the most specific key wins.
    /// The entry for `image` ([`Self::entry_for`]) as a one-entry auths file, with the
    /// key it is filed under; `None` when there is none for its registry.
    pub fn single_entry_for(&self, image: &RegistryRef) -> Option<(String, AuthFile)> {
        let (key, entry) = self.entry_for(image)?;
        let mut one = AuthFile::default();
        one.auths.insert(key.to_string(), entry.clone());
        Some((key.to_string(), one))
    }

    pub fn entry_for(&self, r: &RegistryRef) -> Option<(&str, &AuthEntry)> {
        let by_normalized: BTreeMap<String, (&str, &AuthEntry)> = self
            .auths
            .iter()
            .map(|(k, v)| (normalize_key(k), (k.as_str(), v)))
            .collect();
        candidate_keys(r)
            .iter()
            .find_map(|k| by_normalized.get(k).copied())
    }

    pub fn credentials_for(&self, r: &RegistryRef) -> Result<Option<Credentials>> {
        match self.entry_for(r) {
            Some((key, entry)) => entry.credentials(key),
            None => Ok(None),
        }
    }

    /// Set the credentials for `key` (`host[/path]`), replacing any previous entry.
    pub fn set(&mut self, key: &str, creds: &Credentials) {
        let key = normalize_key(key);
        self.auths.retain(|k, _| normalize_key(k) != key);
        self.auths.insert(key, AuthEntry::from_credentials(creds));
    }

    /// Merge `other` into `self`; `other`'s entries win for the same (normalized) key.
    pub fn merge(&mut self, other: &AuthFile) {
        for (k, v) in &other.auths {
            let nk = normalize_key(k);
            self.auths.retain(|mine, _| normalize_key(mine) != nk);
            self.auths.insert(k.clone(), v.clone());
        }
        for (k, v) in &other.other {
            self.other.insert(k.clone(), v.clone());
        }
    }

    /// Compact JSON, as an OpenShift `pullSecret` or a `.dockerconfigjson` wants it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("auths serialize")
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("auths serialize")
    }

    /// Write with mode 0600, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(
            path,
            format!("{}\n", self.to_json_pretty()).as_bytes(),
            0o600,
        )
    }
}

/// Where credentials come from: the files to consult, in order, already parsed.
#[derive(Debug, Clone, Default)]
pub struct AuthStore {
    files: Vec<(PathBuf, AuthFile)>,
    /// Files found by the default search that cannot be used, with why: an error only
    /// when credentials are looked up, so a broken ~/.docker/config.json does not stop
    /// commands that need none (`inspect oci:DIR`).
    unusable: Vec<String>,
}

/// podman's search order when no `--authfile` is given.
pub fn default_auth_paths(env: impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    if let Some(p) = env("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut paths = Vec::new();
    if let Some(x) = env("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        paths.push(Path::new(&x).join("containers/auth.json"));
    }
    let home = env("HOME").filter(|p| !p.is_empty());
    match env("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(x) => paths.push(Path::new(&x).join("containers/auth.json")),
        None => {
            if let Some(h) = &home {
                paths.push(Path::new(h).join(".config/containers/auth.json"));
            }
        }
    }
    if let Some(h) = &home {
        paths.push(Path::new(h).join(".docker/config.json"));
    }
    paths
}

impl AuthStore {
    /// No credentials at all (anonymous access).
    pub fn anonymous() -> Self {
        AuthStore::default()
    }

    /// Exactly this file: it must exist and parse.
    pub fn from_file(path: &Path) -> Result<Self> {
        Ok(AuthStore {
            files: vec![(path.to_path_buf(), AuthFile::load(path)?)],
            unusable: vec![],
        })
    }

    /// The podman search order; absent files are skipped, present ones must parse.
    /// `$REGISTRY_AUTH_FILE` stands for `--authfile`, so it must exist.
    pub fn discover() -> Result<Self> {
        if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
            return Self::from_file(Path::new(&p)).context("from $REGISTRY_AUTH_FILE");
        }
        let mut files = Vec::new();
        let mut unusable = Vec::new();
        for path in default_auth_paths(|k| std::env::var(k).ok()) {
            if path.exists() {
                match AuthFile::load(&path) {
                    Ok(f) => files.push((path.clone(), f)),
                    Err(e) => unusable.push(format!("{e:#}")),
                }
            }
        }
        Ok(AuthStore { files, unusable })
    }

    /// Fail if a searched file could not be read (see `unusable`).
    fn check_usable(&self) -> Result<()> {
        match self.unusable.first() {
            Some(e) => anyhow::bail!("{e} (pass --authfile to use another file)"),
            None => Ok(()),
        }
    }

    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// Credentials for `r` from the first file that has a matching entry.
    pub fn credentials_for(&self, r: &RegistryRef) -> Result<Option<Credentials>> {
        self.check_usable()?;
        for (path, file) in &self.files {
            if let Some(c) = file
                .credentials_for(r)
                .with_context(|| format!("authfile {}", path.display()))?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// All files merged into one, later-searched files losing to earlier ones.
    pub fn merged(&self) -> Result<AuthFile> {
        self.check_usable()?;
        let mut out = AuthFile::default();
        for (_, f) in self.files.iter().rev() {
            out.merge(f);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegistryRef {
        match s.parse::<crate::oci::reference::ImageRef>().unwrap() {
            crate::oci::reference::ImageRef::Registry(r) => r,
            _ => unreachable!(),
        }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn most_specific_key_wins() {
        let json = format!(
            r#"{{"auths": {{
                "quay.io": {{"auth": "{}"}},
                "quay.io/acme": {{"auth": "{}"}},
                "quay.io/acme/rhcos": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "registry.example.com:5000": {{"username": "u", "password": "p"}},
                "tok.example.com": {{"identitytoken": "tkn"}}
            }}}}"#,
            b64("top:1"),
            b64("ns:2"),
            b64("repo:3"),
            b64("hub:4"),
        );
        let f = AuthFile::parse(&json).unwrap();
        let cases: &[(&str, Option<Credentials>)] = &[
            (
                "quay.io/acme/rhcos:latest",
                Some(Credentials::basic("repo", "3")),
            ),
            (
                "quay.io/acme/rhcos/sub",
                Some(Credentials::basic("repo", "3")),
            ),
            ("quay.io/acme/other", Some(Credentials::basic("ns", "2"))),
            ("quay.io/acme2/x", Some(Credentials::basic("top", "1"))),
            ("quay.io/acmex", Some(Credentials::basic("top", "1"))),
            (
                "docker.io/library/busybox",
                Some(Credentials::basic("hub", "4")),
            ),
            (
                "index.docker.io/library/busybox",
                Some(Credentials::basic("hub", "4")),
            ),
            (
                "registry.example.com:5000/a",
                Some(Credentials::basic("u", "p")),
            ),
            ("registry.example.com/a", None),
            (
                "tok.example.com/a/b",
                Some(Credentials::IdentityToken("tkn".into())),
            ),
            ("ghcr.io/a/b", None),
        ];
        for (image, want) in cases {
            assert_eq!(&f.credentials_for(&r(image)).unwrap(), want, "{image}");
        }
    }

    #[test]
    fn password_may_contain_colons() {
        let f = AuthFile::parse(&format!(
            r#"{{"auths":{{"q.io":{{"auth":"{}"}}}}}}"#,
            b64("u:a:b:c")
        ))
        .unwrap();
        assert_eq!(
            f.credentials_for(&r("q.io/x")).unwrap(),
            Some(Credentials::basic("u", "a:b:c"))
        );
    }

    #[test]
    fn bad_entries_error_without_leaking() {
        for (auth, secret) in [
            ("!!!notbase64", "notbase64"),
            (&b64("nocolonsecret")[..], "nocolonsecret"),
        ] {
            let f =
                AuthFile::parse(&format!(r#"{{"auths":{{"q.io":{{"auth":"{auth}"}}}}}}"#)).unwrap();
            let err = format!("{:#}", f.credentials_for(&r("q.io/x")).unwrap_err());
            assert!(err.contains("'q.io'"), "{err}");
            assert!(!err.contains(secret) && !err.contains(auth), "{err}");
        }
        let err = format!(
            "{:#}",
            AuthFile::parse(r#"{"auths": {"q.io": {"auth": "c2VjcmV0"}"#).unwrap_err()
        );
        assert!(err.contains("line") && !err.contains("c2VjcmV0"), "{err}");
    }

    #[test]
    fn debug_redacts() {
        let f = AuthFile::parse(&format!(
            r#"{{"auths":{{"q.io":{{"auth":"{}"}}}}}}"#,
            b64("user:hunter2")
        ))
        .unwrap();
        let c = f.credentials_for(&r("q.io/x")).unwrap().unwrap();
        for s in [
            format!("{f:?}"),
            format!("{c:?}"),
            format!("{:?}", f.auths["q.io"]),
            format!(
                "{:?}",
                AuthStore {
                    files: vec![("/x".into(), f.clone())],
                    unusable: vec![],
                }
            ),
        ] {
            assert!(
                !s.contains("hunter2") && !s.contains(&b64("user:hunter2")),
                "{s}"
            );
        }
    }

    #[test]
    fn merge_overrides_and_roundtrips_unknown_fields() {
        let mut a = AuthFile::parse(&format!(
            r#"{{"auths":{{"cloud.openshift.com":{{"auth":"{}","email":"a@b.c"}},"quay.io":{{"auth":"{}"}}}},"credHelpers":{{"x.io":"y"}}}}"#,
            b64("a:1"),
            b64("old:0")
        ))
        .unwrap();
        let mut b = AuthFile::default();
        b.set("https://quay.io/", &Credentials::basic("new", "2"));
        a.merge(&b);
        let back = AuthFile::parse(&a.to_json()).unwrap();
        assert_eq!(back, a);
        assert_eq!(
            back.credentials_for(&r("quay.io/x")).unwrap(),
            Some(Credentials::basic("new", "2"))
        );
        assert_eq!(back.auths["cloud.openshift.com"].other["email"], "a@b.c");
        assert_eq!(back.other["credHelpers"]["x.io"], "y");
        assert_eq!(back.auths.len(), 2);
    }

    #[test]
    fn podman_search_order() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let cases: &[(&'static [(&'static str, &'static str)], &[&str])] = &[
            (
                &[("REGISTRY_AUTH_FILE", "/a.json"), ("HOME", "/h")],
                &["/a.json"],
            ),
            (
                &[("XDG_RUNTIME_DIR", "/run/user/0"), ("HOME", "/h")],
                &[
                    "/run/user/0/containers/auth.json",
                    "/h/.config/containers/auth.json",
                    "/h/.docker/config.json",
                ],
            ),
            (
                &[("HOME", "/h"), ("XDG_CONFIG_HOME", "/cfg")],
                &["/cfg/containers/auth.json", "/h/.docker/config.json"],
            ),
            (&[], &[]),
        ];
        for (vars, want) in cases {
            let got = default_auth_paths(env(vars));
            assert_eq!(
                got,
                want.iter().map(PathBuf::from).collect::<Vec<_>>(),
                "{vars:?}"
            );
        }
    }

    #[test]
    fn store_uses_first_file_with_a_match() {
        let dir = tempfile::tempdir().unwrap();
        let p1 = dir.path().join("1.json");
        let p2 = dir.path().join("2.json");
        std::fs::write(
            &p1,
            format!(r#"{{"auths":{{"a.io":{{"auth":"{}"}}}}}}"#, b64("one:1")),
        )
        .unwrap();
        std::fs::write(
            &p2,
            format!(
                r#"{{"auths":{{"a.io/x":{{"auth":"{}"}},"b.io":{{"auth":"{}"}}}}}}"#,
                b64("two:2"),
                b64("b:2")
            ),
        )
        .unwrap();
        let store = AuthStore {
            files: vec![
                (p1.clone(), AuthFile::load(&p1).unwrap()),
                (p2.clone(), AuthFile::load(&p2).unwrap()),
            ],
            unusable: vec![],
        };
        assert_eq!(
            store.credentials_for(&r("a.io/x")).unwrap(),
            Some(Credentials::basic("one", "1"))
        );
        assert_eq!(
            store.credentials_for(&r("b.io/x")).unwrap(),
            Some(Credentials::basic("b", "2"))
        );
        let merged = store.merged().unwrap();
        assert_eq!(
            merged.credentials_for(&r("a.io/y")).unwrap(),
            Some(Credentials::basic("one", "1"))
        );
        let err = format!(
            "{:#}",
            AuthStore::from_file(&dir.path().join("missing.json")).unwrap_err()
        );
        assert!(err.contains("missing.json"), "{err}");
    }
}
