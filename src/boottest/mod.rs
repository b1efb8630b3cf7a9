//! Boot an artifact in QEMU and decide from its output whether it booted what it should.
//!
//! The library entry point is [`run`] (async) or [`run_blocking`]: build
//! [`BootTestSettings`] with [`BootTestSettings::new`], adjust fields, and get an
//! [`Outcome`]. A *failed boot* is `Ok(Outcome { passed: false, .. })`; `Err` means the
//! test could not be carried out (missing file, bad settings, no QEMU, interrupted).
//!
//! ```no_run
//! use layerboot::boottest::{run_blocking, Artifact, BootTestSettings, Firmware, Pattern};
//! let mut s = BootTestSettings::new(Artifact::RawDisk("disk.raw".into()));
//! s.firmware = Firmware::Uefi;
//! s.expect = vec![Pattern::parse("LAYERED-OK").unwrap()];
//! s.fail_on = vec![Pattern::parse("Kernel panic").unwrap()];
//! let outcome = run_blocking(&s).unwrap();
//! assert!(outcome.passed, "{}", outcome.reason);
//! ```
//!
//! # Guest → harness protocol
//! Lines are read from two sources, and patterns match lines from either:
//! - the serial console (`ttyS0`, so the guest needs `console=ttyS0`);
//! - the virtio-serial port named [`VIRTIO_PORT_NAME`] (`layerboot.0`), which the guest
//!   sees as `/dev/virtio-ports/layerboot.0` (needs the `virtio_console` module): one
//!   message per line, UTF-8, `\n`-terminated, e.g. `echo "LAYERED-OK $id" >
//!   /dev/virtio-ports/layerboot.0`. Useful when the console is noisy or quiet.
//!
//! Expect patterns must be seen in the given order; fail-on patterns end the run as a
//! failure as soon as one matches (see [`matcher`]). Without expect patterns, a run
//! passes when the guest powers off by itself without a fail-on hit.
//!
//! # Guest hardware
//! q35, virtio-blk disks (boot disk first, then extra disks with serials `extra1`, …,
//! so they appear as `/dev/disk/by-id/virtio-extra1`), ISOs as an AHCI CD-ROM, no
//! network unless added through `extra_qemu_args`; the Ignition config, if any, as
//! fw_cfg `opt/com.coreos/config` (Ignition's `qemu` platform; in the guest
//! `/sys/firmware/qemu_fw_cfg/by_name/opt/com.coreos/config/raw`).

pub(crate) mod junit;
pub(crate) mod matcher;

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use crate::qemu::{Accel, DiskFormat, VIRTIO_PORT_NAME};
pub use matcher::{Pattern, Source};

use crate::qemu::{self, CdromConfig, DiskConfig, FirmwareConfig, KernelBoot, QemuConfig};

/// What to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Artifact {
    /// A raw disk image (metal, metal4k).
    RawDisk(PathBuf),
    /// A qcow2 disk image.
    Qcow2(PathBuf),
    /// A vmdk disk image (VMware, AWS; streamOptimized ones are read-only to QEMU).
    Vmdk(PathBuf),
    /// A VHD (Azure's fixed VHD, or dynamic), QEMU's `vpc`.
    Vhd(PathBuf),
    /// An ISO attached as a CD-ROM (the usual live ISO boot).
    IsoCdrom(PathBuf),
    /// An ISO attached as a disk (a hybrid ISO written to a USB stick).
    IsoAsDisk(PathBuf),
    /// QEMU loads the kernel and initrd directly; no firmware boot path involved.
    DirectKernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        append: String,
    },
}

/// The `--kind` values; [`ArtifactKind::detect`] picks one from a file's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArtifactKind {
    Raw,
    Qcow2,
    Vmdk,
    Vhd,
    /// ISO as CD-ROM.
    Iso,
    IsoAsDisk,
}

