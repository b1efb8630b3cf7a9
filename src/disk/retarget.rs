//! One deployment, several platforms: the boot filesystem staged for the first platform,
//! changed for another the way CoreOS makes its platform images from one qemu image
//! (osbuild's `org.osbuild.coreos.platform`, formerly `gf-set-platform`): the kernel
//! arguments in the BLS entries and the GRUB console, nothing else. The root filesystem
//! is shared untouched.
//!
//! Files are rewritten in place (same inode), so the SELinux labels the build gave them
//! stay; no file is created.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::bootloader::grub::render_grub_cfg;
use super::bootloader::{read_bls_entries, GrubConfigs};
use crate::bootimage::Plan;

/// A BLS `options` value moved from one platform's kernel arguments to another's (pure):
/// every argument `from` added is taken out (once per occurrence in `from`), `to`'s go
/// first, and what ostree or the build added (`ostree=`, `$ignition_firstboot`) stays in
/// its order after them.
pub fn retarget_options(options: &str, from: &[String], to: &[String]) -> String {
    let mut remove: HashMap<&str, usize> = HashMap::new();
    for k in from {
        *remove.entry(k.as_str()).or_default() += 1;
    }
    let kept = options
        .split_whitespace()
        .filter(|t| match remove.get_mut(t) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        });
    to.iter()
        .map(String::as_str)
        .chain(kept)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A BLS entry with its `options` line retargeted (pure); other lines unchanged.
pub fn retarget_bls(text: &str, from: &[String], to: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        match line.trim_start().strip_prefix("options") {
            Some(rest) if rest.starts_with(char::is_whitespace) || rest.is_empty() => {
                out += "options ";
                out += &retarget_options(rest.trim(), from, to);
            }
            _ => out += line,
        }
        out.push('\n');
    }
    out
}

fn rewrite_in_place(path: &Path, text: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Whether `to`'s /boot differs from `from`'s at all (pure): kernel arguments, GRUB's
/// serial console, CoreOS's console commands. When not, a copy of the disk is the other
/// platform's disk byte for byte (the live ISO's osmet data then rebuilds exactly the
/// metal image published beside it).
pub fn needed(from: &Plan, to: &Plan) -> bool {
    from.kargs != to.kargs
        || from.grub_serial != to.grub_serial
        || from.console_commands != to.console_commands
}

/// Change the staged boot tree `boot` (a copy of the first platform's, labels kept) from
/// plan `from` to plan `to`. `configs`: what the bootloader step wrote there.
pub fn apply(boot: &Path, from: &Plan, to: &Plan, configs: &GrubConfigs) -> Result<()> {
    let entries_dir = boot.join("loader/entries");
    let mut options = Vec::new();
    for e in
        fs::read_dir(&entries_dir).with_context(|| format!("reading {}", entries_dir.display()))?
    {
        let p = e?.path();
        if p.extension().is_none_or(|x| x != "conf") {
            continue;
        }
        let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let new = retarget_bls(&text, &from.kargs, &to.kargs);
        let old_opts = super::bootloader::parse_bls(&text)?.options;
        let new_opts = super::bootloader::parse_bls(&new)?.options;
        options.push((old_opts, new_opts));
        rewrite_in_place(&p, &new)?;
    }
    match configs {
        GrubConfigs::Plain {
            grub_cfg,
            console_cfg,
            menu,
        } => {
            let entries = read_bls_entries(boot)?;
            rewrite_in_place(
                &boot.join(grub_cfg),
                &render_grub_cfg(&entries, to.grub_serial, console_cfg.is_some(), menu),
            )?;
            if let (Some(rel), Some(cmds)) = (console_cfg, &to.console_commands) {
                rewrite_in_place(&boot.join(rel), &super::coreos::console_cfg(cmds))?;
            }
        }
        GrubConfigs::Bootupd { files } => {
            if from.grub_serial != to.grub_serial {
                bail!(
                    "{} and {} put GRUB on different serial consoles, which this image's bootupd configuration cannot be changed for: build them in separate runs",
                    from.name,
                    to.name
                );
            }
            for rel in files {
                let p = boot.join(rel);
                let text = if rel.ends_with("console.cfg") {
                    match &to.console_commands {
                        Some(cmds) => super::coreos::console_cfg(cmds),
                        None => continue,
                    }
                } else {
                    let mut text = fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    for (old, new) in &options {
                        if !old.is_empty() {
                            text = text.replace(old.as_str(), new);
                        }
                    }
                    text
                };
                rewrite_in_place(&p, &text)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn metal_and_live_share_a_boot_tree_and_qemu_does_not() {
        use crate::bootimage::{plan::resolve, Catalog, PlanOptions};
        let cat = Catalog::shipped().unwrap();
        let plan = |name: &str| {
            resolve(
                name,
                cat.get(name).unwrap(),
                &PlanOptions {
                    size: Some(10 << 30),
                    ..Default::default()
                },
            )
            .unwrap()
        };
        assert!(!needed(&plan("metal"), &plan("live")));
        assert!(needed(&plan("metal"), &plan("qemu")));
        assert!(needed(&plan("metal"), &plan("openstack")));
    }

    #[test]
    fn options_move_between_platforms() {
        for (options, from, to, want) in [
            (
                "rw console=tty0 console=ttyS0,115200n8 ignition.platform.id=qemu ostree=/ostree/boot.1/x/y/0",
                "rw console=tty0 console=ttyS0,115200n8 ignition.platform.id=qemu",
                "rw console=ttyS0,115200n8 console=tty0 ignition.platform.id=openstack",
                "rw console=ttyS0,115200n8 console=tty0 ignition.platform.id=openstack ostree=/ostree/boot.1/x/y/0",
            ),
            (
                "$ignition_firstboot rw ignition.platform.id=metal ostree=/o quiet",
                "rw ignition.platform.id=metal",
                "rw console=tty0 ignition.platform.id=azure",
                "rw console=tty0 ignition.platform.id=azure $ignition_firstboot ostree=/o quiet",
            ),
            // An argument the user gave twice on purpose is removed only as often as the
            // first platform added it.
            (
                "rw quiet quiet ostree=/o",
                "rw quiet",
                "rw",
                "rw quiet ostree=/o",
            ),
        ] {
            assert_eq!(retarget_options(options, &v(from), &v(to)), want, "{options}");
        }
    }

    #[test]
    fn only_the_options_line_of_an_entry_changes() {
        let text = "title Debian (ostree:0)\nversion 1\noptions rw ignition.platform.id=qemu ostree=/o\nlinux /ostree/x/vmlinuz\n";
        assert_eq!(
            retarget_bls(text, &v("rw ignition.platform.id=qemu"), &v("rw ignition.platform.id=gcp")),
            "title Debian (ostree:0)\nversion 1\noptions rw ignition.platform.id=gcp ostree=/o\nlinux /ostree/x/vmlinuz\n"
        );
    }
}
