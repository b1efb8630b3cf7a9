//! What goes into the Ignition embed area, built the way coreos-installer's
//! `iso customize` builds it, so both tools produce the same bytes for the same inputs:
//!
//! - `config.ign` is the *live* Ignition config (spec 3.3.0). It merges each
//!   `--live-ignition` config, trusts each `--ignition-ca`, and carries files for the
//!   installer: the destination config at `/etc/coreos/dest.ign` and the installer
//!   config at `/etc/coreos/installer.d/NNNN-customize.yaml` (keys = `coreos-installer
//!   install` long options). Embedded file contents are gzip data URLs.
//! - `etc/coreos-firstboot-network/*`: NetworkManager keyfiles for the live system (and,
//!   with the installer, copied to the destination via `copy-network`).

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};
use base64::Engine as _;
use ignition_config::v3_3 as ign;
use serde::{Deserialize, Serialize};

use super::embed::Features;
use super::payload::{Payload, IGNITION_PATH, NETWORK_DIR};

pub const DEST_IGNITION_PATH: &str = "/etc/coreos/dest.ign";
pub const INSTALLER_DIR: &str = "/etc/coreos/installer.d";

/// A named input (file name or description, for messages) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub data: Vec<u8>,
}

impl Named {
    pub fn new(name: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Named {
            name: name.into(),
            data: data.into(),
        }
    }
}

/// Everything a customization embeds, as plain data (files already read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveSpec {
    pub live_ignition: Vec<Named>,
    pub dest_ignition: Vec<Named>,
    pub dest_device: Option<String>,
    pub dest_console: Vec<Console>,
    pub dest_karg_append: Vec<String>,
    pub dest_karg_delete: Vec<String>,
    /// Install this metal image instead of the stock one.
    pub image_url: Option<url::Url>,
    /// Let the installer take an image without a detached signature.
    pub insecure: bool,
    pub network_keyfiles: Vec<Named>,
    pub ignition_ca: Vec<Named>,
}

impl LiveSpec {
    /// Whether anything to embed is a secret (see [`super::secrets`]).
    pub fn has_secrets(&self) -> bool {
        self.live_ignition
            .iter()
            .chain(&self.dest_ignition)
            .any(|n| super::secrets::ignition_has_secrets(&n.data))
            || self
                .network_keyfiles
                .iter()
                .any(|n| super::secrets::keyfile_has_secrets(&n.data))
    }
}

/// The installer config (`/etc/coreos/installer.d/*.yaml`): the subset of `coreos-installer
/// install` options layerboot sets, in coreos-installer's field order so the YAML is
/// identical.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct InstallerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignition_file: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub console: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub append_karg: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delete_karg: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub copy_network: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_device: Option<String>,
}

/// A `console=` spec as coreos-installer accepts it: `ttyS<n>[,<speed>[<parity>[<bits>]]]`
/// (or ttyAMA), normalized to the full form, or `tty0`/`hvc0`/`ttysclp0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console(String);

impl FromStr for Console {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        for prefix in ["console=", "/dev/"] {
            ensure!(
                !s.starts_with(prefix),
                "console spec {s:?} should not start with {prefix:?}"
            );
        }
        if matches!(s, "tty0" | "hvc0" | "ttysclp0") {
            return Ok(Console(s.to_string()));
        }
        let bad =
            || anyhow::anyhow!("invalid console spec {s:?}: expected e.g. ttyS0,115200n8 or tty0");
        let (prefix, rest) = if let Some(r) = s.strip_prefix("ttyAMA") {
            ("ttyAMA", r)
        } else if let Some(r) = s.strip_prefix("ttyS") {
            ("ttyS", r)
        } else {
            return Err(bad());
        };
        let (port, opts) = rest
            .split_once(',')
            .map(|(p, o)| (p, Some(o)))
            .unwrap_or((rest, None));
        ensure!(
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
            bad()
        );
        let port: u8 = port.parse().map_err(|_| bad())?;
        let (mut speed, mut parity, mut bits) = (9600u32, 'n', 8u8);
        if let Some(o) = opts {
            let digits = o.bytes().take_while(u8::is_ascii_digit).count();
            ensure!(digits > 0, bad());
            speed = o[..digits].parse().map_err(|_| bad())?;
            let tail = &o[digits..];
            let mut chars = tail.chars();
            if let Some(p) = chars.next() {
                ensure!(matches!(p, 'n' | 'o' | 'e'), bad());
                parity = p;
                if let Some(b) = chars.next() {
                    ensure!(('5'..='8').contains(&b), bad());
                    bits = b as u8 - b'0';
                }
                ensure!(chars.next().is_none(), bad());
            }
        }
        Ok(Console(format!("{prefix}{port},{speed}{parity}{bits}")))
    }
}

