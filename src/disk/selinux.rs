//! SELinux labels for what the disk build writes outside ostree's content-addressed
//! objects, from the *image's* policy, on a build host that runs without SELinux.
//!
//! ostree labels the deployment from the image's policy only when the build host itself
//! runs SELinux (`is_selinux_enabled()`), so on our hosts `/boot` (kernel, initramfs, BLS
//! entries, GRUB and bootupd files), the physical root's own directories and files
//! (`/ostree`, `/ostree/deploy/<stateroot>/…`, the `.origin`, the aleph), the
//! deployment's merged `/etc` and the stateroot's `/var` would come out unlabelled, and
//! an enforcing RHCOS/FCOS cannot use them. This is what osbuild's
//! `org.osbuild.ostree.selinux` stage relabels for CoreOS builds, with the same mapping
//! from where a file is on the disk to the path the policy sees:
//!
//! | on the physical root | labelled as | root prefix |
//! |---|---|---|
//! | `/boot/…` | `/boot/…` | physical root |
//! | the physical root itself, `/ostree/…` (not the objects, not the deployments' trees, not the stateroot's `/var`), the aleph | the same path | physical root |
//! | `/ostree/deploy/<s>/deploy/<commit>.<n>/etc/…` | `/etc/…` | the deployment |
//! | `/ostree/deploy/<s>/var/…` | `/var/…` | the stateroot |
//!
//! The policy is the one the image's `/etc/selinux/config` selects (`SELINUXTYPE`, with
//! `SELINUX` enforcing or permissive, as osbuild reads it), its
//! `contexts/files/file_contexts`. An image without one stays unlabelled.
//!
//! **Why `setfiles` and not a matcher of our own.** `file_contexts` is not a simple
//! table: PCRE regular expressions ordered by a specificity rule (last exact match wins,
//! then longest fixed prefix), file-type qualifiers, `<<none>>`, the `.homedirs` and
//! `.local` files and the `.subs`/`.subs_dist` path equivalences (`/sysroot/ostree` is
//! `/ostree` to the policy through them). libselinux's `selabel` implements exactly that,
//! and it is what `restorecon` uses on the node: running `setfiles` (Debian's
//! `policycoreutils`, the tool osbuild runs) gives the labels the node itself would give,
//! including the cases a re-implementation would get subtly wrong. The host's `setfiles`
//! is used rather than the image's: the image's binary would need its own libraries run
//! in a chroot of a foreign distribution, and `setfiles` only reads the spec files. The
//! compiled `file_contexts.bin` is not used (its regex format is tied to the PCRE2 build
//! of the libselinux that wrote it): the text files are staged on their own and read by
//! the host's libselinux. ostree's objects are never touched: in a bare repo the
//! `security.selinux` xattr is part of the object's checksum, and the deployments'
//! trees are hard links to those objects.
//!
//! `setfiles` runs inside the deploy helper's mount namespace (`nsenter --mount`), where
//! the root filesystem is mounted and the staging `/boot` is bound onto its `/boot`, so
//! its paths are plain paths and not `/proc/<pid>/root/…` magic links. The physical root
//! is labelled through a second, non-recursive bind of the root filesystem, where the
//! root's own `/boot` mount point (what `/sysroot/boot` is on the node) is not hidden. The ESP is vfat
//! and has no xattrs; `mke2fs -d` copies the `/boot` labels into the ext4 image.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The policy an image selects, as found in its deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `SELINUXTYPE`, e.g. `targeted` (RHCOS/FCOS) or `default` (Debian).
    pub name: String,
    /// The policy's `contexts/files/file_contexts` (host path).
    pub file_contexts: PathBuf,
}

/// The policy type `/etc/selinux/config` selects: `SELINUXTYPE` when `SELINUX` is
/// `enforcing` or `permissive`; none when SELinux is disabled or the type is missing.
pub fn parse_config(text: &str) -> Option<String> {
    let mut mode = None;
    let mut kind = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim();
        match k.trim() {
            "SELINUX" => mode = Some(v.to_string()),
            "SELINUXTYPE" => kind = Some(v.to_string()),
            _ => {}
        }
    }
    match mode.as_deref() {
        Some("enforcing" | "permissive") => kind.filter(|k| !k.is_empty()),
        _ => None,
    }
}

