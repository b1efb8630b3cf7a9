//! The bootloader, from the image's own files: bootupd's payload
//! (`/usr/lib/bootupd/updates/`) when the image ships one, else the image's GRUB modules
//! (`/usr/lib/grub/{x86_64-efi,i386-pc}`) turned into an EFI binary and a BIOS core image,
//! with a GRUB config generated from the deployment's BLS entries (Debian's GRUB has no
//! `blscfg`). Either way the config adds `ignition.firstboot` while `/boot/ignition.firstboot`
//! exists, as CoreOS's does.

pub mod bootupd;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::bootimage::plan::SerialConsole;
use crate::cmd;
use crate::io::RootedDir;

/// GRUB's modules in an image, per platform (`x86_64-efi`, `i386-pc`).
pub const GRUB_LIB: &str = "usr/lib/grub";

/// One Boot Loader Specification entry (`/boot/loader/entries/*.conf`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlsEntry {
    pub title: String,
    pub version: String,
    pub linux: String,
    pub initrd: Vec<String>,
    pub options: String,
}

/// Parse a BLS entry (pure).
pub fn parse_bls(text: &str) -> Result<BlsEntry> {
    let mut e = BlsEntry::default();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (k, v) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let v = v.trim().to_string();
        match k {
            "title" => e.title = v,
            "version" => e.version = v,
            "linux" => e.linux = v,
            "initrd" => e.initrd.push(v),
            "options" => e.options = v,
            _ => {}
        }
    }
    ensure!(!e.linux.is_empty(), "BLS entry without a linux line");
    Ok(e)
}

/// Entries sorted as ostree orders them: `ostree-1-*` is the default (newest) deployment.
pub fn read_bls_entries(boot: &Path) -> Result<Vec<BlsEntry>> {
    let dir = boot.join("loader/entries");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            parse_bls(&fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
                .with_context(|| p.display().to_string())
        })
        .collect()
}

fn grub_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The lines that put GRUB on the serial console (or source CoreOS's `console.cfg`) and
/// compute `$ignition_firstboot`.
fn preamble(serial: Option<SerialConsole>, console_cfg: bool) -> String {
    let mut s = String::new();
    if console_cfg {
        s += "if [ -f $prefix/console.cfg ]; then\n    source $prefix/console.cfg\nfi\n";
    }
    if let Some(sc) = serial {
        s += &format!("serial --unit={} --speed={}\nterminal_input serial console\nterminal_output serial console\n", sc.unit, sc.speed);
    }
    s += "set timeout=1\n";
    // The stamp lives on the boot filesystem; Ignition's first-boot network arguments may be
    // set from it (CoreOS's convention), then it is removed after the first boot completes.
    s += "set ignition_firstboot=\"\"\nif [ -f /ignition.firstboot ]; then\n    set ignition_network_kcmdline=\"\"\n    source /ignition.firstboot\n    set ignition_firstboot=\"ignition.firstboot ${ignition_network_kcmdline}\"\nfi\n";
    s
}

/// The GRUB variable CoreOS puts in the kernel command line; the config expands it to
/// `ignition.firstboot …` while the first-boot stamp exists.
pub const IGNITION_FIRSTBOOT_VAR: &str = "$ignition_firstboot";

/// One `menuentry` per BLS entry (pure), what `blscfg` would make of them. Paths in BLS
/// entries are relative to the boot filesystem, which the config has made `$root`.
pub fn render_menu_entries(entries: &[BlsEntry]) -> String {
    let mut s = String::new();
    for e in entries {
        let title = if e.title.is_empty() {
            e.version.clone()
        } else {
            e.title.clone()
        };
        let has_var = e
            .options
            .split_whitespace()
            .any(|a| a == IGNITION_FIRSTBOOT_VAR || a == "${ignition_firstboot}");
        let var = if has_var {
            String::new()
        } else {
            format!(" {IGNITION_FIRSTBOOT_VAR}")
        };
        s += &format!(
            "menuentry {} {{\n    linux {} {}{var}\n",
            grub_quote(&title),
            e.linux,
            e.options
        );
        if !e.initrd.is_empty() {
            s += &format!("    initrd {}\n", e.initrd.join(" "));
        }
        s += "}\n";
    }
    s
}

/// grub.cfg with one menu entry per BLS entry (pure); `console_cfg`: source the
/// `console.cfg` beside it (CoreOS images).
pub fn render_grub_cfg(
    entries: &[BlsEntry],
    serial: Option<SerialConsole>,
    console_cfg: bool,
) -> String {
    let mut s =
        String::from("# Generated by layerboot from /loader/entries (this GRUB has no blscfg).\n");
    s += &preamble(serial, console_cfg);
    s += "set default=0\n";
    s += &render_menu_entries(entries);
    s
}

/// The config compiled into the EFI and BIOS images: find the boot filesystem by label and
/// hand over to its grub.cfg.
pub fn early_config(boot_label: &str, grub_dir: &str) -> String {
    format!("search --no-floppy --label {boot_label} --set root\nset prefix=($root)/{grub_dir}\nconfigfile ($root)/{grub_dir}/grub.cfg\n")
}

const EFI_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
    "xfs",
    "normal",
    "linux",
    "search",
    "search_label",
    "search_fs_uuid",
    "configfile",
    "echo",
    "test",
    "serial",
    "terminal",
    "gzio",
    "all_video",
    "efi_gop",
    "boot",
    "loadenv",
    "minicmd",
    "sleep",
    "true",
    "cat",
    "ls",
    "reboot",
    "halt",
];
const BIOS_MODULES: &[&str] = &[
    "biosdisk",
    "part_gpt",
    "part_msdos",
    "ext2",
    "xfs",
    "normal",
    "linux",
    "search",
    "search_label",
    "configfile",
    "echo",
    "test",
    "serial",
    "terminal",
    "gzio",
    "boot",
    "minicmd",
    "sleep",
    "true",
    "cat",
    "ls",
];

