//! The features the disk's filesystems get: the image's, not the build host's. CoreOS
//! makes its disks with the image's own mkfs tools (coreos-assembler runs osbuild's mkfs
//! stages in a buildroot deployed from the image, `buildroot: "name:deployed-tree"`, for
//! the tight coupling of tools like mkfs.xfs with the OS), so a build host whose tools
//! are newer or older than the image's makes nothing its kernel does not expect.
//!
//! - ext4 (`/boot`): mke2fs takes its feature defaults from `mke2fs.conf`; the host's
//!   mke2fs is run with the image's ([`MKE2FS_CONFIG_IN_IMAGE`], via `MKE2FS_CONFIG`).
//! - XFS (the root): mkfs.xfs's defaults are compiled in, and the root filesystem exists
//!   before the deploy writes the image into it, so the image's mkfs.xfs can be asked
//!   only after that deploy. Both mkfs.xfs are then run dry (`-N`) with the same
//!   arguments and their feature flags compared ([`xfs_feature_options`]); where they
//!   differ the build is redone once with the image's values set explicitly.
//! - vfat (the ESP): the fatfs crate with CoreOS's volume id; FAT has no features that
//!   drift between tool versions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::bootimage::Filesystem;

/// The image's mke2fs configuration, relative to the deployment root.
pub const MKE2FS_CONFIG_IN_IMAGE: &str = "etc/mke2fs.conf";

/// Where an image keeps mkfs.xfs (merged /usr first), relative to its root.
pub const MKFS_XFS_IN_IMAGE: &[&str] = &["usr/sbin/mkfs.xfs", "usr/bin/mkfs.xfs", "sbin/mkfs.xfs"];

/// How this build makes filesystems.
#[derive(Debug, Clone, Default)]
pub struct MkfsSettings {
    /// CoreOS images get CoreOS's options ([`super::coreos::mkfs_options`]).
    pub coreos: bool,
    /// The image's `mke2fs.conf`, copied out of the deployment.
    pub mke2fs_config: Option<PathBuf>,
    /// XFS feature options that make the host's mkfs.xfs make what the image's makes.
    pub xfs_features: Vec<String>,
}

impl MkfsSettings {
    /// The settings of a build that knows `learned` of the image, its mke2fs.conf (if it
    /// has one) staged in `st`.
    pub fn new(coreos: bool, learned: &Learned, st: &Path) -> Result<MkfsSettings> {
        let mke2fs_config = match &learned.mke2fs_config {
            Some(conf) => {
                let path = st.join("image-mke2fs.conf");
                std::fs::write(&path, conf)
                    .with_context(|| format!("writing {}", path.display()))?;
                Some(path)
            }
            None => None,
        };
        Ok(MkfsSettings {
            coreos,
            mke2fs_config,
            xfs_features: learned.xfs_features.clone(),
        })
    }

    /// The extra mkfs arguments for `fs`.
    pub fn options(&self, fs: Filesystem) -> Vec<String> {
        let mut o: Vec<String> = if self.coreos {
            super::coreos::mkfs_options(fs)
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            Vec::new()
        };
        if fs == Filesystem::Xfs {
            o.extend(self.xfs_features.iter().cloned());
        }
        o
    }
}

/// The XFS features `mkfs.xfs -N` reports that decide what a kernel can mount, with the
/// option that sets each: (reported key, option section, suboption).
const XFS_FEATURES: &[(&str, &str, &str)] = &[
    ("isize", "-i", "size"),
    ("crc", "-m", "crc"),
    ("finobt", "-m", "finobt"),
    ("rmapbt", "-m", "rmapbt"),
    ("reflink", "-m", "reflink"),
    ("bigtime", "-m", "bigtime"),
    ("inobtcount", "-m", "inobtcount"),
    ("metadir", "-m", "metadir"),
    ("sparse", "-i", "sparse"),
    ("nrext64", "-i", "nrext64"),
    ("exchange", "-i", "exchange"),
    ("ftype", "-n", "ftype"),
    ("parent", "-n", "parent"),
    ("lazy-count", "-l", "lazy-count"),
];

