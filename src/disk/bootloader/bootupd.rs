//! The bootloader of images that ship bootupd's payload (RHCOS, Fedora CoreOS, bootc
//! images), installed the way `bootupctl backend install --with-static-configs --write-uuid`
//! does on a CoreOS build, but into staged directories:
//!
//! - the EFI component (`/usr/lib/bootupd/updates/EFI/`, or the newer per-component
//!   `/usr/lib/efi/<component>/<version>/EFI/`) is copied to the ESP's `EFI/` as is: shim
//!   as `EFI/BOOT/BOOTX64.EFI` (the removable-media path a fresh disk boots from), shim and
//!   the signed GRUB in `EFI/<vendor>/`;
//! - `EFI/<vendor>/grub.cfg` is the image's `grub2-static/grub-static-efi.cfg` (it finds
//!   the boot filesystem through `bootuuid.cfg`, else by label) and `bootuuid.cfg` sits
//!   beside it and in `/boot/grub2/`;
//! - `/boot/grub2/grub.cfg` is `grub-static-pre.cfg` plus every `configs.d/*.cfg` in name
//!   order, each between `### BEGIN`/`### END` markers, as bootupd assembles it;
//!   `grubenv` is an empty environment block; `console.cfg` (sourced by the static config)
//!   holds the definition's serial console, as CoreOS platforms do;
//! - BIOS: a core image from the image's `/usr/lib/grub/i386-pc` modules (what bootupd's
//!   `grub2-install --target i386-pc` uses), with `/boot/grub2` as its prefix.
//!
//! What layerboot adds, because an image may not carry it: the Ignition first-boot glue
//! (Ignition's own `05_ignition.cfg` drop-in when the image ships it, else an equivalent)
//! plus `$ignition_firstboot` in the BLS options, as CoreOS deploys with; `set timeout=1`
//! when nothing sets a timeout (unset, GRUB waits at the menu forever); defaults for the
//! static configs when the image has none. And when the image's GRUB has no `blscfg`
//! (Debian's GRUB, upstream GRUB before 2.14), each `blscfg` command is replaced by menu
//! entries generated from the deployment's BLS entries, as the plain GRUB path does.
//!
//! Planning is pure ([`plan`]); [`scan`] reads what the image offers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::grub::{render_menu_entries, IGNITION_FIRSTBOOT_VAR};
use super::BlsEntry;
use crate::bootimage::plan::SerialConsole;
use crate::io::rooted::{Kind, RootedDir};

/// Where bootupd's payload lives in an image.
pub const UPDATES_DIR: &str = "usr/lib/bootupd/updates";
/// The newer per-component layout (`<component>/<version>/EFI/…`).
pub const EFI_LIB_DIR: &str = "usr/lib/efi";
/// bootupd's static GRUB configs.
pub const STATIC_DIR: &str = "usr/lib/bootupd/grub2-static";
/// The directory of `/boot` that holds GRUB's config (bootupd's `GRUB2DIR`).
pub const GRUB2_DIR: &str = "grub2";

/// What an image's bootupd payload offers.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// Files of the EFI component relative to the ESP root (`EFI/…`), and where to read
    /// them (relative to the image root).
    pub efi_files: Vec<(String, PathBuf)>,
    /// Those GRUB EFI binaries (ESP-relative) that have `blscfg` built in.
    pub efi_grub_with_blscfg: BTreeSet<String>,
    /// `grub2-static/`, when the image ships it.
    pub static_configs: Option<StaticConfigs>,
    /// The image's i386-pc GRUB modules when present: `Some(module)` naming the one that
    /// provides `blscfg` (`blscfg` in Fedora's and RHEL's GRUB, `blsuki` from GRUB 2.14),
    /// `Some(None)` when none does.
    pub bios_modules: Option<Option<String>>,
}

/// The contents of `/usr/lib/bootupd/grub2-static/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticConfigs {
    pub pre: String,
    /// `grub-static-efi.cfg`: the ESP stub.
    pub efi: Option<String>,
    /// `configs.d/*.cfg` (name, text).
    pub dropins: Vec<(String, String)>,
}

