//! Customizing CoreOS live ISOs the way `coreos-installer iso customize` does, byte for
//! byte where it is observable, plus options it lacks (a custom metal image URL, the
//! pool pointer config).
//!
//! - [`iso9660`]: find files (extent offset and length) in the volume;
//! - [`embed`]: locate the Ignition and kernel-argument embed areas ([`Layout`]);
//! - [`payload`]: the newc cpio + xz (CRC32) payload of the Ignition area;
//! - [`live`]: what the payload holds (live Ignition, installer config, keyfiles);
//! - [`plan`]: customize / reset as a list of byte-range writes (plain data);
//! - [`exec`]: apply a plan in place, to a new file or to stdout.

pub mod embed;
pub mod exec;
pub mod iso9660;
pub mod live;
pub mod payload;
pub mod plan;
pub mod secrets;
pub mod xz;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

pub use embed::{Features, Layout};
pub use exec::Target;
pub use live::{Console, LiveSpec, Named};
pub use plan::{Customize, IsoWrites, State};

use iso9660::IsoFs;
use live::{CarriedFile, DEST_IGNITION_PATH, INSTALLER_DIR};
use payload::IGNITION_PATH;

/// An ISO opened for inspection: where its areas are and what they hold.
pub struct LiveIso {
    pub layout: Layout,
    pub state: State,
}

impl LiveIso {
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        // Opening a FIFO would block until someone writes to it: look first.
        let meta = std::fs::metadata(path).with_context(|| format!("opening {name}"))?;
        {
            use std::os::unix::fs::FileTypeExt;
            let t = meta.file_type();
            if !(t.is_file() || t.is_block_device()) {
                anyhow::bail!("{name} is not a regular file or block device");
            }
        }
        let file = File::open(path).with_context(|| format!("opening {name}"))?;
        let mut iso =
            IsoFs::new(BufReader::with_capacity(64 << 10, file)).with_context(|| name.clone())?;
        let layout = Layout::locate(&mut iso, &name).with_context(|| name.clone())?;
        let state = State::read(&mut iso, &layout).with_context(|| name.clone())?;
        Ok(LiveIso { layout, state })
    }
}

/// Customize `input` (everything is validated and planned before a byte is written).
/// Returns the plan that was applied (its notes are for the user).
pub fn customize(
    input: &Path,
    req: &Customize,
    target: Target,
    cancel: &crate::cancel::Cancel,
) -> Result<IsoWrites> {
    let iso = LiveIso::open(input)?;
    let mut plan = plan::plan_customize(&iso.layout, &iso.state, req)
        .with_context(|| input.display().to_string())?;
    plan.secret = req.spec.has_secrets();
    exec::apply(input, &plan, target, cancel)?;
    Ok(plan)
}

