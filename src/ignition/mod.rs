//! Ignition configs layerboot writes: the OpenShift pointer config ([`pointer`]) and the
//! standalone first-boot rebase config ([`rebase`]). Both are built from the
//! `ignition-config` crate's typed structs for the chosen spec version.

pub(crate) mod pointer;
pub(crate) mod rebase;

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use base64::Engine as _;

/// Ignition spec versions we emit. 3.0/3.1 are left out: every boot image that reads 3.1
/// (OpenShift 4.6+) also reads 3.2, which is what openshift-install itself writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum SpecVersion {
    #[default]
    V3_2,
    V3_3,
    V3_4,
    V3_5,
    V3_6,
}

impl SpecVersion {
    pub const ALL: [SpecVersion; 5] = [
        SpecVersion::V3_2,
        SpecVersion::V3_3,
        SpecVersion::V3_4,
        SpecVersion::V3_5,
        SpecVersion::V3_6,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V3_2 => "3.2.0",
            SpecVersion::V3_3 => "3.3.0",
            SpecVersion::V3_4 => "3.4.0",
            SpecVersion::V3_5 => "3.5.0",
            SpecVersion::V3_6 => "3.6.0",
        }
    }

    /// The first Ignition release that reads this spec (Ignition's spec table).
    pub fn min_ignition(self) -> &'static str {
        match self {
            SpecVersion::V3_2 => "2.7.0",
            SpecVersion::V3_3 => "2.11.0",
            SpecVersion::V3_4 => "2.15.0",
            SpecVersion::V3_5 => "2.20.0",
            SpecVersion::V3_6 => "2.26.0",
        }
    }

    /// One line for stderr saying which version is used and why.
    pub fn explain(spec: Option<SpecVersion>) -> String {
        match spec {
            None => format!(
                "Ignition spec {} (default): what openshift-install writes, read by every boot image with Ignition ≥ {} \
                 (OpenShift 4.6+, Fedora/CentOS CoreOS since 2020); pass --spec for a newer one",
                SpecVersion::V3_2.as_str(),
                SpecVersion::V3_2.min_ignition()
            ),
            Some(v) => format!("Ignition spec {} (requested): the boot image needs Ignition ≥ {}", v.as_str(), v.min_ignition()),
        }
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SpecVersion {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let full = if s.matches('.').count() == 1 {
            format!("{s}.0")
        } else {
            s.to_string()
        };
        SpecVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == full)
            .with_context(|| {
                let all: Vec<_> = SpecVersion::ALL.iter().map(|v| v.as_str()).collect();
                format!(
                    "unknown Ignition spec version '{s}': supported are {}",
                    all.join(", ")
                )
            })
    }
}

/// `data:` URL as Ignition and openshift-install write them.
pub fn data_url(bytes: &[u8]) -> String {
    format!(
        "data:text/plain;charset=utf-8;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Decode a `data:` URL (base64 or percent-encoded, RFC 2397).
pub fn decode_data_url(url: &str) -> Result<Vec<u8>> {
    let Some(rest) = url.strip_prefix("data:") else {
        bail!("not a data: URL")
    };
    let Some((meta, payload)) = rest.split_once(',') else {
        bail!("data: URL without ','")
    };
    if meta.split(';').any(|p| p == "base64") {
        return base64::engine::general_purpose::STANDARD
            .decode(payload.trim())
            .context("data: URL has invalid base64");
    }
    let b = payload.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = payload
                .get(i + 1..i + 3)
                .context("data: URL has a truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).context("data: URL has an invalid %-escape")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Serialize a typed config. The crate writes absent optional fields as `null`; Ignition
/// treats null and absent alike, so they are dropped to give the compact shape
/// openshift-install writes, pretty-printed with a final newline for humans and diffs.
pub fn to_json<T: serde::Serialize>(config: &T) -> Result<Vec<u8>> {
    let mut v = serde_json::to_value(config).context("serializing Ignition config")?;
    strip_nulls(&mut v);
    let mut out = serde_json::to_vec_pretty(&v)?;
    out.push(b'\n');
    Ok(out)
}

fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Parse with the ignition-config crate and insist on no unknown keys: the check that a
/// config we wrote is exactly what the spec models.
pub fn check_roundtrip(bytes: &[u8]) -> Result<ignition_config::Config> {
    let (cfg, warnings) =
        ignition_config::Config::parse_slice(bytes).context("parsing Ignition config")?;
    if !warnings.is_empty() {
        let w: Vec<_> = warnings.iter().map(|w| w.to_string()).collect();
        bail!(
            "Ignition config has keys its spec does not define: {}",
            w.join(", ")
        );
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_versions() {
        for (input, want) in [
            ("3.2.0", Some(SpecVersion::V3_2)),
            ("3.6", Some(SpecVersion::V3_6)),
            ("3.4.0", Some(SpecVersion::V3_4)),
            ("3.1.0", None),
            ("3.7.0", None),
            ("4", None),
            ("", None),
        ] {
            assert_eq!(input.parse::<SpecVersion>().ok(), want, "{input}");
        }
        let e = "3.9.0".parse::<SpecVersion>().unwrap_err().to_string();
        assert!(e.contains("'3.9.0'") && e.contains("3.6.0"), "{e}");
    }

    #[test]
    fn data_urls() {
        assert_eq!(decode_data_url(&data_url(b"hello\n")).unwrap(), b"hello\n");
        assert_eq!(decode_data_url("data:,a%20b%0A").unwrap(), b"a b\n");
        assert!(decode_data_url("https://x").is_err());
        assert!(decode_data_url("data:;base64,@@").is_err());
    }
}