/// Choices from the boot image definition.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    pub boot_uuid: Option<&'a str>,
    pub boot_label: &'a str,
    pub serial: Option<SerialConsole>,
    /// CoreOS images: `console.cfg` with these commands between CoreOS's markers.
    pub console_commands: Option<&'a [String]>,
    pub uefi: bool,
    pub bios: bool,
}

/// A file's content: from the image, or generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A file of the image (relative to its root).
    Image(PathBuf),
    Text(String),
}

/// How the GRUB menu is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Menu {
    /// The image's GRUB reads the BLS entries itself.
    Blscfg,
    /// This many entries were generated from the BLS entries (the GRUB lacks `blscfg`).
    Generated(usize),
}

/// Everything the bootupd path stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staging {
    /// `EFI/<vendor>` name (`redhat`, `fedora`, `debian`, …).
    pub vendor: Option<String>,
    /// ESP files (relative path, content), sorted by path.
    pub esp: Vec<(String, Content)>,
    /// Files on the boot filesystem (relative path, text, mode), sorted by path.
    pub boot: Vec<(String, String, u32)>,
    pub menu: Menu,
    /// BIOS core image: (config compiled in, modules, prefix).
    pub bios: Option<BiosCore>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiosCore {
    pub early_config: String,
    pub modules: Vec<String>,
    pub prefix: String,
}

/// Whether an image ships a bootupd payload (either layout).
pub fn present(image: &RootedDir) -> bool {
    image.is_dir(Path::new(UPDATES_DIR).join("EFI"))
        || efi_lib_components(image)
            .map(|c| !c.is_empty())
            .unwrap_or(false)
}

/// `usr/lib/efi/<component>/<version>/EFI` directories (relative to the image root), the
/// newest version of each component (by name order, as `sort -V` would for the usual EVR
/// strings).
fn efi_lib_components(image: &RootedDir) -> Result<Vec<PathBuf>> {
    let lib = Path::new(EFI_LIB_DIR);
    let mut found = Vec::new();
    if !image.is_dir(lib) {
        return Ok(found);
    }
    for (c, kind) in image.list(lib)? {
        if kind != Kind::Dir {
            continue;
        }
        let comp = lib.join(c);
        let mut versions: Vec<PathBuf> = image
            .list(&comp)?
            .into_iter()
            .map(|(v, _)| comp.join(v))
            .filter(|v| image.is_dir(v.join("EFI")))
            .collect();
        versions.sort();
        if let Some(v) = versions.pop() {
            found.push(v.join("EFI"));
        }
    }
    found.sort();
    Ok(found)
}

/// Read what the image's payload offers (thin I/O wrapper for [`plan`]). Every read
/// resolves inside the image ([`RootedDir`]); `efi_files` name image-relative paths.
pub fn scan(image: &RootedDir) -> Result<Payload> {
    let mut p = Payload::default();
    let updates = Path::new(UPDATES_DIR).join("EFI");
    let roots = if image.is_dir(&updates) {
        vec![updates]
    } else {
        efi_lib_components(image)?
    };
    for root in roots {
        for rel in image.walk_files(&root)? {
            p.efi_files.push((
                Path::new("EFI").join(&rel).to_string_lossy().into_owned(),
                root.join(&rel),
            ));
        }
    }
    p.efi_files.sort();
    p.efi_files.dedup_by(|a, b| a.0 == b.0);
    for (rel, path) in &p.efi_files {
        if rel.to_ascii_lowercase().ends_with("/grubx64.efi") {
            let bin = image.read(path)?;
            // GRUB keeps each built-in module's name (`.modname`) and command names as
            // NUL-terminated strings.
            if bin.windows(7).any(|w| w == b"blscfg\0") {
                p.efi_grub_with_blscfg.insert(rel.clone());
            }
        }
    }
    let st = Path::new(STATIC_DIR);
    if image.is_file(st.join("grub-static-pre.cfg")) {
        let mut s = StaticConfigs {
            pre: image.read_to_string(st.join("grub-static-pre.cfg"))?,
            efi: None,
            dropins: Vec::new(),
        };
        if image.is_file(st.join("grub-static-efi.cfg")) {
            s.efi = Some(image.read_to_string(st.join("grub-static-efi.cfg"))?);
        }
        let dropins = st.join("configs.d");
        if image.is_dir(&dropins) {
            for (name, kind) in image.list(&dropins)? {
                if kind == Kind::File && name.ends_with(".cfg") {
                    s.dropins
                        .push((name.clone(), image.read_to_string(dropins.join(&name))?));
                }
            }
        }
        p.static_configs = Some(s);
    }
    p.bios_modules = super::grub::image_blscfg_provider(image, "i386-pc")?;
    Ok(p)
}

