//! A small initramfs for QEMU tests: busybox-static, chosen kernel modules with their
//! dependencies, a fixture's own init script and extra files, as an uncompressed newc
//! cpio (the kernel unpacks it directly).
//!
//! The generated `/init` (recipe `qemu-tests/fixtures/initramfs-init.sh`) mounts
//! `/proc`, `/sys` and `/dev` (devtmpfs), loads the modules in dependency order, creates
//! `/dev/virtio-ports/<name>` links (there is no udev), then runs the fixture's script
//! `/init.fixture` with `/bin/sh`. The script ends the boot itself, typically with
//! `poweroff -f`. Modules are resolved from each `.ko`'s `.modinfo` `depends=` field, so
//! no `depmod` is needed; `.ko.xz` files are decompressed at build time.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use layerboot::io::newc::NewcWriter;

use super::cache::cached_fixture;
use super::kernel::Kernel;

const STAGE1: &[u8] = include_bytes!("../../qemu-tests/fixtures/initramfs-init.sh");
const BUSYBOX: &str = "/bin/busybox";

/// What goes into the initramfs besides busybox and the stage-1 `/init`.
#[derive(Debug, Clone, Default)]
pub struct InitramfsSpec {
    /// Body of `/init.fixture`, run by `/bin/sh` after modules are loaded.
    pub init_script: String,
    /// Extra files: (absolute guest path, contents, mode).
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// Module names (`virtio_console`, `qemu_fw_cfg`, …); dependencies are added, and
    /// modules built into the kernel are skipped.
    pub modules: Vec<String>,
}

impl InitramfsSpec {
    pub fn new(init_script: impl Into<String>) -> Self {
        InitramfsSpec {
            init_script: init_script.into(),
            ..Default::default()
        }
    }

    pub fn module(mut self, name: &str) -> Self {
        self.modules.push(name.to_string());
        self
    }

    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push((path.to_string(), contents.into(), mode));
        self
    }

    fn recipe(&self) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(b"initramfs v1\0");
        r.extend_from_slice(STAGE1);
        r.extend_from_slice(self.init_script.as_bytes());
        for (p, c, m) in &self.files {
            r.extend_from_slice(format!("\0file {p} {m:o} {}\0", c.len()).as_bytes());
            r.extend_from_slice(c);
        }
        for m in &self.modules {
            r.extend_from_slice(format!("\0module {m}").as_bytes());
        }
        r
    }
}

/// Build (or reuse) the initramfs for `spec` on `kernel`; returns the cpio path.
pub fn cached_initramfs(name: &str, kernel: &Kernel, spec: &InitramfsSpec) -> Result<PathBuf> {
    layerboot::cmd::require("busybox", "busybox-static")?;
    let busybox_id = std::fs::metadata(BUSYBOX)
        .map(|m| format!("{} {:?}", m.len(), m.modified().ok()))
        .unwrap_or_default();
    let recipe = spec.recipe();
    let dir = cached_fixture(
        name,
        &[&recipe, kernel.release.as_bytes(), busybox_id.as_bytes()],
        |staging| build(kernel, spec, &staging.join("initramfs.cpio")),
    )?;
    Ok(dir.join("initramfs.cpio"))
}

/// Write the initramfs for `spec` to `out`.
pub fn build(kernel: &Kernel, spec: &InitramfsSpec, out: &Path) -> Result<()> {
    let busybox = std::fs::read(BUSYBOX).with_context(|| {
        format!("reading {BUSYBOX}: install the Debian package 'busybox-static'")
    })?;
    let applets =
        layerboot::cmd::run_stdout(std::process::Command::new(BUSYBOX).arg("--list-full"))?;
    let modules = resolve_modules(&kernel.modules_dir, &spec.modules)?;

    let f = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = NewcWriter::new(BufWriter::new(f), 1);
    for d in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "etc",
        "lib",
        "lib/modules",
    ] {
        w.dir(d, 0o755)?;
    }
    // The console must exist before devtmpfs is mounted, for the kernel's own stdio.
    w.entry("dev/console", 0o020600, &[], (5, 1))?;
    w.file("bin/busybox", &busybox, 0o755)?;
    for a in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "bin/busybox")
    {
        w.symlink(a, "/bin/busybox")?;
    }
    w.file("init", STAGE1, 0o755)?;
    w.file("init.fixture", spec.init_script.as_bytes(), 0o755)?;
    let mut order = String::new();
    for (name, path) in &modules {
        let file = format!("{name}.ko");
        w.file(&format!("lib/modules/{file}"), &read_module(path)?, 0o644)?;
        order.push_str(&file);
        order.push('\n');
    }
    w.file("lib/modules/load-order", order.as_bytes(), 0o644)?;
    let mut dirs_done = HashSet::new();
    for (path, contents, mode) in &spec.files {
        let rel = path.trim_start_matches('/');
        let mut parent = Path::new(rel).parent();
        let mut parents = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            parents.push(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
        for p in parents.into_iter().rev() {
            if dirs_done.insert(p.clone()) {
                w.dir(&p, 0o755)?;
            }
        }
        w.file(rel, contents, *mode)?;
    }
    w.finish()?
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "xz") {
        let mut out = Vec::new();
        xz2::read::XzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {}", path.display()))?;
        return Ok(out);
    }
    Ok(raw)
}