impl fmt::Display for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parse and check an Ignition config (any spec 3.x the ignition-config crate knows);
/// warnings (unknown keys) are returned for the caller to print.
pub fn parse_ignition(input: &Named) -> Result<(ignition_config::Config, Vec<String>)> {
    let (config, warnings) = ignition_config::Config::parse_slice(&input.data)
        .with_context(|| format!("invalid Ignition config {}", input.name))?;
    Ok((
        config,
        warnings
            .into_iter()
            .map(|w| format!("{}: {w}", input.name))
            .collect(),
    ))
}

/// gzip at the best level, byte for byte what coreos-installer (flate2 on its default
/// miniz_oxide backend) produces. Our flate2 runs on C zlib (ostree-ext enables it),
/// whose deflate stream differs, so the member is framed here around miniz_oxide:
/// header with mtime 0, XFL 2 (best), OS 255; raw deflate; CRC32 and size.
pub fn gzip_best(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 9));
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn data_resource(data: &[u8]) -> Result<ign::Resource> {
    let gz = gzip_best(data);
    Ok(ign::Resource {
        source: Some(format!(
            "data:;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&gz)
        )),
        compression: Some("gzip".into()),
        ..Default::default()
    })
}

fn add_file(config: &mut ign::Config, path: String, data: &[u8]) -> Result<()> {
    let files = config
        .storage
        .get_or_insert_with(Default::default)
        .files
        .get_or_insert_with(Default::default);
    ensure!(
        !files.iter().any(|f| f.path == path),
        "config already specifies path {path}"
    );
    files.push(ign::File {
        contents: Some(data_resource(data)?),
        mode: Some(0o600),
        ..ign::File::new(path)
    });
    Ok(())
}

fn add_ca(config: &mut ign::Config, pem: &[u8]) -> Result<()> {
    let cas = config
        .ignition
        .security
        .get_or_insert_with(Default::default)
        .tls
        .get_or_insert_with(Default::default)
        .certificate_authorities
        .get_or_insert_with(Default::default);
    cas.push(data_resource(pem)?);
    Ok(())
}

fn add_merge(config: &mut ign::Config, child: &ignition_config::Config) -> Result<()> {
    let json = serde_json::to_vec(child)?;
    config
        .ignition
        .config
        .get_or_insert_with(Default::default)
        .merge
        .get_or_insert_with(Default::default)
        .push(data_resource(&json)?);
    Ok(())
}

fn to_bytes(config: &impl Serialize) -> Result<Vec<u8>> {
    let mut json = serde_json::to_vec(config)?;
    json.push(b'\n');
    Ok(json)
}

fn check_pem(ca: &Named) -> Result<()> {
    crate::cacert::CaBundle::parse(&ca.data, &ca.name).map(drop)
}

/// The result of building a payload: the payload and notes for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub payload: Payload,
    pub notes: Vec<String>,
}

impl LiveSpec {
    /// Whether anything at all would be embedded.
    pub fn is_empty(&self) -> bool {
        *self == LiveSpec::default()
    }