/// The policy of the deployment at `deployment` (host path): `/etc/selinux/config`, else
/// `/usr/etc/selinux/config` (the image's defaults before ostree's `/etc` merge).
pub fn find_policy(deployment: &Path) -> Result<Option<Policy>> {
    for dir in ["etc/selinux", "usr/etc/selinux"] {
        let dir = deployment.join(dir);
        let config = dir.join("config");
        let text = match std::fs::read_to_string(&config) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", config.display())),
        };
        let Some(name) = parse_config(&text) else {
            return Ok(None);
        };
        if name.contains('/') || name == ".." || name == "." {
            bail!(
                "{}: SELINUXTYPE={name} is not a policy name",
                config.display()
            );
        }
        let file_contexts = dir.join(&name).join("contexts/files/file_contexts");
        if !file_contexts.is_file() {
            bail!(
                "the image's {} selects the SELinux policy {name}, but the image has no {}",
                config.display(),
                file_contexts.display()
            );
        }
        return Ok(Some(Policy {
            name,
            file_contexts,
        }));
    }
    Ok(None)
}

/// One `setfiles` run: everything under `target` except `exclude`, labelled as the path
/// it has below `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub root: PathBuf,
    pub target: PathBuf,
    pub exclude: Vec<PathBuf>,
}

/// What to label in the physical root mounted at `sysroot` (with the staging `/boot`
/// bound onto its `/boot`), holding `deployments` (relative to it) of `stateroot`. `bare`
/// is a second, non-recursive bind of the root filesystem: there the root's own `/boot`
/// directory (the mount point, hidden under the bind at `sysroot`) is visible and gets
/// labelled with the rest of the physical root. Pure: the table in the module doc.
pub fn plan(sysroot: &Path, bare: &Path, stateroot: &str, deployments: &[PathBuf]) -> Vec<Run> {
    let state = |root: &Path| root.join("ostree/deploy").join(stateroot);
    let mut physical_exclude = vec![bare.join("ostree/repo/objects"), state(bare).join("var")];
    physical_exclude.extend(deployments.iter().map(|d| bare.join(d)));
    let mut runs = vec![
        Run {
            root: sysroot.to_path_buf(),
            target: sysroot.join("boot"),
            exclude: vec![],
        },
        Run {
            root: bare.to_path_buf(),
            target: bare.to_path_buf(),
            exclude: physical_exclude,
        },
    ];
    runs.extend(deployments.iter().map(|d| Run {
        root: sysroot.join(d),
        target: sysroot.join(d).join("etc"),
        exclude: vec![],
    }));
    runs.push(Run {
        root: state(sysroot),
        target: state(sysroot).join("var"),
        exclude: vec![],
    });
    runs
}

/// The spec files `selabel` reads beside `file_contexts`, text only.
const SPEC_SUFFIXES: &[&str] = &["", ".homedirs", ".local", ".subs", ".subs_dist"];

/// Copy the policy's text spec files into `dir` (without the compiled `.bin` files, see
/// the module doc); returns the path to pass to `setfiles`.
pub fn stage_spec(policy: &Policy, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let staged = dir.join("file_contexts");
    for suffix in SPEC_SUFFIXES {
        let mut src = policy.file_contexts.clone().into_os_string();
        src.push(suffix);
        let src = PathBuf::from(src);
        let mut dest = staged.clone().into_os_string();
        dest.push(suffix);
        match std::fs::copy(&src, &dest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !suffix.is_empty() => {}
            Err(e) => {
                return Err(e).with_context(|| format!("copying {}", src.display()));
            }
        }
    }
    Ok(staged)
}

