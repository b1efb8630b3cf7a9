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
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    let tail: Vec<&str> = stderr.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
    bail!(
        "command failed ({}): {}{}{}",
        output.status,
        display(cmd),
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
pub fn run_cancellable(cmd: &mut Command, cancelled: impl Fn() -> bool, grace: std::time::Duration) -> Result<Option<Output>> {
    use std::io::{BufRead, Read};
    use std::os::unix::process::CommandExt;

    log::debug!("running: {}", display(cmd));
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {}", cmd.get_program().to_string_lossy()))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    let err_reader = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for line in std::io::BufReader::new(stderr).split(b'\n').map_while(|l| l.ok()) {
            eprintln!("{}", String::from_utf8_lossy(&line));
            kept.extend_from_slice(&line);
            kept.push(b'\n');
        }
        kept
    });
    let mut signalled_at = None;
    let status = loop {
        if let Some(status) = child.try_wait().with_context(|| format!("waiting for {}", display(cmd)))? {
            break status;
        }
        match signalled_at {
            None if cancelled() => {
                // SAFETY: kill on our own child's pid, which is not reaped yet.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                signalled_at = Some(std::time::Instant::now());
            }
            Some(t) if t.elapsed() > grace => {
                let _ = child.kill();
            }
            _ => {}
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let stdout = out_reader.join().expect("stdout reader").with_context(|| format!("reading the output of {}", display(cmd)))?;
    let stderr = err_reader.join().expect("stderr reader");
    if signalled_at.is_some() {
        return Ok(None);
    }
    let output = Output { status, stdout, stderr };
    check(cmd, &output)?;
    Ok(Some(output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_stderr_and_command() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err().to_string();
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
        assert!(require("layerboot-no-such-program", "pkg").unwrap_err().to_string().contains("'pkg'"));
    }

    #[test]
    fn cancellable_run_stops_and_reaps_the_child() {
        let started = std::time::Instant::now();
        let r = run_cancellable(Command::new("sleep").arg("30"), || started.elapsed() > std::time::Duration::from_millis(200), std::time::Duration::from_secs(5)).unwrap();
        assert!(r.is_none(), "a cancelled run reports no output");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "sleep 30 was stopped");
    }

    #[test]
    fn cancellable_run_returns_output_and_errors_like_run() {
        let out = run_cancellable(Command::new("sh").args(["-c", "echo out; echo log >&2"]), || false, std::time::Duration::from_secs(1)).unwrap().unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"log\n");
        let err = run_cancellable(Command::new("sh").args(["-c", "echo bad input >&2; exit 4"]), || false, std::time::Duration::from_secs(1)).unwrap_err().to_string();
        assert!(err.contains("bad input") && err.contains("exit status: 4"), "{err}");
    }
}