    /// Build the embed-area payload. Pure: all inputs are in `self`; `features` gates
    /// what the ISO supports, with coreos-installer's messages.
    pub fn build(&self, features: &Features) -> Result<Built> {
        let mut notes = Vec::new();
        let mut payload = Payload::default();
        let mut live: Option<ign::Config> = None;
        let mut installer: Option<InstallerConfig> = None;
        let mut user_dest = Vec::new();
        let mut copy_network = false;

        for d in &self.dest_ignition {
            let (config, warnings) = parse_ignition(d)?;
            notes.extend(warnings.into_iter().map(|w| format!("warning: {w}")));
            user_dest.push(config);
        }
        if let Some(dev) = &self.dest_device {
            // A device path is one token: whitespace or control characters would break
            // the installer config (and the installer's argument list).
            ensure!(
                dev.starts_with('/') && !dev.chars().any(|c| c.is_whitespace() || c.is_control()),
                "--dest-device {dev:?} must be an absolute device path such as /dev/sda"
            );
            installer.get_or_insert_with(Default::default).dest_device = Some(dev.clone());
        }
        if !self.dest_console.is_empty() {
            ensure!(features.installer_config_directives.console, "this ISO's OS image does not support customizing the destination console (features.json lacks installer-config-directives.console)");
            installer
                .get_or_insert_with(Default::default)
                .console
                .extend(self.dest_console.iter().map(|c| c.to_string()));
        }
        for a in &self.dest_karg_append {
            installer
                .get_or_insert_with(Default::default)
                .append_karg
                .push(a.clone());
        }
        for a in &self.dest_karg_delete {
            installer
                .get_or_insert_with(Default::default)
                .delete_karg
                .push(a.clone());
        }
        if let Some(url) = &self.image_url {
            ensure!(
                matches!(url.scheme(), "http" | "https"),
                "--image-url {url} must be an http or https URL"
            );
            let i = installer.get_or_insert_with(Default::default);
            i.image_url = Some(url.to_string());
            i.insecure = self.insecure;
        } else {
            ensure!(!self.insecure, "--insecure only applies to --image-url");
        }
        for k in &self.network_keyfiles {
            ensure!(features.live_initrd_network, "this ISO's OS image does not support customizing network settings (features.json lacks live-initrd-network)");
            ensure!(
                !k.name.is_empty() && !k.name.contains('/'),
                "network keyfile name {:?} must be a plain file name",
                k.name
            );
            let path = format!("{NETWORK_DIR}/{}", k.name);
            ensure!(
                payload.get(&path).is_none(),
                "two network keyfiles are named {}",
                k.name
            );
            payload.insert(path, k.data.clone());
            copy_network = true;
        }
        let mut dest_ca = Vec::new();
        for ca in &self.ignition_ca {
            check_pem(ca)?;
            add_ca(live.get_or_insert_with(Default::default), &ca.data)?;
            dest_ca.push(ca.data.clone());
        }
        for l in &self.live_ignition {
            let (config, warnings) = parse_ignition(l)?;
            notes.extend(warnings.into_iter().map(|w| format!("warning: {w}")));
            add_merge(live.get_or_insert_with(Default::default), &config)?;
        }

        if !user_dest.is_empty() {
            let data = if dest_ca.is_empty() && user_dest.len() == 1 {
                // one destination config and nothing of ours to add: embed it as is
                to_bytes(&user_dest[0])?
            } else {
                let mut dest = ign::Config::default();
                for ca in &dest_ca {
                    add_ca(&mut dest, ca)?;
                }
                for u in &user_dest {
                    add_merge(&mut dest, u)?;
                }
                to_bytes(&dest)?
            };
            let conf = installer.get_or_insert_with(Default::default);
            conf.ignition_file = Some(DEST_IGNITION_PATH.into());
            add_file(
                live.get_or_insert_with(Default::default),
                DEST_IGNITION_PATH.into(),
                &data,
            )?;
        }

        if let Some(mut conf) = installer {
            ensure!(features.installer_config, "this ISO's OS image does not support installer configuration (features.json lacks installer-config)");
            match &conf.dest_device {
                Some(dev) => notes.push(format!("the ISO will install to {dev} without confirmation when booted")),
                None => notes.push("the ISO will run coreos-installer when booted (no --dest-device: it needs a device from elsewhere)".into()),
            }
            conf.copy_network = copy_network;
            let yaml = serde_yaml_ng::to_string(&conf)?;
            add_file(
                live.get_or_insert_with(Default::default),
                format!("{INSTALLER_DIR}/0000-customize.yaml"),
                yaml.as_bytes(),
            )?;
        }

        // an empty live config would disable autologin on the live ISO: embed none
        if let Some(live) = live {
            payload.insert(IGNITION_PATH, to_bytes(&live)?);
        }
        Ok(Built { payload, notes })
    }
}

/// Decode a `data:` URL and its optional gzip compression (Ignition resource semantics).
pub fn decode_data_url(source: &str, compression: Option<&str>) -> Result<Vec<u8>> {
    let raw = crate::ignition::decode_data_url(source)?;
    match compression {
        None | Some("") => Ok(raw),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .take(64 << 20)
                .read_to_end(&mut out)
                .context("bad gzip in data: URL")?;
            Ok(out)
        }
        Some(other) => bail!("unsupported compression {other:?}"),
    }
}

/// A file carried inside the live Ignition config, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CarriedFile {
    pub path: String,
    pub contents: String,
}

