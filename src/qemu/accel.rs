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
            "-m",
            "256",
        ])
        .args([
            "-drive",
            &format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                super::escape_opt(&ovmf.code)
            ),
            "-drive",
            &format!(
                "if=pflash,format=raw,unit=1,file={}",
                super::escape_opt(&vars)
            ),
            "-serial",
            &format!("file:{}", super::escape_opt(&serial)),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let start = Instant::now();
    let verdict = loop {
        if std::fs::metadata(&serial).is_ok_and(|m| m.len() > 0) {
            break true;
        }
        if let Some(status) = child.try_wait()? {
            log::info!("KVM probe guest (OVMF) exited ({status})");
            return Ok(false);
        }
        if start.elapsed() > OVMF_PROBE_TIMEOUT {
            log::info!("OVMF under KVM wrote nothing within {OVMF_PROBE_TIMEOUT:?}");
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    Ok(verdict)
}

fn probe_kvm(qemu: &Path) -> Result<bool> {
    let dir = tempfile::Builder::new()
        .prefix("layerboot-kvm-probe-")
        .tempdir()?;
    let dbg = dir.path().join("debugcon.log");
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
            "-m",
            "64",
        ])
        .args([
            "-chardev",
            &format!("file,id=dbg,path={}", super::escape_opt(&dbg)),
        ])
        // SeaBIOS writes its debug log to I/O port 0x402.
        .args(["-device", "isa-debugcon,iobase=0x402,chardev=dbg"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let start = Instant::now();
    let verdict = loop {
        let log = std::fs::read_to_string(&dbg).unwrap_or_default();
        if log.contains("No bootable device") {
            break true;
        }
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            log::info!("KVM probe guest exited ({status}): {}", err.trim());
            return Ok(false);
        }
        if start.elapsed() > PROBE_TIMEOUT {
            log::info!("KVM probe guest did not finish SeaBIOS within {PROBE_TIMEOUT:?}");
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    Ok(verdict)
}