/// `name` as the kernel spells it: dashes and underscores are interchangeable.
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))?;
    Some(canonical(stem))
}

/// Requested modules plus their dependencies, dependencies first, builtins left out.
pub fn resolve_modules(modules_dir: &Path, wanted: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut index = BTreeMap::new();
    let mut stack = vec![modules_dir.join("kernel")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = module_name(&p) {
                index.insert(n, p);
            }
        }
    }
    let builtin: HashSet<String> = std::fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| module_name(Path::new(l)))
        .collect();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        builtin: &HashSet<String>,
        seen: &mut HashSet<String>,
        order: &mut Vec<(String, PathBuf)>,
        chain: &mut Vec<String>,
    ) -> Result<()> {
        let name = canonical(name);
        if seen.contains(&name) || builtin.contains(&name) {
            return Ok(());
        }
        if chain.contains(&name) {
            bail!("module dependency cycle: {} -> {name}", chain.join(" -> "));
        }
        let path = index.get(&name).with_context(|| {
            format!("kernel module '{name}' is neither built in nor in the kernel's modules tree")
        })?;
        chain.push(name.clone());
        for dep in modinfo_depends(&read_module(path)?)
            .with_context(|| format!("reading .modinfo of {}", path.display()))?
        {
            visit(&dep, index, builtin, seen, order, chain)?;
        }
        chain.pop();
        seen.insert(name.clone());
        order.push((name, path.clone()));
        Ok(())
    }
    for w in wanted {
        visit(w, &index, &builtin, &mut seen, &mut order, &mut Vec::new())?;
    }
    Ok(order)
}

/// The `depends=` list from an ELF64 module's `.modinfo` section.
pub fn modinfo_depends(elf: &[u8]) -> Result<Vec<String>> {
    let u16_at = |o: usize| -> Result<u16> {
        Ok(u16::from_le_bytes(
            elf.get(o..o + 2).context("truncated ELF")?.try_into()?,
        ))
    };
    let u32_at = |o: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            elf.get(o..o + 4).context("truncated ELF")?.try_into()?,
        ))
    };
    let u64_at = |o: usize| -> Result<u64> {
        Ok(u64::from_le_bytes(
            elf.get(o..o + 8).context("truncated ELF")?.try_into()?,
        ))
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        bail!("not a little-endian ELF64 file");
    }
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let shstrndx = u16_at(0x3e)? as usize;
    let section = |i: usize| -> Result<(u32, usize, usize)> {
        let h = shoff + i * shentsize;
        Ok((
            u32_at(h)?,
            u64_at(h + 24)? as usize,
            u64_at(h + 32)? as usize,
        ))
    };
    let (_, stroff, strsize) = section(shstrndx)?;
    let strtab = elf
        .get(stroff..stroff + strsize)
        .context("section names out of bounds")?;
    for i in 0..shnum {
        let (name_off, off, size) = section(i)?;
        let name = strtab
            .get(name_off as usize..)
            .and_then(|s| s.split(|&b| b == 0).next())
            .unwrap_or_default();
        if name == b".modinfo" {
            let data = elf.get(off..off + size).context(".modinfo out of bounds")?;
            for kv in data.split(|&b| b == 0) {
                if let Some(v) = kv.strip_prefix(b"depends=") {
                    return Ok(String::from_utf8_lossy(v)
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect());
                }
            }
            return Ok(Vec::new());
        }
    }
    bail!("no .modinfo section")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_of_a_synthetic_elf() {
        // ELF64 header + 3 sections: null, .shstrtab, .modinfo.
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let modinfo = b"license=GPL\0depends=virtio,virtio_ring\0name=virtio_console\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let str_off = elf.len();
        elf.extend_from_slice(shstrtab);
        let mi_off = elf.len();
        elf.extend_from_slice(modinfo);
        let shoff = elf.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, str_off, shstrtab.len());
        sh(11, mi_off, modinfo.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(modinfo_depends(&elf).unwrap(), ["virtio", "virtio_ring"]);
        assert!(modinfo_depends(b"not elf").is_err());
        assert!(modinfo_depends(&elf[..100]).is_err());
    }
}