/// The files the live config writes (the destination config, installer configs), decoded
/// from their data URLs. Version-agnostic: walks the JSON.
pub fn carried_files(live_config: &[u8]) -> Result<Vec<CarriedFile>> {
    let v: serde_json::Value =
        serde_json::from_slice(live_config).context("the embedded config.ign is not JSON")?;
    let mut out = Vec::new();
    for f in v
        .pointer("/storage/files")
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
    {
        let Some(path) = f.get("path").and_then(|p| p.as_str()) else {
            continue;
        };
        let Some(source) = f.pointer("/contents/source").and_then(|s| s.as_str()) else {
            continue;
        };
        if !source.starts_with("data:") {
            continue;
        }
        let compression = f.pointer("/contents/compression").and_then(|c| c.as_str());
        let data = decode_data_url(source, compression)
            .with_context(|| format!("decoding embedded file {path}"))?;
        out.push(CarriedFile {
            path: path.to_string(),
            contents: String::from_utf8_lossy(&data).into_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_features() -> Features {
        serde_json::from_str(r#"{"installer-config": true, "installer-config-directives": {"console": true}, "live-initrd-network": true}"#).unwrap()
    }

    const IGN: &str = r#"{"ignition":{"version":"3.2.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":["ssh-ed25519 AAAA"]}]}}"#;

    #[test]
    fn consoles_normalize_like_coreos_installer() {
        let ok = [
            ("ttyS0", "ttyS0,9600n8"),
            ("ttyS1,115200", "ttyS1,115200n8"),
            ("ttyS1,115200e", "ttyS1,115200e8"),
            ("ttyAMA0,115200o7", "ttyAMA0,115200o7"),
            ("tty0", "tty0"),
            ("hvc0", "hvc0"),
        ];
        for (input, want) in ok {
            assert_eq!(input.parse::<Console>().unwrap().to_string(), want);
        }
        for bad in [
            "console=ttyS0",
            "/dev/ttyS0",
            "ttyS",
            "ttyX0",
            "ttyS0,",
            "ttyS0,9600x",
            "ttyS0,9600n9",
            "tty1",
        ] {
            assert!(bad.parse::<Console>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn dest_only_embeds_installer_files_in_live_config() {
        let spec = LiveSpec {
            dest_ignition: vec![Named::new("dest.ign", IGN)],
            dest_device: Some("/dev/vda".into()),
            dest_console: vec!["ttyS0,115200".parse().unwrap()],
            dest_karg_append: vec!["nosmt".into()],
            image_url: Some("https://example.com/img.raw.xz".parse().unwrap()),
            insecure: true,
            ..Default::default()
        };
        let built = spec.build(&all_features()).unwrap();
        let live = built.payload.get(IGNITION_PATH).unwrap();
        let files = carried_files(live).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, DEST_IGNITION_PATH);
        // a single dest config is embedded re-serialized, not wrapped
        let (orig, _) = ignition_config::Config::parse_str(IGN).unwrap();
        assert_eq!(
            files[0].contents,
            format!("{}\n", serde_json::to_string(&orig).unwrap())
        );
        assert_eq!(files[1].path, "/etc/coreos/installer.d/0000-customize.yaml");
        assert_eq!(
            files[1].contents,
            "image-url: https://example.com/img.raw.xz\nignition-file: /etc/coreos/dest.ign\nconsole:\n- ttyS0,115200n8\nappend-karg:\n- nosmt\ninsecure: true\ndest-device: /dev/vda\n"
        );
        assert!(built
            .notes
            .iter()
            .any(|n| n.contains("install to /dev/vda")));
        let v: serde_json::Value = serde_json::from_slice(live).unwrap();
        assert_eq!(v["ignition"]["version"], "3.3.0");
    }

    #[test]
    fn live_ignition_is_merged_and_ca_goes_both_ways() {
        let pem = std::str::from_utf8(include_bytes!("../../tests/golden/test-ca.crt")).unwrap();
        let spec = LiveSpec {
            live_ignition: vec![Named::new("live.ign", IGN)],
            dest_ignition: vec![Named::new("dest.ign", IGN)],
            ignition_ca: vec![Named::new("ca.pem", pem)],
            network_keyfiles: vec![Named::new("eth0.nmconnection", "[connection]\n")],
            ..Default::default()
        };
        let built = spec.build(&all_features()).unwrap();
        let live: serde_json::Value =
            serde_json::from_slice(built.payload.get(IGNITION_PATH).unwrap()).unwrap();
        let merge = &live["ignition"]["config"]["merge"][0];
        let merged = decode_data_url(
            merge["source"].as_str().unwrap(),
            merge["compression"].as_str(),
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&merged).unwrap()["passwd"]["users"][0]
                ["name"],
            "core"
        );
        let ca = &live["ignition"]["security"]["tls"]["certificateAuthorities"][0];
        assert_eq!(
            decode_data_url(ca["source"].as_str().unwrap(), Some("gzip")).unwrap(),
            pem.as_bytes()
        );
        let files = carried_files(built.payload.get(IGNITION_PATH).unwrap()).unwrap();
        // with a CA the destination config is a wrapper trusting it and merging the user's
        let dest: serde_json::Value = serde_json::from_str(&files[0].contents).unwrap();
        assert!(
            dest["ignition"]["security"]["tls"]["certificateAuthorities"][0]["source"].is_string()
        );
        assert!(dest["ignition"]["config"]["merge"][0]["source"].is_string());
        assert!(files[1].contents.contains("copy-network: true"));
        assert_eq!(
            built
                .payload
                .get("etc/coreos-firstboot-network/eth0.nmconnection"),
            Some(&b"[connection]\n"[..])
        );
    }

    #[test]
    fn invalid_inputs_are_refused() {
        let f = all_features();
        let cases: Vec<(LiveSpec, &str)> = vec![
            (
                LiveSpec {
                    dest_ignition: vec![Named::new("bad.ign", "{not json")],
                    ..Default::default()
                },
                "invalid Ignition config bad.ign",
            ),
            (
                LiveSpec {
                    live_ignition: vec![Named::new(
                        "v2.ign",
                        r#"{"ignition":{"version":"2.2.0"}}"#,
                    )],
                    ..Default::default()
                },
                "invalid Ignition config v2.ign",
            ),
            (
                LiveSpec {
                    ignition_ca: vec![Named::new("ca.pem", "hello")],
                    ..Default::default()
                },
                "ca.pem: no PEM certificate found",
            ),
            (
                LiveSpec {
                    dest_device: Some("vda".into()),
                    ..Default::default()
                },
                "absolute device path",
            ),
            (
                LiveSpec {
                    dest_device: Some("/dev/sda\nimage-url: http://evil".into()),
                    ..Default::default()
                },
                "absolute device path",
            ),
            (
                LiveSpec {
                    insecure: true,
                    ..Default::default()
                },
                "--insecure only applies",
            ),
            (
                LiveSpec {
                    image_url: Some("ftp://x/y".parse().unwrap()),
                    ..Default::default()
                },
                "http or https",
            ),
            (
                LiveSpec {
                    network_keyfiles: vec![Named::new("a", "1"), Named::new("a", "2")],
                    ..Default::default()
                },
                "two network keyfiles are named a",
            ),
        ];
        for (spec, want) in cases {
            let err = format!("{:#}", spec.build(&f).unwrap_err());
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn features_gate_options() {
        let none = Features::default();
        let cases: Vec<(LiveSpec, &str)> = vec![
            (
                LiveSpec {
                    dest_device: Some("/dev/sda".into()),
                    ..Default::default()
                },
                "installer-config",
            ),
            (
                LiveSpec {
                    dest_console: vec!["tty0".parse().unwrap()],
                    ..Default::default()
                },
                "installer-config-directives.console",
            ),
            (
                LiveSpec {
                    network_keyfiles: vec![Named::new("a", "1")],
                    ..Default::default()
                },
                "live-initrd-network",
            ),
        ];
        for (spec, want) in cases {
            let err = spec.build(&none).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        // live Ignition alone needs no feature
        let spec = LiveSpec {
            live_ignition: vec![Named::new("l.ign", IGN)],
            ..Default::default()
        };
        assert!(spec
            .build(&none)
            .unwrap()
            .payload
            .get(IGNITION_PATH)
            .is_some());
        assert!(LiveSpec::default().build(&none).unwrap().payload.is_empty());
    }

    #[test]
    fn gzip_best_is_valid_gzip() {
        for input in [&b""[..], b"hello", &[7u8; 100_000]] {
            let gz = gzip_best(input);
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, input);
            assert_eq!(&gz[..10], b"\x1f\x8b\x08\0\0\0\0\0\x02\xff");
        }
    }

    #[test]
    fn data_urls() {
        assert_eq!(decode_data_url("data:,a%20b", None).unwrap(), b"a b");
        assert_eq!(
            decode_data_url("data:text/plain;base64,aGk=", None).unwrap(),
            b"hi"
        );
        assert!(decode_data_url("https://x", None).is_err());
    }
}