/// Layerboot's stand-ins when the image has no `grub2-static/`: the same roles as
/// bootupd's files (find /boot by `bootuuid.cfg`, else by label; environment; console).
fn default_static_configs(boot_label: &str) -> StaticConfigs {
    let pre = format!(
        "if [ -f ${{config_directory}}/bootuuid.cfg ]; then\n  source ${{config_directory}}/bootuuid.cfg\nfi\nif [ -n \"${{BOOT_UUID}}\" ]; then\n  search --fs-uuid \"${{BOOT_UUID}}\" --set boot --no-floppy\nelse\n  search --label {boot_label} --set boot --no-floppy\nfi\nset root=$boot\nif [ -f ${{config_directory}}/grubenv ]; then\n  load_env -f ${{config_directory}}/grubenv\nfi\nif [ -f $prefix/console.cfg ]; then\n  source $prefix/console.cfg\nfi\n"
    );
    let efi = format!(
        "if [ -f ${{config_directory}}/bootuuid.cfg ]; then\n  source ${{config_directory}}/bootuuid.cfg\nfi\nif [ -n \"${{BOOT_UUID}}\" ]; then\n  search --fs-uuid \"${{BOOT_UUID}}\" --set prefix --no-floppy\nelse\n  search --label {boot_label} --set prefix --no-floppy\nfi\nset prefix=($prefix)/{GRUB2_DIR}\nconfigfile $prefix/grub.cfg\nboot\n"
    );
    StaticConfigs {
        pre,
        efi: Some(efi),
        dropins: vec![("10_blscfg.cfg".into(), "blscfg\n".into())],
    }
}

/// Ignition's first-boot semantic (what Ignition's `05_ignition.cfg` does): while the
/// stamp exists on the boot filesystem, `$ignition_firstboot` expands to
/// `ignition.firstboot` plus any network arguments the stamp file sets.
const IGNITION_DROPIN: &str = "set ignition_firstboot=\"\"\nif [ -f \"/ignition.firstboot\" ]; then\n    set ignition_network_kcmdline=\"\"\n    source \"/ignition.firstboot\"\n    set ignition_firstboot=\"ignition.firstboot ${ignition_network_kcmdline}\"\nfi\n";

/// Does a top-level (unindented, so unconditional by the drop-ins' convention) line of a
/// GRUB script assign `var` (`set var=…` or `var=…`)?
fn assigns(script: &str, var: &str) -> bool {
    script.lines().any(|l| {
        let l = l.strip_prefix("set ").map(str::trim_start).unwrap_or(l);
        l.strip_prefix(var)
            .is_some_and(|rest| rest.starts_with('='))
    })
}

/// `grubenv`: GRUB's 1024-byte environment block, empty, byte for byte as
/// `grub2-editenv grubenv create` (GRUB 2.04 and later, which bootupd runs for its static
/// configs) writes it: the signature line, the warning line, `#` padding.
pub fn empty_grubenv() -> String {
    let head = "# GRUB Environment Block\n# WARNING: Do not edit this file by tools other than grub-editenv!!!\n";
    format!("{head}{}", "#".repeat(1024 - head.len()))
}