impl ArtifactKind {
    /// From magic numbers: qcow2 `QFI\xfb` at 0, vmdk `KDMV` (sparse extent) or a
    /// `# Disk DescriptorFile` at 0, a VHD footer `conectix` at 0 (dynamic) or in the last
    /// 512 bytes (`tail`; fixed), ISO9660 `CD001` at 32769, else raw.
    pub fn detect_bytes(head: &[u8], tail: &[u8]) -> Self {
        if head.starts_with(b"QFI\xfb") {
            ArtifactKind::Qcow2
        } else if head.starts_with(b"KDMV") || head.starts_with(b"# Disk DescriptorFile") {
            ArtifactKind::Vmdk
        } else if head.starts_with(b"conectix") || tail.starts_with(b"conectix") {
            ArtifactKind::Vhd
        } else if head.len() >= 32774 && &head[32769..32774] == b"CD001" {
            ArtifactKind::Iso
        } else {
            ArtifactKind::Raw
        }
    }

    pub fn detect(path: &Path) -> Result<Self> {
        use std::io::{Seek, SeekFrom};
        let mut f =
            File::open(path).with_context(|| format!("opening artifact {}", path.display()))?;
        let mut head = Vec::with_capacity(32774);
        (&mut f)
            .take(32774)
            .read_to_end(&mut head)
            .with_context(|| format!("reading artifact {}", path.display()))?;
        let len = f
            .metadata()
            .with_context(|| format!("reading artifact {}", path.display()))?
            .len();
        let mut tail = Vec::with_capacity(512);
        if len >= 1024 {
            f.seek(SeekFrom::Start(len - 512))
                .and_then(|_| f.take(512).read_to_end(&mut tail))
                .with_context(|| format!("reading artifact {}", path.display()))?;
        }
        Ok(Self::detect_bytes(&head, &tail))
    }

    fn name(self) -> &'static str {
        match self {
            ArtifactKind::Raw => "raw",
            ArtifactKind::Qcow2 => "qcow2",
            ArtifactKind::Vmdk => "vmdk",
            ArtifactKind::Vhd => "VHD",
            ArtifactKind::Iso | ArtifactKind::IsoAsDisk => "ISO",
        }
    }

    pub fn artifact(self, path: PathBuf) -> Artifact {
        match self {
            ArtifactKind::Raw => Artifact::RawDisk(path),
            ArtifactKind::Qcow2 => Artifact::Qcow2(path),
            ArtifactKind::Vmdk => Artifact::Vmdk(path),
            ArtifactKind::Vhd => Artifact::Vhd(path),
            ArtifactKind::Iso => Artifact::IsoCdrom(path),
            ArtifactKind::IsoAsDisk => Artifact::IsoAsDisk(path),
        }
    }
}

/// A disk declared raw but holding qcow2 would reach the firmware as qcow2 bytes (no
/// partition table: UEFI "Not Found", SeaBIOS "not a bootable disk"), far from the cause.
fn check_declared_format(artifact: &Artifact) -> Result<()> {
    let (path, declared) = match artifact {
        Artifact::RawDisk(p) => (p, ArtifactKind::Raw),
        Artifact::Qcow2(p) => (p, ArtifactKind::Qcow2),
        Artifact::Vmdk(p) => (p, ArtifactKind::Vmdk),
        Artifact::Vhd(p) => (p, ArtifactKind::Vhd),
        _ => return Ok(()),
    };
    let found = ArtifactKind::detect(path)?;
    let is_disk = !matches!(found, ArtifactKind::Iso | ArtifactKind::IsoAsDisk);
    if is_disk && found != declared {
        bail!(
            "{} is a {} image, not {}",
            path.display(),
            found.name(),
            declared.name()
        );
    }
    Ok(())
}

impl Artifact {
    /// The boot disk this artifact is attached as, if any.
    fn boot_disk(&self) -> Option<(&Path, DiskFormat)> {
        match self {
            Artifact::RawDisk(p) | Artifact::IsoAsDisk(p) => Some((p, DiskFormat::Raw)),
            Artifact::Qcow2(p) => Some((p, DiskFormat::Qcow2)),
            Artifact::Vmdk(p) => Some((p, DiskFormat::Vmdk)),
            Artifact::Vhd(p) => Some((p, DiskFormat::Vpc)),
            _ => None,
        }
    }

    fn files(&self) -> Vec<&Path> {
        match self {
            Artifact::RawDisk(p)
            | Artifact::Qcow2(p)
            | Artifact::Vmdk(p)
            | Artifact::Vhd(p)
            | Artifact::IsoCdrom(p)
            | Artifact::IsoAsDisk(p) => vec![p],
            Artifact::DirectKernel { kernel, initrd, .. } => std::iter::once(kernel.as_path())
                .chain(initrd.as_deref())
                .collect(),
        }
    }