/// GRUB files staged for the disk.
#[derive(Debug)]
pub struct BootFiles {
    /// ESP tree (relative paths → host files).
    pub esp: Vec<(String, PathBuf)>,
    /// BIOS: (MBR boot code, core image) when BIOS boot is wanted.
    pub bios: Option<(Vec<u8>, Vec<u8>)>,
    /// The configs written into the boot tree that carry kernel arguments or the console
    /// (what [`super::retarget`] changes for another platform).
    pub configs: GrubConfigs,
}

/// Which GRUB configs the bootloader step wrote into the boot tree (paths relative to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrubConfigs {
    /// layerboot's own grub.cfg, rendered from the BLS entries, and CoreOS's console.cfg.
    Rendered {
        grub_cfg: String,
        console_cfg: Option<String>,
    },
    /// The configs bootupd's layout puts on /boot (static or with generated menu entries).
    Bootupd { files: Vec<String> },
}

pub struct Inputs<'a> {
    /// The deployed OS tree (the deployment checkout): every read of it stays inside it.
    pub image: &'a RootedDir,
    /// Staged boot filesystem content (configs are written here).
    pub boot_dir: &'a Path,
    pub boot_label: &'a str,
    /// The boot filesystem's UUID, when the layout fixes it (bootupd's `bootuuid.cfg`).
    pub boot_uuid: Option<&'a str>,
    pub serial: Option<SerialConsole>,
    /// CoreOS images: GRUB's console commands, written into `/boot/grub2/console.cfg`
    /// between the markers `coreos-installer install --console` rewrites.
    pub console_commands: Option<&'a [String]>,
    pub uefi: bool,
    pub bios: bool,
    /// Scratch space for generated binaries.
    pub work: &'a Path,
    /// The deployed image, to run its own GRUB tools; `None`: the host's.
    pub image_exec: Option<&'a super::image_exec::ImageExec>,
}

/// Stage bootloader files and configs.
pub fn prepare(inp: &Inputs) -> Result<BootFiles> {
    if bootupd::present(inp.image) {
        return prepare_bootupd(inp);
    }
    prepare_grub(inp)
}

