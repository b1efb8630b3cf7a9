//! Customize / reset as plain data: given where the areas are ([`Layout`]) and what they
//! hold now ([`State`]), compute the exact bytes to write at which offsets ([`IsoWrites`]).
//! Nothing here does I/O; [`super::exec`] applies a plan.

use std::io::{Read, Seek};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use super::embed::{edit_kargs, format_kargs_area, parse_kargs_area, Layout};
use super::iso9660::IsoFs;
use super::live::LiveSpec;
use super::payload::{Payload, IGNITION_PATH};

/// Embed areas larger than this are refused as implausible (CoreOS uses 256 KiB).
const MAX_IGNITION_AREA: u64 = 64 << 20;

/// What the embed areas hold now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub payload: Payload,
    /// Bytes of the Ignition area before the trailing zero padding.
    pub ignition_used: u64,
    /// Current kernel arguments (`None` if the ISO has no kargs areas).
    pub kargs: Option<String>,
}

impl State {
    /// Read the areas named by `layout`.
    pub fn read<R: Read + Seek>(iso: &mut IsoFs<R>, layout: &Layout) -> Result<Self> {
        let span = layout.ignition.span;
        ensure!(
            span.length <= MAX_IGNITION_AREA,
            "Ignition embed area of {} bytes is implausibly large",
            span.length
        );
        let area = iso
            .read_at(span.offset, span.length as usize)
            .context("reading the Ignition embed area")?;
        let ignition_used = area
            .iter()
            .rposition(|&b| b != 0)
            .map(|p| p as u64 + 1)
            .unwrap_or(0);
        let payload = Payload::from_area_bytes(&area).with_context(|| {
            format!(
                "decoding the Ignition embed area in {}",
                layout.ignition.file
            )
        })?;
        let kargs = match &layout.kargs {
            None => None,
            Some(k) => {
                let mut first: Option<String> = None;
                for a in &k.areas {
                    let bytes = iso.read_at(a.span.offset, a.span.length as usize)?;
                    let text = parse_kargs_area(&bytes, a.pad, a.end)
                        .with_context(|| format!("reading the kargs area in {}", a.file))?;
                    match &first {
                        None => first = Some(text),
                        Some(f) if *f != text => bail!("kernel arguments differ between bootloader configs: {:?} in {} vs {:?} in {}", f, k.areas[0].file, text, a.file),
                        Some(_) => {}
                    }
                }
                first
            }
        };
        Ok(State {
            payload,
            ignition_used,
            kargs,
        })
    }

    /// coreos-installer's notion of "already customized": an embedded Ignition config,
    /// embedded network keyfiles, or kernel arguments other than the defaults.
    pub fn customized(&self, layout: &Layout) -> bool {
        self.payload.get(IGNITION_PATH).is_some()
            || !self.payload.network_keyfiles().is_empty()
            || matches!((&self.kargs, &layout.kargs), (Some(cur), Some(k)) if *cur != k.default)
    }
}

/// One write: `bytes` at `offset`, for `what`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Write {
    pub what: String,
    pub offset: u64,
    #[serde(skip)]
    pub bytes: Vec<u8>,
    pub length: u64,
}

/// The writes of one operation, sorted by offset and non-overlapping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IsoWrites {
    pub writes: Vec<Write>,
    /// Messages for the user (warnings, "will install to /dev/sda without confirmation").
    pub notes: Vec<String>,
    /// The result embeds secrets ([`super::secrets`]): a new output file is made 0600.
    pub secret: bool,
}

impl IsoWrites {
    fn push(&mut self, what: String, offset: u64, bytes: Vec<u8>) {
        self.writes.push(Write {
            what,
            offset,
            length: bytes.len() as u64,
            bytes,
        });
    }

    fn finish(mut self) -> Result<Self> {
        self.writes.sort_by_key(|w| w.offset);
        for pair in self.writes.windows(2) {
            ensure!(
                pair[0]
                    .offset
                    .checked_add(pair[0].length)
                    .is_some_and(|end| end <= pair[1].offset),
                "embed areas overlap: {} and {}",
                pair[0].what,
                pair[1].what
            );
        }
        Ok(self)
    }
}

/// A customization request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Customize {
    pub spec: LiveSpec,
    pub live_karg_append: Vec<String>,
    pub live_karg_delete: Vec<String>,
    pub force: bool,
}

/// Refusal to customize an ISO twice (callers may want to say how to proceed).
#[derive(Debug, thiserror::Error)]
#[error("the ISO is already customized (embedded Ignition, network keyfiles or non-default kernel arguments): pass --force to replace its customizations, or `layerboot iso reset` it first")]
pub struct AlreadyCustomized;