    fn display_name(&self) -> String {
        let p = self.files()[0];
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Firmware {
    /// OVMF (Debian package `ovmf`).
    Uefi,
    /// SeaBIOS.
    Bios,
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Firmware::Uefi => "uefi",
            Firmware::Bios => "bios",
        })
    }
}

/// A disk attached after the boot disk, e.g. the install target of a live ISO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraDisk {
    /// A sparse raw file of this many bytes, created for the run and deleted after it.
    Blank { size: u64 },
    /// An existing image; writes persist (e.g. to boot an installed disk afterwards).
    File { path: PathBuf, format: DiskFormat },
}

/// Everything one boot test needs. Construct with [`BootTestSettings::new`].
#[derive(Debug, Clone)]
pub struct BootTestSettings {
    /// Test case name (JUnit); defaults to the artifact's file name.
    pub name: String,
    pub artifact: Artifact,
    pub firmware: Firmware,
    /// Logical = physical sector size of the boot disk and extra disks: 512 or 4096.
    pub sector_size: u32,
    pub memory_mib: u64,
    pub cpus: u32,
    /// QEMU's `-cpu` model; `None`: `host` under KVM, `max` under TCG. Under TCG a smaller
    /// model boots much faster if the image runs on it (docs/boot-test.md).
    pub cpu_model: Option<String>,
    /// Wall-clock limit for the whole run.
    pub timeout: Duration,
    /// Ignition config passed as fw_cfg `opt/com.coreos/config`.
    pub ignition: Option<PathBuf>,
    pub extra_disks: Vec<ExtraDisk>,
    pub expect: Vec<Pattern>,
    pub fail_on: Vec<Pattern>,
    /// After every expect pattern was seen, keep going until the guest powers off
    /// (fail-on still applies) instead of stopping QEMU at once.
    pub wait_for_poweroff: bool,
    /// Let the guest's writes reach the boot disk image. Default false: writes go to a
    /// throwaway overlay and the artifact is left as it was. When the run stops at the
    /// last expect pattern, QEMU gets SIGTERM (it flushes and closes its images cleanly),
    /// but what the guest itself has not written back yet is lost: combine with
    /// `wait_for_poweroff` when a later boot depends on this one's writes.
    pub persist_writes: bool,
    /// Copy of the serial console.
    pub console_log: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    /// Appended to the QEMU command line.
    pub extra_qemu_args: Vec<OsString>,
    pub qemu_binary: PathBuf,
    /// `None`: KVM if it really works here, else TCG (see [`crate::qemu::accel`]).
    pub accel: Option<Accel>,
    /// Cancelled (the CLI cancels it on SIGINT, SIGTERM, SIGHUP: see [`crate::cancel`]),
    /// the run stops QEMU, removes its temporary files and returns
    /// [`crate::cancel::Cancelled`]. The library installs no signal handlers.
    pub cancel: crate::cancel::Cancel,
}

impl BootTestSettings {
    /// Defaults: UEFI, 512-byte sectors, 2 GiB, 1 vCPU, 10 minutes, no patterns.
    pub fn new(artifact: Artifact) -> Self {
        BootTestSettings {
            name: artifact.display_name(),
            artifact,
            firmware: Firmware::Uefi,
            sector_size: 512,
            memory_mib: 2048,
            cpus: 1,
            cpu_model: None,
            timeout: Duration::from_secs(600),
            ignition: None,
            extra_disks: Vec::new(),
            expect: Vec::new(),
            fail_on: Vec::new(),
            wait_for_poweroff: false,
            persist_writes: false,
            console_log: None,
            junit: None,
            extra_qemu_args: Vec::new(),
            qemu_binary: PathBuf::from("qemu-system-x86_64"),
            accel: None,
            cancel: Default::default(),
        }
    }