fn prepare_grub(inp: &Inputs) -> Result<BootFiles> {
    // CoreOS's tools (coreos-installer, bootupd) expect GRUB's files in /boot/grub2.
    let grub_name = match inp.console_commands {
        Some(_) => "grub2",
        None => "grub",
    };
    let mut files = BootFiles {
        esp: Vec::new(),
        bios: None,
        configs: GrubConfigs::Rendered {
            grub_cfg: format!("{grub_name}/grub.cfg"),
            console_cfg: inp
                .console_commands
                .map(|_| format!("{grub_name}/console.cfg")),
        },
    };
    let grub_dir = inp.boot_dir.join(grub_name);
    fs::create_dir_all(&grub_dir)?;
    let entries = read_bls_entries(inp.boot_dir)?;
    ensure!(
        !entries.is_empty(),
        "the deployment wrote no BLS entries to /boot/loader/entries"
    );
    fs::write(
        grub_dir.join("grub.cfg"),
        render_grub_cfg(&entries, inp.serial, inp.console_commands.is_some()),
    )?;
    if let Some(cmds) = inp.console_commands {
        fs::write(
            grub_dir.join("console.cfg"),
            super::coreos::console_cfg(cmds),
        )?;
    }
    let early = early_config(inp.boot_label, grub_name);

    for (wanted, platform, modules) in [
        (inp.uefi, "x86_64-efi", EFI_MODULES),
        (inp.bios, "i386-pc", BIOS_MODULES),
    ] {
        if !wanted {
            continue;
        }
        let moddir = image_grub_modules(inp, platform)?.with_context(|| format!("the image has neither bootupd's /usr/lib/bootupd/updates nor GRUB's /usr/lib/grub/{platform}: install grub for {platform} in the image"))?;
        // Modules on /boot too, so `insmod` of anything not compiled in still works.
        copy_dir(&moddir, &grub_dir.join(platform))?;
        let out = make_core_image(
            inp,
            platform,
            &moddir,
            &format!("/{grub_name}"),
            &early,
            modules,
        )?;
        if platform == "x86_64-efi" {
            files.esp.push(("EFI/BOOT/BOOTX64.EFI".to_string(), out));
        } else {
            let boot_img = fs::read(moddir.join("boot.img"))
                .with_context(|| format!("reading {}/boot.img", moddir.display()))?;
            files.bios = Some((boot_img, fs::read(&out)?));
        }
    }
    Ok(files)
}

/// The image's GRUB modules for `platform`, copied out of the image (through
/// [`RootedDir`]) into the scratch space: host tools such as grub-mkimage follow
/// symlinks, so they only ever see these copies. `None` when the image has none.
fn image_grub_modules(inp: &Inputs, platform: &str) -> Result<Option<PathBuf>> {
    let rel = Path::new(GRUB_LIB).join(platform);
    if !inp.image.is_file(rel.join("kernel.img")) {
        return Ok(None);
    }
    let dest = inp.work.join(format!("image-grub-{platform}"));
    if !dest.exists() {
        inp.image.copy_dir_files(&rel, &dest)?;
    }
    Ok(Some(dest))
}