/// Plan the bootupd path (pure).
pub fn plan(payload: &Payload, entries: &[BlsEntry], o: &Options) -> Result<Staging> {
    let mut esp: Vec<(String, Content)> = payload
        .efi_files
        .iter()
        .map(|(rel, p)| (rel.clone(), Content::Image(p.clone())))
        .collect();
    let has = |rel: &str| {
        payload
            .efi_files
            .iter()
            .any(|(r, _)| r.eq_ignore_ascii_case(rel))
    };

    let mut vendor = None;
    let mut menu_blscfg = true;
    if o.uefi {
        let vendors: BTreeSet<String> = payload
            .efi_files
            .iter()
            .filter_map(|(rel, _)| {
                let mut parts = rel.split('/');
                let (efi, dir, file) = (parts.next()?, parts.next()?, parts.next()?);
                (parts.next().is_none()
                    && efi == "EFI"
                    && !dir.eq_ignore_ascii_case("BOOT")
                    && file.eq_ignore_ascii_case("grubx64.efi"))
                .then(|| dir.to_string())
            })
            .collect();
        let v = match vendors.len() {
            0 => bail!("the image's bootupd payload has no EFI/<vendor>/grubx64.efi"),
            1 => vendors.into_iter().next().expect("one vendor"),
            _ => bail!(
                "the image's bootupd payload has several EFI vendor directories ({}); expected one",
                vendors.into_iter().collect::<Vec<_>>().join(", ")
            ),
        };
        if !has("EFI/BOOT/BOOTX64.EFI") {
            bail!("the image's bootupd payload lacks EFI/BOOT/BOOTX64.EFI: a fresh disk has no firmware boot entry, so UEFI would find nothing to boot");
        }
        menu_blscfg &= payload
            .efi_grub_with_blscfg
            .iter()
            .any(|g| g.eq_ignore_ascii_case(&format!("EFI/{v}/grubx64.efi")));
        vendor = Some(v);
    }
    if o.bios {
        match &payload.bios_modules {
            None => {
                bail!("BIOS boot wanted but the image has no GRUB modules in /usr/lib/grub/i386-pc")
            }
            Some(provider) => menu_blscfg &= provider.is_some(),
        }
    }

    let defaults;
    let st = match &payload.static_configs {
        Some(s) => s,
        None => {
            defaults = default_static_configs(o.boot_label);
            &defaults
        }
    };
    let mut dropins = st.dropins.clone();
    let everything = std::iter::once(st.pre.as_str())
        .chain(dropins.iter().map(|d| d.1.as_str()))
        .collect::<Vec<_>>()
        .join("\n");
    if !assigns(&everything, "ignition_firstboot") {
        dropins.push(("05_ignition.cfg".into(), IGNITION_DROPIN.into()));
    }
    if !assigns(&everything, "timeout") {
        dropins.push(("00_layerboot-timeout.cfg".into(), "set timeout=1\n".into()));
    }
    dropins.sort();

    let generated = render_menu_entries(entries);
    let mut cfg = String::from(match payload.static_configs {
        Some(_) => "# Generated by layerboot from the image's /usr/lib/bootupd/grub2-static, as bootupd assembles it\n\n",
        None => "# Generated by layerboot (the image has no /usr/lib/bootupd/grub2-static: layerboot's equivalents)\n\n",
    });
    cfg += &st.pre;
    let mut replaced = 0;
    for (name, text) in &dropins {
        cfg += &format!("\n### BEGIN {name} ###\n");
        for line in text.lines() {
            if !menu_blscfg && line.split_whitespace().next() == Some("blscfg") {
                cfg += "# this GRUB has no blscfg: entries generated from /loader/entries\n";
                cfg += &generated;
                replaced += 1;
            } else {
                cfg += line;
                cfg += "\n";
            }
        }
        cfg += &format!("### END {name} ###\n");
    }
    let menu = if menu_blscfg {
        Menu::Blscfg
    } else if replaced == 0 {
        bail!("the image's GRUB has no blscfg and its static GRUB configs call no blscfg to stand in for: no boot menu could be made");
    } else {
        Menu::Generated(entries.len())
    };

    let mut boot = vec![
        (format!("{GRUB2_DIR}/grub.cfg"), cfg, 0o600),
        (format!("{GRUB2_DIR}/grubenv"), empty_grubenv(), 0o600),
    ];
    if let Some(u) = o.boot_uuid {
        let text = format!("set BOOT_UUID=\"{u}\"\n");
        boot.push((format!("{GRUB2_DIR}/bootuuid.cfg"), text.clone(), 0o600));
        if let Some(v) = &vendor {
            esp.push((format!("EFI/{v}/bootuuid.cfg"), Content::Text(text)));
        }
    }
    if let Some(cmds) = o.console_commands {
        boot.push((
            format!("{GRUB2_DIR}/console.cfg"),
            crate::disk::coreos::console_cfg(cmds),
            0o644,
        ));
    } else if let Some(sc) = o.serial {
        boot.push((format!("{GRUB2_DIR}/console.cfg"), format!("serial --unit={} --speed={}\nterminal_input serial console\nterminal_output serial console\n", sc.unit, sc.speed), 0o644));
    }
    if let Some(v) = &vendor {
        let stub = st.efi.clone().unwrap_or_else(|| {
            default_static_configs(o.boot_label)
                .efi
                .expect("defaults have an EFI stub")
        });
        esp.retain(|(rel, _)| !rel.eq_ignore_ascii_case(&format!("EFI/{v}/grub.cfg")));
        esp.push((format!("EFI/{v}/grub.cfg"), Content::Text(stub)));
    }
    esp.sort_by(|a, b| a.0.cmp(&b.0));
    boot.sort();

    let bios = o.bios.then(|| {
        let search = match o.boot_uuid {
            Some(u) => format!("search --no-floppy --fs-uuid {u} --set root"),
            None => format!("search --no-floppy --label {} --set root", o.boot_label),
        };
        let mut modules: Vec<String> = super::grub::BIOS_MODULES.iter().map(|m| m.to_string()).collect();
        modules.push("search_fs_uuid".into());
        if let Some(Some(provider)) = &payload.bios_modules {
            modules.push(provider.clone());
        }
        BiosCore { early_config: format!("{search}\nset prefix=($root)/{GRUB2_DIR}\nconfigfile ($root)/{GRUB2_DIR}/grub.cfg\n"), modules, prefix: format!("/{GRUB2_DIR}") }
    });
    Ok(Staging {
        vendor,
        esp,
        boot,
        menu,
        bios,
    })
}

