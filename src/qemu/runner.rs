//! The QEMU process owner. QEMU runs in its own process group (so a terminal's Ctrl-C
//! reaches only us, and we decide how it ends) with a parent-death signal (so even a
//! `kill -9` of layerboot takes QEMU down). [`QemuProcess::kill`] stops the whole group
//! and reaps it; dropping a live `QemuProcess` SIGKILLs the group without waiting.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use anyhow::{Context, Result};
use rustix::process::{kill_process_group, Pid, Signal};

/// How long QEMU gets to exit cleanly on SIGTERM before SIGKILL.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub struct QemuProcess {
    child: tokio::process::Child,
    pid: i32,
    reaped: Option<ExitStatus>,
    stderr_log: PathBuf,
}

impl QemuProcess {
    /// Start `argv` (program first) with stdout/stderr going to `stderr_log`.
    pub fn spawn(argv: &[OsString], stderr_log: &Path) -> Result<Self> {
        let program = argv.first().context("empty QEMU command line")?;
        let out = File::create(stderr_log)
            .with_context(|| format!("creating {}", stderr_log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicating {}", stderr_log.display()))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        // (pre_exec has no safe counterpart: the child's death signal must be set in it.)
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        log::info!("running: {}", crate::cmd::display(cmd.as_std()));
        let child = cmd.spawn().with_context(|| {
            format!(
                "failed to start {}: install the Debian package 'qemu-system-x86'",
                program.to_string_lossy()
            )
        })?;
        let pid = child
            .id()
            .context("QEMU exited before its pid could be read")? as i32;
        Ok(QemuProcess {
            child,
            pid,
            reaped: None,
            stderr_log: stderr_log.to_path_buf(),
        })
    }

    /// Wait for QEMU to exit on its own (guest power-off, `-no-reboot` reboot, error).
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.reaped {
            return Ok(s);
        }
        let s = self.child.wait().await.context("waiting for QEMU")?;
        self.reaped = Some(s);
        Ok(s)
    }

    /// Stop the process group and reap QEMU. Idempotent. SIGTERM first: QEMU then
    /// flushes and closes its block devices (a writable qcow2 killed outright can be left
    /// with unwritten metadata); SIGKILL after [`GRACE`] if it does not go.
    pub async fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.reaped {
            return Ok(s);
        }
        self.signal_group(Signal::TERM);
        if let Ok(status) = tokio::time::timeout(GRACE, self.wait()).await {
            return status;
        }
        log::warn!(
            "QEMU (pid {}) ignored SIGTERM for {GRACE:?}; killing it",
            self.pid
        );
        self.signal_group(Signal::KILL);
        self.wait().await
    }

    /// The group id is QEMU's own pid (process_group(0)); a group already gone is fine.
    fn signal_group(&self, signal: Signal) {
        if let Some(pid) = Pid::from_raw(self.pid) {
            let _ = kill_process_group(pid, signal);
        }
    }

    /// QEMU's own messages (bad drive, missing firmware), last `n` lines.
    pub fn stderr_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..].join(" | ")
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            // tokio's kill_on_drop reaps the zombie in the background.
            self.signal_group(Signal::KILL);
        }
    }
}

/// Reads what has been appended to a file since the last call (QEMU's file chardevs).
pub struct FileTail {
    path: PathBuf,
    file: Option<File>,
    offset: u64,
}

impl FileTail {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileTail {
            path: path.into(),
            file: None,
            offset: 0,
        }
    }

    pub fn read_new(&mut self) -> Result<Vec<u8>> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => {
                    return Err(e).with_context(|| format!("opening {}", self.path.display()))
                }
            }
        }
        let f = self.file.as_mut().expect("opened above");
        f.seek(SeekFrom::Start(self.offset))
            .with_context(|| format!("seeking {}", self.path.display()))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .with_context(|| format!("reading {}", self.path.display()))?;
        self.offset += buf.len() as u64;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn file_tail_returns_only_new_bytes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let mut t = FileTail::new(&p);
        assert!(t.read_new().unwrap().is_empty());
        let mut f = File::create(&p).unwrap();
        f.write_all(b"abc").unwrap();
        assert_eq!(t.read_new().unwrap(), b"abc");
        f.write_all(b"de").unwrap();
        assert_eq!(t.read_new().unwrap(), b"de");
        assert!(t.read_new().unwrap().is_empty());
    }

    #[tokio::test]
    async fn kill_escalates_to_sigkill_when_sigterm_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let ready = d.path().join("ready");
        let script = format!(
            "trap '' TERM; touch {}; while :; do sleep 0.1; done",
            ready.display()
        );
        let argv: Vec<OsString> = vec!["sh".into(), "-c".into(), script.into()];
        let mut p = QemuProcess::spawn(&argv, &d.path().join("err")).unwrap();
        while !ready.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let start = std::time::Instant::now();
        let status = p.kill().await.unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(
            start.elapsed() >= GRACE,
            "SIGKILL only after the grace period"
        );
    }

    #[tokio::test]
    async fn kill_reaps_the_whole_group() {
        let d = tempfile::tempdir().unwrap();
        // A shell that starts a grandchild in the same group: both must die.
        let script = format!(
            "sleep 300 & echo $! > {}/child.pid; wait",
            d.path().display()
        );
        let argv: Vec<OsString> = vec!["sh".into(), "-c".into(), script.into()];
        let mut p = QemuProcess::spawn(&argv, &d.path().join("err")).unwrap();
        let pidfile = d.path().join("child.pid");
        for _ in 0..100 {
            if std::fs::read_to_string(&pidfile)
                .map(|s| s.ends_with('\n'))
                .unwrap_or(false)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let grandchild: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let status = p.kill().await.unwrap();
        assert!(!status.success());
        // The grandchild was reparented (to init or a subreaper) and killed; once reaped
        // its pid is gone, and until then it is a zombie.
        let mut gone = false;
        for _ in 0..100 {
            let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).ok();
            if state
                .as_deref()
                .map(|s| s.split_whitespace().nth(2) == Some("Z"))
                .unwrap_or(true)
            {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(gone, "grandchild {grandchild} survived the group kill");
    }
}