fn prepare_bootupd(inp: &Inputs) -> Result<BootFiles> {
    let payload = bootupd::scan(inp.image)?;
    // CoreOS deploys with `$ignition_firstboot` among the kernel arguments; ostree then
    // carries the BLS options over to every later deployment.
    let entries_dir = inp.boot_dir.join("loader/entries");
    for e in
        fs::read_dir(&entries_dir).with_context(|| format!("reading {}", entries_dir.display()))?
    {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "conf") {
            let text =
                fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            fs::write(&p, bootupd::with_firstboot_var(&text))
                .with_context(|| format!("writing {}", p.display()))?;
        }
    }
    let entries = read_bls_entries(inp.boot_dir)?;
    ensure!(
        !entries.is_empty(),
        "the deployment wrote no BLS entries to /boot/loader/entries"
    );
    let plan = bootupd::plan(
        &payload,
        &entries,
        &bootupd::Options {
            boot_uuid: inp.boot_uuid,
            boot_label: inp.boot_label,
            serial: inp.serial,
            console_commands: inp.console_commands,
            uefi: inp.uefi,
            bios: inp.bios,
        },
    )?;
    match plan.menu {
        bootupd::Menu::Blscfg => log::info!("bootloader: bootupd payload (EFI vendor {}), menu from blscfg", plan.vendor.as_deref().unwrap_or("-")),
        bootupd::Menu::Generated(n) => log::warn!(
            "bootloader: bootupd payload (EFI vendor {}), but the image's GRUB has no blscfg: {n} menu entries generated from the BLS entries; deployments made later on the node appear in the menu only once its grub.cfg is regenerated",
            plan.vendor.as_deref().unwrap_or("-")
        ),
    }

    let mut files = BootFiles {
        esp: Vec::new(),
        bios: None,
        configs: GrubConfigs::Bootupd {
            files: plan.boot.iter().map(|(rel, _, _)| rel.clone()).collect(),
        },
    };
    let generated = inp.work.join("esp-generated");
    let copied = inp.work.join("esp-image");
    for (rel, content) in &plan.esp {
        let src = match content {
            // Copied out through the rooted reader: the ESP staging then reads only these.
            bootupd::Content::Image(p) => {
                let dest = copied.join(rel);
                fs::create_dir_all(dest.parent().expect("ESP paths have a parent"))?;
                inp.image.copy_file(p, &dest)?;
                dest
            }
            bootupd::Content::Text(t) => {
                let p = generated.join(rel);
                fs::create_dir_all(p.parent().expect("ESP paths have a parent"))?;
                fs::write(&p, t).with_context(|| format!("writing {}", p.display()))?;
                p
            }
        };
        files.esp.push((rel.clone(), src));
    }
    for (rel, text, mode) in &plan.boot {
        let p = inp.boot_dir.join(rel);
        fs::create_dir_all(p.parent().expect("boot paths have a parent"))?;
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(*mode))?;
    }
    if let Some(core) = &plan.bios {
        let moddir = image_grub_modules(inp, "i386-pc")?.context(
            "BIOS boot wanted but the image has no GRUB modules in /usr/lib/grub/i386-pc",
        )?;
        let grub_dir = inp.boot_dir.join(bootupd::GRUB2_DIR);
        // Modules on /boot too, as grub2-install puts them, for `insmod` and command autoload.
        copy_dir(&moddir, &grub_dir.join("i386-pc"))?;
        let out = make_core_image(
            inp,
            "i386-pc",
            &moddir,
            &core.prefix,
            &core.early_config,
            &core.modules,
        )?;
        let boot_img = fs::read(moddir.join("boot.img"))
            .with_context(|| format!("reading {}/boot.img", moddir.display()))?;
        files.bios = Some((boot_img, fs::read(&out)?));
    }
    Ok(files)
}

/// The image's own GRUB image maker, Fedora/RHCOS name first (issue #12 row 12).
const IMAGE_MKIMAGE: &[&str] = &["usr/bin/grub2-mkimage", "usr/bin/grub-mkimage"];