    /// Checks that need no file system.
    pub fn validate(&self) -> Result<()> {
        if self.sector_size != 512 && self.sector_size != 4096 {
            bail!(
                "unsupported sector size {}: use 512 or 4096",
                self.sector_size
            );
        }
        if self.sector_size != 512
            && self.artifact.boot_disk().is_none()
            && self.extra_disks.is_empty()
        {
            bail!(
                "--sector-size {} applies to disks, and {} boots with none attached",
                self.sector_size,
                self.artifact.display_name()
            );
        }
        if self.firmware == Firmware::Bios
            && self.sector_size == 4096
            && self.artifact.boot_disk().is_some()
        {
            bail!("BIOS firmware (SeaBIOS) cannot boot a disk with 4096-byte sectors: use --firmware uefi");
        }
        // Reports are written after the run: a missing directory must fail before it.
        for (what, file) in [
            ("--console-log", &self.console_log),
            ("--junit", &self.junit),
        ] {
            if let Some(f) = file {
                let dir = f.parent().filter(|p| !p.as_os_str().is_empty());
                if dir.is_some_and(|d| !d.is_dir()) {
                    bail!(
                        "{what} {}: directory {} does not exist",
                        f.display(),
                        dir.unwrap_or(Path::new(".")).display()
                    );
                }
            }
        }
        if self.memory_mib < 64 {
            bail!(
                "memory {} MiB is too small (at least 64 MiB)",
                self.memory_mib
            );
        }
        if self.cpus == 0 {
            bail!("at least one CPU is needed");
        }
        if let Some(m) = &self.cpu_model {
            validate_cpu_model(m)?;
        }
        if self.timeout.is_zero() {
            bail!("timeout must be greater than zero");
        }
        Ok(())
    }
}

/// A `-cpu` model name as QEMU's option syntax can carry it: a model (`Nehalem`,
/// `Haswell-v4`, `qemu64`, `max`, `host`) with optional `,+feature`/`,-feature`
/// suffixes, nothing that could start another option. QEMU itself says whether it knows
/// the model.
pub fn validate_cpu_model(model: &str) -> Result<()> {
    let name = model.split(',').next().unwrap_or("");
    let ok_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('-');
    let ok_features = model.split(',').skip(1).all(|f| {
        f.len() > 1
            && f.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '='))
    });
    if !ok_name || !ok_features {
        bail!("invalid CPU model {model:?}: expected a QEMU model name such as max, Nehalem or Haswell-v4, optionally with ,+feature or ,-feature");
    }
    Ok(())
}

/// Number of console lines kept in [`Outcome::console_tail`] and printed on failure.
pub const TAIL_LINES: usize = 40;

/// The verdict of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub passed: bool,
    /// Why it passed or failed, one line.
    pub reason: String,
    pub duration: Duration,
    pub accel: Accel,
    /// The last [`TAIL_LINES`] lines of the serial console.
    pub console_tail: Vec<String>,
    /// The whole serial console.
    pub console: String,
    /// Every line the guest wrote to the `layerboot.0` port.
    pub port_lines: Vec<String>,
    /// QEMU's exit status when it ended by itself; `None` when the harness stopped it.
    pub qemu_status: Option<ExitStatus>,
}

