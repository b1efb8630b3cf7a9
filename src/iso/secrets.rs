//! Which embedded content is a secret: one rule for `iso show` (redacted unless
//! `--show-secrets`) and for the mode of a customized ISO (0600 when it embeds one).
//!
//! Secrets are registry credentials (`/etc/ostree/auth.json`, `auth.json` and
//! `.docker/config.json` anywhere, the kubelet's `config.json`), any file an Ignition
//! config writes without group or other read access (its author marked it private),
//! password hashes, and the secrets of NetworkManager keyfiles (PSKs, passwords, WEP keys).

use serde_json::Value;

/// What replaces a secret's value.
pub const REDACTED: &str = "<redacted: --show-secrets shows it>";

/// A path whose contents are credentials wherever it appears.
pub fn is_secret_path(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "auth.json"
        || path.ends_with("/.docker/config.json")
        || path.ends_with("/.dockercfg")
        || path.ends_with("/kubelet/config.json")
}

/// An Ignition `storage.files` entry that holds a secret.
fn is_secret_file(f: &Value) -> bool {
    let path = f.get("path").and_then(Value::as_str).unwrap_or("");
    let private = f
        .get("mode")
        .and_then(Value::as_u64)
        .is_some_and(|m| m & 0o077 == 0);
    is_secret_path(path) || private
}

/// The Ignition config `text` with its secrets replaced by [`REDACTED`], and what was
/// redacted; `None` when it holds none (or is not JSON: Ignition could not use it). Files
/// at `also` (e.g. an embedded config that itself held secrets) are redacted too.
pub fn redact_ignition(text: &str, also: &[&str]) -> Option<(String, Vec<String>)> {
    redact_ignition_nested(text, also, 0)
}

/// Configs inside configs (`ignition.config.merge`/`replace` as data URLs) are followed
/// this deep; Ignition itself has no limit, but a deeper chain is no config a person wrote.
const MAX_EMBEDDED_DEPTH: u32 = 4;

fn redact_ignition_nested(text: &str, also: &[&str], depth: u32) -> Option<(String, Vec<String>)> {
    let mut v: Value = serde_json::from_str(text).ok()?;
    let mut what = Vec::new();
    // A config merged or replaced from a data URL carries its own files and users: one
    // holding a secret is redacted whole (its source), as a secret file is.
    let mut embedded: Vec<&mut Value> = Vec::new();
    if let Some(config) = v
        .pointer_mut("/ignition/config")
        .and_then(Value::as_object_mut)
    {
        for (key, entry) in config.iter_mut() {
            match (key.as_str(), entry) {
                ("merge", Value::Array(list)) => embedded.extend(list.iter_mut()),
                ("replace", r @ Value::Object(_)) => embedded.push(r),
                _ => {}
            }
        }
    }
    for resource in embedded {
        let Some(source) = resource.get("source").and_then(Value::as_str) else {
            continue;
        };
        if !source.starts_with("data:") {
            continue;
        }
        let compression = resource.get("compression").and_then(Value::as_str);
        let inner = crate::iso::live::decode_data_url(source, compression).ok();
        let inner_secrets = match inner.as_deref().map(std::str::from_utf8) {
            Some(Ok(t)) if depth < MAX_EMBEDDED_DEPTH => {
                redact_ignition_nested(t, &[], depth + 1).map(|(_, w)| w)
            }
            // Too deep or not decodable: not inspected, so not shown either.
            _ => Some(vec!["content not inspected".to_string()]),
        };
        if let (Some(w), Some(obj)) = (inner_secrets, resource.as_object_mut()) {
            obj.insert("source".into(), Value::String(REDACTED.into()));
            obj.remove("verification");
            what.push(format!("embedded Ignition config ({})", w.join(", ")));
        }
    }
    if let Some(files) = v
        .pointer_mut("/storage/files")
        .and_then(Value::as_array_mut)
    {
        for f in files {
            let path = f
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if is_secret_file(f) || also.contains(&path.as_str()) {
                if let Some(c) = f
                    .get_mut("contents")
                    .and_then(Value::as_object_mut)
                    .filter(|c| c.get("source").is_some_and(Value::is_string))
                {
                    c.insert("source".into(), Value::String(REDACTED.into()));
                    c.remove("verification");
                    what.push(path);
                }
            }
        }
    }
    if let Some(users) = v.pointer_mut("/passwd/users").and_then(Value::as_array_mut) {
        for u in users {
            let name = u
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Some(h) = u.get_mut("passwordHash").filter(|h| h.is_string()) {
                *h = Value::String(REDACTED.into());
                what.push(format!("password hash of user {name}"));
            }
        }
    }
    if what.is_empty() {
        return None;
    }
    Some((serde_json::to_string(&v).expect("JSON serializes"), what))
}

