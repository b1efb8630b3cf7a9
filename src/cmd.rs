//! The one way layerboot runs other programs: the command line is logged, stdout is
//! captured or passed through, and a failure carries the program's stderr so the user
//! sees *why* mkfs, qemu-img or skopeo failed without rerunning anything.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// Render a command as a shell-like line for logs and errors.
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| {
        let s = a.to_string_lossy();
        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
            format!("'{}'", s.replace('\'', "'\\''"))
        } else {
            s.into_owned()
        }
    }));
    parts.join(" ")
}

fn check(cmd: &Command, output: &Output) -> Result<()> {
    check_line(&display(cmd), output)
}

fn check_line(line: &str, output: &Output) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    let tail: Vec<&str> = stderr
        .lines()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    bail!(
        "command failed ({}): {}{}{}",
        output.status,
        line,
        if tail.is_empty() { "" } else { ": " },
        tail.join(" | ")
    )
}

/// Run to completion, capturing stdout and stderr; error if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    log::debug!("running: {}", display(cmd));
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start {}", cmd.get_program().to_string_lossy()))?;
    check(cmd, &output)?;
    Ok(output)
}

/// Run and return stdout as a string.
pub fn run_stdout(cmd: &mut Command) -> Result<String> {
    let out = run(cmd)?;
    String::from_utf8(out.stdout).with_context(|| format!("non-UTF-8 output from {}", display(cmd)))
}

/// Convenience: build and run `program args…`.
pub fn run_args<I, S>(program: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(program).args(args))
}

/// Whether `program` is on PATH (for friendly "install X" errors before heavy work).
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Fail early, naming the Debian package, when a required tool is missing.
pub fn require(program: &str, debian_package: &str) -> Result<()> {
    if have(program) {
        Ok(())
    } else {
        bail!("'{program}' not found on PATH: install the Debian package '{debian_package}'")
    }
}

/// Run to completion like [`run`], but stop it when `cancelled()` turns true: the child gets
/// SIGTERM (SIGKILL after `grace`) and is reaped before this returns `Ok(None)`. The child
/// also dies with us (PR_SET_PDEATHSIG), so an abrupt end of layerboot leaves no orphan.
/// stderr lines are passed through to ours as they come (logs of a long step stay visible)
/// and the last of them go into the error.
pub fn run_cancellable(
    cmd: &mut Command,
    cancelled: impl Fn() -> bool,
    grace: std::time::Duration,
) -> Result<Option<Output>> {
    let mut child = CancellableChild::spawn(cmd, false, grace)?;
    child.finish(cancelled)
}

/// A child started like [`run_cancellable`] runs it, for a conversation: the caller reads
/// lines of its stdout while it runs, may hold its stdin open (the child's cue to go on is
/// EOF), then [`finish`](Self::finish)es it. Dropping it unfinished stops and reaps it.
pub struct CancellableChild {
    child: std::process::Child,
    line: String,
    grace: std::time::Duration,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<Vec<u8>>,
    stdout: Vec<u8>,
    out_reader: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    err_reader: Option<std::thread::JoinHandle<Vec<u8>>>,
    reaped: bool,
}

/// How often a waiting caller looks at its cancellation flag.
const POLL: std::time::Duration = std::time::Duration::from_millis(50);