impl Outcome {
    /// The text a human reads on failure: the reason, then the console tail.
    pub fn report(&self) -> String {
        let mut s = format!(
            "boot test {}: {} ({:.1}s, {})\n",
            if self.passed { "passed" } else { "FAILED" },
            self.reason,
            self.duration.as_secs_f64(),
            self.accel
        );
        if !self.passed {
            s.push_str(&format!(
                "--- last {} console lines ---\n",
                self.console_tail.len()
            ));
            for l in &self.console_tail {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

/// [`run`] on a fresh current-thread runtime, for synchronous callers (tests). Must not
/// be called from inside a tokio runtime.
pub fn run_blocking(settings: &BootTestSettings) -> Result<Outcome> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")?
        .block_on(run(settings))
}

fn make_qemu_config(s: &BootTestSettings, accel: Accel, dir: &Path) -> Result<QemuConfig> {
    let firmware = match s.firmware {
        Firmware::Bios => FirmwareConfig::Bios,
        Firmware::Uefi => {
            let ovmf = qemu::firmware::locate()?;
            let vars = dir.join("OVMF_VARS.fd");
            fs::copy(&ovmf.vars_template, &vars).with_context(|| {
                format!(
                    "copying {} to {}",
                    ovmf.vars_template.display(),
                    vars.display()
                )
            })?;
            FirmwareConfig::Uefi {
                code: ovmf.code,
                vars,
            }
        }
    };
    let mut disks = Vec::new();
    if let Some((path, format)) = s.artifact.boot_disk() {
        disks.push(DiskConfig {
            path: path.to_path_buf(),
            format,
            sector_size: s.sector_size,
            snapshot: !s.persist_writes,
            read_only: false,
            bootindex: Some(1),
            serial: Some("boot".into()),
        });
    }
    for (i, extra) in s.extra_disks.iter().enumerate() {
        let n = i + 1;
        let (path, format) = match extra {
            ExtraDisk::Blank { size } => {
                let p = dir.join(format!("extra{n}.raw"));
                File::create(&p)
                    .and_then(|f| f.set_len(*size))
                    .with_context(|| format!("creating blank disk {}", p.display()))?;
                (p, DiskFormat::Raw)
            }
            ExtraDisk::File { path, format } => (path.clone(), *format),
        };
        disks.push(DiskConfig {
            path,
            format,
            sector_size: s.sector_size,
            snapshot: false,
            read_only: false,
            bootindex: None,
            serial: Some(format!("extra{n}")),
        });
    }
    let cdrom = match &s.artifact {
        Artifact::IsoCdrom(p) => Some(CdromConfig {
            path: p.clone(),
            bootindex: Some(1),
        }),
        _ => None,
    };
    let kernel = match &s.artifact {
        Artifact::DirectKernel {
            kernel,
            initrd,
            append,
        } => Some(KernelBoot {
            kernel: kernel.clone(),
            initrd: initrd.clone(),
            append: append.clone(),
        }),
        _ => None,
    };
    let fw_cfg = s
        .ignition
        .iter()
        .map(|p| (qemu::IGNITION_FW_CFG_KEY.to_string(), p.clone()))
        .collect();
    Ok(QemuConfig {
        binary: s.qemu_binary.clone(),
        accel,
        memory_mib: s.memory_mib,
        cpus: s.cpus,
        cpu_model: s.cpu_model.clone(),
        firmware,
        disks,
        cdrom,
        kernel,
        fw_cfg,
        serial_log: dir.join("serial.log"),
        virtio_log: dir.join("virtio-port.log"),
        extra_args: s.extra_qemu_args.clone(),
    })
}

enum End {
    Exited(ExitStatus),
    Decided,
    TimedOut,
    Cancelled,
}

/// Prefix of a run's temporary directory (see [`crate::cancel::sweep_stale`]).
const BOOTTEST_TMP: &str = "layerboot-boottest-";

/// Boot the artifact and decide. Writes the console log and JUnit file when asked to,
/// for passed and failed runs alike.
pub async fn run(s: &BootTestSettings) -> Result<Outcome> {
    s.validate()?;
    for f in s.artifact.files().into_iter().chain(s.ignition.as_deref()) {
        if !f.is_file() {
            bail!("{} does not exist or is not a file", f.display());
        }
    }
    check_declared_format(&s.artifact)?;
    for e in &s.extra_disks {
        if let ExtraDisk::File { path, .. } = e {
            if !path.is_file() {
                bail!("extra disk {} does not exist", path.display());
            }
        }
    }
    let accel = match s.accel {
        Some(a) => a,
        None => {
            let bin = s.qemu_binary.clone();
            tokio::task::spawn_blocking(move || qemu::accel::detect(&bin))
                .await
                .context("accelerator probe")?
        }
    };
    // Declared before the QEMU process so it is dropped (deleted) after QEMU is dead.
    crate::cancel::sweep_stale(&std::env::temp_dir(), BOOTTEST_TMP);
    let dir = tempfile::Builder::new()
        .prefix(&crate::cancel::temp_prefix(BOOTTEST_TMP))
        .tempdir()
        .context("creating a temporary directory")?;
    let config = make_qemu_config(s, accel, dir.path())?;
    let argv = config.argv();
    let start = Instant::now();
    let mut qemu = qemu::runner::QemuProcess::spawn(&argv, &dir.path().join("qemu.stderr"))?;
    let mut console = qemu::runner::FileTail::new(&config.serial_log);
    let mut port = qemu::runner::FileTail::new(&config.virtio_log);
    let mut matcher = matcher::Matcher::new(s.expect.clone(), s.fail_on.clone());
    let deadline = tokio::time::Instant::now() + s.timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let done = |m: &matcher::Matcher| {
        m.failure().is_some() || (m.has_expects() && m.all_seen() && !s.wait_for_poweroff)
    };

    let end = loop {
        tokio::select! {
            status = qemu.wait() => break End::Exited(status?),
            _ = tick.tick() => {
                matcher.feed(Source::Console, &console.read_new()?);
                matcher.feed(Source::Port, &port.read_new()?);
                if done(&matcher) {
                    break End::Decided;
                }
            }
            _ = tokio::time::sleep_until(deadline) => break End::TimedOut,
            _ = s.cancel.cancelled() => break End::Cancelled,
        }
    };
    let duration = start.elapsed();
    qemu.kill().await?;
    let stderr_tail = qemu.stderr_tail(5);
    matcher.feed(Source::Console, &console.read_new()?);
    matcher.feed(Source::Port, &port.read_new()?);
    if matches!(end, End::Cancelled) {
        return Err(s.cancel.error().context("boot test stopped, QEMU with it"));
    }
    if matches!(end, End::Exited(_)) {
        matcher.finish();
    }

    let next = |m: &matcher::Matcher| {
        m.next_expected()
            .map(|p| format!("'{p}'"))
            .unwrap_or_else(|| "the guest to power off".into())
    };
    let progress = format!(
        "{} of {} expected patterns seen",
        matcher.seen(),
        s.expect.len()
    );
    let (passed, reason) = if let Some(f) = matcher.failure() {
        (
            false,
            format!(
                "fail-on pattern '{}' matched on the {}: {}",
                f.pattern,
                f.source,
                f.line.trim()
            ),
        )
    } else {
        match end {
            End::Decided => (
                true,
                format!("all {} expected patterns seen in order", s.expect.len()),
            ),
            End::Exited(status) if matcher.has_expects() && matcher.all_seen() => (
                true,
                format!(
                    "all {} expected patterns seen in order, then the guest powered off ({status})",
                    s.expect.len()
                ),
            ),
            End::Exited(status) if !matcher.has_expects() && status.success() => {
                (true, "the guest powered off without a fail-on match".into())
            }
            End::Exited(status) => {
                let why = if stderr_tail.is_empty() {
                    String::new()
                } else {
                    format!("; QEMU said: {stderr_tail}")
                };
                (
                    false,
                    format!(
                        "QEMU exited ({status}) while waiting for {} ({progress}){why}",
                        next(&matcher)
                    ),
                )
            }
            End::TimedOut => (
                false,
                format!(
                    "timed out after {}s waiting for {} ({progress})",
                    s.timeout.as_secs(),
                    next(&matcher)
                ),
            ),
            End::Cancelled => unreachable!("returned above"),
        }
    };
    let console_bytes = fs::read(&config.serial_log).unwrap_or_default();
    let console_text = String::from_utf8_lossy(&console_bytes).into_owned();
    let lines: Vec<&str> = console_text.lines().collect();
    let console_tail: Vec<String> = lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    let outcome = Outcome {
        passed,
        reason,
        duration,
        accel,
        console_tail,
        console: console_text,
        port_lines: matcher.port_lines().to_vec(),
        qemu_status: match end {
            End::Exited(st) => Some(st),
            _ => None,
        },
    };
    if let Some(dest) = &s.console_log {
        crate::io::write_atomic(dest, &console_bytes, 0o644)
            .with_context(|| format!("writing console log {}", dest.display()))?;
    }
    if let Some(dest) = &s.junit {
        let out = outcome.console_tail.join("\n");
        let classname = format!("layerboot.boot-test.{}", s.firmware);
        let case = junit::TestCase {
            name: &s.name,
            classname: &classname,
            duration: outcome.duration,
            failure: (!outcome.passed).then_some(outcome.reason.as_str()),
            system_out: &out,
        };
        crate::io::write_atomic(
            dest,
            junit::render("layerboot boot-test", &[case]).as_bytes(),
            0o644,
        )
        .with_context(|| format!("writing JUnit file {}", dest.display()))?;
    }
    log::info!("{}", outcome.report().lines().next().unwrap_or_default());
    drop(qemu);
    drop(dir);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_detection_by_magic() {
        let mut iso = vec![0u8; 40000];
        iso[32769..32774].copy_from_slice(b"CD001");
        let mut qcow = b"QFI\xfb\0\0\0\x03".to_vec();
        qcow.resize(100, 0);
        for (name, bytes, want) in [
            ("iso", iso.clone(), ArtifactKind::Iso),
            ("qcow2", qcow, ArtifactKind::Qcow2),
            ("zeros", vec![0u8; 40000], ArtifactKind::Raw),
            ("short file", b"QF".to_vec(), ArtifactKind::Raw),
            ("truncated iso", iso[..32770].to_vec(), ArtifactKind::Raw),
        ] {
            assert_eq!(ArtifactKind::detect_bytes(&bytes, &[]), want, "{name}");
        }
        let mut footer = b"conectix".to_vec();
        footer.resize(512, 0);
        for (name, head, tail, want) in [
            (
                "sparse vmdk",
                &b"KDMV\x01\0\0\0"[..],
                &[][..],
                ArtifactKind::Vmdk,
            ),
            (
                "vmdk descriptor",
                b"# Disk DescriptorFile\nversion=1",
                &[],
                ArtifactKind::Vmdk,
            ),
            ("dynamic vhd", &footer, &[], ArtifactKind::Vhd),
            ("fixed vhd", &[0u8; 512], &footer, ArtifactKind::Vhd),
            ("raw", &[0u8; 512], &[0u8; 512], ArtifactKind::Raw),
        ] {
            assert_eq!(ArtifactKind::detect_bytes(head, tail), want, "{name}");
        }
    }

    #[test]
    fn a_disk_declared_in_the_wrong_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let qcow = dir.path().join("disk.img");
        let mut head = b"QFI\xfb\0\0\0\x03".to_vec();
        head.resize(4096, 0);
        fs::write(&qcow, &head).unwrap();
        let raw = dir.path().join("disk.raw");
        fs::write(&raw, vec![0u8; 4096]).unwrap();
        let err = check_declared_format(&Artifact::RawDisk(qcow.clone())).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} is a qcow2 image, not raw", qcow.display())
        );
        let err = check_declared_format(&Artifact::Qcow2(raw.clone())).unwrap_err();
        assert!(
            err.to_string().ends_with("is a raw image, not qcow2"),
            "{err}"
        );
        check_declared_format(&Artifact::Qcow2(qcow)).unwrap();
        check_declared_format(&Artifact::RawDisk(raw)).unwrap();
    }

