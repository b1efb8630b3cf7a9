//! The one cancellation mechanism of every command.
//!
//! The CLI installs the signal handlers once ([`install`]): SIGINT, SIGTERM and SIGHUP
//! alike cancel the [`Cancel`] token it passes down. The library never installs handlers:
//! long operations take the token, check it between steps and inside long loops, stop
//! with [`Cancelled`] and remove what they had started (temporary files and directories
//! are removed by their owners' `Drop`). The process then exits with 128 + the signal's
//! number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP), whatever the command.
//!
//! A signal that arrives after an output was committed does not undo it: the command
//! completes and says so. Before, nothing of the output exists.
//!
//! SIGKILL cannot be handled: temporary files and directories carry the creating
//! process's id in their names ([`temp_prefix`]), and the next run removes those of
//! processes that no longer exist ([`sweep_stale`]).

use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

/// A cancellation token; clones share the state.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// The signal that cancelled, -1 for a cancel without a signal, 0 while running.
    signal: AtomicI32,
    notify: tokio::sync::Notify,
}

/// The operation stopped because it was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {}", signal_name(*.signal))]
pub struct Cancelled {
    /// The signal, or -1 when cancelled without one.
    pub signal: i32,
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancel without a signal (library users, tests).
    pub fn cancel(&self) {
        self.cancel_by(-1);
    }

    /// Cancel because of `signal`; the first cause is kept.
    pub fn cancel_by(&self, signal: i32) {
        let _ = self
            .0
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.signal.load(Ordering::SeqCst) != 0
    }

    /// The signal that cancelled, if a signal did.
    pub fn signal(&self) -> Option<i32> {
        Some(self.0.signal.load(Ordering::SeqCst)).filter(|s| *s > 0)
    }

    /// `Err(Cancelled)` once cancelled.
    pub fn check(&self) -> Result<()> {
        match self.0.signal.load(Ordering::SeqCst) {
            0 => Ok(()),
            signal => Err(Cancelled { signal }.into()),
        }
    }

    /// The error to return when stopping.
    pub fn error(&self) -> anyhow::Error {
        Cancelled {
            signal: self.0.signal.load(Ordering::SeqCst),
        }
        .into()
    }

    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Run `fut` until it completes or the token is cancelled; cancelled, `fut` is
    /// dropped (its temporary files with it) and the result is [`Cancelled`].
    pub async fn run<T>(&self, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        tokio::select! {
            biased;
            _ = self.cancelled() => Err(self.error()),
            r = fut => r,
        }
    }
}

/// A reader that fails once `cancel` is cancelled: long copies stop at the next read.
pub struct CheckedReader<R> {
    inner: R,
    cancel: Cancel,
}

impl<R> CheckedReader<R> {
    pub fn new(inner: R, cancel: Cancel) -> Self {
        CheckedReader { inner, cancel }
    }
}

impl<R: std::io::Read> std::io::Read for CheckedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            // not ErrorKind::Interrupted: io::copy would retry that
            return Err(std::io::Error::other(self.cancel.error().to_string()));
        }
        self.inner.read(buf)
    }
}

/// The exit status for a run cancelled by `signal`: the shell's 128 + N.
pub fn exit_status(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}

pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a cancel request",
    }
}

/// Install the handlers (CLI only, once, inside the runtime): SIGINT, SIGTERM and SIGHUP
/// cancel `cancel`. A second signal while cleaning up is ignored: cleanup is short, and
/// cutting it short is what leaves partial files behind.
pub fn install(cancel: &Cancel) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for (kind, num) in [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
    ] {
        let mut s =
            signal(kind).with_context(|| format!("installing the {} handler", signal_name(num)))?;
        let cancel = cancel.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if !cancel.is_cancelled() {
                    log::info!("{} received, cleaning up", signal_name(num));
                }
                cancel.cancel_by(num);
            }
        });
    }
    Ok(())
}

