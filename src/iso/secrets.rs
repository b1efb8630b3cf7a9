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
    let mut v: Value = serde_json::from_str(text).ok()?;
    let mut what = Vec::new();
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