/// The feature flags in `mkfs.xfs -N` (or `xfs_info`) output: `key=value` tokens whose
/// key is one of [`XFS_FEATURES`] (pure).
pub fn parse_xfs_features(report: &str) -> BTreeMap<String, String> {
    report
        .split_whitespace()
        .filter_map(|token| token.trim_end_matches(',').split_once('='))
        .filter(|(k, _)| XFS_FEATURES.iter().any(|(key, _, _)| key == k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The options that make the host's mkfs.xfs (which reported `host`) make the features
/// the image's (which reported `image`) makes; empty when they already agree (pure). A
/// feature one tool does not report is one it does not know, so it makes it off. Fails
/// when the image's mkfs.xfs turns on a feature the host's does not know.
pub fn xfs_feature_options(
    host: &BTreeMap<String, String>,
    image: &BTreeMap<String, String>,
) -> Result<Vec<String>> {
    let mut options = Vec::new();
    for (key, section, sub) in XFS_FEATURES {
        let h = host.get(*key).map(String::as_str);
        let i = image.get(*key).map(String::as_str);
        if h.unwrap_or("0") == i.unwrap_or("0") {
            continue;
        }
        let Some(h) = h else {
            bail!(
                "the image's mkfs.xfs makes XFS with {key}={}, which the build host's mkfs.xfs does not know: update the host's xfsprogs",
                i.unwrap_or("0")
            );
        };
        let value = i.unwrap_or("0");
        log::debug!("XFS {key}: the host's mkfs.xfs makes {h}, the image's {value}");
        options.push(section.to_string());
        options.push(format!("{sub}={value}"));
    }
    Ok(options)
}

/// "key=host → image" for each feature the two reports differ in, for messages (pure).
pub fn describe_xfs_differences(
    host: &BTreeMap<String, String>,
    image: &BTreeMap<String, String>,
) -> String {
    XFS_FEATURES
        .iter()
        .filter_map(|(key, _, _)| {
            let h = host.get(*key).map(String::as_str).unwrap_or("0");
            let i = image.get(*key).map(String::as_str).unwrap_or("0");
            (h != i).then(|| format!("{key} {h} → {i}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a build has learned of the image's mkfs defaults, carried into a redone build and
/// into the further disks' builds (metal4k for the live ISO).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    /// [`MkfsSettings::xfs_features`].
    pub xfs_features: Vec<String>,
    /// The image's `mke2fs.conf`.
    pub mke2fs_config: Option<Vec<u8>>,
}

/// The root filesystem was made otherwise than the image's tools make it: the build is
/// redone with `learned` (its caller branches on this).
#[derive(Debug, thiserror::Error)]
#[error("the root filesystem was made with the build host's mkfs defaults, which differ from the image's ({differences})")]
pub struct RootMkfsDiffers {
    pub differences: String,
    pub learned: Learned,
}

/// The root filesystem as it was made: its kind and mkfs settings.
pub struct RootAsMade<'a> {
    pub fs: Filesystem,
    pub spec: &'a super::fs::FsSpec<'a>,
    /// What the build used.
    pub used: &'a Learned,
}

/// Learn the image's mkfs defaults from its deployment (`image`, runnable through
/// `exec`), with `scratch` a new directory for the dry run. Fails with
/// [`RootMkfsDiffers`] when the root was made otherwise than the image's tools make it.
pub fn learn_from_image(
    image: &crate::io::RootedDir,
    exec: &super::image_exec::ImageExec,
    scratch: &Path,
    root: &RootAsMade,
) -> Result<Learned> {
    let mke2fs_config = image.read_opt(MKE2FS_CONFIG_IN_IMAGE)?;
    let mut learned = Learned {
        xfs_features: root.used.xfs_features.clone(),
        mke2fs_config,
    };
    match root.fs {
        Filesystem::Xfs => {
            let Some(tool) = super::image_exec::find_tool(image, MKFS_XFS_IN_IMAGE) else {
                log::info!("the image has no mkfs.xfs it could run here: the root's XFS features are the build host's mkfs.xfs defaults");
                return Ok(learned);
            };
            std::fs::create_dir_all(scratch)
                .with_context(|| format!("creating {}", scratch.display()))?;
            let probe_name = "xfs-probe.img";
            let probe = scratch.join(probe_name);
            std::fs::File::create(&probe)
                .and_then(|f| f.set_len(root.spec.size))
                .with_context(|| format!("creating {}", probe.display()))?;
            let args = super::fs::xfs_args(root.spec);
            let host = dry_run_report(
                Command::new("mkfs.xfs"),
                &args,
                &probe,
                "the build host's mkfs.xfs",
            )?;
            let in_image = Path::new(super::image_exec::SCRATCH_IN_IMAGE).join(probe_name);
            let image_report = dry_run_report(
                exec.command(&format!("/{tool}"), scratch),
                &args,
                &in_image,
                &format!("the image's /{tool}"),
            )?;
            std::fs::remove_dir_all(scratch)
                .with_context(|| format!("removing {}", scratch.display()))?;
            let (host, image_features) =
                (parse_xfs_features(&host), parse_xfs_features(&image_report));
            if image_features.is_empty() {
                bail!("the image's /{tool} -N reported no XFS features: {image_report}");
            }
            let extra = xfs_feature_options(&host, &image_features)?;
            if extra.is_empty() {
                log::info!("root XFS features as the image's /{tool} makes them");
                return Ok(learned);
            }
            let differences = describe_xfs_differences(&host, &image_features);
            if !root.used.xfs_features.is_empty() {
                bail!("the root filesystem still differs from what the image's /{tool} makes after setting its features explicitly ({differences})");
            }
            learned.xfs_features = extra;
            Err(RootMkfsDiffers {
                differences: format!("XFS: {differences}"),
                learned,
            }
            .into())
        }
        Filesystem::Ext4 => {
            let made_with = match &root.used.mke2fs_config {
                Some(c) => Some(c.clone()),
                None => host_mke2fs_config(),
            };
            match &learned.mke2fs_config {
                Some(conf) if Some(conf) != made_with.as_ref() => {
                    if root.used.mke2fs_config.is_some() {
                        bail!("the image's mke2fs.conf changed during the build");
                    }
                    Err(RootMkfsDiffers {
                        differences: format!(
                            "ext4: the image's /{MKE2FS_CONFIG_IN_IMAGE} is not the build host's"
                        ),
                        learned,
                    }
                    .into())
                }
                _ => Ok(learned),
            }
        }
        Filesystem::Vfat => Ok(learned),
    }
}

/// The mke2fs.conf the build host's mke2fs reads when not given one.
fn host_mke2fs_config() -> Option<Vec<u8>> {
    let path = std::env::var_os("MKE2FS_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/mke2fs.conf"));
    std::fs::read(path).ok()
}

/// Run `mkfs.xfs -N` (nothing written) through `command` with `args` and `target`; its
/// report. `what` names the tool in errors.
pub fn dry_run_report(
    mut command: Command,
    args: &[String],
    target: &Path,
    what: &str,
) -> Result<String> {
    command.arg("-N").args(args).arg(target);
    crate::cmd::run_stdout(&mut command)
        .with_context(|| format!("asking {what} which XFS features it makes (mkfs.xfs -N)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12's mkfs.xfs 6.1 (also the example image's).
    const XFSPROGS_6_1: &str = "\
meta-data=probe.img              isize=512    agcount=2, agsize=393216 blks
         =                       sectsz=512   attr=2, projid32bit=1
         =                       crc=1        finobt=1, sparse=1, rmapbt=0
         =                       reflink=1    bigtime=1 inobtcount=1 nrext64=0
data     =                       bsize=4096   blocks=786432, imaxpct=25
         =                       sunit=0      swidth=0 blks
naming   =version 2              bsize=4096   ascii-ci=0, ftype=1
log      =internal log           bsize=4096   blocks=16384, version=2
         =                       sectsz=512   sunit=0 blks, lazy-count=1
realtime =none                   extsz=4096   blocks=0, rtextents=0
";

    /// The shape of an older mkfs.xfs's report (xfsprogs 5.0, RHEL 8): no bigtime,
    /// inobtcount or nrext64 line entries, since it knows none of them.
    const XFSPROGS_5_0: &str = "\
meta-data=probe.img              isize=512    agcount=2, agsize=393216 blks
         =                       sectsz=512   attr=2, projid32bit=1
         =                       crc=1        finobt=1, sparse=1, rmapbt=0
         =                       reflink=1
data     =                       bsize=4096   blocks=786432, imaxpct=25
         =                       sunit=0      swidth=0 blks
naming   =version 2              bsize=4096   ascii-ci=0, ftype=1
log      =internal log           bsize=4096   blocks=2560, version=2
         =                       sectsz=512   sunit=0 blks, lazy-count=1
realtime =none                   extsz=4096   blocks=0, rtextents=0
";

    #[test]
    fn features_are_read_from_the_report() {
        let f = parse_xfs_features(XFSPROGS_6_1);
        let want: BTreeMap<String, String> = [
            ("isize", "512"),
            ("crc", "1"),
            ("finobt", "1"),
            ("sparse", "1"),
            ("rmapbt", "0"),
            ("reflink", "1"),
            ("bigtime", "1"),
            ("inobtcount", "1"),
            ("nrext64", "0"),
            ("ftype", "1"),
            ("lazy-count", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(f, want);
    }

    #[test]
    fn options_make_the_host_match_the_image() {
        let v61 = parse_xfs_features(XFSPROGS_6_1);
        let v50 = parse_xfs_features(XFSPROGS_5_0);
        let newer_image = v61.clone();
        let mut image_without_reflink = v61.clone();
        image_without_reflink.insert("reflink".into(), "0".into());
        let mut image_with_rmapbt = v61.clone();
        image_with_rmapbt.insert("rmapbt".into(), "1".into());
        let cases: [(
            &str,
            &BTreeMap<String, String>,
            &BTreeMap<String, String>,
            &[&str],
        ); 5] = [
            ("same tools", &v61, &v61, &[]),
            (
                "older image: what it does not know is off",
                &v61,
                &v50,
                &["-m", "bigtime=0", "-m", "inobtcount=0"],
            ),
            (
                "image turns a feature off",
                &v61,
                &image_without_reflink,
                &["-m", "reflink=0"],
            ),
            (
                "image turns a feature on",
                &v61,
                &image_with_rmapbt,
                &["-m", "rmapbt=1"],
            ),
            (
                "older host, newer image with the new features off: nothing to set",
                &v50,
                &{
                    let mut m = newer_image.clone();
                    m.insert("bigtime".into(), "0".into());
                    m.insert("inobtcount".into(), "0".into());
                    m
                },
                &[],
            ),
        ];
        for (name, host, image, want) in cases {
            assert_eq!(xfs_feature_options(host, image).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn a_feature_the_host_does_not_know_is_refused_naming_it() {
        let host = parse_xfs_features(XFSPROGS_5_0);
        let image = parse_xfs_features(XFSPROGS_6_1);
        let e = xfs_feature_options(&host, &image).unwrap_err().to_string();
        assert!(
            e.contains("bigtime=1") && e.contains("host's xfsprogs"),
            "{e}"
        );
    }

    #[test]
    fn differences_are_described_for_the_log() {
        let d = describe_xfs_differences(
            &parse_xfs_features(XFSPROGS_6_1),
            &parse_xfs_features(XFSPROGS_5_0),
        );
        assert_eq!(d, "bigtime 1 → 0, inobtcount 1 → 0");
    }

    #[test]
    fn coreos_images_get_coreos_options_and_the_image_s_xfs_features() {
        let s = MkfsSettings {
            coreos: true,
            mke2fs_config: None,
            xfs_features: vec!["-m".into(), "bigtime=0".into()],
        };
        assert_eq!(
            s.options(Filesystem::Xfs),
            ["-d", "agcount=2", "-m", "bigtime=0"]
        );
        assert_eq!(s.options(Filesystem::Ext4), ["-O", "metadata_csum_seed"]);
        assert!(MkfsSettings::default().options(Filesystem::Xfs).is_empty());
    }
}