/// A GRUB core image for `platform` with `early_config` compiled in: made by the image's
/// own `grub2-mkimage`/`grub-mkimage` from its own modules when the build host can run it
/// (CoreOS makes it with the image's GRUB, through bootupd and grub2-install), else by the
/// host's `grub-mkimage` from the copies of the image's modules in `moddir`.
fn make_core_image(
    inp: &Inputs,
    platform: &str,
    moddir: &Path,
    prefix: &str,
    early_config: &str,
    modules: &[impl AsRef<std::ffi::OsStr>],
) -> Result<PathBuf> {
    use super::image_exec::{find_tool, SCRATCH_IN_IMAGE};
    let scratch = inp.work.join(format!("mkimage-{platform}"));
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let early = scratch.join("early.cfg");
    fs::write(&early, early_config).with_context(|| format!("writing {}", early.display()))?;
    let out = scratch.join("core.img");
    let image_tool = inp
        .image_exec
        .and_then(|x| find_tool(inp.image, IMAGE_MKIMAGE).map(|tool| (x, tool)));
    let (mut c, tool) = match image_tool {
        Some((x, tool)) => {
            let mut c = x.command(&format!("/{tool}"), &scratch);
            c.arg("-d")
                .arg(Path::new("/").join(GRUB_LIB).join(platform))
                .arg("-c")
                .arg(format!("{SCRATCH_IN_IMAGE}/early.cfg"))
                .arg("-o")
                .arg(format!("{SCRATCH_IN_IMAGE}/core.img"));
            (c, format!("the image's /{tool}"))
        }
        None => {
            cmd::require("grub-mkimage", "grub-common")?;
            let mut c = Command::new("grub-mkimage");
            c.arg("-d")
                .arg(moddir)
                .arg("-c")
                .arg(&early)
                .arg("-o")
                .arg(&out);
            (c, "the build host's grub-mkimage".to_string())
        }
    };
    c.args(["-O", platform, "-p", prefix]).args(modules);
    cmd::run(&mut c).with_context(|| format!("making the GRUB {platform} image with {tool}"))?;
    log::info!("GRUB {platform} image made by {tool}");
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        if e.file_type()?.is_file() {
            fs::copy(e.path(), to.join(e.file_name()))
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// GRUB's MBR code (`boot.img`) patched to load the core image from `core_lba`, as
/// grub-bios-setup does for a disk (pure). Returns the 440 bytes of boot code.
pub fn patch_boot_img(boot_img: &[u8], core_lba: u64) -> Result<[u8; 440]> {
    ensure!(
        boot_img.len() == 512,
        "boot.img is {} bytes, expected 512",
        boot_img.len()
    );
    let mut b = [0u8; 440];
    b.copy_from_slice(&boot_img[..440]);
    // GRUB_BOOT_MACHINE_KERNEL_SECTOR: where the core image starts.
    b[0x5c..0x64].copy_from_slice(&core_lba.to_le_bytes());
    // GRUB_BOOT_MACHINE_BOOT_DRIVE: 0xff = use the drive the BIOS booted from.
    b[0x64] = 0xff;
    // GRUB_BOOT_MACHINE_DRIVE_CHECK: a hard disk, so skip the floppy probe (two NOPs).
    b[0x66] = 0x90;
    b[0x67] = 0x90;
    Ok(b)
}

/// Core image patched so its first sector (diskboot) loads the rest from `core_lba + 1`
/// on (pure): the blocklist at the end of the first sector, terminated by a zero entry.
pub fn patch_core_img(core: &[u8], core_lba: u64, max_len: u64) -> Result<Vec<u8>> {
    ensure!(
        core.len() > 512,
        "core.img too small ({} bytes)",
        core.len()
    );
    let sectors = (core.len() as u64).div_ceil(512);
    ensure!(
        sectors * 512 <= max_len,
        "GRUB's core image ({} KiB) does not fit the BIOS-BOOT partition ({} KiB)",
        sectors / 2,
        max_len / 1024
    );
    let mut c = core.to_vec();
    c.resize((sectors * 512) as usize, 0);
    let entry = 0x1f4;
    c[entry..entry + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    c[entry + 8..entry + 10].copy_from_slice(
        &u16::try_from(sectors - 1)
            .context("core image too large")?
            .to_le_bytes(),
    );
    // segment stays as grub-mkimage wrote it (0x820)
    c[entry - 12..entry].fill(0);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: &str = "title Debian GNU/Linux 12 (bookworm) 12.0 (ostree:0)\nversion 1\noptions root=LABEL=root rw ignition.platform.id=qemu ostree=/ostree/boot.1/default/abc/0\nlinux /ostree/default-abc/vmlinuz-6.1.0-50-amd64\ninitrd /ostree/default-abc/initramfs-6.1.0-50-amd64.img\n";

    #[test]
    fn bls_to_grub_cfg_golden() {
        let e = parse_bls(ENTRY).unwrap();
        assert_eq!(e.version, "1");
        assert_eq!(
            e.initrd,
            ["/ostree/default-abc/initramfs-6.1.0-50-amd64.img"]
        );
        let cfg = render_grub_cfg(
            &[e],
            Some(SerialConsole {
                unit: 0,
                speed: 115200,
            }),
            false,
        );
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/disk/grub.cfg");
        if std::env::var_os("LAYERBOOT_UPDATE_GOLDEN").is_some() {
            fs::write(&golden, &cfg).unwrap();
        }
        pretty_assertions::assert_eq!(fs::read_to_string(golden).unwrap(), cfg);
        assert!(parse_bls("title x\n").is_err());
    }

    /// #15 item 1: an image whose bootloader files are symlinks to host paths (absolute,
    /// or escaping by `..`) gets its *own* files staged, never the build host's.
    #[test]
    fn image_symlinks_never_reach_host_files() {
        use std::os::unix::fs::symlink;
        let t = tempfile::tempdir().unwrap();
        // A host file only `..` can reach from inside the image, and the image's own file
        // at the path that same link names when resolved inside the image.
        let host_secret = format!("HOST-SECRET-{}\n", std::process::id());
        let secret = t.path().join("host-secret");
        fs::write(&secret, &host_secret).unwrap();
        let img = t.path().join("deploy");
        let inside = img.join(secret.strip_prefix("/").unwrap());
        fs::create_dir_all(inside.parent().unwrap()).unwrap();
        fs::write(&inside, "IMAGE-ESCAPE\n").unwrap();
        let escape = format!(
            "{}{}",
            "../".repeat(40),
            secret.strip_prefix("/").unwrap().display()
        );
        let up = img.join(bootupd::UPDATES_DIR).join("EFI");
        let st = img.join(bootupd::STATIC_DIR);
        for d in [
            up.join("BOOT"),
            up.join("fedora"),
            st.join("configs.d"),
            img.join("etc"),
        ] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(img.join("etc/shadow"), "IMAGE-SHADOW\n").unwrap();
        fs::write(img.join("etc/hostname"), "IMAGE-HOSTNAME\n").unwrap();
        fs::write(img.join("etc/passwd"), "IMAGE-PASSWD\nblscfg\n").unwrap();
        fs::write(up.join("BOOT/BOOTX64.EFI"), "shim").unwrap();
        symlink("/etc/hostname", up.join("fedora/grubx64.efi")).unwrap();
        symlink("/etc/shadow", st.join("grub-static-pre.cfg")).unwrap();
        symlink(
            "../../../../../../../../../etc/passwd",
            st.join("configs.d/10_blscfg.cfg"),
        )
        .unwrap();
        symlink(&escape, st.join("grub-static-efi.cfg")).unwrap();
        let boot = t.path().join("boot");
        fs::create_dir_all(boot.join("loader/entries")).unwrap();
        fs::write(boot.join("loader/entries/ostree-1-x.conf"), ENTRY).unwrap();
        let work = t.path().join("work");
        fs::create_dir_all(&work).unwrap();
        let image = RootedDir::open(&img).unwrap();
        let files = prepare(&Inputs {
            image: &image,
            boot_dir: &boot,
            boot_label: "boot",
            boot_uuid: None,
            serial: None,
            console_commands: None,
            uefi: true,
            bios: false,
            work: &work,
            image_exec: None,
        })
        .unwrap();
        let cfg = fs::read_to_string(boot.join("grub2/grub.cfg")).unwrap();
        assert!(
            cfg.contains("IMAGE-SHADOW") && cfg.contains("IMAGE-PASSWD"),
            "{cfg}"
        );
        let esp: std::collections::BTreeMap<_, _> = files
            .esp
            .iter()
            .map(|(rel, p)| (rel.as_str(), fs::read_to_string(p).unwrap()))
            .collect();
        assert_eq!(esp["EFI/fedora/grubx64.efi"], "IMAGE-HOSTNAME\n");
        assert_eq!(esp["EFI/fedora/grub.cfg"], "IMAGE-ESCAPE\n");
        // The host's own /etc/shadow starts with root's entry.
        let shadow = fs::read_to_string("/etc/shadow").unwrap_or_default();
        let shadow_root = shadow
            .lines()
            .find(|l| l.starts_with("root:"))
            .unwrap_or("root:");
        for (rel, text) in esp
            .iter()
            .map(|(r, t)| (*r, t.as_str()))
            .chain([("grub.cfg", cfg.as_str())])
        {
            assert!(!text.contains(host_secret.trim()), "host file in {rel}");
            assert!(!text.contains(shadow_root), "host /etc/shadow in {rel}");
        }
        // Every staged ESP file is a copy in the scratch space, not a path into the image.
        assert!(files.esp.iter().all(|(_, p)| p.starts_with(&work)));
    }

    #[test]
    fn bios_patching() {
        let mut boot = vec![0u8; 512];
        boot[0x66] = 0xeb;
        let b = patch_boot_img(&boot, 2048).unwrap();
        assert_eq!(&b[0x5c..0x64], &2048u64.to_le_bytes());
        assert_eq!((b[0x64], b[0x66], b[0x67]), (0xff, 0x90, 0x90));
        let mut core = vec![0u8; 512 * 60 + 10];
        core[0x1fe] = 0x20;
        core[0x1ff] = 0x08;
        let c = patch_core_img(&core, 2048, 1 << 20).unwrap();
        assert_eq!(c.len(), 512 * 61);
        assert_eq!(&c[0x1f4..0x1fc], &2049u64.to_le_bytes());
        assert_eq!(&c[0x1fc..0x1fe], &60u16.to_le_bytes());
        assert_eq!(&c[0x1fe..0x200], &[0x20, 0x08], "segment kept");
        assert!(patch_core_img(&core, 2048, 4096)
            .unwrap_err()
            .to_string()
            .contains("does not fit"));
        assert!(patch_boot_img(&[0; 100], 1).is_err());
    }
}