/// The name prefix of a temporary file or directory of this process: `base`, this
/// process's id, a dot. [`sweep_stale`] recognises it after a SIGKILL.
pub fn temp_prefix(base: &str) -> String {
    format!("{base}{}.", std::process::id())
}

/// When process `pid` started, if it runs (from `/proc/<pid>/stat`'s start time in clock
/// ticks after boot, and `/proc/stat`'s boot time). Rounded down by up to a second (the
/// boot time is whole seconds).
fn process_start(pid: u32) -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after its ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Some(
        std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(boot)
            + std::time::Duration::from_millis(ticks * 1000 / hz),
    )
}

/// Whether the entry with metadata `meta`, named for process `pid`, still belongs to a
/// running process: one with that id exists and started before the entry was last
/// written. Any process counts, not only layerboot's binaries: the boot-test library runs
/// inside test harnesses and other tools. A process that started later is another one
/// that was given a reused id (2 s of slack for the rounding of start times).
fn owner_alive(pid: u32, meta: &std::fs::Metadata) -> bool {
    let Some(start) = process_start(pid) else {
        return false;
    };
    match meta.modified() {
        Ok(written) => start <= written + std::time::Duration::from_secs(2),
        Err(_) => true,
    }
}

/// Remove, in `dir`, the temporary files and directories named `base<pid>.…` (see
/// [`temp_prefix`]) whose process is gone: what a SIGKILL left behind. Best effort: a
/// failure to remove is logged, never an error of the command that swept.
pub fn sweep_stale(dir: &Path, base: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(base)) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(meta) = e.metadata() else {
            continue;
        };
        if owner_alive(pid, &meta) {
            continue;
        }
        let path = e.path();
        let removed = match meta.file_type() {
            t if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        match removed {
            Ok(()) => log::info!(
                "removed {}, left by an earlier run that was killed",
                path.display()
            ),
            Err(err) => log::warn!("cannot remove stale {}: {err}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_cause_wins_and_maps_to_the_shells_status() {
        let c = Cancel::new();
        assert!(c.check().is_ok() && c.signal().is_none());
        c.cancel_by(libc::SIGTERM);
        c.cancel_by(libc::SIGINT);
        assert_eq!(c.signal(), Some(libc::SIGTERM));
        assert_eq!(c.check().unwrap_err().to_string(), "interrupted by SIGTERM");
        assert_eq!(
            [libc::SIGINT, libc::SIGTERM, libc::SIGHUP].map(exit_status),
            [130, 143, 129]
        );
        let c = Cancel::new();
        c.cancel();
        assert!(c.is_cancelled() && c.signal().is_none());
    }

    #[test]
    fn stale_temp_files_of_dead_processes_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        // a pid that cannot be running: above the kernel's pid_max limit
        let dead = dir.path().join(".layerboot-pull.4194305.abc");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("blob"), "x").unwrap();
        let dead_file = dir.path().join(".layerboot-pull.4194305.tmp");
        std::fs::write(&dead_file, "x").unwrap();
        let mine = dir
            .path()
            .join(format!("{}x", temp_prefix(".layerboot-pull.")));
        std::fs::create_dir(&mine).unwrap();
        let other = dir.path().join(".layerboot-pull.notapid");
        std::fs::create_dir(&other).unwrap();
        // A running process of any name owns its entries (a test harness running a boot
        // test is no layerboot binary)...
        let mut sleeper = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let live = dir
            .path()
            .join(format!(".layerboot-pull.{}.x", sleeper.id()));
        std::fs::create_dir(&live).unwrap();
        // ...but not entries last written before it started: those were left by an earlier
        // process whose id was reused (pid 1 started at boot, long after 1970).
        let reused = dir.path().join(".layerboot-pull.1.old");
        std::fs::File::create(&reused)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000))
            .unwrap();
        sweep_stale(dir.path(), ".layerboot-pull.");
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert!(!dead.exists() && !dead_file.exists() && !reused.exists());
        assert!(mine.exists() && other.exists() && live.exists());
    }
}