    #[test]
    fn validation_table() {
        let disk = Artifact::RawDisk("d.raw".into());
        let kernel = Artifact::DirectKernel {
            kernel: "k".into(),
            initrd: None,
            append: String::new(),
        };
        let cases: Vec<(&str, BootTestSettings, Option<&str>)> = vec![
            ("defaults", BootTestSettings::new(disk.clone()), None),
            (
                "uefi 4k disk",
                BootTestSettings {
                    sector_size: 4096,
                    ..BootTestSettings::new(disk.clone())
                },
                None,
            ),
            (
                "bios 4k disk",
                BootTestSettings {
                    sector_size: 4096,
                    firmware: Firmware::Bios,
                    ..BootTestSettings::new(disk.clone())
                },
                Some("SeaBIOS"),
            ),
            (
                "bios 4k qcow2",
                BootTestSettings {
                    sector_size: 4096,
                    firmware: Firmware::Bios,
                    ..BootTestSettings::new(Artifact::Qcow2("q".into()))
                },
                Some("SeaBIOS"),
            ),
            (
                "bios cdrom with a 4k extra disk",
                BootTestSettings {
                    sector_size: 4096,
                    firmware: Firmware::Bios,
                    extra_disks: vec![ExtraDisk::Blank { size: 1 << 30 }],
                    ..BootTestSettings::new(Artifact::IsoCdrom("l.iso".into()))
                },
                None,
            ),
            (
                "bios 4k cdrom, no disk",
                BootTestSettings {
                    sector_size: 4096,
                    firmware: Firmware::Bios,
                    ..BootTestSettings::new(Artifact::IsoCdrom("l.iso".into()))
                },
                Some("--sector-size 4096 applies to disks, and l.iso boots with none"),
            ),
            (
                "bios 4k kernel",
                BootTestSettings {
                    sector_size: 4096,
                    firmware: Firmware::Bios,
                    ..BootTestSettings::new(kernel.clone())
                },
                Some("applies to disks"),
            ),
            (
                "odd sector size",
                BootTestSettings {
                    sector_size: 1024,
                    ..BootTestSettings::new(disk.clone())
                },
                Some("1024"),
            ),
            (
                "tiny memory",
                BootTestSettings {
                    memory_mib: 16,
                    ..BootTestSettings::new(disk.clone())
                },
                Some("16 MiB"),
            ),
            (
                "no cpu",
                BootTestSettings {
                    cpus: 0,
                    ..BootTestSettings::new(disk.clone())
                },
                Some("CPU"),
            ),
        ];
        for (name, s, want_err) in cases {
            match (s.validate(), want_err) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => assert!(e.to_string().contains(w), "{name}: {e}"),
                (r, w) => panic!("{name}: got {r:?}, wanted error containing {w:?}"),
            }
        }
    }

    #[test]
    fn qemu_config_from_settings() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = BootTestSettings::new(Artifact::IsoCdrom("/x/live.iso".into()));
        s.firmware = Firmware::Bios;
        s.sector_size = 4096;
        s.ignition = Some("/x/c.ign".into());
        s.extra_disks = vec![
            ExtraDisk::Blank { size: 1 << 30 },
            ExtraDisk::File {
                path: "/x/d.qcow2".into(),
                format: DiskFormat::Qcow2,
            },
        ];
        let c = make_qemu_config(&s, Accel::Tcg, dir.path()).unwrap();
        assert_eq!(
            c.cdrom,
            Some(CdromConfig {
                path: "/x/live.iso".into(),
                bootindex: Some(1)
            })
        );
        assert_eq!(c.disks.len(), 2);
        assert_eq!(c.disks[0].path, dir.path().join("extra1.raw"));
        assert_eq!(fs::metadata(&c.disks[0].path).unwrap().len(), 1 << 30);
        assert_eq!(
            (
                c.disks[0].sector_size,
                c.disks[0].bootindex,
                c.disks[0].snapshot
            ),
            (4096, None, false)
        );
        assert_eq!(
            (c.disks[1].format, c.disks[1].serial.as_deref()),
            (DiskFormat::Qcow2, Some("extra2"))
        );
        assert_eq!(
            c.fw_cfg,
            vec![(
                "opt/com.coreos/config".to_string(),
                PathBuf::from("/x/c.ign")
            )]
        );
        assert_eq!(c.firmware, FirmwareConfig::Bios);

        let mut s = BootTestSettings::new(Artifact::Qcow2("/x/d.qcow2".into()));
        s.persist_writes = true;
        let c = make_qemu_config(&s, Accel::Tcg, dir.path()).unwrap();
        assert_eq!(
            (c.disks[0].format, c.disks[0].snapshot, c.disks[0].bootindex),
            (DiskFormat::Qcow2, false, Some(1))
        );
        match c.firmware {
            FirmwareConfig::Uefi { vars, .. } => assert!(
                vars.starts_with(dir.path()) && vars.is_file(),
                "private VARS copy"
            ),
            other => panic!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod example_tests {
    /// The shipped CI examples stay usable: the workflow is valid YAML whose boot-test
    /// step goes through the script, and the script passes the reporting options.
    #[test]
    fn ci_examples_are_consistent() {
        let wf: serde_yaml_ng::Value = serde_yaml_ng::from_str(include_str!(
            "../../examples/ci/github-actions-boot-test.yml"
        ))
        .unwrap();
        let steps = wf["jobs"]["boot-test"]["steps"].as_sequence().unwrap();
        let run: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
        assert!(
            run.iter().any(|r| r.contains("examples/ci/boot-test.sh")),
            "{run:?}"
        );
        assert!(steps.iter().any(|s| s["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("actions/upload-artifact"))
            && s["if"].as_str() == Some("always()")));
        let script = include_str!("../../examples/ci/boot-test.sh");
        for needle in [
            "boot-test \"$artifact\"",
            "--junit",
            "--console-log",
            "exit \"$status\"",
        ] {
            assert!(script.contains(needle), "{needle}");
        }
    }
}