impl CancellableChild {
    /// Start `cmd` with stdout and stderr piped, stdin piped when `keep_stdin` (else null).
    pub fn spawn(
        cmd: &mut Command,
        keep_stdin: bool,
        grace: std::time::Duration,
    ) -> Result<CancellableChild> {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;

        let line = display(cmd);
        log::debug!("running: {line}");
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        // (pre_exec has no safe counterpart: the child's death signal must be set in it.)
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .stdin(if keep_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("failed to start {}", cmd.get_program().to_string_lossy()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        let out_reader = std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(stdout);
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l)? == 0 {
                    return Ok(());
                }
                // The receiver may be gone (the caller gave up): keep draining the pipe.
                let _ = tx.send(l);
            }
        });
        let err_reader = std::thread::spawn(move || {
            let mut kept = Vec::new();
            for line in std::io::BufReader::new(stderr)
                .split(b'\n')
                .map_while(|l| l.ok())
            {
                crate::errln!("{}", String::from_utf8_lossy(&line));
                kept.extend_from_slice(&line);
                kept.push(b'\n');
            }
            kept
        });
        Ok(CancellableChild {
            stdin: child.stdin.take(),
            child,
            line,
            grace,
            lines,
            stdout: Vec::new(),
            out_reader: Some(out_reader),
            err_reader: Some(err_reader),
            reaped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of the child's stdout (without the newline). `Ok(None)` when cancelled
    /// (the child is then stopped and reaped); an error when the child ends first, carrying
    /// its stderr like [`run`].
    pub fn read_line(&mut self, cancelled: impl Fn() -> bool) -> Result<Option<Vec<u8>>> {
        loop {
            if cancelled() {
                self.stop();
                return Ok(None);
            }
            match self.lines.recv_timeout(POLL) {
                Ok(mut l) => {
                    self.stdout.extend_from_slice(&l);
                    if l.last() == Some(&b'\n') {
                        l.pop();
                    }
                    return Ok(Some(l));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the child is ending; report how.
                    let out = self.finish(cancelled)?;
                    match out {
                        None => return Ok(None),
                        Some(o) => bail!(
                            "{} ended without the expected output (stdout: {:?})",
                            self.line,
                            String::from_utf8_lossy(&o.stdout).trim()
                        ),
                    }
                }
            }
        }
    }

    /// Close the child's stdin and wait for it to end. `Ok(None)` when cancelled meanwhile
    /// (stopped and reaped); an error carrying its stderr if it fails.
    pub fn finish(&mut self, cancelled: impl Fn() -> bool) -> Result<Option<Output>> {
        drop(self.stdin.take());
        let status = loop {
            if let Some(status) = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.line))?
            {
                break status;
            }
            if cancelled() {
                self.stop();
                return Ok(None);
            }
            std::thread::sleep(POLL);
        };
        self.reaped = true;
        let (stdout, stderr) = self.collect()?;
        let output = Output {
            status,
            stdout,
            stderr,
        };
        check_line(&self.line, &output)?;
        Ok(Some(output))
    }

    fn collect(&mut self) -> Result<(Vec<u8>, Vec<u8>)> {
        if let Some(r) = self.out_reader.take() {
            r.join()
                .expect("stdout reader")
                .with_context(|| format!("reading the output of {}", self.line))?;
        }
        let mut stdout = std::mem::take(&mut self.stdout);
        while let Ok(l) = self.lines.try_recv() {
            stdout.extend_from_slice(&l);
        }
        let stderr = self
            .err_reader
            .take()
            .map(|r| r.join().expect("stderr reader"))
            .unwrap_or_default();
        Ok((stdout, stderr))
    }

    /// SIGTERM, SIGKILL after the grace period, reap.
    fn stop(&mut self) {
        if self.reaped {
            return;
        }
        drop(self.stdin.take());
        // Our own child, not reaped yet: the pid is still its.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let t = std::time::Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if t.elapsed() > self.grace => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(POLL),
            }
        }
        self.reaped = true;
        let _ = self.collect();
    }
}

impl Drop for CancellableChild {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_stderr_and_command() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("boom"), "{err}");
        assert!(err.contains("sh -c 'echo boom >&2; exit 3'"), "{err}");
    }

    #[test]
    fn success_returns_stdout() {
        assert_eq!(run_stdout(Command::new("echo").arg("hi")).unwrap(), "hi\n");
    }

    #[test]
    fn missing_program_is_named() {
        let err = run(&mut Command::new("layerboot-no-such-program")).unwrap_err();
        assert!(format!("{err:#}").contains("layerboot-no-such-program"));
        assert!(require("layerboot-no-such-program", "pkg")
            .unwrap_err()
            .to_string()
            .contains("'pkg'"));
    }

    #[test]
    fn cancellable_run_stops_and_reaps_the_child() {
        let started = std::time::Instant::now();
        let r = run_cancellable(
            Command::new("sleep").arg("30"),
            || started.elapsed() > std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        assert!(r.is_none(), "a cancelled run reports no output");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "sleep 30 was stopped"
        );
    }

    #[test]
    fn conversation_reads_a_line_then_ends_on_stdin_eof() {
        let script = r#"echo '{"ready":1}'; cat >/dev/null; echo done"#;
        let mut c = CancellableChild::spawn(
            Command::new("sh").args(["-c", script]),
            true,
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        assert!(c.pid() > 0);
        assert_eq!(c.read_line(|| false).unwrap().unwrap(), br#"{"ready":1}"#);
        // Still running: it waits for EOF on stdin.
        assert!(c.child.try_wait().unwrap().is_none());
        let out = c.finish(|| false).unwrap().unwrap();
        assert_eq!(out.stdout, b"{\"ready\":1}\ndone\n");

        let mut c = CancellableChild::spawn(
            Command::new("sh").args(["-c", "echo oops >&2; exit 2"]),
            true,
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let err = c.read_line(|| false).unwrap_err().to_string();
        assert!(
            err.contains("oops") && err.contains("exit status: 2"),
            "{err}"
        );

        // Dropped mid-conversation: stopped and reaped.
        let mut c = CancellableChild::spawn(
            Command::new("sh").args(["-c", "echo hi; exec sleep 30"]),
            true,
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        c.read_line(|| false).unwrap().unwrap();
        let pid = c.pid();
        let t = std::time::Instant::now();
        drop(c);
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "child reaped"
        );
    }

    #[test]
    fn cancellable_run_returns_output_and_errors_like_run() {
        let out = run_cancellable(
            Command::new("sh").args(["-c", "echo out; echo log >&2"]),
            || false,
            std::time::Duration::from_secs(1),
        )
        .unwrap()
        .unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"log\n");
        let err = run_cancellable(
            Command::new("sh").args(["-c", "echo bad input >&2; exit 4"]),
            || false,
            std::time::Duration::from_secs(1),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("bad input") && err.contains("exit status: 4"),
            "{err}"
        );
    }
}