/// The payload does not fit the Ignition area.
#[derive(Debug, thiserror::Error)]
#[error("the payload to embed is {need} bytes (xz-compressed) but the ISO's Ignition area ({file}) holds {size}: embed less, e.g. a small pointer config whose ignition.config.merge fetches the full config over HTTPS (--pointer-pool), instead of large files or many configs")]
pub struct PayloadTooLarge {
    pub need: u64,
    pub size: u64,
    pub file: String,
}

fn ignition_write(plan: &mut IsoWrites, layout: &Layout, payload: &Payload) -> Result<()> {
    let mut bytes = payload.to_area_bytes()?;
    let size = layout.ignition.span.length;
    if bytes.len() as u64 > size {
        bail!(PayloadTooLarge {
            need: bytes.len() as u64,
            size,
            file: layout.ignition.file.clone()
        });
    }
    bytes.resize(size as usize, 0);
    plan.push(
        format!("Ignition area in {}", layout.ignition.file),
        layout.ignition.span.offset,
        bytes,
    );
    Ok(())
}

fn kargs_writes(plan: &mut IsoWrites, layout: &Layout, kargs: &str) -> Result<()> {
    let k = layout
        .kargs
        .as_ref()
        .context("the ISO has no kernel argument areas (no /coreos/kargs.json)")?;
    for a in &k.areas {
        plan.push(
            format!("kargs area in {}", a.file),
            a.span.offset,
            format_kargs_area(kargs, k.size, a.pad, a.end)?,
        );
    }
    Ok(())
}

/// Plan a customization, with coreos-installer's semantics so the same inputs give the
/// same bytes: the Ignition area is always rewritten (an empty spec clears it); with live
/// karg options the kernel arguments become the defaults edited by them (a forced
/// re-customization does not stack edits), without any they are left as they are.
pub fn plan_customize(layout: &Layout, state: &State, req: &Customize) -> Result<IsoWrites> {
    if !req.force && state.customized(layout) {
        bail!(AlreadyCustomized);
    }
    let built = req.spec.build(&layout.features)?;
    let mut plan = IsoWrites {
        notes: built.notes,
        ..Default::default()
    };
    ignition_write(&mut plan, layout, &built.payload)?;
    if !req.live_karg_append.is_empty() || !req.live_karg_delete.is_empty() {
        let k = layout.kargs.as_ref().context(
            "this ISO does not support customizing live kernel arguments (no /coreos/kargs.json)",
        )?;
        let kargs = edit_kargs(&k.default, &req.live_karg_append, &req.live_karg_delete);
        kargs_writes(&mut plan, layout, &kargs)?;
    }
    plan.finish()
}

