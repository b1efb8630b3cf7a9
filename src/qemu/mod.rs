//! QEMU as layerboot drives it: a pure [`QemuConfig`] → argv builder (unit-tested without
//! launching anything), the accelerator probe ([`accel`]), OVMF lookup ([`firmware`]) and
//! the process owner ([`runner`]).
//!
//! The machine is always `q35` with `-nodefaults` (no NIC, no VGA, no default serial),
//! `-no-reboot` (a guest reboot ends the run, so a crash loop cannot eat the timeout) and
//! `-display none`. The serial console and the virtio-serial port both go to files that
//! the runner reads incrementally.

pub mod accel;
pub mod firmware;
pub(crate) mod runner;

use std::ffi::OsString;
use std::path::PathBuf;

pub use accel::Accel;

/// Name of the virtio-serial port the guest can write result lines to; inside the guest
/// it appears as `/dev/virtio-ports/layerboot.0` (and `/sys/class/virtio-ports/vportNpM/name`).
pub const VIRTIO_PORT_NAME: &str = "layerboot.0";

/// fw_cfg key under which Ignition's `qemu` platform looks for its config.
pub const IGNITION_FW_CFG_KEY: &str = "opt/com.coreos/config";

/// Firmware with everything resolved: for UEFI, the read-only CODE image and this run's
/// private, writable copy of the VARS store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirmwareConfig {
    /// SeaBIOS, QEMU's default.
    Bios,
    Uefi {
        code: PathBuf,
        vars: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vmdk,
    /// VHD.
    Vpc,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vpc => "vpc",
        }
    }
}

/// One virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub format: DiskFormat,
    /// Logical and physical block size: 512 or 4096 (a "4Kn" disk).
    pub sector_size: u32,
    /// Writes go to a temporary overlay that QEMU discards (`snapshot=on`).
    pub snapshot: bool,
    pub read_only: bool,
    /// Firmware boot order; `None` for disks that are not meant to be booted.
    pub bootindex: Option<u32>,
    /// Shows up in the guest as `/dev/disk/by-id/virtio-<serial>`.
    pub serial: Option<String>,
}

/// Direct kernel boot: QEMU loads the kernel and initrd itself (no bootloader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBoot {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub append: String,
}

/// Everything that determines the QEMU command line. Plain data; [`QemuConfig::argv`]
/// is a pure function of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    pub binary: PathBuf,
    pub accel: Accel,
    pub memory_mib: u64,
    pub cpus: u32,
    /// `-cpu` model; `None`: `host` under KVM, `max` under TCG.
    pub cpu_model: Option<String>,
    pub firmware: FirmwareConfig,
    pub disks: Vec<DiskConfig>,
    /// An ISO attached as a CD-ROM on the q35 AHCI controller.
    pub cdrom: Option<CdromConfig>,
    pub kernel: Option<KernelBoot>,
    /// `-fw_cfg name=KEY,file=PATH` entries.
    pub fw_cfg: Vec<(String, PathBuf)>,
    /// The serial console (ttyS0) is written here.
    pub serial_log: PathBuf,
    /// The [`VIRTIO_PORT_NAME`] port is written here.
    pub virtio_log: PathBuf,
    /// Appended verbatim (escape hatch).
    pub extra_args: Vec<OsString>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdromConfig {
    pub path: PathBuf,
    pub bootindex: Option<u32>,
}

/// QEMU option values separate keys with commas; a literal comma is written twice.
pub fn escape_opt(value: &std::path::Path) -> String {
    value.to_string_lossy().replace(',', ",,")
}