/// Add `$ignition_firstboot` to a BLS entry's options line if it lacks it (pure): CoreOS
/// deploys with it, and ostree carries the options over to later deployments.
pub fn with_firstboot_var(entry_text: &str) -> String {
    let mut out = String::new();
    for line in entry_text.lines() {
        match line.strip_prefix("options") {
            Some(rest) if rest.starts_with(char::is_whitespace) || rest.is_empty() => {
                if rest
                    .split_whitespace()
                    .any(|a| a == IGNITION_FIRSTBOOT_VAR || a == "${ignition_firstboot}")
                {
                    out += line;
                } else {
                    out += &format!("{} {IGNITION_FIRSTBOOT_VAR}", line.trim_end());
                }
            }
            _ => out += line,
        }
        out += "\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn entry() -> BlsEntry {
        BlsEntry {
            title: "Layered OS (ostree:0)".into(),
            version: "1".into(),
            linux: "/ostree/default-abc/vmlinuz".into(),
            initrd: vec!["/ostree/default-abc/initramfs.img".into()],
            options: "root=LABEL=root rw ostree=/ostree/boot.1/default/abc/0 $ignition_firstboot"
                .into(),
        }
    }

    fn payload(
        vendor: &str,
        blscfg: bool,
        static_configs: Option<StaticConfigs>,
        bios: Option<bool>,
    ) -> Payload {
        let files = [
            "EFI/BOOT/BOOTX64.EFI",
            "EFI/BOOT/fbx64.efi",
            &format!("EFI/{vendor}/shimx64.efi"),
            &format!("EFI/{vendor}/grubx64.efi"),
            &format!("EFI/{vendor}/BOOTX64.CSV"),
        ];
        Payload {
            efi_files: files
                .iter()
                .map(|f| {
                    (
                        f.to_string(),
                        PathBuf::from("/img/usr/lib/bootupd/updates").join(f),
                    )
                })
                .collect(),
            efi_grub_with_blscfg: if blscfg {
                [format!("EFI/{vendor}/grubx64.efi")].into()
            } else {
                BTreeSet::new()
            },
            static_configs,
            bios_modules: bios.map(|has| has.then(|| "blscfg".to_string())),
        }
    }

    /// A CoreOS-like grub2-static: bootupd's pre/efi files and drop-ins, Ignition's own.
    fn coreos_static(with_ignition: bool) -> StaticConfigs {
        let mut dropins = vec![("10_blscfg.cfg".to_string(), "blscfg\n".to_string()), ("14_menu_show_once.cfg".into(), "if [ \"${menu_show_once_timeout}\" ]; then\n  set timeout=\"${menu_show_once_timeout}\"\nfi\n".into())];
        if with_ignition {
            dropins.push(("05_ignition.cfg".into(), "set ignition_firstboot=\"\"\nif [ -f \"/ignition.firstboot\" ]; then\n  set ignition_firstboot=\"ignition.firstboot\"\nfi\n".into()));
        }
        StaticConfigs {
            pre: "# pre\nsearch --label boot --set boot\nset root=$boot\n".into(),
            efi: Some("# efi stub\nconfigfile $prefix/grub.cfg\n".into()),
            dropins,
        }
    }

    fn opts(uefi: bool, bios: bool) -> Options<'static> {
        Options {
            boot_uuid: Some("96d15588-3596-4b3c-adca-a2ff7279ea63"),
            boot_label: "boot",
            serial: Some(SerialConsole {
                unit: 0,
                speed: 115200,
            }),
            console_commands: None,
            uefi,
            bios,
        }
    }

    fn esp_paths(p: &Staging) -> Vec<&str> {
        p.esp.iter().map(|(r, _)| r.as_str()).collect()
    }

    fn boot_file<'a>(p: &'a Staging, name: &str) -> &'a str {
        &p.boot
            .iter()
            .find(|(r, _, _)| r == name)
            .unwrap_or_else(|| panic!("{name} not planned: {:?}", p.boot))
            .1
    }

    #[test]
    fn plans_per_payload() {
        struct Case {
            name: &'static str,
            payload: Payload,
            opts: Options<'static>,
            menu: Menu,
            /// Substrings grub.cfg must contain / must not contain.
            has: &'static [&'static str],
            lacks: &'static [&'static str],
            bios_blscfg: Option<bool>,
        }
        let cases = vec![
            Case {
                name: "RHCOS-like: static configs with Ignition's drop-in, GRUB with blscfg, UEFI+BIOS",
                payload: payload("redhat", true, Some(coreos_static(true)), Some(true)),
                opts: opts(true, true),
                menu: Menu::Blscfg,
                has: &["# pre\n", "### BEGIN 05_ignition.cfg ###\nset ignition_firstboot=\"\"", "### BEGIN 10_blscfg.cfg ###\nblscfg\n### END 10_blscfg.cfg ###", "00_layerboot-timeout.cfg"],
                lacks: &["menuentry", "ignition_network_kcmdline"],
                bios_blscfg: Some(true),
            },
            Case {
                name: "static configs without Ignition's drop-in: layerboot's glue is added",
                payload: payload("fedora", true, Some(coreos_static(false)), None),
                opts: opts(true, false),
                menu: Menu::Blscfg,
                has: &["### BEGIN 05_ignition.cfg ###\nset ignition_firstboot=\"\"\nif [ -f \"/ignition.firstboot\" ]; then\n    set ignition_network_kcmdline", "blscfg\n"],
                lacks: &["menuentry"],
                bios_blscfg: None,
            },
            Case {
                name: "Debian-like: no static configs, GRUB without blscfg: defaults and generated entries",
                payload: payload("debian", false, None, Some(false)),
                opts: opts(true, true),
                menu: Menu::Generated(1),
                has: &["search --fs-uuid \"${BOOT_UUID}\" --set boot", "source $prefix/console.cfg", "set timeout=1", "menuentry 'Layered OS (ostree:0)' {\n    linux /ostree/default-abc/vmlinuz root=LABEL=root rw ostree=/ostree/boot.1/default/abc/0 $ignition_firstboot\n"],
                lacks: &["\nblscfg"],
                bios_blscfg: Some(false),
            },
            Case {
                name: "EFI GRUB has blscfg but the BIOS modules do not: one shared grub.cfg, generated",
                payload: payload("redhat", true, Some(coreos_static(true)), Some(false)),
                opts: opts(true, true),
                menu: Menu::Generated(1),
                has: &["### BEGIN 10_blscfg.cfg ###\n# this GRUB has no blscfg", "menuentry"],
                lacks: &["\nblscfg\n"],
                bios_blscfg: Some(false),
            },
            Case {
                name: "BIOS only: no vendor needed, blscfg from the i386-pc modules",
                payload: payload("redhat", false, Some(coreos_static(true)), Some(true)),
                opts: opts(false, true),
                menu: Menu::Blscfg,
                has: &["blscfg\n"],
                lacks: &["menuentry"],
                bios_blscfg: Some(true),
            },
        ];
        for c in cases {
            let p = plan(&c.payload, &[entry()], &c.opts)
                .unwrap_or_else(|e| panic!("{}: {e:#}", c.name));
            assert_eq!(p.menu, c.menu, "{}", c.name);
            let cfg = boot_file(&p, "grub2/grub.cfg");
            for h in c.has {
                assert!(cfg.contains(h), "{}: grub.cfg lacks {h:?}:\n{cfg}", c.name);
            }
            for l in c.lacks {
                assert!(!cfg.contains(l), "{}: grub.cfg has {l:?}:\n{cfg}", c.name);
            }
            assert!(
                cfg.matches("### BEGIN ").count() == cfg.matches("### END ").count(),
                "{}",
                c.name
            );
            assert_eq!(
                boot_file(&p, "grub2/bootuuid.cfg"),
                "set BOOT_UUID=\"96d15588-3596-4b3c-adca-a2ff7279ea63\"\n",
                "{}",
                c.name
            );
            assert_eq!(boot_file(&p, "grub2/grubenv").len(), 1024, "{}", c.name);
            assert!(
                boot_file(&p, "grub2/console.cfg").starts_with("serial --unit=0 --speed=115200\n"),
                "{}",
                c.name
            );
            assert_eq!(
                p.bios
                    .as_ref()
                    .map(|b| b.modules.iter().any(|m| m == "blscfg")),
                c.bios_blscfg,
                "{}",
                c.name
            );
            if let Some(b) = &p.bios {
                assert_eq!(b.prefix, "/grub2");
                assert!(b.early_config.starts_with("search --no-floppy --fs-uuid 96d15588-3596-4b3c-adca-a2ff7279ea63 --set root\n"), "{}", c.name);
            }
            if c.opts.uefi {
                let v = p.vendor.clone().unwrap();
                let paths = esp_paths(&p);
                for want in [
                    "EFI/BOOT/BOOTX64.EFI".to_string(),
                    format!("EFI/{v}/grubx64.efi"),
                    format!("EFI/{v}/shimx64.efi"),
                    format!("EFI/{v}/grub.cfg"),
                    format!("EFI/{v}/bootuuid.cfg"),
                ] {
                    assert!(
                        paths.contains(&want.as_str()),
                        "{}: ESP lacks {want}: {paths:?}",
                        c.name
                    );
                }
                let mut sorted = paths.clone();
                sorted.sort();
                assert_eq!(paths, sorted, "{}: ESP plan sorted", c.name);
                let stub = p
                    .esp
                    .iter()
                    .find(|(r, _)| *r == format!("EFI/{v}/grub.cfg"))
                    .unwrap();
                let Content::Text(stub) = &stub.1 else {
                    panic!("stub is generated")
                };
                match &c.payload.static_configs {
                    Some(s) => assert_eq!(
                        Some(stub),
                        s.efi.as_ref(),
                        "{}: the image's grub-static-efi.cfg",
                        c.name
                    ),
                    None => assert!(
                        stub.contains("set prefix=($prefix)/grub2\nconfigfile $prefix/grub.cfg"),
                        "{}: {stub}",
                        c.name
                    ),
                }
            } else {
                assert_eq!(p.vendor, None);
            }
        }
    }

    /// Everything layerboot writes itself (image without grub2-static, GRUB without
    /// blscfg), as a golden file: grub.cfg, the ESP stub, the BIOS core's config.
    #[test]
    fn generated_configs_golden() {
        let p = plan(
            &payload("debian", false, None, Some(false)),
            &[entry()],
            &opts(true, true),
        )
        .unwrap();
        let stub = p.esp.iter().find_map(|(r, c)| match c {
            Content::Text(t) if r == "EFI/debian/grub.cfg" => Some(t.clone()),
            _ => None,
        });
        let mut all = String::new();
        for (name, text) in [
            (
                "/boot/grub2/grub.cfg",
                boot_file(&p, "grub2/grub.cfg").to_string(),
            ),
            ("ESP EFI/debian/grub.cfg", stub.unwrap()),
            ("BIOS core image config", p.bios.unwrap().early_config),
        ] {
            all += &format!("===== {name} =====\n{text}");
        }
        let golden =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/disk/bootupd-generated.cfg");
        if std::env::var_os("LAYERBOOT_UPDATE_GOLDEN").is_some() {
            fs::write(&golden, &all).unwrap();
        }
        pretty_assertions::assert_eq!(fs::read_to_string(golden).unwrap(), all);
    }

    #[test]
    fn label_search_without_uuid_and_no_console_without_serial() {
        let mut o = opts(true, true);
        o.boot_uuid = None;
        o.serial = None;
        let p = plan(&payload("debian", false, None, Some(false)), &[entry()], &o).unwrap();
        assert!(
            p.boot
                .iter()
                .all(|(r, _, _)| r != "grub2/bootuuid.cfg" && r != "grub2/console.cfg"),
            "{:?}",
            p.boot
        );
        assert!(!esp_paths(&p).contains(&"EFI/debian/bootuuid.cfg"));
        assert!(p
            .bios
            .unwrap()
            .early_config
            .starts_with("search --no-floppy --label boot --set root\n"));
    }

    #[test]
    fn refuses_unbootable_payloads() {
        let cases: Vec<(Payload, Options, &str)> = vec![
            (
                Payload {
                    efi_files: vec![("EFI/BOOT/BOOTX64.EFI".into(), "/x".into())],
                    ..Default::default()
                },
                opts(true, false),
                "has no EFI/<vendor>/grubx64.efi",
            ),
            (
                {
                    let mut p = payload("redhat", true, None, None);
                    p.efi_files
                        .push(("EFI/centos/grubx64.efi".into(), "/y".into()));
                    p
                },
                opts(true, false),
                "several EFI vendor directories (centos, redhat)",
            ),
            (
                {
                    let mut p = payload("redhat", true, None, None);
                    p.efi_files.retain(|(r, _)| !r.starts_with("EFI/BOOT/"));
                    p
                },
                opts(true, false),
                "lacks EFI/BOOT/BOOTX64.EFI",
            ),
            (
                payload("redhat", true, None, None),
                opts(true, true),
                "no GRUB modules in /usr/lib/grub/i386-pc",
            ),
            (
                payload(
                    "debian",
                    false,
                    Some(StaticConfigs {
                        pre: "x\n".into(),
                        efi: None,
                        dropins: vec![],
                    }),
                    None,
                ),
                opts(true, false),
                "no blscfg to stand in for",
            ),
        ];
        for (p, o, want) in cases {
            let err = plan(&p, &[entry()], &o).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn firstboot_var_in_bls_options() {
        let cases = [
            (
                "title x\noptions root=LABEL=root rw\nlinux /k\n",
                "title x\noptions root=LABEL=root rw $ignition_firstboot\nlinux /k\n",
            ),
            (
                "options a $ignition_firstboot\n",
                "options a $ignition_firstboot\n",
            ),
            (
                "options a ${ignition_firstboot}\n",
                "options a ${ignition_firstboot}\n",
            ),
            ("optionsx a\n", "optionsx a\n"),
        ];
        for (input, want) in cases {
            assert_eq!(with_firstboot_var(input), want, "{input:?}");
        }
    }

    #[test]
    fn grub_script_assignments() {
        for (script, var, want) in [
            ("set timeout=1", "timeout", true),
            ("timeout=5", "timeout", true),
            ("  set timeout=5", "timeout", false),
            ("set timeout_style=menu", "timeout", false),
            ("echo timeout=1", "timeout", false),
            ("set ignition_firstboot=\"\"", "ignition_firstboot", true),
        ] {
            assert_eq!(assigns(script, var), want, "{script}");
        }
        let env = empty_grubenv();
        assert_eq!(env.len(), 1024);
        let (sig, rest) = env.split_once('\n').unwrap();
        let (warning, padding) = rest.split_once('\n').unwrap();
        assert_eq!(sig, "# GRUB Environment Block");
        assert_eq!(
            warning,
            "# WARNING: Do not edit this file by tools other than grub-editenv!!!"
        );
        assert!(padding.bytes().all(|b| b == b'#'), "{padding}");
    }
}