/// `setfiles` for each run, inside the mount namespace of process `pid` (the deploy
/// helper), with `sysroot` bound (non-recursively) on `bare` meanwhile, as [`plan`]
/// expects. `host_view` maps a path in that namespace to one this process can test.
pub fn label(
    runs: &[Run],
    spec: &Path,
    pid: u32,
    sysroot: &Path,
    bare: &Path,
    host_view: impl Fn(&Path) -> PathBuf,
) -> Result<()> {
    cmd::require("setfiles", "policycoreutils")?;
    cmd::require("nsenter", "util-linux")?;
    let inside = |program: &str| {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .args(["--", program]);
        c
    };
    std::fs::create_dir_all(bare).with_context(|| format!("creating {}", bare.display()))?;
    cmd::run(inside("mount").arg("--bind").arg(sysroot).arg(bare))
        .context("binding the root filesystem without its /boot for labelling")?;
    let result = runs.iter().try_for_each(|r| {
        if !host_view(&r.target).exists() {
            return Ok(());
        }
        let mut c = inside("setfiles");
        c.args(["-F", "-r"]).arg(&r.root);
        // setfiles refuses an exclusion that does not exist.
        for e in r.exclude.iter().filter(|e| host_view(e).exists()) {
            c.arg("-e").arg(e);
        }
        c.arg(spec).arg(&r.target);
        cmd::run(&mut c).map(drop).with_context(|| {
            format!(
                "labelling {} for SELinux from the image's policy",
                r.target.display()
            )
        })
    });
    // The helper's unmount at the end must find only its own mounts.
    let unbound = cmd::run(inside("umount").arg(bare)).map(drop);
    result.and(unbound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_selects_a_policy_only_when_selinux_is_on() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
                Some("targeted"),
            ),
            (
                "# comment\n SELINUX = permissive \nSELINUXTYPE=default",
                Some("default"),
            ),
            ("SELINUX=\"enforcing\"\nSELINUXTYPE=\"mls\"\n", Some("mls")),
            ("SELINUX=disabled\nSELINUXTYPE=targeted\n", None),
            ("SELINUXTYPE=targeted\n", None),
            ("SELINUX=enforcing\n", None),
            ("SELINUX=enforcing\nSELINUXTYPE=\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_config(text).as_deref(), *want, "{text:?}");
        }
    }

    #[test]
    fn plan_maps_each_tree_to_the_policy_path_it_has() {
        let dep = PathBuf::from("ostree/deploy/rhcos/deploy/abc.0");
        let runs = plan(
            Path::new("/m"),
            Path::new("/b"),
            "rhcos",
            std::slice::from_ref(&dep),
        );
        let p = PathBuf::from;
        assert_eq!(
            runs,
            vec![
                Run {
                    root: p("/m"),
                    target: p("/m/boot"),
                    exclude: vec![]
                },
                Run {
                    root: p("/b"),
                    target: p("/b"),
                    exclude: vec![
                        p("/b/ostree/repo/objects"),
                        p("/b/ostree/deploy/rhcos/var"),
                        p("/b/ostree/deploy/rhcos/deploy/abc.0"),
                    ]
                },
                Run {
                    root: p("/m/ostree/deploy/rhcos/deploy/abc.0"),
                    target: p("/m/ostree/deploy/rhcos/deploy/abc.0/etc"),
                    exclude: vec![]
                },
                Run {
                    root: p("/m/ostree/deploy/rhcos"),
                    target: p("/m/ostree/deploy/rhcos/var"),
                    exclude: vec![]
                },
            ]
        );
    }

    #[test]
    fn policy_is_found_in_etc_then_usr_etc_and_a_missing_one_is_named() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        assert_eq!(find_policy(d).unwrap(), None, "no config: unlabelled");
        let write = |rel: &str, text: &str| {
            let p = d.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write(
            "usr/etc/selinux/config",
            "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
        );
        let e = find_policy(d).unwrap_err().to_string();
        assert!(
            e.contains("selects the SELinux policy targeted")
                && e.contains("usr/etc/selinux/targeted/contexts/files/file_contexts"),
            "{e}"
        );
        write("usr/etc/selinux/targeted/contexts/files/file_contexts", "");
        assert_eq!(find_policy(d).unwrap().unwrap().name, "targeted");
        // The deployment's merged /etc wins; disabled there means unlabelled.
        write("etc/selinux/config", "SELINUX=disabled\n");
        assert_eq!(find_policy(d).unwrap(), None);
        write(
            "etc/selinux/config",
            "SELINUX=permissive\nSELINUXTYPE=../x\n",
        );
        assert!(find_policy(d).is_err());
    }

    #[test]
    fn staged_spec_has_the_text_files_and_no_compiled_ones() {
        let t = tempfile::tempdir().unwrap();
        let files = t.path().join("p/contexts/files");
        std::fs::create_dir_all(&files).unwrap();
        for n in [
            "file_contexts",
            "file_contexts.bin",
            "file_contexts.homedirs",
            "file_contexts.subs_dist",
        ] {
            std::fs::write(files.join(n), n).unwrap();
        }
        let policy = Policy {
            name: "p".into(),
            file_contexts: files.join("file_contexts"),
        };
        let spec = stage_spec(&policy, &t.path().join("s")).unwrap();
        let mut got: Vec<String> = std::fs::read_dir(t.path().join("s"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "file_contexts",
                "file_contexts.homedirs",
                "file_contexts.subs_dist"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(spec).unwrap(),
            "file_contexts",
            "content copied"
        );
    }
}
