//! The embed areas of a CoreOS live ISO, located through the JSON files that the ISO
//! build writes into `/coreos/`:
//! - `igninfo.json` `{"file", "offset"?, "length"?}`: the Ignition area (by default the
//!   whole of `images/ignition.img`, 256 KiB of zeros when empty);
//! - `kargs.json` `{"default", "files": [{"path", "offset", "pad"?, "end"?}], "size"}`:
//!   one kernel-argument area of `size` bytes in each bootloader config, holding
//!   `kargs + end` padded with `pad` (defaults `#` and `\n`, so the padding is a comment);
//! - `features.json`: what the live image supports.

use std::io::{Read, Seek};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::iso9660::IsoFs;

pub const IGNINFO_PATH: &str = "coreos/igninfo.json";
pub const KARGS_PATH: &str = "coreos/kargs.json";
pub const FEATURES_PATH: &str = "coreos/features.json";
/// Used when an (older) ISO has no igninfo.json.
pub const DEFAULT_IGNITION_IMG: &str = "images/ignition.img";
/// Same sanity limit coreos-installer applies to karg areas.
pub const MAX_KARGS_AREA: usize = 2048;
const MAX_JSON: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct IgnInfo {
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct KargsInfo {
    pub default: String,
    pub files: Vec<KargsFile>,
    pub size: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct KargsFile {
    pub path: String,
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad: Option<char>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<char>,
}

/// `/coreos/features.json`; absent keys (and an absent file) mean "not supported".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Features {
    pub installer_config: bool,
    pub installer_config_directives: InstallerDirectives,
    pub live_initrd_network: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct InstallerDirectives {
    pub console: bool,
}

/// A byte range of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    pub offset: u64,
    pub length: u64,
}

/// The Ignition area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IgnitionArea {
    /// The ISO file holding it (as named in igninfo.json).
    pub file: String,
    pub span: Span,
}

/// One kernel-argument area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KargsArea {
    pub file: String,
    pub span: Span,
    pub pad: char,
    pub end: char,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KargsAreas {
    pub default: String,
    pub size: usize,
    pub areas: Vec<KargsArea>,
}

/// Where everything embeddable lives in one ISO: plain data, read once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub volume_id: String,
    pub image_size: u64,
    pub ignition: IgnitionArea,
    pub kargs: Option<KargsAreas>,
    pub features: Features,
}

/// "not a CoreOS live ISO": the volume is fine but has no embed areas.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not a CoreOS live ISO: it has neither /coreos/igninfo.json nor /images/ignition.img (no Ignition embed area)")]
pub struct NoEmbedArea(pub String);

fn read_json<R: Read + Seek, T: for<'de> Deserialize<'de>>(
    iso: &mut IsoFs<R>,
    path: &str,
) -> Result<Option<T>> {
    let Some(entry) = iso.lookup(path)? else {
        return Ok(None);
    };
    let data = iso.read(&entry, MAX_JSON)?;
    // the ISO build pads rewritten JSON files with spaces
    let v = serde_json::from_slice(&data).with_context(|| format!("parsing /{path} in the ISO"))?;
    Ok(Some(v))
}

impl Layout {
    /// Locate the embed areas. `name` is used in messages (the ISO's path).
    pub fn locate<R: Read + Seek>(iso: &mut IsoFs<R>, name: &str) -> Result<Self> {
        let igninfo = match read_json::<_, IgnInfo>(iso, IGNINFO_PATH)? {
            Some(info) => info,
            None => IgnInfo {
                file: DEFAULT_IGNITION_IMG.into(),
                offset: None,
                length: None,
            },
        };
        let file = iso
            .lookup(&igninfo.file)?
            .filter(|e| !e.is_dir)
            .ok_or_else(|| NoEmbedArea(name.to_string()))?;
        let offset = igninfo.offset.unwrap_or(0);
        ensure!(
            offset <= file.length,
            "igninfo.json offset {offset} is beyond the end of {} ({} bytes)",
            igninfo.file,
            file.length
        );
        let length = igninfo.length.unwrap_or(file.length - offset);
        ensure!(
            offset
                .checked_add(length)
                .is_some_and(|end| end <= file.length),
            "igninfo.json area {offset}+{length} exceeds {} ({} bytes)",
            igninfo.file,
            file.length
        );
        ensure!(
            length > 0,
            "the Ignition embed area in {} is empty",
            igninfo.file
        );
        let ignition = IgnitionArea {
            file: igninfo.file,
            span: Span {
                offset: file.offset + offset,
                length,
            },
        };

        let kargs = match read_json::<_, KargsInfo>(iso, KARGS_PATH)? {
            None => None,
            Some(info) => {
                ensure!(
                    info.size <= MAX_KARGS_AREA,
                    "kargs.json area size {} is larger than {MAX_KARGS_AREA}",
                    info.size
                );
                ensure!(
                    info.default.len() < info.size,
                    "kargs.json default kargs ({} bytes) do not fit its area size {}",
                    info.default.len(),
                    info.size
                );
                ensure!(!info.files.is_empty(), "kargs.json lists no files");
                let mut areas = Vec::new();
                for f in &info.files {
                    let entry = iso
                        .lookup(&f.path)?
                        .filter(|e| !e.is_dir)
                        .with_context(|| {
                            format!("kargs.json names {} but the ISO has no such file", f.path)
                        })?;
                    ensure!(
                        f.offset
                            .checked_add(info.size as u64)
                            .is_some_and(|end| end <= entry.length),
                        "kargs area {}+{} exceeds {} ({} bytes)",
                        f.offset,
                        info.size,
                        f.path,
                        entry.length
                    );
                    areas.push(KargsArea {
                        file: f.path.clone(),
                        span: Span {
                            offset: entry.offset + f.offset,
                            length: info.size as u64,
                        },
                        pad: f.pad.unwrap_or('#'),
                        end: f.end.unwrap_or('\n'),
                    });
                }
                areas.sort_by_key(|a| a.span.offset);
                Some(KargsAreas {
                    default: info.default,
                    size: info.size,
                    areas,
                })
            }
        };
        let features = read_json::<_, Features>(iso, FEATURES_PATH)?.unwrap_or_default();
        Ok(Layout {
            volume_id: iso.volume().volume_id.clone(),
            image_size: iso.file_len(),
            ignition,
            kargs,
            features,
        })
    }
}

