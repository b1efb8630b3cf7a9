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

/// Whether process `pid` is a running layerboot (any of its binaries).
fn layerboot_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end().starts_with("layerboot"))
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
        if pid == std::process::id() || layerboot_alive(pid) {
            continue;
        }
        let path = e.path();
        let removed = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
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
        // pid 1 runs, but it is not layerboot: its "temp" is stale too
        let init = dir.path().join(".layerboot-pull.1.x");
        std::fs::create_dir(&init).unwrap();
        sweep_stale(dir.path(), ".layerboot-pull.");
        assert!(!dead.exists() && !dead_file.exists() && !init.exists());
        assert!(mine.exists() && other.exists());
    }
}