/// Restore the pristine embed areas of `input`.
pub fn reset(input: &Path, target: Target, cancel: &crate::cancel::Cancel) -> Result<IsoWrites> {
    let iso = LiveIso::open(input)?;
    let plan = plan::plan_reset(&iso.layout).with_context(|| input.display().to_string())?;
    exec::apply(input, &plan, target, cancel)?;
    Ok(plan)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AreaReport {
    pub file: String,
    pub offset: u64,
    pub length: u64,
    /// Bytes before the zero padding.
    pub used: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KargsReport {
    pub current: String,
    pub default: String,
    pub area_size: usize,
    pub areas: Vec<AreaRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AreaRef {
    pub file: String,
    pub offset: u64,
}

/// What `layerboot iso show` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub volume_id: String,
    pub customized: bool,
    pub ignition_area: AreaReport,
    /// The embedded live Ignition config, verbatim.
    pub ignition: Option<String>,
    /// The destination Ignition config the installer will write.
    pub dest_ignition: Option<String>,
    /// Installer configs (`/etc/coreos/installer.d/*`), by path, verbatim YAML.
    pub installer_configs: BTreeMap<String, String>,
    /// Other files the live config writes.
    pub live_files: Vec<CarriedFile>,
    /// NetworkManager keyfiles, by name.
    pub network_keyfiles: BTreeMap<String, String>,
    /// Other payload members.
    pub other_members: Vec<String>,
    pub kargs: Option<KargsReport>,
    pub features: Features,
    /// What [`Report::redact`] hid (empty when nothing was, or with --show-secrets).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
}

impl Report {
    /// Hide the secrets ([`secrets`]) of everything shown; returns what was hidden.
    pub fn redact(&mut self) -> &[String] {
        let mut what = Vec::new();
        let mut dest_secret = false;
        if let Some(dest) = &mut self.dest_ignition {
            if let Some((text, w)) = secrets::redact_ignition(dest, &[]) {
                *dest = text;
                what.extend(w.into_iter().map(|p| format!("{p} (destination config)")));
                dest_secret = true;
            }
        }
        if let Some(live) = &mut self.ignition {
            // The live config carries the destination config as a file: hide that copy
            // too when it held secrets.
            let also: &[&str] = if dest_secret {
                &[DEST_IGNITION_PATH]
            } else {
                &[]
            };
            if let Some((text, w)) = secrets::redact_ignition(live, also) {
                *live = text;
                what.extend(
                    w.into_iter()
                        .filter(|p| p != DEST_IGNITION_PATH)
                        .map(|p| format!("{p} (live config)")),
                );
            }
        }
        for f in &mut self.live_files {
            if secrets::is_secret_path(&f.path) {
                f.contents = secrets::REDACTED.into();
                what.push(format!("{} (live file)", f.path));
            }
        }
        for (name, text) in &mut self.network_keyfiles {
            if let Some(r) = secrets::redact_keyfile(text) {
                *text = r;
                what.push(format!("network keyfile {name}"));
            }
        }
        self.redacted = what;
        &self.redacted
    }

    pub fn new(iso: &LiveIso) -> Result<Self> {
        let (layout, state) = (&iso.layout, &iso.state);
        let ignition = state
            .payload
            .get(IGNITION_PATH)
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let mut dest_ignition = None;
        let mut installer_configs = BTreeMap::new();
        let mut live_files = Vec::new();
        if let Some(ign) = state.payload.get(IGNITION_PATH) {
            // A user-embedded config may not be JSON we understand; show it regardless.
            for f in live::carried_files(ign).unwrap_or_default() {
                if f.path == DEST_IGNITION_PATH {
                    dest_ignition = Some(f.contents);
                } else if f.path.starts_with(&format!("{INSTALLER_DIR}/")) {
                    installer_configs.insert(f.path, f.contents);
                } else {
                    live_files.push(f);
                }
            }
        }
        let keyfiles = state.payload.network_keyfiles();
        let network_keyfiles = keyfiles
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let other_members = state
            .payload
            .members()
            .map(|(p, _)| p)
            .filter(|p| {
                *p != IGNITION_PATH && !p.starts_with(&format!("{}/", payload::NETWORK_DIR))
            })
            .map(str::to_string)
            .collect();
        let kargs = match (&layout.kargs, &state.kargs) {
            (Some(k), Some(cur)) => Some(KargsReport {
                current: cur.clone(),
                default: k.default.clone(),
                area_size: k.size,
                areas: k
                    .areas
                    .iter()
                    .map(|a| AreaRef {
                        file: a.file.clone(),
                        offset: a.span.offset,
                    })
                    .collect(),
            }),
            _ => None,
        };
        Ok(Report {
            volume_id: layout.volume_id.clone(),
            customized: state.customized(layout),
            ignition_area: AreaReport {
                file: layout.ignition.file.clone(),
                offset: layout.ignition.span.offset,
                length: layout.ignition.span.length,
                used: state.ignition_used,
            },
            ignition,
            dest_ignition,
            installer_configs,
            live_files,
            network_keyfiles,
            other_members,
            kargs,
            features: layout.features.clone(),
            redacted: vec![],
        })
    }

    /// The human-readable form.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let pretty = |json: &str| -> String {
            serde_json::from_str::<serde_json::Value>(json)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_else(|| json.trim_end().to_string())
        };
        let indent = |text: &str| -> String {
            text.trim_end()
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect()
        };
        let _ = writeln!(s, "Volume ID:       {}", self.volume_id);
        let _ = writeln!(
            s,
            "Customized:      {}",
            if self.customized {
                "yes"
            } else {
                "no (pristine)"
            }
        );
        let a = &self.ignition_area;
        let _ = writeln!(
            s,
            "Ignition area:   {} ({} bytes at offset {}, {} used)",
            a.file, a.length, a.offset, a.used
        );
        match &self.kargs {
            Some(k) => {
                let _ = writeln!(s, "Kernel args:     {}", k.current);
                if k.current != k.default {
                    let _ = writeln!(s, "Default kargs:   {}", k.default);
                }
                let _ = writeln!(
                    s,
                    "Kargs areas:     {} bytes in {}",
                    k.area_size,
                    k.areas
                        .iter()
                        .map(|a| a.file.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            None => s.push_str("Kernel args:     (no kargs embed areas)\n"),
        }
        let f = &self.features;
        let _ = writeln!(
            s,
            "Features:        installer-config={} dest-console={} live-initrd-network={}",
            f.installer_config, f.installer_config_directives.console, f.live_initrd_network
        );
        if let Some(ign) = &self.ignition {
            let _ = write!(
                s,
                "Live Ignition config (config.ign):\n{}",
                indent(&pretty(ign))
            );
        }
        if let Some(dest) = &self.dest_ignition {
            let _ = write!(
                s,
                "Destination Ignition config ({DEST_IGNITION_PATH}):\n{}",
                indent(&pretty(dest))
            );
        }
        for (path, yaml) in &self.installer_configs {
            let _ = write!(s, "Installer config {path}:\n{}", indent(yaml));
        }
        for f in &self.live_files {
            let _ = write!(s, "Live file {}:\n{}", f.path, indent(&f.contents));
        }
        for (name, text) in &self.network_keyfiles {
            let _ = write!(s, "Network keyfile {name}:\n{}", indent(text));
        }
        for m in &self.other_members {
            let _ = writeln!(s, "Other embedded file: {m}");
        }
        if !self.redacted.is_empty() {
            let _ = writeln!(
                s,
                "Redacted (--show-secrets shows them): {}",
                self.redacted.join(", ")
            );
        }
        s
    }
}