/// The kernel arguments held in one area: the text before `end`, trailing padding removed.
pub fn parse_kargs_area(bytes: &[u8], pad: char, end: char) -> Result<String> {
    let s = std::str::from_utf8(bytes).context("invalid UTF-8 in kernel argument area")?;
    Ok(s.trim_end_matches(pad)
        .trim_end_matches(end)
        .trim()
        .to_string())
}

/// Kernel arguments too long for their area.
#[derive(Debug, thiserror::Error)]
#[error("kernel arguments need {need} bytes but the ISO's kargs area holds {size}: drop --live-karg-append arguments, or pass them to the installed system with --dest-karg-append instead")]
pub struct KargsTooLong {
    pub need: usize,
    pub size: usize,
}

/// The bytes to write into an area: `kargs + end`, padded with `pad` to `size`.
pub fn format_kargs_area(kargs: &str, size: usize, pad: char, end: char) -> Result<Vec<u8>> {
    let kargs = kargs.trim();
    ensure!(
        pad.is_ascii() && end.is_ascii(),
        "kargs.json pad/end must be ASCII characters"
    );
    ensure!(
        !kargs.contains('\n') && !kargs.contains(end),
        "kernel arguments must be a single line"
    );
    let need = kargs.len() + 1;
    if need > size {
        bail!(KargsTooLong { need, size });
    }
    let mut out = vec![pad as u8; size];
    out[..kargs.len()].copy_from_slice(kargs.as_bytes());
    out[kargs.len()] = end as u8;
    Ok(out)
}

/// coreos-installer's edit rule for `--live-karg-append/--delete`: delete each exact
/// space-delimited argument, then append.
pub fn edit_kargs(current: &str, append: &[String], delete: &[String]) -> String {
    let mut s = format!(" {current} ");
    for d in delete {
        s = s.replace(&format!(" {} ", d.trim()), " ");
    }
    for a in append {
        s.push_str(a.trim());
        s.push(' ');
    }
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kargs_area_roundtrip() {
        let cases: &[(&str, usize, char, char, &[u8])] = &[
            ("a b", 8, '#', '\n', b"a b\n####"),
            ("  x=1  ", 4, '#', '\n', b"x=1\n"),
            ("", 3, '#', '\n', b"\n##"),
            ("quiet", 8, ' ', '\n', b"quiet\n  "),
        ];
        for (kargs, size, pad, end, want) in cases {
            let area = format_kargs_area(kargs, *size, *pad, *end).unwrap();
            assert_eq!(&area, want);
            assert_eq!(parse_kargs_area(&area, *pad, *end).unwrap(), kargs.trim());
        }
    }

    #[test]
    fn kargs_too_long_names_both_sizes() {
        let err = format_kargs_area("abcd", 4, '#', '\n').unwrap_err();
        let e = err.downcast_ref::<KargsTooLong>().unwrap();
        assert_eq!((e.need, e.size), (5, 4));
        assert!(err
            .to_string()
            .starts_with("kernel arguments need 5 bytes but the ISO's kargs area holds 4"));
        assert!(format_kargs_area("a\nb", 10, '#', '\n').is_err());
    }

    #[test]
    fn karg_edits() {
        let cases: &[(&str, &[&str], &[&str], &str)] = &[
            ("foo bar foobar", &[], &["foo"], "bar foobar"),
            ("foo bar foobar", &[], &["bar"], "foo foobar"),
            (
                "foo bar foobar",
                &["x=1", " y "],
                &["foobar"],
                "foo bar x=1 y",
            ),
            ("a=1 b", &["a=2"], &["a=1"], "b a=2"),
            ("", &["quiet"], &[], "quiet"),
        ];
        for (cur, app, del, want) in cases {
            let app: Vec<String> = app.iter().map(|s| s.to_string()).collect();
            let del: Vec<String> = del.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                edit_kargs(cur, &app, &del),
                *want,
                "{cur:?} +{app:?} -{del:?}"
            );
        }
    }

    #[test]
    fn features_default_to_unsupported() {
        let f: Features =
            serde_json::from_str(r#"{"installer-config": true, "unknown": 1}"#).unwrap();
        assert_eq!(
            f,
            Features {
                installer_config: true,
                ..Default::default()
            }
        );
        let f: Features =
            serde_json::from_str(r#"{"installer-config": true, "installer-config-directives": {"console": true}, "live-initrd-network": true}"#).unwrap();
        assert!(
            f.installer_config && f.installer_config_directives.console && f.live_initrd_network
        );
    }
}
