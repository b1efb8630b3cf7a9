//! Choosing between KVM and TCG. `/dev/kvm` existing proves nothing (on nested or
//! restricted hosts QEMU then aborts with "failed to set MSR" or hangs), so the probe
//! really starts tiny KVM guests with the CPU model we would use: SeaBIOS must run to the
//! end of its boot scan, and OVMF must bring up its console. Both firmwares are tried
//! because a host can pass one and not the other: seen on a nested host where SeaBIOS ran
//! but OVMF stopped at once with "KVM internal error. Suberror: 1 … emulation failure",
//! leaving QEMU paused until the test's timeout. Anything else within a few seconds means
//! TCG. The verdict is cached for the life of the process.

use std::fmt;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl std::str::FromStr for Accel {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => bail!("unknown accelerator '{s}' (expected kvm or tcg)"),
        }
    }
}

/// How long the probe guest may take to reach the end of SeaBIOS under KVM (it takes
/// well under a second where KVM works).
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// The accelerator to use: `$LAYERBOOT_ACCEL` (`kvm`/`tcg`) if set, else the cached
/// result of [`probe`].
pub fn detect(qemu: &Path) -> Accel {
    static VERDICT: OnceLock<Accel> = OnceLock::new();
    if let Some(forced) = std::env::var("LAYERBOOT_ACCEL")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return forced;
    }
    *VERDICT.get_or_init(|| {
        let a = probe(qemu);
        log::info!("accelerator: {a}");
        a
    })
}

/// Try KVM for real; never fails, any doubt means TCG.
pub fn probe(qemu: &Path) -> Accel {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Accel::Tcg;
    }
    let verdict = probe_kvm(qemu).and_then(|seabios_ok| {
        if !seabios_ok {
            return Ok(false);
        }
        match super::firmware::locate() {
            Ok(ovmf) => probe_kvm_ovmf(qemu, &ovmf),
            // No UEFI firmware installed: UEFI boots fail on their own with a clear
            // message; KVM is fine for BIOS ones.
            Err(_) => Ok(true),
        }
    });
    match verdict {
        Ok(true) => Accel::Kvm,
        Ok(false) => Accel::Tcg,
        Err(e) => {
            log::info!("KVM probe failed: {e:#}");
            Accel::Tcg
        }
    }
}

/// Whether SeaBIOS under KVM runs to the end of its boot scan (it reports "No bootable
/// device" on its debug port 0x402).
fn probe_kvm(qemu: &Path) -> Result<bool> {
    let dir = tempfile::Builder::new()
        .prefix("layerboot-kvm-probe-")
        .tempdir()?;
    let dbg = dir.path().join("debugcon.log");
    let args = [
        "-m".to_string(),
        "64".to_string(),
        "-chardev".to_string(),
        format!("file,id=dbg,path={}", super::escape_opt(&dbg)),
        "-device".to_string(),
        "isa-debugcon,iobase=0x402,chardev=dbg".to_string(),
    ];
    run_probe_guest(qemu, &args, PROBE_TIMEOUT, "SeaBIOS", || {
        std::fs::read_to_string(&dbg).is_ok_and(|log| log.contains("No bootable device"))
    })
}

/// How long OVMF may take under KVM to write its first console output (it takes a
/// second or two where KVM works).
const OVMF_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether OVMF under KVM gets as far as writing to its serial console (the first thing
/// it writes is the terminal set-up, before any boot device is tried).
fn probe_kvm_ovmf(qemu: &Path, ovmf: &super::firmware::Ovmf) -> Result<bool> {
    let dir = tempfile::Builder::new()
        .prefix("layerboot-kvm-probe-")
        .tempdir()?;
    let serial = dir.path().join("serial.log");
    let vars = dir.path().join("vars.fd");
    std::fs::copy(&ovmf.vars_template, &vars)?;
    let args = [
        "-m".to_string(),
        "256".to_string(),
        "-drive".to_string(),
        format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            super::escape_opt(&ovmf.code)
        ),
        "-drive".to_string(),
        format!(
            "if=pflash,format=raw,unit=1,file={}",
            super::escape_opt(&vars)
        ),
        "-serial".to_string(),
        format!("file:{}", super::escape_opt(&serial)),
    ];
    run_probe_guest(qemu, &args, OVMF_PROBE_TIMEOUT, "OVMF", || {
        std::fs::metadata(&serial).is_ok_and(|m| m.len() > 0)
    })
}

/// Start a diskless KVM guest with `-cpu host` plus `args`, and wait until `reached`
/// says the firmware got far enough (true), or the guest exits or `timeout` passes
/// (false). The guest is killed and reaped either way.
fn run_probe_guest(
    qemu: &Path,
    args: &[String],
    timeout: Duration,
    firmware: &str,
    reached: impl Fn() -> bool,
) -> Result<bool> {
    let mut child = Command::new(qemu)
        .args([
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-machine",
            "q35",
            "-accel",
            "kvm",
            "-cpu",
            "host",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let start = Instant::now();
    let verdict = loop {
        if reached() {
            break true;
        }
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            log::info!(
                "KVM probe guest ({firmware}) exited ({status}): {}",
                err.trim()
            );
            return Ok(false);
        }
        if start.elapsed() > timeout {
            log::info!("KVM probe guest ({firmware}) got nowhere within {timeout:?}");
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    Ok(verdict)
}