impl QemuConfig {
    /// The full argv, program first.
    pub fn argv(&self) -> Vec<OsString> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&[
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-machine",
            "q35",
        ]);
        let (accel, default_model) = match self.accel {
            Accel::Kvm => ("kvm", "host"),
            Accel::Tcg => ("tcg", "max"),
        };
        let model = self.cpu_model.as_deref().unwrap_or(default_model);
        push(&["-accel", accel, "-cpu", model]);
        let mem = self.memory_mib.to_string();
        let smp = self.cpus.to_string();
        push(&["-m", &mem, "-smp", &smp]);
        if let FirmwareConfig::Uefi { code, vars } = &self.firmware {
            let code = format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                escape_opt(code)
            );
            let vars = format!("if=pflash,format=raw,unit=1,file={}", escape_opt(vars));
            push(&["-drive", &code, "-drive", &vars]);
        }
        let serial = format!("file,id=serial0,path={}", escape_opt(&self.serial_log));
        push(&["-chardev", &serial, "-serial", "chardev:serial0"]);
        let port = format!("file,id=lbport,path={}", escape_opt(&self.virtio_log));
        let portdev =
            format!("virtserialport,bus=vserial0.0,chardev=lbport,name={VIRTIO_PORT_NAME}");
        push(&[
            "-device",
            "virtio-serial-pci,id=vserial0",
            "-chardev",
            &port,
            "-device",
            &portdev,
        ]);
        // Early userspace (systemd, Ignition) blocks on entropy without it.
        push(&["-device", "virtio-rng-pci"]);
        for (i, d) in self.disks.iter().enumerate() {
            let mut drive = format!(
                "if=none,id=disk{i},format={},file={}",
                d.format.as_str(),
                escape_opt(&d.path)
            );
            if d.snapshot {
                drive.push_str(",snapshot=on");
            }
            if d.read_only {
                drive.push_str(",readonly=on");
            }
            let mut dev = format!("virtio-blk-pci,drive=disk{i}");
            if d.sector_size != 512 {
                dev.push_str(&format!(
                    ",logical_block_size={0},physical_block_size={0}",
                    d.sector_size
                ));
            }
            if let Some(serial) = &d.serial {
                dev.push_str(&format!(",serial={serial}"));
            }
            if let Some(b) = d.bootindex {
                dev.push_str(&format!(",bootindex={b}"));
            }
            push(&["-drive", &drive, "-device", &dev]);
        }
        if let Some(cd) = &self.cdrom {
            let drive = format!(
                "if=none,id=cd0,media=cdrom,format=raw,readonly=on,file={}",
                escape_opt(&cd.path)
            );
            let mut dev = "ide-cd,drive=cd0,bus=ide.0".to_string();
            if let Some(b) = cd.bootindex {
                dev.push_str(&format!(",bootindex={b}"));
            }
            push(&["-drive", &drive, "-device", &dev]);
        }
        for (name, path) in &self.fw_cfg {
            let v = format!("name={name},file={}", escape_opt(path));
            push(&["-fw_cfg", &v]);
        }
        let mut argv: Vec<OsString> = vec![self.binary.clone().into_os_string()];
        argv.extend(a.into_iter().map(OsString::from));
        if let Some(k) = &self.kernel {
            argv.push("-kernel".into());
            argv.push(k.kernel.clone().into_os_string());
            if let Some(initrd) = &k.initrd {
                argv.push("-initrd".into());
                argv.push(initrd.clone().into_os_string());
            }
            argv.push("-append".into());
            argv.push(k.append.clone().into());
        }
        argv.extend(self.extra_args.iter().cloned());
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn base(firmware: FirmwareConfig) -> QemuConfig {
        QemuConfig {
            binary: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            memory_mib: 1024,
            cpus: 1,
            cpu_model: None,
            firmware,
            disks: vec![],
            cdrom: None,
            kernel: None,
            fw_cfg: vec![],
            serial_log: "/t/serial.log".into(),
            virtio_log: "/t/virtio.log".into(),
            extra_args: vec![],
        }
    }

    fn line(c: &QemuConfig) -> String {
        c.argv()
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn disk(path: &str, format: DiskFormat, sector_size: u32) -> DiskConfig {
        DiskConfig {
            path: path.into(),
            format,
            sector_size,
            snapshot: true,
            read_only: false,
            bootindex: Some(1),
            serial: None,
        }
    }

    const COMMON: &str = "qemu-system-x86_64 -nodefaults -no-reboot -display none -machine q35 -accel tcg -cpu max -m 1024 -smp 1";
    const IO: &str = "-chardev file,id=serial0,path=/t/serial.log -serial chardev:serial0 -device virtio-serial-pci,id=vserial0 -chardev file,id=lbport,path=/t/virtio.log -device virtserialport,bus=vserial0.0,chardev=lbport,name=layerboot.0 -device virtio-rng-pci";
    const UEFI: &str = "-drive if=pflash,format=raw,unit=0,readonly=on,file=/c.fd -drive if=pflash,format=raw,unit=1,file=/t/vars.fd";

    #[test]
    fn argv_per_artifact_kind_firmware_and_sector_size() {
        let uefi = FirmwareConfig::Uefi {
            code: "/c.fd".into(),
            vars: "/t/vars.fd".into(),
        };
        let cases: Vec<(&str, QemuConfig, String)> = vec![
            (
                "raw disk, bios, 512",
                QemuConfig { disks: vec![disk("/a.raw", DiskFormat::Raw, 512)], ..base(FirmwareConfig::Bios) },
                format!("{COMMON} {IO} -drive if=none,id=disk0,format=raw,file=/a.raw,snapshot=on -device virtio-blk-pci,drive=disk0,bootindex=1"),
            ),
            (
                "qcow2 disk, uefi, 4096",
                QemuConfig { disks: vec![disk("/a.qcow2", DiskFormat::Qcow2, 4096)], ..base(uefi.clone()) },
                format!("{COMMON} {UEFI} {IO} -drive if=none,id=disk0,format=qcow2,file=/a.qcow2,snapshot=on -device virtio-blk-pci,drive=disk0,logical_block_size=4096,physical_block_size=4096,bootindex=1"),
            ),
            (
                "iso as cdrom with a blank install target and ignition",
                QemuConfig {
                    cdrom: Some(CdromConfig { path: "/l.iso".into(), bootindex: Some(1) }),
                    disks: vec![DiskConfig { snapshot: false, bootindex: None, serial: Some("extra1".into()), ..disk("/t/extra1.raw", DiskFormat::Raw, 512) }],
                    fw_cfg: vec![(IGNITION_FW_CFG_KEY.into(), "/c.ign".into())],
                    ..base(uefi.clone())
                },
                format!("{COMMON} {UEFI} {IO} -drive if=none,id=disk0,format=raw,file=/t/extra1.raw -device virtio-blk-pci,drive=disk0,serial=extra1 -drive if=none,id=cd0,media=cdrom,format=raw,readonly=on,file=/l.iso -device ide-cd,drive=cd0,bus=ide.0,bootindex=1 -fw_cfg name=opt/com.coreos/config,file=/c.ign"),
            ),
            (
                "iso as disk, read-only",
                QemuConfig { disks: vec![DiskConfig { read_only: true, snapshot: false, ..disk("/l.iso", DiskFormat::Raw, 512) }], ..base(FirmwareConfig::Bios) },
                format!("{COMMON} {IO} -drive if=none,id=disk0,format=raw,file=/l.iso,readonly=on -device virtio-blk-pci,drive=disk0,bootindex=1"),
            ),
            (
                "direct kernel boot, kvm, extra args",
                QemuConfig {
                    accel: Accel::Kvm,
                    kernel: Some(KernelBoot { kernel: "/k".into(), initrd: Some("/i".into()), append: "console=ttyS0 quiet".into() }),
                    extra_args: vec!["-s".into()],
                    ..base(FirmwareConfig::Bios)
                },
                format!("{} {IO} -kernel /k -initrd /i -append console=ttyS0 quiet -s", COMMON.replace("tcg -cpu max", "kvm -cpu host")),
            ),
            (
                "a chosen cpu model, tcg and kvm alike",
                QemuConfig { cpu_model: Some("Nehalem".into()), disks: vec![disk("/a.raw", DiskFormat::Raw, 512)], ..base(FirmwareConfig::Bios) },
                format!("{} {IO} -drive if=none,id=disk0,format=raw,file=/a.raw,snapshot=on -device virtio-blk-pci,drive=disk0,bootindex=1", COMMON.replace("-cpu max", "-cpu Nehalem")),
            ),
            (
                "a chosen cpu model under kvm",
                QemuConfig { accel: Accel::Kvm, cpu_model: Some("Haswell-v4,-hle".into()), kernel: Some(KernelBoot { kernel: "/k".into(), initrd: None, append: String::new() }), ..base(FirmwareConfig::Bios) },
                format!("{} {IO} -kernel /k -append ", COMMON.replace("tcg -cpu max", "kvm -cpu Haswell-v4,-hle")),
            ),
        ];
        for (name, cfg, want) in cases {
            assert_eq!(line(&cfg), want, "{name}");
        }
    }

    #[test]
    fn append_stays_one_argument_and_commas_are_escaped() {
        let mut c = base(FirmwareConfig::Bios);
        c.kernel = Some(KernelBoot {
            kernel: "/k".into(),
            initrd: None,
            append: "a=1 b=2".into(),
        });
        c.serial_log = "/t/a,b.log".into();
        let argv = c.argv();
        assert!(argv.contains(&OsString::from("a=1 b=2")));
        assert!(!argv.contains(&OsString::from("-initrd")));
        assert!(argv.contains(&OsString::from("file,id=serial0,path=/t/a,,b.log")));
        assert_eq!(escape_opt(Path::new("x,,y")), "x,,,,y");
    }
}