/// A NetworkManager keyfile key whose value is a secret.
fn is_secret_key(key: &str) -> bool {
    let k = key.trim().to_ascii_lowercase();
    k.ends_with("psk") || k.contains("password") || k.starts_with("wep-key") || k == "pin"
}

/// The keyfile with its secret values replaced; `None` when it holds none.
pub fn redact_keyfile(text: &str) -> Option<String> {
    let mut changed = false;
    let out: String = text
        .lines()
        .map(|line| match line.split_once('=') {
            Some((k, _)) if !line.trim_start().starts_with('#') && is_secret_key(k) => {
                changed = true;
                format!("{k}={REDACTED}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    changed.then_some(out)
}

/// Whether an Ignition config or keyfile to embed holds a secret.
pub fn ignition_has_secrets(config: &[u8]) -> bool {
    std::str::from_utf8(config).is_ok_and(|t| redact_ignition(t, &[]).is_some())
}

pub fn keyfile_has_secrets(keyfile: &[u8]) -> bool {
    redact_keyfile(&String::from_utf8_lossy(keyfile)).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"passwd":{"users":[{"name":"core","passwordHash":"$6$x"}]}}`, gzip, base64, as
    /// `ignition.config.replace` with `compression: gzip`.
    static REPLACED_GZIP: std::sync::LazyLock<&'static str> = std::sync::LazyLock::new(|| {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(br#"{"passwd":{"users":[{"name":"core","passwordHash":"$6$x"}]}}"#)
            .unwrap();
        let url = crate::ignition::data_url(&gz.finish().unwrap());
        Box::leak(
            format!(
                r#"{{"ignition":{{"version":"3.2.0","config":{{"replace":{{"source":"{url}","compression":"gzip"}}}}}}}}"#
            )
            .into_boxed_str(),
        )
    });

    #[test]
    fn ignition_secrets() {
        let cases: &[(&str, Option<&[&str]>)] = &[
            (r#"{"ignition":{"version":"3.2.0"}}"#, None),
            (
                r#"{"storage":{"files":[{"path":"/etc/ostree/auth.json","mode":420,"contents":{"source":"data:,%7B%22auths%22"}}]}}"#,
                Some(&["/etc/ostree/auth.json"]),
            ),
            (
                r#"{"storage":{"files":[{"path":"/etc/motd","mode":420,"contents":{"source":"data:,hi"}},{"path":"/etc/key","mode":384,"contents":{"source":"data:,k"}}]}}"#,
                Some(&["/etc/key"]),
            ),
            (
                r#"{"passwd":{"users":[{"name":"core","passwordHash":"$6$x"}]}}"#,
                Some(&["password hash of user core"]),
            ),
            (
                r#"{"passwd":{"users":[{"name":"core","passwordHash":null}]},"storage":{"files":[{"path":"/etc/auth.json","contents":{"source":null}}]}}"#,
                None,
            ),
            ("not json", None),
            // A merged config from a data URL that writes a secret: the whole source goes.
            (
                r#"{"ignition":{"version":"3.2.0","config":{"merge":[{"source":"data:,%7B%22storage%22%3A%7B%22files%22%3A%5B%7B%22path%22%3A%22%2Fetc%2Fauth.json%22%2C%22contents%22%3A%7B%22source%22%3A%22data%3A%2Cauths%22%7D%7D%5D%7D%7D"}]}}}"#,
                Some(&["embedded Ignition config (/etc/auth.json)"]),
            ),
            // One without secrets stays readable; remote sources are not fetched.
            (
                r#"{"ignition":{"version":"3.2.0","config":{"merge":[{"source":"data:,%7B%7D"},{"source":"https://example.com/x.ign"}]}}}"#,
                None,
            ),
            // A replaced config, gzip'd and base64'd, whose user has a password hash.
            (
                *REPLACED_GZIP,
                Some(&["embedded Ignition config (password hash of user core)"]),
            ),
            // Undecodable: not shown, as it was not inspected.
            (
                r#"{"ignition":{"version":"3.2.0","config":{"replace":{"source":"data:;base64,!!!"}}}}"#,
                Some(&["embedded Ignition config (content not inspected)"]),
            ),
        ];
        for (text, want) in cases {
            let got = redact_ignition(text, &[]);
            assert_eq!(
                got.as_ref().map(|(_, w)| w.clone()),
                want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
                "{text}"
            );
            if let Some((out, _)) = got {
                assert!(out.contains(REDACTED), "{out}");
                assert!(
                    !out.contains("auths") && !out.contains("$6$") && !out.contains("data:,k"),
                    "{out}"
                );
            }
        }
    }

    #[test]
    fn keyfile_secrets() {
        let kf = "[connection]\nid=wifi\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=hunter22\n#psk=x\n";
        let out = redact_keyfile(kf).unwrap();
        assert!(
            !out.contains("hunter22") && out.contains("key-mgmt=wpa-psk"),
            "{out}"
        );
        assert!(redact_keyfile("[connection]\nid=eth0\n").is_none());
    }
}
