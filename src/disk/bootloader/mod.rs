//! The bootloader, from the image's own files: bootupd's payload
//! (`/usr/lib/bootupd/updates/`) when the image ships one, else the image's GRUB modules
//! (`/usr/lib/grub/{x86_64-efi,i386-pc}`) turned into an EFI binary and a BIOS core image,
//! with a GRUB config that reads the deployment's BLS entries at boot (`blscfg`) when that
//! GRUB has the command, or one generated from them now (Debian 12's GRUB has none).
//! Either way the config adds `ignition.firstboot` while `/boot/ignition.firstboot`
//! exists, as CoreOS's does.

//!
//! [`grub`] is the plain-GRUB strategy (and the BIOS boot code both strategies install),
//! [`bootupd`] plans the bootupd one, [`bls`] reads the deployment's BLS entries; this
//! module picks the strategy and stages its files.

pub mod bls;
pub mod bootupd;
pub mod grub;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

use crate::bootimage::plan::SerialConsole;
use crate::io::RootedDir;

pub use bls::{parse_bls, read_bls_entries, BlsEntry};
pub(crate) use grub::EFI_MODULES;
use grub::{image_grub_modules, make_core_image, prepare_grub};
pub use grub::{patch_boot_img, patch_core_img, MenuSource};

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
    /// layerboot's own grub.cfg (menu from `menu`), and CoreOS's console.cfg.
    Plain {
        grub_cfg: String,
        console_cfg: Option<String>,
        menu: MenuSource,
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

fn prepare_bootupd(inp: &Inputs) -> Result<BootFiles> {
    let payload = bootupd::scan(inp.image)?;
    add_firstboot_var_to_entries(inp.boot_dir)?;
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

/// Give every BLS entry `$ignition_firstboot` in its options, for GRUB configs whose menu
/// comes from the entries as they are (blscfg, bootupd's): CoreOS deploys with it among the
/// kernel arguments, and ostree then carries the options over to every later deployment.
fn add_firstboot_var_to_entries(boot_dir: &Path) -> Result<()> {
    let entries_dir = boot_dir.join("loader/entries");
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
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::grub::*;
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
            &MenuSource::Generated,
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
    fn blscfg_is_found_under_the_module_grub_names_for_it() {
        let cases: &[(&str, Option<&str>)] = &[
            // Fedora/RHEL GRUB (the blscfg patch).
            (
                "blocklist: blocklist\n*blscfg: blscfg\nboot: boot\n",
                Some("blscfg"),
            ),
            // Upstream GRUB 2.14 (Debian forky/sid).
            (
                "*blscfg: blsuki\nlscoreboot: cbls\n*uki: blsuki\n",
                Some("blsuki"),
            ),
            // Debian 12's GRUB 2.06.
            ("blocklist: blocklist\nboot: boot\n", None),
            ("", None),
        ];
        for (lst, want) in cases {
            assert_eq!(blscfg_module(lst).as_deref(), *want, "{lst:?}");
        }
    }

    #[test]
    fn blscfg_menu_only_when_every_platform_has_it_from_the_same_module() {
        let b = |m: &str| Some(m.to_string());
        let blscfg = |m: &str| MenuSource::Blscfg { module: m.into() };
        let cases: &[(&[Option<String>], MenuSource)] = &[
            (&[b("blsuki"), b("blsuki")], blscfg("blsuki")),
            (&[b("blscfg")], blscfg("blscfg")),
            // The EFI GRUB has it, the BIOS modules do not: one grub.cfg serves both.
            (&[b("blsuki"), None], MenuSource::Generated),
            (&[None, b("blsuki")], MenuSource::Generated),
            (&[b("blscfg"), b("blsuki")], MenuSource::Generated),
            (&[None], MenuSource::Generated),
            (&[], MenuSource::Generated),
        ];
        for (providers, want) in cases {
            assert_eq!(&menu_source(providers), want, "{providers:?}");
        }
    }

    #[test]
    fn blscfg_grub_cfg_golden() {
        let cfg = render_grub_cfg(
            &[parse_bls(ENTRY).unwrap()],
            None,
            true,
            &MenuSource::Blscfg {
                module: "blsuki".into(),
            },
        );
        let golden =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/disk/grub-blscfg.cfg");
        if std::env::var_os("LAYERBOOT_UPDATE_GOLDEN").is_some() {
            fs::write(&golden, &cfg).unwrap();
        }
        pretty_assertions::assert_eq!(fs::read_to_string(golden).unwrap(), cfg);
        // The entries are read at boot: none is rendered now.
        assert!(!cfg.contains("menuentry"), "{cfg}");
        let set = cfg.find("set ignition_firstboot=").unwrap();
        assert!(
            set < cfg.find("\nblscfg\n").unwrap(),
            "set before blscfg expands it"
        );
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
