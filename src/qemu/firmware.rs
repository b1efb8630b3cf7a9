//! Locating OVMF (Debian package `ovmf`). The CODE image is attached read-only; every run
//! gets its own copy of the VARS template so runs never share or leak NVRAM state.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The pair of pflash images UEFI boots need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovmf {
    pub code: PathBuf,
    /// Template only: never attach it directly.
    pub vars_template: PathBuf,
}

/// Known (CODE, VARS) pairs, best first: Debian 12's 4 MiB non-secure-boot build, then
/// the legacy 2 MiB one.
const CANDIDATES: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
];

/// `$LAYERBOOT_OVMF_CODE` + `$LAYERBOOT_OVMF_VARS` if both are set, else the first
/// installed candidate.
pub fn locate() -> Result<Ovmf> {
    if let (Some(code), Some(vars)) = (
        std::env::var_os("LAYERBOOT_OVMF_CODE"),
        std::env::var_os("LAYERBOOT_OVMF_VARS"),
    ) {
        let o = Ovmf {
            code: code.into(),
            vars_template: vars.into(),
        };
        for p in [&o.code, &o.vars_template] {
            if !p.is_file() {
                bail!(
                    "OVMF image {} (from $LAYERBOOT_OVMF_CODE/$LAYERBOOT_OVMF_VARS) does not exist",
                    p.display()
                );
            }
        }
        return Ok(o);
    }
    locate_in(CANDIDATES.iter().map(|(c, v)| (Path::new(c), Path::new(v))))
}

fn locate_in<'a>(candidates: impl Iterator<Item = (&'a Path, &'a Path)>) -> Result<Ovmf> {
    for (code, vars) in candidates {
        if code.is_file() && vars.is_file() {
            return Ok(Ovmf {
                code: code.to_path_buf(),
                vars_template: vars.to_path_buf(),
            });
        }
    }
    bail!("UEFI firmware not found (looked for /usr/share/OVMF/OVMF_CODE_4M.fd): install the Debian package 'ovmf'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_complete_pair_wins_and_absence_names_the_package() {
        let d = tempfile::tempdir().unwrap();
        let (c1, v1, c2, v2) = (
            d.path().join("c1"),
            d.path().join("v1"),
            d.path().join("c2"),
            d.path().join("v2"),
        );
        std::fs::write(&c1, "").unwrap();
        std::fs::write(&c2, "").unwrap();
        std::fs::write(&v2, "").unwrap();
        let got =
            locate_in([(c1.as_path(), v1.as_path()), (c2.as_path(), v2.as_path())].into_iter())
                .unwrap();
        assert_eq!(
            got,
            Ovmf {
                code: c2.clone(),
                vars_template: v2.clone()
            }
        );
        let err = locate_in([(c1.as_path(), v1.as_path())].into_iter())
            .unwrap_err()
            .to_string();
        assert!(err.contains("'ovmf'"), "{err}");
    }
}
