//! First-boot config for standalone Fedora CoreOS / CentOS Stream CoreOS (no OpenShift):
//! boot the stock image once, switch to the layered image, reboot into it, never again.
//!
//! What the config holds:
//! - `/etc/ostree/auth.json` (0600) with the image registry's credentials only: the path
//!   rpm-ostree, bootc and ostree-ext read for container pulls;
//! - `/usr/local/bin/layerboot-rebase` (0755) and the oneshot unit
//!   `layerboot-rebase.service` that runs it; the script rebases with
//!   `rpm-ostree rebase ostree-unverified-registry:<image>@sha256:…` or, for a bootc image
//!   (label `containers.bootc=1`), `bootc switch <image>@sha256:…`, then reboots;
//! - optionally ssh keys for `core` and user configs merged through
//!   `ignition.config.merge` as inline `data:` URLs. Inline merge keeps each user config
//!   exactly as written and lets Ignition apply its own merge rules, instead of us
//!   re-implementing them; it works offline as nothing is fetched.
//!
//! Exactly-once reboot, two guards: the unit carries
//! `ConditionPathExists=!/var/lib/layerboot/rebase.stamp` and the script writes that stamp
//! (synced) *before* it reboots, so no later boot starts the unit; and the script first
//! checks whether the booted deployment already is the target (rebased by hand, or a disk
//! built from the image) and then only writes the stamp. A failed rebase exits non-zero
//! before the stamp and before any reboot: the unit fails visibly and the machine stays up.

use anyhow::{bail, Context, Result};

use super::{check_roundtrip, data_url, to_json, SpecVersion};
use crate::oci::reference::RegistryRef;

pub const UNIT_NAME: &str = "layerboot-rebase.service";
pub const SCRIPT_PATH: &str = "/usr/local/bin/layerboot-rebase";
pub const STAMP_PATH: &str = "/var/lib/layerboot/rebase.stamp";
pub const AUTH_PATH: &str = "/etc/ostree/auth.json";

/// How the machine switches images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switcher {
    RpmOstree,
    Bootc,
}

#[derive(Debug, Clone)]
pub struct RebaseSettings {
    /// Digest-pinned image.
    pub image: RegistryRef,
    pub switcher: Switcher,
    /// `{"auths":{"<registry>":{…}}}` holding only the image registry's entry.
    pub auth_json: Option<Vec<u8>>,
    /// Public keys for user `core`.
    pub ssh_keys: Vec<String>,
    /// User Ignition configs merged in, each `(label, bytes)`.
    pub merge: Vec<(String, Vec<u8>)>,
    pub spec: SpecVersion,
}

/// Parse an ssh public key file: one key per non-empty, non-comment line.
pub fn parse_ssh_keys(text: &str, what: &str) -> Result<Vec<String>> {
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if keys.is_empty() {
        bail!("{what}: no ssh public key found");
    }
    for k in &keys {
        let kind = k.split_whitespace().next().unwrap_or_default();
        let known =
            kind.starts_with("ssh-") || kind.starts_with("ecdsa-sha2-") || kind.starts_with("sk-");
        if !known || k.split_whitespace().count() < 2 {
            bail!(
                "{what}: '{}' is not an ssh public key (want e.g. 'ssh-ed25519 AAAA… comment')",
                kind
            );
        }
        if k.contains("PRIVATE KEY") {
            bail!("{what}: is a private key; give the .pub file");
        }
    }
    Ok(keys)
}