/// Plan restoring a pristine ISO: an all-zero Ignition area, default kernel arguments.
pub fn plan_reset(layout: &Layout) -> Result<IsoWrites> {
    let mut plan = IsoWrites::default();
    ignition_write(&mut plan, layout, &Payload::default())?;
    if let Some(k) = &layout.kargs {
        kargs_writes(&mut plan, layout, &k.default.clone())?;
    }
    plan.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso::embed::{Features, IgnitionArea, KargsArea, KargsAreas, Span};
    use crate::iso::live::Named;

    fn layout() -> Layout {
        Layout {
            volume_id: "TEST".into(),
            image_size: 1 << 20,
            ignition: IgnitionArea {
                file: "images/ignition.img".into(),
                span: Span {
                    offset: 100 * 2048,
                    length: 4096,
                },
            },
            kargs: Some(KargsAreas {
                default: "console=ttyS0 quiet".into(),
                size: 64,
                areas: vec![
                    KargsArea {
                        file: "isolinux/isolinux.cfg".into(),
                        span: Span {
                            offset: 50 * 2048 + 10,
                            length: 64,
                        },
                        pad: '#',
                        end: '\n',
                    },
                    KargsArea {
                        file: "EFI/BOOT/grub.cfg".into(),
                        span: Span {
                            offset: 60 * 2048 + 20,
                            length: 64,
                        },
                        pad: '#',
                        end: '\n',
                    },
                ],
            }),
            features: Features {
                installer_config: true,
                live_initrd_network: true,
                ..Default::default()
            },
        }
    }

    fn pristine() -> State {
        State {
            payload: Payload::default(),
            ignition_used: 0,
            kargs: Some("console=ttyS0 quiet".into()),
        }
    }

    fn summary(plan: &IsoWrites) -> Vec<(String, u64, u64)> {
        plan.writes
            .iter()
            .map(|w| (w.what.clone(), w.offset, w.length))
            .collect()
    }

    #[test]
    fn customize_writes_only_the_areas() {
        let req = Customize {
            spec: LiveSpec {
                live_ignition: vec![Named::new("l.ign", r#"{"ignition":{"version":"3.3.0"}}"#)],
                ..Default::default()
            },
            live_karg_append: vec!["x=1".into()],
            live_karg_delete: vec!["quiet".into()],
            force: false,
        };
        let plan = plan_customize(&layout(), &pristine(), &req).unwrap();
        assert_eq!(
            summary(&plan),
            vec![
                ("kargs area in isolinux/isolinux.cfg".into(), 102410, 64),
                ("kargs area in EFI/BOOT/grub.cfg".into(), 122900, 64),
                ("Ignition area in images/ignition.img".into(), 204800, 4096),
            ]
        );
        assert!(plan.writes[0].bytes.starts_with(b"console=ttyS0 x=1\n###"));
        let ign = &plan.writes[2].bytes;
        assert!(ign.ends_with(&[0; 100]));
        assert!(Payload::from_area_bytes(ign)
            .unwrap()
            .get("config.ign")
            .is_some());
    }

    #[test]
    fn no_karg_options_leaves_pristine_kargs_alone() {
        let req = Customize {
            spec: LiveSpec {
                dest_device: Some("/dev/sda".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let plan = plan_customize(&layout(), &pristine(), &req).unwrap();
        assert_eq!(
            summary(&plan),
            vec![("Ignition area in images/ignition.img".into(), 204800, 4096)]
        );
    }

    #[test]
    fn already_customized_needs_force() {
        let mut state = pristine();
        state.kargs = Some("console=ttyS0 quiet extra".into());
        let req = Customize::default();
        assert!(plan_customize(&layout(), &state, &req)
            .unwrap_err()
            .downcast_ref::<AlreadyCustomized>()
            .is_some());
        let forced = plan_customize(
            &layout(),
            &state,
            &Customize {
                force: true,
                ..req.clone()
            },
        )
        .unwrap();
        // forcing without karg options rewrites only the Ignition area
        assert_eq!(summary(&forced).len(), 1);
        assert!(summary(&forced)[0].0.starts_with("Ignition area"));
        // with karg options, the edits apply to the defaults, not to the current kargs
        let edited = plan_customize(
            &layout(),
            &state,
            &Customize {
                force: true,
                live_karg_append: vec!["new=1".into()],
                ..req
            },
        )
        .unwrap();
        assert_eq!(edited.writes.len(), 3);
        assert!(edited.writes[0]
            .bytes
            .starts_with(b"console=ttyS0 quiet new=1\n#"));

        let mut state = pristine();
        state.payload.insert("config.ign", b"{}".to_vec());
        assert!(state.customized(&layout()));
        let mut state = pristine();
        state
            .payload
            .insert("etc/coreos-firstboot-network/x", b"".to_vec());
        assert!(state.customized(&layout()));
        assert!(!pristine().customized(&layout()));
    }

    #[test]
    fn too_large_payload_names_both_sizes() {
        // incompressible content larger than the 4 KiB area
        let mut x = 1u64;
        let noise: String = (0..8000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b'a' + (x >> 59) as u8 % 26)
            })
            .collect();
        let ign = format!(
            r#"{{"ignition":{{"version":"3.3.0"}},"passwd":{{"users":[{{"name":"{noise}"}}]}}}}"#
        );
        let req = Customize {
            spec: LiveSpec {
                live_ignition: vec![Named::new("big.ign", ign)],
                ..Default::default()
            },
            ..Default::default()
        };
        let err = plan_customize(&layout(), &pristine(), &req).unwrap_err();
        let e = err.downcast_ref::<PayloadTooLarge>().unwrap();
        assert!(e.need > 4096 && e.size == 4096, "{e:?}");
        assert!(
            err.to_string().contains(&format!("is {} bytes", e.need))
                && err.to_string().contains("holds 4096")
        );
    }

    #[test]
    fn kargs_too_long_and_missing_areas() {
        let req = Customize {
            live_karg_append: vec!["y".repeat(60)],
            ..Default::default()
        };
        let err = plan_customize(&layout(), &pristine(), &req).unwrap_err();
        assert!(
            err.to_string()
                .contains("kernel arguments need 81 bytes but the ISO's kargs area holds 64"),
            "{err}"
        );
        let mut l = layout();
        l.kargs = None;
        let err = plan_customize(
            &l,
            &State {
                kargs: None,
                ..pristine()
            },
            &Customize {
                live_karg_append: vec!["a".into()],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err
            .to_string()
            .contains("does not support customizing live kernel arguments"));
    }

    #[test]
    fn reset_zeroes_and_restores_defaults() {
        let plan = plan_reset(&layout()).unwrap();
        assert_eq!(plan.writes.len(), 3);
        assert!(plan.writes[2].bytes.iter().all(|&b| b == 0));
        assert_eq!(&plan.writes[1].bytes[..20], b"console=ttyS0 quiet\n");
    }
}