/// Check a config to merge: a valid Ignition 3.x config no newer than the output spec
/// (an older Ignition on the boot image cannot read a newer child config).
pub fn check_merge_config(bytes: &[u8], what: &str, spec: SpecVersion) -> Result<()> {
    let cfg =
        check_roundtrip(bytes).with_context(|| format!("{what}: not a valid Ignition config"))?;
    let v: serde_json::Value = serde_json::to_value(&cfg)?;
    let child = v["ignition"]["version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let child_spec: Option<SpecVersion> = child.parse().ok();
    let newer = match child_spec {
        Some(c) => c > spec,
        None => !matches!(child.as_str(), "3.0.0" | "3.1.0"),
    };
    if newer {
        bail!("{what}: is spec {child}, newer than the output spec {spec}: pass --spec {child}");
    }
    Ok(())
}

/// The rebase script, for the image and switcher in `s`.
pub fn script(s: &RebaseSettings) -> String {
    let image = s.image.to_string();
    let (check, switch) = match s.switcher {
        Switcher::RpmOstree => (
            format!("rpm-ostree status --booted --json | grep -qF '\"ostree-unverified-registry:{image}\"'"),
            format!("rpm-ostree rebase 'ostree-unverified-registry:{image}'"),
        ),
        Switcher::Bootc => (format!("bootc status --booted --format=json | grep -qF '\"{image}\"'"), format!("bootc switch '{image}'")),
    };
    format!(
        "#!/bin/sh\n\
         # Written by layerboot: switch this machine once to {image}, then reboot.\n\
         set -eu\n\
         stamp={STAMP_PATH}\n\
         mkdir -p \"$(dirname \"$stamp\")\"\n\
         # Already booted into the target: remember it and stop, no reboot.\n\
         if {check}; then\n\
         \x20   echo 'already booted into {image}' > \"$stamp\"\n\
         \x20   exit 0\n\
         fi\n\
         {switch}\n\
         # The stamp reaches the disk before the reboot, so the unit's ConditionPathExists\n\
         # skips it on every later boot: exactly one reboot.\n\
         echo 'switched to {image}' > \"$stamp\"\n\
         sync\n\
         systemctl reboot\n"
    )
}

pub fn unit(s: &RebaseSettings) -> String {
    format!(
        "[Unit]\n\
         Description=layerboot: switch once to the layered image {image} and reboot\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         # Keep Fedora CoreOS auto-updates from racing the switch.\n\
         Before=zincati.service\n\
         # Exactly once: the script writes this stamp before it reboots (and when the booted\n\
         # deployment already is the target), so the unit never starts again and cannot loop.\n\
         ConditionPathExists=!{STAMP_PATH}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart={SCRIPT_PATH}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        image = s.image
    )
}

macro_rules! rebase_config {
    ($m:ident, $s:expr, $script:expr, $unit:expr) => {{
        use ignition_config::$m as ign;
        let s = $s;
        let mut c = ign::Config::default();
        if !s.merge.is_empty() {
            let merge = s
                .merge
                .iter()
                .map(|(_, b)| ign::Resource {
                    source: Some(data_url(b)),
                    ..Default::default()
                })
                .collect();
            c.ignition.config = Some(ign::IgnitionConfig {
                merge: Some(merge),
                ..Default::default()
            });
        }
        let mut files = Vec::new();
        if let Some(auth) = &s.auth_json {
            let mut f = ign::File::new(AUTH_PATH.into());
            f.contents = Some(ign::Resource {
                source: Some(data_url(auth)),
                ..Default::default()
            });
            f.mode = Some(0o600);
            f.overwrite = Some(true);
            files.push(f);
        }
        let mut f = ign::File::new(SCRIPT_PATH.into());
        f.contents = Some(ign::Resource {
            source: Some(data_url($script.as_bytes())),
            ..Default::default()
        });
        f.mode = Some(0o755);
        f.overwrite = Some(true);
        files.push(f);
        c.storage = Some(ign::Storage {
            files: Some(files),
            ..Default::default()
        });
        let mut u = ign::Unit::new(UNIT_NAME.into());
        u.contents = Some($unit);
        u.enabled = Some(true);
        c.systemd = Some(ign::Systemd {
            units: Some(vec![u]),
        });
        if !s.ssh_keys.is_empty() {
            let mut core = ign::User::new("core".into());
            core.ssh_authorized_keys = Some(s.ssh_keys.clone());
            c.passwd = Some(ign::Passwd {
                users: Some(vec![core]),
                ..Default::default()
            });
        }
        to_json(&c)
    }};
}

pub fn render(s: &RebaseSettings) -> Result<Vec<u8>> {
    if s.image.digest.is_none() {
        bail!("image '{}' is not pinned by digest", s.image);
    }
    for (what, bytes) in &s.merge {
        check_merge_config(bytes, what, s.spec)?;
    }
    let script = script(s);
    let unit = unit(s);
    match s.spec {
        SpecVersion::V3_2 => rebase_config!(v3_2, s, script, unit),
        SpecVersion::V3_3 => rebase_config!(v3_3, s, script, unit),
        SpecVersion::V3_4 => rebase_config!(v3_4, s, script, unit),
        SpecVersion::V3_5 => rebase_config!(v3_5, s, script, unit),
        SpecVersion::V3_6 => rebase_config!(v3_6, s, script, unit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(switcher: Switcher) -> RebaseSettings {
        let image = match "quay.io/acme/fcos-layered@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".parse().unwrap() {
            crate::oci::reference::ImageRef::Registry(r) => r,
            _ => unreachable!(),
        };
        RebaseSettings {
            image,
            switcher,
            auth_json: None,
            ssh_keys: vec![],
            merge: vec![],
            spec: SpecVersion::V3_2,
        }
    }

    #[test]
    fn script_guards_and_switchers() {
        let s = script(&settings(Switcher::RpmOstree));
        let stamp = s.find("> \"$stamp\"\nsync").unwrap();
        assert!(
            stamp < s.find("systemctl reboot").unwrap(),
            "stamp must precede the reboot"
        );
        assert!(s.contains(
            "rpm-ostree rebase 'ostree-unverified-registry:quay.io/acme/fcos-layered@sha256:0123"
        ));
        assert_eq!(s.matches("systemctl reboot").count(), 1);
        let b = script(&settings(Switcher::Bootc));
        assert!(
            b.contains("bootc switch 'quay.io/acme/fcos-layered@sha256:0123")
                && !b.contains("rpm-ostree rebase")
        );
        assert!(unit(&settings(Switcher::Bootc))
            .contains(&format!("ConditionPathExists=!{STAMP_PATH}")));
    }

    #[test]
    fn ssh_keys() {
        assert_eq!(
            parse_ssh_keys("# c\nssh-ed25519 AAAAC3 me@x\n\n", "k").unwrap(),
            ["ssh-ed25519 AAAAC3 me@x"]
        );
        assert!(parse_ssh_keys("", "k").is_err());
        assert!(parse_ssh_keys("-----BEGIN OPENSSH PRIVATE KEY-----\n", "k").is_err());
    }

    #[test]
    fn merge_configs_must_not_be_newer() {
        let v34 = br#"{"ignition":{"version":"3.4.0"}}"#;
        let e = check_merge_config(v34, "user.ign", SpecVersion::V3_2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--spec 3.4.0"), "{e}");
        check_merge_config(v34, "user.ign", SpecVersion::V3_4).unwrap();
        assert!(check_merge_config(b"{}", "user.ign", SpecVersion::V3_4).is_err());
    }
}
